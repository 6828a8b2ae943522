//! Several requests in one send(2): [`Batch`] collects them, [`Netlink::send_batch`] sends
//! them together and reads every answer. The kernel handles them in order, each on its own,
//! exactly as if they had been sent one by one; only the system calls are saved (one send and
//! one receive for the lot instead of one each). And [`LinkChange`]: everything twill sets on
//! an existing link in one RTM_NEWLINK (alias, bridge port flags, IPv4 settings, up, MAC).

use netlink_packet_core::{DefaultNla, NLA_F_NESTED, NLM_F_DUMP};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::neighbour_table::{
    NeighbourTableAttribute, NeighbourTableMessage, NeighbourTableParameter,
};

use super::addr::{Address, parse_addr};
use super::attr;
use super::bridge_port::PortFlags;
use super::error::{NetlinkError, NlResult};
use super::link::{Link, parse_link, validate_ifname};
use super::socket::Outgoing;
use super::{Family, MacAddr, Netlink};

/// Address family numbers of `struct netconfmsg`.
mod libc_af {
    pub(super) const INET: u8 = 2;
    pub(super) const INET6: u8 = 10;
}

const IFLA_LINKINFO: u16 = 18;
const IFLA_AF_SPEC: u16 = 26;
const IFLA_INFO_SLAVE_KIND: u16 = 4;
const IFLA_INFO_SLAVE_DATA: u16 = 5;
const IFLA_INET_CONF: u16 = 1;
const IFLA_BRPORT_MODE: u16 = 4;
const IFLA_BRPORT_ISOLATED: u16 = 33;
const AF_INET: u16 = 2;
const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWNETCONF: u16 = 80;
const RTM_GETNETCONF: u16 = 82;
const NETCONFA_IFINDEX: u16 = 1;
const NETCONFA_FORWARDING: u16 = 2;
/// NETCONFA_IFINDEX naming the `all` settings (`net.ipv4.ip_forward` is IPv4's `all`
/// forwarding).
const NETCONFA_IFINDEX_ALL: i32 = -1;

/// IPv4 per-device settings (`IPV4_DEVCONF_*`, the files of `/proc/sys/net/ipv4/conf/<dev>/`)
/// that [`LinkChange::inet_conf`] can set.
pub mod inet_conf {
    /// `forwarding`.
    pub const FORWARDING: u16 = 1;
    /// `proxy_arp`.
    pub const PROXY_ARP: u16 = 3;
    /// `arp_notify`.
    pub const ARP_NOTIFY: u16 = 22;
}

/// One request of a batch: the message, its flags, what it does (for errors) and what its
/// answer carries.
struct Req {
    msg: Outgoing,
    flags: u16,
    op: String,
    reads: Reads,
}

/// What the answer to a request of a batch carries besides its ACK.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reads {
    /// Nothing (a change).
    Nothing,
    /// One link ([`Batch::get_link`]); "no such device" is an answer, not a failure.
    Link,
    /// A dump of addresses ([`Batch::list_addresses`]), redone on its own when interrupted.
    Addresses(Option<u32>, Option<Family>),
    /// A family's `all` forwarding setting ([`Batch::ask_forwarding`]); a refusal is no answer.
    Forwarding(Family),
}

/// What the reading requests of a batch sent with [`Netlink::send_batch_reading`] answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replies {
    /// One entry per [`Batch::get_link`] or [`Batch::get_link_by_name`], in batch order: the
    /// link, or None when there is no such link.
    pub links: Vec<Option<Link>>,
    /// Every address the [`Batch::list_addresses`] requests listed, in batch order.
    pub addresses: Vec<Address>,
    /// IPv4 forwarding (`net.ipv4.ip_forward`) as [`Batch::ask_forwarding`] found it; None
    /// when not asked or when the kernel did not answer (read /proc/sys then).
    pub ipv4_forwarding: Option<bool>,
    /// IPv6 forwarding (`net.ipv6.conf.all.forwarding`), as for IPv4.
    pub ipv6_forwarding: Option<bool>,
}

