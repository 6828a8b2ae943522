//! Black-box conformance of twill's `routed-veth` plugin (Calico's routed data plane).
//!
//! Every test builds its own fabric of namespaces (see `conformance::fabric` and
//! `conformance::routed`): node `i` (0-based) has the underlay address `10.99.0.(i+1)`
//! (dual-stack: `fd99::(i+1)`), the block `10.244.(i+1).0/24` (dual-stack:
//! `fd00:10:0:(i+1)::/64`) in its own flannel subnet file, and its own dataDir, runDir and peers
//! file. The fabric's nodes have no default route. The plugin runs "on" a node via
//! `nsenter --net`; nothing touches the root namespace, and every namespace and directory is
//! removed by its guard, also on failure.
//!
//! Tests:
//! - `mesh_*`: 3 nodes x 3 pods, all pairs (same node through the host, across nodes via peer
//!   routes), pod to node and node to pod, the pod's gateway resolved to ee:ee:ee:ee:ee:ee, host
//!   routes, blackholes, peer routes, full cleanup after DEL; IPv4, dual-stack, IPv6 only.
//! - the gateway on a node without a default route, the host veth's wiring, the blackhole, a
//!   stale host route replaced.
//! - `version_*`: every command in every CNI version, result shapes, kernel state.
//! - DEL idempotency, ADD rollback, CHECK detection, GC, STATUS, refused configs, and a
//!   bridge-host-gw network side by side with its own GC.

