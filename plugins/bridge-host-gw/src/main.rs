//! twill bridge-host-gw: pods on a Linux bridge (reference `bridge` behaviour) and the other
//! nodes' pod subnets routed via their node IPs (flannel host-gw), in one binary.
//!
//! ADD, start to end: parse the config, ensure the bridge, make the pair (host end on the
//! bridge with its port flags, pod end made in the pod netns), allocate, put the gateways on
//! the bridge, set up the pod side, reconcile peer routes and masquerading, print the result.
//! Any failure undoes what this ADD made.
//! The mechanisms live in `twill::{bridge, veth, ipam, peers, masq}`. The entry point is
//! `twill::plugin_main!` (no Rust runtime start-up: the process lives for about a millisecond).
#![cfg_attr(not(test), no_main)]

mod config;

use config::Network;
use ipnetwork::IpNetwork;
use twill::error::{Failures, unavailable};
use twill::kernel::netlink::Netlink;
use twill::network::pod_netns;
use twill::network::undo::Undo;
use twill::network::{Need, subnets_of};
use twill::node::host_gw::HostGw;
use twill::pod::bridge;
use twill::pod::veth::Owner;
use twill::pod::veth::{self, PairSpec};
use twill::{CmdArgs, CniResult, Dns, Error, Interface, IpConfig, Plugin, Result, code};

struct BridgeHostGw;

impl Plugin for BridgeHostGw {
    fn add(&self, args: &CmdArgs) -> Result<CniResult> {
        let net = Network::load(args, Need::Required)?;
        let rules = net.preflight_node_rules()?;
        let pod_ns = pod_netns(args)?;
        let mut node = Netlink::new()?;
        let mut undo = Undo::new("bridge-host-gw");

        let br = bridge::ensure_with(&mut node, &net.bridge, &net.bridge_options(), |nl| {
            net.bridge_mtu(nl)
        })?;
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
        let ips = with_gateways(&net, ipam.ips);
        let addrs: Vec<IpNetwork> = ips.iter().map(|c| c.address).collect();

        bridge::enable_forwarding_known(
            addrs.iter().any(IpNetwork::is_ipv4),
            addrs.iter().any(IpNetwork::is_ipv6),
            br.ipv4_forwarding,
            None,
        )?;
        for gw in ips.iter().filter(|_| net.is_gateway) {
            if let Some(gw) = bridge::gateway_address(gw) {
                bridge::ensure_gateway(&mut node, &br, gw, net.force_address)?;
            }
        }

        let (routes, result_routes) = veth::pod_routes(&ips, &ipam.routes, net.is_default_gateway);
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
        net.reconcile_peers(&mut node, &subnets, &HostGw)?;
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

    fn del(&self, args: &CmdArgs) -> Result<()> {
        let net = Network::load(args, Need::Release)?;
        let owner = Owner::of(net.name(), args);
        twill::pod::teardown::run(
            |node| veth::delete_attachment(node, &owner, args.netns.as_deref()),
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
        let br = bridge::find(&mut node, &net.bridge)?.ok_or_else(|| {
            Error::new(
                code::CHECK_FAILED,
                format!("bridge {} does not exist", net.bridge),
            )
        })?;
        let opts = net.pod_options();
        veth::check(
            &mut node,
            &pod_ns,
            br.index,
            &Owner::of(net.name(), args),
            &prev,
            opts,
        )?;
        if net.is_gateway {
            let gws: Vec<IpNetwork> = prev
                .ips
                .iter()
                .filter_map(bridge::gateway_address)
                .collect();
            bridge::check_gateways(&mut node, br.index, &net.bridge, &gws)?;
        }
        net.ipam_check(args)?;
        let subnets = subnets_of(prev.ips.iter().map(|c| &c.address));
        net.check_peers(&mut node, &subnets, &HostGw)?;
        net.check_node_rules(&subnets);
        Ok(())
    }

    fn gc(&self, args: &CmdArgs) -> Result<()> {
        let valid = twill::cni::types::valid_attachments(&args.stdin)?;
        let net = Network::load(args, Need::Release)?;
        let mut failures = Failures::default();
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
        // The bridge exists as a bridge, or its name is free for ADD to take.
        bridge::find(&mut node, &net.bridge).map_err(unavailable)?;
        net.bridge_mtu(&mut node).map_err(unavailable)?;
        net.netfilter_status().map_err(unavailable)?;
        net.ipam_status(args).map_err(unavailable)?;
        net.view_status(&mut node, &HostGw).map_err(unavailable)
    }
}

/// IPAM's addresses on interface 2 (the pod's), each with a gateway when the bridge is one
/// (IPAM's, else the subnet's first address).
fn with_gateways(net: &Network, mut ips: Vec<IpConfig>) -> Vec<IpConfig> {
    for ip in &mut ips {
        ip.interface = Some(2);
        if net.is_gateway && ip.gateway.is_none() {
            ip.gateway = Some(bridge::default_gateway(&ip.address));
        }
    }
    ips
}

twill::plugin_main!(
    BridgeHostGw,
    "twill bridge-host-gw: pods on a bridge, host-gw routes to the other nodes' pods"
);
