//! Calico's IP-in-IP data plane on the node: one ipip tunnel device (the kernel's fallback
//! `tunl0`, or a named point-to-multipoint tunnel), up, with MTU = underlay - 20 unless
//! configured and the first address of the node's block as /32; and one route per other node,
//! `podCIDR via nodeIP dev <tunnel> onlink` (the gateway is the outer destination). With
//! `crossSubnet`, a peer whose node IP is on a subnet of this node is routed host-gw style
//! (`podCIDR via nodeIP`) and only peers behind a router are encapsulated. IPv4 only.
//!
//! [`Ipip::ensure`] makes the device as a pod ADD needs it and returns the plane bound to the
//! device's index; the device is also one of the plane's objects, so the one reconcile (and
//! twilld) keeps its MTU, state and address true. A kernel without ipip gets
//! [`missing_ipip`]'s error, naming CONFIG_NET_IPIP and `modprobe ipip`; [`status`] asks the
//! same question without creating anything.

use std::net::{IpAddr, Ipv4Addr};

use ipnetwork::{IpNetwork, Ipv4Network};

use crate::error::{Error, Result, code};
use crate::kernel::netlink::{
    AddrOptions, Broadcast, Family, IPIP_FALLBACK, IpipSpec, Netlink, RouteFilter, is_missing_kind,
    rt_table,
};
use crate::node::peers::Peer;
use crate::node::reconcile::{DataPlane, Found, Kind, Object, PeerRoute, Reject};
use crate::node::routed::Routed;

/// The device used unless configured: the kernel's fallback ipip device.
pub const DEFAULT_DEVICE: &str = IPIP_FALLBACK;
/// Bytes the outer IPv4 header adds: the tunnel MTU is the underlay's minus this.
pub const IPIP_OVERHEAD: u32 = 20;

/// The tunnel device as the plane wants it, or as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpipDevice {
    /// Device name.
    pub name: String,
    /// Local (outer source) address; None for `tunl0` (any).
    pub local: Option<Ipv4Addr>,
    /// MTU.
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
    /// Its /32 addresses (wanted: the first address of the node's block).
    pub addresses: Vec<Ipv4Addr>,
}

impl IpipDevice {
    /// True when `found` (from the kernel) is what `self` (wanted) asks for; other /32
    /// addresses on the device are not twill's business.
    pub fn satisfied_by(&self, found: &IpipDevice) -> bool {
        self.name == found.name
            && self.local == found.local
            && self.mtu == found.mtu
            && self.up == found.up
            && self.addresses.iter().all(|a| found.addresses.contains(a))
    }

    /// The fields of a state-file line after `ipip` (no spaces inside fields).
    pub fn to_fields(&self) -> String {
        let addrs: Vec<String> = self.addresses.iter().map(Ipv4Addr::to_string).collect();
        format!(
            "{} {} {} {} {}",
            self.name,
            self.local.map_or("-".into(), |a| a.to_string()),
            self.mtu,
            u8::from(self.up),
            if addrs.is_empty() {
                "-".into()
            } else {
                addrs.join(",")
            }
        )
    }

    /// Parses [`IpipDevice::to_fields`]'s output, split on spaces; None for anything else.
    pub fn from_fields(f: &[&str]) -> Option<IpipDevice> {
        let [name, local, mtu, up, addrs] = f else {
            return None;
        };
        Some(IpipDevice {
            name: name.to_string(),
            local: match *local {
                "-" => None,
                a => Some(a.parse().ok()?),
            },
            mtu: mtu.parse().ok()?,
            up: *up == "1",
            addresses: match *addrs {
                "-" => Vec::new(),
                list => list
                    .split(',')
                    .map(str::parse)
                    .collect::<std::result::Result<_, _>>()
                    .ok()?,
            },
        })
    }
}

/// What the node's tunnel should be, from the network config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelConf {
    /// `device` (default [`DEFAULT_DEVICE`]).
    pub device: String,
    /// `mtu` of the tunnel (and the pods); underlay - 20 when None.
    pub mtu: Option<u32>,
    /// The node's pod block: its first address goes on the device as /32.
    pub block: IpNetwork,
    /// The node's own underlay address: the local end of a named tunnel (the kernel refuses
    /// a second tunnel with `tunl0`'s endpoints, so a named device without one fails).
    pub local: Option<Ipv4Addr>,
    /// `crossSubnet`: encapsulate only towards peers behind a router.
    pub cross_subnet: bool,
}

