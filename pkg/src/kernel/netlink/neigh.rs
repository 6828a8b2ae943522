//! Neighbours (ARP/NDP entries, proxy entries) and bridge/vxlan FDB entries.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::neighbour::{
    NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::RouteType;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::attr::{self, Attrs};
use super::error::NlResult;
use super::{Family, MacAddr, Netlink};

/// Neighbour states (NUD_*), a bit set.
pub mod nud {
    /// No state.
    pub const NONE: u16 = 0x00;
    /// Resolution in progress.
    pub const INCOMPLETE: u16 = 0x01;
    /// Confirmed reachable.
    pub const REACHABLE: u16 = 0x02;
    /// Not confirmed recently.
    pub const STALE: u16 = 0x04;
    /// Waiting before probing.
    pub const DELAY: u16 = 0x08;
    /// Probing.
    pub const PROBE: u16 = 0x10;
    /// Resolution failed.
    pub const FAILED: u16 = 0x20;
    /// No ARP needed (e.g. point-to-point).
    pub const NOARP: u16 = 0x40;
    /// Static: never expires, never probed.
    pub const PERMANENT: u16 = 0x80;
}

const RTM_NEWNEIGH: u16 = 28;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NDA_VLAN: u16 = 5;
const NDA_PORT: u16 = 6;
const NDA_VNI: u16 = 7;
const NDA_MASTER: u16 = 9;
const NTF_SELF: u8 = 0x02;
const NTF_MASTER: u8 = 0x04;
const NTF_PROXY: u8 = 0x08;
const NDMSG_LEN: usize = 12;

/// An IP neighbour entry to add, replace or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighbourSpec {
    /// Interface index.
    pub index: u32,
    /// The neighbour's IP address.
    pub ip: IpAddr,
    /// Its MAC (required unless `proxy`).
    pub mac: Option<MacAddr>,
    /// State (default [`nud::PERMANENT`]).
    pub state: u16,
    /// A proxy entry (NTF_PROXY): answer ARP/NDP for `ip` on this interface (proxy ARP for
    /// routed veths); `mac` and `state` are not used.
    pub proxy: bool,
}

impl NeighbourSpec {
    /// A permanent entry `ip` → `mac` on interface `index`.
    pub fn permanent(index: u32, ip: IpAddr, mac: MacAddr) -> NeighbourSpec {
        NeighbourSpec {
            index,
            ip,
            mac: Some(mac),
            state: nud::PERMANENT,
            proxy: false,
        }
    }

    /// A proxy entry for `ip` on interface `index`.
    pub fn proxy(index: u32, ip: IpAddr) -> NeighbourSpec {
        NeighbourSpec {
            index,
            ip,
            mac: None,
            state: nud::NONE,
            proxy: true,
        }
    }
}

/// An IP neighbour as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    /// Interface index.
    pub index: u32,
    /// IP address.
    pub ip: Option<IpAddr>,
    /// MAC, when resolved.
    pub mac: Option<MacAddr>,
    /// NUD_* state bits.
    pub state: u16,
    /// NTF_* flags.
    pub flags: u8,
    /// A proxy entry (NTF_PROXY).
    pub proxy: bool,
}

/// A bridge FDB entry (AF_BRIDGE neighbour), e.g. a vxlan remote: MAC → remote VTEP `dst`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdbEntry {
    /// Device (vxlan device or bridge port) index.
    pub index: u32,
    /// MAC address; [`MacAddr::ZERO`] is the vxlan default destination (flooding).
    pub mac: MacAddr,
    /// Remote VTEP address (vxlan).
    pub dst: Option<IpAddr>,
    /// VNI (vxlan, when it differs from the device's).
    pub vni: Option<u32>,
    /// UDP destination port (vxlan, when it differs from the device's).
    pub port: Option<u16>,
    /// VLAN id.
    pub vlan: Option<u16>,
    /// Master (bridge) index, on entries reported by a bridge.
    pub master: Option<u32>,
    /// NUD_* state (PERMANENT for static entries).
    pub state: u16,
    /// NTF_* flags: NTF_SELF (0x02) = the device's own table (vxlan), NTF_MASTER (0x04) = the
    /// bridge's.
    pub flags: u8,
}

impl FdbEntry {
    /// A permanent entry in a vxlan device's own FDB (`bridge fdb ... self permanent`).
    pub fn vxlan(index: u32, mac: MacAddr, dst: IpAddr) -> FdbEntry {
        FdbEntry {
            index,
            mac,
            dst: Some(dst),
            vni: None,
            port: None,
            vlan: None,
            master: None,
            state: nud::PERMANENT,
            flags: NTF_SELF,
        }
    }

    /// Whether the entry is in the device's own table (NTF_SELF).
    pub fn is_self(&self) -> bool {
        self.flags & NTF_SELF != 0
    }

