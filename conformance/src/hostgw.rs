//! The bridge-host-gw cluster the conformance suites share: a [`Fabric`] whose nodes have
//! flannel subnet files and a peers file, one network name, and readers of what the plugin
//! leaves on a node (reservations, twill links, peer routes, nftables tokens).
//!
//! Node `i` (0-based) has the underlay address `10.99.0.(i+1)` (dual-stack: `fd99::(i+1)`), the
//! pod subnet `10.244.(i+1).0/24` (dual-stack: `fd00:10:0:(i+1)::/64`), and its own dataDir,
//! runDir and peers file.
#![allow(missing_docs)]

use crate::{
    CNI_VERSIONS, DirSnapshot, Fabric, Invocation, Netns, Node, Pod, twill_bin, unique_name,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;

/// CNI and twill error codes asserted here (SPEC "Error"; pkg/src/error.rs).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u64 = 1;
    pub const NOT_AVAILABLE: u64 = 50;
    pub const IPAM_EXHAUSTED: u64 = 101;
    pub const CONFLICT: u64 = 104;
}

/// The cluster networks written to every subnet file.
pub const CLUSTER4: &str = "10.244.0.0/16";
pub const CLUSTER6: &str = "fd00:10::/56";
/// The MTU every subnet file gives unless a test says otherwise.
pub const MTU: u32 = 1500;
/// twill's route protocol, as `ip -j route` prints it.
pub const TWILL_PROTO: &str = "116";

pub fn plugin() -> PathBuf {
    twill_bin("bridge-host-gw")
}

pub fn pod_cidr4(i: usize) -> String {
    format!("10.244.{}.0/24", i + 1)
}

pub fn gw4(i: usize) -> String {
    format!("10.244.{}.1", i + 1)
}

pub fn pod_cidr6(i: usize) -> String {
    format!("fd00:10:0:{:x}::/64", i + 1)
}

pub fn gw6(i: usize) -> String {
    format!("fd00:10:0:{:x}::1", i + 1)
}

/// The flannel subnet file of node `i`. FLANNEL_IPMASQ=true says flanneld masquerades, so the
/// plugin does not unless the config's `ipMasq` says so.
pub fn subnet_env(i: usize, dual: bool, mtu: u32) -> String {
    let mut s = format!(
        "FLANNEL_NETWORK={CLUSTER4}\nFLANNEL_SUBNET={}/24\nFLANNEL_MTU={mtu}\nFLANNEL_IPMASQ=true\n",
        gw4(i)
    );
    if dual {
        s.push_str(&format!(
            "FLANNEL_IPV6_NETWORK={CLUSTER6}\nFLANNEL_IPV6_SUBNET={}/64\n",
            gw6(i)
        ));
    }
    s
}