/// The error for a kernel without ipip, naming what is missing and how to get it.
pub fn missing_ipip(errcode: u32, device: &str) -> Error {
    Error::new(
        errcode,
        format!(
            "this kernel has no IP-in-IP support, so the ipip device {device} cannot exist: \
             load the ipip module (`modprobe ipip`) or use a kernel built with CONFIG_NET_IPIP"
        ),
    )
}

/// STATUS: code 50 with [`missing_ipip`]'s message when the kernel cannot make ipip devices;
/// creates nothing (see [`Netlink::ipip_available`]).
pub fn status(node: &mut Netlink, device: &str) -> Result<()> {
    if node.ipip_available()? {
        Ok(())
    } else {
        Err(missing_ipip(code::NOT_AVAILABLE, device))
    }
}

/// The tunnel MTU: `configured`, else the underlay's minus [`IPIP_OVERHEAD`].
pub fn tunnel_mtu(configured: Option<u32>, underlay: u32) -> u32 {
    configured.unwrap_or_else(|| underlay.saturating_sub(IPIP_OVERHEAD))
}

/// The tunnel's address: the first address of the node's block; code 7 for an IPv6 block
/// (ipip carries IPv4 only).
pub fn tunnel_address(block: IpNetwork) -> Result<Ipv4Addr> {
    match block {
        IpNetwork::V4(b) => Ok(b.network()),
        IpNetwork::V6(b) => Err(Error::new(
            code::INVALID_CONFIG,
            format!(
                "ipip carries IPv4 only, but the node's block {b} is IPv6: use an IPv4 range \
                 (or the vxlan data plane for IPv6)"
            ),
        )),
    }
}

/// The device `conf` asks for on a node whose underlay MTU is `underlay_mtu`.
fn wanted(conf: &TunnelConf, underlay_mtu: u32) -> Result<IpipDevice> {
    Ok(IpipDevice {
        name: conf.device.clone(),
        local: conf.local.filter(|_| conf.device != IPIP_FALLBACK),
        mtu: tunnel_mtu(conf.mtu, underlay_mtu),
        up: true,
        addresses: vec![tunnel_address(conf.block)?],
    })
}

/// The node's own underlay address: the first IPv4 address of the link of its IPv4 default
/// route (a named tunnel's local end), if there is one. A main-table dump and an address dump.
pub fn uplink_address(node: &mut Netlink) -> Result<Option<Ipv4Addr>> {
    let filter = RouteFilter {
        family: Some(Family::V4),
        table: Some(rt_table::MAIN),
        ..Default::default()
    };
    let uplink = node
        .routes(&filter)?
        .into_iter()
        .find(|r| r.dst.prefix() == 0 && r.kind == 1)
        .and_then(|r| r.oif);
    let Some(oif) = uplink else {
        return Ok(None);
    };
    Ok(node
        .addresses(Some(oif), Some(Family::V4))?
        .into_iter()
        .filter(|a| a.index == oif)
        .find_map(|a| match a.addr {
            IpAddr::V4(v) if !v.is_loopback() && !v.is_link_local() => Some(v),
            _ => None,
        }))
}

/// The ipip data plane, bound to the tunnel device's index on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipip {
    device: IpipDevice,
    ifindex: u32,
    cross_subnet: bool,
    local_subnets: Vec<Ipv4Network>,
    own: Routed,
}

impl Ipip {
    /// Makes the node's tunnel as `conf` says (a named device is created if missing; `tunl0`
    /// exists once ipip is loaded), up, with its MTU (`underlay_mtu` - 20 unless configured)
    /// and the block's first address; returns the plane and whether the device was created
    /// here (a rollback deletes it). Nothing is created on a kernel without ipip: the error
    /// is [`missing_ipip`] with code 50.
    pub fn ensure(
        node: &mut Netlink,
        conf: &TunnelConf,
        underlay_mtu: u32,
    ) -> Result<(Ipip, bool)> {
        let device = wanted(conf, underlay_mtu)?;
        let (created, ifindex) = apply(node, &device)?;
        Ok((Ipip::bound(node, device, ifindex, conf)?, created))
    }

    /// The plane [`Ipip::ensure`] would make, without changing anything (CHECK, STATUS):
    /// bound to the device's index when it exists, else to 0 (its routes then count as
    /// missing; see [`Ipip::check_device`]).
    pub fn planned(node: &mut Netlink, conf: &TunnelConf, underlay_mtu: u32) -> Result<Ipip> {
        let device = wanted(conf, underlay_mtu)?;
        let ifindex = node.ipip_link(&device.name)?.map_or(0, |l| l.link.index);
        Ipip::bound(node, device, ifindex, conf)
    }

