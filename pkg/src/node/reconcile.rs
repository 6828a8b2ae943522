//! One reconcile for every data plane: a plane ([`DataPlane`]) turns the cluster view into the
//! node objects it owns (routes now; neighbours, FDB entries and devices for vxlan/ipip), and
//! [`reconcile`] makes the node's kernel hold exactly those, through [`NodeKernel`].
//!
//! Ownership: routes carry the protocol [`TWILL_PROTO`]; a route of another owner on the same
//! kernel key (destination, metric) is left alone and reported as a conflict. Each network's
//! state file records what it installed ([`crate::node::state`]): a network only deletes its
//! own objects, and never one another network in the same namespace still claims.
//!
//! Fast path: when the fingerprint of the inputs (view bytes, own ranges, plane) matches the
//! state file *and* the kernel still holds every object the state says was installed (one
//! kernel-filtered dump of twill's routes), nothing else is asked. A view file whose stamp
//! (device, inode, size, ctime, mtime) and other inputs match what the state recorded with
//! the fingerprint is not even read, and of the state only the header is: it carries a count
//! and an order-independent hash of the installed routes ([`Digest`]), compared with the
//! same of the dump as it is read, so nothing on that path grows with the view but the
//! kernel's own answer. When the kernel holds more of twill's routes than that (another
//! network's, a routed pod's), or objects other than routes are installed, every installed
//! object is looked up as before. The fast path writes nothing. A route the kernel lost
//! (uplink bounce, address flush, `ip route flush`) sends the next call down the slow path,
//! which repairs it. The slow path runs under the namespace's lock and reads the view again
//! there, so the view applied last is never older than one applied before it.

use crate::error::{Error, Result, code};
use crate::hash::Fnv1a64;
use crate::kernel::netlink::{
    FdbEntry, MacAddr, NeighbourSpec, Netlink, RouteFilter, RouteSpec, VxlanSpec, nud, rt_table,
};
use crate::node::ipip::{self, IpipDevice};
use crate::node::peers::{ClusterView, Peer, Skipped, ViewSource};
use crate::node::state::{NodeState, StateFile, StateHead};
use ipnetwork::IpNetwork;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

pub use crate::kernel::netlink::TWILL_PROTO;

/// The metric the kernel gives an IPv6 route added with metric 0 (IP6_RT_PRIO_USER).
const IPV6_DEFAULT_METRIC: u32 = 1024;
/// `rtm_type` of a plain unicast route.
const RTN_UNICAST: u8 = 1;
/// `rtm_type` of a blackhole route.
const RTN_BLACKHOLE: u8 = 6;

/// The kinds of node state a data plane can own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Routes in the main table (host-gw, and the pod-subnet routes of tunnel planes).
    Route,
    /// Permanent neighbour entries (vxlan: a peer's gateway address to its VTEP MAC).
    Neighbour,
    /// Bridge forwarding entries of a tunnel device (vxlan: VTEP MAC to node IP).
    Fdb,
    /// Devices (vxlan, later ipip tunnels).
    Device,
    /// Blackhole routes in the main table (routed planes: the node's own pod block).
    Blackhole,
}

/// A route twill wants (or found) in the main table.
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
    /// The metric the kernel files it under (IPv6 metric 0 is 1024).
    pub metric: u32,
}

impl PeerRoute {
    /// `dst via gateway` at the kernel's default metric.
    pub fn via(dst: IpNetwork, gateway: IpAddr) -> PeerRoute {
        PeerRoute {
            dst,
            gateway: Some(gateway),
            oif: None,
            onlink: false,
            metric: effective_metric(&dst, 0),
        }
    }
}

/// A vxlan device a plane wants.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VxlanDevice {
    /// Device name.
    pub name: String,
    /// VXLAN network identifier.
    pub vni: u32,
    /// UDP destination port.
    pub port: u16,
    /// Local (source) address on the underlay.
    pub local: Option<IpAddr>,
    /// MAC of the device (the node's VTEP MAC in the view).
    pub mac: Option<MacAddr>,
    /// MTU.
    pub mtu: Option<u32>,
}

/// One object of node state, as a plane wants it or as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Object {
    /// A main-table route with protocol [`TWILL_PROTO`].
    Route(PeerRoute),
    /// A permanent neighbour entry on device `dev`.
    Neighbour {
        /// Device name.
        dev: String,
        /// The neighbour's address.
        ip: IpAddr,
        /// Its link-layer address.
        mac: MacAddr,
    },
    /// A forwarding entry on device `dev`: frames for `mac` go to `dst` over the underlay.
    Fdb {
        /// Device name.
        dev: String,
        /// Destination MAC.
        mac: MacAddr,
        /// Remote underlay address.
        dst: IpAddr,
    },
    /// A vxlan device.
    Vxlan(VxlanDevice),
    /// An ipip tunnel device with its /32 address.
    Ipip(IpipDevice),
    /// A main-table blackhole route with protocol [`TWILL_PROTO`]: what reaches `dst` and
    /// no longer route is dropped. It shares the kernel key of a route to `dst`.
    Blackhole {
        /// Destination (the node's own pod block).
        dst: IpNetwork,
        /// The metric the kernel files it under (IPv6 metric 0 is 1024).
        metric: u32,
    },
}

impl Object {
    /// A blackhole route to `dst` at the kernel's default metric.
    pub fn blackhole(dst: IpNetwork) -> Object {
        Object::Blackhole {
            dst,
            metric: effective_metric(&dst, 0),
        }
    }
}

impl Object {
    /// The kind of object.
    pub fn kind(&self) -> Kind {
        match self {
            Object::Route(_) => Kind::Route,
            Object::Neighbour { .. } => Kind::Neighbour,
            Object::Fdb { .. } => Kind::Fdb,
            Object::Vxlan(_) | Object::Ipip(_) => Kind::Device,
            Object::Blackhole { .. } => Kind::Blackhole,
        }
    }

    /// The kernel's key: two objects with one key cannot both exist (a write replaces).
    pub fn key(&self) -> Key {
        match self {
            Object::Route(r) => Key::Route(r.dst, r.metric),
            Object::Neighbour { dev, ip, .. } => Key::Neighbour(dev.clone(), *ip),
            Object::Fdb { dev, mac, dst } => Key::Fdb(dev.clone(), *mac, *dst),
            Object::Vxlan(d) => Key::Device(d.name.clone()),
            Object::Ipip(d) => Key::Device(d.name.clone()),
            Object::Blackhole { dst, metric } => Key::Route(*dst, *metric),
        }
    }

    /// What a network claims by installing this object (routes: the destination, at any
    /// metric); another network never deletes an object whose claim it holds.
    pub fn claim(&self) -> Key {
        match self {
            Object::Route(r) => Key::Route(r.dst, 0),
            Object::Blackhole { dst, .. } => Key::Route(*dst, 0),
            _ => self.key(),
        }
    }

    /// True when `found` (from the kernel) is what `self` (wanted) asks for.
    pub fn satisfied_by(&self, found: &Object) -> bool {
        match (self, found) {
            (Object::Route(w), Object::Route(f)) => {
                w.dst == f.dst
                    && w.gateway == f.gateway
                    && w.oif.is_none_or(|o| f.oif == Some(o))
                    && w.onlink == f.onlink
                    && w.metric == f.metric
            }
            (Object::Vxlan(w), Object::Vxlan(f)) => {
                w.name == f.name
                    && w.vni == f.vni
                    && w.port == f.port
                    && w.local == f.local
                    && w.mac.is_none_or(|m| f.mac == Some(m))
            }
            (Object::Ipip(w), Object::Ipip(f)) => w.satisfied_by(f),
            (w, f) => w == f,
        }
    }

    /// One line of a state file (no spaces inside fields, `-` for none).
    pub fn to_line(&self) -> String {
        fn opt<T: fmt::Display>(v: &Option<T>) -> String {
            v.as_ref().map_or("-".into(), |x| x.to_string())
        }
        match self {
            Object::Route(r) => format!(
                "route {} {} {} {} {}",
                r.dst,
                opt(&r.gateway),
                opt(&r.oif),
                u8::from(r.onlink),
                r.metric
            ),
            Object::Neighbour { dev, ip, mac } => format!("neigh {dev} {ip} {mac}"),
            Object::Fdb { dev, mac, dst } => format!("fdb {dev} {mac} {dst}"),
            Object::Vxlan(d) => format!(
                "vxlan {} {} {} {} {} {}",
                d.name,
                d.vni,
                d.port,
                opt(&d.local),
                opt(&d.mac),
                opt(&d.mtu)
            ),
            Object::Ipip(d) => format!("ipip {}", d.to_fields()),
            Object::Blackhole { dst, metric } => format!("blackhole {dst} {metric}"),
        }
    }