/// Requests to send together with [`Netlink::send_batch`], in the order they were added.
#[derive(Default)]
pub struct Batch {
    reqs: Vec<Req>,
    /// A request that could not be built: the batch fails with it, sending nothing.
    refused: Option<NetlinkError>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Adds a request (`flags` beyond NLM_F_REQUEST | NLM_F_ACK) described by `op`.
    pub(super) fn push(&mut self, msg: RouteNetlinkMessage, flags: u16, op: String) {
        self.reqs.push(Req {
            msg: Outgoing::Route(msg),
            flags,
            op,
            reads: Reads::Nothing,
        });
    }

    /// Asks the `all` forwarding setting of `family` (RTM_GETNETCONF, NETCONFA_IFINDEX_ALL:
    /// `net.ipv4.ip_forward`, `net.ipv6.conf.all.forwarding`), answered in
    /// [`Replies::ipv4_forwarding`] / [`Replies::ipv6_forwarding`]: one receive more in a send
    /// the caller makes anyway, instead of an open, read and close of /proc/sys.
    pub fn ask_forwarding(&mut self, family: Family) {
        let af = match family {
            Family::V4 => libc_af::INET,
            Family::V6 => libc_af::INET6,
        };
        let mut payload = vec![af, 0, 0, 0]; // struct netconfmsg, padded
        super::attr::push(
            &mut payload,
            NETCONFA_IFINDEX,
            &NETCONFA_IFINDEX_ALL.to_ne_bytes(),
        );
        self.reqs.push(Req {
            msg: Outgoing::Get(RTM_GETNETCONF, payload),
            flags: 0,
            op: match family {
                Family::V4 => "get IPv4 forwarding".into(),
                Family::V6 => "get IPv6 forwarding".into(),
            },
            reads: Reads::Forwarding(family),
        });
    }

    /// Looks link `index` up (RTM_GETLINK; its answer in [`Replies::links`]). On kernels from
    /// about 6.8 the lookup also runs the link's pending carrier work (linkwatch) first.
    pub fn get_link(&mut self, index: u32) {
        let mut m = LinkMessage::default();
        m.header.index = index;
        self.reqs.push(Req {
            msg: Outgoing::Route(RouteNetlinkMessage::GetLink(m)),
            flags: 0,
            op: format!("get link ifindex {index}"),
            reads: Reads::Link,
        });
    }

    /// Looks the link named `name` up (its answer in [`Replies::links`]).
    pub fn get_link_by_name(&mut self, name: &str) {
        if let Err(e) = validate_ifname(name) {
            self.refuse(e.with_op(|| format!("get link {name}")));
            return;
        }
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.reqs.push(Req {
            msg: Outgoing::Route(RouteNetlinkMessage::GetLink(m)),
            flags: 0,
            op: format!("get link {name}"),
            reads: Reads::Link,
        });
    }

    /// Lists the addresses of link `index` (all links when None) of `family` (both when None):
    /// a dump, served without the RTNL lock; its answer in [`Replies::addresses`].
    pub fn list_addresses(&mut self, index: Option<u32>, family: Option<Family>) {
        let m = super::addr::address_dump(index, family);
        self.reqs.push(Req {
            msg: Outgoing::Route(RouteNetlinkMessage::GetAddress(m)),
            flags: NLM_F_DUMP,
            op: "list addresses".into(),
            reads: Reads::Addresses(index, family),
        });
    }

    /// Records that a request could not be built: sending the batch then fails with `e` (the
    /// first such error) and sends nothing.
    pub(super) fn refuse(&mut self, e: NetlinkError) {
        self.refused.get_or_insert(e);
    }

    /// How many requests it holds.
    pub fn len(&self) -> usize {
        self.reqs.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Changes link `index` as `change` says (nothing when it asks for nothing).
    pub fn change_link(&mut self, index: u32, change: &LinkChange<'_>) {
        if let Some(m) = change.message(index) {
            self.push(RouteNetlinkMessage::NewLink(m), 0, change.describe(index));
        }
    }

    /// Sets the IPv4 neighbour table's `proxy_delay` of link `index` (in milliseconds; the
    /// sysctl `net/ipv4/neigh/<dev>/proxy_delay`).
    pub fn set_arp_proxy_delay(&mut self, index: u32, millis: u64) {
        let mut m = NeighbourTableMessage::default();
        m.header.family = AddressFamily::Inet;
        m.attributes
            .push(NeighbourTableAttribute::Name("arp_cache".to_string()));
        m.attributes.push(NeighbourTableAttribute::Parms(vec![
            NeighbourTableParameter::Ifindex(index),
            NeighbourTableParameter::ProxyDelay(millis),
        ]));
        self.push(
            RouteNetlinkMessage::SetNeighbourTable(m),
            0,
            format!("set proxy_delay {millis} ms on ifindex {index}"),
        );
    }
}

/// What to change on an existing link, in one RTM_NEWLINK without NLM_F_CREATE (the kernel
/// applies the port flags, then the rest in its usual order: MAC, alias, up, IPv4 settings).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkChange<'a> {
    /// The interface alias (IFLA_IFALIAS).
    pub alias: Option<&'a str>,
    /// Bridge port flags (the link must be a bridge port already).
    pub port: Option<PortFlags>,
    /// IPv4 settings of the link ([`inet_conf`] id, value), applied after it comes up.
    pub inet_conf: &'a [(u16, u32)],
    /// Bring the link up.
    pub up: bool,
    /// Set the MAC (to its own value, it makes the kernel announce the link's addresses when
    /// `arp_notify` is on).
    pub mac: Option<MacAddr>,
}

