//! The cluster view (peers: node IP + pod CIDR) and the reconcile of twill-owned peer routes.
//!
//! Every plugin that routes to other nodes (host-gw now, vxlan/ipip later) shares this model:
//! a [`ClusterView`] (from the config's inline `peers` or a `peersFile` written by whoever
//! manages the cluster), a [`RouteMode`] that turns the remote peers into desired
//! [`PeerRoute`]s, and [`reconcile`], which makes the node's main routing table match.
//!
//! Ownership: twill marks its routes with the protocol [`TWILL_PROTO`] and only ever replaces
//! or deletes routes carrying it. A route of another owner (admin, flanneld, a routing daemon)
//! that occupies the same kernel key (table, destination, metric) is *left alone*: the desired
//! route is reported as a conflict instead of being written, and the reconcile is retried on
//! the next call (no stamp is written while conflicts remain). Routes of another owner at a
//! different metric are not touched either; the kernel then prefers the lower metric.
//!
//! Several twill networks may share one node (and one protocol number): each network records
//! the destinations it installed in its state file and deletes only those, so networks never
//! delete each other's routes.
//!
//! Skip: the state file (under `runDir`, named by network and the node's netns cookie) holds a
//! fingerprint of (view, own subnets, mode). When it matches, [`reconcile`] returns without a
//! single netlink call. The cost: a route deleted by hand is not re-added until the view
//! changes; CHECK/GC ([`verify`]) are the places that look at the kernel again.

use crate::error::{Error, Result};
use crate::flannel::subnet_file::network_of;
use crate::kernel::netlink::{Netlink, RouteFilter, RouteSpec, rt_table};
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub use crate::kernel::netlink::TWILL_PROTO;

/// Where state files live unless the config says otherwise (`runDir`).
pub const DEFAULT_RUN_DIR: &str = "/run/twill";

/// The metric the kernel gives an IPv6 route added with metric 0 (IP6_RT_PRIO_USER).
const IPV6_DEFAULT_METRIC: u32 = 1024;

/// Another node of the cluster: its IP on the underlay and its pod CIDR.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Peer {
    /// The node's address on the network that connects the nodes.
    #[serde(rename = "nodeIP")]
    pub node_ip: IpAddr,
    /// The pod CIDR of that node.
    #[serde(rename = "podCIDR")]
    pub pod_cidr: IpNetwork,
}

/// The peer-related keys of a plugin's network config; flatten it into the plugin's own keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeersConf {
    /// `peers`: the cluster view inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<Peer>>,
    /// `peersFile`: a file holding the same JSON list, replaced atomically by its writer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers_file: Option<PathBuf>,
    /// `runDir`: where twill keeps its per-node state files (default [`DEFAULT_RUN_DIR`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_dir: Option<PathBuf>,
}

impl PeersConf {
    /// The cluster view, or `None` when the config gives neither `peers` nor `peersFile`
    /// (then the plugin manages no peer routes at all). Both given is code 7.
    pub fn view(&self) -> Result<Option<ClusterView>> {
        match (&self.peers, &self.peers_file) {
            (Some(_), Some(_)) => Err(Error::invalid_config(
                "give either \"peers\" or \"peersFile\", not both",
            )),
            (Some(list), None) => ClusterView::new(list.clone()).map(Some),
            (None, Some(path)) => ClusterView::load_file(path).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// The run directory for state files.
    pub fn run_dir(&self) -> &Path {
        self.run_dir
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_RUN_DIR))
    }
}

/// The set of peers, validated and in canonical order (sorted, pod CIDRs as network addresses).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    peers: Vec<Peer>,
}

impl ClusterView {
    /// Validates and canonicalizes `peers`: pod CIDRs reduced to their network address,
    /// exact duplicates dropped; one pod CIDR claimed by two node IPs is code 7.
    pub fn new(peers: Vec<Peer>) -> Result<ClusterView> {
        let mut peers: Vec<Peer> = peers
            .into_iter()
            .map(|p| Peer {
                node_ip: p.node_ip,
                pod_cidr: network_of(p.pod_cidr),
            })
            .collect();
        peers.sort_by_key(|p| (p.pod_cidr, p.node_ip));
        peers.dedup();
        for pair in peers.windows(2) {
            if pair[0].pod_cidr == pair[1].pod_cidr {
                return Err(Error::invalid_config(format!(
                    "peers: podCIDR {} is claimed by two nodes, {} and {}",
                    pair[0].pod_cidr, pair[0].node_ip, pair[1].node_ip
                )));
            }
        }
        Ok(ClusterView { peers })
    }

