//! The veth pair of one attachment: a host end on the bridge, named deterministically from
//! (container ID, ifname), and a pod end made directly in the pod's netns under `CNI_IFNAME`.
//!
//! Because the host end's name is a pure function of the attachment, DEL needs neither the
//! netns nor a prevResult (one RTM_DELLINK by name removes the pair), and GC can tell which
//! ports of the bridge belong to attachments the runtime still knows.

use std::collections::HashSet;

use ipnetwork::IpNetwork;

use crate::cni::types::{Attachment, CniResult, IpConfig, Route};
use crate::error::{Error, Result, code};
use crate::kernel::netlink::{
    AddrOptions, Link, MacAddr, Netlink, NetlinkError, RouteFilter, RouteSpec, VethSpec,
};
use crate::kernel::netns::Netns;
use crate::kernel::sysctl;

/// Prefix of every host-side veth name twill makes; the rest is [`HASH_HEX_DIGITS`] hex digits.
pub const HOST_PREFIX: &str = "tw";
/// Number of lowercase hex digits after [`HOST_PREFIX`] (2 + 13 = 15 = IFNAMSIZ - 1).
pub const HASH_HEX_DIGITS: usize = 13;
/// `rtm_protocol` of the routes made in the pod (RTPROT_BOOT, what `ip route add` uses).
pub const POD_ROUTE_PROTO: u8 = 3;

/// The host-side veth name of attachment (`container_id`, `ifname`): `tw` + 13 hex digits of a
/// 64-bit FNV-1a hash of both (a NUL between them), mixed and truncated to 52 bits.
///
/// Stable across versions and builds: DEL after an upgrade must find the same name.
pub fn host_ifname(container_id: &str, ifname: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in container_id.bytes().chain([0u8]).chain(ifname.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64 finalizer: every input bit reaches the 52 bits kept.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    format!("{HOST_PREFIX}{:013x}", h >> (64 - 4 * HASH_HEX_DIGITS))
}

/// True for names of the [`host_ifname`] shape (`tw` + 13 lowercase hex digits).
pub fn is_host_ifname(name: &str) -> bool {
    name.strip_prefix(HOST_PREFIX).is_some_and(|rest| {
        rest.len() == HASH_HEX_DIGITS
            && rest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A random unicast, locally administered MAC address (getrandom(2)).
pub fn random_mac() -> MacAddr {
    let mut b = [0u8; 6];
    // The raw syscall, not libc's wrapper: the static musl build resolves that wrapper to null.
    // SAFETY: the kernel writes at most b.len() bytes into b.
    let n = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_getrandom,
            b.as_mut_ptr(),
            b.len(),
            0 as nix::libc::c_uint,
        )
    };
    if n != b.len() as nix::libc::c_long {
        // No entropy syscall: fall back to std's OS-seeded hasher keys.
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::hash::RandomState::new().build_hasher();
        h.write_u64(std::process::id().into());
        b.copy_from_slice(&h.finish().to_ne_bytes()[..6]);
    }
    b[0] = (b[0] & 0xfe) | 0x02;
    MacAddr(b)
}

/// What [`create`] makes.
#[derive(Debug, Clone)]
pub struct PairSpec<'a> {
    /// `CNI_CONTAINERID` (names the host end).
    pub container_id: &'a str,
    /// `CNI_IFNAME`: the pod end's name in the pod netns.
    pub ifname: &'a str,
    /// The pod's netns, where the pod end is created.
    pub pod_ns: &'a Netns,
    /// MTU of both ends.
    pub mtu: u32,
    /// Bridge ifindex the host end is enslaved to.
    pub bridge: u32,
    /// MAC of the pod end (runtimeConfig `mac`); random when None.
    pub pod_mac: Option<MacAddr>,
}

/// The host end as created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEnd {
    /// Its name ([`host_ifname`]).
    pub name: String,
    /// Its MAC (chosen here, so it need not be read back).
    pub mac: MacAddr,
    /// Its ifindex in the node netns, as the kernel echoed the creation (None if it did not).
    pub index: Option<u32>,
    /// The pod end's ifindex in the pod netns, from the same echo (None if not echoed).
    pub pod_index: Option<u32>,
    /// The pod end's MAC (`spec.pod_mac`, else chosen here).
    pub pod_mac: MacAddr,
}

