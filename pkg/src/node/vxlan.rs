//! flannel's vxlan data plane on the node: the other nodes' pod subnets are reached through a
//! VXLAN device, one per underlay family (`twill.<VNI>` over IPv4, `twill6.<VNI>` over IPv6),
//! so the nodes need only IP reachability between them.
//!
//! The device: VNI, UDP port, `local` = this node's underlay address, learning off, MTU =
//! underlay MTU - 50 (IPv4) or - 70 (IPv6), this node's pod subnet's network address as a
//! host address (/32, /128), and a MAC derived from (VNI, node IP) ([`vtep_mac`]) so that peers
//! compute it from the cluster view and a reboot never changes it (a view entry may also give
//! an explicit `vtepMAC`). [`Vxlan::ensure`] makes it so before the reconcile: one that exists
//! with another VNI, port or local address is replaced, a compatible one is left alone (its MTU
//! and MAC are corrected in place), and racing ADDs on a fresh node all end up with the same
//! device (creation is exclusive, replacement deletes by ifindex).
//!
//! Per peer, in this order: a permanent neighbour (the peer subnet's network address -> the
//! peer's VTEP MAC), an FDB entry (that MAC -> the peer's node IP, `self permanent`) and the
//! route `peerSubnet via peerSubnet.0 dev <vxlan> onlink`. With `directRouting`, a peer whose
//! node IP is on a subnet of this node is routed via that node IP instead (host-gw), without
//! encapsulation.
//!
//! Transmit checksum offload is off on the device unless `txChecksumOffload` is set: on
//! kernels with the VXLAN checksum bug, offloaded inner checksums of packets that were NATed
//! on the way into the tunnel (a Service's ClusterIP or NodePort backed by a pod on another
//! node) go out wrong, the receiver drops every SYN, and TCP retries at 1, 3, 7, 15 and 31 s:
//! connections through a Service hang for 63 seconds before they succeed (or time out).

use crate::error::{Error, Result, code};
use crate::hash::Fnv1a64;
use crate::kernel::netlink::{
    AddrOptions, Family, Link, MacAddr, Netlink, RouteFilter, VxlanSpec, rt_table,
};
use crate::node::peers::{ClusterView, Peer};
use crate::node::reconcile::{DataPlane, Kind, Object, PeerRoute, Reject, VxlanDevice};
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// VNI of flannel's vxlan backend (bridge pod mode).
pub const BRIDGE_MODE_VNI: u32 = 1;
/// UDP port of flannel's vxlan backend (the Linux kernel's historic default).
pub const BRIDGE_MODE_PORT: u16 = 8472;
/// VNI of Calico's VXLAN mode (routed pod mode).
pub const ROUTED_MODE_VNI: u32 = 4096;
/// UDP port of Calico's VXLAN mode (IANA's VXLAN port).
pub const ROUTED_MODE_PORT: u16 = 4789;
/// Encapsulation overhead over an IPv4 underlay (outer IPv4 20 + UDP 8 + VXLAN 8 + inner
/// Ethernet 14).
pub const OVERHEAD_V4: u32 = 50;
/// Encapsulation overhead over an IPv6 underlay (outer IPv6 40 + UDP 8 + VXLAN 8 + inner
/// Ethernet 14).
pub const OVERHEAD_V6: u32 = 70;
/// The largest VNI (24 bits).
pub const MAX_VNI: u32 = 0x00ff_ffff;

/// The default device name over an underlay of `family`: bridge mode `twill.<VNI>` /
/// `twill6.<VNI>` (flannel's `flannel.<VNI>` style, at most 15 characters for any VNI), routed
/// mode `vxlan.twill` / `vxlan6.twill` (Calico's `vxlan.calico` style).
pub fn default_device_name(mode: PodMode, vni: u32, family: Family) -> String {
    match (mode, family) {
        (PodMode::Bridge, Family::V4) => format!("twill.{vni}"),
        (PodMode::Bridge, Family::V6) => format!("twill6.{vni}"),
        (PodMode::Routed, Family::V4) => "vxlan.twill".into(),
        (PodMode::Routed, Family::V6) => "vxlan6.twill".into(),
    }
}

/// The VTEP MAC of the node with underlay address `node_ip` on `vni`: a locally administered
/// unicast MAC derived from both, so every node computes every peer's from the cluster view.
pub fn vtep_mac(vni: u32, node_ip: IpAddr) -> MacAddr {
    let mut h = Fnv1a64::default();
    h.write_field(b"twill-vtep");
    h.write(&vni.to_be_bytes());
    h.write_ip(&node_ip);
    let b = h.finish_mixed().to_be_bytes();
    MacAddr([(b[0] & 0xfe) | 0x02, b[1], b[2], b[3], b[4], b[5]])
}

/// How a vxlan network wires its pods (`pods`); it also picks the overlay's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodMode {
    /// On a bridge holding the subnet gateway (flannel's vxlan backend): VNI 1, port 8472.
    Bridge,
    /// Routed veths, /32 pods (Calico's VXLAN mode): VNI 4096, port 4789.
    Routed,
}

