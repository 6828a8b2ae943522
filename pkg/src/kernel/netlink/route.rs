//! Routes: list (family/table/protocol/oif filter), add, replace, delete.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;
use netlink_packet_core::{NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::route::RouteMetric;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::attr::{self, Attrs};
use super::error::{NetlinkError, NlResult};
use super::{Family, Netlink};

/// The route protocol number (rtm_protocol) twill stamps on the routes it owns, so they can be
/// listed and reconciled without touching anyone else's: 116 (ASCII 't'). It is not in
/// iproute2's /etc/iproute2/rt_protos nor among the kernel's RTPROT_* values, and not used by
/// the common CNI/routing daemons (bird 12, zebra 11, Calico 80, ...). `ip route` shows it as
/// `proto 116`.
pub const TWILL_PROTO: u8 = 116;

/// Routing table ids.
pub mod rt_table {
    /// RT_TABLE_UNSPEC.
    pub const UNSPEC: u32 = 0;
    /// RT_TABLE_DEFAULT.
    pub const DEFAULT: u32 = 253;
    /// RT_TABLE_MAIN: where `ip route` reads and writes by default.
    pub const MAIN: u32 = 254;
    /// RT_TABLE_LOCAL: local and broadcast addresses (kernel-managed).
    pub const LOCAL: u32 = 255;
}

/// Route scopes (RT_SCOPE_*).
pub mod rt_scope {
    /// Global: reached through a gateway (or any unicast route by default).
    pub const UNIVERSE: u8 = 0;
    /// Site-local (IPv6 only, rarely used).
    pub const SITE: u8 = 200;
    /// Directly attached on a link: no gateway.
    pub const LINK: u8 = 253;
    /// A local address of this host.
    pub const HOST: u8 = 254;
    /// Nowhere: in a delete request, matches any scope.
    pub const NOWHERE: u8 = 255;
}

const RTM_NEWROUTE: u16 = 24;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_PREFSRC: u16 = 7;
const RTA_METRICS: u16 = 8;
const RTA_TABLE: u16 = 15;
const RTAX_MTU: u16 = 2;
const RTNH_F_ONLINK: u32 = 4;
const RTMSG_LEN: usize = 12;

/// A route to add, replace or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// Destination; `0.0.0.0/0` or `::/0` for the default route.
    pub dst: IpNetwork,
    /// Next hop.
    pub gateway: Option<IpAddr>,
    /// Output interface index.
    pub oif: Option<u32>,
    /// Preferred source address (RTA_PREFSRC).
    pub src: Option<IpAddr>,
    /// Table id (default [`rt_table::MAIN`]).
    pub table: u32,
    /// rtm_protocol (default [`TWILL_PROTO`]). In a delete, 0 matches any protocol, any other
    /// value only routes of that protocol.
    pub protocol: u8,
    /// Scope; when None: link for an IPv4 route without gateway, else universe
    /// (in a delete: any scope).
    pub scope: Option<u8>,
    /// Metric / priority (RTA_PRIORITY).
    pub metric: Option<u32>,
    /// Path MTU (RTAX_MTU).
    pub mtu: Option<u32>,
    /// Next hop is on the link even though no address covers it (RTNH_F_ONLINK).
    pub onlink: bool,
}

impl RouteSpec {
    /// A main-table, twill-protocol unicast route to `dst` with nothing else set.
    pub fn new(dst: IpNetwork) -> RouteSpec {
        RouteSpec {
            dst,
            gateway: None,
            oif: None,
            src: None,
            table: rt_table::MAIN,
            protocol: TWILL_PROTO,
            scope: None,
            metric: None,
            mtu: None,
            onlink: false,
        }
    }

    /// The default route of `family` (0.0.0.0/0 or ::/0) via `gateway`.
    pub fn default_via(gateway: IpAddr) -> RouteSpec {
        let dst = match gateway {
            IpAddr::V4(_) => IpNetwork::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            IpAddr::V6(_) => IpNetwork::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        };
        // A zero prefix is always valid.
        let dst = dst.unwrap_or_else(|_| IpNetwork::from(gateway));
        RouteSpec {
            gateway: Some(gateway),
            ..RouteSpec::new(dst)
        }
    }
}

