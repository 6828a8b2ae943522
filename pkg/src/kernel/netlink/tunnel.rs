//! IP-in-IP tunnel devices (link kind `ipip`): the kernel's per-namespace fallback device
//! `tunl0`, named tunnels, their parameters as the kernel reports them, and a probe for ipip
//! support that creates nothing.
//!
//! A kernel without ipip (CONFIG_NET_IPIP unset, module not loadable) refuses a create with
//! EOPNOTSUPP ("Unknown device type"); [`is_missing_kind`] recognises that answer.

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    InfoData, InfoIpTunnel, InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};

use super::attr::{self, Attrs};
use super::error::{NetlinkError, NlResult};
use super::link::parse_link;
use super::{Link, Netlink, validate_ifname};

/// The fallback ipip device the kernel makes in every namespace once ipip is loaded.
pub const IPIP_FALLBACK: &str = "tunl0";

const RTM_NEWLINK: u16 = 16;
const IFINFOMSG_LEN: usize = 16;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_IPTUN_LOCAL: u16 = 2;
const IFLA_IPTUN_REMOTE: u16 = 3;
const IFLA_IPTUN_PROTO: u16 = 9;
/// A tunnel protocol no ipip driver accepts (it takes IPPROTO_IPIP, IPPROTO_MPLS or 0).
const PROBE_PROTO: u8 = 255;
/// The name the probe asks about; the kernel refuses the request before looking it up.
const PROBE_NAME: &str = "twill-ipip-chk";

/// An ipip device to create.
#[derive(Debug, Clone, Default)]
pub struct IpipSpec<'a> {
    /// Name (not [`IPIP_FALLBACK`]: the kernel makes that one itself).
    pub name: &'a str,
    /// Local (outer source) address; the kernel refuses a second tunnel with the fallback's
    /// parameters (no local, no remote), so a named tunnel needs one.
    pub local: Option<Ipv4Addr>,
    /// MTU; the kernel derives one from the underlay when None.
    pub mtu: Option<u32>,
    /// Bring it up in the same request.
    pub up: bool,
}

/// An ipip device as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpipLink {
    /// The link (index, name, MTU, up state).
    pub link: Link,
    /// Local (outer source) address, None when any.
    pub local: Option<Ipv4Addr>,
    /// Remote (outer destination) address, None for a point-to-multipoint tunnel (the
    /// route's gateway is the destination).
    pub remote: Option<Ipv4Addr>,
}

/// True when `e` is the kernel's answer to a link kind it does not know (EOPNOTSUPP,
/// "Unknown device type"): the driver is neither built in nor loadable.
pub fn is_missing_kind(e: &NetlinkError) -> bool {
    e.errno() == Some(nix::libc::EOPNOTSUPP)
}

fn v4(v: &[u8]) -> Option<Ipv4Addr> {
    match attr::ip(v)? {
        IpAddr::V4(a) if !a.is_unspecified() => Some(a),
        _ => None,
    }
}

/// Decodes an RTM_NEWLINK payload of kind `ipip`; None for any other link.
fn parse_ipip(p: &[u8]) -> Option<IpipLink> {
    let link = parse_link(p)?;
    if link.kind.as_deref() != Some("ipip") {
        return None;
    }
    let mut out = IpipLink {
        link,
        local: None,
        remote: None,
    };
    let info = Attrs::after(p, IFINFOMSG_LEN).find(|(ty, _)| *ty == IFLA_LINKINFO);
    let data = info.and_then(|(_, v)| Attrs::new(v).find(|(ty, _)| *ty == IFLA_INFO_DATA));
    if let Some((_, d)) = data {
        for (ty, v) in Attrs::new(d) {
            match ty {
                IFLA_IPTUN_LOCAL => out.local = v4(v),
                IFLA_IPTUN_REMOTE => out.remote = v4(v),
                _ => {}
            }
        }
    }
    Some(out)
}

fn named(name: &str) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    m
}

impl Netlink {
    /// Creates a point-to-multipoint ipip device (no remote: each route's gateway is the
    /// outer destination), NLM_F_EXCL. A kernel without ipip answers an error for which
    /// [`is_missing_kind`] is true.
    pub fn create_ipip(&mut self, spec: &IpipSpec<'_>) -> NlResult<()> {
        let op = || format!("create ipip device {}", spec.name);
        validate_ifname(spec.name).map_err(|e| e.with_op(op))?;
        let mut data = Vec::new();
        if let Some(a) = spec.local {
            data.push(InfoIpTunnel::Local(IpAddr::V4(a)));
        }
        let mut m = named(spec.name);
        if spec.up {
            m.header.flags |= LinkFlags::Up;
            m.header.change_mask |= LinkFlags::Up;
        }
        if let Some(mtu) = spec.mtu {
            m.attributes.push(LinkAttribute::Mtu(mtu));
        }
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::IpIp),
            LinkInfo::Data(InfoData::IpTunnel(data)),
        ]));
        self.sock
            .ack(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
            .map_err(|e| e.with_op(op))
    }

    /// The ipip device named `name`; None when no link of that name exists or it is not an
    /// ipip device ([`Netlink::link_by_name`] tells the two apart).
    pub fn ipip_link(&mut self, name: &str) -> NlResult<Option<IpipLink>> {
        let op = || format!("get ipip device {name}");
        validate_ifname(name).map_err(|e| e.with_op(op))?;
        let mut found = None;
        let res = self.sock.request(
            RouteNetlinkMessage::GetLink(named(name)),
            0,
            &mut |ty, p| {
                if ty == RTM_NEWLINK {
                    found = parse_ipip(p);
                }
                Ok(())
            },
        );
        match res {
            Ok(()) => Ok(found),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.with_op(op)),
        }
    }

    /// Every ipip device of the namespace (one link dump).
    pub fn ipip_links(&mut self) -> NlResult<Vec<IpipLink>> {
        let msg = RouteNetlinkMessage::GetLink(LinkMessage::default());
        self.sock
            .dump(msg, &mut |ty, p| {
                if ty == RTM_NEWLINK {
                    parse_ipip(p)
                } else {
                    None
                }
            })
            .map_err(|e| e.with_op(|| "list ipip devices".into()))
    }

    /// Whether the kernel can make ipip devices, creating nothing: one RTM_NEWLINK without
    /// NLM_F_CREATE whose ipip data carries a tunnel protocol no driver accepts. A kernel with
    /// ipip (built in, loaded, or loaded on demand by this very request) refuses it in the
    /// driver's validation (EINVAL) before looking the name up; one without answers
    /// EOPNOTSUPP or ENODEV (no such device, and creating was not asked for). The driver
    /// validates the protocol since Linux 4.7; older kernels would answer ENODEV (false).
    pub fn ipip_available(&mut self) -> NlResult<bool> {
        let mut m = named(PROBE_NAME);
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::IpIp),
            LinkInfo::Data(InfoData::IpTunnel(vec![InfoIpTunnel::Other(
                DefaultNla::new(IFLA_IPTUN_PROTO, vec![PROBE_PROTO]),
            )])),
        ]));
        match self.sock.ack(RouteNetlinkMessage::NewLink(m), 0) {
            Err(e) if e.errno() == Some(nix::libc::EINVAL) => Ok(true),
            Err(e)
                if matches!(
                    e.errno(),
                    Some(nix::libc::EOPNOTSUPP) | Some(nix::libc::ENODEV)
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e.with_op(|| "probe for ipip support".into())),
            Ok(()) => Err(NetlinkError::decode(
                "the kernel accepted an ipip request it should refuse (probe for ipip support)",
            )),
        }
    }
}