/// The vxlan keys of a network config, as the plugin and twilld read them (flatten it into a
/// plugin's keys, side by side with the shared ones).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VxlanKeys {
    /// `pods`: `"bridge"` (default) or `"routed"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<String>,
    /// `vni` (default by pod mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// `port`: the UDP port (default by pod mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `device`: the device over the IPv4 underlay (default [`default_device_name`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// `deviceV6`: the device over the IPv6 underlay (default [`default_device_name`]).
    #[serde(default, rename = "deviceV6", skip_serializing_if = "Option::is_none")]
    pub device_v6: Option<String>,
    /// `nodeIP`: this node's IPv4 underlay address (default: found, see [`Vxlan::plan`]).
    #[serde(default, rename = "nodeIP", skip_serializing_if = "Option::is_none")]
    pub node_ip: Option<IpAddr>,
    /// `nodeIPv6`: this node's IPv6 underlay address (default: found).
    #[serde(default, rename = "nodeIPv6", skip_serializing_if = "Option::is_none")]
    pub node_ip_v6: Option<IpAddr>,
    /// `directRouting` (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_routing: Option<bool>,
    /// `txChecksumOffload` on the device (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_checksum_offload: Option<bool>,
}

/// [`VxlanKeys`]' names as spelled in a config.
pub const KEY_NAMES: &[&str] = &[
    "pods",
    "vni",
    "port",
    "device",
    "deviceV6",
    "nodeIP",
    "nodeIPv6",
    "directRouting",
    "txChecksumOffload",
];

impl VxlanKeys {
    /// The pod mode; code 7 naming the value for anything but `bridge` and `routed`.
    pub fn pod_mode(&self) -> Result<PodMode> {
        match self.pods.as_deref() {
            None | Some("bridge") => Ok(PodMode::Bridge),
            Some("routed") => Ok(PodMode::Routed),
            Some(other) => Err(Error::invalid_config(format!(
                "\"pods\": {other:?} is not a pod mode: use \"bridge\" (flannel's vxlan, the \
                 default) or \"routed\" (Calico's VXLAN mode)"
            ))),
        }
    }

    /// The overlay these keys describe for pod mode `mode`, with the network's configured
    /// `mtu` (imposed) and its subnet file's FLANNEL_MTU (a cap); not validated (see
    /// [`VxlanConf::validate`]).
    pub fn conf(&self, mode: PodMode, mtu: Option<u32>, max_mtu: Option<u32>) -> VxlanConf {
        let (vni, port) = match mode {
            PodMode::Bridge => (BRIDGE_MODE_VNI, BRIDGE_MODE_PORT),
            PodMode::Routed => (ROUTED_MODE_VNI, ROUTED_MODE_PORT),
        };
        let vni = self.vni.unwrap_or(vni);
        let name = |given: &Option<String>, family| {
            Some(
                given
                    .clone()
                    .unwrap_or_else(|| default_device_name(mode, vni, family)),
            )
        };
        VxlanConf {
            vni,
            port: self.port.unwrap_or(port),
            device: name(&self.device, Family::V4),
            device6: name(&self.device_v6, Family::V6),
            node_ip: self.node_ip,
            node_ip6: self.node_ip_v6,
            mtu,
            max_mtu,
            direct_routing: self.direct_routing.unwrap_or(false),
            tx_checksum_offload: self.tx_checksum_offload.unwrap_or(false),
        }
    }
}

/// What a vxlan overlay is made of, as a network config gives it (the plugin's keys; twilld
/// builds the same from the same config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanConf {
    /// VXLAN network identifier (1 to [`MAX_VNI`]).
    pub vni: u32,
    /// UDP destination port.
    pub port: u16,
    /// Name of the device over the IPv4 underlay (default: bridge mode's
    /// [`default_device_name`]).
    pub device: Option<String>,
    /// Name of the device over the IPv6 underlay (default: bridge mode's
    /// [`default_device_name`]).
    pub device6: Option<String>,
    /// This node's IPv4 underlay address, when not found on its own.
    pub node_ip: Option<IpAddr>,
    /// This node's IPv6 underlay address, when not found on its own.
    pub node_ip6: Option<IpAddr>,
    /// The device MTU, imposed (a configured `mtu`); None: underlay MTU - overhead.
    pub mtu: Option<u32>,
    /// An upper bound of the derived MTU (flannel's FLANNEL_MTU).
    pub max_mtu: Option<u32>,
    /// Route peers on a subnet of this node directly, without encapsulation.
    pub direct_routing: bool,
    /// Leave transmit checksum offload on (see the module docs for why it is off).
    pub tx_checksum_offload: bool,
}