/// A route as the kernel reports it (RTM_NEWROUTE). Multipath next hops are not decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination (address 0 with prefix 0 for the default route).
    pub dst: IpNetwork,
    /// Next hop.
    pub gateway: Option<IpAddr>,
    /// Output interface index.
    pub oif: Option<u32>,
    /// Preferred source address.
    pub src: Option<IpAddr>,
    /// Table id.
    pub table: u32,
    /// rtm_protocol (2 kernel, 3 boot, 4 static, [`TWILL_PROTO`] ...).
    pub protocol: u8,
    /// Scope (see [`rt_scope`]).
    pub scope: u8,
    /// rtm_type (1 unicast, 2 local, 3 broadcast, 6 blackhole ...).
    pub kind: u8,
    /// Metric / priority.
    pub metric: Option<u32>,
    /// Path MTU.
    pub mtu: Option<u32>,
    /// RTNH_F_ONLINK set.
    pub onlink: bool,
}

/// The documentation address (`192.0.2.1`, `2001:db8::1`, never routed on the Internet) whose
/// route lookup ([`Netlink::route_to`]) finds a family's default route unless a more specific
/// route covers it.
pub fn probe_address(family: Family) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        Family::V6 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
    }
}

impl Route {
    /// The family of the route.
    pub fn family(&self) -> Family {
        Family::of(&self.dst.ip())
    }

    /// A spec matching exactly this route, e.g. to delete it.
    pub fn to_spec(&self) -> RouteSpec {
        RouteSpec {
            dst: self.dst,
            gateway: self.gateway,
            oif: self.oif,
            src: self.src,
            table: self.table,
            protocol: self.protocol,
            scope: Some(self.scope),
            metric: self.metric,
            mtu: None,
            onlink: self.onlink,
        }
    }
}

/// What [`Netlink::routes`] keeps; every `None` field matches anything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteFilter {
    /// Only this family.
    pub family: Option<Family>,
    /// Only this table (e.g. [`rt_table::MAIN`]; None includes the local table).
    pub table: Option<u32>,
    /// Only this rtm_protocol (e.g. [`TWILL_PROTO`]).
    pub protocol: Option<u8>,
    /// Only routes out of this interface.
    pub oif: Option<u32>,
}

impl std::fmt::Display for RouteFilter {
    /// What the filter selects, for people: `IPv4, table 254, protocol 116` (`all` when empty).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(fam) = self.family {
            parts.push(match fam {
                Family::V4 => "IPv4".to_string(),
                Family::V6 => "IPv6".to_string(),
            });
        }
        if let Some(t) = self.table {
            parts.push(format!("table {t}"));
        }
        if let Some(p) = self.protocol {
            parts.push(format!("protocol {p}"));
        }
        if let Some(o) = self.oif {
            parts.push(format!("interface index {o}"));
        }
        if parts.is_empty() {
            return f.write_str("all");
        }
        f.write_str(&parts.join(", "))
    }
}

