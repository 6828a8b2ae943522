//! IP addresses on links: list, add, replace, delete.

use std::net::{IpAddr, Ipv4Addr};

use ipnetwork::IpNetwork;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::attr::{self, Attrs};
use super::error::NlResult;
use super::{Family, Netlink};

const RTM_NEWADDR: u16 = 20;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_LABEL: u16 = 3;
const IFA_BROADCAST: u16 = 4;
const IFA_FLAGS: u16 = 8;
const IFADDRMSG_LEN: usize = 8;

/// IFA_F_NODAD: no duplicate address detection (IPv6).
pub const IFA_F_NODAD: u32 = 0x02;
/// IFA_F_DADFAILED: duplicate address detection failed (IPv6).
pub const IFA_F_DADFAILED: u32 = 0x08;
/// IFA_F_TENTATIVE: duplicate address detection still running (IPv6).
pub const IFA_F_TENTATIVE: u32 = 0x40;
/// IFA_F_NOPREFIXROUTE: do not add the prefix route for the address's subnet.
pub const IFA_F_NOPREFIXROUTE: u32 = 0x200;

/// An address on a link as the kernel reports it (RTM_NEWADDR).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// Interface index.
    pub index: u32,
    /// The local address (IFA_LOCAL, else IFA_ADDRESS).
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix_len: u8,
    /// The peer address of a point-to-point address (IFA_ADDRESS when it differs).
    pub peer: Option<IpAddr>,
    /// IPv4 broadcast address.
    pub broadcast: Option<Ipv4Addr>,
    /// Scope (RT_SCOPE_*: 0 universe, 253 link, 254 host).
    pub scope: u8,
    /// IFA_F_* flags (full 32 bits from IFA_FLAGS when present).
    pub flags: u32,
    /// IPv4 label (IFA_LABEL).
    pub label: Option<String>,
}

impl Address {
    /// Address with its prefix length, e.g. `10.1.0.2/24`.
    pub fn network(&self) -> IpNetwork {
        // The kernel never reports a prefix longer than the family allows.
        IpNetwork::new(self.addr, self.prefix_len).unwrap_or_else(|_| IpNetwork::from(self.addr))
    }

    /// The family of the address.
    pub fn family(&self) -> Family {
        Family::of(&self.addr)
    }

    /// Whether IPv6 duplicate address detection has not finished yet.
    pub fn is_tentative(&self) -> bool {
        self.flags & IFA_F_TENTATIVE != 0
    }

    /// Whether IPv6 duplicate address detection found a duplicate.
    pub fn is_dad_failed(&self) -> bool {
        self.flags & IFA_F_DADFAILED != 0
    }
}

/// The IPv4 broadcast address given with an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Broadcast {
    /// None.
    None,
    /// The subnet's last address (for prefixes shorter than /31), as `ip addr add ... brd +`.
    #[default]
    Auto,
    /// This address.
    Addr(Ipv4Addr),
}

/// Options of [`Netlink::add_address`] / [`Netlink::replace_address`].
#[derive(Debug, Clone, Default)]
pub struct AddrOptions {
    /// IPv6: skip duplicate address detection, so the address is usable at once (not
    /// tentative) without waiting for DAD to settle.
    pub nodad: bool,
    /// IPv4 broadcast (ignored for IPv6). Default [`Broadcast::Auto`].
    pub broadcast: Broadcast,
    /// Do not create the subnet's prefix route (IFA_F_NOPREFIXROUTE).
    pub noprefixroute: bool,
    /// Scope (RT_SCOPE_*); universe when None.
    pub scope: Option<u8>,
}

fn family_of(ip: &IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

fn auto_broadcast(net: &IpNetwork) -> Option<Ipv4Addr> {
    match (net.ip(), net.prefix()) {
        (IpAddr::V4(a), p) if p < 31 => Some(Ipv4Addr::from(u32::from(a) | (u32::MAX >> p))),
        _ => None,
    }
}

fn addr_msg(index: u32, net: &IpNetwork) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = family_of(&net.ip());
    m.header.prefix_len = net.prefix();
    m.header.index = index;
    m.attributes.push(AddressAttribute::Local(net.ip()));
    m.attributes.push(AddressAttribute::Address(net.ip()));
    m
}

/// Decodes an RTM_NEWADDR payload.
pub(crate) fn parse_addr(p: &[u8]) -> Option<Address> {
    if p.len() < IFADDRMSG_LEN {
        return None;
    }
    let mut local = None;
    let mut address = None;
    let mut a = Address {
        index: attr::u32_ne(&p[4..8])?,
        addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        prefix_len: p[1],
        peer: None,
        broadcast: None,
        scope: p[3],
        flags: p[2] as u32,
        label: None,
    };
    for (ty, v) in Attrs::after(p, IFADDRMSG_LEN) {
        match ty {
            IFA_ADDRESS => address = attr::ip(v),
            IFA_LOCAL => local = attr::ip(v),
            IFA_LABEL => a.label = Some(attr::string(v)),
            IFA_BROADCAST => {
                if let Some(IpAddr::V4(b)) = attr::ip(v) {
                    a.broadcast = Some(b);
                }
            }
            IFA_FLAGS => a.flags = attr::u32_ne(v).unwrap_or(a.flags),
            _ => {}
        }
    }
    a.addr = local.or(address)?;
    a.peer = address.filter(|x| *x != a.addr);
    Some(a)
}