    /// Whether the entry is in the master bridge's table: NTF_MASTER in a request; the
    /// kernel reports bridge entries with NDA_MASTER (`master`) and no NTF_* flag instead.
    pub fn is_master(&self) -> bool {
        self.flags & NTF_MASTER != 0 || self.master.is_some()
    }
}

fn af(ip: &IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

fn neigh_msg(spec: &NeighbourSpec) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = af(&spec.ip);
    m.header.ifindex = spec.index;
    m.header.kind = RouteType::Unicast;
    if spec.proxy {
        m.header.flags = NeighbourFlags::Proxy;
    } else {
        m.header.state = NeighbourState::from(spec.state);
    }
    m.attributes
        .push(NeighbourAttribute::Destination(spec.ip.into()));
    if let (Some(mac), false) = (spec.mac, spec.proxy) {
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
    }
    m
}

fn fdb_msg(e: &FdbEntry) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = e.index;
    m.header.state = NeighbourState::from(e.state);
    m.header.flags = NeighbourFlags::from_bits_retain(e.flags);
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(e.mac.0.to_vec()));
    if let Some(d) = e.dst {
        m.attributes.push(NeighbourAttribute::Destination(d.into()));
    }
    if let Some(v) = e.vni {
        m.attributes.push(NeighbourAttribute::Vni(v));
    }
    if let Some(p) = e.port {
        m.attributes.push(NeighbourAttribute::Port(p));
    }
    if let Some(v) = e.vlan {
        m.attributes.push(NeighbourAttribute::Vlan(v));
    }
    m
}

struct RawNeigh<'a> {
    family: u8,
    index: u32,
    state: u16,
    flags: u8,
    attrs: Attrs<'a>,
}

fn raw_neigh(p: &[u8]) -> Option<RawNeigh<'_>> {
    if p.len() < NDMSG_LEN {
        return None;
    }
    Some(RawNeigh {
        family: p[0],
        index: attr::i32_ne(&p[4..8])? as u32,
        state: u16::from_ne_bytes([p[8], p[9]]),
        flags: p[10],
        attrs: Attrs::after(p, NDMSG_LEN),
    })
}

fn parse_neigh(p: &[u8]) -> Option<Neighbour> {
    let r = raw_neigh(p)?;
    let mut n = Neighbour {
        index: r.index,
        ip: None,
        mac: None,
        state: r.state,
        flags: r.flags,
        proxy: r.flags & NTF_PROXY != 0,
    };
    for (ty, v) in r.attrs {
        match ty {
            NDA_DST => n.ip = attr::ip(v),
            NDA_LLADDR => n.mac = attr::mac(v),
            _ => {}
        }
    }
    Some(n)
}

fn parse_fdb(p: &[u8]) -> Option<FdbEntry> {
    let r = raw_neigh(p)?;
    if r.family != nix::libc::AF_BRIDGE as u8 {
        return None;
    }
    let mut e = FdbEntry {
        index: r.index,
        mac: MacAddr::ZERO,
        dst: None,
        vni: None,
        port: None,
        vlan: None,
        master: None,
        state: r.state,
        flags: r.flags,
    };
    let mut has_mac = false;
    for (ty, v) in r.attrs {
        match ty {
            NDA_LLADDR => {
                if let Some(m) = attr::mac(v) {
                    e.mac = m;
                    has_mac = true;
                }
            }
            NDA_DST => e.dst = attr::ip(v),
            NDA_VNI => e.vni = attr::u32_ne(v),
            NDA_PORT => e.port = attr::u16_be(v),
            NDA_VLAN => e.vlan = v.get(..2).map(|b| u16::from_ne_bytes([b[0], b[1]])),
            NDA_MASTER => e.master = attr::u32_ne(v),
            _ => {}
        }
    }
    has_mac.then_some(e)
}

fn describe_neigh(s: &NeighbourSpec) -> String {
    match (s.proxy, s.mac) {
        (true, _) => format!("proxy neighbour {} on ifindex {}", s.ip, s.index),
        (false, Some(m)) => format!("neighbour {} lladdr {m} on ifindex {}", s.ip, s.index),
        (false, None) => format!("neighbour {} on ifindex {}", s.ip, s.index),
    }
}

fn describe_fdb(e: &FdbEntry) -> String {
    let mut s = format!("fdb entry {} on ifindex {}", e.mac, e.index);
    if let Some(d) = e.dst {
        s += &format!(" dst {d}");
    }
    if let Some(v) = e.vni {
        s += &format!(" vni {v}");
    }
    s
}

impl super::Batch {
    /// Adds or overwrites a neighbour (or proxy) entry ([`Netlink::replace_neighbour`]).
    pub fn replace_neighbour(&mut self, spec: &NeighbourSpec) {
        self.push(
            RouteNetlinkMessage::NewNeighbour(neigh_msg(spec)),
            NLM_F_CREATE | NLM_F_REPLACE,
            format!("replace {}", describe_neigh(spec)),
        );
    }
}

