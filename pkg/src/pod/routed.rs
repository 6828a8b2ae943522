//! The routed pod side (Calico's data plane without a bridge): the pod holds its addresses as
//! `/32` (`/128`) and reaches everything through one fixed, on-link gateway; the host end of
//! its veth has no address, answers for that gateway with its MAC, and the node routes the pod's
//! addresses to it with one host route each.
//!
//! - Pod: the addresses with DAD off; `169.254.1.1 dev <ifname> scope link` and the default
//!   route via 169.254.1.1; for IPv6 the default route via the host end's link-local address
//!   [`GATEWAY6`]; a permanent neighbour entry for each gateway → [`HOST_MAC`], so the pod
//!   reaches its gateway at once, without ARP/NDP, proxy ARP's delay, or any route on the node.
//! - Host end: MAC [`HOST_MAC`], no address, `proxy_arp=1`, `proxy_delay=0`, `forwarding=1`;
//!   for IPv6 `proxy_ndp=1`, `forwarding=1` and DAD off (its link-local gateway is usable at
//!   once).
//! - Node: `<pod IP>/32 dev <host end> scope link proto 116`. A route for that IP on another
//!   interface (a stale pod's) is replaced, and said so. DEL needs nothing here: the kernel
//!   drops the route with the host end.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::cni::types::{CniResult, Interface, IpConfig, Route};
use crate::error::{Error, Result, code};
use crate::kernel::netlink::{
    AddrOptions, Batch, Family, Link, LinkChange, MacAddr, NeighbourSpec, Netlink, RouteFilter,
    RouteSpec, TWILL_PROTO, inet_conf, nud, rt_scope, rt_table,
};
use crate::kernel::netns::Netns;
use crate::kernel::sysctl;
use crate::network::{Network, PluginKeys};
use crate::node::peers::ViewSource;
use crate::pod::veth::{self, HostEnd, HostSpec, Owner, POD_ROUTE_PROTO, PodEnd};

/// MAC of every routed host end (Calico's): the pods' gateways resolve to it.
pub const HOST_MAC: MacAddr = MacAddr([0xee; 6]);
/// The pods' IPv4 gateway: link-local, never on any network, answered by the host end.
pub const GATEWAY4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The pods' IPv6 gateway: the link-local address the kernel derives from [`HOST_MAC`]
/// (EUI-64) on the host end.
pub const GATEWAY6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0xecee, 0xeeff, 0xfeee, 0xeeee);

/// The routed host end ([`veth::create_with`]): named with `prefix`, no master, [`HOST_MAC`].
pub fn host_spec(prefix: &str) -> HostSpec<'_> {
    HostSpec {
        prefix,
        master: None,
        mac: Some(HOST_MAC),
        port: None,
        ask_forwarding: true,
    }
}

/// Whether `addrs` hold IPv4, IPv6 addresses (the families [`setup_host`] prepares).
pub fn families(addrs: &[IpNetwork]) -> (bool, bool) {
    (
        addrs.iter().any(IpNetwork::is_ipv4),
        addrs.iter().any(IpNetwork::is_ipv6),
    )
}

/// The gateway of `ip`'s family.
pub fn gateway_of(ip: &IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(GATEWAY4),
        IpAddr::V6(_) => IpAddr::V6(GATEWAY6),
    }
}

/// IPAM's addresses as the routed pod holds them: each a host address (`/32`, `/128`), with
/// its family's gateway, on interface 1 of the result (the pod's; 0 is the host veth).
pub fn pod_ips(ipam: &[IpConfig]) -> Vec<IpConfig> {
    ipam.iter()
        .map(|c| IpConfig {
            address: host_net(c.address.ip()),
            gateway: Some(gateway_of(&c.address.ip())),
            interface: Some(1),
        })
        .collect()
}

