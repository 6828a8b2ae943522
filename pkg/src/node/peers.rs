//! The cluster view: which other nodes exist, their node IPs, pod CIDRs and per-backend data.
//!
//! Whoever manages the cluster writes it (inline `peers` in the network config, or a
//! `peersFile` replaced atomically), as a JSON list of `{"nodeIP", "podCIDR"}` objects, with an
//! optional `vtepMAC` for the vxlan data plane. Every node may get the same list: the entry of
//! the node itself is recognised and skipped when the view is applied
//! ([`ClusterView::select`]).
//!
//! A view is read entry by entry: an entry that does not parse, routes everything
//! (`0.0.0.0/0`), or overlaps another entry is *skipped* with a reason ([`Skipped`]), and the
//! rest is used. Only a view that cannot be read at all (missing file, not a JSON list) is an
//! error, with code 51 (limited connectivity): pods can still be wired, the node keeps the
//! routes it last applied.

use crate::error::{Error, Result, code};
use crate::flannel::subnet_file::network_of;
use crate::kernel::netlink::MacAddr;
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Where state files live unless the config says otherwise (`runDir`).
pub const DEFAULT_RUN_DIR: &str = "/run/twill";

/// The cluster view's file name in the run directory, used when a config names no view
/// (`twilld run --etcd-endpoints` writes `/run/twill/cluster.json` by default).
pub const DEFAULT_VIEW_FILE: &str = "cluster.json";

/// Another node of the cluster: its IP on the underlay, its pod CIDR, its backend data.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Peer {
    /// The node's address on the network that connects the nodes (`nodeIP`).
    pub node_ip: IpAddr,
    /// The pod CIDR of that node, reduced to its network address (`podCIDR`).
    pub pod_cidr: IpNetwork,
    /// vxlan: the MAC of the node's VTEP device (`vtepMAC`), when the view gives one.
    pub vtep_mac: Option<MacAddr>,
}

impl Peer {
    /// The peer as the view's JSON writes it (`{"nodeIP", "podCIDR"[, "vtepMAC"]}`).
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::json!({
            "nodeIP": self.node_ip.to_string(),
            "podCIDR": self.pod_cidr.to_string(),
        });
        if let Some(m) = self.vtep_mac {
            v["vtepMAC"] = Value::String(m.to_string());
        }
        v
    }

    /// Parses one entry of the view; the error says what is wrong with it, for a person.
    pub fn from_json(v: &Value) -> std::result::Result<Peer, String> {
        let obj = v
            .as_object()
            .ok_or_else(|| "not an object with \"nodeIP\" and \"podCIDR\"".to_string())?;
        let text = |key: &str| -> std::result::Result<&str, String> {
            match obj.get(key) {
                None => Err(format!("\"{key}\" is missing")),
                Some(Value::String(s)) => Ok(s.as_str()),
                Some(other) => Err(format!("\"{key}\" is {other}, not a string")),
            }
        };
        let ip = text("nodeIP")?;
        let cidr = text("podCIDR")?;
        let mac = match obj.get("vtepMAC") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(other) => return Err(format!("\"vtepMAC\" is {other}, not a string")),
        };
        Peer::from_text(ip, cidr, mac)
    }

    /// A peer from the texts of its `nodeIP`, `podCIDR` and `vtepMAC`; the error says what is
    /// wrong, for a person.
    fn from_text(ip: &str, cidr: &str, mac: Option<&str>) -> std::result::Result<Peer, String> {
        let node_ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("\"nodeIP\" {ip:?} is not an IP address"))?;
        let pod_cidr: IpNetwork = cidr
            .parse()
            .map_err(|_| format!("\"podCIDR\" {cidr:?} is not a CIDR (address/prefix)"))?;
        let vtep_mac = match mac {
            None => None,
            Some(s) => Some(
                s.parse::<MacAddr>()
                    .map_err(|e| format!("\"vtepMAC\": {e}"))?,
            ),
        };
        if node_ip.is_unspecified() || node_ip.is_loopback() || node_ip.is_multicast() {
            return Err(format!(
                "nodeIP {node_ip} cannot be a node's address (unspecified, loopback or multicast)"
            ));
        }
        if pod_cidr.prefix() == 0 {
            return Err(format!(
                "podCIDR {pod_cidr} would send every destination to one node"
            ));
        }
        Ok(Peer {
            node_ip,
            pod_cidr: network_of(pod_cidr),
            vtep_mac,
        })
    }
}

