//! twill vxlan: flannel's VXLAN overlay. Pods hang on a Linux bridge holding the gateway of the
//! node's pod subnet (as in bridge-host-gw); every other node's pod subnet is reached through a
//! VXLAN device, so the nodes need only IP reachability between them.
//!
//! ADD with bridged pods (`"pods": "bridge"`, the default: flannel's vxlan), start to end:
//! parse the config, plan the overlay (underlay address, device MTU), ensure the bridge at the
//! device's MTU, make the pair, allocate, put the gateways on the bridge, set up the pod side,
//! ensure the vxlan device(s) with this node's address, reconcile the peers' neighbour, FDB and
//! route entries and the masquerade, print the result.
//!
//! ADD with routed pods (`"pods": "routed"`: Calico's VXLAN mode): plan the overlay, make the
//! pair at the device's MTU (host end named with `hostVethPrefix`, MAC ee:ee:ee:ee:ee:ee, no
//! master), allocate, set up the host end, set up the pod side (/32 behind 169.254.1.1), route
//! the pod's addresses to the host end, ensure the device(s), reconcile the peers and the own
//! blocks' blackholes and the masquerade, print the result.
//!
//! Any failure undoes what this ADD made for the pod (the bridge and the device are node state
//! and stay). The mechanisms live in `twill::{pod, node::vxlan, network}`.
#![cfg_attr(not(test), no_main)]

mod config;

use config::Network;
use ipnetwork::IpNetwork;
use twill::error::{Failures, unavailable};
use twill::kernel::netlink::Netlink;
use twill::network::pod_netns;
use twill::network::undo::Undo;
use twill::network::{Need, NodeRules, subnets_of};
use twill::node::vxlan::PodMode;
use twill::pod::bridge;
use twill::pod::routed::{self, PodSettings};
use twill::pod::veth::Owner;
use twill::pod::veth::{self, PairSpec};
use twill::{CmdArgs, CniResult, Dns, Error, Interface, IpConfig, Plugin, Result, code};

struct VxlanPlugin;

impl Plugin for VxlanPlugin {
    fn add(&self, args: &CmdArgs) -> Result<CniResult> {
        let net = Network::load(args, Need::Required)?;
        let rules = net.preflight_node_rules()?;
        match net.pods {
            PodMode::Bridge => add_bridged(&net, args, rules),
            PodMode::Routed => add_routed(&net, args, rules),
        }
    }

    fn del(&self, args: &CmdArgs) -> Result<()> {
        let net = Network::load(args, Need::Release)?;
        let owner = Owner::of(net.name(), args);
        let netns = args.netns.as_deref();
        twill::pod::teardown::run(
            |node| match net.pods {
                PodMode::Bridge => veth::delete_attachment(node, &owner, netns),
                PodMode::Routed => routed::delete_host(node, &owner, &net.host_veth_prefix, netns),
            },
            || net.release(args),
        )
    }

    fn check(&self, args: &CmdArgs) -> Result<()> {
        let net = Network::load(args, Need::Required)?;
        let prev = net
            .conf
            .prev_result()?
            .ok_or_else(|| Error::invalid_config("CHECK needs the ADD result as \"prevResult\""))?;
        let pod_ns = pod_netns(args)?;
        let mut node = Netlink::new()?;
        let (pod_mtu, subnets) = match net.pods {
            PodMode::Bridge => check_bridged(&net, args, &mut node, &pod_ns, &prev)?,
            PodMode::Routed => {
                let owner = Owner::of(net.name(), args);
                routed::check(&mut node, &pod_ns, &owner, &net.host_veth_prefix, &prev)?;
                let host = veth::find_with(&mut node, &owner, &net.host_veth_prefix)?;
                (host.map(|h| h.mtu), net.own_ranges_with(&[]))
            }
        };
        net.ipam_check(args)?;
        let mut overlay = net.overlay(&mut node)?;
        let problems = overlay.attach(&mut node, &subnets)?;
        if !problems.is_empty() {
            return Err(Error::new(
                code::CHECK_FAILED,
                format!("the overlay is broken: {}", problems.join("; ")),
            ));
        }
        if let (Some(mtu), Some(pod)) = (overlay.mtu(), pod_mtu)
            && mtu != pod
        {
            return Err(Error::new(
                code::CHECK_FAILED,
                format!(
                    "the pods' MTU is {pod} but the overlay's is {mtu}: full-size pod packets \
                     would not cross the tunnel"
                ),
            ));
        }
        net.check_peers(&mut node, &subnets, &overlay)?;
        net.check_node_rules(&subnets);
        Ok(())
    }