/// `ip` as a host network (`/32` or `/128`).
pub fn host_net(ip: IpAddr) -> IpNetwork {
    let prefix = if ip.is_ipv4() { 32 } else { 128 };
    // A full-length prefix is always valid.
    IpNetwork::new(ip, prefix).unwrap_or_else(|_| IpNetwork::from(ip))
}

/// The pod's routes for its families (`ips`): the on-link route to [`GATEWAY4`] (IPv4), the
/// default route via the family's gateway unless `ipam_routes` has one, then every IPAM
/// route via its own `gw` or the family's gateway. Returns the kernel requests (their `oif` is
/// set by [`configure_pod`]) and the result's routes (the gateway's on-link route is not one).
pub fn pod_routes(ips: &[IpConfig], ipam_routes: &[Route]) -> (Vec<RouteSpec>, Vec<Route>) {
    let mut specs = Vec::new();
    let mut result = Vec::new();
    for v4 in [true, false] {
        let Some(ip) = ips.iter().find(|c| c.address.is_ipv4() == v4) else {
            continue;
        };
        let gw = gateway_of(&ip.address.ip());
        if v4 {
            specs.push(RouteSpec {
                protocol: POD_ROUTE_PROTO,
                scope: Some(rt_scope::LINK),
                ..RouteSpec::new(host_net(gw))
            });
        }
        let has_default = ipam_routes
            .iter()
            .any(|r| r.dst.is_ipv4() == v4 && r.dst.prefix() == 0);
        if !has_default {
            specs.push(RouteSpec {
                protocol: POD_ROUTE_PROTO,
                ..RouteSpec::default_via(gw)
            });
            result.push(Route::new(specs[specs.len() - 1].dst, Some(gw)));
        }
        for r in ipam_routes.iter().filter(|r| r.dst.is_ipv4() == v4) {
            let dst = IpNetwork::new(r.dst.network(), r.dst.prefix()).unwrap_or(r.dst);
            specs.push(RouteSpec {
                gateway: Some(r.gw.unwrap_or(gw)),
                protocol: POD_ROUTE_PROTO,
                metric: r.priority,
                mtu: r.mtu,
                table: r.table.unwrap_or(rt_table::MAIN),
                ..RouteSpec::new(dst)
            });
            result.push(r.clone());
        }
    }
    (specs, result)
}

/// Sets up the host end `host` on `node` (the node netns, which must be the calling
/// thread's: IPv6 settings are sysctls): `proxy_arp=1`, `forwarding=1` and `proxy_delay=0`
/// for IPv4 (`v4`; one batch of two requests); DAD off, `proxy_ndp=1` and `forwarding=1` for
/// IPv6 (`v6`); and the node's forwarding for those families. Done before the pod end comes
/// up, so the host end's link-local address is born usable.
pub fn setup_host(node: &mut Netlink, host: &HostEnd, v4: bool, v6: bool) -> Result<()> {
    if v4 {
        let mut b = Batch::new();
        host_ipv4_settings(&mut b, host_index(node, host)?);
        node.send_batch(b)?;
    }
    setup_host_ipv6(host, v6)?;
    crate::pod::bridge::enable_forwarding(v4, v6)
}

/// The IPv6 part of [`setup_host`] (sysctls of the calling thread's netns), when `v6`.
fn setup_host_ipv6(host: &HostEnd, v6: bool) -> Result<()> {
    if v6 {
        // IPv6 per-device settings cannot be set over netlink.
        for (key, value) in host_sysctls(&host.name, false, true) {
            sysctl::set(&key, value)?;
        }
    }
    Ok(())
}

/// The IPv4 settings of routed host end `index` ([`setup_host`]), added to `b`.
fn host_ipv4_settings(b: &mut Batch, index: u32) {
    b.change_link(
        index,
        &LinkChange {
            inet_conf: &[(inet_conf::FORWARDING, 1), (inet_conf::PROXY_ARP, 1)],
            ..Default::default()
        },
    );
    b.set_arp_proxy_delay(index, 0);
}