/// An entry of the view that is not used, and why (for stderr and STATUS).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Skipped {
    /// The entry as given (compact JSON).
    pub entry: String,
    /// Why it is skipped, for a person.
    pub reason: String,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.entry, self.reason)
    }
}

/// Where a network's cluster view comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewSource {
    /// `peers`: inline in the network config.
    Inline(Value),
    /// `peersFile`: a file replaced atomically by its writer.
    File(PathBuf),
}

/// The largest cluster view file read (100k entries fit).
pub const MAX_VIEW_BYTES: usize = 64 << 20;

/// The most entries a cluster view may hold: twice Kubernetes' 5000-node limit, each node
/// dual-stack. A longer view is refused as a whole (code 51, the last applied state kept);
/// parsing stops at the first entry past it, so neither time nor memory grows beyond it.
pub const MAX_VIEW_ENTRIES: usize = 20_000;

impl ViewSource {
    /// The raw bytes of the view: the file's content, or the inline value serialized.
    /// A missing or unreadable file is code 51, naming the file.
    pub fn bytes(&self) -> Result<Vec<u8>> {
        match self {
            ViewSource::Inline(v) => serde_json::to_vec(v)
                .map_err(|e| Error::new(code::INTERNAL, format!("serialize peers: {e}"))),
            ViewSource::File(path) => {
                // Following a symlink like any reader (a ConfigMap volume's file is one), but
                // judging what it leads to before opening it: a device is never opened, a file
                // larger than the cap never read.
                let meta = std::fs::metadata(path).and_then(|m| {
                    if !m.is_file() {
                        Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "is not a regular file (a directory, device, FIFO or socket)",
                        ))
                    } else if m.len() > MAX_VIEW_BYTES as u64 {
                        Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("is larger than {MAX_VIEW_BYTES} bytes"),
                        ))
                    } else {
                        Ok(m)
                    }
                });
                meta.and_then(|_| crate::input_file::read_capped(path, MAX_VIEW_BYTES))
                    .map_err(|e| {
                        let why = if e.kind() == std::io::ErrorKind::NotFound {
                            "does not exist: whoever manages the cluster must write it".to_string()
                        } else {
                            format!("cannot be read: {e}")
                        };
                        Error::new(
                            code::LIMITED_CONNECTIVITY,
                            format!("peersFile {} {why}", path.display()),
                        )
                    })
            }
        }
    }

    /// The identity of a view file as it stands (what it leads to, when a symlink): `None`
    /// for an inline view or a file that cannot be looked at. Equal stamps mean equal content
    /// when the file had settled before the read the stamp was taken for
    /// ([`ViewStamp::settled`]).
    pub fn stamp(&self) -> Option<ViewStamp> {
        use std::os::unix::fs::MetadataExt;
        let ViewSource::File(path) = self else {
            return None;
        };
        let m = std::fs::metadata(path).ok()?;
        m.is_file().then(|| ViewStamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            ctime_ns: m.ctime() as i128 * 1_000_000_000 + i128::from(m.ctime_nsec()),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }

    /// Reads and parses the view (see [`ClusterView::parse`]).
    pub fn read(&self) -> Result<ClusterView> {
        ClusterView::parse(&self.bytes()?, self)
    }
}

impl fmt::Display for ViewSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ViewSource::Inline(_) => write!(f, "\"peers\""),
            ViewSource::File(p) => write!(f, "peersFile {}", p.display()),
        }
    }
}