impl Netlink {
    fn new_neighbour(&mut self, spec: &NeighbourSpec, flags: u16, verb: &str) -> NlResult<()> {
        self.sock
            .ack(RouteNetlinkMessage::NewNeighbour(neigh_msg(spec)), flags)
            .map_err(|e| e.with_op(|| format!("{verb} {}", describe_neigh(spec))))
    }

    /// Adds a neighbour (or proxy) entry; `is_exists` when one for that IP is there.
    pub fn add_neighbour(&mut self, spec: &NeighbourSpec) -> NlResult<()> {
        self.new_neighbour(spec, NLM_F_CREATE | NLM_F_EXCL, "add")
    }

    /// Adds or overwrites a neighbour (or proxy) entry.
    pub fn replace_neighbour(&mut self, spec: &NeighbourSpec) -> NlResult<()> {
        self.new_neighbour(spec, NLM_F_CREATE | NLM_F_REPLACE, "replace")
    }

    /// Deletes the neighbour (or proxy) entry for `spec.ip` on `spec.index`;
    /// `is_not_found` when none.
    pub fn delete_neighbour(&mut self, spec: &NeighbourSpec) -> NlResult<()> {
        self.sock
            .ack(RouteNetlinkMessage::DelNeighbour(neigh_msg(spec)), 0)
            .map_err(|e| e.with_op(|| format!("delete {}", describe_neigh(spec))))
    }

    /// Neighbour entries of interface `index` (all when None) and `family` (both when None);
    /// with `proxy`, the proxy entries instead of the regular ones.
    pub fn neighbours(
        &mut self,
        index: Option<u32>,
        family: Option<Family>,
        proxy: bool,
    ) -> NlResult<Vec<Neighbour>> {
        let mut m = NeighbourMessage::default();
        m.header.family = match family {
            Some(Family::V4) => AddressFamily::Inet,
            Some(Family::V6) => AddressFamily::Inet6,
            None => AddressFamily::Unspec,
        };
        // Strict dump checking wants the ifindex filter as NDA_IFINDEX, not in the header.
        if let Some(i) = index {
            m.attributes.push(NeighbourAttribute::IfIndex(i));
        }
        if proxy {
            m.header.flags = NeighbourFlags::Proxy;
        }
        self.sock
            .dump(RouteNetlinkMessage::GetNeighbour(m), &mut |ty, p| {
                let n = parse_neigh(p).filter(|_| ty == RTM_NEWNEIGH)?;
                let fam_ok =
                    n.ip.as_ref()
                        .is_some_and(|ip| family.is_none_or(|f| f == Family::of(ip)));
                let keep = fam_ok && index.is_none_or(|i| i == n.index) && n.proxy == proxy;
                keep.then_some(n)
            })
            .map_err(|e| e.with_op(|| "list neighbours".into()))
    }

    fn new_fdb(&mut self, e: &FdbEntry, flags: u16, verb: &str) -> NlResult<()> {
        self.sock
            .ack(RouteNetlinkMessage::NewNeighbour(fdb_msg(e)), flags)
            .map_err(|err| err.with_op(|| format!("{verb} {}", describe_fdb(e))))
    }

    /// Adds an FDB entry; `is_exists` when that MAC is already there.
    pub fn fdb_add(&mut self, e: &FdbEntry) -> NlResult<()> {
        self.new_fdb(e, NLM_F_CREATE | NLM_F_EXCL, "add")
    }

    /// Appends a further destination for the MAC (vxlan: e.g. several remotes for the
    /// all-zero flooding entry).
    pub fn fdb_append(&mut self, e: &FdbEntry) -> NlResult<()> {
        self.new_fdb(e, NLM_F_CREATE | NLM_F_APPEND, "append")
    }

    /// Adds or overwrites the FDB entry for the MAC.
    pub fn fdb_replace(&mut self, e: &FdbEntry) -> NlResult<()> {
        self.new_fdb(e, NLM_F_CREATE | NLM_F_REPLACE, "replace")
    }

    /// Deletes the FDB entry (with `dst`/`vni` set: only that destination of the MAC);
    /// `is_not_found` when none.
    pub fn fdb_delete(&mut self, e: &FdbEntry) -> NlResult<()> {
        self.sock
            .ack(RouteNetlinkMessage::DelNeighbour(fdb_msg(e)), 0)
            .map_err(|err| err.with_op(|| format!("delete {}", describe_fdb(e))))
    }

    /// FDB entries of device `index` (all devices when None), self and master entries alike.
    pub fn fdb_entries(&mut self, index: Option<u32>) -> NlResult<Vec<FdbEntry>> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = index.unwrap_or(0);
        self.sock
            .dump(RouteNetlinkMessage::GetNeighbour(m), &mut |ty, p| {
                let e = parse_fdb(p).filter(|_| ty == RTM_NEWNEIGH)?;
                index.is_none_or(|i| i == e.index).then_some(e)
            })
            .map_err(|e| e.with_op(|| "list fdb entries".into()))
    }
}