/// The ifindex of `host`: as echoed at creation, else looked up by name.
fn host_index(node: &mut Netlink, host: &HostEnd) -> Result<u32> {
    match host.index {
        Some(i) => Ok(i),
        None => node
            .link_by_name(&host.name)?
            .map(|l| l.index)
            .ok_or_else(|| {
                Error::new(
                    code::NETLINK,
                    format!(
                        "host veth {} vanished right after it was created",
                        host.name
                    ),
                )
            }),
    }
}

/// The sysctls of routed host end `name` for the families a pod has, with their values (what
/// [`setup_host`] sets; IPv4 ones over netlink, IPv6 ones as sysctls).
fn host_sysctls(name: &str, v4: bool, v6: bool) -> Vec<(String, &'static str)> {
    let mut out = Vec::with_capacity(6);
    if v4 {
        out.push((format!("net/ipv4/conf/{name}/forwarding"), "1"));
        out.push((format!("net/ipv4/conf/{name}/proxy_arp"), "1"));
        out.push((format!("net/ipv4/neigh/{name}/proxy_delay"), "0"));
    }
    if v6 {
        out.push((format!("net/ipv6/conf/{name}/accept_dad"), "0"));
        out.push((format!("net/ipv6/conf/{name}/proxy_ndp"), "1"));
        out.push((format!("net/ipv6/conf/{name}/forwarding"), "1"));
    }
    out
}

/// How [`configure_pod`] leaves the pod.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodSettings {
    /// `containerSettings.allowIpForwarding`: the pod may forward (its netns's
    /// `net.ipv4.ip_forward` and `net.ipv6.conf.all.forwarding` set to 1).
    pub allow_ip_forwarding: bool,
}

/// Configures the pod end of `host` inside `pod_ns`, in one setns bracket over one socket made
/// there: DAD off, the host addresses `addrs` (`/32`, `/128`), up, `routes` (see
/// [`pod_routes`]), a permanent neighbour entry for each family's gateway → [`HOST_MAC`], and
/// forwarding when `settings` allow it.
pub fn configure_pod(
    pod_ns: &Netns,
    ifname: &str,
    host: &HostEnd,
    addrs: &[IpNetwork],
    routes: &[RouteSpec],
    settings: PodSettings,
) -> Result<PodEnd> {
    pod_ns.run(|| -> Result<PodEnd> {
        let mut nl = Netlink::new()?;
        let index = match host.pod_index {
            Some(i) => i,
            None => {
                nl.link_by_name(ifname)?
                    .ok_or_else(|| {
                        Error::new(
                            code::NETLINK,
                            format!(
                                "interface {ifname} vanished from netns {} right after it was \
                                 created",
                                pod_ns.path().display()
                            ),
                        )
                    })?
                    .index
            }
        };
        let v4 = addrs.iter().any(IpNetwork::is_ipv4);
        let v6 = addrs.iter().any(IpNetwork::is_ipv6);
        if v6 {
            // Harmless when already 0; missing only without IPv6, and then the address fails.
            let _ = sysctl::set(&format!("net/ipv6/conf/{ifname}/disable_ipv6"), "0");
            sysctl::set(&format!("net/ipv6/conf/{ifname}/accept_dad"), "0")?;
        }
        let opts = AddrOptions {
            nodad: true,
            ..Default::default()
        };
        // Everything in one batch, in order: addresses, up, gateway neighbours, routes.
        let mut b = Batch::new();
        for a in addrs {
            b.add_address(index, *a, &opts);
        }
        b.change_link(
            index,
            &LinkChange {
                up: true,
                ..Default::default()
            },
        );
        for (on, gw) in [(v4, IpAddr::V4(GATEWAY4)), (v6, IpAddr::V6(GATEWAY6))] {
            if on {
                b.replace_neighbour(&NeighbourSpec::permanent(index, gw, HOST_MAC));
            }
        }
        for r in routes {
            let mut r = r.clone();
            r.oif = Some(index);
            b.append_route(&r);
        }
        nl.send_batch(b)?;
        if settings.allow_ip_forwarding {
            if v4 {
                sysctl::set("net.ipv4.ip_forward", "1")?;
            }
            if v6 {
                sysctl::set("net.ipv6.conf.all.forwarding", "1")?;
            }
        }
        Ok(PodEnd {
            index,
            mac: Some(host.pod_mac),
            peer_index: host.index,
        })
    })?
}