impl VxlanConf {
    /// Code 7 for what cannot work whatever the node: a VNI outside 1..=2^24-1, port 0, a
    /// device name the kernel refuses, an explicit node IP of the wrong family.
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_VNI).contains(&self.vni) {
            return Err(Error::invalid_config(format!(
                "\"vni\": {} is not a VXLAN network identifier (1-{MAX_VNI})",
                self.vni
            )));
        }
        if self.port == 0 {
            return Err(Error::invalid_config(
                "\"port\": 0 is not a UDP port (1-65535)",
            ));
        }
        for (key, family) in [("device", Family::V4), ("deviceV6", Family::V6)] {
            let name = self.device_name(family);
            crate::kernel::netlink::validate_ifname(&name).map_err(|e| {
                Error::invalid_config(format!("\"{key}\": {name:?} is not a device name: {e}"))
            })?;
        }
        if self.device_name(Family::V4) == self.device_name(Family::V6) {
            return Err(Error::invalid_config(format!(
                "\"device\" and \"deviceV6\" are both {:?}: the IPv4 and IPv6 underlays need a \
                 device each",
                self.device_name(Family::V4)
            )));
        }
        for (key, ip, v4) in [
            ("nodeIP", self.node_ip, true),
            ("nodeIPv6", self.node_ip6, false),
        ] {
            if let Some(ip) = ip.filter(|ip| ip.is_ipv4() != v4) {
                return Err(Error::invalid_config(format!(
                    "\"{key}\": {ip} is not an IPv{} address",
                    if v4 { 4 } else { 6 }
                )));
            }
        }
        Ok(())
    }

    /// The device name for an underlay of `family`.
    pub fn device_name(&self, family: Family) -> String {
        let given = match family {
            Family::V4 => &self.device,
            Family::V6 => &self.device6,
        };
        given
            .clone()
            .unwrap_or_else(|| default_device_name(PodMode::Bridge, self.vni, family))
    }
}

/// One family's device as this node wants it, and its ifindex once it exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    /// The device (name, VNI, port, local address, MAC, MTU).
    pub device: VxlanDevice,
    /// Its ifindex, after [`Vxlan::ensure`] or [`Vxlan::attach`] found it.
    pub index: Option<u32>,
}

impl Overlay {
    fn mtu(&self) -> u32 {
        self.device.mtu.unwrap_or(0)
    }
}

/// The vxlan data plane of one node: up to one device per underlay family, and the objects
/// per peer (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vxlan {
    /// The device over the IPv4 underlay (IPv4 pod subnets), if this node has one.
    pub v4: Option<Overlay>,
    /// The device over the IPv6 underlay (IPv6 pod subnets), if this node has one.
    pub v6: Option<Overlay>,
    /// `directRouting`.
    pub direct_routing: bool,
    /// `txChecksumOffload`.
    pub tx_checksum_offload: bool,
    /// The node's connected subnets (what `directRouting` routes directly), sorted.
    pub connected: Vec<IpNetwork>,
    /// Why a family has no device (IPv4, IPv6), for the peers that would need it.
    pub missing: [Option<String>; 2],
    /// The node's own pod blocks, blackholed (routed pod mode; empty in bridge mode, where the
    /// bridge's connected route covers the block).
    pub blackholes: Vec<IpNetwork>,
}