use conformance::hostgw::{
    self, CLUSTER4, NodeSnapshot, code, error_text, in_cidr, pod_cidr4, pod_cidr6,
    state_without_cursors, version_at_least, wait_counter, with_attachments,
};
use conformance::routed::*;
use conformance::{
    CNI_VERSIONS, DirSnapshot, Fabric, Invocation, Netns, Pod, no_reply, ping, result_ips,
    unique_name,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

// ---------------------------------------------------------------------------------------------
// Reachability: 3 nodes x 3 pods
// ---------------------------------------------------------------------------------------------

fn mesh(dual: bool) {
    let fab = if dual {
        Fabric::single_l2_dual(3)
    } else {
        Fabric::single_l2(3)
    };
    let c = RoutedCluster::new(fab);
    let mut pods: Vec<(usize, Pod)> = Vec::new();
    for i in 0..3 {
        for _ in 0..3 {
            pods.push((i, c.add_pod(i)));
        }
    }
    for (i, p) in &pods {
        let ips = result_ips(&p.result);
        assert_eq!(ips.len(), if dual { 2 } else { 1 }, "{}", p.result);
        assert!(in_cidr(&ips[0], &pod_cidr4(*i)), "{}", p.result);
        if dual {
            assert!(in_cidr(&ips[1], &pod_cidr6(*i)), "{}", p.result);
        }
        assert_pod_side(p, dual);
    }
    let all_ips: Vec<IpAddr> = pods
        .iter()
        .flat_map(|(_, p)| result_ips(&p.result))
        .collect();
    for i in 0..3 {
        let ns = &c.node(i).ns;
        let want: BTreeMap<String, String> = pods
            .iter()
            .filter(|(j, _)| *j == i)
            .flat_map(|(_, p)| {
                let hv = host_veth(&p.result);
                result_ips(&p.result)
                    .into_iter()
                    .map(move |ip| (ip.to_string(), hv.clone()))
            })
            .collect();
        assert_eq!(
            host_routes(ns),
            want,
            "node {i}: one host route per pod address"
        );
        assert_eq!(
            blackholes(ns),
            c.own_blocks(i),
            "node {i}: own blocks blackholed"
        );
        assert_eq!(
            peer_routes(ns),
            c.c.expected_peer_routes(i),
            "node {i}: the other nodes' blocks via their node IPs"
        );
    }

    let mut failures = Vec::new();
    for (a, (i, p)) in pods.iter().enumerate() {
        let mut targets: Vec<(String, IpAddr)> = Vec::new();
        for (b, (j, q)) in pods.iter().enumerate().filter(|(b, _)| *b != a) {
            for ip in result_ips(&q.result) {
                targets.push((format!("pod {b} on node {j}"), ip));
            }
        }
        for (what, n) in [("own node", *i), ("another node", (i + 1) % 3)] {
            let node = c.node(n);
            targets.push((format!("{what} {n}"), IpAddr::from(node.ip)));
            if let Some(ip6) = node.ip6 {
                targets.push((format!("{what} {n}"), IpAddr::from(ip6)));
            }
        }
        for (what, ip) in targets {
            if !ping(&p.ns, ip) {
                failures.push(format!("pod {a} on node {i} -> {what} ({ip})"));
            }
        }
        // Node to pod: its own node and another one.
        for n in [*i, (i + 1) % 3] {
            for ip in result_ips(&p.result) {
                if !ping(&c.node(n).ns, ip) {
                    failures.push(format!("node {n} -> pod {a} on node {i} ({ip})"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "unreachable ({}):\n  {}",
        failures.len(),
        failures.join("\n  ")
    );

    for (_, p) in &pods {
        p.run("DEL").assert_ok_empty();
    }
    for i in 0..3 {
        c.assert_clean_after_dels(i, &all_ips);
    }
}

/// The pod side as Calico makes it: host addresses, the on-link gateway with a permanent
/// neighbour entry to the host MAC (ARP resolves 169.254.1.1 to ee:ee:ee:ee:ee:ee without
/// asking), default routes via the gateways.
fn assert_pod_side(p: &Pod, dual: bool) {
    let cidrs = p.ns.global_cidrs("eth0");
    let want: Vec<String> = result_ips(&p.result)
        .iter()
        .map(|ip| format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 }))
        .collect();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(cidrs, want_sorted, "pod addresses are host addresses");
    let neigh = p.ns.neighbours();
    let mut gws = vec![GW4];
    if dual {
        gws.push(GW6);
    }
    for gw in gws {
        let n = neigh
            .iter()
            .find(|n| n.dst.to_string() == gw && n.dev == "eth0")
            .unwrap_or_else(|| panic!("no neighbour entry for {gw} in the pod: {neigh:?}"));
        assert_eq!(n.lladdr.as_deref(), Some(HOST_MAC), "{gw}: {:?}", n.raw);
        assert_eq!(n.state, vec!["PERMANENT".to_string()], "{gw}: {:?}", n.raw);
        let default = p.ns.main_routes().into_iter().find(|r| {
            r.dst == "default" && r.gateway.map(|g| g.to_string()).as_deref() == Some(gw)
        });
        assert!(default.is_some(), "no default route via {gw} in the pod");
    }
    let link_route = p.ns.main_routes().into_iter().find(|r| r.dst == GW4);
    let link_route = link_route.unwrap_or_else(|| panic!("no route to {GW4} in the pod"));
    assert_eq!(
        link_route.scope.as_deref(),
        Some("link"),
        "{:?}",
        link_route.raw
    );
    assert_eq!(link_route.dev.as_deref(), Some("eth0"));
}

#[test]
fn mesh_3x3_ipv4() {
    mesh(false);
}

#[test]
fn mesh_3x3_dual_stack() {
    mesh(true);
}

/// IPv6-only pods (explicit host-local IPAM, no IPv4 range) on two nodes reach each other and
/// their nodes through the link-local gateway.
#[test]
fn ipv6_only_pods_ping_each_other_and_their_nodes() {
    let c = RoutedCluster::new(Fabric::single_l2_dual(2));
    let conf = |i: usize| {
        let mut cf = c.conf(i);
        cf["ipam"] = json!({"type": "host-local", "dataDir": c.node(i).data_dir,
            "ranges": [[{"subnet": pod_cidr6(i)}]]});
        cf
    };
    let a = c.add_pod_with(0, &conf(0));
    let b = c.add_pod_with(0, &conf(0));
    let d = c.add_pod_with(1, &conf(1));
    for p in [&a, &b, &d] {
        let ips = result_ips(&p.result);
        assert!(ips.len() == 1 && ips[0].is_ipv6(), "{}", p.result);
        assert_eq!(p.result["ips"][0]["gateway"], GW6, "{}", p.result);
    }
    let ip = |p: &Pod| result_ips(&p.result)[0];
    for (from, to) in [(&a, &b), (&a, &d), (&d, &b)] {
        assert!(ping(&from.ns, ip(to)), "{} -> {}", ip(from), ip(to));
    }
    let n1 = IpAddr::from(c.node(1).ip6.expect("v6"));
    assert!(ping(&a.ns, n1), "pod -> other node {n1}");
    assert!(ping(&c.node(0).ns, ip(&d)), "node 0 -> pod on node 1");
    for p in [&a, &b, &d] {
        p.run("DEL").assert_ok_empty();
    }
    assert_eq!(host_routes(&c.node(0).ns), BTreeMap::new());
}

// ---------------------------------------------------------------------------------------------
// The gateway, the host veth, the blackhole, stale routes
// ---------------------------------------------------------------------------------------------

/// On a node with no default route (proxy ARP would not answer there, and would answer late
/// without proxy_delay=0), a new pod reaches its node and a pod on it with the very first
/// packet; the host veth is wired as Calico's.
#[test]
fn gateway_works_at_once_on_a_node_without_a_default_route() {
    let c = RoutedCluster::new(Fabric::single_l2_dual(2));
    let node = c.node(0);
    assert!(
        !node.ns.main_routes().iter().any(|r| r.dst == "default"),
        "the node must have no default route"
    );
    let a = c.add_pod(0);
    let b = c.add_pod(0);
    // One echo request each, one second to answer: no ARP/NDP round for the gateway.
    for (what, ip) in [
        ("node", IpAddr::from(node.ip)),
        ("node v6", IpAddr::from(node.ip6.expect("v6"))),
        ("pod", result_ips(&b.result)[0]),
        ("pod v6", result_ips(&b.result)[1]),
    ] {
        assert!(!no_reply(&a.ns, ip), "first packet to the {what} ({ip})");
    }
    let hv = host_veth(&a.result);
    assert!(hv.starts_with(PREFIX) && hv.len() == 15, "{hv}");
    let l = node.ns.link(&hv).expect("host veth");
    assert_eq!(l.mac.as_deref(), Some(HOST_MAC));
    assert_eq!(l.kind.as_deref(), Some("veth"));
    assert_eq!(l.master, None, "no bridge");
    assert_eq!(
        node.ns.global_cidrs(&hv),
        Vec::<String>::new(),
        "no address"
    );
    for (key, want) in [
        (format!("net/ipv4/conf/{hv}/proxy_arp"), "1"),
        (format!("net/ipv4/neigh/{hv}/proxy_delay"), "0"),
        (format!("net/ipv4/conf/{hv}/forwarding"), "1"),
        (format!("net/ipv6/conf/{hv}/proxy_ndp"), "1"),
        (format!("net/ipv6/conf/{hv}/forwarding"), "1"),
        (format!("net/ipv6/conf/{hv}/accept_dad"), "0"),
        ("net/ipv4/ip_forward".to_string(), "1"),
    ] {
        assert_eq!(node.ns.sysctl(&key), want, "{key}");
    }
    let ll: Vec<String> = node
        .ns
        .addrs(&hv)
        .iter()
        .filter(|x| x.scope == "link")
        .map(|x| x.ip.to_string())
        .collect();
    assert_eq!(
        ll,
        vec![GW6.to_string()],
        "the IPv6 gateway is the host veth's link-local"
    );
    assert_eq!(
        a.ns.sysctl("net/ipv4/ip_forward"),
        "0",
        "pods do not forward by default"
    );
    for p in [&a, &b] {
        p.run("DEL").assert_ok_empty();
    }
}

/// `containerSettings.allowIpForwarding` turns forwarding on inside the pod.
#[test]
fn allow_ip_forwarding_sets_the_pods_forwarding() {
    let c = RoutedCluster::new(Fabric::single_l2_dual(1));
    let mut conf = c.conf(0);
    conf["containerSettings"] = json!({"allowIpForwarding": true});
    let p = c.add_pod_with(0, &conf);
    assert_eq!(p.ns.sysctl("net/ipv4/ip_forward"), "1");
    assert_eq!(p.ns.sysctl("net/ipv6/conf/all/forwarding"), "1");
    p.run("DEL").assert_ok_empty();
}

/// A packet from a pod to an unallocated address of its node's block is dropped on the node,
/// not sent to the node's default route (an outside host that is the default gateway counts
/// what reaches it; without the blackhole the same packet does reach it).
#[test]
fn blackhole_drops_unallocated_addresses_of_the_own_block() {
    let c = RoutedCluster::new(Fabric::single_l2(1));
    let node = c.node(0);
    let trap = c.c.fab.attach_host("trap", &["10.99.0.250/24"]);
    trap.nft_load(
        "table inet trap {
            counter hits { }
            chain pre {
                type filter hook prerouting priority -300; policy accept;
                ip daddr 10.244.1.200 counter name \"hits\"
            }
        }",
    );
    node.ns
        .ip(&["route", "add", "default", "via", "10.99.0.250"]);
    let p = c.add_pod(0);
    assert_eq!(blackholes(&node.ns), c.own_blocks(0));
    let unallocated: IpAddr = "10.244.1.200".parse().expect("ip");
    assert!(no_reply(&p.ns, unallocated));
    assert_eq!(
        trap.nft_counter("inet", "trap", "hits"),
        0,
        "leaked to the default route"
    );
    // The trap does count such a packet once the blackhole is gone (so the check above can fail).
    node.ns
        .ip(&["route", "del", "blackhole", &pod_cidr4(0), "proto", "116"]);
    assert!(no_reply(&p.ns, unallocated));
    assert!(
        wait_counter(&trap, "trap", "hits", 1) >= 1,
        "trap never saw the packet"
    );
    // The next ADD restores it (the reconcile finds the kernel lost it).
    let q = c.add_pod(0);
    assert_eq!(blackholes(&node.ns), c.own_blocks(0));
    for pod in [&p, &q] {
        pod.run("DEL").assert_ok_empty();
    }
}

/// A host route for the pod's address on another interface (a stale pod's) is replaced by the
/// new pod's, and stderr says so; ADD succeeds and the pod is reachable.
#[test]
fn stale_host_route_on_another_interface_is_replaced_and_reported() {
    let c = RoutedCluster::new(Fabric::single_l2(1));
    let node = c.node(0);
    node.ns.ip(&[
        "link", "add", "stale0", "type", "veth", "peer", "name", "stale1",
    ]);
    node.ns.ip(&["link", "set", "stale0", "up"]);
    node.ns.ip(&[
        "route",
        "add",
        "10.244.1.50/32",
        "dev",
        "stale0",
        "proto",
        "80",
        "scope",
        "link",
    ]);
    let pod_ns = Netns::with_tag("pod");
    let id = unique_name("c");
    let out = node
        .invoke(&plugin(), "ADD", &c.conf(0), &id, pod_ns.path(), "eth0")
        .cni_args("IP=10.244.1.50")
        .run();
    let res = out.assert_ok();
    assert!(
        out.stderr.contains("10.244.1.50") && out.stderr.contains("stale0"),
        "stderr names the replaced route\n{out}"
    );
    let hv = host_veth(&res);
    assert_eq!(host_routes(&node.ns).get("10.244.1.50"), Some(&hv));
    assert!(
        !node
            .ns
            .main_routes()
            .iter()
            .any(|r| r.dev.as_deref() == Some("stale0") && r.dst == "10.244.1.50"),
        "stale route left"
    );
    assert!(ping(&node.ns, "10.244.1.50".parse().expect("ip")));
    node.invoke(&plugin(), "DEL", &c.conf(0), &id, pod_ns.path(), "eth0")
        .run()
        .assert_ok_empty();
}

// ---------------------------------------------------------------------------------------------
// Every command in every version
// ---------------------------------------------------------------------------------------------

fn version_matrix(v: &str) {
    let c = RoutedCluster::new(Fabric::single_l2_dual(2));
    let node = c.node(0);
    let conf = c.conf_v(0, v);
    let pod = c.add_pod_with(0, &conf);
    let res = &pod.result;
    assert_eq!(res["cniVersion"], v, "result cniVersion: {res}");
    let ips = result_ips(res);
    assert_eq!(ips.len(), 2, "{res}");
    let (a4, a6) = (format!("{}/32", ips[0]), format!("{}/128", ips[1]));
    if !version_at_least(v, "0.3.0") {
        assert_eq!(res["ip4"]["ip"], a4.as_str(), "{res}");
        assert_eq!(res["ip4"]["gateway"], GW4, "{res}");
        assert_eq!(res["ip6"]["ip"], a6.as_str(), "{res}");
        assert_eq!(res["ip6"]["gateway"], GW6, "{res}");
    } else {
        let ifs = res["interfaces"].as_array().expect("interfaces");
        assert_eq!(ifs.len(), 2, "[host veth, pod iface]: {res}");
        assert_eq!(ifs[0]["mac"], HOST_MAC, "{res}");
        assert!(ifs[0].get("sandbox").is_none(), "{res}");
        assert_eq!(ifs[1]["name"], "eth0", "{res}");
        assert_eq!(ifs[1]["sandbox"], pod.ns.path_str().as_str(), "{res}");
        let pl = pod.ns.link("eth0").expect("pod eth0");
        assert_eq!(ifs[1]["mac"], pl.mac.unwrap_or_default().as_str(), "{res}");
        for (ip, (addr, gw)) in res["ips"]
            .as_array()
            .expect("ips")
            .iter()
            .zip([(&a4, GW4), (&a6, GW6)])
        {
            assert_eq!(ip["address"], addr.as_str(), "{res}");
            assert_eq!(ip["gateway"], gw, "{res}");
            assert_eq!(ip["interface"], 1, "ips point at the pod interface: {res}");
        }
        let routes: BTreeSet<(String, String)> = res["routes"]
            .as_array()
            .expect("routes")
            .iter()
            .map(|r| {
                (
                    r["dst"].as_str().unwrap_or("").to_string(),
                    r["gw"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        assert!(routes.contains(&("0.0.0.0/0".into(), GW4.into())), "{res}");
        assert!(routes.contains(&("::/0".into(), GW6.into())), "{res}");
        assert!(routes.contains(&(CLUSTER4.into(), String::new())), "{res}");
    }
    assert_pod_side(&pod, true);
    let hv = node.ns.link(&host_veth_of(&pod, node)).expect("host veth");
    assert_eq!(hv.mac.as_deref(), Some(HOST_MAC));
    let mut want_res = BTreeMap::new();
    for ip in &ips {
        want_res.insert(ip.to_string(), format!("{}\r\neth0", pod.container_id));
    }
    assert_eq!(c.reservations(0), want_res);
    let after_add = DirSnapshot::take(&node.data_dir);

    let out = pod.run("CHECK");
    if version_at_least(v, "0.4.0") {
        out.assert_ok_empty();
    } else {
        out.assert_error(code::INCOMPATIBLE_VERSION);
    }
    let gc = with_attachments(&conf, &[(&pod.container_id, "eth0")]);
    for (cmd, cf) in [("GC", &gc), ("STATUS", &conf)] {
        let out = plain(node, cmd, cf);
        if version_at_least(v, "1.1.0") {
            out.assert_ok_empty();
        } else {
            out.assert_error(code::INCOMPATIBLE_VERSION);
        }
    }
    after_add.assert_same(
        &DirSnapshot::take(&node.data_dir),
        format!("CHECK/GC/STATUS {v}"),
    );
    assert_eq!(
        host_veths(&node.ns).len(),
        1,
        "CHECK/GC/STATUS {v} kept the veth"
    );

    pod.run("DEL").assert_ok_empty();
    assert_eq!(host_veths(&node.ns), Vec::<String>::new());
    assert_eq!(host_routes(&node.ns), BTreeMap::new());
    assert!(pod.ns.link("eth0").is_none(), "pod end removed");
    assert_eq!(c.reservations(0), BTreeMap::new());
    pod.run("DEL").assert_ok_empty();
}

/// The host veth of `pod` on `node` (by its pod end's peer index: works for every result
/// shape, including 0.1.0/0.2.0 ones that name no interface).
fn host_veth_of(pod: &Pod, node: &conformance::Node) -> String {
    let peer = pod.ns.link("eth0").expect("eth0").raw["link_index"]
        .as_u64()
        .expect("link_index");
    node.ns
        .links()
        .into_iter()
        .find(|l| u64::from(l.ifindex) == peer)
        .map(|l| l.name)
        .expect("the pod end's peer on the node")
}

conformance::per_cni_version!(version_matrix);

#[test]
fn version_lists_every_version() {
    let out = Invocation::new(plugin())
        .command("VERSION")
        .stdin_json(&json!({"cniVersion": "1.1.0"}))
        .run()
        .assert_ok();
    let listed: BTreeSet<&str> = out["supportedVersions"]
        .as_array()
        .unwrap_or_else(|| panic!("no supportedVersions: {out}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(listed, CNI_VERSIONS.iter().copied().collect(), "{out}");
}

// ---------------------------------------------------------------------------------------------
// DEL, rollback
// ---------------------------------------------------------------------------------------------

#[test]
fn del_is_idempotent_without_netns_or_prev_result() {
    let c = RoutedCluster::new(Fabric::single_l2(1));
    let node = c.node(0);
    let a = c.add_pod(0);
    a.run("DEL").assert_ok_empty();
    assert_eq!(host_veths(&node.ns), Vec::<String>::new());
    assert_eq!(host_routes(&node.ns), BTreeMap::new());
    assert_eq!(c.reservations(0), BTreeMap::new());
    let snap = NodeSnapshot::take(node);
    a.run("DEL").assert_ok_empty();
    assert_eq!(
        NodeSnapshot::take(node),
        snap,
        "second DEL changed the node"
    );

    // With prevResult, as runtimes send it.
    let b = c.add_pod(0);
    let mut with_prev = b.conf().clone();
    with_prev["prevResult"] = b.result.clone();
    b.call("DEL", &with_prev).assert_ok_empty();
    assert_eq!(host_veths(&node.ns), Vec::<String>::new());

    // The pod's netns gone first (the kernel took the pair and the host route with it).
    let d = c.add_pod(0);
    d.ns.delete_now();
    d.run("DEL").assert_ok_empty();
    assert_eq!(
        c.reservations(0),
        BTreeMap::new(),
        "DEL without netns releases"
    );
    d.run("DEL").assert_ok_empty();

    // Someone removed the host veth; a container that never existed.
    let e = c.add_pod(0);
    node.ns.ip(&["link", "del", &host_veth(&e.result)]);
    e.run("DEL").assert_ok_empty();
    assert_eq!(c.reservations(0), BTreeMap::new());
    Invocation::new(plugin())
        .command("DEL")
        .container_id(&unique_name("ghost"))
        .netns("/run/netns/does-not-exist")
        .ifname("eth0")
        .stdin_json(&c.conf(0))
        .on(node.ns.path())
        .run()
        .assert_ok_empty();
    assert_eq!(host_routes(&node.ns), BTreeMap::new());
}

/// DEL finds the pod's host veth by its owner mark even when `hostVethPrefix` changed since
/// ADD (or is no longer valid), so a config change never leaks veths and host routes.
#[test]
fn del_finds_the_host_veth_after_host_veth_prefix_changed() {
    let c = RoutedCluster::new(Fabric::single_l2(1));
    let node = c.node(0);
    for new_prefix in ["other", "no/longer/valid"] {
        let p = c.add_pod(0);
        let hv = host_veth(&p.result);
        let mut changed = c.conf(0);
        changed["hostVethPrefix"] = json!(new_prefix);
        p.call("DEL", &changed).assert_ok_empty();
        assert!(
            node.ns.link(&hv).is_none(),
            "{new_prefix}: {hv} left behind"
        );
        assert_eq!(
            host_routes(&node.ns),
            BTreeMap::new(),
            "{new_prefix}: host route left"
        );
        assert_eq!(c.reservations(0), BTreeMap::new(), "{new_prefix}");
        p.call("DEL", &changed).assert_ok_empty();
    }
}

/// CNI_IFNAME taken in the pod: an error naming it; no host veth, host route or reservation.
#[test]
fn add_failure_ifname_taken_leaves_nothing() {
    let c = RoutedCluster::new(Fabric::single_l2(1));
    let node = c.node(0);
    let keep = c.add_pod(0);
    let links = host_veths(&node.ns);
    let routes = host_routes(&node.ns);
    let state = state_without_cursors(node);
    let pod_ns = Netns::with_tag("pod");
    pod_ns.ip(&["link", "add", "eth0", "type", "bridge"]);
    let out = node
        .invoke(
            &plugin(),
            "ADD",
            &c.conf(0),
            &unique_name("c"),
            pod_ns.path(),
            "eth0",
        )
        .run();
    let err = out
        .check_error_shape()
        .unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert!(
        error_text(&err).contains("eth0"),
        "error names the interface\n{out}"
    );
    assert_eq!(host_veths(&node.ns), links, "no host veth left\n{out}");
    assert_eq!(host_routes(&node.ns), routes, "no host route left");
    assert_eq!(state_without_cursors(node), state, "no reservation left");
    assert_eq!(
        pod_pod_kind(&pod_ns),
        Some("bridge".to_string()),
        "pod's eth0 replaced"
    );
    keep.run("DEL").assert_ok_empty();
}

fn pod_pod_kind(ns: &Netns) -> Option<String> {
    ns.link("eth0").and_then(|l| l.kind)
}

/// A failure after the address was allocated and the pod wired (a runDir that cannot be
/// created, so the node state cannot be recorded): ADD rolls back the veth, its host route
/// and the reservation.
#[test]
fn add_failure_after_allocation_rolls_back() {
    let c = RoutedCluster::new(Fabric::single_l2(1));
    let node = c.node(0);
    let keep = c.add_pod(0);
    let links = host_veths(&node.ns);
    let routes = host_routes(&node.ns);
    let state = state_without_cursors(node);
    let mut bad = c.conf(0);
    let under_a_file = node.subnet_file.join("run");
    bad["runDir"] = json!(under_a_file);
    let (pod, out) = node.try_add_pod(&plugin(), &bad, &unique_name("c"));
    let err = out
        .check_error_shape()
        .unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert!(
        error_text(&err).contains(&under_a_file.display().to_string()),
        "error names the run dir\n{out}"
    );
    assert_eq!(host_veths(&node.ns), links, "no host veth left\n{out}");
    assert_eq!(host_routes(&node.ns), routes, "no host route left");
    assert_eq!(state_without_cursors(node), state, "no reservation left");
    assert_eq!(
        pod.ns.link_names(),
        vec!["lo".to_string()],
        "pod netns emptied"
    );
    keep.run("DEL").assert_ok_empty();
}

/// Bad configs are code 7 naming the key, and change nothing on the node.
#[test]
fn refused_configs_change_nothing() {
    let c = RoutedCluster::new(Fabric::single_l2(1));
    let node = c.node(0);
    let keep = c.add_pod(0);
    let before = NodeSnapshot::take(node);
    for (extra, key) in [
        (json!({"hostVethPrefix": "much-too-long"}), "hostVethPrefix"),
        (json!({"hostVethPrefix": "a/b"}), "hostVethPrefix"),
        (json!({"policy": {"type": "k8s"}}), "policy"),
        (
            json!({"feature_control": {"floating_ips": true}}),
            "floating_ips",
        ),
        (json!({"num_queues": 2}), "num_queues"),
        (json!({"ipam": {}}), "ipam"),
        (json!({"HostVethPrefix": "x"}), "hostVethPrefix"),
        (json!({"mtu": 20}), "mtu"),
    ] {
        let mut conf = c.conf(0);
        for (k, v) in extra.as_object().expect("object") {
            conf[k] = v.clone();
        }
        let (_pod, out) = node.try_add_pod(&plugin(), &conf, &unique_name("c"));
        let err = out.assert_error(7);
        assert!(
            error_text(&err).contains(key),
            "{extra}: names {key}\n{out}"
        );
        assert_eq!(NodeSnapshot::take(node), before, "{extra} changed the node");
    }
    keep.run("DEL").assert_ok_empty();
}

// ---------------------------------------------------------------------------------------------
// CHECK
// ---------------------------------------------------------------------------------------------

/// CHECK passes on a fresh pod and names what was broken: the pod address, the host route,
/// the gateway's neighbour entry, proxy ARP, the host veth's MAC, the host veth itself.
#[test]
fn check_detects_each_broken_part() {
    let c = RoutedCluster::new(Fabric::single_l2(1));
    let node = c.node(0);
    type Break = fn(&Pod, &conformance::Node, &str, &str) -> String;
    let breaks: [(&str, Break); 6] = [
        ("pod address removed", |p, _, _, ip| {
            p.ns.ip(&["addr", "del", &format!("{ip}/32"), "dev", "eth0"]);
            ip.to_string()
        }),
        ("host route removed", |_, n, hv, ip| {
            n.ns.ip(&["route", "del", ip, "dev", hv]);
            ip.to_string()
        }),
        ("gateway neighbour removed", |p, _, _, _| {
            p.ns.ip(&["neigh", "del", GW4, "dev", "eth0"]);
            GW4.to_string()
        }),
        ("proxy ARP turned off", |_, n, hv, _| {
            n.ns.set_sysctl(&format!("net/ipv4/conf/{hv}/proxy_arp"), "0");
            "proxy_arp".to_string()
        }),
        ("host veth MAC changed", |_, n, hv, _| {
            n.ns.ip(&["link", "set", hv, "address", "02:00:00:00:00:09"]);
            hv.to_string()
        }),
        ("host veth removed", |_, n, hv, _| {
            n.ns.ip(&["link", "del", hv]);
            "does not exist".to_string()
        }),
    ];
    for (what, break_it) in breaks {
        let p = c.add_pod(0);
        p.run("CHECK").assert_ok_empty();
        let hv = host_veth(&p.result);
        let ip = result_ips(&p.result)[0].to_string();
        let named = break_it(&p, node, &hv, &ip);
        let out = p.run("CHECK");
        let err = out.assert_error(105);
        assert!(
            error_text(&err).contains(&named),
            "{what}: CHECK names {named}\n{out}"
        );
        p.run("DEL").assert_ok_empty();
    }
}

// ---------------------------------------------------------------------------------------------
// GC, STATUS
// ---------------------------------------------------------------------------------------------

#[test]
fn gc_releases_exactly_the_orphans_with_their_host_routes() {
    let c = RoutedCluster::new(Fabric::single_l2(1));
    let node = c.node(0);
    let pods: Vec<Pod> = (0..4).map(|_| c.add_pod(0)).collect();
    let (valid, orphans) = pods.split_at(2);
    let list: Vec<(&str, &str)> = valid
        .iter()
        .map(|p| (p.container_id.as_str(), "eth0"))
        .collect();
    plain(node, "GC", &with_attachments(&c.conf(0), &list)).assert_ok_empty();
    let res = c.reservations(0);
    let routes = host_routes(&node.ns);
    for p in valid {
        assert!(
            node.ns.link(&host_veth(&p.result)).is_some(),
            "GC removed a valid veth"
        );
        for ip in result_ips(&p.result) {
            assert!(res.contains_key(&ip.to_string()), "GC released valid {ip}");
            assert!(
                routes.contains_key(&ip.to_string()),
                "GC removed valid route {ip}"
            );
        }
    }
    for p in orphans {
        assert!(
            node.ns.link(&host_veth(&p.result)).is_none(),
            "GC kept an orphan veth"
        );
        for ip in result_ips(&p.result) {
            assert!(!res.contains_key(&ip.to_string()), "GC kept orphan {ip}");
            assert!(!routes.contains_key(&ip.to_string()), "GC kept route {ip}");
        }
    }
    assert!(ping(&valid[0].ns, result_ips(&valid[1].result)[0]));
    plain(node, "GC", &with_attachments(&c.conf(0), &[])).assert_ok_empty();
    assert_eq!(host_veths(&node.ns), Vec::<String>::new());
    assert_eq!(host_routes(&node.ns), BTreeMap::new());
    assert_eq!(c.reservations(0), BTreeMap::new());
    assert_eq!(blackholes(&node.ns), c.own_blocks(0), "GC keeps node state");
}

#[test]
fn status_available_missing_subnet_file_and_degraded_peers() {
    let c = RoutedCluster::new(Fabric::single_l2(2));
    let node = c.node(0);
    plain(node, "STATUS", &c.conf(0)).assert_ok_empty();
    let mut missing = c.conf(0);
    missing["subnetFile"] = json!(node.data_dir.join("no-such-subnet.env"));
    let err = plain(node, "STATUS", &missing).assert_error(code::NOT_AVAILABLE);
    assert!(error_text(&err).contains("no-such-subnet.env"), "{err}");
    let mut off_link = c.conf(0);
    off_link
        .as_object_mut()
        .expect("object")
        .remove("peersFile");
    off_link["peers"] = json!([{"nodeIP": "10.77.0.9", "podCIDR": "10.244.9.0/24"}]);
    let err = plain(node, "STATUS", &off_link).assert_error(51);
    assert!(error_text(&err).contains("10.77.0.9"), "{err}");

    // A /30 block: one address besides the gateway; once taken, STATUS says 50 and ADD 101,
    // leaving nothing.
    hostgw::write(
        &node.subnet_file,
        &format!(
            "FLANNEL_NETWORK={CLUSTER4}\nFLANNEL_SUBNET=10.244.1.1/30\nFLANNEL_MTU=1500\n\
             FLANNEL_IPMASQ=true\n"
        ),
    );
    plain(node, "STATUS", &c.conf(0)).assert_ok_empty();
    let only = c.add_pod(0);
    plain(node, "STATUS", &c.conf(0)).assert_error(code::NOT_AVAILABLE);
    let links = host_veths(&node.ns);
    let routes = host_routes(&node.ns);
    let (_p, out) = node.try_add_pod(&plugin(), &c.conf(0), &unique_name("c"));
    out.assert_error(code::IPAM_EXHAUSTED);
    assert_eq!(host_veths(&node.ns), links, "exhausted ADD left a veth");
    assert_eq!(host_routes(&node.ns), routes, "exhausted ADD left a route");
    only.run("DEL").assert_ok_empty();
    plain(node, "STATUS", &c.conf(0)).assert_ok_empty();
}

/// A second ADD of a live attachment fails (or answers the same) without touching it: the
/// pod keeps its address, host route and reservation, and stays reachable.
#[test]
fn repeated_add_never_breaks_the_existing_attachment() {
    let c = RoutedCluster::new(Fabric::single_l2(1));
    let node = c.node(0);
    let p = c.add_pod(0);
    let other = c.add_pod(0);
    let res_before = c.reservations(0);
    let routes_before = host_routes(&node.ns);
    let out = node
        .invoke(
            &plugin(),
            "ADD",
            &c.conf(0),
            &p.container_id,
            p.ns.path(),
            "eth0",
        )
        .run();
    if !out.success() {
        let err = out
            .check_error_shape()
            .unwrap_or_else(|e| panic!("{e}\n{out}"));
        assert_eq!(err["code"], code::CONFLICT, "{out}");
    }
    assert_eq!(
        c.reservations(0),
        res_before,
        "second ADD changed reservations\n{out}"
    );
    assert_eq!(
        host_routes(&node.ns),
        routes_before,
        "second ADD changed host routes"
    );
    p.run("CHECK").assert_ok_empty();
    assert!(ping(&other.ns, result_ips(&p.result)[0]), "\n{out}");
    p.run("DEL").assert_ok_empty();
    other.run("DEL").assert_ok_empty();
}

/// Eight ADDs at once on a fresh node: eight pods, one blackhole per block, reachable; eight
/// DELs at once leave the node clean.
#[test]
fn parallel_adds_on_a_fresh_node() {
    let c = RoutedCluster::new(Fabric::single_l2(2));
    let node = c.node(0);
    let conf = c.conf(0);
    let pods: Vec<Pod> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|_| s.spawn(|| node.add_pod(&plugin(), &conf, &unique_name("c"))))
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("ADD thread"))
            .collect()
    });
    let ips: BTreeSet<IpAddr> = pods.iter().flat_map(|p| result_ips(&p.result)).collect();
    assert_eq!(ips.len(), 8);
    assert_eq!(host_routes(&node.ns).len(), 8);
    assert_eq!(blackholes(&node.ns), c.own_blocks(0));
    assert_eq!(peer_routes(&node.ns), c.c.expected_peer_routes(0));
    assert!(ping(&pods[0].ns, result_ips(&pods[7].result)[0]));
    std::thread::scope(|s| {
        for p in &pods {
            s.spawn(|| p.run("DEL").assert_ok_empty());
        }
    });
    let all: Vec<IpAddr> = ips.into_iter().collect();
    c.assert_clean_after_dels(0, &all);
}

/// The peer routes follow the cluster view from one ADD to the next, the own block stays
/// blackholed, and DEL removes neither.
#[test]
fn peer_routes_follow_the_view_and_the_blackhole_stays() {
    let c = RoutedCluster::new(Fabric::single_l2(3));
    let node = c.node(0);
    let p1 = c.add_pod(0);
    assert_eq!(peer_routes(&node.ns), c.c.expected_peer_routes(0));
    let view = json!([
        {"nodeIP": "10.99.0.1", "podCIDR": pod_cidr4(0)},
        {"nodeIP": "10.99.0.51", "podCIDR": pod_cidr4(1)},
    ]);
    hostgw::write(&node.peers_file, &view.to_string());
    let p2 = c.add_pod(0);
    let want = BTreeSet::from([(pod_cidr4(1), "10.99.0.51".to_string())]);
    assert_eq!(peer_routes(&node.ns), want, "routes follow the new view");
    assert_eq!(blackholes(&node.ns), c.own_blocks(0));
    p2.run("CHECK").assert_ok_empty();
    p1.run("DEL").assert_ok_empty();
    p2.run("DEL").assert_ok_empty();
    assert_eq!(peer_routes(&node.ns), want, "DEL removed peer routes");
    assert_eq!(
        blackholes(&node.ns),
        c.own_blocks(0),
        "DEL removed the blackhole"
    );
}

/// With `ipMasq`, traffic from a pod to a host outside the cluster carries the node's address;
/// traffic to a pod on another node, and to `clusterNetworks`, keeps the pod's (an outside host
/// and the other pod count echo requests by source).
#[test]
fn ip_masq_uses_the_node_address_only_outside_the_cluster() {
    let c = RoutedCluster::new(Fabric::single_l2(2));
    let outside =
        c.c.fab
            .attach_host("out", &["10.99.0.250/24", "10.96.0.10/24"]);
    outside.nft_load(&format!(
        "table inet obs {{
            counter node0 {{ }}
            counter pods {{ }}
            chain pre {{
                type filter hook prerouting priority -300; policy accept;
                ip saddr 10.99.0.1 icmp type echo-request counter name \"node0\"
                ip saddr {CLUSTER4} icmp type echo-request counter name \"pods\"
            }}
        }}"
    ));
    // The "service" address 10.96.0.10 sits on the outside host, which routes node 0's block
    // back (an unmasqueraded pod source must be answerable).
    outside.ip(&["route", "add", &pod_cidr4(0), "via", "10.99.0.1"]);
    c.node(0)
        .ns
        .ip(&["route", "add", "10.96.0.0/24", "via", "10.99.0.250"]);
    let mut conf = c.conf(0);
    conf["ipMasq"] = json!(true);
    conf["clusterNetworks"] = json!(["10.96.0.0/24"]);
    let p = c.add_pod_with(0, &conf);
    let q = c.add_pod(1);
    assert!(
        ping(&p.ns, "10.99.0.250".parse().expect("ip")),
        "pod -> outside"
    );
    assert!(
        wait_counter(&outside, "obs", "node0", 1) >= 1,
        "masqueraded to the node"
    );
    let pods_before = outside.nft_counter("inet", "obs", "pods");
    assert_eq!(pods_before, 0, "a pod source leaked outside the cluster");
    assert!(
        ping(&p.ns, "10.96.0.10".parse().expect("ip")),
        "pod -> cluster network"
    );
    assert!(
        wait_counter(&outside, "obs", "pods", 1) >= 1,
        "clusterNetworks kept the pod source"
    );
    let q_ip = result_ips(&q.result)[0];
    q.ns.nft_load(&format!(
        "table inet obs {{
            counter from_p {{ }}
            chain pre {{
                type filter hook prerouting priority -300; policy accept;
                ip saddr {} icmp type echo-request counter name \"from_p\"
            }}
        }}",
        result_ips(&p.result)[0]
    ));
    assert!(ping(&p.ns, q_ip), "pod -> pod on node 1");
    assert!(
        wait_counter(&q.ns, "obs", "from_p", 1) >= 1,
        "pod to pod is not masqueraded"
    );
    p.run("DEL").assert_ok_empty();
    q.run("DEL").assert_ok_empty();
}

// ---------------------------------------------------------------------------------------------
// Side by side with bridge-host-gw
// ---------------------------------------------------------------------------------------------

/// A bridge-host-gw network and a routed-veth network on one node: pods of both reach each
/// other, and each network's GC removes only its own pods, leaving the other's pods, routes,
/// bridge and reservations alone.
#[test]
fn side_by_side_with_bridge_host_gw_each_gc_keeps_to_its_own() {
    let c = RoutedCluster::new(Fabric::single_l2(1));
    let node = c.node(0);
    let bridged_conf = c.c.conf(0);
    let mut routed_conf = c.conf(0);
    routed_conf["name"] = json!(unique_name("rv"));
    routed_conf
        .as_object_mut()
        .expect("object")
        .remove("peersFile");
    routed_conf["ipam"] = json!({"type": "host-local", "dataDir": node.data_dir,
        "ranges": [[{"subnet": "10.245.1.0/24"}]], "routes": [{"dst": CLUSTER4}]});
    let routed_net = routed_conf["name"].as_str().expect("name").to_string();

    let b: Vec<Pod> = (0..2)
        .map(|_| node.add_pod(&hostgw::plugin(), &bridged_conf, &unique_name("b")))
        .collect();
    let r: Vec<Pod> = (0..2)
        .map(|_| node.add_pod(&plugin(), &routed_conf, &unique_name("r")))
        .collect();
    assert!(
        ping(&r[0].ns, result_ips(&b[0].result)[0]),
        "routed -> bridged"
    );
    assert!(
        ping(&b[1].ns, result_ips(&r[1].result)[0]),
        "bridged -> routed"
    );
    assert_eq!(
        blackholes(&node.ns),
        BTreeSet::from(["10.245.1.0/24".to_string()])
    );

    // routed GC keeping r[0]: r[1] goes, the bridged pods stay.
    let keep_r0 = with_attachments(&routed_conf, &[(&r[0].container_id, "eth0")]);
    plain(node, "GC", &keep_r0).assert_ok_empty();
    assert!(
        node.ns.link(&host_veth(&r[1].result)).is_none(),
        "routed orphan kept"
    );
    assert!(node.ns.link(&host_veth(&r[0].result)).is_some());
    for p in &b {
        assert!(
            node.ns.link(&hostgw::host_veth(&p.result)).is_some(),
            "routed GC took a bridged pod"
        );
    }
    assert_eq!(hostgw::reservations(node, &c.c.net).len(), 2);
    assert_eq!(hostgw::reservations(node, &routed_net).len(), 1);
    assert!(
        ping(&b[0].ns, result_ips(&r[0].result)[0]),
        "bridged -> remaining routed"
    );

    // bridged GC keeping nothing: its pods go, the routed pod, its route and blackhole stay.
    let bridged_gc = Invocation::new(hostgw::plugin())
        .command("GC")
        .stdin_json(&with_attachments(&bridged_conf, &[]))
        .on(node.ns.path())
        .run();
    bridged_gc.assert_ok_empty();
    assert_eq!(hostgw::reservations(node, &c.c.net).len(), 0);
    assert!(
        node.ns.link(&host_veth(&r[0].result)).is_some(),
        "bridged GC took a routed pod"
    );
    let ip0 = result_ips(&r[0].result)[0].to_string();
    assert!(host_routes(&node.ns).contains_key(&ip0));
    assert_eq!(
        blackholes(&node.ns),
        BTreeSet::from(["10.245.1.0/24".to_string()])
    );
    r[0].run("CHECK").assert_ok_empty();
    r[0].run("DEL").assert_ok_empty();
    assert_eq!(hostgw::reservations(node, &routed_net).len(), 0);
}
