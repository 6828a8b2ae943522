//! Links: lookup, listing, creation (bridge, veth with the peer made in another namespace,
//! vxlan), deletion and attribute changes (up/down, MTU, MAC, master, hairpin, alias, netns).

use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{DefaultNla, NLA_F_NESTED, NLM_F_CREATE, NLM_F_ECHO, NLM_F_EXCL};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::attr::{self, Attrs};
use super::error::{NetlinkError, NlResult};
use super::{MacAddr, Netlink};

const RTM_NEWLINK: u16 = 16;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_MASTER: u16 = 10;
const IFLA_PROTINFO: u16 = 12;
const IFLA_OPERSTATE: u16 = 16;
const IFLA_LINKINFO: u16 = 18;
const IFLA_IFALIAS: u16 = 20;
const IFLA_LINK_NETNSID: u16 = 37;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_VXLAN_ID: u16 = 1;
const IFLA_VXLAN_LINK: u16 = 3;
const IFLA_VXLAN_LOCAL: u16 = 4;
const IFLA_VXLAN_LEARNING: u16 = 7;
const IFLA_VXLAN_PORT: u16 = 15;
const IFLA_VXLAN_LOCAL6: u16 = 17;
const IFLA_BRPORT_MODE: u16 = 4;
const IFF_UP: u32 = 0x1;
const IFF_RUNNING: u32 = 0x40;
const IFINFOMSG_LEN: usize = 16;

/// A network interface as the kernel reports it (RTM_NEWLINK).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// IFLA_INFO_KIND ("bridge", "veth", "vxlan", ...); None for physical/loopback devices.
    pub kind: Option<String>,
    /// Hardware address, when it is a 6-byte Ethernet address.
    pub mac: Option<MacAddr>,
    /// MTU.
    pub mtu: u32,
    /// Index of the master device (e.g. the bridge this port is enslaved to).
    pub master: Option<u32>,
    /// Administratively up (IFF_UP).
    pub admin_up: bool,
    /// Operationally up (IFF_RUNNING: operstate UP, or UNKNOWN for devices without carrier).
    pub oper_up: bool,
    /// Raw IFLA_OPERSTATE (RFC 2863: 2 = DOWN, 6 = UP, 0 = UNKNOWN ...).
    pub oper_state: u8,
    /// IFLA_LINK: the peer's ifindex for a veth (in `link_netnsid`'s namespace when set),
    /// the lower device for vlans.
    pub link: Option<u32>,
    /// IFLA_LINK_NETNSID: the namespace id (as seen from this one) where `link` lives.
    pub link_netnsid: Option<i32>,
    /// Interface alias (IFLA_IFALIAS).
    pub alias: Option<String>,
    /// Raw IFF_* flags.
    pub flags: u32,
    /// vxlan parameters, for kind "vxlan".
    pub vxlan: Option<VxlanInfo>,
}

/// The vxlan parameters of a vxlan link (IFLA_INFO_DATA).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VxlanInfo {
    /// VXLAN network identifier.
    pub vni: u32,
    /// Local (source) address.
    pub local: Option<IpAddr>,
    /// UDP destination port.
    pub port: u16,
    /// Underlay device index.
    pub underlay: Option<u32>,
    /// Source-address learning enabled.
    pub learning: bool,
}

/// A bridge to create.
#[derive(Debug, Clone, Default)]
pub struct BridgeSpec<'a> {
    /// Name (validated by [`validate_ifname`]).
    pub name: &'a str,
    /// MTU; kernel default when None.
    pub mtu: Option<u32>,
    /// Fixed MAC; random when None (then it follows the lowest port MAC).
    pub mac: Option<MacAddr>,
    /// Bring it up in the same request.
    pub up: bool,
}

/// A veth pair to create in one request, the peer made directly in another namespace under
/// its final name. The peer is created down: the kernel cannot open a veth end before the
/// pair is linked (ENOTCONN), so bring it up afterwards through a socket in its namespace.
#[derive(Debug, Clone, Default)]
pub struct VethSpec<'a> {
    /// Name of the end created in this socket's namespace.
    pub name: &'a str,
    /// MTU of this end.
    pub mtu: Option<u32>,
    /// MAC of this end; random when None.
    pub mac: Option<MacAddr>,
    /// Master (bridge) ifindex for this end, set at creation.
    pub master: Option<u32>,
    /// Bring this end up at creation.
    pub up: bool,
    /// Name of the peer end (its name in its namespace).
    pub peer_name: &'a str,
    /// Namespace of the peer (an fd of its nsfs file); this socket's namespace when None.
    pub peer_netns: Option<BorrowedFd<'a>>,
    /// MTU of the peer.
    pub peer_mtu: Option<u32>,
    /// MAC of the peer; random when None.
    pub peer_mac: Option<MacAddr>,
}