    /// Parses [`Object::to_line`]'s output; `None` for anything else.
    pub fn from_line(line: &str) -> Option<Object> {
        fn opt<T: std::str::FromStr>(s: &str) -> Option<Option<T>> {
            if s == "-" {
                Some(None)
            } else {
                s.parse().ok().map(Some)
            }
        }
        // Fields on the stack: a state file of thousands of lines parses without an
        // allocation per line (musl's allocator maps and unmaps pages on such churn).
        let mut buf = [""; 8];
        let mut n = 0;
        for part in line.split(' ') {
            *buf.get_mut(n)? = part;
            n += 1;
        }
        match &buf[..n] {
            ["route", dst, gw, oif, onlink, metric] => Some(Object::Route(PeerRoute {
                dst: dst.parse().ok()?,
                gateway: opt(gw)?,
                oif: opt(oif)?,
                onlink: *onlink == "1",
                metric: metric.parse().ok()?,
            })),
            ["neigh", dev, ip, mac] => Some(Object::Neighbour {
                dev: dev.to_string(),
                ip: ip.parse().ok()?,
                mac: mac.parse().ok()?,
            }),
            ["fdb", dev, mac, dst] => Some(Object::Fdb {
                dev: dev.to_string(),
                mac: mac.parse().ok()?,
                dst: dst.parse().ok()?,
            }),
            ["blackhole", dst, metric] => Some(Object::Blackhole {
                dst: dst.parse().ok()?,
                metric: metric.parse().ok()?,
            }),
            ["vxlan", name, vni, port, local, mac, mtu] => Some(Object::Vxlan(VxlanDevice {
                name: name.to_string(),
                vni: vni.parse().ok()?,
                port: port.parse().ok()?,
                local: opt(local)?,
                mac: opt(mac)?,
                mtu: opt(mtu)?,
            })),
            ["ipip", rest @ ..] => IpipDevice::from_fields(rest).map(Object::Ipip),
            _ => None,
        }
    }
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Object::Route(r) => {
                write!(f, "route {}", r.dst)?;
                if let Some(g) = r.gateway {
                    write!(f, " via {g}")?;
                }
                Ok(())
            }
            Object::Neighbour { dev, ip, mac } => {
                write!(f, "neighbour {ip} lladdr {mac} dev {dev}")
            }
            Object::Fdb { dev, mac, dst } => write!(f, "fdb {mac} dst {dst} dev {dev}"),
            Object::Vxlan(d) => write!(f, "vxlan device {} (vni {})", d.name, d.vni),
            Object::Ipip(d) => write!(f, "ipip device {}", d.name),
            Object::Blackhole { dst, .. } => write!(f, "blackhole route {dst}"),
        }
    }
}

/// Identifies objects for comparison: [`Object::key`] (the kernel's key) and
/// [`Object::claim`] (what a network claims: for routes the destination at any metric, 0).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// Destination and metric.
    Route(IpNetwork, u32),
    /// Device and address.
    Neighbour(String, IpAddr),
    /// Device, MAC and remote.
    Fdb(String, MacAddr, IpAddr),
    /// Device name.
    Device(String),
}

/// An object found in the kernel, and whether twill may own it (routes: protocol 116).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The object.
    pub object: Object,
    /// Marked as twill's (another owner's object on a wanted key is a conflict, left alone).
    pub ours: bool,
}

/// What [`reconcile`] needs from the node's kernel. [`Netlink`] implements it; tests fake it.
pub trait NodeKernel {
    /// Every address on the node, with its prefix (self-detection, on-link checks).
    fn local_addrs(&mut self) -> Result<Vec<IpNetwork>>;
    /// Every object of `kind` that could sit on a key twill wants (routes: the main table's
    /// unicast routes of any protocol).
    fn list(&mut self, kind: Kind) -> Result<Vec<Found>>;
    /// Only the objects of `kind` marked as twill's, as cheaply as the kernel allows (routes:
    /// one dump the kernel filters by table and protocol when it can).
    fn list_owned(&mut self, kind: Kind) -> Result<Vec<Object>> {
        Ok(self
            .list(kind)?
            .into_iter()
            .filter(|f| f.ours)
            .map(|f| f.object)
            .collect())
    }
    /// Only twill's objects of the kinds in `wanted` (the fast path's question: are these
    /// still there?), as cheaply as the kernel allows; by default [`NodeKernel::list_owned`]
    /// per kind.
    fn list_owned_like(&mut self, wanted: &[Object]) -> Result<Vec<Object>> {
        let kinds: BTreeSet<Kind> = wanted.iter().map(Object::kind).collect();
        let mut out = Vec::new();
        for kind in kinds {
            out.extend(self.list_owned(kind)?);
        }
        Ok(out)
    }
    /// The nsfs (st_dev, st_ino) of the node namespace, recorded in a written state so that
    /// another namespace's reconcile can tell when this one is gone; by default None (not
    /// recorded: such a state is never pruned).
    fn netns_inode(&mut self) -> Result<Option<(u64, u64)>> {
        Ok(None)
    }
    /// The [`Digest`] of twill's objects in `scope` as the kernel holds them now; by default
    /// from [`NodeKernel::list_owned`] of routes and blackholes.
    fn owned_digest(&mut self, scope: DigestScope) -> Result<Digest> {
        let mut d = Digest::new(scope);
        for (on, kind) in [
            (scope.routes, Kind::Route),
            (scope.blackholes, Kind::Blackhole),
        ] {
            if on {
                for o in self.list_owned(kind)? {
                    d.add(&o);
                }
            }
        }
        Ok(d)
    }
    /// Creates or replaces `o` (never fails because it exists).
    fn apply(&mut self, o: &Object) -> Result<()>;
    /// Removes `o`, only if it is twill's; already gone is `Ok`.
    fn remove(&mut self, o: &Object) -> Result<()>;
    /// Writes every object of `apply`, then removes every object of `remove` (as
    /// [`NodeKernel::apply`] and [`NodeKernel::remove`] do), one result per object in order: a
    /// refused object fails only itself. By default one at a time; [`Netlink`] sends them as
    /// one batch.
    fn apply_all(&mut self, apply: &[Object], remove: &[Object]) -> Applied {
        Applied {
            applied: apply.iter().map(|o| self.apply(o)).collect(),
            removed: remove.iter().map(|o| self.remove(o)).collect(),
        }
    }
}

/// The answers to [`NodeKernel::apply_all`]: one per object, in the order given.
#[derive(Debug)]
pub struct Applied {
    /// For each object to write.
    pub applied: Vec<Result<()>>,
    /// For each object to remove.
    pub removed: Vec<Result<()>>,
}

/// A data plane: what it makes of the cluster view on this node.
pub trait DataPlane {
    /// A stable text naming the plane and its parameters (hashed into the fingerprint).
    fn key(&self) -> String;
    /// The kinds of object it owns (listed and compared by [`reconcile`]).
    fn owns(&self) -> &'static [Kind];
    /// Why this plane cannot serve `peer` from a node with addresses `local`; `None` if it can.
    fn reject(&self, peer: &Peer, local: &[IpNetwork]) -> Option<Reject>;
    /// The objects wanted for the accepted remote peers.
    fn desired(&self, peers: &[&Peer]) -> Vec<Object>;
    /// Makes what the plane's objects hang on exist before a reconcile on node `nl` of a
    /// network owning `own_ranges` (a tunnel plane's devices, whose ifindexes its routes and
    /// key then carry); nothing by default.
    fn prepare(&mut self, nl: &mut Netlink, own_ranges: &[IpNetwork]) -> Result<()> {
        let _ = (nl, own_ranges);
        Ok(())
    }
}

/// Why a plane cannot serve a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// For a person: what is wrong and what to do.
    pub reason: String,
    /// The verdict depends on the node's current state (its addresses), not only on the
    /// entry: while such a rejection stands, every reconcile looks again (no fast path).
    pub depends_on_node: bool,
}

/// The inputs of a reconcile of one network.
pub struct Inputs<'a> {
    /// Where the view comes from.
    pub source: &'a ViewSource,
    /// The network's own pod ranges (configured ranges and the current pod's subnets).
    pub own_ranges: &'a [IpNetwork],
    /// The data plane.
    pub plane: &'a dyn DataPlane,
}