    /// Reads a peers file (a JSON list of `{"nodeIP", "podCIDR"}`). Missing file: code 7;
    /// unreadable: code 5; bad JSON: code 6.
    pub fn load_file(path: &Path) -> Result<ClusterView> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::invalid_config(format!(
                    "peersFile {} does not exist: whoever manages the cluster must write it \
                     (or give \"peers\" inline)",
                    path.display()
                )));
            }
            Err(e) => return Err(Error::io(format!("read peersFile {}", path.display()), e)),
        };
        let peers: Vec<Peer> = serde_json::from_slice(&bytes).map_err(|e| {
            Error::decode(format!(
                "peersFile {}: expected a JSON list of {{\"nodeIP\", \"podCIDR\"}}",
                path.display()
            ))
            .with_details(e)
        })?;
        Self::new(peers)
    }

    /// All peers, including this node if listed, in canonical order.
    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    /// The peers other than this node: drops those whose pod CIDR is one of `own_subnets` or
    /// whose node IP is one of `local_addrs`.
    pub fn remote(&self, own_subnets: &[IpNetwork], local_addrs: &[IpAddr]) -> Vec<&Peer> {
        let own: Vec<IpNetwork> = own_subnets.iter().map(|s| network_of(*s)).collect();
        self.peers
            .iter()
            .filter(|p| !own.contains(&p.pod_cidr) && !local_addrs.contains(&p.node_ip))
            .collect()
    }
}

/// A route twill wants in the main table (protocol [`TWILL_PROTO`], metric 0 = kernel default).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerRoute {
    /// Destination (a peer's pod CIDR).
    pub dst: IpNetwork,
    /// Next hop, if any.
    pub gateway: Option<IpAddr>,
    /// Output interface index; `None` lets the kernel resolve it from the gateway.
    pub oif: Option<u32>,
    /// `RTNH_F_ONLINK`: gateway is on-link even without a covering connected route.
    pub onlink: bool,
}

impl PeerRoute {
    /// The metric the kernel files this route under.
    pub fn metric(&self) -> u32 {
        effective_metric(&self.dst, 0)
    }
}

/// A route of the main table as dumped from the kernel (unicast, any protocol).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelRoute {
    /// Destination.
    pub dst: IpNetwork,
    /// Gateway (`None` for on-link or multipath routes).
    pub gateway: Option<IpAddr>,
    /// Output interface index (`None` for multipath routes).
    pub oif: Option<u32>,
    /// `RTNH_F_ONLINK` set.
    pub onlink: bool,
    /// `rtm_protocol`.
    pub protocol: u8,
    /// `RTA_PRIORITY` (metric), as the kernel reports it.
    pub priority: u32,
}

impl KernelRoute {
    /// True when this kernel route is exactly what `want` asks for (same kernel key too).
    pub fn satisfies(&self, want: &PeerRoute) -> bool {
        self.dst == want.dst
            && self.gateway == want.gateway
            && want.oif.is_none_or(|o| self.oif == Some(o))
            && self.onlink == want.onlink
            && effective_metric(&self.dst, self.priority) == want.metric()
    }
}

fn effective_metric(dst: &IpNetwork, priority: u32) -> u32 {
    if dst.is_ipv6() && priority == 0 {
        IPV6_DEFAULT_METRIC
    } else {
        priority
    }
}

/// What [`reconcile`] needs from the kernel, in the node's network namespace. The netlink
/// client implements it; tests can fake it.
pub trait PeerRouteOps {
    /// Every address configured on the node (all links, both families).
    fn local_addrs(&mut self) -> Result<Vec<IpAddr>>;
    /// Every unicast route of the main table, both families, any protocol.
    fn main_routes(&mut self) -> Result<Vec<KernelRoute>>;
    /// Creates or replaces `route` in the main table with protocol [`TWILL_PROTO`]
    /// (`NLM_F_CREATE | NLM_F_REPLACE`: never fails with EEXIST).
    fn replace_peer_route(&mut self, route: &PeerRoute) -> Result<()>;
    /// Deletes `route` from the main table; the request carries protocol [`TWILL_PROTO`] and
    /// the route's metric so the kernel can only match twill's route. Already gone is `Ok`.
    fn delete_peer_route(&mut self, route: &KernelRoute) -> Result<()>;
}

/// `rtm_type` of a plain unicast route.
const RTN_UNICAST: u8 = 1;

/// The real thing: the node's routes over twill's rtnetlink client (its socket's namespace).
impl PeerRouteOps for Netlink {
    fn local_addrs(&mut self) -> Result<Vec<IpAddr>> {
        Ok(self
            .addresses(None, None)?
            .into_iter()
            .map(|a| a.addr)
            .collect())
    }

    fn main_routes(&mut self) -> Result<Vec<KernelRoute>> {
        let filter = RouteFilter {
            table: Some(rt_table::MAIN),
            ..RouteFilter::default()
        };
        Ok(self
            .routes(&filter)?
            .into_iter()
            .filter(|r| r.kind == RTN_UNICAST)
            .map(|r| KernelRoute {
                dst: r.dst,
                gateway: r.gateway,
                oif: r.oif,
                onlink: r.onlink,
                protocol: r.protocol,
                priority: r.metric.unwrap_or(0),
            })
            .collect())
    }

    fn replace_peer_route(&mut self, route: &PeerRoute) -> Result<()> {
        let spec = RouteSpec {
            gateway: route.gateway,
            oif: route.oif,
            onlink: route.onlink,
            ..RouteSpec::new(route.dst)
        };
        Ok(self.replace_route(&spec)?)
    }