fn af(ip: &IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

fn check_family(spec: &RouteSpec) -> NlResult<()> {
    let d = spec.dst.ip();
    for other in [spec.gateway, spec.src].into_iter().flatten() {
        if other.is_ipv4() != d.is_ipv4() {
            return Err(NetlinkError::invalid(format!(
                "{other} and destination {} are of different address families",
                spec.dst
            )));
        }
    }
    Ok(())
}

fn route_msg(spec: &RouteSpec, delete: bool) -> RouteMessage {
    let mut m = RouteMessage::default();
    let h = &mut m.header;
    h.address_family = af(&spec.dst.ip());
    h.destination_prefix_length = spec.dst.prefix();
    h.table = if spec.table < 256 {
        spec.table as u8
    } else {
        0
    };
    h.protocol = RouteProtocol::from(spec.protocol);
    let auto_scope = if spec.dst.is_ipv4() && spec.gateway.is_none() && spec.oif.is_some() {
        rt_scope::LINK
    } else {
        rt_scope::UNIVERSE
    };
    let scope = match (spec.scope, delete) {
        (Some(s), _) => s,
        (None, true) => rt_scope::NOWHERE,
        (None, false) => auto_scope,
    };
    h.scope = RouteScope::from(scope);
    h.kind = if delete {
        RouteType::Unspec
    } else {
        RouteType::Unicast
    };
    if spec.onlink {
        h.flags = RouteFlags::Onlink;
    }
    let a = &mut m.attributes;
    if spec.dst.prefix() > 0 {
        a.push(RouteAttribute::Destination(spec.dst.network().into()));
    }
    if let Some(g) = spec.gateway {
        a.push(RouteAttribute::Gateway(g.into()));
    }
    if let Some(o) = spec.oif {
        a.push(RouteAttribute::Oif(o));
    }
    if let Some(s) = spec.src {
        a.push(RouteAttribute::PrefSource(s.into()));
    }
    if let Some(p) = spec.metric {
        a.push(RouteAttribute::Priority(p));
    }
    if let (Some(mtu), false) = (spec.mtu, delete) {
        a.push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(mtu)]));
    }
    a.push(RouteAttribute::Table(spec.table));
    m
}

fn describe(spec: &RouteSpec) -> String {
    let mut s = spec.dst.to_string();
    if let Some(g) = spec.gateway {
        s += &format!(" via {g}");
    }
    if let Some(o) = spec.oif {
        s += &format!(" dev ifindex {o}");
    }
    if spec.table != rt_table::MAIN {
        s += &format!(" table {}", spec.table);
    }
    s
}

/// Decodes an RTM_NEWROUTE payload.
fn parse_route(p: &[u8]) -> Option<Route> {
    if p.len() < RTMSG_LEN {
        return None;
    }
    let v4 = match p[0] as i32 {
        nix::libc::AF_INET => true,
        nix::libc::AF_INET6 => false,
        _ => return None,
    };
    let mut r = Route {
        dst: IpNetwork::new(
            if v4 {
                Ipv4Addr::UNSPECIFIED.into()
            } else {
                Ipv6Addr::UNSPECIFIED.into()
            },
            0,
        )
        .ok()?,
        gateway: None,
        oif: None,
        src: None,
        table: p[4] as u32,
        protocol: p[5],
        scope: p[6],
        kind: p[7],
        metric: None,
        mtu: None,
        onlink: attr::u32_ne(&p[8..12])? & RTNH_F_ONLINK != 0,
    };
    let dst_len = p[1];
    for (ty, v) in Attrs::after(p, RTMSG_LEN) {
        match ty {
            RTA_DST => r.dst = IpNetwork::new(attr::ip(v)?, dst_len).ok()?,
            RTA_OIF => r.oif = attr::u32_ne(v),
            RTA_GATEWAY => r.gateway = attr::ip(v),
            RTA_PRIORITY => r.metric = attr::u32_ne(v),
            RTA_PREFSRC => r.src = attr::ip(v),
            RTA_TABLE => r.table = attr::u32_ne(v).unwrap_or(r.table),
            RTA_METRICS => {
                for (mty, mv) in Attrs::new(v) {
                    if mty == RTAX_MTU {
                        r.mtu = attr::u32_ne(mv);
                    }
                }
            }
            _ => {}
        }
    }
    Some(r)
}

impl super::Batch {
    /// Adds a route ([`Netlink::add_route`]: `is_exists` when it is there). A route of the
    /// wrong family fails the batch when it is sent, without sending anything.
    pub fn add_route(&mut self, spec: &RouteSpec) {
        self.push_route(spec, NLM_F_EXCL, "add");
    }

    /// Adds a route next to any with the same destination ([`Netlink::append_route`]). A
    /// route of the wrong family fails the batch when it is sent, without sending anything.
    pub fn append_route(&mut self, spec: &RouteSpec) {
        self.push_route(spec, NLM_F_APPEND, "append");
    }

