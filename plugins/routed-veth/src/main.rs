//! twill routed-veth: Calico's routed data plane. No bridge: each pod holds its addresses as
//! `/32` (`/128`) behind the fixed gateway 169.254.1.1 (IPv6: the host veth's link-local
//! address), its host veth answers for that gateway, and the node routes each pod address to
//! its host veth; the node's own blocks are blackholed and the other nodes' blocks routed via
//! their node IPs.
//!
//! ADD, start to end: parse the config, make the pair (host end named with `hostVethPrefix`,
//! MAC ee:ee:ee:ee:ee:ee, no master; pod end made in the pod netns), allocate, set up the host
//! end, set up the pod side, route the pod's addresses to the host end, reconcile the node's
//! blocks and rules, print the result. Any failure undoes what this ADD made.
//! The mechanisms live in `twill::pod::{veth, routed}`, `twill::node::routed` and
//! `twill::network`.
#![cfg_attr(not(test), no_main)]

mod config;

use config::Network;
use twill::error::{Failures, unavailable};
use twill::kernel::netlink::Netlink;
use twill::network::pod_netns;
use twill::network::undo::Undo;
use twill::network::{Need, subnets_of};
use twill::pod::routed;
use twill::pod::veth::Owner;
use twill::pod::veth::{self, PairSpec};
use twill::{CmdArgs, CniResult, Dns, Error, Plugin, Result};

struct RoutedVeth;

impl Plugin for RoutedVeth {
    fn add(&self, args: &CmdArgs) -> Result<CniResult> {
        let net = Network::load(args, Need::Required)?;
        let rules = net.preflight_node_rules()?;
        let pod_ns = pod_netns(args)?;
        let mut node = Netlink::new()?;
        let mut undo = Undo::new("routed-veth");

        let pair = PairSpec {
            owner: Owner::of(net.name(), args),
            pod_ns: &pod_ns,
            mtu: net.default_mtu(&mut node)?,
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
            net.pod_settings,
        )?;
        net.warn(&replaced);

        let subnets = subnets_of(ipam.ips.iter().map(|c| &c.address));
        net.reconcile_peers(&mut node, &subnets, &net.plane(&subnets))?;
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
        let owner = Owner::of(net.name(), args);
        routed::check(&mut node, &pod_ns, &owner, &net.host_veth_prefix, &prev)?;
        net.ipam_check(args)?;
        let subnets = net.own_ranges_with(&[]);
        net.check_peers(&mut node, &subnets, &net.plane(&subnets))?;
        net.check_node_rules(&subnets);
        Ok(())
    }

    fn gc(&self, args: &CmdArgs) -> Result<()> {
        let valid = twill::cni::types::valid_attachments(&args.stdin)?;
        let net = Network::load(args, Need::Release)?;
        let mut failures = Failures::default();
        // A host veth takes its host routes with it.
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
        net.default_mtu(&mut node).map_err(unavailable)?;
        net.netfilter_status().map_err(unavailable)?;
        net.ipam_status(args).map_err(unavailable)?;
        net.view_status(&mut node, &net.plane(&[]))
            .map_err(unavailable)
    }
}

twill::plugin_main!(
    RoutedVeth,
    "twill routed-veth: /32 pods behind a proxy-ARP host veth, routed (Calico's data plane)"
);