/// A view file's identity: device, inode, size, change and modification times (ns).
/// Writers replace the file (new inode) or write it in place (new ctime, which no one can set
/// back); either changes the stamp, so a stamp recorded once its ctime had settled stands for
/// the bytes read then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewStamp {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
    /// `st_size`.
    pub size: u64,
    /// `st_ctime` in ns.
    pub ctime_ns: i128,
    /// `st_mtime` in ns.
    pub mtime_ns: i128,
}

impl ViewStamp {
    /// How long before a read the file must have last changed for the read's stamp to be
    /// trusted: a write in the same clock tick as the read could otherwise leave the ctime as
    /// it was (file timestamps are as coarse as the kernel's tick, at most 10 ms).
    pub const SETTLE_NS: i128 = 50_000_000;

    /// True when the file last changed at least [`ViewStamp::SETTLE_NS`] before `now_ns`
    /// (ns since the epoch, taken before the read): the stamp stands for what was read.
    pub fn settled(&self, now_ns: i128) -> bool {
        now_ns - self.ctime_ns >= Self::SETTLE_NS
    }

    /// The stamp as text (`dev ino size ctime mtime`), for run-state files.
    pub fn to_fields(&self) -> String {
        format!(
            "{} {} {} {} {}",
            self.dev, self.ino, self.size, self.ctime_ns, self.mtime_ns
        )
    }

    /// Parses [`ViewStamp::to_fields`]'s output.
    pub fn from_fields(f: &[&str]) -> Option<ViewStamp> {
        match f {
            [dev, ino, size, c, m] => Some(ViewStamp {
                dev: dev.parse().ok()?,
                ino: ino.parse().ok()?,
                size: size.parse().ok()?,
                ctime_ns: c.parse().ok()?,
                mtime_ns: m.parse().ok()?,
            }),
            _ => None,
        }
    }
}

/// The peer-related keys of a plugin's network config; flatten it into the plugin's own keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeersConf {
    /// `peers`: the cluster view inline (kept as JSON: bad entries are skipped, not fatal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<Value>,
    /// `peersFile`: a file holding the same JSON list, replaced atomically by its writer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers_file: Option<PathBuf>,
    /// `runDir`: where twill keeps its per-node state files (default [`DEFAULT_RUN_DIR`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_dir: Option<PathBuf>,
}

impl PeersConf {
    /// Where the view comes from: `peers`, `peersFile`, else the node's default view
    /// `<runDir>/cluster.json` when it exists (twilld's etcd mode writes it), else `None` (the
    /// plugin manages no peer state, as next to flanneld). Both keys given is code 7.
    pub fn source(&self) -> Result<Option<ViewSource>> {
        match (&self.peers, &self.peers_file) {
            (Some(_), Some(_)) => Err(Error::invalid_config(
                "give either \"peers\" or \"peersFile\", not both",
            )),
            (Some(v), None) => Ok(Some(ViewSource::Inline(v.clone()))),
            (None, Some(path)) => Ok(Some(ViewSource::File(path.clone()))),
            (None, None) => {
                let default = self.default_view_file();
                Ok(default.is_file().then_some(ViewSource::File(default)))
            }
        }
    }

    /// The view a config without `peers`/`peersFile` uses when it exists:
    /// `<runDir>/`[`DEFAULT_VIEW_FILE`].
    pub fn default_view_file(&self) -> PathBuf {
        self.run_dir().join(DEFAULT_VIEW_FILE)
    }

    /// The run directory for state files.
    pub fn run_dir(&self) -> &Path {
        self.run_dir
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_RUN_DIR))
    }
}

/// A parsed view: the usable peers in canonical order and the entries skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    peers: Vec<Peer>,
    skipped: Vec<Skipped>,
}

/// What a view means on one node: the other nodes, this node's own entries, and the entries
/// that cannot be used here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection<'a> {
    /// The other nodes, to be served by the data plane.
    pub remote: Vec<&'a Peer>,
    /// Entries of this node (a local node IP, or a pod CIDR that is one of its own ranges).
    pub this_node: Vec<&'a Peer>,
    /// Entries of the view or of this selection that are not used, each with its reason.
    pub skipped: Vec<Skipped>,
}