    /// Queues the RTM_NEWROUTE of `spec` with NLM_F_CREATE and `flags` (`verb` names it in
    /// errors), or the refusal of a route of the wrong family.
    fn push_route(&mut self, spec: &RouteSpec, flags: u16, verb: &str) {
        let op = format!("{verb} route {}", describe(spec));
        match check_family(spec) {
            Ok(()) => self.push(
                RouteNetlinkMessage::NewRoute(route_msg(spec, false)),
                NLM_F_CREATE | flags,
                op,
            ),
            Err(e) => self.refuse(e.with_op(|| op)),
        }
    }
}

impl Netlink {
    fn new_route(&mut self, spec: &RouteSpec, flags: u16, verb: &str) -> NlResult<()> {
        let op = || format!("{verb} route {}", describe(spec));
        check_family(spec).map_err(|e| e.with_op(op))?;
        self.sock
            .ack(RouteNetlinkMessage::NewRoute(route_msg(spec, false)), flags)
            .map_err(|e| e.with_op(op))
    }

    /// Adds a route; `is_exists` when an identical destination/metric is already there.
    pub fn add_route(&mut self, spec: &RouteSpec) -> NlResult<()> {
        self.new_route(spec, NLM_F_CREATE | NLM_F_EXCL, "add")
    }

    /// Adds a route next to any with the same destination, table and metric (`ip route append`):
    /// a pod's second interface gets its own default route beside the first one's.
    pub fn append_route(&mut self, spec: &RouteSpec) -> NlResult<()> {
        self.new_route(spec, NLM_F_CREATE | NLM_F_APPEND, "append")
    }

    /// Adds a route or replaces the one with the same destination, table and metric.
    pub fn replace_route(&mut self, spec: &RouteSpec) -> NlResult<()> {
        self.new_route(spec, NLM_F_CREATE | NLM_F_REPLACE, "replace")
    }

    /// Adds or replaces the blackhole route to `dst` (main table, [`TWILL_PROTO`], `metric`;
    /// None: the kernel's default): packets to `dst` not matched by a longer route are
    /// dropped on the node instead of following its default route.
    pub fn replace_blackhole_route(&mut self, dst: IpNetwork, metric: Option<u32>) -> NlResult<()> {
        let spec = RouteSpec {
            metric,
            ..RouteSpec::new(dst)
        };
        let op = || format!("replace blackhole route {dst}");
        let mut m = route_msg(&spec, false);
        m.header.kind = RouteType::BlackHole;
        self.sock
            .ack(
                RouteNetlinkMessage::NewRoute(m),
                NLM_F_CREATE | NLM_F_REPLACE,
            )
            .map_err(|e| e.with_op(op))
    }

    /// Deletes twill's blackhole route to `dst` at `metric` in the main table; `is_not_found`
    /// when there is none (a route of another type or owner is never matched).
    pub fn delete_blackhole_route(&mut self, dst: IpNetwork, metric: Option<u32>) -> NlResult<()> {
        let spec = RouteSpec {
            metric,
            ..RouteSpec::new(dst)
        };
        let op = || format!("delete blackhole route {dst}");
        let mut m = route_msg(&spec, true);
        m.header.kind = RouteType::BlackHole;
        self.sock
            .ack(RouteNetlinkMessage::DelRoute(m), 0)
            .map_err(|e| e.with_op(op))
    }

    /// Deletes the route matching `spec` (destination, table; plus gateway, oif, metric and
    /// protocol when set; see [`RouteSpec::protocol`]). `is_not_found` (ESRCH) when none.
    pub fn delete_route(&mut self, spec: &RouteSpec) -> NlResult<()> {
        let op = || format!("delete route {}", describe(spec));
        check_family(spec).map_err(|e| e.with_op(op))?;
        self.sock
            .ack(RouteNetlinkMessage::DelRoute(route_msg(spec, true)), 0)
            .map_err(|e| e.with_op(op))
    }