    fn bound(
        node: &mut Netlink,
        device: IpipDevice,
        ifindex: u32,
        conf: &TunnelConf,
    ) -> Result<Ipip> {
        let mut local_subnets = Vec::new();
        if conf.cross_subnet {
            for a in node.addresses(None, Some(Family::V4))? {
                if let IpAddr::V4(ip) = a.addr
                    && a.prefix_len < 32
                    && a.index != ifindex
                    && let Ok(n) = Ipv4Network::new(ip, a.prefix_len)
                {
                    local_subnets.push(n);
                }
            }
            local_subnets.sort();
            local_subnets.dedup();
        }
        Ok(Ipip {
            device,
            ifindex,
            cross_subnet: conf.cross_subnet,
            local_subnets,
            own: Routed::default(),
        })
    }

    /// The plane that also blackholes the node's own `blocks` (as [`Routed`] does for routed
    /// pods), so a packet to an unallocated pod address is dropped here rather than sent to
    /// the default route.
    pub fn blackholing(mut self, blocks: &[IpNetwork]) -> Ipip {
        self.own = Routed::new(blocks);
        self
    }

    /// Undoes an [`Ipip::ensure`] that created the device (the ADD's rollback): a named device
    /// is deleted; the kernel's `tunl0` is never created here, so it is left as it is.
    pub fn delete_created(&self, node: &mut Netlink) -> Result<()> {
        if self.device.name == IPIP_FALLBACK {
            return Ok(());
        }
        remove(node, &self.device)
    }

    /// CHECK of the tunnel device: code 50 ([`missing_ipip`]) on a kernel without ipip, code
    /// 105 when the device is missing or is not as the plane wants it (the next ADD repairs
    /// it).
    pub fn check_device(&self, node: &mut Netlink) -> Result<()> {
        let name = &self.device.name;
        let Some(found) = found_devices(node)?
            .into_iter()
            .find_map(|f| match f.object {
                Object::Ipip(d) if &d.name == name => Some(d),
                _ => None,
            })
        else {
            if !node.ipip_available()? {
                return Err(missing_ipip(code::NOT_AVAILABLE, name));
            }
            return Err(Error::new(
                code::CHECK_FAILED,
                format!("ipip device {name} is missing (the next ADD makes it)"),
            ));
        };
        if self.device.satisfied_by(&found) {
            return Ok(());
        }
        Err(Error::new(
            code::CHECK_FAILED,
            format!(
                "ipip device {name} is {} but should be {} (name, local end, MTU, up,                  addresses; the next ADD repairs it)",
                found.to_fields(),
                self.device.to_fields()
            ),
        ))
    }

    /// The tunnel device as the plane wants it.
    pub fn device(&self) -> &IpipDevice {
        &self.device
    }

    /// The tunnel device's interface index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    fn direct(&self, node_ip: Ipv4Addr) -> bool {
        self.cross_subnet && self.local_subnets.iter().any(|n| n.contains(node_ip))
    }
}

impl DataPlane for Ipip {
    fn key(&self) -> String {
        let subnets: Vec<String> = self.local_subnets.iter().map(|n| n.to_string()).collect();
        let mut key = format!(
            "ipip {} ifindex {} crossSubnet {} local subnets {}",
            self.device.to_fields(),
            self.ifindex,
            self.cross_subnet,
            subnets.join(",")
        );
        if !self.own.blocks().is_empty() {
            key.push_str(" own ");
            key.push_str(&self.own.key());
        }
        key
    }

    fn owns(&self) -> &'static [Kind] {
        if self.own.blocks().is_empty() {
            &[Kind::Device, Kind::Route]
        } else {
            &[Kind::Device, Kind::Route, Kind::Blackhole]
        }
    }

    fn reject(&self, p: &Peer, _local: &[IpNetwork]) -> Option<Reject> {
        if p.node_ip.is_ipv4() && p.pod_cidr.is_ipv4() {
            return None;
        }
        Some(Reject {
            reason: format!(
                "ipip carries IPv4 only: podCIDR {} via nodeIP {} cannot be tunnelled (list \
                 IPv4 addresses, or use the vxlan data plane for IPv6)",
                p.pod_cidr, p.node_ip
            ),
            depends_on_node: false,
        })
    }

    fn desired(&self, peers: &[&Peer]) -> Vec<Object> {
        let mut out = Vec::with_capacity(peers.len() + 1);
        out.push(Object::Ipip(self.device.clone()));
        for p in peers {
            let IpAddr::V4(node_ip) = p.node_ip else {
                continue;
            };
            if self.direct(node_ip) {
                out.push(Object::Route(PeerRoute::via(p.pod_cidr, p.node_ip)));
            } else {
                out.push(Object::Route(PeerRoute {
                    dst: p.pod_cidr,
                    gateway: Some(p.node_ip),
                    oif: Some(self.ifindex),
                    onlink: true,
                    metric: 0,
                }));
            }
        }
        out.extend(self.own.desired(&[]));
        out
    }
}