/// The difference between wanted and kernel state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Missing or different: to be written (create or replace).
    pub apply: Vec<Object>,
    /// twill's objects of this network that are no longer wanted.
    pub remove: Vec<Object>,
    /// Other owners' objects on a wanted key (left alone).
    pub conflicts: Vec<Object>,
}

impl Plan {
    /// True when the kernel already matches (nothing to write, no conflict).
    pub fn is_empty(&self) -> bool {
        self.apply.is_empty() && self.remove.is_empty() && self.conflicts.is_empty()
    }
}

/// What a reconcile did and what it could not do; nothing here fails a pod's ADD.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The changes attempted and the conflicts left alone.
    pub plan: Plan,
    /// View entries not used, with reasons.
    pub skipped: Vec<Skipped>,
    /// Changes the kernel refused (retried by the next reconcile).
    pub failures: Vec<String>,
    /// Why the view could not be read, when it could not (the last applied state was kept).
    pub unreadable: Option<String>,
}

impl Report {
    /// One line per thing a person should know (for stderr); empty when all went well.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(u) = &self.unreadable {
            out.push(format!("{u}; keeping the node state last applied"));
        }
        out.extend(
            self.skipped
                .iter()
                .map(|s| format!("skipped view entry {s}")),
        );
        out.extend(
            self.plan
                .conflicts
                .iter()
                .map(|c| format!("left alone: another owner's {c} sits where twill wants one")),
        );
        out.extend(self.failures.iter().cloned());
        out
    }
}

/// What [`reconcile`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconciled {
    /// Fingerprint unchanged and every installed object still in the kernel: nothing done.
    Unchanged,
    /// The kernel was compared and the difference applied (see the report).
    Applied(Report),
}

/// The fingerprint of a reconcile's inputs: the view's bytes, the own ranges, the plane.
pub fn fingerprint(view_bytes: &[u8], own_ranges: &[IpNetwork], plane: &dyn DataPlane) -> u64 {
    let mut own: Vec<IpNetwork> = own_ranges
        .iter()
        .map(|s| crate::flannel::subnet_file::network_of(*s))
        .collect();
    own.sort();
    own.dedup();
    let mut h = Fnv1a64::default();
    h.write(b"twill-node 2\0");
    h.write(&[TWILL_PROTO]);
    h.write(plane.key().as_bytes());
    h.write(&[0]);
    h.write(&(own.len() as u64).to_le_bytes());
    for s in &own {
        h.write_net(s);
    }
    h.write(view_bytes);
    h.finish()
}

/// Makes the node hold exactly what `inputs.plane` wants for the view, for one network.
///
/// Fast path, no lock, no write: the view's stamp and the other inputs are those recorded
/// with the fingerprint (else its bytes hash to it) and the kernel holds every installed
/// object → [`Reconciled::Unchanged`]. Changes are sent as one batch
/// ([`NodeKernel::apply_all`]). Slow path, under the namespace lock:
/// read the view again, select the remote peers (this node's entries and unusable ones
/// skipped), diff with the kernel, record the union of old and new objects as pending, apply,
/// remove (never what another network claims), record the result, prune the state of dead
/// namespaces. An unreadable view keeps (and repairs) what was installed last. Only state-file
/// and kernel-listing failures are errors; refused changes are in the report and retried.
pub fn reconcile(
    k: &mut dyn NodeKernel,
    state: &StateFile,
    inputs: &Inputs<'_>,
) -> Result<Reconciled> {
    let ctx = context(inputs.own_ranges, inputs.plane);
    // Only the state's header: its size does not grow with the view.
    let head = state.read_head();
    let stamp = inputs.source.stamp();
    let same_inputs =
        if head.fingerprint.is_some() && stamp.is_some() && head.view == stamp.map(|s| (s, ctx)) {
            // The view file is the one fingerprinted last (same stamp, settled then): not read.
            true
        } else if let Ok(bytes) = inputs.source.bytes() {
            head.fingerprint == Some(fingerprint(&bytes, inputs.own_ranges, inputs.plane))
        } else {
            false
        };
    if same_inputs && kernel_agrees(k, state, &head)? {
        return Ok(Reconciled::Unchanged);
    }
    let _lock = state.lock()?;
    state.resolve_inode(|| k.netns_inode())?;
    state.remove_stale_temps();
    let mut prev = state.read();
    // Upgrade from the previous state format: its destinations are this network's claims.
    let legacy = if prev == NodeState::default() {
        state.legacy_destinations()
    } else {
        None
    };
    if let Some(dsts) = &legacy {
        prev.installed = k
            .list_owned(Kind::Route)?
            .into_iter()
            .filter(|o| matches!(o, Object::Route(r) if dsts.contains(&r.dst)))
            .collect();
    }
    let mut report = Report::default();
    // Some plane rejections depend on the node (its addresses), not only on the inputs: while
    // there are any, the fingerprint is not recorded, so every call looks again.
    let mut node_dependent = false;
    // Stamped, and the time taken, before the read: a change after it makes the next stamp
    // differ, and the stamp is kept only when the file had settled before the read.
    let read_at = now_ns();
    let stamp = inputs.source.stamp();
    let (desired, fp) = match inputs.source.bytes().and_then(|b| {
        let view = ClusterView::parse(&b, inputs.source)?;
        Ok((view, fingerprint(&b, inputs.own_ranges, inputs.plane)))
    }) {
        Ok((view, fp)) => {
            if prev.fingerprint == Some(fp) && kernel_holds(k, &prev.installed)? {
                return Ok(Reconciled::Unchanged); // applied by another call meanwhile
            }
            let local = k.local_addrs()?;
            let (desired, skipped, rejected) = wanted(&view, inputs, &local);
            report.skipped = skipped;
            node_dependent = rejected;
            (desired, Some(fp))
        }
        Err(e) => {
            report.unreadable = Some(e.msg);
            (prev.installed.clone(), None)
        }
    };
    let mut kinds: BTreeSet<Kind> = inputs.plane.owns().iter().copied().collect();
    kinds.extend(prev.installed.iter().map(Object::kind));
    let mut found = Vec::new();
    for kind in kinds {
        found.extend(k.list(kind)?);
    }
    let mine: BTreeSet<Key> = prev.installed.iter().map(Object::claim).collect();
    let plan = plan(&desired, &found, &mine, &state.other_claims());
    if !plan.apply.is_empty() || !plan.remove.is_empty() {
        let mut pending: Vec<Object> = prev.installed.clone();
        pending.extend(desired.iter().cloned());
        pending.sort();
        pending.dedup();
        state.write(&NodeState {
            fingerprint: None,
            installed: pending,
            view: None,
        })?;
    }
    let done = k.apply_all(&plan.apply, &plan.remove);
    for (o, r) in plan.apply.iter().zip(&done.applied) {
        if let Err(e) = r {
            report.failures.push(format!("could not install {o}: {e}"));
        }
    }
    let mut installed = desired;
    for (o, r) in plan.remove.iter().zip(&done.removed) {
        if let Err(e) = r {
            report.failures.push(format!("could not remove {o}: {e}"));
            installed.push(o.clone()); // still claimed, so the next call removes it
        }
    }
    let complete = plan.conflicts.is_empty() && report.failures.is_empty() && !node_dependent;
    let fp = fp.filter(|_| complete);
    state.write(&NodeState {
        fingerprint: fp,
        installed,
        view: stamp
            .filter(|s| read_at.is_some_and(|t| s.settled(t)))
            .filter(|_| fp.is_some())
            .map(|s| (s, ctx)),
    })?;
    if legacy.is_some() {
        state.remove_legacy();
    }
    state.prune_dead();
    report.plan = plan;
    Ok(Reconciled::Applied(report))
}

/// The inputs of a reconcile besides the view: the own ranges and the plane (the fingerprint
/// of an empty view), recorded next to a view's stamp.
pub fn context(own_ranges: &[IpNetwork], plane: &dyn DataPlane) -> u64 {
    fingerprint(b"", own_ranges, plane)
}

/// Now, in ns since the epoch (the clock file timestamps use).
pub(crate) fn now_ns() -> Option<i128> {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_nanos() as i128)
}