/// Why [`create`] failed.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The host end exists: this attachment is set up already (the runtime must DEL it first).
    /// Its IP reservation belongs to the live attachment and must not be released.
    #[error(
        "host veth {name} of container {container_id} ifname {ifname} already exists: the \
         attachment is set up already (DEL it first)"
    )]
    AttachmentExists {
        /// The host end's name.
        name: String,
        /// `CNI_CONTAINERID`.
        container_id: String,
        /// `CNI_IFNAME`.
        ifname: String,
    },
    /// The pod netns already has an interface called `ifname`.
    #[error("interface {ifname:?} already exists in netns {netns}")]
    IfnameTaken {
        /// `CNI_IFNAME`.
        ifname: String,
        /// The pod netns path.
        netns: String,
    },
    /// Any other kernel refusal.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
}

impl From<CreateError> for Error {
    /// Name clashes are code 104 (CONFLICT), kernel refusals 100.
    fn from(e: CreateError) -> Self {
        match e {
            CreateError::Netlink(n) => n.into(),
            clash => Error::new(code::CONFLICT, clash.to_string()),
        }
    }
}

/// Creates the pair in one RTM_NEWLINK on the node socket `nl`: the host end up, with MTU,
/// MAC and bridge master; the pod end (down, MAC chosen here) directly in `spec.pod_ns` as
/// `spec.ifname`. The request asks for an echo, which tells both ifindexes (no lookups later).
///
/// Nothing is left behind on failure. A name clash says which name (one extra lookup, on the
/// error path only).
pub fn create(nl: &mut Netlink, spec: &PairSpec<'_>) -> Result<HostEnd, CreateError> {
    let name = host_ifname(spec.container_id, spec.ifname);
    let mac = random_mac();
    let pod_mac = spec.pod_mac.unwrap_or_else(random_mac);
    let veth = VethSpec {
        name: &name,
        mtu: Some(spec.mtu),
        mac: Some(mac),
        master: Some(spec.bridge),
        up: true,
        peer_name: spec.ifname,
        peer_netns: Some(spec.pod_ns.as_fd()),
        peer_mtu: Some(spec.mtu),
        peer_mac: Some(pod_mac),
    };
    match nl.create_veth_echo(&veth) {
        Ok(echo) => Ok(HostEnd {
            name,
            mac,
            index: echo.as_ref().map(|l| l.index),
            pod_index: echo.and_then(|l| l.link).filter(|&i| i != 0),
            pod_mac,
        }),
        Err(e) if e.is_exists() => {
            if nl.link_by_name(&name)?.is_some() {
                Err(CreateError::AttachmentExists {
                    name,
                    container_id: spec.container_id.to_string(),
                    ifname: spec.ifname.to_string(),
                })
            } else {
                Err(CreateError::IfnameTaken {
                    ifname: spec.ifname.to_string(),
                    netns: spec.pod_ns.path().display().to_string(),
                })
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Deletes the host end of attachment (`container_id`, `ifname`) by name, which removes the
/// pod end too: one RTM_DELLINK. Ok(false) when it was already gone.
pub fn delete(nl: &mut Netlink, container_id: &str, ifname: &str) -> Result<bool> {
    Ok(nl.delete_link_if_exists(&host_ifname(container_id, ifname))?)
}

/// The pod end after [`configure_pod`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEnd {
    /// Its ifindex in the pod netns.
    pub index: u32,
    /// Its MAC.
    pub mac: Option<MacAddr>,
    /// Its peer's (the host end's) ifindex in the node netns, as the kernel reports it.
    pub peer_index: Option<u32>,
}

/// How [`configure_created_pod`] leaves the pod end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodOptions {
    /// Bring the interface up (false: `disableContainerInterface`, for a pod without
    /// addresses; it is left down, and neither routes nor announcements are made).
    pub up: bool,
    /// IPv6 duplicate address detection on the interface (`enabledad`): `accept_dad=1`,
    /// `enhanced_dad=1` and addresses added tentative. Off: `accept_dad=0` and every
    /// address usable at once (the link-local one too).
    pub dad: bool,
}

impl Default for PodOptions {
    /// Up, without DAD.
    fn default() -> Self {
        PodOptions {
            up: true,
            dad: false,
        }
    }
}

/// Configures the pod end inside `pod_ns` over one socket made there: DAD off (see
/// [`PodOptions`]), addresses, up, an announcement of its IPv4 addresses (gratuitous ARP),
/// then `routes` (their `oif` is set to the interface; protocol [`POD_ROUTE_PROTO`] unless
/// set). One setns bracket.
///
/// The announcement corrects stale neighbour entries of a reused IP on the node and the other
/// pods. A gratuitous ARP sent as the interface comes up (arp_notify) is not reliable through a
/// bridge: the host end's carrier reaches the bridge asynchronously (linkwatch), and until then
/// its port may drop frames. So: up with `arp_notify` still 0; look the host end up on `node`
/// (RTM_GETLINK runs the device's pending linkwatch work, so the port forwards from then on);
/// set `arp_notify=1` and the pod end's MAC to itself, which makes the kernel announce every
/// IPv4 address (NETDEV_CHANGEADDR). One ARP flood per ADD, two extra round trips, no waiting.
pub fn configure_pod(
    node: &mut Netlink,
    pod_ns: &Netns,
    ifname: &str,
    addrs: &[IpNetwork],
    routes: &[RouteSpec],
) -> Result<PodEnd> {
    let opts = PodOptions::default();
    configure_pod_of(node, pod_ns, ifname, None, addrs, routes, opts)
}

/// [`configure_pod`] for the pair `host` [`create`]d, with `opts`: when the kernel echoed
/// both ifindexes, the pod end is not looked up (one round trip less). Code 7 when `opts`
/// leaves the interface down but `addrs` or `routes` are given.
pub fn configure_created_pod(
    node: &mut Netlink,
    pod_ns: &Netns,
    ifname: &str,
    host: &HostEnd,
    addrs: &[IpNetwork],
    routes: &[RouteSpec],
    opts: PodOptions,
) -> Result<PodEnd> {
    let known = match (host.pod_index, host.index) {
        (Some(pod), Some(peer)) => Some(PodEnd {
            index: pod,
            mac: Some(host.pod_mac),
            peer_index: Some(peer),
        }),
        _ => None,
    };
    configure_pod_of(node, pod_ns, ifname, known, addrs, routes, opts)
}

fn configure_pod_of(
    node: &mut Netlink,
    pod_ns: &Netns,
    ifname: &str,
    known: Option<PodEnd>,
    addrs: &[IpNetwork],
    routes: &[RouteSpec],
    opts: PodOptions,
) -> Result<PodEnd> {
    if !opts.up && (!addrs.is_empty() || !routes.is_empty()) {
        return Err(Error::invalid_config(format!(
            "interface {ifname:?} is to stay down (\"disableContainerInterface\"), so it cannot \
             take addresses or routes: use \"ipam\": {{}}"
        )));
    }
    pod_ns.run(|| -> Result<PodEnd> {
        let mut nl = Netlink::new()?;
        let link = match known {
            Some(k) => k,
            None => nl
                .link_by_name(ifname)?
                .map(|l| PodEnd {
                    index: l.index,
                    mac: l.mac,
                    peer_index: l.link,
                })
                .ok_or_else(|| {
                    Error::new(
                        code::NETLINK,
                        format!(
                            "interface {ifname:?} vanished from netns {} right after it was \
                             created",
                            pod_ns.path().display()
                        ),
                    )
                })?,
        };
        let v4 = addrs.iter().any(IpNetwork::is_ipv4);
        let v6 = addrs.iter().any(IpNetwork::is_ipv6);
        if v6 {
            // Harmless when already 0; the file is missing only when IPv6 is off in the kernel,
            // and then the address below fails with a clear error.
            let _ = sysctl::set(&format!("net/ipv6/conf/{ifname}/disable_ipv6"), "0");
        }
        set_dad(ifname, opts.dad, v6)?;
        // Subscribed before the addresses exist, so the end of their DAD cannot be missed.
        let mut dad_events = if opts.dad && opts.up && v6 {
            Some(crate::kernel::netlink::Ipv6AddrEvents::open()?)
        } else {
            None
        };
        let addr_opts = AddrOptions {
            nodad: !opts.dad,
            ..Default::default()
        };
        for a in addrs {
            nl.add_address(link.index, *a, &addr_opts)?;
        }
        if !opts.up {
            return Ok(link);
        }
        nl.set_link_up(link.index, true)?;
        if v4 && let (Some(peer), Some(mac)) = (link.peer_index, link.mac) {
            node.link_by_index(peer)?;
            sysctl::set(&format!("net/ipv4/conf/{ifname}/arp_notify"), "1")?;
            nl.set_mac(link.index, mac)?;
        }
        for r in routes {
            let mut r = r.clone();
            r.oif = Some(link.index);
            nl.append_route(&r)?;
        }
        if let Some(events) = &mut dad_events {
            let v6: Vec<std::net::Ipv6Addr> = addrs
                .iter()
                .filter_map(|a| match a.ip() {
                    std::net::IpAddr::V6(ip) => Some(ip),
                    std::net::IpAddr::V4(_) => None,
                })
                .collect();
            dad_settled(
                events.wait_dad(&mut nl, link.index, &v6, DAD_TIMEOUT)?,
                ifname,
            )?;
        }
        Ok(link)
    })?
}

/// The longest ADD waits for IPv6 duplicate address detection (`enabledad`), as the reference.
pub const DAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// DAD's end as an ADD result: an address in use elsewhere is code 104, DAD still running
/// after [`DAD_TIMEOUT`] code 11 (try again).
fn dad_settled(outcome: crate::kernel::netlink::DadOutcome, ifname: &str) -> Result<()> {
    use crate::kernel::netlink::DadOutcome;
    match outcome {
        DadOutcome::Settled => Ok(()),
        DadOutcome::Failed(ip) => Err(Error::new(
            code::CONFLICT,
            format!(
                "IPv6 address {ip} of interface {ifname:?} is already in use on the pod network \
                 (duplicate address detection failed)"
            ),
        )),
        DadOutcome::TimedOut(ips) => {
            let list: Vec<String> = ips.iter().map(ToString::to_string).collect();
            Err(Error::new(
                code::TRY_AGAIN,
                format!(
                    "duplicate address detection of {} on interface {ifname:?} did not finish \
                     within {} s",
                    list.join(", "),
                    DAD_TIMEOUT.as_secs()
                ),
            ))
        }
    }
}

/// IPv6 DAD of interface `ifname` in the calling thread's netns, set before it comes up so
/// that its link-local address follows too: on, `accept_dad=1` and `enhanced_dad=1`; off,
/// `accept_dad=0`. Without IPv6 in the kernel (no such file) there is nothing to set; with
/// IPv6 addresses to add (`needed`) a failed write is an error, otherwise it is ignored.
fn set_dad(ifname: &str, on: bool, needed: bool) -> Result<()> {
    let keys: &[(&str, &str)] = if on {
        &[("accept_dad", "1"), ("enhanced_dad", "1")]
    } else {
        &[("accept_dad", "0")]
    };
    for (key, value) in keys {
        match sysctl::set(&format!("net/ipv6/conf/{ifname}/{key}"), value) {
            Err(e) if needed => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// The ports of bridge `bridge` (ifindex) that are twill host veths of attachments not in
/// `valid` (GC): veth links named like [`host_ifname`] whose name is no valid attachment's.
/// One link dump. Assumes the bridge serves one network: `valid` lists that network's
/// attachments only, so another network's pods on the same bridge would look stale.
pub fn stale_host_ends(nl: &mut Netlink, bridge: u32, valid: &[Attachment]) -> Result<Vec<Link>> {
    let keep: HashSet<String> = valid
        .iter()
        .map(|a| host_ifname(&a.container_id, &a.ifname))
        .collect();
    Ok(nl
        .links()?
        .into_iter()
        .filter(|l| {
            l.master == Some(bridge)
                && l.kind.as_deref() == Some("veth")
                && is_host_ifname(&l.name)
                && !keep.contains(&l.name)
        })
        .collect())
}

/// CHECK of one attachment against its `prev` result: the host end exists, is a veth and a
/// port of bridge `bridge` (ifindex); the pod end `ifname` exists in `pod_ns`, is the host
/// end's peer, has the MAC `prev` reports, every address `prev` assigns to it and every route
/// of `prev`. Code 105 naming the first thing that differs.
pub fn check(
    nl: &mut Netlink,
    pod_ns: &Netns,
    bridge: u32,
    container_id: &str,
    ifname: &str,
    prev: &CniResult,
) -> Result<()> {
    let failed = |msg: String| Error::new(code::CHECK_FAILED, msg);
    let host_name = host_ifname(container_id, ifname);
    let host = nl
        .link_by_name(&host_name)?
        .ok_or_else(|| failed(format!("host veth {host_name} does not exist")))?;
    if host.kind.as_deref() != Some("veth") {
        return Err(failed(format!(
            "host interface {host_name} is a {}, not a veth",
            host.kind.as_deref().unwrap_or("device of no kind")
        )));
    }
    if host.master != Some(bridge) {
        let master = host.master.map_or_else(
            || "it has none".to_string(),
            |m| format!("its master is ifindex {m}"),
        );
        return Err(failed(format!(
            "host veth {host_name} is not a port of the bridge (ifindex {bridge}; {master})"
        )));
    }
    if let Some(i) = prev
        .interfaces
        .iter()
        .find(|i| i.sandbox.is_none() && i.name == host_name)
        && let (Some(want), Some(have)) = (&i.mac, host.mac)
        && !mac_eq(want, &have)
    {
        return Err(failed(format!(
            "host veth {host_name} has MAC {have}, prevResult says {want}"
        )));
    }

    let (pod, addrs, routes) = pod_ns.run(|| -> Result<_> {
        let mut pnl = Netlink::new()?;
        let Some(pod) = pnl.link_by_name(ifname)? else {
            return Ok((None, vec![], vec![]));
        };
        let addrs = pnl.addresses(Some(pod.index), None)?;
        let routes = pnl.routes(&RouteFilter::default())?;
        Ok((Some(pod), addrs, routes))
    })??;
    let pod = pod.ok_or_else(|| {
        failed(format!(
            "interface {ifname:?} does not exist in netns {}",
            pod_ns.path().display()
        ))
    })?;
    if pod.link != Some(host.index) {
        return Err(failed(format!(
            "interface {ifname:?} in the pod is not the peer of host veth {host_name}"
        )));
    }
    if !pod.admin_up {
        return Err(failed(format!("interface {ifname:?} in the pod is down")));
    }
    let pod_pos = prev
        .interfaces
        .iter()
        .position(|i| i.sandbox.is_some() && i.name == ifname);
    if let Some(p) = pod_pos
        && let (Some(want), Some(have)) = (&prev.interfaces[p].mac, pod.mac)
        && !mac_eq(want, &have)
    {
        return Err(failed(format!(
            "interface {ifname:?} has MAC {have}, prevResult says {want}"
        )));
    }
    for ip in &prev.ips {
        if ip.interface.is_some() && ip.interface != pod_pos {
            continue;
        }
        let there = addrs
            .iter()
            .any(|a| a.addr == ip.address.ip() && a.prefix_len == ip.address.prefix());
        if !there {
            return Err(failed(format!(
                "interface {ifname:?} does not have address {}",
                ip.address
            )));
        }
    }
    for r in &prev.routes {
        let dst = canonical(r.dst);
        let there = routes.iter().any(|k| {
            canonical(k.dst) == dst
                && r.gw.is_none_or(|gw| k.gateway == Some(gw))
                && r.table.is_none_or(|t| k.table == t)
        });
        if !there {
            let via = r.gw.map(|g| format!(" via {g}")).unwrap_or_default();
            return Err(failed(format!(
                "route {}{via} is missing in netns {}",
                r.dst,
                pod_ns.path().display()
            )));
        }
    }
    Ok(())
}

/// The routes of the pod: for each family with a gateway in `ips`, the default route via it
/// when `default_route` and `ipam_routes` has no default route of that family; then every
/// route of `ipam_routes` (without `gw`: via its family's gateway, or on-link when there is
/// none). Routes of a family the pod has no address in cannot work and are left out.
///
/// Returns the kernel requests (oif is set by [`configure_pod`]) and the result's routes
/// (IPAM's as given, plus the default routes added here).
pub fn pod_routes(
    ips: &[IpConfig],
    ipam_routes: &[Route],
    default_route: bool,
) -> (Vec<RouteSpec>, Vec<Route>) {
    let gateway = |v4: bool| {
        ips.iter()
            .filter(|c| c.address.is_ipv4() == v4)
            .find_map(|c| c.gateway)
    };
    let has_family = |v4: bool| ips.iter().any(|c| c.address.is_ipv4() == v4);
    let mut specs = Vec::new();
    let mut result = Vec::new();
    for v4 in [true, false] {
        let has_default = ipam_routes
            .iter()
            .any(|r| r.dst.is_ipv4() == v4 && r.dst.prefix() == 0);
        if let Some(gw) = gateway(v4).filter(|_| default_route && !has_default) {
            let spec = RouteSpec {
                protocol: POD_ROUTE_PROTO,
                ..RouteSpec::default_via(gw)
            };
            result.push(Route::new(spec.dst, Some(gw)));
            specs.push(spec);
        }
    }
    for r in ipam_routes.iter().filter(|r| has_family(r.dst.is_ipv4())) {
        let mut spec = RouteSpec::new(canonical(r.dst));
        spec.gateway = r.gw.or_else(|| gateway(r.dst.is_ipv4()));
        spec.protocol = POD_ROUTE_PROTO;
        spec.metric = r.priority;
        spec.mtu = r.mtu;
        spec.scope = r.scope;
        if let Some(t) = r.table {
            spec.table = t;
        }
        specs.push(spec);
        result.push(r.clone());
    }
    (specs, result)
}

/// `dst` reduced to its network address (`10.1.0.5/24` → `10.1.0.0/24`).
fn canonical(dst: IpNetwork) -> IpNetwork {
    IpNetwork::new(dst.network(), dst.prefix()).unwrap_or(dst)
}

fn mac_eq(text: &str, mac: &MacAddr) -> bool {
    text.parse::<MacAddr>().is_ok_and(|m| m == *mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ifname_is_stable_and_shaped() {
        let a = host_ifname("abc123", "eth0");
        assert_eq!(a.len(), 15);
        assert!(is_host_ifname(&a), "{a}");
        assert_eq!(a, host_ifname("abc123", "eth0"));
        assert_ne!(a, host_ifname("abc123", "eth1"));
        assert_ne!(a, host_ifname("abc12", "3eth0"));
        // Pinned: a changed hash would orphan every existing attachment.
        assert_eq!(host_ifname("c1", "eth0"), "tw3a1b67a6af217");
        assert_eq!(host_ifname("c2", "eth0"), "twc2534c44b1b58");
        let names: HashSet<String> = (0..2000)
            .map(|i| host_ifname(&format!("container-{i}"), "eth0"))
            .collect();
        assert_eq!(names.len(), 2000);
    }

    #[test]
    fn host_ifname_shape_check() {
        assert!(is_host_ifname("tw0123456789abc"));
        for bad in [
            "tw0123456789ab",
            "tw0123456789abcd",
            "tw0123456789abC",
            "tx0123456789abc",
            "twg123456789abc",
            "cni0",
        ] {
            assert!(!is_host_ifname(bad), "{bad}");
        }
    }

    fn ipc(addr: &str, gw: Option<&str>) -> IpConfig {
        IpConfig {
            address: addr.parse().unwrap(),
            gateway: gw.map(|g| g.parse().unwrap()),
            interface: Some(2),
        }
    }

    #[test]
    fn pod_routes_default_and_ipam() {
        let ips = [
            ipc("10.1.0.5/24", Some("10.1.0.1")),
            ipc("fd00::5/64", Some("fd00::1")),
        ];
        let ipam = [
            Route::new("10.0.0.0/8".parse().unwrap(), None),
            Route::new(
                "172.16.0.0/12".parse().unwrap(),
                Some("10.1.0.254".parse().unwrap()),
            ),
        ];
        let (specs, result) = pod_routes(&ips, &ipam, true);
        let got: Vec<(String, Option<String>)> = specs
            .iter()
            .map(|s| (s.dst.to_string(), s.gateway.map(|g| g.to_string())))
            .collect();
        let want = [
            ("0.0.0.0/0", Some("10.1.0.1")),
            ("::/0", Some("fd00::1")),
            ("10.0.0.0/8", Some("10.1.0.1")),
            ("172.16.0.0/12", Some("10.1.0.254")),
        ];
        let want: Vec<(String, Option<String>)> = want
            .iter()
            .map(|(d, g)| (d.to_string(), g.map(str::to_string)))
            .collect();
        assert_eq!(got, want);
        assert!(specs.iter().all(|s| s.protocol == POD_ROUTE_PROTO));
        assert_eq!(result.len(), 4);
        assert_eq!(result[2], ipam[0], "IPAM routes are reported as given");
    }

    #[test]
    fn pod_routes_no_duplicate_default_and_no_foreign_family() {
        let ips = [ipc("10.1.0.5/24", Some("10.1.0.1"))];
        let ipam = [
            Route::new("0.0.0.0/0".parse().unwrap(), None),
            Route::new("fd00::/8".parse().unwrap(), None),
        ];
        let (specs, result) = pod_routes(&ips, &ipam, true);
        assert_eq!(specs.len(), 1, "{specs:?}");
        assert_eq!(specs[0].gateway, Some("10.1.0.1".parse().unwrap()));
        assert_eq!(result, vec![ipam[0].clone()]);
        let (specs, _) = pod_routes(&ips, &[], false);
        assert!(specs.is_empty());
        let (specs, _) = pod_routes(&[ipc("10.1.0.5/24", None)], &ipam[..1], true);
        assert_eq!(specs[0].gateway, None, "on-link without a gateway");
    }

    #[test]
    fn random_mac_is_local_unicast() {
        let a = random_mac();
        let b = random_mac();
        assert_ne!(a, b);
        for m in [a, b] {
            assert_eq!(m.0[0] & 0x03, 0x02, "{m}");
        }
    }
}
