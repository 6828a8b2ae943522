//! twill-bare-add: the kernel floor of one pod's ADD. It makes exactly the links, addresses,
//! routes and neighbour entries a twill data plane makes for one pod, through twill's netlink
//! layer, with no config parsing, no checks, no lookups and no IPAM: everything it needs comes
//! on the command line. The bench times its whole execution like a plugin's, so the difference
//! between a plugin's ADD and this program's is what the plugin adds on top of the kernel.
//!
//! The links carry the attributes the plugin gives them: in bridge mode the host end's mark
//! (an alias) and the hairpin flag that `hairpinMode` defaults to, and the pod end's
//! `arp_notify`. What the plugin does beyond making objects is not here: bridge-host-gw's
//! second announcement of the pod's address once the bridge port forwards (a packet, not an
//! object: the MAC set to itself after a lookup that runs the port's pending carrier work) is
//! part of what the table's "vs floor" shows.
//!
//! Usage (run in the node netns; the pod end is made directly in POD_NETNS as `eth0`):
//!   twill-bare-add bridge POD_NETNS HOST_IFNAME BRIDGE_IFINDEX IP/PREFIX GATEWAY
//!   twill-bare-add routed POD_NETNS HOST_IFNAME IP
//! Exit status 0 on success; 1 with the kernel's error on stderr.

use ipnetwork::IpNetwork;
use std::net::IpAddr;
use std::path::Path;
use twill::kernel::netlink::{
    AddrOptions, Batch, LinkChange, MacAddr, NeighbourSpec, Netlink, PortFlags, RouteSpec,
    VethSpec, inet_conf, rt_scope,
};
use twill::kernel::netns::Netns;
use twill::kernel::sysctl;
use twill::pod::routed::{GATEWAY4, HOST_MAC};

/// The pod end's name.
const IFNAME: &str = "eth0";

type Res<T> = Result<T, String>;

fn arg<T: std::str::FromStr>(v: Option<&String>, what: &str) -> Res<T> {
    let s = v.ok_or_else(|| format!("missing {what}"))?;
    s.parse().map_err(|_| format!("bad {what}: {s}"))
}

/// The pair: host end up (on `master` when given), pod end `eth0` (MAC `pod_mac` when given)
/// born in the pod netns. Returns (host end, pod end) ifindexes from the creation echo.
fn pair(
    node: &mut Netlink,
    pod: &Netns,
    host: &str,
    master: Option<u32>,
    pod_mac: Option<MacAddr>,
) -> Res<(u32, u32)> {
    let spec = VethSpec {
        name: host,
        master,
        up: true,
        peer_name: IFNAME,
        peer_netns: Some(pod.as_fd()),
        peer_mac: pod_mac,
        ..Default::default()
    };
    let link = node
        .create_veth_echo(&spec)
        .map_err(|e| e.to_string())?
        .ok_or("the kernel echoed no link (needs ~6.2)")?;
    let peer = link.link.ok_or("the echo names no peer")?;
    Ok((link.index, peer))
}

fn bridge(args: &[String]) -> Res<()> {
    let pod = Netns::open(Path::new(&args[0])).map_err(|e| e.to_string())?;
    let host = &args[1];
    let br: u32 = arg(args.get(2), "bridge ifindex")?;
    let ip: IpNetwork = arg(args.get(3), "IP/PREFIX")?;
    let gw: IpAddr = arg(args.get(4), "gateway")?;
    let mut node = Netlink::new().map_err(|e| e.to_string())?;
    let mac = twill::pod::veth::random_mac();
    let (host_index, index) = pair(&mut node, &pod, host, Some(br), Some(mac))?;
    // The host end's mark and port flag: one request (neither is taken at creation).
    let mark = format!("twill bare {host}");
    let port = PortFlags {
        hairpin: true,
        isolated: false,
    };
    node.change_link(
        host_index,
        &LinkChange {
            alias: Some(&mark),
            port: Some(port),
            ..Default::default()
        },
    )
    .map_err(|e| e.to_string())?;
    // In the pod: the address, up with arp_notify, the default route: one send.
    let mut nl = Netlink::new_in(&pod).map_err(|e| e.to_string())?;
    let mut b = Batch::new();
    b.add_address(index, ip, &AddrOptions::default());
    b.change_link(
        index,
        &LinkChange {
            up: true,
            inet_conf: &[(inet_conf::ARP_NOTIFY, 1)],
            ..Default::default()
        },
    );
    b.append_route(&RouteSpec::default_via(gw));
    nl.send_batch(b).map_err(|e| e.to_string())
}

fn routed(args: &[String]) -> Res<()> {
    let pod = Netns::open(Path::new(&args[0])).map_err(|e| e.to_string())?;
    let host = &args[1];
    let ip: IpAddr = arg(args.get(2), "IP")?;
    let mut node = Netlink::new().map_err(|e| e.to_string())?;
    let (host_index, index) = pair(&mut node, &pod, host, None, None)?;
    for key in ["forwarding", "proxy_arp"] {
        sysctl::set(&format!("net/ipv4/conf/{host}/{key}"), "1").map_err(|e| e.to_string())?;
    }
    sysctl::set(&format!("net/ipv4/neigh/{host}/proxy_delay"), "0").map_err(|e| e.to_string())?;
    node.add_route(&RouteSpec {
        oif: Some(host_index),
        scope: Some(rt_scope::LINK),
        ..RouteSpec::new(IpNetwork::from(ip))
    })
    .map_err(|e| e.to_string())?;
    let mut nl = Netlink::new_in(&pod).map_err(|e| e.to_string())?;
    let gw = IpAddr::V4(GATEWAY4);
    nl.add_address(index, IpNetwork::from(ip), &AddrOptions::default())
        .map_err(|e| e.to_string())?;
    nl.set_link_up(index, true).map_err(|e| e.to_string())?;
    nl.replace_neighbour(&NeighbourSpec::permanent(index, gw, HOST_MAC))
        .map_err(|e| e.to_string())?;
    nl.add_route(&RouteSpec {
        oif: Some(index),
        scope: Some(rt_scope::LINK),
        ..RouteSpec::new(IpNetwork::from(gw))
    })
    .map_err(|e| e.to_string())?;
    nl.add_route(&RouteSpec {
        oif: Some(index),
        ..RouteSpec::default_via(gw)
    })
    .map_err(|e| e.to_string())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = match args.first().map(String::as_str) {
        Some("bridge") if args.len() == 6 => bridge(&args[1..]),
        Some("routed") if args.len() == 4 => routed(&args[1..]),
        _ => Err("usage: twill-bare-add bridge POD_NETNS HOST_IFNAME BRIDGE_IFINDEX IP/PREFIX GATEWAY | routed POD_NETNS HOST_IFNAME IP".into()),
    };
    if let Err(e) = out {
        eprintln!("twill-bare-add: {e}");
        std::process::exit(1);
    }
}