/// Removes a network's node objects, for a network that is gone: under the namespace lock,
/// every object its state file records as installed is removed (only twill's, see
/// [`NodeKernel::remove`]), except where another network of the namespace claims the same
/// object; then the state file goes. Objects the kernel refused to remove stay recorded (the
/// next call retries them) and are in the report's failures; the report's `plan.remove` lists
/// what was asked to go.
pub fn forget(k: &mut dyn NodeKernel, state: &StateFile) -> Result<Report> {
    let _lock = state.lock()?;
    state.resolve_inode(|| k.netns_inode())?;
    let prev = state.read();
    let others = state.other_claims();
    let mut report = Report::default();
    let mut kept = Vec::new();
    for o in &prev.installed {
        if others.contains(&o.claim()) {
            continue;
        }
        match k.remove(o) {
            Ok(()) => report.plan.remove.push(o.clone()),
            Err(e) => {
                report.failures.push(format!("could not remove {o}: {e}"));
                kept.push(o.clone());
            }
        }
    }
    if kept.is_empty() {
        state.remove()?;
    } else {
        state.write(&NodeState {
            fingerprint: None,
            installed: kept,
            view: None,
        })?;
    }
    Ok(report)
}

/// CHECK and STATUS: the difference between the kernel and the view, changing nothing. The
/// report's plan is empty when the node is as [`reconcile`] would leave it.
pub fn verify(k: &mut dyn NodeKernel, state: &StateFile, inputs: &Inputs<'_>) -> Result<Report> {
    let prev = state.read();
    let mut report = Report::default();
    let desired = match inputs.source.read() {
        Ok(view) => {
            let local = k.local_addrs()?;
            let (desired, skipped, _) = wanted(&view, inputs, &local);
            report.skipped = skipped;
            desired
        }
        Err(e) => {
            report.unreadable = Some(e.msg);
            prev.installed.clone()
        }
    };
    let mut found = Vec::new();
    for kind in inputs.plane.owns() {
        found.extend(k.list(*kind)?);
    }
    let mine: BTreeSet<Key> = prev.installed.iter().map(Object::claim).collect();
    report.plan = plan(&desired, &found, &mine, &state.other_claims());
    Ok(report)
}

/// The objects the plane wants for `view` on a node with addresses `local`, every entry
/// skipped on the way (by the view, by the selection, by the plane), and whether a plane
/// rejection depends on the node (a verdict that may change with its addresses).
fn wanted(
    view: &ClusterView,
    inputs: &Inputs<'_>,
    local: &[IpNetwork],
) -> (Vec<Object>, Vec<Skipped>, bool) {
    let sel = view.select(inputs.own_ranges, local);
    let mut skipped = sel.skipped;
    let mut node_dependent = false;
    let mut remote = Vec::with_capacity(sel.remote.len());
    for p in sel.remote {
        match inputs.plane.reject(p, local) {
            None => remote.push(p),
            Some(r) => {
                node_dependent |= r.depends_on_node;
                skipped.push(Skipped {
                    entry: p.to_json().to_string(),
                    reason: r.reason,
                });
            }
        }
    }
    skipped.sort();
    (inputs.plane.desired(&remote), skipped, node_dependent)
}

/// The fast path's kernel check: true when the kernel holds every object the state with
/// header `head` records as installed. When the header carries a [`Digest`], the kernel's
/// objects in its scope are counted and hashed (one filtered dump, nothing kept per object)
/// and compared with it; equal, the kernel holds exactly the installed objects. Otherwise
/// (no digest, or the kernel holds more in that scope: another network's routes, say) the
/// whole state is read and every object looked up ([`kernel_holds`]), provided the state
/// is still the one `head` was read from.
fn kernel_agrees(k: &mut dyn NodeKernel, state: &StateFile, head: &StateHead) -> Result<bool> {
    if let Some(d) = &head.digest {
        if d.count == 0 {
            return Ok(true);
        }
        if k.owned_digest(d.scope)? == *d {
            return Ok(true);
        }
    }
    let prev = state.read();
    if prev.fingerprint != head.fingerprint || prev.view != head.view {
        return Ok(false);
    }
    kernel_holds(k, &prev.installed)
}

/// What a [`Digest`] covers: which of twill's main-table objects, and which of their fields
/// (exactly those [`Object::satisfied_by`] compares for the installed objects).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DigestScope {
    /// Unicast routes are counted.
    pub routes: bool,
    /// Blackhole routes are counted.
    pub blackholes: bool,
    /// Only unicast routes with a gateway are counted (a routed pod's host route has none).
    pub gateway_only: bool,
    /// A route's output interface is hashed (every installed route names one).
    pub oif: bool,
}

/// A count and an order-independent hash of objects in a [`DigestScope`]: the installed
/// objects' digest equal to the kernel's ([`NodeKernel::owned_digest`]) means the kernel
/// holds exactly those objects in that scope (up to a 64-bit hash collision).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    /// What is counted.
    pub scope: DigestScope,
    /// How many objects.
    pub count: u64,
    /// The wrapping sum of the objects' mixed hashes.
    pub sum: u64,
}

impl Digest {
    /// An empty digest of `scope`.
    pub fn new(scope: DigestScope) -> Digest {
        Digest {
            scope,
            count: 0,
            sum: 0,
        }
    }

    /// The digest of `installed`, in the narrowest scope that holds it all; None when it
    /// holds objects other than routes and blackholes, or routes both with and without an
    /// output interface (the slow check then decides).
    pub fn of_installed(installed: &[Object]) -> Option<Digest> {
        let mut scope = DigestScope {
            gateway_only: true,
            ..DigestScope::default()
        };
        let (mut with_oif, mut without_oif) = (false, false);
        for o in installed {
            match o {
                Object::Route(r) => {
                    scope.routes = true;
                    scope.gateway_only &= r.gateway.is_some();
                    with_oif |= r.oif.is_some();
                    without_oif |= r.oif.is_none();
                }
                Object::Blackhole { .. } => scope.blackholes = true,
                _ => return None,
            }
        }
        if with_oif && without_oif {
            return None;
        }
        scope.oif = with_oif;
        let mut d = Digest::new(scope);
        for o in installed {
            d.add(o);
        }
        Some(d)
    }

    /// Counts `o` when it is in scope.
    pub fn add(&mut self, o: &Object) {
        let mut h = Fnv1a64::default();
        match o {
            Object::Route(r) => {
                if !self.scope.routes || (self.scope.gateway_only && r.gateway.is_none()) {
                    return;
                }
                h.write(b"route");
                h.write_net(&r.dst);
                match &r.gateway {
                    Some(g) => h.write_ip(g),
                    None => h.write(&[0]),
                }
                h.write(&[u8::from(r.onlink)]);
                h.write(&r.metric.to_le_bytes());
                if self.scope.oif {
                    h.write(&r.oif.map_or(u64::MAX, u64::from).to_le_bytes());
                }
            }
            Object::Blackhole { dst, metric } => {
                if !self.scope.blackholes {
                    return;
                }
                h.write(b"blackhole");
                h.write_net(dst);
                h.write(&metric.to_le_bytes());
            }
            _ => return,
        }
        self.count += 1;
        self.sum = self.sum.wrapping_add(h.finish_mixed());
    }

    /// The digest as text (`<scope letters or -> <count> <sum hex>`), for run-state files.
    pub fn to_fields(&self) -> String {
        let s = self.scope;
        let mut letters = String::new();
        for (on, c) in [
            (s.routes, 'r'),
            (s.blackholes, 'b'),
            (s.gateway_only, 'g'),
            (s.oif, 'o'),
        ] {
            if on {
                letters.push(c);
            }
        }
        if letters.is_empty() {
            letters.push('-');
        }
        format!("{letters} {} {:016x}", self.count, self.sum)
    }

    /// Parses [`Digest::to_fields`]'s output.
    pub fn from_fields(f: &[&str]) -> Option<Digest> {
        let [letters, count, sum] = f else {
            return None;
        };
        if letters.is_empty() || !letters.chars().all(|c| "rbgo-".contains(c)) {
            return None;
        }
        Some(Digest {
            scope: DigestScope {
                routes: letters.contains('r'),
                blackholes: letters.contains('b'),
                gateway_only: letters.contains('g'),
                oif: letters.contains('o'),
            },
            count: count.parse().ok()?,
            sum: u64::from_str_radix(sum, 16).ok()?,
        })
    }
}

/// True when the kernel holds every object of `installed` (one owned-listing per kind).
fn kernel_holds(k: &mut dyn NodeKernel, installed: &[Object]) -> Result<bool> {
    if installed.is_empty() {
        return Ok(true);
    }
    // Sorted by key and searched, rather than a map of lists: no allocation per object.
    let mut owned: Vec<(Key, Object)> = k
        .list_owned_like(installed)?
        .into_iter()
        .map(|o| (o.key(), o))
        .collect();
    owned.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(installed.iter().all(|w| {
        let key = w.key();
        let from = owned.partition_point(|(k, _)| *k < key);
        owned[from..]
            .iter()
            .take_while(|(k, _)| *k == key)
            .any(|(_, f)| f.kind() == w.kind() && w.satisfied_by(f))
    }))
}