    fn gc(&self, args: &CmdArgs) -> Result<()> {
        let valid = twill::cni::types::valid_attachments(&args.stdin)?;
        let net = Network::load(args, Need::Release)?;
        let mut failures = Failures::default();
        // Bridged and routed host ends alike carry the network's marks; routes go with them.
        match Netlink::new() {
            Ok(mut node) => failures.extend(veth::remove_stale(&mut node, &net.conf.name, &valid)),
            Err(e) => failures.push("open a netlink socket", e.into()),
        }
        if let Err(e) = net.ipam_gc(args) {
            failures.push("IPAM GC", e);
        }
        failures.into_result("GC")
    }

    fn status(&self, args: &CmdArgs) -> Result<()> {
        twill::cni::types::parse_netconf::<config::Keys>(&args.stdin)?;
        let net = Network::load(args, Need::Required).map_err(unavailable)?;
        let mut node = Netlink::new().map_err(|e| unavailable(e.into()))?;
        if net.pods == PodMode::Bridge {
            // The bridge exists as a bridge, or its name is free for ADD to take.
            bridge::find(&mut node, &net.bridge).map_err(unavailable)?;
        }
        let mut overlay = net.overlay(&mut node).map_err(unavailable)?;
        // A missing device is made by the next ADD; only the view's verdict matters here.
        overlay.attach(&mut node, &[]).map_err(unavailable)?;
        net.netfilter_status().map_err(unavailable)?;
        net.ipam_status(args).map_err(unavailable)?;
        net.view_status(&mut node, &overlay).map_err(unavailable)
    }
}

/// ADD of a pod on the bridge (flannel's vxlan).
fn add_bridged(net: &Network, args: &CmdArgs, rules: NodeRules) -> Result<CniResult> {
    let pod_ns = pod_netns(args)?;
    let mut node = Netlink::new()?;
    let mut undo = Undo::new("vxlan");

    let mut overlay = net.overlay(&mut node)?;
    let mtu = net.pod_mtu(&overlay, &mut node)?;
    let br = bridge::ensure(&mut node, &net.bridge, mtu)?;
    let pair = PairSpec {
        owner: Owner::of(net.name(), args),
        pod_ns: &pod_ns,
        mtu: br.mtu,
        bridge: br.index,
        pod_mac: net.pod_mac,
    };
    let host = veth::create_port(&mut node, &pair, net.port_flags())?;
    let made = host.clone();
    undo.push("delete the veth pair", move || {
        veth::delete_created(&mut Netlink::new()?, &made).map(drop)
    });

    let ipam = net.allocate(args)?;
    undo.push("release the IP addresses", || net.release(args));
    let ips = with_gateways(ipam.ips);
    let addrs: Vec<IpNetwork> = ips.iter().map(|c| c.address).collect();

    bridge::enable_forwarding(
        addrs.iter().any(IpNetwork::is_ipv4),
        addrs.iter().any(IpNetwork::is_ipv6),
    )?;
    for gw in ips.iter().filter_map(bridge::gateway_address) {
        bridge::ensure_gateway(&mut node, &br, gw, false)?;
    }

    let (routes, result_routes) = veth::pod_routes(&ips, &ipam.routes, true);
    let pod = veth::configure_created_pod(
        &mut node,
        &pod_ns,
        &args.ifname,
        &host,
        &addrs,
        &routes,
        net.pod_options(),
    )?;
    bridge::settle_carrier(&mut node, &br)?;

    let subnets = subnets_of(&addrs);
    overlay.ensure(&mut node, &subnets)?;
    net.reconcile_peers(&mut node, &subnets, &overlay)?;
    net.finish_node_rules(rules, &subnets)?;
    undo.commit();

    let sandbox = pod_ns.path().to_string_lossy().into_owned();
    Ok(CniResult {
        interfaces: vec![
            Interface::named(&br.name, br.mac.map(|m| m.to_string()), None),
            Interface::named(&host.name, Some(host.mac.to_string()), None),
            Interface::named(&args.ifname, pod.mac.map(|m| m.to_string()), Some(sandbox)),
        ],
        ips,
        routes: result_routes,
        dns: Dns::merged(net.conf.dns.clone(), ipam.dns),
    })
}