/// ADD's pod part of a routed attachment whose veth `host` is made and whose addresses `ipam`
/// are allocated: the host end's settings ([`setup_host`]), the pod end ([`configure_pod`])
/// and one host route per address ([`route_to_pod`]). Returns the CNI result without its DNS
/// (the caller merges the config's), and the lines to say on stderr (stale routes replaced).
///
/// The host end's IPv6 settings and the node's forwarding come first (the host end's
/// link-local address must be born usable); its IPv4 settings go out after the pod side, in
/// one batch with the host routes: nothing reaches the host end before the pod is up, and the
/// ADD returns only once both are in place.
pub fn wire(
    node: &mut Netlink,
    pod_ns: &Netns,
    ifname: &str,
    host: &HostEnd,
    ipam: &CniResult,
    settings: PodSettings,
) -> Result<(CniResult, Vec<String>)> {
    let ips = pod_ips(&ipam.ips);
    let addrs: Vec<IpNetwork> = ips.iter().map(|c| c.address).collect();
    let (v4, v6) = families(&addrs);
    setup_host_ipv6(host, v6)?;
    crate::pod::bridge::enable_forwarding_known(v4, v6, host.ipv4_forwarding, None)?;
    let (routes, result_routes) = pod_routes(&ips, &ipam.routes);
    let pod = configure_pod(pod_ns, ifname, host, &addrs, &routes, settings)?;
    let replaced = finish_host(node, host, v4, &addrs)?;
    let sandbox = pod_ns.path().to_string_lossy().into_owned();
    let result = CniResult {
        interfaces: vec![
            Interface::named(&host.name, Some(HOST_MAC.to_string()), None),
            Interface::named(ifname, pod.mac.map(|m| m.to_string()), Some(sandbox)),
        ],
        ips,
        routes: result_routes,
        ..CniResult::default()
    };
    Ok((result, replaced))
}

/// The host end's IPv4 settings (when `v4`) and the host route of each of `addrs`, in one
/// batch on `node`. A route already there (a stale pod's) makes [`route_to_pod`] handle the
/// routes again, replacing it; its lines for stderr are returned.
fn finish_host(
    node: &mut Netlink,
    host: &HostEnd,
    v4: bool,
    addrs: &[IpNetwork],
) -> Result<Vec<String>> {
    let index = host_index(node, host)?;
    let mut b = Batch::new();
    if v4 {
        host_ipv4_settings(&mut b, index);
    }
    for a in addrs {
        b.add_route(&host_route(index, *a));
    }
    match node.send_batch(b) {
        Ok(()) => Ok(Vec::new()),
        Err(e) if e.is_exists() => route_to_pod(node, host, addrs),
        Err(e) => Err(e.into()),
    }
}

/// `<addr> dev <host end> scope link proto 116`: the node's route to a routed pod address.
fn host_route(host_index: u32, addr: IpNetwork) -> RouteSpec {
    RouteSpec {
        oif: Some(host_index),
        scope: Some(rt_scope::LINK),
        ..RouteSpec::new(addr)
    }
}