impl LinkChange<'_> {
    fn message(&self, index: u32) -> Option<LinkMessage> {
        if *self == LinkChange::default() {
            return None;
        }
        let mut m = LinkMessage::default();
        m.header.index = index;
        if self.up {
            m.header.flags = LinkFlags::Up;
            m.header.change_mask = LinkFlags::Up;
        }
        if let Some(mac) = self.mac {
            m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        }
        if let Some(alias) = self.alias {
            m.attributes.push(LinkAttribute::IfAlias(alias.to_string()));
        }
        if let Some(flags) = self.port {
            let mut data = Vec::with_capacity(16);
            attr::push(&mut data, IFLA_BRPORT_MODE, &[flags.hairpin as u8]);
            attr::push(&mut data, IFLA_BRPORT_ISOLATED, &[flags.isolated as u8]);
            let mut info = Vec::with_capacity(32);
            attr::push(&mut info, IFLA_INFO_SLAVE_KIND, b"bridge\0");
            attr::push(&mut info, IFLA_INFO_SLAVE_DATA | NLA_F_NESTED, &data);
            m.attributes.push(LinkAttribute::Other(DefaultNla::new(
                IFLA_LINKINFO | NLA_F_NESTED,
                info,
            )));
        }
        if !self.inet_conf.is_empty() {
            let mut conf = Vec::with_capacity(8 * self.inet_conf.len());
            for (id, value) in self.inet_conf {
                attr::push(&mut conf, *id, &value.to_ne_bytes());
            }
            let mut inet = Vec::with_capacity(conf.len() + 4);
            attr::push(&mut inet, IFLA_INET_CONF | NLA_F_NESTED, &conf);
            let mut spec = Vec::with_capacity(inet.len() + 4);
            attr::push(&mut spec, AF_INET | NLA_F_NESTED, &inet);
            m.attributes.push(LinkAttribute::Other(DefaultNla::new(
                IFLA_AF_SPEC | NLA_F_NESTED,
                spec,
            )));
        }
        Some(m)
    }

    fn describe(&self, index: u32) -> String {
        let mut what = Vec::new();
        if let Some(a) = self.alias {
            what.push(format!("alias \"{a}\""));
        }
        if let Some(p) = self.port {
            what.push(format!(
                "hairpin {} isolated {}",
                on_off(p.hairpin),
                on_off(p.isolated)
            ));
        }
        if self.up {
            what.push("up".into());
        }
        if let Some(m) = self.mac {
            what.push(format!("address {m}"));
        }
        for (id, v) in self.inet_conf {
            what.push(format!("ipv4 conf {} {v}", conf_name(*id)));
        }
        format!("set ifindex {index} {}", what.join(" "))
    }
}