impl ClusterView {
    /// Parses a view: `bytes` must be a JSON list (else code 51 naming `source`); each entry
    /// is parsed on its own ([`Peer::from_json`]), exact duplicates are dropped, and entries
    /// whose pod CIDRs overlap (one node's subnet claimed twice, or nested) are all skipped.
    pub fn parse(bytes: &[u8], source: &ViewSource) -> Result<ClusterView> {
        // The common case, every entry well-formed: read in place, one allocation for the
        // list. Anything else (an entry to skip, escapes in a string) takes the general path,
        // which keeps each entry as JSON to say which one is skipped and why.
        let mut de = serde_json::Deserializer::from_slice(bytes);
        // About 60 bytes per entry: the list is sized once rather than grown by doubling.
        let guess = (bytes.len() / 48).min(MAX_VIEW_ENTRIES);
        if let Ok(raw) = serde::Deserializer::deserialize_seq(
            &mut de,
            Entries::<RawPeer<'_>>::with_capacity(guess),
        ) && de.end().is_ok()
            && let Ok(peers) = raw
                .iter()
                .map(|r| Peer::from_text(r.node_ip, r.pod_cidr, r.vtep_mac))
                .collect::<std::result::Result<Vec<Peer>, String>>()
        {
            return Ok(Self::from_peers(peers, Vec::new()));
        }
        let unreadable = |why: String| {
            Error::new(
                code::LIMITED_CONNECTIVITY,
                format!("{source} is not a usable cluster view: {why}"),
            )
        };
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let entries = serde::Deserializer::deserialize_any(&mut de, Entries::<Value>::new())
            .and_then(|v| de.end().map(|()| v))
            .map_err(|e| match e.classify() {
                serde_json::error::Category::Data => unreadable(e.to_string()),
                _ => unreadable(format!("not JSON ({e})")),
            })?;
        let mut peers = Vec::with_capacity(entries.len());
        let mut skipped = Vec::new();
        for e in &entries {
            match Peer::from_json(e) {
                Ok(p) => peers.push(p),
                Err(reason) => skipped.push(Skipped {
                    entry: e.to_string(),
                    reason,
                }),
            }
        }
        Ok(Self::from_peers(peers, skipped))
    }

    /// A view of already parsed peers (canonicalized and checked for overlaps like
    /// [`ClusterView::parse`]).
    pub fn new(peers: Vec<Peer>) -> ClusterView {
        Self::from_peers(peers, Vec::new())
    }

    fn from_peers(peers: Vec<Peer>, mut skipped: Vec<Skipped>) -> ClusterView {
        let mut peers: Vec<Peer> = peers
            .into_iter()
            .map(|p| Peer {
                pod_cidr: network_of(p.pod_cidr),
                ..p
            })
            .collect();
        // The key is the whole peer, so an unstable sort (no buffer) orders as a stable one.
        peers.sort_unstable_by_key(|p| (span(&p.pod_cidr), p.node_ip, p.vtep_mac));
        peers.dedup();
        // Sorted by (family, first address, prefix): a CIDR overlaps an earlier one exactly
        // when it starts before the end of the widest earlier one of its family.
        let mut bad: Vec<Option<usize>> = vec![None; peers.len()];
        let mut widest: Option<usize> = None;
        for i in 0..peers.len() {
            let (fam, start, end) = span(&peers[i].pod_cidr);
            match widest {
                Some(w)
                    if span(&peers[w].pod_cidr).0 == fam && start <= span(&peers[w].pod_cidr).2 =>
                {
                    bad[i] = Some(w);
                    bad[w].get_or_insert(i);
                    if end > span(&peers[w].pod_cidr).2 {
                        widest = Some(i);
                    }
                }
                _ => widest = Some(i),
            }
        }
        if bad.iter().all(Option::is_none) {
            skipped.sort();
            return ClusterView { peers, skipped };
        }
        let mut keep = Vec::with_capacity(peers.len());
        for (i, p) in peers.iter().enumerate() {
            match bad[i] {
                None => keep.push(p.clone()),
                Some(other) => skipped.push(Skipped {
                    entry: p.to_json().to_string(),
                    reason: format!(
                        "podCIDR {} overlaps podCIDR {} of node {}: which node owns those pods is \
                         ambiguous",
                        p.pod_cidr, peers[other].pod_cidr, peers[other].node_ip
                    ),
                }),
            }
        }
        skipped.sort();
        ClusterView {
            peers: keep,
            skipped,
        }
    }

