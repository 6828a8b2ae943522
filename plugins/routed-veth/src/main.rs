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
use ipnetwork::IpNetwork;
use twill::kernel::netlink::Netlink;
use twill::kernel::netns::Netns;
use twill::network::undo::Undo;
use twill::network::{Need, subnets_of};
use twill::pod::routed::{self, HOST_MAC};
use twill::pod::veth::{self, HostSpec, PairSpec};
use twill::{CmdArgs, CniResult, Dns, Error, Interface, Plugin, Result, code};

struct RoutedVeth;

impl Plugin for RoutedVeth {
    fn add(&self, args: &CmdArgs) -> Result<CniResult> {
        let net = Network::load(args, Need::Required)?;
        net.preflight_node_rules()?;
        let pod_ns = open_netns(args)?;
        let mut node = Netlink::new()?;
        let mut undo = Undo::new("routed-veth");

        let pair = PairSpec {
            owner: owner(&net, args),
            pod_ns: &pod_ns,
            mtu: net.default_mtu(&mut node)?,
            bridge: 0, // no bridge: `host_spec` makes the host end, without a master
            pod_mac: net.pod_mac,
        };
        let host = veth::create_with(&mut node, &pair, &host_spec(&net))?;
        let made = host.clone();
        undo.push("delete the veth pair", move || {
            veth::delete_created(&mut Netlink::new()?, &made).map(drop)
        });

        let ipam = net.allocate(args)?;
        undo.push("release the IP addresses", || net.release(args));
        let ips = routed::pod_ips(&ipam.ips);
        let addrs: Vec<IpNetwork> = ips.iter().map(|c| c.address).collect();
        let (v4, v6) = families(&addrs);

        routed::setup_host(&host, v4, v6)?;
        let (routes, result_routes) = routed::pod_routes(&ips, &ipam.routes);
        let pod = routed::configure_pod(
            &pod_ns,
            &args.ifname,
            &host,
            &addrs,
            &routes,
            net.pod_settings,
        )?;
        net.warn(&routed::route_to_pod(&mut node, &host, &addrs)?);

        let subnets = subnets_of(ipam.ips.iter().map(|c| &c.address));
        net.reconcile_peers(&mut node, &subnets, &net.plane(&subnets))?;
        net.ensure_node_rules(&subnets)?;
        undo.commit();

        let sandbox = pod_ns.path().to_string_lossy().into_owned();
        Ok(CniResult {
            interfaces: vec![
                iface(&host.name, Some(HOST_MAC.to_string()), None),
                iface(&args.ifname, pod.mac.map(|m| m.to_string()), Some(sandbox)),
            ],
            ips,
            routes: result_routes,
            dns: merge_dns(net.conf.dns.clone(), ipam.dns),
        })
    }

    fn del(&self, args: &CmdArgs) -> Result<()> {
        let net = Network::load(args, Need::Release)?;
        let mut failures = Vec::new();
        let removed = Netlink::new().map_err(Error::from).and_then(|mut node| {
            let owner = owner(&net, args);
            if routed::delete_host(&mut node, &owner, &net.host_veth_prefix)? {
                return Ok(true);
            }
            // A pair an ADD killed before marking it is found through the pod's netns.
            let prefix_ok = veth::validate_prefix(&net.host_veth_prefix).is_ok();
            match args
                .netns
                .as_deref()
                .map(Netns::open_if_exists)
                .transpose()?
            {
                Some(Some(pod_ns)) if prefix_ok => {
                    veth::delete_unmarked_with(&mut node, &owner, &net.host_veth_prefix, &pod_ns)
                }
                _ => Ok(false),
            }
        });
        if let Err(e) = removed {
            failures.push(("remove the host veth".to_string(), e));
        }
        if let Err(e) = net.release(args) {
            failures.push(("release the addresses".to_string(), e));
        }
        reported("DEL", failures)
    }

    fn check(&self, args: &CmdArgs) -> Result<()> {
        let net = Network::load(args, Need::Required)?;
        let prev = net
            .conf
            .prev_result()?
            .ok_or_else(|| Error::invalid_config("CHECK needs the ADD result as \"prevResult\""))?;
        let pod_ns = open_netns(args)?;
        let mut node = Netlink::new()?;
        let owner = owner(&net, args);
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
        let mut failures = Vec::new();
        // A host veth takes its host routes with it.
        match Netlink::new() {
            Ok(mut node) => failures.extend(veth::remove_stale(&mut node, &net.conf.name, &valid)),
            Err(e) => failures.push(("open a netlink socket".into(), e.into())),
        }
        if let Err(e) = net.ipam_gc(args) {
            failures.push(("IPAM GC".into(), e));
        }
        reported("GC", failures)
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

/// The owner of the attachment `args` names, in network `net`.
fn owner<'a>(net: &'a Network, args: &'a CmdArgs) -> veth::Owner<'a> {
    veth::Owner {
        network: &net.conf.name,
        container_id: &args.container_id,
        ifname: &args.ifname,
    }
}

/// The routed host end: named with `hostVethPrefix`, no master, Calico's MAC.
fn host_spec(net: &Network) -> HostSpec<'_> {
    HostSpec {
        prefix: &net.host_veth_prefix,
        master: None,
        mac: Some(HOST_MAC),
    }
}

/// Whether `addrs` hold IPv4, IPv6 addresses.
fn families(addrs: &[IpNetwork]) -> (bool, bool) {
    (
        addrs.iter().any(IpNetwork::is_ipv4),
        addrs.iter().any(IpNetwork::is_ipv6),
    )
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

/// The items of a command that went on past failures (DEL, GC): Ok when none failed; one
/// failure as it is, named; else one error listing them all, with the first one's code.
fn reported(command: &str, mut items: Vec<(String, Error)>) -> Result<()> {
    let Some(code) = items.first().map(|(_, e)| e.code) else {
        return Ok(());
    };
    if items.len() == 1
        && let Some((what, e)) = items.pop()
    {
        return Err(e.context(format!("{command}: {what}")));
    }
    let list: Vec<String> = items
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
    let pick = |a: Vec<String>, b: Vec<String>| if a.is_empty() { b } else { a };
    Dns {
        nameservers: pick(c.nameservers, ipam.nameservers),
        domain: c.domain.or(ipam.domain),
        search: pick(c.search, ipam.search),
        options: pick(c.options, ipam.options),
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
    RoutedVeth,
    "twill routed-veth: /32 pods behind a proxy-ARP host veth, routed (Calico's data plane)"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_reported_together_with_the_first_code() {
        assert!(reported("GC", vec![]).is_ok());
        let e = reported(
            "GC",
            vec![(
                "IPAM GC".into(),
                Error::new(code::IO, "disk").with_details("d"),
            )],
        )
        .unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (code::IO, "GC: IPAM GC: disk"));
        let e = reported(
            "DEL",
            vec![
                (
                    "remove the host veth".into(),
                    Error::new(code::NETLINK, "busy"),
                ),
                ("release the addresses".into(), Error::new(code::IO, "disk")),
            ],
        )
        .unwrap_err();
        assert_eq!(e.code, code::NETLINK);
        assert!(e.msg.contains("busy") && e.msg.contains("disk"), "{e}");
    }

    #[test]
    fn status_keeps_50_and_51_and_maps_the_rest_to_50() {
        let e = unavailable(Error::invalid_config("x").with_details("d"));
        assert_eq!((e.code, e.details.as_str()), (code::NOT_AVAILABLE, "d"));
        let e = unavailable(Error::new(code::LIMITED_CONNECTIVITY, "y"));
        assert_eq!(e.code, code::LIMITED_CONNECTIVITY);
    }
}
