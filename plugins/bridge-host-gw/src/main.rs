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
use twill::kernel::netlink::Netlink;
use twill::kernel::netns::Netns;
use twill::network::undo::Undo;
use twill::network::{Need, subnets_of};
use twill::node::host_gw::HostGw;
use twill::pod::bridge;
use twill::pod::veth::{self, PairSpec};
use twill::{CmdArgs, CniResult, Dns, Error, Interface, IpConfig, Plugin, Result, code};

struct BridgeHostGw;

impl Plugin for BridgeHostGw {
    fn add(&self, args: &CmdArgs) -> Result<CniResult> {
        let net = Network::load(args, Need::Required)?;
        net.preflight_node_rules()?;
        let pod_ns = open_netns(args)?;
        let mut node = Netlink::new()?;
        let mut undo = Undo::new("bridge-host-gw");

        let br = bridge::ensure_with(&mut node, &net.bridge, &net.bridge_options(), |nl| {
            net.bridge_mtu(nl)
        })?;
        let pair = PairSpec {
            owner: owner(&net, args),
            pod_ns: &pod_ns,
            mtu: br.mtu,
            bridge: br.index,
            pod_mac: net.pod_mac,
        };
        let host = veth::create(&mut node, &pair)?;
        let made = host.clone();
        undo.push("delete the veth pair", move || {
            veth::delete_created(&mut Netlink::new()?, &made).map(drop)
        });
        bridge::configure_port(&mut node, host.index, &host.name, net.port_flags())?;

        let ipam = net.allocate(args)?;
        undo.push("release the IP addresses", || net.release(args));
        let ips = with_gateways(&net, ipam.ips);
        let addrs: Vec<IpNetwork> = ips.iter().map(|c| c.address).collect();

        bridge::enable_forwarding(
            addrs.iter().any(IpNetwork::is_ipv4),
            addrs.iter().any(IpNetwork::is_ipv6),
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
        net.ensure_node_rules(&subnets)?;
        undo.commit();

        let sandbox = pod_ns.path().to_string_lossy().into_owned();
        Ok(CniResult {
            interfaces: vec![
                iface(&br.name, br.mac.map(|m| m.to_string()), None),
                iface(&host.name, Some(host.mac.to_string()), None),
                iface(&args.ifname, pod.mac.map(|m| m.to_string()), Some(sandbox)),
            ],
            ips,
            routes: result_routes,
            dns: merge_dns(net.conf.dns.clone(), ipam.dns),
        })
    }

    fn del(&self, args: &CmdArgs) -> Result<()> {
        let net = Network::load(args, Need::Release)?;
        let mut failures = Failures::default();
        let removed = Netlink::new().map_err(Error::from).and_then(|mut node| {
            let owner = owner(&net, args);
            if veth::delete(&mut node, &owner)? {
                return Ok(true);
            }
            // A pair an ADD killed before marking it is found through the pod's netns.
            match args
                .netns
                .as_deref()
                .map(Netns::open_if_exists)
                .transpose()?
            {
                Some(Some(pod_ns)) => {
                    veth::delete_unmarked_with(&mut node, &owner, veth::HOST_PREFIX, &pod_ns)
                }
                _ => Ok(false),
            }
        });
        if let Err(e) = removed {
            failures.push("remove the host veth".into(), e);
        }
        if let Err(e) = net.release(args) {
            failures.push("release the addresses".into(), e);
        }
        failures.into_result("DEL")
    }

    fn check(&self, args: &CmdArgs) -> Result<()> {
        let net = Network::load(args, Need::Required)?;
        let prev = net
            .conf
            .prev_result()?
            .ok_or_else(|| Error::invalid_config("CHECK needs the ADD result as \"prevResult\""))?;
        let pod_ns = open_netns(args)?;
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
            &owner(&net, args),
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
            Err(e) => failures.push("open a netlink socket".into(), e.into()),
        }
        if let Err(e) = net.ipam_gc(args) {
            failures.push("IPAM GC".into(), e);
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

/// The owner of the attachment `args` names, in network `net`.
fn owner<'a>(net: &'a Network, args: &'a CmdArgs) -> veth::Owner<'a> {
    veth::Owner {
        network: &net.conf.name,
        container_id: &args.container_id,
        ifname: &args.ifname,
    }
}

/// Failures of the items of a command that goes on past them (DEL, GC), reported together.
#[derive(Default)]
struct Failures {
    items: Vec<(String, Error)>,
}

impl Failures {
    fn push(&mut self, what: String, e: Error) {
        self.items.push((what, e));
    }

    fn extend(&mut self, items: Vec<(String, Error)>) {
        self.items.extend(items);
    }

    /// Ok when nothing failed; one failure as it is, named; else one error listing every
    /// failure, with the first one's code.
    fn into_result(mut self, command: &str) -> Result<()> {
        let Some(code) = self.items.first().map(|(_, e)| e.code) else {
            return Ok(());
        };
        if self.items.len() == 1
            && let Some((what, e)) = self.items.pop()
        {
            return Err(e.context(format!("{command}: {what}")));
        }
        let list: Vec<String> = self
            .items
            .iter()
            .map(|(what, e)| format!("{what}: {}", e.msg))
            .collect();
        Err(Error::new(
            code,
            format!(
                "{command}: {} items failed (everything else was done): {}",
                list.len(),
                list.join("; ")
            ),
        ))
    }
}

/// The pod's netns (ADD, CHECK): code 3 when the path does not exist, 7 when it is not a
/// network namespace, 5 when it cannot be opened.
fn open_netns(args: &CmdArgs) -> Result<Netns> {
    let path = args
        .netns
        .as_deref()
        .ok_or_else(|| Error::invalid_env("CNI_NETNS is required"))?;
    if !path.exists() {
        return Err(Error::new(
            code::UNKNOWN_CONTAINER,
            format!("network namespace {} does not exist", path.display()),
        ));
    }
    Netns::open(path)
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

fn iface(name: &str, mac: Option<String>, sandbox: Option<String>) -> Interface {
    Interface {
        name: name.to_string(),
        mac,
        sandbox,
        ..Default::default()
    }
}

/// The result's DNS: the config's `dns` fields, each falling back to IPAM's.
fn merge_dns(conf: Option<Dns>, ipam: Dns) -> Dns {
    let Some(c) = conf else { return ipam };
    Dns {
        nameservers: if c.nameservers.is_empty() {
            ipam.nameservers
        } else {
            c.nameservers
        },
        domain: c.domain.or(ipam.domain),
        search: if c.search.is_empty() {
            ipam.search
        } else {
            c.search
        },
        options: if c.options.is_empty() {
            ipam.options
        } else {
            c.options
        },
    }
}

/// STATUS: anything that keeps ADD from working is "not available" (50), unless the error
/// already says 50 or 51.
fn unavailable(e: Error) -> Error {
    if e.code == code::NOT_AVAILABLE || e.code == code::LIMITED_CONNECTIVITY {
        return e;
    }
    Error::new(code::NOT_AVAILABLE, format!("not available: {}", e.msg)).with_details(e.details)
}

twill::plugin_main!(
    BridgeHostGw,
    "twill bridge-host-gw: pods on a bridge, host-gw routes to the other nodes' pods"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_fields_fall_back_to_ipam() {
        let ipam = Dns {
            nameservers: vec!["10.0.0.53".into()],
            domain: Some("ipam.local".into()),
            search: vec!["ipam.local".into()],
            options: vec!["ndots:2".into()],
        };
        assert_eq!(merge_dns(None, ipam.clone()), ipam);
        let conf = Dns {
            nameservers: vec!["10.96.0.10".into()],
            ..Default::default()
        };
        let got = merge_dns(Some(conf), ipam);
        assert_eq!(got.nameservers, vec!["10.96.0.10".to_string()]);
        assert_eq!(got.domain.as_deref(), Some("ipam.local"));
        assert_eq!(got.options, vec!["ndots:2".to_string()]);
    }

    #[test]
    fn failures_are_reported_together() {
        assert!(Failures::default().into_result("GC").is_ok());
        let mut one = Failures::default();
        one.push(
            "IPAM GC".into(),
            Error::new(code::IO, "disk").with_details("d"),
        );
        let e = one.into_result("GC").unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (code::IO, "GC: IPAM GC: disk"));
        assert_eq!(e.details, "d");
        let mut two = Failures::default();
        two.push(
            "remove host veth a".into(),
            Error::new(code::NETLINK, "busy"),
        );
        two.push("IPAM GC".into(), Error::new(code::IO, "disk"));
        let e = two.into_result("GC").unwrap_err();
        assert_eq!(e.code, code::NETLINK);
        assert!(
            e.msg.contains("remove host veth a: busy") && e.msg.contains("IPAM GC: disk"),
            "{e}"
        );
    }

    #[test]
    fn unavailable_keeps_50_and_51() {
        let e = unavailable(Error::invalid_config("x").with_details("d"));
        assert_eq!((e.code, e.details.as_str()), (code::NOT_AVAILABLE, "d"));
        let e = unavailable(Error::new(code::LIMITED_CONNECTIVITY, "y"));
        assert_eq!(e.code, code::LIMITED_CONNECTIVITY);
    }
}