pub fn write(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A fabric whose nodes have subnet files and a peers file listing every node (itself
/// included: the plugin must skip its own entry), and one network name.
pub struct Cluster {
    pub fab: Fabric,
    pub net: String,
    pub dual: bool,
}

impl Cluster {
    pub fn new(fab: Fabric) -> Cluster {
        let dual = fab.nodes.iter().all(|n| n.ip6.is_some());
        let c = Cluster {
            fab,
            net: unique_name("hg"),
            dual,
        };
        let peers = c.peers(|_| true);
        for (i, node) in c.fab.nodes.iter().enumerate() {
            write(&node.subnet_file, &subnet_env(i, dual, MTU));
            write(&node.peers_file, &peers.to_string());
        }
        c
    }

    pub fn node(&self, i: usize) -> &Node {
        self.fab.node(i)
    }

    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.fab.nodes.len()
    }

    /// The cluster view restricted to the nodes `keep` accepts: one `{nodeIP, podCIDR}` per
    /// node and family.
    pub fn peers(&self, keep: impl Fn(usize) -> bool) -> Value {
        let mut list = Vec::new();
        for (i, n) in self.fab.nodes.iter().enumerate().filter(|(i, _)| keep(*i)) {
            list.push(json!({"nodeIP": n.ip.to_string(), "podCIDR": pod_cidr4(i)}));
            if let Some(ip6) = n.ip6 {
                list.push(json!({"nodeIP": ip6.to_string(), "podCIDR": pod_cidr6(i)}));
            }
        }
        Value::Array(list)
    }

    /// The 1.1.0 config of node `i` (subnet file, dataDir, peersFile, runDir of that node).
    pub fn conf(&self, i: usize) -> Value {
        self.conf_v(i, "1.1.0")
    }

    pub fn conf_v(&self, i: usize, version: &str) -> Value {
        let n = self.node(i);
        json!({
            "cniVersion": version,
            "name": self.net,
            "type": "bridge-host-gw",
            "bridge": "cni0",
            "subnetFile": n.subnet_file,
            "dataDir": n.data_dir,
            "peersFile": n.peers_file,
            "runDir": n.run_dir,
        })
    }

    pub fn add_pod(&self, i: usize) -> Pod {
        self.add_pod_with(i, &self.conf(i))
    }

    pub fn add_pod_with(&self, i: usize, conf: &Value) -> Pod {
        self.node(i).add_pod(&plugin(), conf, &unique_name("c"))
    }

    /// What node `i`'s twill routes must be: every other node's pod subnet(s) via its address.
    pub fn expected_peer_routes(&self, i: usize) -> BTreeSet<(String, String)> {
        let mut want = BTreeSet::new();
        for (j, n) in self.fab.nodes.iter().enumerate().filter(|(j, _)| *j != i) {
            want.insert((pod_cidr4(j), n.ip.to_string()));
            if let Some(ip6) = n.ip6 {
                want.insert((pod_cidr6(j), ip6.to_string()));
            }
        }
        want
    }

    /// Reservation files (IP → owner) in node `i`'s dataDir for this network.
    pub fn reservations(&self, i: usize) -> BTreeMap<String, String> {
        reservations(self.node(i), &self.net)
    }

    /// Asserts node `i` holds nothing of any pod after all DELs: no twill veth, no reservation,
    /// no policy rule beyond the defaults, no route or nftables rule naming a pod address;
    /// while the bridge (with its gateways) and the peer routes remain.
    pub fn assert_clean_after_dels(&self, i: usize, pod_ips: &[IpAddr]) {
        let n = self.node(i);
        let ctx = format!("node {i} after all DELs");
        assert_eq!(tw_links(&n.ns), Vec::<String>::new(), "{ctx}: twill links");
        assert_eq!(self.reservations(i), BTreeMap::new(), "{ctx}: reservations");
        assert_default_rules(&n.ns, &ctx);
        for r in n.ns.routes() {
            let dst = r.dst.split('/').next().unwrap_or("");
            assert!(
                !pod_ips.iter().any(|ip| ip.to_string() == dst),
                "{ctx}: per-pod route left: {}",
                r.raw
            );
        }
        let nft = n.ns.nft_ruleset();
        for ip in pod_ips {
            assert!(
                !nft_tokens(&nft).contains(&ip.to_string()),
                "{ctx}: nftables still names pod {ip}:\n{nft}"
            );
        }
        let br =
            n.ns.link("cni0")
                .unwrap_or_else(|| panic!("{ctx}: cni0 gone"));
        assert_eq!(br.kind.as_deref(), Some("bridge"), "{ctx}");
        let mut gws = vec![format!("{}/24", gw4(i))];
        if self.dual {
            gws.push(format!("{}/64", gw6(i)));
        }
        gws.sort();
        assert_eq!(n.ns.global_cidrs("cni0"), gws, "{ctx}: bridge gateways");
        assert_eq!(
            peer_routes(&n.ns),
            self.expected_peer_routes(i),
            "{ctx}: peer routes must stay"
        );
    }
}

/// Reservation files (IP-named) in `<dataDir>/<net>` of `node`: file name → content.
pub fn reservations(node: &Node, net: &str) -> BTreeMap<String, String> {
    DirSnapshot::take(node.data_dir.join(net))
        .files()
        .into_iter()
        .filter_map(|(p, b)| {
            let name = p.display().to_string();
            name.parse::<IpAddr>()
                .ok()
                .map(|_| (name, String::from_utf8_lossy(&b).into_owned()))
        })
        .collect()
}

/// A data-dir snapshot without host-local's allocation cursors (`last_reserved_ip.*`), which
/// may legitimately advance on a rolled-back ADD.
pub fn state_without_cursors(node: &Node) -> Vec<(String, Vec<u8>)> {
    DirSnapshot::take(&node.data_dir)
        .files()
        .into_iter()
        .map(|(p, b)| (p.display().to_string(), b))
        .filter(|(p, _)| {
            !p.rsplit('/')
                .next()
                .unwrap_or("")
                .starts_with("last_reserved_ip")
        })
        .collect()
}

/// Names of the twill host veths (`tw*`) in a namespace.
pub fn tw_links(ns: &Netns) -> Vec<String> {
    ns.links()
        .into_iter()
        .filter(|l| l.name.starts_with("tw"))
        .map(|l| l.name)
        .collect()
}

/// The twill-owned routes (protocol 116) of the main table: (destination, gateway).
pub fn peer_routes(ns: &Netns) -> BTreeSet<(String, String)> {
    ns.main_routes()
        .into_iter()
        .filter(|r| r.protocol.as_deref() == Some(TWILL_PROTO))
        .map(|r| {
            (
                r.dst.clone(),
                r.gateway.map(|g| g.to_string()).unwrap_or_default(),
            )
        })
        .collect()
}

pub fn assert_default_rules(ns: &Netns, ctx: &str) {
    let rules: Vec<(u64, String)> = ns
        .rules()
        .iter()
        .map(|r| {
            (
                r["priority"].as_u64().unwrap_or(u64::MAX),
                r["table"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect();
    let want: Vec<(u64, String)> = [
        (0, "local"),
        (32766, "main"),
        (32767, "default"),
        (0, "local"),
        (32766, "main"),
    ]
    .iter()
    .map(|(p, t)| (*p, t.to_string()))
    .collect();
    assert_eq!(rules, want, "{ctx}: policy rules");
}

pub fn nft_tokens(text: &str) -> BTreeSet<String> {
    text.split(|c: char| c.is_whitespace() || matches!(c, ',' | '{' | '}' | ';'))
        .map(|t| {
            t.trim_end_matches("/32")
                .trim_end_matches("/128")
                .to_string()
        })
        .filter(|t| !t.is_empty())
        .collect()
}

/// The packet count of counter `name` in `table inet TABLE` of `ns`, polled every 20 ms for
/// up to 3 s until it reaches `min` (returns the last value read).
pub fn wait_counter(ns: &Netns, table: &str, name: &str, min: u64) -> u64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        let n = ns.nft_counter("inet", table, name);
        if n >= min || std::time::Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The host veth named by an ADD result (interfaces[1]).
pub fn host_veth(result: &Value) -> String {
    result["interfaces"][1]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("no host veth in result {result}"))
        .to_string()
}

/// `msg` and `details` of an error object, for "names it" assertions.
pub fn error_text(err: &Value) -> String {
    format!(
        "{} {}",
        err["msg"].as_str().unwrap_or(""),
        err["details"].as_str().unwrap_or("")
    )
}

/// A GC or STATUS call on `node` (no attachment variables).
pub fn plain(node: &Node, cmd: &str, conf: &Value) -> crate::Outcome {
    Invocation::new(plugin())
        .command(cmd)
        .stdin_json(conf)
        .on(node.ns.path())
        .run()
}

pub fn with_attachments(conf: &Value, valid: &[(&str, &str)]) -> Value {
    let mut c = conf.clone();
    c["cni.dev/valid-attachments"] = valid
        .iter()
        .map(|(id, ifn)| json!({"containerID": id, "ifname": ifn}))
        .collect();
    c
}

pub fn version_at_least(v: &str, min: &str) -> bool {
    let idx = |x: &str| {
        CNI_VERSIONS
            .iter()
            .position(|s| *s == x)
            .expect("known version")
    };
    idx(v) >= idx(min)
}

pub fn in_cidr(ip: &IpAddr, cidr: &str) -> bool {
    let net: ipnetwork::IpNetwork = cidr.parse().expect("test CIDR");
    net.contains(*ip)
}

/// The owner mark bridge-host-gw puts on a host veth as its alias (IFLA_IFALIAS):
/// `twill <network> <container ID> <ifname>`.
pub fn owner_mark(net: &str, container_id: &str, ifname: &str) -> String {
    format!("twill {net} {container_id} {ifname}")
}

/// The links of a namespace that carry an alias: name → alias.
pub fn link_aliases(ns: &Netns) -> BTreeMap<String, String> {
    ns.links()
        .into_iter()
        .filter_map(|l| {
            let alias = l.raw.get("ifalias")?.as_str()?.to_string();
            Some((l.name, alias))
        })
        .collect()
}

/// What of a node a refused call must leave as it was: link names and flags, addresses,
/// routes, the nftables rule set, and every file under the node's directories.
#[derive(Debug, PartialEq)]
pub struct NodeSnapshot {
    pub links: Vec<String>,
    pub addrs: Vec<String>,
    pub routes: Vec<String>,
    pub nft: String,
    pub files: Vec<(String, Vec<u8>)>,
}

impl NodeSnapshot {
    /// Takes the snapshot of `node`.
    pub fn take(node: &Node) -> NodeSnapshot {
        let mut links: Vec<String> = node
            .ns
            .links()
            .iter()
            .map(|l| format!("{} mtu {} up {} {}", l.name, l.mtu, l.up, l.raw["flags"]))
            .collect();
        links.sort();
        let mut addrs: Vec<String> = node
            .ns
            .all_addrs()
            .iter()
            .map(|a| format!("{} {}", a.dev, a.cidr()))
            .collect();
        addrs.sort();
        // The kernel adds the underlay's IPv6 link-local routes on its own schedule (after DAD).
        let mut routes: Vec<String> = node
            .ns
            .routes()
            .iter()
            .filter(|r| !r.dst.starts_with("fe80:"))
            .map(|r| r.raw.to_string())
            .collect();
        routes.sort();
        let dir = node.data_dir.parent().expect("node dir");
        let files = DirSnapshot::take(dir)
            .files()
            .into_iter()
            .map(|(p, b)| (p.display().to_string(), b))
            .collect();
        NodeSnapshot {
            links,
            addrs,
            routes,
            nft: node.ns.nft_ruleset(),
            files,
        }
    }

    /// What was added (+) and removed (-), field by field.
    pub fn diff(&self, after: &NodeSnapshot) -> String {
        fn lines(field: &str, a: &[String], b: &[String], out: &mut Vec<String>) {
            out.extend(
                b.iter()
                    .filter(|x| !a.contains(x))
                    .map(|x| format!("+{field} {x}")),
            );
            out.extend(
                a.iter()
                    .filter(|x| !b.contains(x))
                    .map(|x| format!("-{field} {x}")),
            );
        }
        let mut out = Vec::new();
        lines("link", &self.links, &after.links, &mut out);
        lines("addr", &self.addrs, &after.addrs, &mut out);
        lines("route", &self.routes, &after.routes, &mut out);
        let nft = |s: &str| s.lines().map(str::to_string).collect::<Vec<_>>();
        lines("nft", &nft(&self.nft), &nft(&after.nft), &mut out);
        let names = |f: &[(String, Vec<u8>)]| {
            f.iter()
                .map(|(p, b)| format!("{p} ({} bytes)", b.len()))
                .collect::<Vec<_>>()
        };
        lines("file", &names(&self.files), &names(&after.files), &mut out);
        out.join("\n  ")
    }
}