    /// The FIB entry the node's policy routing chooses for `dst` (RTM_GETROUTE with
    /// RTM_F_FIB_MATCH, 4.13+: the route itself, not a cache entry), in one lookup; Ok(None)
    /// when no route matches (ENETUNREACH, EHOSTUNREACH).
    pub fn route_to(&mut self, dst: IpAddr) -> NlResult<Option<Route>> {
        let mut m = RouteMessage::default();
        m.header.flags = RouteFlags::FibMatch;
        // A lookup names one address: a full-length destination (strict checking insists).
        match dst {
            IpAddr::V4(a) => {
                m.header.address_family = AddressFamily::Inet;
                m.header.destination_prefix_length = 32;
                m.attributes
                    .push(RouteAttribute::Destination(RouteAddress::Inet(a)));
            }
            IpAddr::V6(a) => {
                m.header.address_family = AddressFamily::Inet6;
                m.header.destination_prefix_length = 128;
                m.attributes
                    .push(RouteAttribute::Destination(RouteAddress::Inet6(a)));
            }
        }
        let mut found = None;
        let res = self
            .sock
            .request(RouteNetlinkMessage::GetRoute(m), 0, &mut |ty, p| {
                if ty == RTM_NEWROUTE {
                    found = parse_route(p);
                }
                Ok(())
            });
        match res {
            Ok(()) => Ok(found),
            Err(e)
                if matches!(
                    e.errno(),
                    Some(nix::libc::ENETUNREACH | nix::libc::EHOSTUNREACH)
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e.with_op(|| format!("look up the route to {dst}"))),
        }
    }

    /// Routes matching `filter` (one dump per call; the kernel filters too where it can).
    pub fn routes(&mut self, filter: &RouteFilter) -> NlResult<Vec<Route>> {
        let mut m = RouteMessage::default();
        m.header.address_family = match filter.family {
            Some(Family::V4) => AddressFamily::Inet,
            Some(Family::V6) => AddressFamily::Inet6,
            None => AddressFamily::Unspec,
        };
        if let Some(t) = filter.table {
            m.header.table = if t < 256 { t as u8 } else { 0 };
            m.attributes.push(RouteAttribute::Table(t));
        }
        if let Some(p) = filter.protocol {
            m.header.protocol = RouteProtocol::from(p);
        }
        if let Some(o) = filter.oif {
            m.attributes.push(RouteAttribute::Oif(o));
        }
        let res = self
            .sock
            .dump(RouteNetlinkMessage::GetRoute(m), &mut |ty, p| {
                let r = parse_route(p).filter(|_| ty == RTM_NEWROUTE)?;
                let keep = filter.family.is_none_or(|f| f == r.family())
                    && filter.table.is_none_or(|t| t == r.table)
                    && filter.protocol.is_none_or(|x| x == r.protocol)
                    && filter.oif.is_none_or(|o| Some(o) == r.oif);
                keep.then_some(r)
            });
        match res {
            // A table that does not exist (yet) holds no routes.
            Err(e) if filter.table.is_some() && e.errno() == Some(nix::libc::ENOENT) => Ok(vec![]),
            r => r.map_err(|e| e.with_op(|| format!("list routes ({filter})"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_via_and_scope() {
        let s = RouteSpec::default_via("10.0.0.1".parse().unwrap());
        assert_eq!(s.dst.to_string(), "0.0.0.0/0");
        let m = route_msg(&s, false);
        assert_eq!(u8::from(m.header.scope), rt_scope::UNIVERSE);
        assert!(
            !m.attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Destination(_)))
        );
        let s6 = RouteSpec::default_via("fd00::1".parse().unwrap());
        assert_eq!(s6.dst.to_string(), "::/0");
        let mut l = RouteSpec::new("10.1.0.0/24".parse().unwrap());
        l.oif = Some(3);
        assert_eq!(u8::from(route_msg(&l, false).header.scope), rt_scope::LINK);
        assert_eq!(
            u8::from(route_msg(&l, true).header.scope),
            rt_scope::NOWHERE
        );
        l.gateway = Some("fd00::1".parse().unwrap());
        assert!(check_family(&l).is_err());
    }
}