impl Vxlan {
    /// The plane for this node: for each family in `families` (IPv4, IPv6) whose pods the
    /// network has, the underlay address (the config's, else a `nodeIP` of `view` that is
    /// local, else the address of the link of that family's default route), the device MTU and
    /// the VTEP MAC (`view`'s `vtepMAC` for this node, else [`vtep_mac`]). Asks the kernel only
    /// (addresses, routes, links); changes nothing. An explicit node IP that is not on the node
    /// is code 7; a family without an underlay address has no device (its peers are skipped
    /// and reported, see [`Vxlan::missing`]).
    pub fn plan(
        nl: &mut Netlink,
        conf: &VxlanConf,
        families: [bool; 2],
        view: Option<&ClusterView>,
    ) -> Result<Vxlan> {
        let addrs = nl.addresses(None, None)?;
        let mut connected: Vec<IpNetwork> = addrs
            .iter()
            .filter(|a| a.prefix_len < if a.addr.is_ipv4() { 32 } else { 128 })
            .map(|a| crate::flannel::subnet_file::network_of(a.network()))
            .collect();
        connected.sort();
        connected.dedup();
        let mut plane = Vxlan {
            v4: None,
            v6: None,
            direct_routing: conf.direct_routing,
            tx_checksum_offload: conf.tx_checksum_offload,
            connected,
            missing: [None, None],
            blackholes: Vec::new(),
        };
        for (slot, family) in [Family::V4, Family::V6].into_iter().enumerate() {
            if !families[slot] {
                continue;
            }
            let explicit = match family {
                Family::V4 => conf.node_ip,
                Family::V6 => conf.node_ip6,
            };
            let key = if family == Family::V4 {
                "nodeIP"
            } else {
                "nodeIPv6"
            };
            let found = match explicit {
                Some(ip) => match addrs.iter().find(|a| a.addr == ip) {
                    Some(a) => Some((ip, a.index)),
                    None => {
                        return Err(Error::invalid_config(format!(
                            "\"{key}\": {ip} is not an address of this node: give the address \
                             this node has on the network between the nodes"
                        )));
                    }
                },
                None => underlay_of(nl, family, &addrs, view)?,
            };
            let Some((local, link_index)) = found else {
                plane.missing[slot] = Some(format!(
                    "this node has no IPv{} underlay address for the vxlan device (no local nodeIP \
                     in the cluster view, no default route of that family): set \"{key}\"",
                    if family == Family::V4 { 4 } else { 6 }
                ));
                continue;
            };
            let overhead = if family == Family::V4 {
                OVERHEAD_V4
            } else {
                OVERHEAD_V6
            };
            let mtu = match conf.mtu {
                Some(m) => m,
                None => {
                    let link = nl.link_by_index(link_index)?.ok_or_else(|| {
                        Error::new(
                            code::NETLINK,
                            format!("the link of underlay address {local} disappeared"),
                        )
                    })?;
                    let derived = link.mtu.saturating_sub(overhead).max(68);
                    conf.max_mtu.map_or(derived, |cap| derived.min(cap))
                }
            };
            let mac = view
                .and_then(|v| {
                    v.peers()
                        .iter()
                        .find(|p| p.node_ip == local && p.vtep_mac.is_some())
                })
                .and_then(|p| p.vtep_mac)
                .unwrap_or_else(|| vtep_mac(conf.vni, local));
            let overlay = Overlay {
                device: VxlanDevice {
                    name: conf.device_name(family),
                    vni: conf.vni,
                    port: conf.port,
                    local: Some(local),
                    mac: Some(mac),
                    mtu: Some(mtu),
                },
                index: None,
            };
            match family {
                Family::V4 => plane.v4 = Some(overlay),
                Family::V6 => plane.v6 = Some(overlay),
            }
        }
        Ok(plane)
    }

    /// The plane of a network with pod mode `pods` and configured pod ranges `own_ranges`, as
    /// its plugin's ADD and twilld both plan it: [`Vxlan::plan`] for the families of
    /// [`Vxlan::families`], and in routed pod mode the ranges blackholed.
    pub fn plan_network(
        nl: &mut Netlink,
        conf: &VxlanConf,
        pods: PodMode,
        own_ranges: &[IpNetwork],
        view: Option<&ClusterView>,
    ) -> Result<Vxlan> {
        let mut plane = Vxlan::plan(nl, conf, Vxlan::families(own_ranges), view)?;
        if pods == PodMode::Routed {
            plane.blackhole(own_ranges);
        }
        Ok(plane)
    }

    /// The families (IPv4, IPv6) a network with pod ranges `own_ranges` has pods of: those of
    /// its ranges, both when it declares none (an exec'd IPAM).
    pub fn families(own_ranges: &[IpNetwork]) -> [bool; 2] {
        if own_ranges.is_empty() {
            return [true, true];
        }
        [
            own_ranges.iter().any(IpNetwork::is_ipv4),
            own_ranges.iter().any(IpNetwork::is_ipv6),
        ]
    }

    /// Adds `blocks` (each reduced to its network) to the own blocks the plane blackholes:
    /// routed pod mode, where each pod has a host route and nothing else covers the block.
    pub fn blackhole(&mut self, blocks: &[IpNetwork]) {
        let mut all = self.blackholes.clone();
        all.extend_from_slice(blocks);
        self.blackholes = crate::node::routed::Routed::new(&all).blocks().to_vec();
    }

    /// The pod MTU: the smallest device MTU (a pod's packets may take either device); None
    /// without a device.
    pub fn mtu(&self) -> Option<u32> {
        self.overlays().map(Overlay::mtu).min()
    }

    /// The devices this plane wants, IPv4 first.
    pub fn overlays(&self) -> impl Iterator<Item = &Overlay> {
        self.v4.iter().chain(self.v6.iter())
    }

    /// Makes every device of the plane exist as wanted (see the module docs), each with the
    /// network address of the pod subnet of its family in `pod_subnets` as a host address
    /// (other global addresses of that family on it are removed: a previous lease's), and
    /// records their ifindexes for the routes. Call it from a thread in `nl`'s network
    /// namespace (the checksum offload is set through an ioctl there).
    pub fn ensure(&mut self, nl: &mut Netlink, pod_subnets: &[IpNetwork]) -> Result<()> {
        let tx_csum = self.tx_checksum_offload;
        for ov in [self.v4.as_mut(), self.v6.as_mut()].into_iter().flatten() {
            let link = ensure_device(nl, &ov.device, tx_csum)?;
            ov.index = Some(link.index);
            let v4 = ov.device.local.is_some_and(|l| l.is_ipv4());
            let host = pod_subnets
                .iter()
                .find(|s| s.is_ipv4() == v4)
                .map(|s| host_address(s.network()));
            if let Some(addr) = host {
                ensure_host_address(nl, link.index, addr)?;
            }
        }
        Ok(())
    }