/// Pure diff. `mine` are the claims this network installed before; `others` the claims of
/// other networks in the namespace. A twill object not wanted is removed only when it is mine
/// and not claimed by another network; one on a wanted claim but another key (a route at a
/// stray metric) is removed unless another network claims it.
pub fn plan(
    desired: &[Object],
    found: &[Found],
    mine: &BTreeSet<Key>,
    others: &BTreeSet<Key>,
) -> Plan {
    let mut by_key: BTreeMap<Key, Vec<&Found>> = BTreeMap::new();
    for f in found {
        by_key.entry(f.object.key()).or_default().push(f);
    }
    let wanted_keys: BTreeSet<Key> = desired.iter().map(Object::key).collect();
    let wanted_claims: BTreeSet<Key> = desired.iter().map(Object::claim).collect();
    let mut plan = Plan::default();
    for want in desired {
        let here = by_key
            .get(&want.key())
            .map(Vec::as_slice)
            .unwrap_or_default();
        if here.iter().any(|f| f.ours && want.satisfied_by(&f.object)) {
            continue;
        }
        // Routes and devices of other owners are theirs; neighbour and FDB entries live on
        // twill's own devices, where a learned entry is overwritten by the permanent one.
        let foreign: Vec<&&Found> = here
            .iter()
            .filter(|f| {
                !f.ours && matches!(want.kind(), Kind::Route | Kind::Device | Kind::Blackhole)
            })
            .collect();
        if foreign.is_empty() {
            plan.apply.push(want.clone());
        } else {
            plan.conflicts
                .extend(foreign.into_iter().map(|f| f.object.clone()));
        }
    }
    for f in found.iter().filter(|f| f.ours) {
        let key = f.object.key();
        let claim = f.object.claim();
        let remove = if wanted_keys.contains(&key) {
            false
        } else if wanted_claims.contains(&claim) {
            !others.contains(&claim)
        } else {
            mine.contains(&claim) && !others.contains(&claim)
        };
        if remove {
            plan.remove.push(f.object.clone());
        }
    }
    plan
}

fn effective_metric(dst: &IpNetwork, priority: u32) -> u32 {
    if dst.is_ipv6() && priority == 0 {
        IPV6_DEFAULT_METRIC
    } else {
        priority
    }
}

/// The node's kernel over twill's rtnetlink client (the socket's namespace).
impl NodeKernel for Netlink {
    fn netns_inode(&mut self) -> Result<Option<(u64, u64)>> {
        Ok(Some(Netlink::netns_inode(self)?))
    }

    fn local_addrs(&mut self) -> Result<Vec<IpNetwork>> {
        Ok(self
            .addresses(None, None)?
            .into_iter()
            .filter_map(|a| IpNetwork::new(a.addr, a.prefix_len).ok())
            .collect())
    }

    fn list(&mut self, kind: Kind) -> Result<Vec<Found>> {
        match kind {
            Kind::Route => {
                let filter = RouteFilter {
                    table: Some(rt_table::MAIN),
                    ..RouteFilter::default()
                };
                Ok(self
                    .routes(&filter)?
                    .into_iter()
                    .filter(|r| r.kind == RTN_UNICAST)
                    .map(|r| Found {
                        ours: r.protocol == TWILL_PROTO,
                        object: Object::Route(PeerRoute {
                            metric: effective_metric(&r.dst, r.metric.unwrap_or(0)),
                            dst: r.dst,
                            gateway: r.gateway,
                            oif: r.oif,
                            onlink: r.onlink,
                        }),
                    })
                    .collect())
            }
            Kind::Blackhole => {
                let filter = RouteFilter {
                    table: Some(rt_table::MAIN),
                    ..RouteFilter::default()
                };
                Ok(self
                    .routes(&filter)?
                    .into_iter()
                    .filter(|r| r.kind == RTN_BLACKHOLE)
                    .map(|r| Found {
                        ours: r.protocol == TWILL_PROTO,
                        object: blackhole_of(&r),
                    })
                    .collect())
            }
            Kind::Neighbour => {
                let names = self.link_names()?;
                Ok(self
                    .neighbours(None, None, false)?
                    .into_iter()
                    .filter_map(|n| {
                        Some(Found {
                            ours: n.state & nud::PERMANENT != 0,
                            object: Object::Neighbour {
                                dev: names.get(&n.index)?.clone(),
                                ip: n.ip?,
                                mac: n.mac?,
                            },
                        })
                    })
                    .collect())
            }
            Kind::Fdb => {
                let names = self.link_names()?;
                Ok(self
                    .fdb_entries(None)?
                    .into_iter()
                    .filter_map(|e| {
                        Some(Found {
                            ours: e.is_self(),
                            object: Object::Fdb {
                                dev: names.get(&e.index)?.clone(),
                                mac: e.mac,
                                dst: e.dst?,
                            },
                        })
                    })
                    .collect())
            }
            Kind::Device => Ok(self
                .links()?
                .into_iter()
                .filter_map(|l| {
                    let v = l.vxlan?;
                    Some(Found {
                        ours: true,
                        object: Object::Vxlan(VxlanDevice {
                            name: l.name,
                            vni: v.vni,
                            port: v.port,
                            local: v.local,
                            mac: l.mac,
                            mtu: Some(l.mtu),
                        }),
                    })
                })
                .chain(ipip::found_devices(self)?)
                .collect()),
        }
    }

    fn list_owned(&mut self, kind: Kind) -> Result<Vec<Object>> {
        if !matches!(kind, Kind::Route | Kind::Blackhole) {
            return Ok(self
                .list(kind)?
                .into_iter()
                .filter(|f| f.ours)
                .map(|f| f.object)
                .collect());
        }
        // With NETLINK_GET_STRICT_CHK the kernel sends only twill's main-table routes; without
        // it (before 4.20) it sends every route and `routes` filters here: same answer.
        let filter = RouteFilter {
            table: Some(rt_table::MAIN),
            protocol: Some(TWILL_PROTO),
            ..RouteFilter::default()
        };
        let routes = self.routes(&filter)?.into_iter();
        if kind == Kind::Blackhole {
            return Ok(routes
                .filter(|r| r.kind == RTN_BLACKHOLE)
                .map(|r| blackhole_of(&r))
                .collect());
        }
        Ok(routes
            .filter(|r| r.kind == RTN_UNICAST)
            .map(|r| {
                Object::Route(PeerRoute {
                    metric: effective_metric(&r.dst, r.metric.unwrap_or(0)),
                    dst: r.dst,
                    gateway: r.gateway,
                    oif: r.oif,
                    onlink: r.onlink,
                })
            })
            .collect())
    }

    /// One route dump the kernel filters by table and protocol; each route is hashed as it is
    /// read, nothing is kept.
    fn owned_digest(&mut self, scope: DigestScope) -> Result<Digest> {
        let mut d = Digest::new(scope);
        if !scope.routes && !scope.blackholes {
            return Ok(d);
        }
        let filter = RouteFilter {
            table: Some(rt_table::MAIN),
            protocol: Some(TWILL_PROTO),
            ..RouteFilter::default()
        };
        for r in self.routes(&filter)? {
            if r.kind == RTN_BLACKHOLE {
                d.add(&blackhole_of(&r));
            } else if r.kind == RTN_UNICAST {
                d.add(&Object::Route(PeerRoute {
                    metric: effective_metric(&r.dst, r.metric.unwrap_or(0)),
                    dst: r.dst,
                    gateway: r.gateway,
                    oif: r.oif,
                    onlink: r.onlink,
                }));
            }
        }
        Ok(d)
    }

