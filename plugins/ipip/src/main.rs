//! twill ipip: Calico's IP-in-IP data plane. Pods are routed exactly as in routed-veth (`/32`
//! addresses behind the fixed gateway 169.254.1.1, answered by the host veth; one host route
//! per pod); the node's own block is blackholed, and every other node's block is routed into
//! an ipip tunnel, `block via nodeIP dev tunl0 onlink` (with `crossSubnet`, peers on a directly
//! connected subnet are routed host-gw style instead). IPv4 only.
//!
//! ADD, start to end: parse the config, open the pod's netns, ensure the tunnel (the kernel's
//! `tunl0` or a named device: up, MTU = underlay - 20 unless `mtu` says, the block's first
//! address), make the pair (pod MTU = tunnel MTU), allocate, set up the host end, set up the
//! pod side, route the pod's addresses to the host end, reconcile the node (tunnel, peer
//! routes, blackhole) and its rules, print the result. Any failure undoes what this ADD made.
//! A kernel without ipip fails ADD with code 50 naming CONFIG_NET_IPIP / `modprobe ipip`
//! before anything is made; STATUS answers the same. The mechanisms live in
//! `twill::node::ipip`, `twill::pod::{veth, routed}` and `twill::network`.
#![cfg_attr(not(test), no_main)]

mod config;

use config::Network;
use ipnetwork::IpNetwork;
use twill::error::{Failures, unavailable};
use twill::kernel::netlink::Netlink;
use twill::network::pod_netns;
use twill::network::undo::Undo;
use twill::network::{Need, subnets_of};
use twill::node::ipip::{self, Ipip};
use twill::pod::routed;
use twill::pod::veth::Owner;
use twill::pod::veth::{self, PairSpec};
use twill::{CmdArgs, CniResult, Dns, Error, IpConfig, Plugin, Result};

struct IpipPlugin;

impl Plugin for IpipPlugin {
    fn add(&self, args: &CmdArgs) -> Result<CniResult> {
        let net = Network::load(args, Need::Required)?;
        let rules = net.preflight_node_rules()?;
        let pod_ns = pod_netns(args)?;
        let mut node = Netlink::new()?;
        let mut undo = Undo::new("ipip");

        let (tunnel, underlay_mtu) = net.tunnel(&mut node)?;
        let (plane, created) = Ipip::ensure(&mut node, &tunnel, underlay_mtu)?;
        if created {
            let made = plane.clone();
            undo.push("delete the ipip device", move || {
                made.delete_created(&mut Netlink::new()?)
            });
        }

        let pair = PairSpec {
            owner: Owner::of(net.name(), args),
            pod_ns: &pod_ns,
            mtu: plane.device().mtu,
            bridge: 0, // no bridge: `host_spec` makes the host end, without a master
            pod_mac: net.pod_mac,
        };
        let host = veth::create_with(&mut node, &pair, &routed::host_spec(&net.host_veth_prefix))?;
        let made = host.clone();
        undo.push("delete the veth pair", move || {
            veth::delete_created(&mut Netlink::new()?, &made).map(drop)
        });

        let ipam = net.allocate(args)?;
        undo.push("release the IP addresses", || net.release(args));
        refuse_ipv6(&ipam.ips)?;
        let (mut result, replaced) = routed::wire(
            &mut node,
            &pod_ns,
            &args.ifname,
            &host,
            &ipam,
            net.pod_settings,
        )?;
        net.warn(&replaced);

        let subnets = subnets_of(ipam.ips.iter().map(|c| &c.address));
        let plane = plane.blackholing(&net.own_ranges_with(&subnets));
        net.reconcile_peers(&mut node, &subnets, &plane)?;
        net.finish_node_rules(rules, &subnets)?;
        undo.commit();

        result.dns = Dns::merged(net.conf.dns.clone(), ipam.dns);
        Ok(result)
    }

    fn del(&self, args: &CmdArgs) -> Result<()> {
        let net = Network::load(args, Need::Release)?;
        let owner = Owner::of(net.name(), args);
        let prefix = &net.host_veth_prefix;
        twill::pod::teardown::run(
            |node| routed::delete_host(node, &owner, prefix, args.netns.as_deref()),
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
        let (tunnel, underlay_mtu) = net.tunnel(&mut node)?;
        let plane = Ipip::planned(&mut node, &tunnel, underlay_mtu)?;
        plane.check_device(&mut node)?;
        let owner = Owner::of(net.name(), args);
        routed::check(&mut node, &pod_ns, &owner, &net.host_veth_prefix, &prev)?;
        net.ipam_check(args)?;
        let subnets = net.own_ranges_with(&[]);
        net.check_peers(&mut node, &subnets, &plane.blackholing(&subnets))?;
        net.check_node_rules(&subnets);
        Ok(())
    }

    fn gc(&self, args: &CmdArgs) -> Result<()> {
        let valid = twill::cni::types::valid_attachments(&args.stdin)?;
        let net = Network::load(args, Need::Release)?;
        let mut failures = Failures::default();
        // A host veth takes its host routes with it; the tunnel is node state and stays.
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
        ipip::status(&mut node, &net.device)?;
        let (tunnel, underlay_mtu) = net.tunnel(&mut node).map_err(unavailable)?;
        let plane = Ipip::planned(&mut node, &tunnel, underlay_mtu).map_err(unavailable)?;
        net.netfilter_status().map_err(unavailable)?;
        net.ipam_status(args).map_err(unavailable)?;
        net.view_status(&mut node, &plane).map_err(unavailable)
    }
}

/// Code 7 when the IPAM handed out an IPv6 address (an IPAM that is not host-local names its
/// ranges only in its result): ipip carries IPv4 only.
fn refuse_ipv6(ips: &[IpConfig]) -> Result<()> {
    match ips.iter().map(|c| c.address).find(IpNetwork::is_ipv6) {
        Some(a) => Err(Error::invalid_config(format!(
            "the IPAM gave the pod the IPv6 address {a}, but ipip carries IPv4 only: configure \
             IPv4 ranges only, or use the vxlan data plane for IPv6"
        ))),
        None if ips.is_empty() => Err(Error::invalid_config(
            "the IPAM gave the pod no IPv4 address: a routed pod is nothing but its addresses",
        )),
        None => Ok(()),
    }
}

twill::plugin_main!(
    IpipPlugin,
    "twill ipip: /32 pods behind a proxy-ARP host veth, other nodes' blocks through an IP-in-IP \
     tunnel (Calico's IP-in-IP data plane)"
);

#[cfg(test)]
mod tests {
    use super::*;
    use twill::code;

    #[test]
    fn ipv6_or_no_pod_address_is_refused_with_code_7() {
        let a = |s: &str| IpConfig {
            address: s.parse::<IpNetwork>().unwrap(),
            gateway: None,
            interface: None,
        };
        assert!(refuse_ipv6(&[a("10.1.0.2/32")]).is_ok());
        let e = refuse_ipv6(&[a("10.1.0.2/32"), a("fd00::2/128")]).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(e.msg.contains("IPv4 only"), "{e}");
        assert_eq!(refuse_ipv6(&[]).unwrap_err().code, code::INVALID_CONFIG);
    }
}