    /// CHECK and STATUS: finds the devices without changing anything, recording their
    /// ifindexes; returns what differs from the plan (missing or incompatible devices, a
    /// missing host address for `pod_subnets`), for a person.
    pub fn attach(&mut self, nl: &mut Netlink, pod_subnets: &[IpNetwork]) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        for ov in [self.v4.as_mut(), self.v6.as_mut()].into_iter().flatten() {
            let d = &ov.device;
            match nl.link_by_name(&d.name)? {
                None => problems.push(format!("vxlan device {} does not exist", d.name)),
                Some(l) => {
                    if let Some(why) = incompatible(&l, d) {
                        problems.push(format!("device {}: {why}", d.name));
                        continue;
                    }
                    ov.index = Some(l.index);
                    let v4 = d.local.is_some_and(|x| x.is_ipv4());
                    for s in pod_subnets.iter().filter(|s| s.is_ipv4() == v4) {
                        let want = host_address(s.network());
                        let have = nl.addresses(Some(l.index), None)?;
                        if !have.iter().any(|a| a.network() == want) {
                            problems.push(format!("device {} lacks address {want}", d.name));
                        }
                    }
                }
            }
        }
        Ok(problems)
    }

    fn overlay_for(&self, pod_cidr: &IpNetwork) -> Option<&Overlay> {
        if pod_cidr.is_ipv4() {
            self.v4.as_ref()
        } else {
            self.v6.as_ref()
        }
    }

    fn direct(&self, p: &Peer) -> bool {
        self.direct_routing && on_link(&self.connected, p.node_ip)
    }
}

/// The host address (/32, /128) of `ip`.
fn host_address(ip: IpAddr) -> IpNetwork {
    let prefix = if ip.is_ipv4() { 32 } else { 128 };
    // A host prefix is valid for either family.
    IpNetwork::new(ip, prefix).unwrap_or_else(|_| IpNetwork::from(ip))
}

/// True when `ip` is on one of the subnets `connected` (host-only addresses excluded there).
fn on_link(connected: &[IpNetwork], ip: IpAddr) -> bool {
    connected.iter().any(|n| n.contains(ip))
}

/// This node's underlay address of `family` and the ifindex holding it: a `nodeIP` of `view`
/// that is an address of this node (what the peers send to), else the address of the link of
/// the family's default route (its preferred source, else its first global address).
fn underlay_of(
    nl: &mut Netlink,
    family: Family,
    addrs: &[crate::kernel::netlink::Address],
    view: Option<&ClusterView>,
) -> Result<Option<(IpAddr, u32)>> {
    const RT_SCOPE_UNIVERSE: u8 = 0;
    if let Some(v) = view {
        for p in v.peers() {
            if Family::of(&p.node_ip) != family {
                continue;
            }
            if let Some(a) = addrs.iter().find(|a| a.addr == p.node_ip) {
                return Ok(Some((a.addr, a.index)));
            }
        }
    }
    let filter = RouteFilter {
        family: Some(family),
        table: Some(rt_table::MAIN),
        ..RouteFilter::default()
    };
    let default = nl
        .routes(&filter)?
        .into_iter()
        .find(|r| r.dst.prefix() == 0 && r.kind == 1 && r.oif.is_some());
    let Some(r) = default else {
        return Ok(None);
    };
    if let Some(src) = r.src
        && let Some(a) = addrs.iter().find(|a| a.addr == src)
    {
        return Ok(Some((src, a.index)));
    }
    Ok(addrs
        .iter()
        .find(|a| {
            Some(a.index) == r.oif
                && a.family() == family
                && a.scope == RT_SCOPE_UNIVERSE
                && !a.is_dad_failed()
        })
        .map(|a| (a.addr, a.index)))
}

/// Why link `l` cannot serve as device `want` (another kind, VNI, port or local address);
/// None when it can.
fn incompatible(l: &Link, want: &VxlanDevice) -> Option<String> {
    let Some(v) = &l.vxlan else {
        return Some(format!(
            "it is a {} device, not vxlan",
            l.kind.as_deref().unwrap_or("non-vxlan")
        ));
    };
    if v.vni != want.vni {
        return Some(format!("VNI {} instead of {}", v.vni, want.vni));
    }
    if v.port != want.port {
        return Some(format!("port {} instead of {}", v.port, want.port));
    }
    if v.local != want.local {
        let shown = v.local.map_or("none".to_string(), |a| a.to_string());
        let wanted = want.local.map_or("none".to_string(), |a| a.to_string());
        return Some(format!("local address {shown} instead of {wanted}"));
    }
    None
}