/// Makes the kernel hold `d` (creating a missing named device): whether it was created, and
/// its index. A link of that name that is not an ipip device is a conflict (code 104), left
/// alone. Writes only what differs.
pub(crate) fn apply(node: &mut Netlink, d: &IpipDevice) -> Result<(bool, u32)> {
    let mut created = false;
    let mut found = node.ipip_link(&d.name)?;
    if found.is_none()
        && let Some(l) = node.link_by_name(&d.name)?
    {
        let what = l.kind.map_or("a physical or loopback device".into(), |k| {
            format!("a {k} device")
        });
        return Err(Error::new(
            code::CONFLICT,
            format!(
                "device {} exists and is {what}, not an ipip tunnel: remove it or set `device` \
                 to another name",
                d.name
            ),
        ));
    }
    if let Some(f) = &found
        && f.local != d.local
        && d.name != IPIP_FALLBACK
    {
        node.delete_link_by_name(&d.name)?;
        found = None;
    }
    let found = match found {
        Some(f) => f,
        None => {
            let spec = IpipSpec {
                name: &d.name,
                local: d.local,
                mtu: Some(d.mtu),
                up: d.up,
            };
            match node.create_ipip(&spec) {
                Ok(()) => created = true,
                Err(e) if is_missing_kind(&e) => {
                    return Err(missing_ipip(code::NOT_AVAILABLE, &d.name));
                }
                Err(e) if e.is_exists() && d.local.is_none() => {
                    return Err(Error::new(
                        code::CONFLICT,
                        format!(
                            "ipip device {} cannot be made: the kernel's {IPIP_FALLBACK} already \
                             is the tunnel without endpoints; use `device` {IPIP_FALLBACK} or \
                             give the node's IP as the local end",
                            d.name
                        ),
                    ));
                }
                Err(e) => return Err(e.into()),
            }
            node.ipip_link(&d.name)?.ok_or_else(|| {
                Error::new(
                    code::NETLINK,
                    format!("ipip device {} vanished right after it was created", d.name),
                )
            })?
        }
    };
    let index = found.link.index;
    if found.link.mtu != d.mtu {
        node.set_mtu(index, d.mtu)?;
    }
    if found.link.admin_up != d.up {
        node.set_link_up(index, d.up)?;
    }
    let opts = AddrOptions {
        broadcast: Broadcast::None,
        ..AddrOptions::default()
    };
    let held: Vec<IpAddr> = node
        .addresses(Some(index), Some(Family::V4))?
        .into_iter()
        .filter(|a| a.index == index && a.prefix_len == 32)
        .map(|a| a.addr)
        .collect();
    for a in d
        .addresses
        .iter()
        .filter(|a| !held.contains(&IpAddr::V4(**a)))
    {
        let net = IpNetwork::V4(Ipv4Network::from(*a));
        node.replace_address(index, net, &opts)?;
    }
    Ok((created, index))
}

/// Undoes `d`: a named device is deleted; the kernel's `tunl0` cannot be, so it loses the
/// addresses twill put on it and goes down. Already gone is Ok.
pub(crate) fn remove(node: &mut Netlink, d: &IpipDevice) -> Result<()> {
    if d.name != IPIP_FALLBACK {
        node.delete_link_if_exists(&d.name)?;
        return Ok(());
    }
    let Some(l) = node.ipip_link(&d.name)? else {
        return Ok(());
    };
    for a in &d.addresses {
        let net = IpNetwork::V4(Ipv4Network::from(*a));
        match node.delete_address(l.link.index, net) {
            Err(e) if !e.is_not_found() => return Err(e.into()),
            _ => {}
        }
    }
    node.set_link_up(l.link.index, false)?;
    Ok(())
}