/// The RTM_NEWADDR message adding `net` to link `index` with `opts`.
fn new_address_msg(index: u32, net: IpNetwork, opts: &AddrOptions) -> RouteNetlinkMessage {
    let mut m = addr_msg(index, &net);
    let mut f = 0u32;
    if opts.nodad && net.is_ipv6() {
        f |= IFA_F_NODAD;
    }
    if opts.noprefixroute {
        f |= IFA_F_NOPREFIXROUTE;
    }
    m.header.flags = AddressHeaderFlags::from_bits_retain(f as u8);
    if f > 0xff {
        m.attributes
            .push(AddressAttribute::Flags(AddressFlags::from_bits_retain(f)));
    }
    if let Some(s) = opts.scope {
        m.header.scope = AddressScope::from(s);
    }
    if net.is_ipv4() {
        let brd = match opts.broadcast {
            Broadcast::None => None,
            Broadcast::Auto => auto_broadcast(&net),
            Broadcast::Addr(b) => Some(b),
        };
        if let Some(b) = brd {
            m.attributes.push(AddressAttribute::Broadcast(b));
        }
    }
    RouteNetlinkMessage::NewAddress(m)
}

impl super::Batch {
    /// Adds `net` to link `index` ([`Netlink::add_address`]).
    pub fn add_address(&mut self, index: u32, net: IpNetwork, opts: &AddrOptions) {
        self.push(
            new_address_msg(index, net, opts),
            NLM_F_CREATE | NLM_F_EXCL,
            format!("add address {net} on ifindex {index}"),
        );
    }
}

impl Netlink {
    fn new_address(
        &mut self,
        index: u32,
        net: IpNetwork,
        opts: &AddrOptions,
        flags: u16,
        verb: &str,
    ) -> NlResult<()> {
        self.sock
            .ack(new_address_msg(index, net, opts), flags)
            .map_err(|e| e.with_op(|| format!("{verb} address {net} on ifindex {index}")))
    }

    /// Adds `net` (address/prefix) to link `index`; `is_exists` when it is already there.
    pub fn add_address(&mut self, index: u32, net: IpNetwork, opts: &AddrOptions) -> NlResult<()> {
        self.new_address(index, net, opts, NLM_F_CREATE | NLM_F_EXCL, "add")
    }

    /// Adds `net` to link `index`, or updates it (flags, broadcast) when already there.
    pub fn replace_address(
        &mut self,
        index: u32,
        net: IpNetwork,
        opts: &AddrOptions,
    ) -> NlResult<()> {
        self.new_address(index, net, opts, NLM_F_CREATE | NLM_F_REPLACE, "replace")
    }

    /// Removes `net` from link `index`; `is_not_found` (EADDRNOTAVAIL) when absent.
    pub fn delete_address(&mut self, index: u32, net: IpNetwork) -> NlResult<()> {
        self.sock
            .ack(RouteNetlinkMessage::DelAddress(addr_msg(index, &net)), 0)
            .map_err(|e| e.with_op(|| format!("delete address {net} from ifindex {index}")))
    }

    /// Addresses of link `index` (all links when None) of `family` (both when None).
    pub fn addresses(
        &mut self,
        index: Option<u32>,
        family: Option<Family>,
    ) -> NlResult<Vec<Address>> {
        let m = address_dump(index, family);
        self.sock
            .dump(RouteNetlinkMessage::GetAddress(m), &mut |ty, p| {
                let a = parse_addr(p).filter(|_| ty == RTM_NEWADDR)?;
                let keep =
                    index.is_none_or(|i| i == a.index) && family.is_none_or(|f| f == a.family());
                keep.then_some(a)
            })
            .map_err(|e| {
                e.with_op(|| match index {
                    Some(i) => format!("list addresses of ifindex {i}"),
                    None => "list addresses".into(),
                })
            })
    }
}

/// The RTM_GETADDR dump request for the addresses of link `index` (all links when None) of
/// `family` (both when None).
pub(crate) fn address_dump(index: Option<u32>, family: Option<Family>) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = match family {
        Some(Family::V4) => AddressFamily::Inet,
        Some(Family::V6) => AddressFamily::Inet6,
        None => AddressFamily::Unspec,
    };
    m.header.index = index.unwrap_or(0);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_auto() {
        let n: IpNetwork = "10.1.2.3/24".parse().unwrap();
        assert_eq!(auto_broadcast(&n), Some(Ipv4Addr::new(10, 1, 2, 255)));
        let n: IpNetwork = "10.1.2.3/31".parse().unwrap();
        assert_eq!(auto_broadcast(&n), None);
        let n: IpNetwork = "10.0.0.1/0".parse().unwrap();
        assert_eq!(auto_broadcast(&n), Some(Ipv4Addr::BROADCAST));
    }
}