/// A vxlan device to create.
#[derive(Debug, Clone)]
pub struct VxlanSpec<'a> {
    /// Name.
    pub name: &'a str,
    /// VXLAN network identifier (24 bits).
    pub vni: u32,
    /// Local (source) address of the tunnel.
    pub local: Option<IpAddr>,
    /// UDP destination port (4789 IANA, 8472 Linux/flannel default).
    pub port: u16,
    /// Underlay device index.
    pub underlay: Option<u32>,
    /// Learn remote MACs from received packets (off for a controller-managed FDB).
    pub learning: bool,
    /// MTU.
    pub mtu: Option<u32>,
    /// Fixed MAC; random when None.
    pub mac: Option<MacAddr>,
    /// Bring it up in the same request.
    pub up: bool,
}

/// Checks an interface name as the kernel would (1..=15 bytes, no '/', ':', whitespace, not
/// "." or ".."), so a bad name gets a clear message instead of a bare EINVAL.
pub fn validate_ifname(name: &str) -> NlResult<()> {
    let bad = name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0);
    if bad {
        return Err(NetlinkError::invalid(format!(
            "invalid interface name \"{}\": 1-15 bytes, no '/', ':' or whitespace",
            name.escape_debug()
        )));
    }
    Ok(())
}

fn link_msg(index: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m
}

fn up_flags(m: &mut LinkMessage, up: bool) {
    if up {
        m.header.flags |= LinkFlags::Up;
        m.header.change_mask |= LinkFlags::Up;
    }
}