/// Makes device `want` exist: created (exclusive) when missing, replaced (deleted by ifindex,
/// so racing replacers never delete each other's new device) when it is an incompatible vxlan
/// device, kept when compatible (down, MTU and MAC corrected in place). A link of that name
/// that is not a vxlan device is another owner's: code 104, untouched.
fn ensure_device(nl: &mut Netlink, want: &VxlanDevice, tx_csum: bool) -> Result<Link> {
    // Each round either finds the device or changes the node; racing writers settle in a few.
    for _ in 0..4 {
        match nl.link_by_name(&want.name)? {
            None => {
                let spec = VxlanSpec {
                    name: &want.name,
                    vni: want.vni,
                    local: want.local,
                    port: want.port,
                    underlay: None,
                    learning: false,
                    mtu: want.mtu,
                    mac: want.mac,
                    up: true,
                };
                match nl.create_vxlan(&spec) {
                    Ok(()) => {}
                    Err(e) if e.is_exists() => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Some(l) if l.vxlan.is_none() => {
                return Err(Error::new(
                    code::CONFLICT,
                    format!(
                        "{} exists and is a {} device, not twill's vxlan device: remove it or \
                         set \"device\" to another name",
                        want.name,
                        l.kind.as_deref().unwrap_or("non-vxlan")
                    ),
                ));
            }
            Some(l) if incompatible(&l, want).is_some() => match nl.delete_link(l.index) {
                Ok(()) => continue,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            },
            Some(mut l) => {
                if let Some(mtu) = want.mtu.filter(|m| *m != l.mtu) {
                    nl.set_mtu(l.index, mtu)?;
                    l.mtu = mtu;
                }
                if let Some(mac) = want.mac.filter(|m| Some(*m) != l.mac) {
                    nl.set_mac(l.index, mac)?;
                    l.mac = Some(mac);
                }
                if !l.admin_up {
                    nl.set_link_up(l.index, true)?;
                }
                set_tx_checksum(&want.name, tx_csum)?;
                return Ok(l);
            }
        }
    }
    Err(Error::new(
        code::TRY_AGAIN,
        format!(
            "vxlan device {} kept changing while it was being set up (another writer with \
             another config?); try again",
            want.name
        ),
    ))
}

/// Puts `addr` on link `index` and removes the other global addresses of its family there.
fn ensure_host_address(nl: &mut Netlink, index: u32, addr: IpNetwork) -> Result<()> {
    let family = Family::of(&addr.ip());
    let have = nl.addresses(Some(index), Some(family))?;
    for a in have.iter().filter(|a| a.scope == 0 && a.network() != addr) {
        match nl.delete_address(index, a.network()) {
            Err(e) if !e.is_not_found() => return Err(e.into()),
            _ => {}
        }
    }
    if have.iter().any(|a| a.network() == addr) {
        return Ok(());
    }
    let opts = AddrOptions {
        nodad: true,
        broadcast: crate::kernel::netlink::Broadcast::None,
        ..AddrOptions::default()
    };
    match nl.add_address(index, addr, &opts) {
        Err(e) if !e.is_exists() => Err(e.into()),
        _ => Ok(()),
    }
}

/// Turns transmit checksum offload of device `name` on or off (ethtool's `tx`), in the calling
/// thread's network namespace; nothing when it already is.
fn set_tx_checksum(name: &str, on: bool) -> Result<()> {
    use nix::libc;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GTXCSUM: u32 = 0x16;
    const ETHTOOL_STXCSUM: u32 = 0x17;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        data: *mut EthtoolValue,
        _pad: [u8; 16],
    }
    let err = |what: &str| {
        let e = std::io::Error::last_os_error();
        Error::new(
            code::NETLINK,
            format!("{what} transmit checksum offload of {name}: {e}"),
        )
    };
    // SAFETY: a plain socket call; the descriptor is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(err("open a socket to set"));
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut value = EthtoolValue {
        cmd: ETHTOOL_GTXCSUM,
        data: 0,
    };
    let mut req = IfReq {
        name: [0; 16],
        data: &mut value,
        _pad: [0; 16],
    };
    let bytes = name.as_bytes();
    let n = bytes.len().min(15);
    req.name[..n].copy_from_slice(&bytes[..n]);
    // SAFETY: `req` is a valid ifreq whose data points to a live ethtool_value.
    if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL as _, &mut req) } < 0 {
        return Err(err("read"));
    }
    if (value.data != 0) == on {
        return Ok(());
    }
    value = EthtoolValue {
        cmd: ETHTOOL_STXCSUM,
        data: u32::from(on),
    };
    req.data = &mut value;
    // SAFETY: as above.
    if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL as _, &mut req) } < 0 {
        return Err(err("set"));
    }
    Ok(())
}

impl DataPlane for Vxlan {
    fn key(&self) -> String {
        let mut k = String::from("vxlan");
        for ov in self.overlays() {
            k.push_str(&format!(
                " [{} @{}]",
                Object::Vxlan(ov.device.clone()).to_line(),
                ov.index.unwrap_or(0)
            ));
        }
        if !self.blackholes.is_empty() {
            k.push_str(" blackhole");
            for b in &self.blackholes {
                k.push_str(&format!(" {b}"));
            }
        }
        if self.direct_routing {
            k.push_str(" direct");
            for n in &self.connected {
                k.push_str(&format!(" {n}"));
            }
        }
        k
    }