/// Routes each of `addrs` (host addresses) to the host end `host` in the node netns:
/// `<ip>/32 dev <host end> scope link proto 116`, one request each. A route for that address
/// already there (a stale pod's, on another interface) is replaced; returns one line per
/// replaced route, for stderr.
pub fn route_to_pod(
    node: &mut Netlink,
    host: &HostEnd,
    addrs: &[IpNetwork],
) -> Result<Vec<String>> {
    let host_index = host_index(node, host)?;
    let mut replaced = Vec::new();
    for a in addrs {
        let spec = host_route(host_index, *a);
        match node.add_route(&spec) {
            Ok(()) => continue,
            Err(e) if e.is_exists() => {}
            Err(e) => return Err(e.into()),
        }
        let filter = RouteFilter {
            family: Some(Family::of(&a.ip())),
            table: Some(rt_table::MAIN),
            ..Default::default()
        };
        let names = |nl: &mut Netlink, oif: Option<u32>| -> Result<String> {
            Ok(match oif {
                Some(i) => nl
                    .link_by_index(i)?
                    .map_or_else(|| format!("ifindex {i}"), |l| l.name),
                None => "no interface".into(),
            })
        };
        let old: Vec<_> = node
            .routes(&filter)?
            .into_iter()
            .filter(|r| r.dst == *a)
            .collect();
        node.replace_route(&spec)?;
        for r in old.iter().filter(|r| r.oif != Some(host_index)) {
            let dev = names(node, r.oif)?;
            replaced.push(format!(
                "replaced the route {} dev {dev} (proto {}) with one to this pod's host veth: \
                 a stale pod held its address",
                r.dst, r.protocol
            ));
        }
    }
    Ok(replaced)
}