fn set_mtu_mac(m: &mut LinkMessage, mtu: Option<u32>, mac: Option<MacAddr>) {
    if let Some(mtu) = mtu {
        m.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(mac) = mac {
        m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
    }
}

/// One TX and one RX queue, asked for at creation. A veth is otherwise allocated one queue
/// pair per possible CPU and then cut down to one active queue each way, and that cut waits for
/// an RCU grace period per end while the RTNL lock is held (serializing concurrent ADDs).
/// One active queue is what the kernel leaves anyway, so traffic behaves the same.
fn single_queue(m: &mut LinkMessage) {
    m.attributes.push(LinkAttribute::NumTxQueues(1));
    m.attributes.push(LinkAttribute::NumRxQueues(1));
}

/// Decodes an RTM_NEWLINK payload.
pub(crate) fn parse_link(p: &[u8]) -> Option<Link> {
    if p.len() < IFINFOMSG_LEN {
        return None;
    }
    let index = attr::i32_ne(&p[4..8])? as u32;
    let flags = attr::u32_ne(&p[8..12])?;
    let mut l = Link {
        index,
        name: String::new(),
        kind: None,
        mac: None,
        mtu: 0,
        master: None,
        admin_up: flags & IFF_UP != 0,
        oper_up: flags & IFF_RUNNING != 0,
        oper_state: 0,
        link: None,
        link_netnsid: None,
        alias: None,
        flags,
        vxlan: None,
    };
    let mut info_data: Option<&[u8]> = None;
    for (ty, v) in Attrs::after(p, IFINFOMSG_LEN) {
        match ty {
            IFLA_ADDRESS => l.mac = attr::mac(v),
            IFLA_IFNAME => l.name = attr::string(v),
            IFLA_MTU => l.mtu = attr::u32_ne(v).unwrap_or(0),
            IFLA_LINK => l.link = attr::u32_ne(v),
            IFLA_MASTER => l.master = attr::u32_ne(v).filter(|&m| m != 0),
            IFLA_OPERSTATE => l.oper_state = v.first().copied().unwrap_or(0),
            IFLA_IFALIAS => l.alias = Some(attr::string(v)),
            IFLA_LINK_NETNSID => l.link_netnsid = attr::i32_ne(v),
            IFLA_LINKINFO => {
                for (ity, iv) in Attrs::new(v) {
                    match ity {
                        IFLA_INFO_KIND => l.kind = Some(attr::string(iv)),
                        IFLA_INFO_DATA => info_data = Some(iv),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if l.kind.as_deref() == Some("vxlan")
        && let Some(d) = info_data
    {
        let mut x = VxlanInfo::default();
        for (ty, v) in Attrs::new(d) {
            match ty {
                IFLA_VXLAN_ID => x.vni = attr::u32_ne(v).unwrap_or(0),
                IFLA_VXLAN_LINK => x.underlay = attr::u32_ne(v).filter(|&i| i != 0),
                IFLA_VXLAN_LOCAL | IFLA_VXLAN_LOCAL6 => x.local = attr::ip(v),
                IFLA_VXLAN_LEARNING => x.learning = v.first().is_some_and(|&b| b != 0),
                IFLA_VXLAN_PORT => x.port = attr::u16_be(v).unwrap_or(0),
                _ => {}
            }
        }
        l.vxlan = Some(x);
    }
    Some(l)
}

impl Netlink {
    fn get_link(&mut self, msg: LinkMessage) -> NlResult<Option<Link>> {
        let mut found = None;
        let res = self
            .sock
            .request(RouteNetlinkMessage::GetLink(msg), 0, &mut |ty, p| {
                if ty == RTM_NEWLINK {
                    found = parse_link(p);
                }
                Ok(())
            });
        match res {
            Ok(()) => Ok(found),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The link named `name`, or None when there is none.
    pub fn link_by_name(&mut self, name: &str) -> NlResult<Option<Link>> {
        let op = || format!("get link {name}");
        validate_ifname(name).map_err(|e| e.with_op(op))?;
        let mut m = link_msg(0);
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.get_link(m).map_err(|e| e.with_op(op))
    }

    /// The link with index `index`, or None when there is none.
    pub fn link_by_index(&mut self, index: u32) -> NlResult<Option<Link>> {
        self.get_link(link_msg(index))
            .map_err(|e| e.with_op(|| format!("get link ifindex {index}")))
    }

    /// All links of the namespace (one dump).
    pub fn links(&mut self) -> NlResult<Vec<Link>> {
        let msg = RouteNetlinkMessage::GetLink(LinkMessage::default());
        self.sock
            .dump(msg, &mut |ty, p| {
                if ty == RTM_NEWLINK {
                    parse_link(p)
                } else {
                    None
                }
            })
            .map_err(|e| e.with_op(|| "list links".into()))
    }

    /// Creates a bridge (NLM_F_EXCL): an existing link of that name gives an error for which
    /// [`NetlinkError::is_exists`] is true, so a concurrent creator can be tolerated.
    pub fn create_bridge(&mut self, spec: &BridgeSpec<'_>) -> NlResult<()> {
        let op = || format!("create bridge {}", spec.name);
        validate_ifname(spec.name).map_err(|e| e.with_op(op))?;
        let mut m = link_msg(0);
        up_flags(&mut m, spec.up);
        m.attributes
            .push(LinkAttribute::IfName(spec.name.to_string()));
        set_mtu_mac(&mut m, spec.mtu, spec.mac);
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        self.sock
            .ack(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
            .map_err(|e| e.with_op(op))
    }

    /// Creates the bridge unless a link of that name exists; returns the link and whether it
    /// was created here. The caller checks `kind` when an existing link must be a bridge.
    pub fn ensure_bridge(&mut self, spec: &BridgeSpec<'_>) -> NlResult<(Link, bool)> {
        let created = match self.create_bridge(spec) {
            Ok(()) => true,
            Err(e) if e.is_exists() => false,
            Err(e) => return Err(e),
        };
        match self.link_by_name(spec.name)? {
            Some(l) => Ok((l, created)),
            None => Err(NetlinkError::kernel(nix::libc::ENODEV, None)
                .with_op(|| format!("get bridge {} after creating it", spec.name))),
        }
    }

    /// Creates a veth pair in one request (NLM_F_EXCL): this end in the socket's namespace,
    /// the peer directly in `peer_netns` under its final name, with MTUs, MACs, one queue each
    /// way per end, and this end's master and up state applied at creation (the peer stays
    /// down, see [`VethSpec`]). Either name existing gives an `is_exists` error.
    pub fn create_veth(&mut self, spec: &VethSpec<'_>) -> NlResult<()> {
        self.new_veth(spec, 0).map(drop)
    }

    /// [`Netlink::create_veth`] with NLM_F_ECHO: also returns this end as the kernel reports
    /// it right after creation (its ifindex, and in `link` the peer's ifindex in the peer's
    /// namespace), so neither end needs a lookup. None when the kernel echoes nothing.
    pub fn create_veth_echo(&mut self, spec: &VethSpec<'_>) -> NlResult<Option<Link>> {
        self.new_veth(spec, NLM_F_ECHO)
    }

    fn new_veth(&mut self, spec: &VethSpec<'_>, extra: u16) -> NlResult<Option<Link>> {
        let op = || format!("create veth {} with peer {}", spec.name, spec.peer_name);
        validate_ifname(spec.name).map_err(|e| e.with_op(op))?;
        validate_ifname(spec.peer_name).map_err(|e| e.with_op(op))?;
        let mut peer = link_msg(0);
        peer.attributes
            .push(LinkAttribute::IfName(spec.peer_name.to_string()));
        set_mtu_mac(&mut peer, spec.peer_mtu, spec.peer_mac);
        single_queue(&mut peer);
        if let Some(fd) = spec.peer_netns {
            peer.attributes.push(LinkAttribute::NetNsFd(fd.as_raw_fd()));
        }
        let mut m = link_msg(0);
        up_flags(&mut m, spec.up);
        m.attributes
            .push(LinkAttribute::IfName(spec.name.to_string()));
        set_mtu_mac(&mut m, spec.mtu, spec.mac);
        single_queue(&mut m);
        if let Some(master) = spec.master {
            m.attributes.push(LinkAttribute::Controller(master));
        }
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        let mut echoed: Option<Link> = None;
        self.sock
            .request(
                RouteNetlinkMessage::NewLink(m),
                NLM_F_CREATE | NLM_F_EXCL | extra,
                &mut |ty, p| {
                    // Every notification of the creation is echoed; the last one is the newest
                    // state. Only this end's (by name) counts.
                    if ty == RTM_NEWLINK
                        && let Some(l) = parse_link(p).filter(|l| l.name == spec.name)
                    {
                        echoed = Some(l);
                    }
                    Ok(())
                },
            )
            .map_err(|e| e.with_op(op))?;
        Ok(echoed)
    }

    /// Creates a vxlan device (NLM_F_EXCL; `is_exists` on a name clash).
    pub fn create_vxlan(&mut self, spec: &VxlanSpec<'_>) -> NlResult<()> {
        let op = || format!("create vxlan {} vni {}", spec.name, spec.vni);
        validate_ifname(spec.name).map_err(|e| e.with_op(op))?;
        let mut data = vec![InfoVxlan::Id(spec.vni)];
        match spec.local {
            Some(IpAddr::V4(a)) => data.push(InfoVxlan::Local(a)),
            Some(IpAddr::V6(a)) => data.push(InfoVxlan::Local6(a)),
            None => {}
        }
        if let Some(dev) = spec.underlay {
            data.push(InfoVxlan::Link(dev));
        }
        data.push(InfoVxlan::Port(spec.port));
        data.push(InfoVxlan::Learning(spec.learning));
        let mut m = link_msg(0);
        up_flags(&mut m, spec.up);
        m.attributes
            .push(LinkAttribute::IfName(spec.name.to_string()));
        set_mtu_mac(&mut m, spec.mtu, spec.mac);
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Vxlan),
            LinkInfo::Data(InfoData::Vxlan(data)),
        ]));
        self.sock
            .ack(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
            .map_err(|e| e.with_op(op))
    }

    /// Deletes the link with index `index` (a veth takes its peer with it).
    pub fn delete_link(&mut self, index: u32) -> NlResult<()> {
        self.sock
            .ack(RouteNetlinkMessage::DelLink(link_msg(index)), 0)
            .map_err(|e| e.with_op(|| format!("delete link ifindex {index}")))
    }

    /// Deletes the link named `name`.
    pub fn delete_link_by_name(&mut self, name: &str) -> NlResult<()> {
        let op = || format!("delete link {name}");
        validate_ifname(name).map_err(|e| e.with_op(op))?;
        let mut m = link_msg(0);
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.sock
            .ack(RouteNetlinkMessage::DelLink(m), 0)
            .map_err(|e| e.with_op(op))
    }

    /// Deletes the link named `name` if it exists; Ok(false) when it was already gone.
    pub fn delete_link_if_exists(&mut self, name: &str) -> NlResult<bool> {
        match self.delete_link_by_name(name) {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn set_link(&mut self, m: LinkMessage, op: impl FnOnce() -> String) -> NlResult<()> {
        self.sock
            .ack(RouteNetlinkMessage::SetLink(m), 0)
            .map_err(|e| e.with_op(op))
    }

    /// Sets the link administratively up (`true`) or down.
    pub fn set_link_up(&mut self, index: u32, up: bool) -> NlResult<()> {
        let mut m = link_msg(index);
        m.header.change_mask = LinkFlags::Up;
        if up {
            m.header.flags = LinkFlags::Up;
        }
        self.set_link(m, || {
            format!("set ifindex {index} {}", if up { "up" } else { "down" })
        })
    }

    /// Sets the MTU.
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> NlResult<()> {
        let mut m = link_msg(index);
        m.attributes.push(LinkAttribute::Mtu(mtu));
        self.set_link(m, || format!("set ifindex {index} mtu {mtu}"))
    }

    /// Sets the hardware address.
    pub fn set_mac(&mut self, index: u32, mac: MacAddr) -> NlResult<()> {
        let mut m = link_msg(index);
        m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        self.set_link(m, || format!("set ifindex {index} address {mac}"))
    }

    /// Enslaves the link to `master` (e.g. a bridge), or releases it with None ("nomaster").
    pub fn set_master(&mut self, index: u32, master: Option<u32>) -> NlResult<()> {
        let mut m = link_msg(index);
        m.attributes
            .push(LinkAttribute::Controller(master.unwrap_or(0)));
        self.set_link(m, || match master {
            Some(b) => format!("set ifindex {index} master ifindex {b}"),
            None => format!("set ifindex {index} nomaster"),
        })
    }

    /// Sets the interface alias (IFLA_IFALIAS); an empty string clears it.
    pub fn set_alias(&mut self, index: u32, alias: &str) -> NlResult<()> {
        let mut m = link_msg(index);
        m.attributes.push(LinkAttribute::IfAlias(alias.to_string()));
        self.set_link(m, || format!("set ifindex {index} alias \"{alias}\""))
    }

    /// Sets the alias (IFLA_IFALIAS) of the link named `name`; an empty string clears it.
    pub fn set_alias_by_name(&mut self, name: &str, alias: &str) -> NlResult<()> {
        let op = || format!("set alias \"{alias}\" on link {name}");
        validate_ifname(name).map_err(|e| e.with_op(op))?;
        let mut m = link_msg(0);
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        m.attributes.push(LinkAttribute::IfAlias(alias.to_string()));
        self.set_link(m, op)
    }

    /// Renames the link (it must be down).
    pub fn rename_link(&mut self, index: u32, name: &str) -> NlResult<()> {
        let op = || format!("rename ifindex {index} to {name}");
        validate_ifname(name).map_err(|e| e.with_op(op))?;
        let mut m = link_msg(index);
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.set_link(m, op)
    }

    /// Moves the link into the namespace of `netns` (an nsfs fd).
    pub fn move_link_to_netns(&mut self, index: u32, netns: BorrowedFd<'_>) -> NlResult<()> {
        let mut m = link_msg(index);
        m.attributes.push(LinkAttribute::NetNsFd(netns.as_raw_fd()));
        self.set_link(m, || format!("move ifindex {index} to another netns"))
    }

    /// Sets hairpin mode on a bridge port (AF_BRIDGE setlink, IFLA_PROTINFO/IFLA_BRPORT_MODE):
    /// frames may be sent back out the port they came in on. The link must be enslaved already.
    pub fn set_hairpin(&mut self, index: u32, on: bool) -> NlResult<()> {
        let mut nested = Vec::with_capacity(8);
        attr::push(&mut nested, IFLA_BRPORT_MODE, &[on as u8]);
        let mut m = link_msg(index);
        m.header.interface_family = AddressFamily::Bridge;
        m.attributes
            .push(LinkAttribute::ProtoInfoUnknown(DefaultNla::new(
                IFLA_PROTINFO | NLA_F_NESTED,
                nested,
            )));
        self.set_link(m, || {
            format!("set hairpin {} on bridge port ifindex {index}", on_off(on))
        })
    }
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifname_validation() {
        for ok in ["eth0", "cni0", "veth1234567890a", "eth0.5"] {
            assert!(validate_ifname(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "veth1234567890ab"] {
            assert!(validate_ifname(bad).is_err(), "{bad}");
        }
    }
}