/// ADD of a routed pod (Calico's VXLAN mode).
fn add_routed(net: &Network, args: &CmdArgs, rules: NodeRules) -> Result<CniResult> {
    let pod_ns = pod_netns(args)?;
    let mut node = Netlink::new()?;
    let mut undo = Undo::new("vxlan");

    let mut overlay = net.overlay(&mut node)?;
    let pair = PairSpec {
        owner: Owner::of(net.name(), args),
        pod_ns: &pod_ns,
        mtu: net.pod_mtu(&overlay, &mut node)?,
        bridge: 0, // no bridge: `routed::host_spec` makes the host end, without a master
        pod_mac: net.pod_mac,
    };
    let host = veth::create_with(&mut node, &pair, &routed::host_spec(&net.host_veth_prefix))?;
    let made = host.clone();
    undo.push("delete the veth pair", move || {
        veth::delete_created(&mut Netlink::new()?, &made).map(drop)
    });

    let ipam = net.allocate(args)?;
    undo.push("release the IP addresses", || net.release(args));
    let (mut result, replaced) = routed::wire(
        &mut node,
        &pod_ns,
        &args.ifname,
        &host,
        &ipam,
        PodSettings::default(),
    )?;
    net.warn(&replaced);

    let subnets = subnets_of(ipam.ips.iter().map(|c| &c.address));
    overlay.ensure(&mut node, &subnets)?;
    overlay.blackhole(&subnets);
    net.reconcile_peers(&mut node, &subnets, &overlay)?;
    net.finish_node_rules(rules, &subnets)?;
    undo.commit();

    result.dns = Dns::merged(net.conf.dns.clone(), ipam.dns);
    Ok(result)
}

/// CHECK's pod part for a pod on the bridge: the bridge, the pair, the gateways. Returns the
/// bridge's MTU and the pod's subnets.
fn check_bridged(
    net: &Network,
    args: &CmdArgs,
    node: &mut Netlink,
    pod_ns: &twill::kernel::netns::Netns,
    prev: &CniResult,
) -> Result<(Option<u32>, Vec<IpNetwork>)> {
    let br = bridge::find(node, &net.bridge)?.ok_or_else(|| {
        Error::new(
            code::CHECK_FAILED,
            format!("bridge {} does not exist", net.bridge),
        )
    })?;
    veth::check(
        node,
        pod_ns,
        br.index,
        &Owner::of(net.name(), args),
        prev,
        net.pod_options(),
    )?;
    let gws: Vec<IpNetwork> = prev
        .ips
        .iter()
        .filter_map(bridge::gateway_address)
        .collect();
    bridge::check_gateways(node, br.index, &net.bridge, &gws)?;
    Ok((
        Some(br.mtu),
        subnets_of(prev.ips.iter().map(|c| &c.address)),
    ))
}
/// IPAM's addresses on interface 2 (the pod's), each with a gateway (IPAM's, else the
/// subnet's first address, which the bridge holds).
fn with_gateways(mut ips: Vec<IpConfig>) -> Vec<IpConfig> {
    for ip in &mut ips {
        ip.interface = Some(2);
        if ip.gateway.is_none() {
            ip.gateway = Some(bridge::default_gateway(&ip.address));
        }
    }
    ips
}

twill::plugin_main!(
    VxlanPlugin,
    "twill vxlan: pods on a bridge, other nodes' pods through a VXLAN overlay"
);