    /// The usable peers, this node's entries included, in canonical order.
    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    /// The entries skipped while reading the view.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// Splits the view for a node whose addresses are `local` (with their prefixes) and whose
    /// network owns the pod ranges `own_ranges`: an entry with a local node IP or with one of
    /// `own_ranges` as pod CIDR is this node; a pod CIDR that overlaps an own range otherwise
    /// is skipped (routing it elsewhere would steal this node's pods).
    pub fn select(&self, own_ranges: &[IpNetwork], local: &[IpNetwork]) -> Selection<'_> {
        let own: Vec<IpNetwork> = own_ranges.iter().map(|r| network_of(*r)).collect();
        let mut sel = Selection {
            skipped: self.skipped.clone(),
            ..Selection::default()
        };
        for p in &self.peers {
            if local.iter().any(|a| a.ip() == p.node_ip) || own.contains(&p.pod_cidr) {
                sel.this_node.push(p);
            } else if let Some(r) = own.iter().find(|r| overlaps(r, &p.pod_cidr)) {
                sel.skipped.push(Skipped {
                    entry: p.to_json().to_string(),
                    reason: format!(
                        "podCIDR {} overlaps this node's own pod range {r}",
                        p.pod_cidr
                    ),
                });
            } else {
                sel.remote.push(p);
            }
        }
        sel
    }
}

/// A well-formed view entry, its strings borrowed from the view's bytes.
#[derive(Deserialize)]
struct RawPeer<'a> {
    #[serde(rename = "nodeIP")]
    node_ip: &'a str,
    #[serde(rename = "podCIDR")]
    pod_cidr: &'a str,
    #[serde(rename = "vtepMAC", default)]
    vtep_mac: Option<&'a str>,
}

/// The entries of a view's JSON list, at most [`MAX_VIEW_ENTRIES`]: parsing stops at the
/// first one past it.
struct Entries<T>(usize, std::marker::PhantomData<T>);

impl<T> Entries<T> {
    fn new() -> Self {
        Self::with_capacity(0)
    }

    /// Room for `n` entries from the start.
    fn with_capacity(n: usize) -> Self {
        Entries(n, std::marker::PhantomData)
    }
}

impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Entries<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON list of {\"nodeIP\", \"podCIDR\"} objects")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Vec<T>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(self.0).min(MAX_VIEW_ENTRIES));
        while let Some(v) = seq.next_element::<T>()? {
            if out.len() == MAX_VIEW_ENTRIES {
                return Err(serde::de::Error::custom(format!(
                    "more than {MAX_VIEW_ENTRIES} entries, the most a view may hold (twice \
                     Kubernetes' 5000 nodes, dual-stack): split the cluster or shorten the view"
                )));
            }
            out.push(v);
        }
        Ok(out)
    }
}

/// (family, first address, last address) of a network, as comparable numbers.
fn span(n: &IpNetwork) -> (u8, u128, u128) {
    let (fam, bits, addr) = match n.ip() {
        IpAddr::V4(a) => (4u8, 32u32, u128::from(u32::from(a))),
        IpAddr::V6(a) => (6u8, 128u32, u128::from(a)),
    };
    let host = bits - u32::from(n.prefix());
    let mask = if host >= 128 {
        u128::MAX
    } else {
        (1u128 << host) - 1
    };
    (fam, addr & !mask, addr | mask)
}