/// Every ipip device of the node as reconcile objects, with their /32 addresses (one link
/// dump, and one IPv4 address dump when there are any); every one counts as twill's to
/// configure (routes stay owned by protocol).
pub(crate) fn found_devices(node: &mut Netlink) -> Result<Vec<Found>> {
    let links = node.ipip_links()?;
    if links.is_empty() {
        return Ok(Vec::new());
    }
    let addrs = node.addresses(None, Some(Family::V4))?;
    Ok(links
        .into_iter()
        .map(|l| {
            let addresses = addrs
                .iter()
                .filter(|a| a.index == l.link.index && a.prefix_len == 32)
                .filter_map(|a| match a.addr {
                    IpAddr::V4(v) => Some(v),
                    IpAddr::V6(_) => None,
                })
                .collect();
            Found {
                ours: true,
                object: Object::Ipip(IpipDevice {
                    name: l.link.name,
                    local: l.local,
                    mtu: l.link.mtu,
                    up: l.link.admin_up,
                    addresses,
                }),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(node: &str, cidr: &str) -> Peer {
        Peer {
            node_ip: node.parse().unwrap(),
            pod_cidr: cidr.parse().unwrap(),
            vtep_mac: None,
        }
    }

    fn plane(cross_subnet: bool) -> Ipip {
        Ipip {
            device: IpipDevice {
                name: "tunl0".into(),
                local: None,
                mtu: 1480,
                up: true,
                addresses: vec!["10.244.1.0".parse().unwrap()],
            },
            ifindex: 7,
            cross_subnet,
            local_subnets: vec!["10.0.0.0/24".parse().unwrap()],
            own: Routed::default(),
        }
    }

    #[test]
    fn peers_go_through_the_tunnel_unless_cross_subnet_finds_them_on_link() {
        let near = peer("10.0.0.2", "10.244.2.0/24");
        let far = peer("10.9.0.3", "10.244.3.0/24");
        let tunnelled = |p: &Peer| {
            Object::Route(PeerRoute {
                dst: p.pod_cidr,
                gateway: Some(p.node_ip),
                oif: Some(7),
                onlink: true,
                metric: 0,
            })
        };
        let always = plane(false).desired(&[&near, &far]);
        assert_eq!(always[0], Object::Ipip(plane(false).device));
        assert_eq!(always[1..], [tunnelled(&near), tunnelled(&far)]);
        let cross = plane(true).desired(&[&near, &far]);
        assert_eq!(
            cross[1..],
            [
                Object::Route(PeerRoute::via(near.pod_cidr, near.node_ip)),
                tunnelled(&far)
            ]
        );
        assert_ne!(plane(true).key(), plane(false).key());
    }

    #[test]
    fn a_blackholing_plane_adds_its_own_blocks_and_owns_blackholes() {
        let bare = plane(false);
        assert!(!bare.owns().contains(&Kind::Blackhole));
        let own: IpNetwork = "10.244.1.0/24".parse().unwrap();
        let p = plane(false).blackholing(&[own]);
        assert!(p.owns().contains(&Kind::Blackhole));
        let peer = peer("10.0.0.2", "10.244.2.0/24");
        let want = p.desired(&[&peer]);
        assert_eq!(want.last(), Some(&Object::blackhole(own)));
        assert_eq!(want[..2], bare.desired(&[&peer])[..]);
        assert_ne!(p.key(), bare.key());
    }

    #[test]
    fn ipv6_peers_and_blocks_are_refused_with_the_reason() {
        let why = plane(false)
            .reject(&peer("fd00::2", "fd10:2::/64"), &[])
            .unwrap();
        assert!(
            why.reason.contains("IPv4 only") && !why.depends_on_node,
            "{why:?}"
        );
        assert!(
            plane(false)
                .reject(&peer("10.0.0.2", "10.244.2.0/24"), &[])
                .is_none()
        );
        let e = tunnel_address("fd10:1::/64".parse().unwrap()).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(e.msg.contains("IPv4 only"), "{e}");
        assert_eq!(
            tunnel_address("10.244.1.0/24".parse().unwrap()).unwrap(),
            "10.244.1.0".parse::<Ipv4Addr>().unwrap()
        );
        assert_eq!(tunnel_mtu(None, 1500), 1480);
        assert_eq!(tunnel_mtu(Some(1400), 1500), 1400);
    }

    #[test]
    fn device_state_lines_round_trip_and_extra_addresses_still_satisfy() {
        let d = plane(false).device;
        let o = Object::Ipip(d.clone());
        assert_eq!(Object::from_line(&o.to_line()), Some(o));
        let mut found = d.clone();
        found.addresses.push("192.168.9.9".parse().unwrap());
        assert!(d.satisfied_by(&found));
        found.mtu = 1500;
        assert!(!d.satisfied_by(&found));
        let named = IpipDevice {
            name: "twip0".into(),
            local: Some("10.0.0.1".parse().unwrap()),
            addresses: vec![],
            ..d
        };
        let o = Object::Ipip(named);
        assert_eq!(Object::from_line(&o.to_line()), Some(o));
    }
}