fn conf_name(id: u16) -> String {
    match id {
        inet_conf::FORWARDING => "forwarding".into(),
        inet_conf::PROXY_ARP => "proxy_arp".into(),
        inet_conf::ARP_NOTIFY => "arp_notify".into(),
        other => format!("#{other}"),
    }
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

impl Netlink {
    /// Sends every request of `batch` in one send(2) and reads all their answers; the first
    /// failure (in the batch's order) names its request. The kernel handles each request
    /// whatever happened to the ones before it. An empty batch sends nothing.
    pub fn send_batch(&mut self, batch: Batch) -> NlResult<()> {
        if let Some(e) = batch.refused {
            return Err(e);
        }
        if batch.reqs.is_empty() {
            return Ok(());
        }
        if batch.reqs.iter().any(|r| r.reads != Reads::Nothing) {
            return self.send_batch_reading(batch).map(drop);
        }
        let mut ops = Vec::with_capacity(batch.reqs.len());
        let mut msgs = Vec::with_capacity(batch.reqs.len());
        for r in batch.reqs {
            ops.push(r.op);
            if let Outgoing::Route(m) = r.msg {
                msgs.push((m, r.flags));
            }
        }
        self.sock.ack_all(msgs).map_err(|(i, e)| {
            let op = ops.get(i).cloned().unwrap_or_default();
            e.with_op(|| op)
        })
    }

    /// [`Netlink::send_batch`] for a batch that also reads: every request goes out in one
    /// send(2), in order, and the answers of its lookups and listings come back as
    /// [`Replies`]. A lookup of a link that does not exist answers None; any other failure is
    /// the first one in batch order, naming its request (the requests after it still ran). An
    /// address listing the kernel flags as interrupted by concurrent changes is redone on its
    /// own.
    pub fn send_batch_reading(&mut self, batch: Batch) -> NlResult<Replies> {
        if let Some(e) = batch.refused {
            return Err(e);
        }
        let mut ops = Vec::with_capacity(batch.reqs.len());
        let mut reads = Vec::with_capacity(batch.reqs.len());
        let mut msgs = Vec::with_capacity(batch.reqs.len());
        for r in batch.reqs {
            ops.push(r.op);
            reads.push(r.reads);
            msgs.push((r.msg, r.flags));
        }
        let mut links: Vec<Option<Link>> = vec![None; reads.len()];
        let mut addresses: Vec<(usize, Address)> = Vec::new();
        let mut forwarding: Vec<Option<bool>> = vec![None; reads.len()];
        let answers = self
            .sock
            .exchange(msgs, &mut |i, ty, p| match reads.get(i) {
                Some(Reads::Link) if ty == RTM_NEWLINK => links[i] = parse_link(p),
                Some(Reads::Addresses(index, family)) if ty == RTM_NEWADDR => {
                    if let Some(a) = parse_addr(p).filter(|a| {
                        index.is_none_or(|x| x == a.index) && family.is_none_or(|f| f == a.family())
                    }) {
                        addresses.push((i, a));
                    }
                }
                Some(Reads::Forwarding(_)) if ty == RTM_NEWNETCONF => {
                    forwarding[i] = super::attr::Attrs::after(p, 4)
                        .find(|(t, _)| *t == NETCONFA_FORWARDING)
                        .and_then(|(_, v)| super::attr::i32_ne(v))
                        .map(|v| v != 0);
                }
                _ => {}
            })?;
        let mut replies = Replies::default();
        for (i, answer) in answers.into_iter().enumerate() {
            match (reads[i], answer.result) {
                (Reads::Link, Err(e)) if e.is_not_found() => replies.links.push(None),
                // Refused (a kernel without netconf for the family): no answer, /proc decides.
                (Reads::Forwarding(_), Err(_)) => {}
                (Reads::Forwarding(family), Ok(())) => match family {
                    Family::V4 => replies.ipv4_forwarding = forwarding[i],
                    Family::V6 => replies.ipv6_forwarding = forwarding[i],
                },
                (_, Err(e)) => {
                    let op = std::mem::take(&mut ops[i]);
                    return Err(e.with_op(|| op));
                }
                (Reads::Link, Ok(())) => replies.links.push(links[i].take()),
                (Reads::Addresses(index, family), Ok(())) if answer.interrupted => {
                    replies.addresses.extend(self.addresses(index, family)?);
                }
                (Reads::Addresses(..), Ok(())) => replies.addresses.extend(
                    addresses
                        .iter()
                        .filter(|(j, _)| *j == i)
                        .map(|(_, a)| a.clone()),
                ),
                (Reads::Nothing, Ok(())) => {}
            }
        }
        Ok(replies)
    }

    /// Changes link `index` as `change` says, in one request (none when it asks for nothing).
    pub fn change_link(&mut self, index: u32, change: &LinkChange<'_>) -> NlResult<()> {
        let mut b = Batch::new();
        b.change_link(index, change);
        self.send_batch(b)
    }
}