    fn delete_peer_route(&mut self, route: &KernelRoute) -> Result<()> {
        let spec = RouteSpec {
            gateway: route.gateway,
            metric: Some(route.priority),
            protocol: TWILL_PROTO,
            ..RouteSpec::new(route.dst)
        };
        match self.delete_route(&spec) {
            Err(e) if e.is_not_found() => Ok(()),
            r => Ok(r?),
        }
    }
}

/// How peers become routes. Each variant's parameters are part of the fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RouteMode {
    /// flannel host-gw: `podCIDR via nodeIP` (the node IP must be on a connected subnet).
    HostGw,
}

impl RouteMode {
    /// A stable text naming the mode and its parameters (hashed into the fingerprint).
    pub fn key(&self) -> String {
        match self {
            RouteMode::HostGw => "host-gw".into(),
        }
    }

    /// The routes this mode wants for `peers` (already without this node).
    pub fn desired(&self, peers: &[&Peer]) -> Result<Vec<PeerRoute>> {
        match self {
            RouteMode::HostGw => host_gw_routes(peers),
        }
    }
}

/// host-gw: one route `podCIDR via nodeIP` per peer; node IP and pod CIDR must be of the
/// same family (code 7 otherwise).
pub fn host_gw_routes(peers: &[&Peer]) -> Result<Vec<PeerRoute>> {
    peers
        .iter()
        .map(|p| {
            if p.node_ip.is_ipv4() != p.pod_cidr.is_ipv4() {
                return Err(Error::invalid_config(format!(
                    "peers: host-gw cannot route podCIDR {} via nodeIP {} (different IP \
                     families): list an IPv{} nodeIP for it",
                    p.pod_cidr,
                    p.node_ip,
                    if p.pod_cidr.is_ipv4() { 4 } else { 6 }
                )));
            }
            Ok(PeerRoute {
                dst: p.pod_cidr,
                gateway: Some(p.node_ip),
                oif: None,
                onlink: false,
            })
        })
        .collect()
}

/// The difference between desired and kernel state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutePlan {
    /// Missing or different: to be written with replace.
    pub replace: Vec<PeerRoute>,
    /// twill's routes (of this network) that are no longer wanted.
    pub delete: Vec<KernelRoute>,
    /// Foreign routes sitting on the kernel key of a desired route (left alone).
    pub conflicts: Vec<KernelRoute>,
}

impl RoutePlan {
    /// True when the kernel already matches (nothing to write, no conflict).
    pub fn is_empty(&self) -> bool {
        self.replace.is_empty() && self.delete.is_empty() && self.conflicts.is_empty()
    }
}

/// Pure diff. `managed` are the destinations this network installed before: only twill
/// routes to those are deletion candidates (other twill networks' routes are never touched).
pub fn plan_routes(
    desired: &[PeerRoute],
    existing: &[KernelRoute],
    managed: &BTreeSet<IpNetwork>,
) -> RoutePlan {
    // Index both sides by destination: O((n + m) log n) for clusters of thousands of nodes.
    let mut by_dst: BTreeMap<IpNetwork, Vec<&KernelRoute>> = BTreeMap::new();
    for r in existing {
        by_dst.entry(r.dst).or_default().push(r);
    }
    let mut wanted: BTreeMap<IpNetwork, Vec<&PeerRoute>> = BTreeMap::new();
    for w in desired {
        wanted.entry(w.dst).or_default().push(w);
    }
    let mut plan = RoutePlan::default();
    for want in desired {
        let here = by_dst.get(&want.dst).map(Vec::as_slice).unwrap_or_default();
        if here
            .iter()
            .any(|r| r.protocol == TWILL_PROTO && r.satisfies(want))
        {
            continue;
        }
        let foreign: Vec<&&KernelRoute> = here
            .iter()
            .filter(|r| {
                r.protocol != TWILL_PROTO && effective_metric(&r.dst, r.priority) == want.metric()
            })
            .collect();
        if foreign.is_empty() {
            plan.replace.push(want.clone());
        } else {
            plan.conflicts
                .extend(foreign.into_iter().map(|r| (*r).clone()));
        }
    }
    for have in existing.iter().filter(|r| r.protocol == TWILL_PROTO) {
        let keep = match wanted.get(&have.dst) {
            // Ours at a stray metric for a wanted destination goes; at the wanted metric it
            // is kept (or overwritten in place by the replace).
            Some(ws) => {
                let metric = effective_metric(&have.dst, have.priority);
                ws.iter().any(|w| w.metric() == metric)
            }
            // Not wanted: only this network's own destinations are deleted.
            None => !managed.contains(&have.dst),
        };
        if !keep {
            plan.delete.push(have.clone());
        }
    }
    plan
}

/// FNV-1a, 64 bit: a stable hash for fingerprints (same input, same value, any build).
#[derive(Debug, Clone, Copy)]
pub struct Fnv1a64(u64);