/// DEL's part on the node: deletes the host end `owner` owns (its pod end and host routes go
/// with it). It is looked up among the names with `prefix` ([`veth::find_with`]); when none
/// carries the mark there (`hostVethPrefix` changed since ADD, or it is not a valid prefix), a
/// link dump finds any link carrying it. Failing that, the unmarked pair an ADD killed before
/// marking it is found through the pod's netns at `pod_netns` ([`veth::delete_unmarked_in`]).
/// Ok(false) when there is none.
pub fn delete_host(
    node: &mut Netlink,
    owner: &Owner<'_>,
    prefix: &str,
    pod_netns: Option<&std::path::Path>,
) -> Result<bool> {
    if veth::validate_prefix(prefix).is_ok() && veth::delete_with(node, owner, prefix)? {
        return Ok(true);
    }
    let mark = owner.mark();
    let found = node
        .links()?
        .into_iter()
        .find(|l| l.alias.as_deref() == Some(mark.as_str()));
    let Some(link) = found else {
        return veth::delete_unmarked_in(node, owner, prefix, pod_netns);
    };
    match node.delete_link(link.index) {
        Ok(()) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// CHECK of one routed attachment against its `prev` result; code 105 naming the first
/// difference. On the node: the host end carrying `owner`'s mark (among the names with
/// `prefix`) is a veth without a master, with MAC [`HOST_MAC`], no global address, the
/// sysctls [`setup_host`] sets, and each of `prev`'s addresses is routed to it by twill. In the pod: the peer
/// end is up with every address of `prev` as a host address, every route of `prev`, and the
/// permanent neighbour entry of each family's gateway.
pub fn check(
    node: &mut Netlink,
    pod_ns: &Netns,
    owner: &Owner<'_>,
    prefix: &str,
    prev: &CniResult,
) -> Result<()> {
    let failed = |msg: String| Error::new(code::CHECK_FAILED, msg);
    let ifname = owner.ifname;
    let host = veth::find_with(node, owner, prefix)?.ok_or_else(|| {
        failed(format!(
            "the host veth of container {} ifname {ifname} does not exist (no link carries its \
             mark \"{}\")",
            owner.container_id,
            owner.mark()
        ))
    })?;
    check_host(node, &host)?;
    let addrs: Vec<IpNetwork> = prev.ips.iter().map(|c| c.address).collect();
    let (v4, v6) = (
        addrs.iter().any(IpNetwork::is_ipv4),
        addrs.iter().any(IpNetwork::is_ipv6),
    );
    for (key, want) in host_sysctls(&host.name, v4, v6) {
        let have = sysctl::get(&key)?;
        if have != want {
            return Err(failed(format!("{key} is {have} on the node, not {want}")));
        }
    }
    let routes = node.routes(&RouteFilter {
        table: Some(rt_table::MAIN),
        oif: Some(host.index),
        ..Default::default()
    })?;
    for a in &addrs {
        let want = host_net(a.ip());
        if !routes
            .iter()
            .any(|r| r.dst == want && r.protocol == TWILL_PROTO && r.kind == 1)
        {
            return Err(failed(format!(
                "the node has no route {want} dev {} proto {TWILL_PROTO}",
                host.name
            )));
        }
    }

    let (pod, pod_addrs, pod_routes, neighbours) = pod_ns.run(|| -> Result<_> {
        let mut pnl = Netlink::new()?;
        let Some(pod) = pnl.link_by_name(ifname)? else {
            return Ok((None, vec![], vec![], vec![]));
        };
        let a = pnl.addresses(Some(pod.index), None)?;
        let r = pnl.routes(&RouteFilter::default())?;
        let n = pnl.neighbours(Some(pod.index), None, false)?;
        Ok((Some(pod), a, r, n))
    })??;
    let pod = pod.ok_or_else(|| {
        failed(format!(
            "interface {ifname} does not exist in netns {}",
            pod_ns.path().display()
        ))
    })?;
    if pod.link != Some(host.index) {
        return Err(failed(format!(
            "interface {ifname} in the pod is not the peer of host veth {}",
            host.name
        )));
    }
    if !pod.admin_up {
        return Err(failed(format!("interface {ifname} in the pod is down")));
    }
    for a in &addrs {
        let want = host_net(a.ip());
        if !pod_addrs
            .iter()
            .any(|x| x.addr == want.ip() && x.prefix_len == want.prefix())
        {
            return Err(failed(format!(
                "interface {ifname} does not have address {want}"
            )));
        }
        let gw = gateway_of(&a.ip());
        let resolved = neighbours
            .iter()
            .any(|n| n.ip == Some(gw) && n.mac == Some(HOST_MAC) && n.state & nud::PERMANENT != 0);
        if !resolved {
            return Err(failed(format!(
                "the pod has no permanent neighbour entry {gw} lladdr {HOST_MAC} on {ifname}"
            )));
        }
    }
    for r in &prev.routes {
        let dst = IpNetwork::new(r.dst.network(), r.dst.prefix()).unwrap_or(r.dst);
        let there = pod_routes.iter().any(|k| {
            k.dst == dst
                && k.oif == Some(pod.index)
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

/// The host end as a routed one must be: a veth, no master, MAC [`HOST_MAC`].
fn check_host(node: &mut Netlink, host: &Link) -> Result<()> {
    let failed = |msg: String| Error::new(code::CHECK_FAILED, msg);
    let name = &host.name;
    if host.kind.as_deref() != Some("veth") {
        return Err(failed(format!(
            "host interface {name} is a {}, not a veth",
            host.kind.as_deref().unwrap_or("device of no kind")
        )));
    }
    if let Some(m) = host.master {
        return Err(failed(format!(
            "host veth {name} is enslaved to ifindex {m}: a routed veth has no master"
        )));
    }
    if host.mac != Some(HOST_MAC) {
        let have = host.mac.map_or_else(|| "none".into(), |m| m.to_string());
        return Err(failed(format!(
            "host veth {name} has MAC {have}, not {HOST_MAC}"
        )));
    }
    let global: Vec<String> = node
        .addresses(Some(host.index), None)?
        .iter()
        .filter(|a| a.scope == rt_scope::UNIVERSE)
        .map(|a| format!("{}/{}", a.addr, a.prefix_len))
        .collect();
    if !global.is_empty() {
        return Err(failed(format!(
            "host veth {name} holds address(es) {}: a routed host veth has none",
            global.join(", ")
        )));
    }
    Ok(())
}

/// `containerSettings` of a routed plugin (Calico's `container_settings` is accepted too).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerSettings {
    /// `allowIpForwarding` (`allow_ip_forwarding`): the pod may forward (default false).
    #[serde(
        default,
        alias = "allow_ip_forwarding",
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_ip_forwarding: Option<bool>,
}

/// The pod keys every routed plugin (routed-veth, ipip) reads, flattened into its config:
/// the host veth prefix, the pod settings, and the Calico keys refused rather than ignored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodKeys {
    /// `hostVethPrefix`: the start of every host veth name (1 to 7 characters, a hash fills
    /// the rest; the plugin gives the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_veth_prefix: Option<String>,
    /// `containerSettings` (or Calico's `container_settings`).
    #[serde(
        default,
        alias = "container_settings",
        skip_serializing_if = "Option::is_none"
    )]
    pub container_settings: Option<ContainerSettings>,
    /// Calico's `policy`: refused (twill enforces no network policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Value>,
    /// Calico's `feature_control`: refused when it turns a feature on.
    #[serde(
        default,
        rename = "feature_control",
        skip_serializing_if = "Option::is_none"
    )]
    pub feature_control: Option<Map<String, Value>>,
    /// Calico's `num_queues`: refused unless 1.
    #[serde(
        default,
        rename = "num_queues",
        skip_serializing_if = "Option::is_none"
    )]
    pub num_queues: Option<i64>,
}