    /// One link dump shared by devices, neighbours and FDB entries; one route dump (the kernel
    /// filters twill's protocol) for routes and blackholes; neighbours and FDB entries dumped
    /// for their device when all of them are on one; ipip devices only when some are wanted.
    fn list_owned_like(&mut self, wanted: &[Object]) -> Result<Vec<Object>> {
        let kinds: BTreeSet<Kind> = wanted.iter().map(Object::kind).collect();
        let mut out = Vec::new();
        if kinds.contains(&Kind::Route) || kinds.contains(&Kind::Blackhole) {
            let filter = RouteFilter {
                table: Some(rt_table::MAIN),
                protocol: Some(TWILL_PROTO),
                ..RouteFilter::default()
            };
            for r in self.routes(&filter)? {
                if r.kind == RTN_BLACKHOLE && kinds.contains(&Kind::Blackhole) {
                    out.push(blackhole_of(&r));
                } else if r.kind == RTN_UNICAST && kinds.contains(&Kind::Route) {
                    out.push(Object::Route(PeerRoute {
                        metric: effective_metric(&r.dst, r.metric.unwrap_or(0)),
                        dst: r.dst,
                        gateway: r.gateway,
                        oif: r.oif,
                        onlink: r.onlink,
                    }));
                }
            }
        }
        if !kinds
            .iter()
            .any(|k| matches!(k, Kind::Device | Kind::Neighbour | Kind::Fdb))
        {
            return Ok(out);
        }
        let links = self.links()?;
        let names: BTreeMap<u32, &str> = links.iter().map(|l| (l.index, l.name.as_str())).collect();
        // The one device all wanted objects of a kind sit on, when there is one.
        let only_dev = |kind: Kind| -> Option<u32> {
            let mut devs = wanted.iter().filter_map(|o| match o {
                Object::Neighbour { dev, .. } | Object::Fdb { dev, .. } if o.kind() == kind => {
                    Some(dev.as_str())
                }
                _ => None,
            });
            let first = devs.next()?;
            if devs.any(|d| d != first) {
                return None;
            }
            links.iter().find(|l| l.name == first).map(|l| l.index)
        };
        if kinds.contains(&Kind::Neighbour) {
            for n in self.neighbours(only_dev(Kind::Neighbour), None, false)? {
                if n.state & nud::PERMANENT == 0 {
                    continue;
                }
                if let (Some(dev), Some(ip), Some(mac)) = (names.get(&n.index), n.ip, n.mac) {
                    out.push(Object::Neighbour {
                        dev: (*dev).to_string(),
                        ip,
                        mac,
                    });
                }
            }
        }
        if kinds.contains(&Kind::Fdb) {
            for e in self.fdb_entries(only_dev(Kind::Fdb))? {
                if !e.is_self() {
                    continue;
                }
                if let (Some(dev), Some(dst)) = (names.get(&e.index), e.dst) {
                    out.push(Object::Fdb {
                        dev: (*dev).to_string(),
                        mac: e.mac,
                        dst,
                    });
                }
            }
        }
        if kinds.contains(&Kind::Device) {
            out.extend(links.iter().filter_map(|l| {
                let v = l.vxlan.as_ref()?;
                Some(Object::Vxlan(VxlanDevice {
                    name: l.name.clone(),
                    vni: v.vni,
                    port: v.port,
                    local: v.local,
                    mac: l.mac,
                    mtu: Some(l.mtu),
                }))
            }));
            if wanted.iter().any(|o| matches!(o, Object::Ipip(_))) {
                out.extend(ipip::found_devices(self)?.into_iter().map(|f| f.object));
            }
        }
        Ok(out)
    }

    /// Devices one by one first (what the entries hang on); then every route, neighbour and
    /// FDB write and removal queued and sent as one batch (device names resolved with one link
    /// dump); device removals last.
    fn apply_all(&mut self, apply: &[Object], remove: &[Object]) -> Applied {
        let is_device = |o: &Object| o.kind() == Kind::Device;
        let mut applied: Vec<Option<Result<()>>> = apply.iter().map(|_| None).collect();
        let mut removed: Vec<Option<Result<()>>> = remove.iter().map(|_| None).collect();
        for (o, slot) in apply.iter().zip(&mut applied) {
            if is_device(o) {
                *slot = Some(self.apply(o));
            }
        }
        let needs_names = apply
            .iter()
            .chain(remove)
            .any(|o| matches!(o, Object::Neighbour { .. } | Object::Fdb { .. }));
        let index: BTreeMap<String, u32> = if needs_names {
            match self.links() {
                Ok(links) => links.into_iter().map(|l| (l.name, l.index)).collect(),
                Err(e) => {
                    let e: Error = e.into();
                    let fail = |s: &mut Option<Result<()>>| {
                        s.get_or_insert_with(|| Err(e.clone()));
                    };
                    applied.iter_mut().for_each(fail);
                    removed.iter_mut().for_each(fail);
                    return Applied::from_slots(applied, removed);
                }
            }
        } else {
            BTreeMap::new()
        };
        // (slot, is a removal, first and end position in the batch)
        let mut queued: Vec<(usize, bool, usize, usize)> = Vec::new();
        self.batch_begin();
        let sides = [(apply, false), (remove, true)];
        for (objects, removal) in sides {
            for (i, o) in objects.iter().enumerate() {
                if is_device(o) {
                    continue;
                }
                let start = self.batch_len();
                let slots = if removal { &mut removed } else { &mut applied };
                match self.queue(o, removal, &index) {
                    Ok(()) => queued.push((i, removal, start, self.batch_len())),
                    Err(e) => slots[i] = Some(Err(e)),
                }
            }
        }
        match self.batch_finish() {
            Ok(answers) => {
                let mut answers: Vec<Option<_>> = answers.into_iter().map(Some).collect();
                for (i, removal, start, end) in queued {
                    let mut res: Result<()> = Ok(());
                    for a in answers.get_mut(start..end).unwrap_or_default() {
                        match a.take() {
                            Some(Err(e)) if !(removal && e.is_not_found()) => {
                                res = Err(e.into());
                                break;
                            }
                            _ => {}
                        }
                    }
                    let slots = if removal { &mut removed } else { &mut applied };
                    slots[i] = Some(res);
                }
            }
            Err(e) => {
                let e: Error = e.into();
                for (i, removal, _, _) in queued {
                    let slots = if removal { &mut removed } else { &mut applied };
                    slots[i] = Some(Err(e.clone()));
                }
            }
        }
        for (o, slot) in remove.iter().zip(&mut removed) {
            if is_device(o) {
                *slot = Some(self.remove(o));
            }
        }
        Applied::from_slots(applied, removed)
    }

    fn apply(&mut self, o: &Object) -> Result<()> {
        match o {
            Object::Route(r) => {
                let spec = RouteSpec {
                    gateway: r.gateway,
                    oif: r.oif,
                    onlink: r.onlink,
                    metric: (r.metric != effective_metric(&r.dst, 0)).then_some(r.metric),
                    ..RouteSpec::new(r.dst)
                };
                Ok(self.replace_route(&spec)?)
            }
            Object::Blackhole { dst, metric } => {
                let metric = (*metric != effective_metric(dst, 0)).then_some(*metric);
                Ok(self.replace_blackhole_route(*dst, metric)?)
            }
            Object::Neighbour { dev, ip, mac } => {
                let index = self.index_of(dev)?;
                Ok(self.replace_neighbour(&NeighbourSpec::permanent(index, *ip, *mac))?)
            }
            Object::Fdb { dev, mac, dst } => {
                let index = self.index_of(dev)?;
                Ok(self.fdb_replace(&FdbEntry::vxlan(index, *mac, *dst))?)
            }
            Object::Vxlan(d) => {
                if self.link_by_name(&d.name)?.is_some() {
                    self.delete_link_by_name(&d.name)?;
                }
                Ok(self.create_vxlan(&VxlanSpec {
                    name: &d.name,
                    vni: d.vni,
                    local: d.local,
                    port: d.port,
                    underlay: None,
                    learning: false,
                    mtu: d.mtu,
                    mac: d.mac,
                    up: true,
                })?)
            }
            Object::Ipip(d) => ipip::apply(self, d).map(drop),
        }
    }

    fn remove(&mut self, o: &Object) -> Result<()> {
        let res = match o {
            Object::Route(r) => self.delete_route(&RouteSpec {
                gateway: r.gateway,
                metric: Some(r.metric),
                protocol: TWILL_PROTO,
                ..RouteSpec::new(r.dst)
            }),
            Object::Neighbour { dev, ip, mac } => match self.link_by_name(dev)? {
                None => return Ok(()),
                Some(l) => self.delete_neighbour(&NeighbourSpec::permanent(l.index, *ip, *mac)),
            },
            Object::Fdb { dev, mac, dst } => match self.link_by_name(dev)? {
                None => return Ok(()),
                Some(l) => self.fdb_delete(&FdbEntry::vxlan(l.index, *mac, *dst)),
            },
            Object::Vxlan(d) => self.delete_link_if_exists(&d.name).map(drop),
            Object::Ipip(d) => return ipip::remove(self, d),
            Object::Blackhole { dst, metric } => self.delete_blackhole_route(*dst, Some(*metric)),
        };
        match res {
            Err(e) if e.is_not_found() => Ok(()),
            r => Ok(r?),
        }
    }
}

/// A kernel blackhole route as an [`Object::Blackhole`].
fn blackhole_of(r: &crate::kernel::netlink::Route) -> Object {
    Object::Blackhole {
        dst: r.dst,
        metric: effective_metric(&r.dst, r.metric.unwrap_or(0)),
    }
}