impl Default for Fnv1a64 {
    fn default() -> Self {
        Fnv1a64(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a64 {
    /// Feeds `bytes`.
    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    /// Feeds an address as family tag + octets (fixed length per family: unambiguous).
    pub fn write_ip(&mut self, ip: &IpAddr) {
        match ip {
            IpAddr::V4(a) => {
                self.write(&[4]);
                self.write(&a.octets());
            }
            IpAddr::V6(a) => {
                self.write(&[6]);
                self.write(&a.octets());
            }
        }
    }
    /// Feeds a network as its address and prefix length.
    pub fn write_net(&mut self, n: &IpNetwork) {
        self.write_ip(&n.ip());
        self.write(&[n.prefix()]);
    }
    /// The hash so far.
    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// FNV-1a 64 of `bytes` in one go.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h = Fnv1a64::default();
    h.write(bytes);
    h.finish()
}

/// The fingerprint of what a reconcile depends on: the view, the node's own subnets, the mode
/// (and twill's route protocol and this encoding's version).
pub fn fingerprint(view: &ClusterView, own_subnets: &[IpNetwork], mode: &RouteMode) -> u64 {
    let mut own: Vec<IpNetwork> = own_subnets.iter().map(|s| network_of(*s)).collect();
    own.sort();
    own.dedup();
    let mut h = Fnv1a64::default();
    h.write(b"twill-peers 1\0");
    h.write(&[TWILL_PROTO]);
    h.write(mode.key().as_bytes());
    h.write(&[0]);
    h.write(&(own.len() as u64).to_le_bytes());
    for s in &own {
        h.write_net(s);
    }
    for p in view.peers() {
        h.write_ip(&p.node_ip);
        h.write_net(&p.pod_cidr);
    }
    h.finish()
}

/// Network names become file names: letters, digits, `_`, `.`, `-`, not starting with `.`.
fn check_network_name(network: &str) -> Result<()> {
    let ok = !network.is_empty()
        && network.len() <= 200
        && !network.starts_with('.')
        && network
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_config(format!(
            "invalid network name {network:?}: use letters, digits, '_', '.', '-'"
        )))
    }
}

/// What a state file records: the fingerprint applied (`None` while an apply is in progress
/// or when conflicts remain) and the destinations this network has installed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerState {
    /// Fingerprint of the last complete apply.
    pub fingerprint: Option<u64>,
    /// Destinations this network owns in the kernel (deletion candidates).
    pub managed: BTreeSet<IpNetwork>,
}

/// The per-network, per-namespace state file and its lock.
///
/// Path: `<runDir>/<network>.peers.<cookie as 16 hex>`; lock: `<runDir>/<network>.peers.lock`.
/// Format: first line the fingerprint as 16 hex digits (or `pending`), then one managed
/// destination per line. Written as temp file + rename.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
    lock_path: PathBuf,
}

impl StateFile {
    /// The state file of `network` in the namespace with cookie `netns_cookie`
    /// (`twill::kernel::netns::Netns::cookie`). The network name is validated (code 7).
    pub fn new(run_dir: &Path, network: &str, netns_cookie: u64) -> Result<StateFile> {
        check_network_name(network)?;
        Ok(StateFile {
            path: run_dir.join(format!("{network}.peers.{netns_cookie:016x}")),
            lock_path: run_dir.join(format!("{network}.peers.lock")),
        })
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when the file exists and records exactly `fp` (one read, no parsing beyond it).
    pub fn matches(&self, fp: u64) -> bool {
        let mut head = [0u8; 17];
        let read = File::open(&self.path).and_then(|mut f| f.read_exact(&mut head));
        read.is_ok() && head[16] == b'\n' && head[..16] == *format!("{fp:016x}").as_bytes()
    }

    /// Reads the state; a missing or unreadable file is the empty state, a corrupt line is
    /// skipped (worst case: a reconcile that was not needed).
    pub fn read(&self) -> PeerState {
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return PeerState::default();
        };
        let mut lines = text.lines();
        let fingerprint = lines.next().and_then(|l| u64::from_str_radix(l, 16).ok());
        let managed = lines.filter_map(|l| l.parse::<IpNetwork>().ok()).collect();
        PeerState {
            fingerprint,
            managed,
        }
    }

    /// Atomically replaces the state (temp file in the same directory + rename).
    pub fn write(&self, state: &PeerState) -> Result<()> {
        let mut text = match state.fingerprint {
            Some(fp) => format!("{fp:016x}\n"),
            None => "pending\n".to_string(),
        };
        for d in &state.managed {
            text.push_str(&format!("{d}\n"));
        }
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(format!(".tmp{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let res = File::create(&tmp)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        res.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(format!("write twill state file {}", self.path.display()), e)
        })
    }

    /// Removes the state file (the next reconcile then looks at the kernel). Absent is `Ok`.
    pub fn remove(&self) -> Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(format!("remove {}", self.path.display()), e))
            }
            _ => Ok(()),
        }
    }

    /// Takes the network's exclusive lock (creating the run dir); released on drop.
    fn lock(&self) -> Result<File> {
        if let Some(dir) = self.lock_path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("create run dir {}", dir.display()), e))?;
        }
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .map_err(|e| Error::io(format!("open {}", self.lock_path.display()), e))?;
        f.lock()
            .map_err(|e| Error::io(format!("lock {}", self.lock_path.display()), e))?;
        Ok(f)
    }
}

/// What [`reconcile`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconciled {
    /// The state file matched: nothing was asked of the kernel.
    Unchanged,
    /// The kernel was compared and the difference applied (the plan says what was done;
    /// its conflicts were left alone).
    Applied(RoutePlan),
}