/// True when two networks share an address.
pub fn overlaps(a: &IpNetwork, b: &IpNetwork) -> bool {
    let (fa, sa, ea) = span(a);
    let (fb, sb, eb) = span(b);
    fa == fb && sa <= eb && sb <= ea
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }
    fn peer(node: &str, cidr: &str) -> Peer {
        Peer {
            node_ip: node.parse().unwrap(),
            pod_cidr: net(cidr),
            vtep_mac: None,
        }
    }
    fn parse(v: Value) -> ClusterView {
        ClusterView::parse(v.to_string().as_bytes(), &ViewSource::Inline(v)).unwrap()
    }

    #[test]
    fn peer_json_shape_and_vtep_mac() {
        let p =
            Peer::from_json(&json!({"nodeIP": "192.168.1.2", "podCIDR": "10.244.2.7/24"})).unwrap();
        assert_eq!(p, peer("192.168.1.2", "10.244.2.0/24"));
        assert_eq!(
            p.to_json(),
            json!({"nodeIP": "192.168.1.2", "podCIDR": "10.244.2.0/24"})
        );
        let v = Peer::from_json(&json!({"nodeIP": "192.168.1.2", "podCIDR": "10.244.2.0/24",
            "vtepMAC": "0A:00:00:00:00:02"}))
        .unwrap();
        assert_eq!(v.vtep_mac.unwrap().to_string(), "0a:00:00:00:00:02");
        assert_eq!(v.to_json()["vtepMAC"], "0a:00:00:00:00:02");
    }

    #[test]
    fn bad_entries_are_skipped_with_a_reason_and_the_rest_kept() {
        let v = parse(json!([
            {"nodeIP": "10.0.0.2", "podCIDR": "10.244.2.0/24"},
            {"nodeIP": 1, "podCIDR": "10.244.3.0/24"},
            {"podCIDR": "10.244.4.0/24"},
            {"nodeIP": "10.0.0.5", "podCIDR": "0.0.0.0/0"},
            {"nodeIP": "10.0.0.6", "podCIDR": "10.244.6.0/33"},
            {"nodeIP": "10.0.0.7", "podCIDR": "10.244.7.0/24", "vtepMAC": "nope"},
            {"nodeIP": "127.0.0.1", "podCIDR": "10.244.8.0/24"},
            "just a string",
        ]));
        assert_eq!(v.peers(), &[peer("10.0.0.2", "10.244.2.0/24")]);
        assert_eq!(v.skipped().len(), 7, "{:?}", v.skipped());
        let all: String = v.skipped().iter().map(|s| format!("{s}\n")).collect();
        for needle in [
            "\"nodeIP\" is 1",
            "\"nodeIP\" is missing",
            "0.0.0.0/0",
            "/33",
            "vtepMAC",
            "127.0.0.1",
            "just a string",
        ] {
            assert!(all.contains(needle), "{needle} in {all}");
        }
        assert!(!all.contains("Some("), "no Debug output: {all}");
    }

    #[test]
    fn overlapping_entries_are_all_skipped_and_duplicates_merged() {
        let v = parse(json!([
            {"nodeIP": "10.0.0.2", "podCIDR": "10.244.2.0/24"},
            {"nodeIP": "10.0.0.2", "podCIDR": "10.244.2.0/24"},
            {"nodeIP": "10.0.0.3", "podCIDR": "10.244.3.0/24"},
            {"nodeIP": "10.0.0.9", "podCIDR": "10.244.3.0/24"},
            {"nodeIP": "10.0.0.4", "podCIDR": "10.244.0.0/16"},
            {"nodeIP": "10.0.0.5", "podCIDR": "10.245.0.0/24"},
            {"nodeIP": "fd00::2", "podCIDR": "fd10:2::/64"},
        ]));
        assert_eq!(
            v.peers(),
            &[
                peer("10.0.0.5", "10.245.0.0/24"),
                peer("fd00::2", "fd10:2::/64")
            ]
        );
        assert_eq!(v.skipped().len(), 4, "{:?}", v.skipped());
        assert!(v.skipped().iter().all(|s| s.reason.contains("overlaps")));
    }

    #[test]
    fn not_a_list_is_code_51_naming_the_source() {
        let src = ViewSource::File("/x/peers.json".into());
        for bad in [&b"{not json"[..], b"{\"nodeIP\": \"10.0.0.1\"}"] {
            let e = ClusterView::parse(bad, &src).unwrap_err();
            assert_eq!(e.code, code::LIMITED_CONNECTIVITY);
            assert!(e.msg.contains("/x/peers.json"), "{e}");
        }
        let e = ViewSource::File("/nonexistent/twill/p.json".into())
            .read()
            .unwrap_err();
        assert_eq!(e.code, code::LIMITED_CONNECTIVITY);
        assert!(e.msg.contains("does not exist"), "{e}");
    }

    #[test]
    fn a_config_without_a_view_uses_the_run_dirs_cluster_json_only_when_it_exists() {
        let dir = std::env::temp_dir().join(format!("twill-default-view-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = PeersConf {
            run_dir: Some(dir.clone()),
            ..PeersConf::default()
        };
        assert_eq!(conf.source().unwrap(), None);
        std::fs::write(dir.join("cluster.json"), "[]").unwrap();
        let got = conf.source().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(got, Some(ViewSource::File(dir.join("cluster.json"))));
    }

    #[test]
    fn a_view_past_the_entry_limit_is_refused_naming_the_limit() {
        let src = ViewSource::File("/x/peers.json".into());
        let entry = r#"{"nodeIP": "10.0.0.2", "podCIDR": "10.244.2.0/24"}"#;
        let list = |n: usize| format!("[{}]", vec![entry; n].join(","));
        assert!(ClusterView::parse(list(MAX_VIEW_ENTRIES).as_bytes(), &src).is_ok());
        let e = ClusterView::parse(list(MAX_VIEW_ENTRIES + 1).as_bytes(), &src).unwrap_err();
        assert_eq!(e.code, code::LIMITED_CONNECTIVITY);
        assert!(e.msg.contains("more than 20000 entries"), "{e}");
        let e = ClusterView::parse(b"[1] x", &src).unwrap_err();
        assert!(e.msg.contains("not JSON"), "{e}");
    }

    #[test]
    fn conf_sources() {
        let c: PeersConf = serde_json::from_value(
            json!({"peers": [{"nodeIP": "10.0.0.2", "podCIDR": "10.244.2.0/24"}]}),
        )
        .unwrap();
        assert!(matches!(c.source().unwrap(), Some(ViewSource::Inline(_))));
        assert_eq!(c.run_dir(), Path::new("/run/twill"));
        let both = PeersConf {
            peers: Some(json!([])),
            peers_file: Some("/x".into()),
            run_dir: None,
        };
        assert_eq!(both.source().unwrap_err().code, code::INVALID_CONFIG);
    }

    #[test]
    fn select_recognises_this_node_by_address_or_own_range() {
        let v = ClusterView::new(vec![
            peer("10.0.0.1", "10.244.1.0/24"),
            peer("10.0.0.2", "10.244.2.0/24"),
            peer("10.0.0.3", "10.244.3.0/24"),
            peer("10.0.0.4", "10.244.4.0/25"),
            peer("10.0.0.9", "10.244.9.0/24"),
            peer("fd00::1", "fd10:1::/64"),
        ]);
        let own = [
            net("10.244.1.1/24"),
            net("10.244.3.0/24"),
            net("10.244.4.0/24"),
        ];
        let local = [net("fd00::1/64"), net("10.0.0.10/24")];
        let s = v.select(&own, &local);
        let ips = |ps: &[&Peer]| ps.iter().map(|p| p.node_ip.to_string()).collect::<Vec<_>>();
        assert_eq!(ips(&s.remote), ["10.0.0.2", "10.0.0.9"]);
        assert_eq!(ips(&s.this_node), ["10.0.0.1", "10.0.0.3", "fd00::1"]);
        assert_eq!(s.skipped.len(), 1);
        assert!(
            s.skipped[0].reason.contains("10.244.4.0/24"),
            "{:?}",
            s.skipped
        );
    }
}