impl Applied {
    /// Every slot answered (one never reached counts as refused).
    fn from_slots(applied: Vec<Option<Result<()>>>, removed: Vec<Option<Result<()>>>) -> Applied {
        let unanswered = || {
            Err(Error::new(
                code::NETLINK,
                "not sent: the batch stopped early",
            ))
        };
        Applied {
            applied: applied
                .into_iter()
                .map(|s| s.unwrap_or_else(unanswered))
                .collect(),
            removed: removed
                .into_iter()
                .map(|s| s.unwrap_or_else(unanswered))
                .collect(),
        }
    }
}

impl Netlink {
    /// Queues the write (or removal) of a route, blackhole, neighbour or FDB entry in the
    /// open batch, resolving device names through `index`. A removal from a device that is
    /// gone is done already.
    fn queue(&mut self, o: &Object, removal: bool, index: &BTreeMap<String, u32>) -> Result<()> {
        let dev_index = |dev: &String| {
            index.get(dev).copied().ok_or_else(|| {
                Error::new(
                    code::NETLINK,
                    format!("device {dev} does not exist on the node"),
                )
            })
        };
        match (o, removal) {
            (Object::Neighbour { dev, ip, mac }, false) => {
                Ok(self.replace_neighbour(&NeighbourSpec::permanent(dev_index(dev)?, *ip, *mac))?)
            }
            (Object::Neighbour { dev, ip, mac }, true) => match index.get(dev) {
                None => Ok(()),
                Some(i) => Ok(self.delete_neighbour(&NeighbourSpec::permanent(*i, *ip, *mac))?),
            },
            (Object::Fdb { dev, mac, dst }, false) => {
                Ok(self.fdb_replace(&FdbEntry::vxlan(dev_index(dev)?, *mac, *dst))?)
            }
            (Object::Fdb { dev, mac, dst }, true) => match index.get(dev) {
                None => Ok(()),
                Some(i) => Ok(self.fdb_delete(&FdbEntry::vxlan(*i, *mac, *dst))?),
            },
            (_, false) => self.apply(o),
            (_, true) => self.remove(o),
        }
    }

    fn link_names(&mut self) -> Result<BTreeMap<u32, String>> {
        Ok(self
            .links()?
            .into_iter()
            .map(|l| (l.index, l.name))
            .collect())
    }