/// Makes the main table hold exactly the routes `mode` wants for the remote peers of `view`.
///
/// Fast path: state file matches the fingerprint → [`Reconciled::Unchanged`], no netlink.
/// Slow path, under the network's lock: dump local addresses and the main table, diff, write
/// the state as pending (old ∪ new destinations), replace/delete, then record the fingerprint
/// (only when no conflict remains). Every change is attempted; failures are reported together
/// (first failure's code) and leave the state pending so the next call retries.
pub fn reconcile<T: PeerRouteOps + ?Sized>(
    ops: &mut T,
    state: &StateFile,
    view: &ClusterView,
    own_subnets: &[IpNetwork],
    mode: &RouteMode,
) -> Result<Reconciled> {
    let fp = fingerprint(view, own_subnets, mode);
    if state.matches(fp) {
        return Ok(Reconciled::Unchanged);
    }
    let _lock = state.lock()?;
    if state.matches(fp) {
        return Ok(Reconciled::Unchanged);
    }
    let prev = state.read();
    let plan = diff_with_kernel(ops, view, own_subnets, mode, &prev.managed)?;
    let desired_dsts: BTreeSet<IpNetwork> = plan.1.iter().map(|r| r.dst).collect();
    let plan = plan.0;
    if !plan.replace.is_empty() || !plan.delete.is_empty() {
        let pending = PeerState {
            fingerprint: None,
            managed: prev.managed.union(&desired_dsts).copied().collect(),
        };
        state.write(&pending)?;
    }
    let mut failures: Vec<Error> = Vec::new();
    for r in &plan.replace {
        if let Err(e) = ops.replace_peer_route(r) {
            failures.push(e.context(format!("route {} via {:?}", r.dst, r.gateway)));
        }
    }
    for r in &plan.delete {
        if let Err(e) = ops.delete_peer_route(r) {
            failures.push(e.context(format!("delete route {}", r.dst)));
        }
    }
    if let Some(first) = failures.first() {
        let all: Vec<String> = failures.iter().map(|e| e.to_string()).collect();
        return Err(
            Error::new(first.code, "peer routes: some changes failed").with_details(all.join("; "))
        );
    }
    let done = PeerState {
        fingerprint: plan.conflicts.is_empty().then_some(fp),
        managed: desired_dsts,
    };
    state.write(&done)?;
    Ok(Reconciled::Applied(plan))
}

/// CHECK/GC: compares the kernel with the view without changing anything and without the
/// fast path. An empty plan means the node is as [`reconcile`] would leave it.
pub fn verify<T: PeerRouteOps + ?Sized>(
    ops: &mut T,
    state: &StateFile,
    view: &ClusterView,
    own_subnets: &[IpNetwork],
    mode: &RouteMode,
) -> Result<RoutePlan> {
    let prev = state.read();
    Ok(diff_with_kernel(ops, view, own_subnets, mode, &prev.managed)?.0)
}