    /// [`Vxlan::ensure`] with the own ranges' subnets (the device addresses).
    fn prepare(&mut self, nl: &mut Netlink, own_ranges: &[IpNetwork]) -> Result<()> {
        let subnets: Vec<IpNetwork> = own_ranges
            .iter()
            .map(|r| crate::flannel::subnet_file::network_of(*r))
            .collect();
        self.ensure(nl, &subnets)
    }

    fn owns(&self) -> &'static [Kind] {
        if self.blackholes.is_empty() {
            &[Kind::Device, Kind::Neighbour, Kind::Fdb, Kind::Route]
        } else {
            &[
                Kind::Device,
                Kind::Neighbour,
                Kind::Fdb,
                Kind::Route,
                Kind::Blackhole,
            ]
        }
    }

    fn reject(&self, p: &Peer, _local: &[IpNetwork]) -> Option<Reject> {
        if p.node_ip.is_ipv4() != p.pod_cidr.is_ipv4() {
            let reason = format!(
                "vxlan carries podCIDR {} over an IPv{} underlay, but nodeIP {} is not one: list \
                 an IPv{} nodeIP for it",
                p.pod_cidr,
                if p.pod_cidr.is_ipv4() { 4 } else { 6 },
                p.node_ip,
                if p.pod_cidr.is_ipv4() { 4 } else { 6 }
            );
            return Some(Reject {
                reason,
                depends_on_node: false,
            });
        }
        if self.direct(p) {
            return None;
        }
        match self.overlay_for(&p.pod_cidr) {
            Some(_) => None,
            None => {
                // No underlay address: the node may get one. No pods of that family: the
                // network's config says so, which the fingerprint covers.
                let slot = usize::from(p.pod_cidr.is_ipv6());
                let depends_on_node = self.missing[slot].is_some();
                let reason = self.missing[slot].clone().unwrap_or_else(|| {
                    format!(
                        "this network has no IPv{} pods on this node",
                        if slot == 0 { 4 } else { 6 }
                    )
                });
                Some(Reject {
                    reason,
                    depends_on_node,
                })
            }
        }
    }

    fn desired(&self, peers: &[&Peer]) -> Vec<Object> {
        let mut out: Vec<Object> = self
            .overlays()
            .map(|ov| Object::Vxlan(ov.device.clone()))
            .collect();
        for p in peers {
            if self.direct(p) {
                out.push(Object::Route(PeerRoute::via(p.pod_cidr, p.node_ip)));
                continue;
            }
            let Some(ov) = self.overlay_for(&p.pod_cidr) else {
                continue;
            };
            let gateway = p.pod_cidr.network();
            let mac = p
                .vtep_mac
                .unwrap_or_else(|| vtep_mac(ov.device.vni, p.node_ip));
            let dev = ov.device.name.clone();
            out.push(Object::Neighbour {
                dev: dev.clone(),
                ip: gateway,
                mac,
            });
            out.push(Object::Fdb {
                dev,
                mac,
                dst: p.node_ip,
            });
            out.push(Object::Route(PeerRoute {
                oif: ov.index,
                onlink: true,
                ..PeerRoute::via(p.pod_cidr, gateway)
            }));
        }
        out.extend(self.blackholes.iter().map(|b| Object::blackhole(*b)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(node: &str, cidr: &str, mac: Option<&str>) -> Peer {
        Peer {
            node_ip: node.parse().unwrap(),
            pod_cidr: cidr.parse().unwrap(),
            vtep_mac: mac.map(|m| m.parse().unwrap()),
        }
    }

    fn plane(direct: bool) -> Vxlan {
        let dev = |name: &str, local: &str, index| Overlay {
            device: VxlanDevice {
                name: name.into(),
                vni: 1,
                port: 8472,
                local: Some(local.parse().unwrap()),
                mac: Some(vtep_mac(1, local.parse().unwrap())),
                mtu: Some(1450),
            },
            index: Some(index),
        };
        Vxlan {
            v4: Some(dev("twill.1", "10.99.1.1", 7)),
            v6: None,
            direct_routing: direct,
            tx_checksum_offload: false,
            connected: vec!["10.99.1.0/24".parse().unwrap()],
            missing: [None, Some("no IPv6 underlay: set \"nodeIPv6\"".into())],
            blackholes: Vec::new(),
        }
    }

    #[test]
    fn families_follow_the_ranges_and_are_both_without_ranges() {
        let r = |s: &str| -> IpNetwork { s.parse().unwrap() };
        assert_eq!(Vxlan::families(&[]), [true, true]);
        assert_eq!(Vxlan::families(&[r("10.1.0.0/24")]), [true, false]);
        assert_eq!(Vxlan::families(&[r("fd00::/64")]), [false, true]);
        assert_eq!(
            Vxlan::families(&[r("10.1.0.0/24"), r("fd00::/64")]),
            [true, true]
        );
    }

    #[test]
    fn vtep_mac_is_stable_local_unicast_and_differs_per_vni_and_node() {
        let a: IpAddr = "10.99.1.1".parse().unwrap();
        let b: IpAddr = "10.99.1.2".parse().unwrap();
        let m = vtep_mac(1, a);
        assert_eq!(m, vtep_mac(1, a));
        assert_eq!(m.0[0] & 0x03, 0x02, "locally administered unicast: {m}");
        assert_ne!(m, vtep_mac(2, a));
        assert_ne!(m, vtep_mac(1, b));
    }

    #[test]
    fn per_peer_neighbour_then_fdb_then_onlink_route_after_the_device() {
        let p = peer("10.99.2.1", "10.244.3.0/24", None);
        let got = plane(false).desired(&[&p]);
        let mac = vtep_mac(1, p.node_ip);
        assert!(matches!(&got[0], Object::Vxlan(d) if d.name == "twill.1"));
        assert_eq!(
            got[1],
            Object::Neighbour {
                dev: "twill.1".into(),
                ip: "10.244.3.0".parse().unwrap(),
                mac
            }
        );
        assert_eq!(
            got[2],
            Object::Fdb {
                dev: "twill.1".into(),
                mac,
                dst: p.node_ip
            }
        );
        let Object::Route(r) = &got[3] else {
            panic!("{got:?}")
        };
        assert_eq!(
            (r.gateway, r.oif, r.onlink),
            (Some("10.244.3.0".parse().unwrap()), Some(7), true)
        );
    }

    #[test]
    fn explicit_vtep_mac_wins_and_direct_routing_skips_encapsulation_on_link_only() {
        let near = peer("10.99.1.2", "10.244.2.0/24", Some("02:aa:00:00:00:02"));
        let far = peer("10.99.2.1", "10.244.3.0/24", Some("02:aa:00:00:00:03"));
        let got = plane(true).desired(&[&near, &far]);
        assert_eq!(
            got[1],
            Object::Route(PeerRoute::via(near.pod_cidr, near.node_ip))
        );
        assert!(got.contains(&Object::Fdb {
            dev: "twill.1".into(),
            mac: "02:aa:00:00:00:03".parse().unwrap(),
            dst: far.node_ip
        }));
        assert_eq!(got.len(), 5, "{got:?}");
    }

    #[test]
    fn rejects_wrong_family_and_a_family_without_device_with_the_reason() {
        let v = plane(false);
        let fam = v
            .reject(&peer("10.99.2.1", "fd00::/64", None), &[])
            .unwrap();
        assert!(!fam.depends_on_node && fam.reason.contains("IPv6 nodeIP"));
        let no6 = v.reject(&peer("fd99::2", "fd00::/64", None), &[]).unwrap();
        assert!(
            no6.depends_on_node && no6.reason.contains("nodeIPv6"),
            "{no6:?}"
        );
        assert!(
            v.reject(&peer("10.99.2.1", "10.244.3.0/24", None), &[])
                .is_none()
        );
    }

    #[test]
    fn conf_validation_names_the_key() {
        let ok = VxlanConf {
            vni: 1,
            port: 8472,
            device: None,
            device6: None,
            node_ip: None,
            node_ip6: None,
            mtu: None,
            max_mtu: None,
            direct_routing: false,
            tx_checksum_offload: false,
        };
        assert!(ok.validate().is_ok());
        assert_eq!(ok.device_name(Family::V6), "twill6.1");
        let bad = |c: VxlanConf, key: &str| {
            let e = c.validate().unwrap_err();
            assert!(e.code == code::INVALID_CONFIG && e.msg.contains(key), "{e}");
        };
        bad(
            VxlanConf {
                vni: 0,
                ..ok.clone()
            },
            "\"vni\"",
        );
        bad(
            VxlanConf {
                vni: MAX_VNI + 1,
                ..ok.clone()
            },
            "\"vni\"",
        );
        bad(
            VxlanConf {
                port: 0,
                ..ok.clone()
            },
            "\"port\"",
        );
        bad(
            VxlanConf {
                device: Some("a-name-that-is-too-long".into()),
                ..ok.clone()
            },
            "\"device\"",
        );
        bad(
            VxlanConf {
                node_ip: Some("fd00::1".parse().unwrap()),
                ..ok.clone()
            },
            "\"nodeIP\"",
        );
        assert_eq!(
            default_device_name(PodMode::Bridge, MAX_VNI, Family::V6).len(),
            15
        );
        let routed = VxlanKeys::default().conf(PodMode::Routed, None, None);
        assert_eq!((routed.vni, routed.port), (4096, 4789));
        assert_eq!(routed.device_name(Family::V4), "vxlan.twill");
        let bridge = VxlanKeys {
            vni: Some(7),
            ..VxlanKeys::default()
        }
        .conf(PodMode::Bridge, None, None);
        assert_eq!(bridge.device_name(Family::V6), "twill6.7");
    }
}