    fn index_of(&mut self, dev: &str) -> Result<u32> {
        self.link_by_name(dev)?.map(|l| l.index).ok_or_else(|| {
            Error::new(
                code::NETLINK,
                format!("device {dev} does not exist on the node"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }
    fn route(dst: &str, gw: &str) -> Object {
        Object::Route(PeerRoute::via(net(dst), gw.parse().unwrap()))
    }
    fn found(dst: &str, gw: &str, ours: bool) -> Found {
        let Object::Route(mut r) = route(dst, gw) else {
            unreachable!()
        };
        r.oif = Some(2);
        Found {
            object: Object::Route(r),
            ours,
        }
    }
    fn claims(c: &[&str]) -> BTreeSet<Key> {
        c.iter().map(|d| Key::Route(net(d), 0)).collect()
    }

    #[test]
    fn lines_round_trip_for_every_kind() {
        let mac: MacAddr = "02:00:00:00:00:02".parse().unwrap();
        for o in [
            route("10.244.2.0/24", "10.0.0.2"),
            route("fd10:2::/64", "fd00::2"),
            Object::Route(PeerRoute {
                dst: net("10.9.0.0/16"),
                gateway: None,
                oif: Some(3),
                onlink: true,
                metric: 50,
            }),
            Object::Neighbour {
                dev: "twvx".into(),
                ip: "10.244.2.0".parse().unwrap(),
                mac,
            },
            Object::Fdb {
                dev: "twvx".into(),
                mac,
                dst: "10.0.0.2".parse().unwrap(),
            },
            Object::Vxlan(VxlanDevice {
                name: "twvx".into(),
                vni: 1,
                port: 8472,
                local: Some("10.0.0.1".parse().unwrap()),
                mac: Some(mac),
                mtu: None,
            }),
            Object::blackhole(net("10.244.1.0/24")),
            Object::blackhole(net("fd10:1::/64")),
        ] {
            assert_eq!(
                Object::from_line(&o.to_line()),
                Some(o.clone()),
                "{}",
                o.to_line()
            );
        }
        assert_eq!(Object::from_line("route x"), None);
    }

    #[test]
    fn a_wanted_blackhole_replaces_own_route_on_its_key_and_yields_to_a_foreign_one() {
        let bh = Object::blackhole(net("10.244.1.0/24"));
        assert_eq!(bh.key(), route("10.244.1.0/24", "10.0.0.9").key());
        // Our old peer route on the block's key: overwritten in place, not removed after.
        let own = found("10.244.1.0/24", "10.0.0.9", true);
        let p = plan(
            std::slice::from_ref(&bh),
            &[own],
            &claims(&["10.244.1.0/24"]),
            &claims(&[]),
        );
        assert_eq!((p.apply, p.remove), (vec![bh.clone()], vec![]));
        // Another owner's route there: left alone, reported.
        let foreign = found("10.244.1.0/24", "10.0.0.9", false);
        let p = plan(
            std::slice::from_ref(&bh),
            std::slice::from_ref(&foreign),
            &claims(&[]),
            &claims(&[]),
        );
        assert!(p.apply.is_empty());
        assert_eq!(p.conflicts, vec![foreign.object]);
    }

    #[test]
    fn plan_adds_missing_changes_different_deletes_only_own_unclaimed() {
        let desired = [
            route("10.244.2.0/24", "10.0.0.2"),
            route("10.244.3.0/24", "10.0.0.3"),
            route("fd10:2::/64", "fd00::2"),
        ];
        let found = [
            found("10.244.2.0/24", "10.0.0.2", true),  // same: keep
            found("10.244.3.0/24", "10.0.0.99", true), // changed gateway
            found("10.244.4.0/24", "10.0.0.4", true),  // mine, no longer wanted
            found("10.244.5.0/24", "10.0.0.5", true),  // another network's
            found("10.244.6.0/24", "10.0.0.6", true),  // mine, but also claimed by another
            found("10.1.0.0/16", "10.0.0.254", false), // foreign, unrelated
        ];
        let mine = claims(&[
            "10.244.2.0/24",
            "10.244.3.0/24",
            "10.244.4.0/24",
            "10.244.6.0/24",
        ]);
        let others = claims(&["10.244.5.0/24", "10.244.6.0/24"]);
        let p = plan(&desired, &found, &mine, &others);
        assert_eq!(p.apply, vec![desired[1].clone(), desired[2].clone()]);
        assert_eq!(p.remove, vec![found[2].object.clone()]);
        assert!(p.conflicts.is_empty());
    }

    /// Routes only, in memory, with the kernel's replace semantics; removal can be refused.
    #[derive(Default)]
    struct FakeKernel {
        routes: Vec<Found>,
        refuse_remove: bool,
    }

    impl NodeKernel for FakeKernel {
        fn local_addrs(&mut self) -> Result<Vec<IpNetwork>> {
            Ok(vec![net("10.0.0.1/24")])
        }
        fn list(&mut self, _: Kind) -> Result<Vec<Found>> {
            Ok(self.routes.clone())
        }
        fn apply(&mut self, o: &Object) -> Result<()> {
            self.routes.retain(|f| f.object.key() != o.key());
            self.routes.push(Found {
                object: o.clone(),
                ours: true,
            });
            Ok(())
        }
        fn remove(&mut self, o: &Object) -> Result<()> {
            if self.refuse_remove {
                return Err(Error::new(code::NETLINK, "Operation not permitted"));
            }
            self.routes.retain(|f| f.object != *o);
            Ok(())
        }
    }

    #[test]
    fn a_removal_the_kernel_refused_stays_claimed_and_is_retried() {
        let dir = std::env::temp_dir().join(format!("twill-reconcile-{}", std::process::id()));
        let st =
            StateFile::new(&dir, "n", crate::kernel::netns::NetnsKey::Cookie(1), (0, 0)).unwrap();
        let mut k = FakeKernel::default();
        let v1 = ViewSource::Inline(serde_json::json!([
            {"nodeIP": "10.0.0.2", "podCIDR": "10.244.2.0/24"},
            {"nodeIP": "10.0.0.3", "podCIDR": "10.244.3.0/24"},
        ]));
        let v2 = ViewSource::Inline(serde_json::json!([
            {"nodeIP": "10.0.0.2", "podCIDR": "10.244.2.0/24"},
        ]));
        let run = |k: &mut FakeKernel, v: &ViewSource| {
            let inputs = Inputs {
                source: v,
                own_ranges: &[],
                plane: &crate::node::host_gw::HostGw,
            };
            reconcile(k, &st, &inputs).unwrap()
        };
        run(&mut k, &v1);
        assert_eq!(k.routes.len(), 2);
        k.refuse_remove = true;
        let Reconciled::Applied(r) = run(&mut k, &v2) else {
            panic!("expected an apply")
        };
        assert_eq!(r.failures.len(), 1, "{r:?}");
        assert!(
            st.read()
                .installed
                .contains(&route("10.244.3.0/24", "10.0.0.3"))
        );
        assert_eq!(st.read().fingerprint, None);
        k.refuse_remove = false;
        let Reconciled::Applied(r) = run(&mut k, &v2) else {
            panic!("expected an apply")
        };
        assert_eq!(r.plan.remove, vec![route("10.244.3.0/24", "10.0.0.3")]);
        assert_eq!(k.routes.len(), 1);
        assert_eq!(run(&mut k, &v2), Reconciled::Unchanged);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_digest_sees_a_changed_gateway_and_extra_routes_fall_back_to_the_full_check() {
        let dir = std::env::temp_dir().join(format!("twill-digest-{}", std::process::id()));
        let st =
            StateFile::new(&dir, "n", crate::kernel::netns::NetnsKey::Cookie(1), (0, 0)).unwrap();
        let mut k = FakeKernel::default();
        let v = ViewSource::Inline(serde_json::json!([
            {"nodeIP": "10.0.0.2", "podCIDR": "10.244.2.0/24"},
            {"nodeIP": "10.0.0.3", "podCIDR": "10.244.3.0/24"},
        ]));
        let run = |k: &mut FakeKernel| {
            let inputs = Inputs {
                source: &v,
                own_ranges: &[],
                plane: &crate::node::host_gw::HostGw,
            };
            reconcile(k, &st, &inputs).unwrap()
        };
        assert!(matches!(run(&mut k), Reconciled::Applied(_)));
        let d = st
            .read_head()
            .digest
            .expect("a digest next to the fingerprint");
        assert_eq!(d.count, 2);
        assert!(d.scope.routes && d.scope.gateway_only && !d.scope.oif && !d.scope.blackholes);
        assert_eq!(run(&mut k), Reconciled::Unchanged);

        // Same count, another gateway: the digest differs, the full check agrees, repaired.
        let hijacked = found("10.244.2.0/24", "10.0.0.9", true);
        k.routes.retain(|f| f.object.key() != hijacked.object.key());
        k.routes.push(hijacked);
        let Reconciled::Applied(r) = run(&mut k) else {
            panic!("a changed gateway must be repaired")
        };
        assert_eq!(r.plan.apply, vec![route("10.244.2.0/24", "10.0.0.2")]);
        assert_eq!(run(&mut k), Reconciled::Unchanged);

        // Another network's route and a gateway-less pod route: more than installed, yet all
        // installed are there (the full check), or out of scope (no gateway).
        k.routes.push(found("10.244.9.0/24", "10.0.0.9", true));
        let Object::Route(mut pod) = route("10.244.1.5/32", "10.0.0.1") else {
            unreachable!()
        };
        pod.gateway = None;
        pod.oif = Some(7);
        k.routes.push(Found {
            object: Object::Route(pod),
            ours: true,
        });
        assert_eq!(run(&mut k), Reconciled::Unchanged);

        // One installed route gone: repaired.
        k.routes
            .retain(|f| f.object.key() != route("10.244.3.0/24", "10.0.0.3").key());
        assert!(matches!(run(&mut k), Reconciled::Applied(_)));
        assert!(
            k.routes
                .iter()
                .any(|f| f.object == route("10.244.3.0/24", "10.0.0.3"))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn digest_fields_round_trip_and_only_route_kinds_get_one() {
        let installed = [
            route("10.244.2.0/24", "10.0.0.2"),
            Object::blackhole(net("10.244.1.0/24")),
        ];
        let d = Digest::of_installed(&installed).unwrap();
        assert!(d.scope.routes && d.scope.blackholes && d.scope.gateway_only);
        let text = d.to_fields();
        let f: Vec<&str> = text.split(' ').collect();
        assert_eq!(Digest::from_fields(&f), Some(d));
        // Order does not matter; content does.
        let mut rev = installed.to_vec();
        rev.reverse();
        assert_eq!(Digest::of_installed(&rev), Some(d));
        let other = [
            route("10.244.2.0/24", "10.0.0.3"),
            Object::blackhole(net("10.244.1.0/24")),
        ];
        assert_ne!(Digest::of_installed(&other).unwrap().sum, d.sum);
        let neigh = Object::Neighbour {
            dev: "twvx".into(),
            ip: "10.244.2.0".parse().unwrap(),
            mac: "02:00:00:00:00:02".parse().unwrap(),
        };
        assert_eq!(Digest::of_installed(&[neigh]), None);
        assert_eq!(Digest::from_fields(&["x", "1", "0"]), None);
    }

    #[test]
    fn forget_removes_only_what_the_network_installed_and_nobody_else_claims() {
        let dir = std::env::temp_dir().join(format!("twill-forget-{}", std::process::id()));
        let key = crate::kernel::netns::NetnsKey::Cookie(1);
        let mine = StateFile::new(&dir, "gone", key, (0, 0)).unwrap();
        let other = StateFile::new(&dir, "stays", key, (0, 0)).unwrap();
        let shared = route("10.244.2.0/24", "10.0.0.2");
        let only_mine = route("10.244.3.0/24", "10.0.0.3");
        let theirs = route("10.244.4.0/24", "10.0.0.4");
        mine.write(&NodeState {
            fingerprint: Some(1),
            installed: vec![shared.clone(), only_mine.clone()],
            view: None,
        })
        .unwrap();
        other
            .write(&NodeState {
                fingerprint: Some(2),
                installed: vec![shared.clone(), theirs.clone()],
                view: None,
            })
            .unwrap();
        let mut k = FakeKernel::default();
        for o in [&shared, &only_mine, &theirs] {
            k.apply(o).unwrap();
        }
        k.refuse_remove = true;
        let r = forget(&mut k, &mine).unwrap();
        assert_eq!(r.failures.len(), 1, "{r:?}");
        assert_eq!(mine.read().installed, vec![only_mine.clone()]);
        k.refuse_remove = false;
        let r = forget(&mut k, &mine).unwrap();
        assert_eq!(r.plan.remove, vec![only_mine]);
        let left: Vec<Object> = k.routes.iter().map(|f| f.object.clone()).collect();
        assert_eq!(left, vec![shared, theirs]);
        assert!(!mine.path().exists());
        assert!(other.path().exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn plan_overwrites_a_learned_neighbour_on_a_twill_device() {
        let mac: MacAddr = "02:00:00:00:00:02".parse().unwrap();
        let want = Object::Neighbour {
            dev: "twvx0".into(),
            ip: "10.244.2.0".parse().unwrap(),
            mac,
        };
        let learned = Found {
            object: Object::Neighbour {
                dev: "twvx0".into(),
                ip: "10.244.2.0".parse().unwrap(),
                mac: "02:00:00:00:00:99".parse().unwrap(),
            },
            ours: false,
        };
        let p = plan(
            std::slice::from_ref(&want),
            &[learned],
            &BTreeSet::new(),
            &BTreeSet::new(),
        );
        assert_eq!(p.apply, vec![want]);
        assert!(p.conflicts.is_empty() && p.remove.is_empty());
    }

    #[test]
    fn plan_leaves_foreign_route_on_same_key_and_removes_own_stray_metric() {
        let desired = [
            route("10.244.2.0/24", "10.0.0.2"),
            route("fd10:2::/64", "fd00::2"),
        ];
        let foreign_v6 = found("fd10:2::/64", "fd00::9", false);
        let mut stray = found("10.244.2.0/24", "10.0.0.2", true);
        if let Object::Route(r) = &mut stray.object {
            r.metric = 50;
        }
        let p = plan(
            &desired,
            &[foreign_v6.clone(), stray.clone()],
            &BTreeSet::new(),
            &BTreeSet::new(),
        );
        assert_eq!(p.apply, vec![desired[0].clone()]);
        assert_eq!(p.conflicts, vec![foreign_v6.object]);
        assert_eq!(p.remove, vec![stray.object]);
    }
}