fn diff_with_kernel<T: PeerRouteOps + ?Sized>(
    ops: &mut T,
    view: &ClusterView,
    own_subnets: &[IpNetwork],
    mode: &RouteMode,
    managed: &BTreeSet<IpNetwork>,
) -> Result<(RoutePlan, Vec<PeerRoute>)> {
    let local = ops.local_addrs()?;
    let desired = mode.desired(&view.remote(own_subnets, &local))?;
    let existing = ops.main_routes()?;
    Ok((plan_routes(&desired, &existing, managed), desired))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn peer(node: &str, cidr: &str) -> Peer {
        Peer {
            node_ip: ip(node),
            pod_cidr: net(cidr),
        }
    }
    fn want(dst: &str, gw: &str) -> PeerRoute {
        PeerRoute {
            dst: net(dst),
            gateway: Some(ip(gw)),
            oif: None,
            onlink: false,
        }
    }
    fn kroute(dst: &str, gw: &str, proto: u8) -> KernelRoute {
        let d = net(dst);
        KernelRoute {
            dst: d,
            gateway: Some(ip(gw)),
            oif: Some(2),
            onlink: false,
            protocol: proto,
            priority: if d.is_ipv6() { 1024 } else { 0 },
        }
    }

    /// An in-memory main table with the kernel's key semantics, counting calls.
    #[derive(Default)]
    struct FakeKernel {
        addrs: Vec<IpAddr>,
        routes: Vec<KernelRoute>,
        calls: usize,
        fail_replace: Option<IpNetwork>,
    }

    impl PeerRouteOps for FakeKernel {
        fn local_addrs(&mut self) -> Result<Vec<IpAddr>> {
            self.calls += 1;
            Ok(self.addrs.clone())
        }
        fn main_routes(&mut self) -> Result<Vec<KernelRoute>> {
            self.calls += 1;
            Ok(self.routes.clone())
        }
        fn replace_peer_route(&mut self, r: &PeerRoute) -> Result<()> {
            self.calls += 1;
            if self.fail_replace == Some(r.dst) {
                return Err(Error::new(crate::code::NETLINK, "Network is unreachable"));
            }
            let m = r.metric();
            self.routes
                .retain(|k| !(k.dst == r.dst && effective_metric(&k.dst, k.priority) == m));
            self.routes.push(KernelRoute {
                dst: r.dst,
                gateway: r.gateway,
                oif: Some(r.oif.unwrap_or(2)),
                onlink: r.onlink,
                protocol: TWILL_PROTO,
                priority: m,
            });
            Ok(())
        }
        fn delete_peer_route(&mut self, r: &KernelRoute) -> Result<()> {
            self.calls += 1;
            self.routes.retain(|k| {
                !(k.dst == r.dst && k.priority == r.priority && k.protocol == TWILL_PROTO)
            });
            Ok(())
        }
    }

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!("twill-peers-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn peer_json_shape() {
        let p: Peer =
            serde_json::from_str(r#"{"nodeIP": "192.168.1.2", "podCIDR": "10.244.2.0/24"}"#)
                .unwrap();
        assert_eq!(p, peer("192.168.1.2", "10.244.2.0/24"));
        let back = serde_json::to_value(&p).unwrap();
        assert_eq!(
            back,
            serde_json::json!({"nodeIP": "192.168.1.2", "podCIDR": "10.244.2.0/24"})
        );
    }

    #[test]
    fn view_canonical_and_validated() {
        let v = ClusterView::new(vec![
            peer("192.168.1.3", "10.244.3.7/24"),
            peer("192.168.1.2", "10.244.2.0/24"),
            peer("192.168.1.2", "10.244.2.0/24"),
        ])
        .unwrap();
        assert_eq!(
            v.peers(),
            &[
                peer("192.168.1.2", "10.244.2.0/24"),
                peer("192.168.1.3", "10.244.3.0/24")
            ]
        );
        let e = ClusterView::new(vec![
            peer("192.168.1.2", "10.244.2.0/24"),
            peer("192.168.1.9", "10.244.2.0/24"),
        ])
        .unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("10.244.2.0/24"), "{e}");
    }

    #[test]
    fn conf_sources() {
        let c: PeersConf = serde_json::from_str(
            r#"{"peers": [{"nodeIP": "10.0.0.2", "podCIDR": "10.244.2.0/24"}]}"#,
        )
        .unwrap();
        assert_eq!(c.view().unwrap().unwrap().peers().len(), 1);
        assert_eq!(c.run_dir(), Path::new("/run/twill"));
        assert_eq!(PeersConf::default().view().unwrap(), None);
        let both = PeersConf {
            peers: Some(vec![]),
            peers_file: Some("/x".into()),
            run_dir: None,
        };
        assert_eq!(both.view().unwrap_err().code, 7);
    }

    #[test]
    fn peers_file_errors_and_load() {
        let dir = TempDir::new("file");
        std::fs::create_dir_all(&dir.0).unwrap();
        let path = dir.0.join("peers.json");
        let e = ClusterView::load_file(&path).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("peers.json"), "{e}");
        std::fs::write(&path, "[{\"nodeIP\": 1}]").unwrap();
        assert_eq!(ClusterView::load_file(&path).unwrap_err().code, 6);
        std::fs::write(
            &path,
            r#"[{"nodeIP": "fd00::2", "podCIDR": "fd10:2::/64"},
                {"nodeIP": "10.0.0.2", "podCIDR": "10.244.2.0/24"}]"#,
        )
        .unwrap();
        assert_eq!(ClusterView::load_file(&path).unwrap().peers().len(), 2);
    }

    #[test]
    fn remote_excludes_own_node() {
        let v = ClusterView::new(vec![
            peer("10.0.0.1", "10.244.1.0/24"),
            peer("10.0.0.2", "10.244.2.0/24"),
            peer("10.0.0.3", "10.244.3.0/24"),
            peer("fd00::1", "fd10:1::/64"),
        ])
        .unwrap();
        // Own by subnet (given with host bits, as flanneld writes it) and by local address.
        let r = v.remote(&[net("10.244.1.1/24")], &[ip("fd00::1")]);
        assert_eq!(r, vec![&v.peers()[1], &v.peers()[2]]);
    }

    #[test]
    fn host_gw_routes_and_family_check() {
        let p = [
            peer("10.0.0.2", "10.244.2.0/24"),
            peer("fd00::2", "fd10:2::/64"),
        ];
        let r = host_gw_routes(&[&p[0], &p[1]]).unwrap();
        assert_eq!(
            r,
            vec![
                want("10.244.2.0/24", "10.0.0.2"),
                want("fd10:2::/64", "fd00::2")
            ]
        );
        let bad = peer("10.0.0.2", "fd10:2::/64");
        assert_eq!(host_gw_routes(&[&bad]).unwrap_err().code, 7);
    }

    #[test]
    fn plan_adds_missing_changes_different_deletes_extra() {
        let desired = [
            want("10.244.2.0/24", "10.0.0.2"),
            want("10.244.3.0/24", "10.0.0.3"),
            want("fd10:2::/64", "fd00::2"),
        ];
        let existing = [
            kroute("10.244.2.0/24", "10.0.0.2", TWILL_PROTO), // same: keep
            kroute("10.244.3.0/24", "10.0.0.99", TWILL_PROTO), // changed gateway
            kroute("10.244.4.0/24", "10.0.0.4", TWILL_PROTO), // extra, ours
            kroute("10.244.5.0/24", "10.0.0.5", TWILL_PROTO), // extra, other twill network
            kroute("10.1.0.0/16", "10.0.0.254", 4),           // unrelated foreign
        ];
        let managed: BTreeSet<IpNetwork> = [
            net("10.244.2.0/24"),
            net("10.244.3.0/24"),
            net("10.244.4.0/24"),
        ]
        .into();
        let plan = plan_routes(&desired, &existing, &managed);
        assert_eq!(
            plan.replace,
            vec![
                want("10.244.3.0/24", "10.0.0.3"),
                want("fd10:2::/64", "fd00::2")
            ]
        );
        assert_eq!(plan.delete, vec![existing[2].clone()]);
        assert!(plan.conflicts.is_empty());
    }

    #[test]
    fn plan_leaves_foreign_route_on_same_key() {
        let desired = [
            want("10.244.2.0/24", "10.0.0.2"),
            want("fd10:2::/64", "fd00::2"),
        ];
        let mut foreign_v6 = kroute("fd10:2::/64", "fd00::9", 3);
        foreign_v6.priority = 1024;
        let mut foreign_other_metric = kroute("10.244.2.0/24", "10.0.0.9", 3);
        foreign_other_metric.priority = 100;
        let existing = [foreign_v6.clone(), foreign_other_metric];
        let plan = plan_routes(&desired, &existing, &BTreeSet::new());
        // v4: the foreign route is at metric 100, ours goes to metric 0: no clash.
        assert_eq!(plan.replace, vec![want("10.244.2.0/24", "10.0.0.2")]);
        assert_eq!(plan.conflicts, vec![foreign_v6]);
        assert!(plan.delete.is_empty());
    }

    #[test]
    fn plan_deletes_own_stray_metric() {
        let desired = [want("10.244.2.0/24", "10.0.0.2")];
        let mut stray = kroute("10.244.2.0/24", "10.0.0.2", TWILL_PROTO);
        stray.priority = 50;
        let plan = plan_routes(&desired, std::slice::from_ref(&stray), &BTreeSet::new());
        assert_eq!(plan.replace, desired.to_vec());
        assert_eq!(plan.delete, vec![stray]);
    }

    #[test]
    fn fnv_known_values_and_fingerprint_stability() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
        let a = ClusterView::new(vec![
            peer("10.0.0.2", "10.244.2.0/24"),
            peer("10.0.0.3", "10.244.3.0/24"),
        ])
        .unwrap();
        let b = ClusterView::new(vec![
            peer("10.0.0.3", "10.244.3.0/24"),
            peer("10.0.0.2", "10.244.2.0/24"),
        ])
        .unwrap();
        let own = [net("10.244.1.0/24")];
        assert_eq!(
            fingerprint(&a, &own, &RouteMode::HostGw),
            fingerprint(&b, &own, &RouteMode::HostGw)
        );
        assert_ne!(
            fingerprint(&a, &own, &RouteMode::HostGw),
            fingerprint(&a, &[net("10.244.9.0/24")], &RouteMode::HostGw)
        );
        let c = ClusterView::new(vec![peer("10.0.0.2", "10.244.2.0/24")]).unwrap();
        assert_ne!(
            fingerprint(&a, &own, &RouteMode::HostGw),
            fingerprint(&c, &own, &RouteMode::HostGw)
        );
    }

    #[test]
    fn state_file_roundtrip_and_name_validation() {
        let dir = TempDir::new("state");
        let st = StateFile::new(&dir.0, "net1", 0xabc).unwrap();
        assert!(st.path().ends_with("net1.peers.0000000000000abc"));
        assert!(!st.matches(7));
        assert_eq!(st.read(), PeerState::default());
        std::fs::create_dir_all(&dir.0).unwrap();
        let s = PeerState {
            fingerprint: Some(7),
            managed: [net("10.244.2.0/24")].into(),
        };
        st.write(&s).unwrap();
        assert!(st.matches(7));
        assert!(!st.matches(8));
        assert_eq!(st.read(), s);
        st.write(&PeerState {
            fingerprint: None,
            managed: BTreeSet::new(),
        })
        .unwrap();
        assert!(!st.matches(7));
        st.remove().unwrap();
        st.remove().unwrap();
        for bad in ["", "..", "../x", "a/b", ".hidden", "a\0b"] {
            assert_eq!(
                StateFile::new(&dir.0, bad, 1).unwrap_err().code,
                7,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn reconcile_applies_then_skips_with_zero_calls() {
        let dir = TempDir::new("skip");
        let st = StateFile::new(&dir.0, "net1", 1).unwrap();
        let mut k = FakeKernel {
            addrs: vec![ip("10.0.0.1")],
            ..Default::default()
        };
        k.routes.push(kroute("10.9.0.0/16", "10.0.0.254", 4));
        let own = [net("10.244.1.0/24")];
        let v1 = ClusterView::new(vec![
            peer("10.0.0.1", "10.244.1.0/24"),
            peer("10.0.0.2", "10.244.2.0/24"),
            peer("10.0.0.3", "10.244.3.0/24"),
        ])
        .unwrap();
        let r = reconcile(&mut k, &st, &v1, &own, &RouteMode::HostGw).unwrap();
        let Reconciled::Applied(plan) = r else {
            panic!("expected apply")
        };
        assert_eq!(plan.replace.len(), 2);
        assert_eq!(
            k.routes
                .iter()
                .filter(|r| r.protocol == TWILL_PROTO)
                .count(),
            2
        );

        // Same view: zero kernel calls; even a route deleted by hand is not re-added.
        k.routes.retain(|r| r.dst != net("10.244.3.0/24"));
        let before = k.calls;
        assert_eq!(
            reconcile(&mut k, &st, &v1, &own, &RouteMode::HostGw).unwrap(),
            Reconciled::Unchanged
        );
        assert_eq!(k.calls, before);
        assert!(!k.routes.iter().any(|r| r.dst == net("10.244.3.0/24")));

        // verify() sees it.
        let p = verify(&mut k, &st, &v1, &own, &RouteMode::HostGw).unwrap();
        assert_eq!(p.replace, vec![want("10.244.3.0/24", "10.0.0.3")]);

        // View changes (peer 3 removed, peer 4 added): 2 deleted? no: 3 already gone by hand.
        let v2 = ClusterView::new(vec![
            peer("10.0.0.2", "10.244.2.0/24"),
            peer("10.0.0.4", "10.244.4.0/24"),
        ])
        .unwrap();
        let Reconciled::Applied(plan) =
            reconcile(&mut k, &st, &v2, &own, &RouteMode::HostGw).unwrap()
        else {
            panic!("expected apply")
        };
        assert_eq!(plan.replace, vec![want("10.244.4.0/24", "10.0.0.4")]);
        let mut ours: Vec<IpNetwork> = k
            .routes
            .iter()
            .filter(|r| r.protocol == TWILL_PROTO)
            .map(|r| r.dst)
            .collect();
        ours.sort();
        assert_eq!(ours, vec![net("10.244.2.0/24"), net("10.244.4.0/24")]);
        assert!(
            k.routes.iter().any(|r| r.dst == net("10.9.0.0/16")),
            "foreign route kept"
        );
        assert_eq!(st.read().managed, ours.into_iter().collect());

        // Another namespace (cookie) has its own state: no skip there.
        let other = StateFile::new(&dir.0, "net1", 2).unwrap();
        let mut k2 = FakeKernel::default();
        assert!(matches!(
            reconcile(&mut k2, &other, &v2, &own, &RouteMode::HostGw).unwrap(),
            Reconciled::Applied(_)
        ));
    }

    #[test]
    fn reconcile_with_conflict_does_not_stamp() {
        let dir = TempDir::new("conflict");
        let st = StateFile::new(&dir.0, "n", 1).unwrap();
        let mut k = FakeKernel::default();
        let foreign = kroute("10.244.2.0/24", "10.0.0.9", 4);
        k.routes.push(foreign.clone());
        let v = ClusterView::new(vec![peer("10.0.0.2", "10.244.2.0/24")]).unwrap();
        let r = reconcile(&mut k, &st, &v, &[], &RouteMode::HostGw).unwrap();
        assert_eq!(
            r,
            Reconciled::Applied(RoutePlan {
                conflicts: vec![foreign.clone()],
                ..Default::default()
            })
        );
        assert_eq!(k.routes, vec![foreign], "foreign route untouched");
        // Not stamped: the next call looks again, and installs once the foreign route is gone.
        k.routes.clear();
        let r = reconcile(&mut k, &st, &v, &[], &RouteMode::HostGw).unwrap();
        assert!(
            matches!(r, Reconciled::Applied(ref p) if p.replace.len() == 1),
            "{r:?}"
        );
        assert_eq!(
            reconcile(&mut k, &st, &v, &[], &RouteMode::HostGw).unwrap(),
            Reconciled::Unchanged
        );
    }

    #[test]
    fn reconcile_failure_attempts_all_and_stays_pending() {
        let dir = TempDir::new("fail");
        let st = StateFile::new(&dir.0, "n", 1).unwrap();
        let mut k = FakeKernel {
            fail_replace: Some(net("10.244.2.0/24")),
            ..Default::default()
        };
        let v = ClusterView::new(vec![
            peer("10.0.0.2", "10.244.2.0/24"),
            peer("10.0.0.3", "10.244.3.0/24"),
        ])
        .unwrap();
        let e = reconcile(&mut k, &st, &v, &[], &RouteMode::HostGw).unwrap_err();
        assert_eq!(e.code, crate::code::NETLINK);
        assert!(e.details.contains("10.244.2.0/24"), "{e}");
        assert!(
            k.routes.iter().any(|r| r.dst == net("10.244.3.0/24")),
            "others still applied"
        );
        let s = st.read();
        assert_eq!(s.fingerprint, None);
        assert!(
            s.managed.contains(&net("10.244.2.0/24")) && s.managed.contains(&net("10.244.3.0/24"))
        );
        k.fail_replace = None;
        assert!(matches!(
            reconcile(&mut k, &st, &v, &[], &RouteMode::HostGw).unwrap(),
            Reconciled::Applied(_)
        ));
        assert_eq!(k.routes.len(), 2);
    }
}