/// The names of [`PodKeys`] as spelled in a config (for the miscased-key check).
pub const POD_KEY_NAMES: &[&str] = &[
    "hostVethPrefix",
    "containerSettings",
    "container_settings",
    "policy",
    "feature_control",
    "num_queues",
];

/// [`PodKeys`] with the defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodConf {
    /// Prefix of the host veth names.
    pub host_veth_prefix: String,
    /// How the pod is left (`containerSettings`).
    pub settings: PodSettings,
}

impl PodKeys {
    /// The keys with `default_prefix` for a missing `hostVethPrefix`. With `validate` (ADD,
    /// CHECK, STATUS) code 7 naming the key for a bad prefix or a Calico key `plugin` does not
    /// implement (see [`refuse_unsupported`]); DEL and GC pass `false` so that they still
    /// release what such a config may have left.
    pub fn resolve(&self, plugin: &str, default_prefix: &str, validate: bool) -> Result<PodConf> {
        let host_veth_prefix = self
            .host_veth_prefix
            .clone()
            .unwrap_or_else(|| default_prefix.into());
        if validate {
            veth::validate_prefix(&host_veth_prefix)
                .map_err(|e| e.context("\"hostVethPrefix\""))?;
            refuse_unsupported(self, plugin)?;
        }
        let allow_ip_forwarding = self
            .container_settings
            .as_ref()
            .and_then(|c| c.allow_ip_forwarding)
            .unwrap_or(false);
        Ok(PodConf {
            host_veth_prefix,
            settings: PodSettings {
                allow_ip_forwarding,
            },
        })
    }
}

/// Code 7 for the Calico keys a routed plugin (`plugin`) does not implement, naming the key,
/// so that a config brought from Calico never loses them silently: `policy` (network policy),
/// `feature_control` turning a feature on, `num_queues` other than 1.
pub fn refuse_unsupported(k: &PodKeys, plugin: &str) -> Result<()> {
    if k.policy.is_some() {
        return Err(Error::invalid_config(format!(
            "\"policy\" is not supported by {plugin}: twill enforces no network policy; \
             remove \"policy\" (and run a policy engine, e.g. a network-policy controller, \
             separately)"
        )));
    }
    if let Some((name, _)) = k
        .feature_control
        .iter()
        .flatten()
        .find(|(_, v)| v.as_bool() != Some(false))
    {
        return Err(Error::invalid_config(format!(
            "\"feature_control\": \"{name}\" is not supported by {plugin}; remove it or set \
             it to false"
        )));
    }
    if let Some(n) = k.num_queues.filter(|&n| n != 1) {
        return Err(Error::invalid_config(format!(
            "\"num_queues\": {n} is not supported by {plugin}: its veths have one queue per \
             end; remove \"num_queues\" or set it to 1"
        )));
    }
    Ok(())
}

/// What a routed network needs of the shared config before ADD (CHECK, STATUS) touches
/// anything: code 7 for a layer-2 only `"ipam": {}` (a routed pod is nothing but its
/// addresses); and without `peers` or `peersFile` an empty cluster view rather than none, so
/// the one reconcile still blackholes the node's own blocks.
pub fn settle_network<K: PluginKeys>(net: &mut Network<K>) -> Result<()> {
    if net.l2_only {
        return Err(Error::invalid_config(
            "\"ipam\": {} gives the pod no address, and a routed pod is nothing but its \
             addresses: configure an IPAM (or drop \"ipam\" to derive host-local from the \
             subnet file)",
        ));
    }
    if net.view.is_none() {
        net.view = Some(ViewSource::Inline(Value::Array(Vec::new())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipc(addr: &str) -> IpConfig {
        IpConfig {
            address: addr.parse().unwrap(),
            gateway: None,
            interface: None,
        }
    }

    #[test]
    fn gateway6_is_the_eui64_link_local_of_the_host_mac() {
        let m = HOST_MAC.0;
        let eui = [m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]];
        let mut o = [0u8; 16];
        o[0] = 0xfe;
        o[1] = 0x80;
        o[8..].copy_from_slice(&eui);
        assert_eq!(GATEWAY6, Ipv6Addr::from(o));
        assert_eq!(GATEWAY6.to_string(), "fe80::ecee:eeff:feee:eeee");
    }

    #[test]
    fn pod_ips_are_host_addresses_via_the_fixed_gateways() {
        let ips = pod_ips(&[ipc("10.244.1.5/24"), ipc("fd00:1::5/64")]);
        let got: Vec<(String, String)> = ips
            .iter()
            .map(|c| (c.address.to_string(), c.gateway.unwrap().to_string()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("10.244.1.5/32".into(), "169.254.1.1".into()),
                ("fd00:1::5/128".into(), "fe80::ecee:eeff:feee:eeee".into())
            ]
        );
        assert!(ips.iter().all(|c| c.interface == Some(1)));
    }

    #[test]
    fn pod_routes_link_route_first_then_defaults_and_ipam_routes_via_the_gateway() {
        let ips = pod_ips(&[ipc("10.244.1.5/24"), ipc("fd00:1::5/64")]);
        let ipam = [Route::new("10.244.0.0/16".parse().unwrap(), None)];
        let (specs, result) = pod_routes(&ips, &ipam);
        let got: Vec<(String, Option<String>, Option<u8>)> = specs
            .iter()
            .map(|s| (s.dst.to_string(), s.gateway.map(|g| g.to_string()), s.scope))
            .collect();
        let gw4 = Some("169.254.1.1".to_string());
        assert_eq!(
            got,
            vec![
                ("169.254.1.1/32".into(), None, Some(rt_scope::LINK)),
                ("0.0.0.0/0".into(), gw4.clone(), None),
                ("10.244.0.0/16".into(), gw4, None),
                ("::/0".into(), Some(GATEWAY6.to_string()), None),
            ]
        );
        assert_eq!(result.len(), 3, "{result:?}");
        // An IPAM default route is not doubled; an IPv4-only pod gets no IPv6 routes.
        let ipam = [Route::new("0.0.0.0/0".parse().unwrap(), None)];
        let (specs, result) = pod_routes(&ips[..1], &ipam);
        assert_eq!(specs.len(), 2);
        assert_eq!(result, ipam.to_vec());
    }
}
