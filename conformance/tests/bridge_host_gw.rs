//! Black-box conformance of twill's `bridge-host-gw` plugin (flannel host-gw + bridge).
//!
//! Every test builds its own fabric of namespaces (see `conformance::fabric`): node `i`
//! (0-based) has the underlay address `10.99.0.(i+1)` (dual-stack: `fd99::(i+1)`), the pod
//! subnet `10.244.(i+1).0/24` (dual-stack: `fd00:10:0:(i+1)::/64`) written to its own flannel
//! subnet file, and its own dataDir, runDir and peers file. The plugin runs "on" a node via
//! `nsenter --net`; nothing touches the root namespace, and every namespace and directory is
//! removed by its guard, also on failure.
//!
//! Tests:
//! - `mesh_*`: 3 nodes x 3 pods, all-pairs reachability (same node, across nodes, own node,
//!   another node), IPv4 and dual-stack; peer routes; full cleanup after DEL.
//! - `ip_masq_*`: traffic leaving the cluster carries the node's address, traffic inside it the
//!   pod's (nftables counters in the receiving namespaces count real packets).
//! - `routed_fabric_*`: host-gw across a router must not work.
//! - `version_*`: every command in every CNI version, result shapes, kernel state.
//! - DEL idempotency, ADD rollback, CHECK detection, GC, STATUS, peer-route updates, node
//!   wiring (MTU, hairpin, forwarding, gateways, forceAddress), delegated IPAM, parallel ADDs.

use conformance::{
    CNI_VERSIONS, DirSnapshot, Fabric, Invocation, Netns, Pod, no_reply, ping, result_ips,
    unique_name,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use conformance::hostgw::*;
// ---------------------------------------------------------------------------------------------
// Reachability: 3 nodes x 3 pods
// ---------------------------------------------------------------------------------------------

fn mesh(dual: bool) {
    let fab = if dual {
        Fabric::single_l2_dual(3)
    } else {
        Fabric::single_l2(3)
    };
    let c = Cluster::new(fab);
    let mut pods: Vec<(usize, Pod)> = Vec::new();
    for i in 0..c.len() {
        // Node 2 gets its cluster view inline instead of from the peers file.
        let mut conf = c.conf(i);
        if i == 2 {
            let obj = conf.as_object_mut().expect("object");
            obj.remove("peersFile");
            obj.insert("peers".into(), c.peers(|_| true));
        }
        for _ in 0..3 {
            pods.push((i, c.add_pod_with(i, &conf)));
        }
    }

    for (i, p) in &pods {
        let ips = result_ips(&p.result);
        let want_fams = if dual { 2 } else { 1 };
        assert_eq!(ips.len(), want_fams, "pod addresses: {}", p.result);
        assert!(in_cidr(&ips[0], &pod_cidr4(*i)), "{}", p.result);
        if dual {
            assert!(in_cidr(&ips[1], &pod_cidr6(*i)), "{}", p.result);
        }
    }
    let all_ips: Vec<IpAddr> = pods
        .iter()
        .flat_map(|(_, p)| result_ips(&p.result))
        .collect();
    let distinct: BTreeSet<&IpAddr> = all_ips.iter().collect();
    assert_eq!(distinct.len(), all_ips.len(), "addresses are unique");

    for i in 0..c.len() {
        assert_eq!(
            peer_routes(&c.node(i).ns),
            c.expected_peer_routes(i),
            "node {i}: one twill route per other node, none for itself"
        );
    }

    let mut failures = Vec::new();
    for (a, (i, p)) in pods.iter().enumerate() {
        let mut targets: Vec<(String, IpAddr)> = Vec::new();
        for (b, (j, q)) in pods.iter().enumerate() {
            if a != b {
                for ip in result_ips(&q.result) {
                    targets.push((format!("pod {b} on node {j}"), ip));
                }
            }
        }
        for (what, n) in [("own node", *i), ("another node", (i + 1) % c.len())] {
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
    for i in 0..c.len() {
        c.assert_clean_after_dels(i, &all_ips);
    }
}

#[test]
fn mesh_3x3_ipv4() {
    mesh(false);
}

#[test]
fn mesh_3x3_dual_stack() {
    mesh(true);
}

// ---------------------------------------------------------------------------------------------
// ipMasq
// ---------------------------------------------------------------------------------------------

/// node 0 masquerades (`ipMasq: true`), node 1 does not (`ipMasq: false`). An "outside" host
/// on the underlay (10.99.0.250, fd99::250: outside the pod and cluster networks, and without
/// any route to them) counts echo requests by source with nftables counters.
#[test]
fn ip_masq_uses_the_node_address_only_outside_the_cluster() {
    let c = Cluster::new(Fabric::single_l2_dual(2));
    let outside = c
        .fab
        .attach_host("out", &["10.99.0.250/24", "fd99::250/64"]);
    outside.nft_load(&format!(
        "table inet obs {{
            counter node0_4 {{ }}
            counter node0_6 {{ }}
            counter pods_4 {{ }}
            counter pods_6 {{ }}
            chain pre {{
                type filter hook prerouting priority -300; policy accept;
                ip saddr 10.99.0.1 icmp type echo-request counter name \"node0_4\"
                ip6 saddr fd99::1 icmpv6 type echo-request counter name \"node0_6\"
                ip saddr {CLUSTER4} icmp type echo-request counter name \"pods_4\"
                ip6 saddr {CLUSTER6} icmpv6 type echo-request counter name \"pods_6\"
            }}
        }}"
    ));
    let count = |name: &str| outside.nft_counter("inet", "obs", name);
    // The outside must see each request it counts on; a forwarded packet may wait in a
    // node's neighbour queue for a moment, so counts that must rise are polled (bounded).
    let count_at_least = |name: &str, min: u64| wait_counter(&outside, "obs", name, min);
    // Warm-up and a check of the segment: the outside reaches both nodes, both families.
    for n in &c.fab.nodes {
        for ip in [IpAddr::from(n.ip), IpAddr::from(n.ip6.expect("v6"))] {
            assert!(ping(&outside, ip), "outside -> node {ip}");
        }
    }

    let mut conf0 = c.conf(0);
    conf0["ipMasq"] = json!(true);
    let mut conf1 = c.conf(1);
    conf1["ipMasq"] = json!(false);
    let p0 = c.add_pod_with(0, &conf0);
    let p1 = c.add_pod_with(1, &conf1);
    let table = format!("twill-masq-{}", c.net);
    assert!(
        c.node(0)
            .ns
            .exec(&["nft", "list", "table", "inet", &table])
            .status
            .success(),
        "node 0 (ipMasq true) must have table inet {table}:\n{}",
        c.node(0).ns.nft_ruleset()
    );
    assert!(
        !c.node(1)
            .ns
            .exec(&["nft", "list", "table", "inet", &table])
            .status
            .success(),
        "node 1 (ipMasq false) must not have table inet {table}"
    );

    // Leaving the cluster from node 0: the outside sees node 0's address and answers it (it
    // has no route to the pods, so an unmasqueraded request could not be answered).
    for (dst, node_ctr, pods_ctr) in [
        ("10.99.0.250", "node0_4", "pods_4"),
        ("fd99::250", "node0_6", "pods_6"),
    ] {
        let dst: IpAddr = dst.parse().expect("ip");
        assert!(ping(&p0.ns, dst), "masqueraded pod 0 -> outside {dst}");
        assert!(
            count_at_least(node_ctr, 1) >= 1,
            "outside saw no request from node 0"
        );
        assert_eq!(count(pods_ctr), 0, "outside saw a pod source address");
    }

    // Control (the observation can fail): node 1 does not masquerade, so the outside sees a
    // pod source address and cannot answer it.
    for (dst, pods_ctr) in [("10.99.0.250", "pods_4"), ("fd99::250", "pods_6")] {
        let dst: IpAddr = dst.parse().expect("ip");
        assert!(no_reply(&p1.ns, dst), "unmasqueraded pod 1 got a reply");
        assert!(
            count_at_least(pods_ctr, 1) >= 1,
            "outside must see pod 1's own address ({dst}): {}",
            outside.nft_ruleset()
        );
    }

    // Inside the cluster node 0 must not masquerade: pod 1 sees pod 0's own address.
    let ips0 = result_ips(&p0.result);
    let ips1 = result_ips(&p1.result);
    p1.ns.nft_load(&format!(
        "table inet obs {{
            counter from_pod0 {{ }}
            counter from_node0 {{ }}
            chain pre {{
                type filter hook prerouting priority -300; policy accept;
                ip saddr {} counter name \"from_pod0\"
                ip6 saddr {} counter name \"from_pod0\"
                ip saddr 10.99.0.1 counter name \"from_node0\"
                ip6 saddr fd99::1 counter name \"from_node0\"
            }}
        }}",
        ips0[0], ips0[1]
    ));
    for ip in &ips1 {
        assert!(ping(&p0.ns, *ip), "pod 0 -> pod 1 {ip}");
    }
    assert!(wait_counter(&p1.ns, "obs", "from_pod0", 2) >= 2);
    assert_eq!(p1.ns.nft_counter("inet", "obs", "from_node0"), 0);

    p0.run("CHECK").assert_ok_empty();
    p0.run("DEL").assert_ok_empty();
    p1.run("DEL").assert_ok_empty();
}

// ---------------------------------------------------------------------------------------------
// Routed fabric
// ---------------------------------------------------------------------------------------------

/// host-gw needs L2 adjacency: a node can only route a peer's pod subnet via the peer's
/// address when that address is on one of its own links. Across a router (nodes 0 and 1 on
/// segment A, node 2 on segment B) pods of different segments must NOT reach each other, and a
/// cluster view naming a non-adjacent peer skips that peer (ADD goes on, STATUS answers 51).
#[test]
fn routed_fabric_host_gw_cannot_cross_the_router() {
    let c = Cluster::new(Fabric::routed(3));
    let segment = |i: usize| c.node(i).ip.octets()[2];
    // Phase 1: each node knows only the peers of its own segment (what host-gw can serve).
    for i in 0..3 {
        let same = c.peers(|j| segment(j) == segment(i));
        write(&c.node(i).peers_file, &same.to_string());
    }
    let pods: Vec<Pod> = (0..3).map(|i| c.add_pod(i)).collect();
    let ip = |i: usize| result_ips(&pods[i].result)[0];
    assert!(ping(&pods[0].ns, ip(1)), "same segment: host-gw works");
    assert!(ping(&pods[1].ns, ip(0)), "same segment: host-gw works");
    assert!(
        no_reply(&pods[0].ns, ip(2)),
        "pod A -> pod B crossed the router"
    );
    assert!(
        no_reply(&pods[2].ns, ip(0)),
        "pod B -> pod A crossed the router"
    );

    // Phase 2: the full cluster view. The next ADD on node 0 cannot route to node 2's pods
    // (10.99.2.1 is not on-link): it skips that peer, naming it, and STATUS answers 51.
    let full = c.peers(|_| true).to_string();
    for i in 0..3 {
        write(&c.node(i).peers_file, &full);
    }
    let n0 = c.node(0);
    let (pod, out) = n0.try_add_pod(&plugin(), &c.conf(0), &unique_name("c"));
    assert!(out.success(), "a non-adjacent peer failed the ADD\n{out}");
    assert!(
        out.stderr.contains("10.99.2.1"),
        "stderr must name the unreachable peer 10.99.2.1\n{out}"
    );
    let status = plain(n0, "STATUS", &c.conf(0));
    let err = status.assert_error(51);
    assert!(error_text(&err).contains("10.99.2.1"), "{status}");
    pod.run("DEL").assert_ok_empty();
    assert!(
        !peer_routes(&n0.ns)
            .iter()
            .any(|(dst, _)| *dst == pod_cidr4(2)),
        "node 0 has a route to node 2's pods"
    );
    assert!(
        no_reply(&pods[0].ns, ip(2)),
        "pod A -> pod B crossed the router"
    );
    for p in &pods {
        p.run("DEL").assert_ok_empty();
    }
}

// ---------------------------------------------------------------------------------------------
// Version matrix
// ---------------------------------------------------------------------------------------------

/// ADD, CHECK, GC, STATUS, DEL, DEL again in CNI version `v` on a dual-stack node: result shape
/// of that version, and the kernel state behind it.
fn version_matrix(v: &str) {
    let c = Cluster::new(Fabric::single_l2_dual(2));
    let node = c.node(0);
    let conf = c.conf_v(0, v);
    let pod = c.add_pod_with(0, &conf);
    let res = &pod.result;
    assert_eq!(res["cniVersion"], v, "result cniVersion: {res}");

    let addrs = pod.ns.global_cidrs("eth0");
    assert_eq!(addrs.len(), 2, "pod eth0 addresses: {addrs:?}");
    let (a4, a6) = if addrs[0].contains(':') {
        (addrs[1].clone(), addrs[0].clone())
    } else {
        (addrs[0].clone(), addrs[1].clone())
    };
    assert!(
        a4.ends_with("/24") && in_cidr(&a4[..a4.len() - 3].parse().expect("ip"), &pod_cidr4(0))
    );
    assert!(
        a6.ends_with("/64") && in_cidr(&a6[..a6.len() - 3].parse().expect("ip"), &pod_cidr6(0))
    );
    let route_dsts = |routes: &Value| -> BTreeMap<String, String> {
        routes
            .as_array()
            .unwrap_or_else(|| panic!("routes not a list: {res}"))
            .iter()
            .map(|r| {
                (
                    r["dst"].as_str().unwrap_or("").to_string(),
                    r["gw"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };

    if !version_at_least(v, "0.3.0") {
        assert!(
            res.get("ips").is_none() && res.get("interfaces").is_none(),
            "{res}"
        );
        assert_eq!(res["ip4"]["ip"], a4.as_str(), "{res}");
        assert_eq!(res["ip4"]["gateway"], gw4(0).as_str(), "{res}");
        assert_eq!(res["ip6"]["ip"], a6.as_str(), "{res}");
        assert_eq!(res["ip6"]["gateway"], gw6(0).as_str(), "{res}");
        let r4 = route_dsts(&res["ip4"]["routes"]);
        assert_eq!(
            r4.get("0.0.0.0/0").map(String::as_str),
            Some(gw4(0).as_str()),
            "{res}"
        );
        assert!(r4.contains_key(CLUSTER4), "{res}");
        let r6 = route_dsts(&res["ip6"]["routes"]);
        assert_eq!(
            r6.get("::/0").map(String::as_str),
            Some(gw6(0).as_str()),
            "{res}"
        );
        assert!(r6.contains_key(CLUSTER6), "{res}");
    } else {
        assert!(
            res.get("ip4").is_none() && res.get("ip6").is_none(),
            "{res}"
        );
        let ifs = res["interfaces"]
            .as_array()
            .unwrap_or_else(|| panic!("no interfaces: {res}"));
        assert_eq!(ifs.len(), 3, "[bridge, host veth, pod iface]: {res}");
        let br = node.ns.link("cni0").expect("cni0");
        assert_eq!(ifs[0]["name"], "cni0", "{res}");
        assert_eq!(
            ifs[0]["mac"],
            br.mac.clone().unwrap_or_default().as_str(),
            "{res}"
        );
        assert!(ifs[0].get("sandbox").is_none(), "{res}");
        let hv = ifs[1]["name"].as_str().unwrap_or("");
        assert!(
            hv.len() == 15
                && hv.starts_with("tw")
                && hv[2..].bytes().all(|b| b.is_ascii_hexdigit()),
            "host veth name tw + 13 hex: {res}"
        );
        let hl = node
            .ns
            .link(hv)
            .unwrap_or_else(|| panic!("no {hv} on the node"));
        assert_eq!(
            ifs[1]["mac"],
            hl.mac.clone().unwrap_or_default().as_str(),
            "{res}"
        );
        assert!(ifs[1].get("sandbox").is_none(), "{res}");
        let pl = pod.ns.link("eth0").expect("pod eth0");
        assert_eq!(ifs[2]["name"], "eth0", "{res}");
        assert_eq!(
            ifs[2]["mac"],
            pl.mac.clone().unwrap_or_default().as_str(),
            "{res}"
        );
        assert_eq!(ifs[2]["sandbox"], pod.ns.path_str().as_str(), "{res}");

        let ips = res["ips"]
            .as_array()
            .unwrap_or_else(|| panic!("no ips: {res}"));
        assert_eq!(ips.len(), 2, "{res}");
        for (ip, (addr, gw, fam)) in ips.iter().zip([(&a4, gw4(0), "4"), (&a6, gw6(0), "6")]) {
            assert_eq!(ip["address"], addr.as_str(), "{res}");
            assert_eq!(ip["gateway"], gw.as_str(), "{res}");
            assert_eq!(ip["interface"], 2, "ips point at the pod interface: {res}");
            if version_at_least(v, "1.0.0") {
                assert!(ip.get("version").is_none(), "{v}: {res}");
            } else {
                assert_eq!(ip["version"], fam, "{v}: {res}");
            }
        }
        let routes = route_dsts(&res["routes"]);
        assert_eq!(
            routes.get("0.0.0.0/0").map(String::as_str),
            Some(gw4(0).as_str()),
            "{res}"
        );
        assert_eq!(
            routes.get("::/0").map(String::as_str),
            Some(gw6(0).as_str()),
            "{res}"
        );
        assert!(
            routes.contains_key(CLUSTER4) && routes.contains_key(CLUSTER6),
            "{res}"
        );
    }
    // The pod's kernel routes: default and cluster via the bridge gateway, both families.
    let proutes = pod.ns.main_routes();
    for (dst, gw) in [
        ("default", gw4(0)),
        (CLUSTER4, gw4(0)),
        ("default", gw6(0)),
        (CLUSTER6, gw6(0)),
    ] {
        assert!(
            proutes
                .iter()
                .any(|r| r.dst == dst && r.gateway.map(|g| g.to_string()) == Some(gw.clone())),
            "pod route {dst} via {gw} missing: {:?}",
            proutes.iter().map(|r| &r.raw).collect::<Vec<_>>()
        );
    }
    let mut want_res = BTreeMap::new();
    for a in [&a4, &a6] {
        let ip = a.split('/').next().expect("ip").to_string();
        want_res.insert(ip, format!("{}\r\neth0", pod.container_id));
    }
    assert_eq!(c.reservations(0), want_res);
    assert_eq!(peer_routes(&node.ns), c.expected_peer_routes(0));
    let after_add = DirSnapshot::take(&node.data_dir);

    // CHECK: 0.4.0 and later; refused (code 1) before, changing nothing.
    let out = pod.run("CHECK");
    if version_at_least(v, "0.4.0") {
        out.assert_ok_empty();
    } else {
        out.assert_error(code::INCOMPATIBLE_VERSION);
    }
    // GC keeping this attachment, STATUS: 1.1.0 only.
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
        tw_links(&node.ns).len(),
        1,
        "CHECK/GC/STATUS {v} kept the veth"
    );
    assert!(pod.ns.link("eth0").is_some());

    // DEL, and DEL again.
    pod.run("DEL").assert_ok_empty();
    assert_eq!(tw_links(&node.ns), Vec::<String>::new());
    assert!(pod.ns.link("eth0").is_none(), "pod end removed");
    assert_eq!(c.reservations(0), BTreeMap::new());
    pod.run("DEL").assert_ok_empty();
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
// DEL
// ---------------------------------------------------------------------------------------------

#[test]
fn del_is_idempotent_without_netns_or_prev_result() {
    let c = Cluster::new(Fabric::single_l2(2));
    let node = c.node(0);

    // DEL without prevResult (the config as given to ADD), twice.
    let a = c.add_pod(0);
    let a_veth = host_veth(&a.result);
    assert!(node.ns.link(&a_veth).is_some());
    a.run("DEL").assert_ok_empty();
    assert!(node.ns.link(&a_veth).is_none(), "DEL removed {a_veth}");
    assert_eq!(c.reservations(0), BTreeMap::new());
    let snap = DirSnapshot::take(&node.data_dir);
    a.run("DEL").assert_ok_empty();
    snap.assert_same(&DirSnapshot::take(&node.data_dir), "second DEL");

    // DEL with prevResult, as runtimes send it.
    let b = c.add_pod(0);
    let mut with_prev = b.conf().clone();
    with_prev["prevResult"] = b.result.clone();
    b.call("DEL", &with_prev).assert_ok_empty();
    assert_eq!(tw_links(&node.ns), Vec::<String>::new());
    assert_eq!(c.reservations(0), BTreeMap::new());

    // DEL after the pod's netns is gone (the kernel took the veth pair with it): the address
    // must still be released; again twice.
    let d = c.add_pod(0);
    assert_eq!(c.reservations(0).len(), 1);
    d.ns.delete_now();
    assert!(!d.ns.path().exists());
    d.run("DEL").assert_ok_empty();
    assert_eq!(
        c.reservations(0),
        BTreeMap::new(),
        "DEL without netns releases"
    );
    assert_eq!(tw_links(&node.ns), Vec::<String>::new());
    d.run("DEL").assert_ok_empty();

    // DEL after someone removed the host veth.
    let e = c.add_pod(0);
    node.ns.ip(&["link", "del", &host_veth(&e.result)]);
    e.run("DEL").assert_ok_empty();
    assert_eq!(c.reservations(0), BTreeMap::new());

    // DEL of a container that never existed.
    let ghost = Invocation::new(plugin())
        .command("DEL")
        .container_id(&unique_name("ghost"))
        .netns("/run/netns/does-not-exist")
        .ifname("eth0")
        .stdin_json(&c.conf(0))
        .on(node.ns.path())
        .run();
    ghost.assert_ok_empty();
}

// ---------------------------------------------------------------------------------------------
// ADD failures leave nothing
// ---------------------------------------------------------------------------------------------

/// CNI_IFNAME already taken in the pod: ADD fails with an error object; no host veth, no
/// reservation, and the pod's own `eth0` untouched.
#[test]
fn add_failure_ifname_taken_leaves_nothing() {
    let c = Cluster::new(Fabric::single_l2(2));
    let node = c.node(0);
    let keep = c.add_pod(0); // so the data dir has state to compare
    let links = tw_links(&node.ns);
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
        .unwrap_or_else(|e| panic!("ADD into a taken ifname: {e}\n{out}"));
    assert!(
        error_text(&err).contains("eth0"),
        "error names the interface\n{out}"
    );
    assert_eq!(tw_links(&node.ns), links, "no host veth left\n{out}");
    assert_eq!(state_without_cursors(node), state, "no reservation left");
    let l = pod_ns.link("eth0").expect("the pod's own eth0");
    assert_eq!(l.kind.as_deref(), Some("bridge"), "pod's eth0 replaced");
    assert_eq!(pod_ns.link_names().len(), 2, "{:?}", pod_ns.link_names());
    keep.run("DEL").assert_ok_empty();
}

/// A failure after the address was allocated (a runDir that cannot be created, so the node's
/// peer state cannot be recorded): ADD rolls back the veth and the reservation.
#[test]
fn add_failure_after_allocation_rolls_back() {
    let c = Cluster::new(Fabric::single_l2(2));
    let node = c.node(0);
    let keep = c.add_pod(0);
    let links = tw_links(&node.ns);
    let state = state_without_cursors(node);
    let routes_before = peer_routes(&node.ns);

    let mut bad = c.conf(0);
    let under_a_file = node.subnet_file.join("run");
    bad["runDir"] = json!(under_a_file);
    let (pod, out) = node.try_add_pod(&plugin(), &bad, &unique_name("c"));
    let err = out
        .check_error_shape()
        .unwrap_or_else(|e| panic!("ADD with an unusable runDir: {e}\n{out}"));
    assert!(
        error_text(&err).contains(&under_a_file.display().to_string()),
        "error names the run dir\n{out}"
    );
    assert_eq!(tw_links(&node.ns), links, "no host veth left\n{out}");
    assert_eq!(state_without_cursors(node), state, "no reservation left");
    assert_eq!(
        pod.ns.link_names(),
        vec!["lo".to_string()],
        "pod netns emptied"
    );
    assert!(
        peer_routes(&node.ns).is_subset(&routes_before),
        "no new twill route"
    );
    keep.run("DEL").assert_ok_empty();
}

// ---------------------------------------------------------------------------------------------
// CHECK
// ---------------------------------------------------------------------------------------------

#[test]
fn check_detects_removed_address_and_host_veth() {
    let c = Cluster::new(Fabric::single_l2(2));
    let node = c.node(0);
    let a = c.add_pod(0);
    let b = c.add_pod(0);
    let d = c.add_pod(0);
    for p in [&a, &b, &d] {
        p.run("CHECK").assert_ok_empty();
    }

    // The pod's address removed.
    let cidr = a.result["ips"][0]["address"]
        .as_str()
        .expect("address")
        .to_string();
    a.ns.ip(&["addr", "del", &cidr, "dev", "eth0"]);
    let out = a.run("CHECK");
    let err = out
        .check_error_shape()
        .unwrap_or_else(|e| panic!("CHECK with the address removed: {e}\n{out}"));
    let ip = cidr.split('/').next().expect("ip");
    assert!(error_text(&err).contains(ip), "CHECK must name {ip}\n{out}");

    // The host veth removed (its pod end goes with it).
    let hv = host_veth(&b.result);
    node.ns.ip(&["link", "del", &hv]);
    let out = b.run("CHECK");
    let err = out
        .check_error_shape()
        .unwrap_or_else(|e| panic!("CHECK with the host veth removed: {e}\n{out}"));
    assert!(
        error_text(&err).contains(&hv),
        "CHECK must name {hv}\n{out}"
    );

    // The host veth taken off the bridge.
    let hv = host_veth(&d.result);
    node.ns.ip(&["link", "set", &hv, "nomaster"]);
    let out = d.run("CHECK");
    let err = out
        .check_error_shape()
        .unwrap_or_else(|e| panic!("CHECK with the host veth off the bridge: {e}\n{out}"));
    assert!(
        error_text(&err).contains(&hv),
        "CHECK must name {hv}\n{out}"
    );

    for p in [&a, &b, &d] {
        p.run("DEL").assert_ok_empty();
    }
}

// ---------------------------------------------------------------------------------------------
// GC
// ---------------------------------------------------------------------------------------------

#[test]
fn gc_releases_exactly_the_orphans() {
    let c = Cluster::new(Fabric::single_l2(2));
    let node = c.node(0);
    // GC on a node that has nothing yet (no bridge, no data dir): success, no change.
    let fresh = NodeSnapshot::take(c.node(1));
    plain(c.node(1), "GC", &with_attachments(&c.conf(1), &[])).assert_ok_empty();
    assert_eq!(
        NodeSnapshot::take(c.node(1)),
        fresh,
        "GC on a fresh node changed it"
    );
    let pods: Vec<Pod> = (0..4).map(|_| c.add_pod(0)).collect();
    // A port of cni0 that is not twill's: GC must leave it alone.
    node.ns.ip(&[
        "link", "add", "other0", "type", "veth", "peer", "name", "other1",
    ]);
    node.ns.ip(&["link", "set", "other0", "master", "cni0"]);

    let (valid, orphans) = pods.split_at(2);
    let list: Vec<(&str, &str)> = valid
        .iter()
        .map(|p| (p.container_id.as_str(), "eth0"))
        .chain([("some-other-container", "eth0")])
        .collect();
    plain(node, "GC", &with_attachments(&c.conf(0), &list)).assert_ok_empty();

    let res = c.reservations(0);
    for p in valid {
        let hv = host_veth(&p.result);
        assert!(node.ns.link(&hv).is_some(), "GC removed valid {hv}");
        assert!(p.ns.link("eth0").is_some(), "GC removed a valid pod's eth0");
        for ip in result_ips(&p.result) {
            assert!(res.contains_key(&ip.to_string()), "GC released valid {ip}");
        }
    }
    for p in orphans {
        let hv = host_veth(&p.result);
        assert!(node.ns.link(&hv).is_none(), "GC kept orphan {hv}");
        assert!(p.ns.link("eth0").is_none(), "orphan pod end left");
        for ip in result_ips(&p.result) {
            assert!(!res.contains_key(&ip.to_string()), "GC kept orphan {ip}");
        }
    }
    assert_eq!(res.len(), valid.len(), "{res:?}");
    assert_eq!(
        node.ns.link("other0").and_then(|l| l.master).as_deref(),
        Some("cni0"),
        "GC removed a port that is not twill's"
    );
    // The valid pods still work.
    let ip1 = result_ips(&valid[1].result)[0];
    assert!(ping(&valid[0].ns, ip1));
    for p in valid {
        p.run("CHECK").assert_ok_empty();
    }

    // Idempotent; then an empty list releases everything twill made.
    let snap = DirSnapshot::take(&node.data_dir);
    plain(node, "GC", &with_attachments(&c.conf(0), &list)).assert_ok_empty();
    snap.assert_same(&DirSnapshot::take(&node.data_dir), "second GC");
    plain(node, "GC", &with_attachments(&c.conf(0), &[])).assert_ok_empty();
    assert_eq!(tw_links(&node.ns), Vec::<String>::new());
    assert_eq!(c.reservations(0), BTreeMap::new());
    assert!(node.ns.link("other0").is_some());
}

// ---------------------------------------------------------------------------------------------
// STATUS
// ---------------------------------------------------------------------------------------------

#[test]
fn status_available_missing_subnet_file_and_exhaustion() {
    let c = Cluster::new(Fabric::single_l2(2));
    let node = c.node(0);
    plain(node, "STATUS", &c.conf(0)).assert_ok_empty();

    // No ipam and no subnet file: 50, naming the file.
    let mut missing = c.conf(0);
    let gone = node.run_dir.join("no-such-subnet.env");
    missing["subnetFile"] = json!(gone);
    let out = plain(node, "STATUS", &missing);
    let err = out.assert_error(code::NOT_AVAILABLE);
    assert!(
        error_text(&err).contains("no-such-subnet.env"),
        "STATUS must name the missing file\n{out}"
    );

    // The peers file missing: ADD works, but without routes to the other nodes' pods.
    let mut no_peers = c.conf(0);
    no_peers["peersFile"] = json!(node.run_dir.join("no-such-peers.json"));
    let out = plain(node, "STATUS", &no_peers);
    let err = out.assert_error(51);
    assert!(
        error_text(&err).contains("no-such-peers.json"),
        "STATUS must name the missing file\n{out}"
    );

    // A /30 node subnet: one address besides the gateway.
    write(
        &node.subnet_file,
        &format!(
            "FLANNEL_NETWORK={CLUSTER4}\nFLANNEL_SUBNET=10.244.1.1/30\nFLANNEL_MTU={MTU}\n\
             FLANNEL_IPMASQ=true\n"
        ),
    );
    plain(node, "STATUS", &c.conf(0)).assert_ok_empty();
    let only = c.add_pod(0);
    assert_eq!(
        result_ips(&only.result),
        vec!["10.244.1.2".parse::<IpAddr>().expect("ip")]
    );
    let out = plain(node, "STATUS", &c.conf(0));
    out.assert_error(code::NOT_AVAILABLE);
    let links = tw_links(&node.ns);
    let state = state_without_cursors(node);
    let (_p, out) = node.try_add_pod(&plugin(), &c.conf(0), &unique_name("c"));
    out.assert_error(code::IPAM_EXHAUSTED);
    assert_eq!(tw_links(&node.ns), links, "exhausted ADD left a veth");
    assert_eq!(state_without_cursors(node), state);
    only.run("DEL").assert_ok_empty();
    plain(node, "STATUS", &c.conf(0)).assert_ok_empty();
}

// ---------------------------------------------------------------------------------------------
// Peer routes
// ---------------------------------------------------------------------------------------------

#[test]
fn peer_routes_follow_the_peers_file() {
    let c = Cluster::new(Fabric::single_l2(3));
    let node = c.node(0);
    assert!(
        peer_routes(&node.ns).is_empty(),
        "no twill route before ADD"
    );
    let p1 = c.add_pod(0);
    let want = c.expected_peer_routes(0);
    assert_eq!(peer_routes(&node.ns), want);
    let r = node
        .ns
        .main_routes()
        .into_iter()
        .find(|r| r.dst == pod_cidr4(1))
        .expect("route to node 1's pods");
    assert_eq!(r.dev.as_deref(), Some("eth0"), "{}", r.raw);
    assert!(
        !node
            .ns
            .main_routes()
            .iter()
            .any(|r| r.dst == pod_cidr4(0) && r.gateway.is_some()),
        "no route via a gateway for the node's own subnet"
    );

    // Node 2 leaves, node 1's subnet moves to 10.99.0.51, a new node 10.99.0.50 joins; the
    // next ADD applies the new view.
    let view = json!([
        {"nodeIP": "10.99.0.1", "podCIDR": pod_cidr4(0)},
        {"nodeIP": "10.99.0.51", "podCIDR": pod_cidr4(1)},
        {"nodeIP": "10.99.0.50", "podCIDR": "10.244.50.0/24"},
    ]);
    write(&node.peers_file, &view.to_string());
    let p2 = c.add_pod(0);
    let want: BTreeSet<(String, String)> = [
        (pod_cidr4(1), "10.99.0.51".to_string()),
        ("10.244.50.0/24".to_string(), "10.99.0.50".to_string()),
    ]
    .into_iter()
    .collect();
    assert_eq!(peer_routes(&node.ns), want, "routes follow the new view");
    p2.run("CHECK").assert_ok_empty();

    // DEL never removes peer routes.
    p1.run("DEL").assert_ok_empty();
    p2.run("DEL").assert_ok_empty();
    assert_eq!(peer_routes(&node.ns), want, "DEL removed peer routes");
}

// ---------------------------------------------------------------------------------------------
// Node wiring
// ---------------------------------------------------------------------------------------------

/// MTU from the subnet file on bridge and both veth ends; hairpin; forwarding enabled by the
/// plugin; gateways on the bridge; deterministic host veth names; hairpinMode/isDefaultGateway
/// false.
#[test]
fn node_wiring_mtu_hairpin_forwarding_gateways() {
    let c = Cluster::new(Fabric::single_l2_dual(2));
    let node = c.node(0);
    write(&node.subnet_file, &subnet_env(0, true, 1400));
    node.ns.set_sysctl("net.ipv4.ip_forward", "0");
    node.ns.set_sysctl("net.ipv6.conf.all.forwarding", "0");

    let p = c.add_pod(0);
    assert_eq!(
        node.ns.sysctl("net.ipv4.ip_forward"),
        "1",
        "plugin enables IPv4 forwarding"
    );
    assert_eq!(
        node.ns.sysctl("net.ipv6.conf.all.forwarding"),
        "1",
        "plugin enables IPv6 forwarding"
    );
    let br = node.ns.link("cni0").expect("cni0");
    assert_eq!(br.kind.as_deref(), Some("bridge"));
    assert!(br.up);
    assert_eq!(br.mtu, 1400);
    let mut gws = vec![format!("{}/24", gw4(0)), format!("{}/64", gw6(0))];
    gws.sort();
    assert_eq!(node.ns.global_cidrs("cni0"), gws);
    let hv = host_veth(&p.result);
    let hl = node.ns.link(&hv).expect("host veth");
    assert_eq!(hl.kind.as_deref(), Some("veth"));
    assert_eq!(hl.master.as_deref(), Some("cni0"));
    assert!(hl.up);
    assert_eq!(hl.mtu, 1400);
    assert_eq!(
        hl.raw.pointer("/linkinfo/info_slave_data/hairpin"),
        Some(&json!(true))
    );
    let pl = p.ns.link("eth0").expect("pod eth0");
    assert_eq!(pl.mtu, 1400);
    assert!(pl.up);

    // The host veth name is a function of (container ID, ifname).
    p.run("DEL").assert_ok_empty();
    let again = node.add_pod(&plugin(), &c.conf(0), &p.container_id);
    assert_eq!(
        host_veth(&again.result),
        hv,
        "same attachment, same host veth name"
    );
    again.run("DEL").assert_ok_empty();

    // hairpinMode false, isDefaultGateway false (the cluster route stays).
    let mut conf = c.conf(0);
    conf["hairpinMode"] = json!(false);
    conf["isDefaultGateway"] = json!(false);
    let q = c.add_pod_with(0, &conf);
    assert_ne!(host_veth(&q.result), hv, "another attachment, another name");
    let hl = node.ns.link(&host_veth(&q.result)).expect("host veth");
    assert_eq!(
        hl.raw.pointer("/linkinfo/info_slave_data/hairpin"),
        Some(&json!(false))
    );
    let routes = q.ns.main_routes();
    assert!(
        !routes.iter().any(|r| r.dst == "default"),
        "no default route"
    );
    assert!(
        routes
            .iter()
            .any(|r| r.dst == CLUSTER4 && r.gateway.map(|g| g.to_string()) == Some(gw4(0))),
        "cluster route via the gateway"
    );
    q.run("DEL").assert_ok_empty();
}

/// A bridge already holding another address of the pod subnet: ADD fails (104) without
/// `forceAddress` and leaves nothing; with it, the gateway replaces the old address.
#[test]
fn force_address_replaces_a_conflicting_bridge_address() {
    let c = Cluster::new(Fabric::single_l2(2));
    let node = c.node(0);
    node.ns.ip(&["link", "add", "cni0", "type", "bridge"]);
    node.ns
        .ip(&["addr", "add", "10.244.1.254/24", "dev", "cni0"]);
    node.ns.ip(&["link", "set", "cni0", "up"]);

    let (_p, out) = node.try_add_pod(&plugin(), &c.conf(0), &unique_name("c"));
    let err = out.assert_error(code::CONFLICT);
    assert!(error_text(&err).contains("10.244.1.254"), "{out}");
    assert_eq!(tw_links(&node.ns), Vec::<String>::new());
    assert_eq!(c.reservations(0), BTreeMap::new());
    assert_eq!(
        node.ns.global_cidrs("cni0"),
        vec!["10.244.1.254/24".to_string()]
    );

    // Also: an existing bridge that is down is brought up.
    node.ns.ip(&["link", "set", "cni0", "down"]);
    let mut conf = c.conf(0);
    conf["forceAddress"] = json!(true);
    let p = c.add_pod_with(0, &conf);
    assert_eq!(node.ns.global_cidrs("cni0"), vec![format!("{}/24", gw4(0))]);
    assert!(node.ns.link("cni0").expect("cni0").up, "bridge brought up");
    assert!(ping(&p.ns, gw4(0).parse().expect("ip")));
    p.run("DEL").assert_ok_empty();
}

// ---------------------------------------------------------------------------------------------
// Explicit IPAM
// ---------------------------------------------------------------------------------------------

/// With `ipam`, `mtu` and `ipMasq` given, no subnet file is needed; host-local runs in-process
/// and any other IPAM type is executed from CNI_PATH (the reference `static` here).
#[test]
fn explicit_ipam_in_process_and_delegated() {
    let c = Cluster::new(Fabric::single_l2(2));
    let node = c.node(0);
    let mut conf = c.conf_v(0, "1.0.0");
    conf["subnetFile"] = json!(node.run_dir.join("absent.env"));
    conf["mtu"] = json!(1450);
    conf["ipMasq"] = json!(false);
    conf["ipam"] = json!({
        "type": "host-local",
        "dataDir": node.data_dir,
        "ranges": [[{"subnet": "10.244.1.0/24", "rangeStart": "10.244.1.100"}]],
        "routes": [{"dst": CLUSTER4}]
    });
    let mut status = conf.clone();
    status["cniVersion"] = json!("1.1.0");
    plain(node, "STATUS", &status).assert_ok_empty();
    let p = c.add_pod_with(0, &conf);
    assert_eq!(
        result_ips(&p.result),
        vec!["10.244.1.100".parse::<IpAddr>().expect("ip")]
    );
    assert_eq!(p.ns.link("eth0").expect("eth0").mtu, 1450);
    assert_eq!(c.reservations(0).len(), 1);
    p.run("CHECK").assert_ok_empty();
    p.run("DEL").assert_ok_empty();
    assert_eq!(c.reservations(0), BTreeMap::new());

    let mut st = conf.clone();
    st["ipam"] = json!({
        "type": "static",
        "addresses": [{"address": "10.244.1.77/24", "gateway": gw4(0)}],
        "routes": [{"dst": CLUSTER4}]
    });
    let cni_path = format!(
        "{}:{}",
        plugin().parent().expect("dir").display(),
        conformance::bins::ref_dir().display()
    );
    let pod_ns = Netns::with_tag("pod");
    let id = unique_name("c");
    let call = |cmd: &str| {
        node.invoke(&plugin(), cmd, &st, &id, pod_ns.path(), "eth0")
            .cni_path(&cni_path)
            .run()
    };
    let res = call("ADD").assert_ok();
    assert_eq!(res["ips"][0]["address"], "10.244.1.77/24", "{res}");
    assert_eq!(
        pod_ns.global_cidrs("eth0"),
        vec!["10.244.1.77/24".to_string()]
    );
    assert!(ping(&pod_ns, node.ip.into()), "static pod reaches its node");
    call("DEL").assert_ok_empty();
    assert_eq!(tw_links(&node.ns), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------------------

/// Eight ADDs at once on a node without a bridge yet: one bridge, eight distinct addresses,
/// eight ports; then eight DELs at once leave nothing.
#[test]
fn parallel_adds_on_a_fresh_node() {
    let c = Cluster::new(Fabric::single_l2(2));
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
    let bridges: Vec<String> = node
        .ns
        .links()
        .into_iter()
        .filter(|l| l.kind.as_deref() == Some("bridge"))
        .map(|l| l.name)
        .collect();
    assert_eq!(bridges, vec!["cni0".to_string()]);
    let ips: BTreeSet<IpAddr> = pods.iter().flat_map(|p| result_ips(&p.result)).collect();
    assert_eq!(ips.len(), 8);
    assert_eq!(c.reservations(0).len(), 8);
    let ports = node
        .ns
        .links()
        .into_iter()
        .filter(|l| l.master.as_deref() == Some("cni0"))
        .count();
    assert_eq!(ports, 8);
    assert_eq!(node.ns.global_cidrs("cni0"), vec![format!("{}/24", gw4(0))]);
    assert_eq!(peer_routes(&node.ns), c.expected_peer_routes(0));
    let last = result_ips(&pods[7].result)[0];
    assert!(ping(&pods[0].ns, last));
    std::thread::scope(|s| {
        for p in &pods {
            s.spawn(|| p.run("DEL").assert_ok_empty());
        }
    });
    let all: Vec<IpAddr> = ips.into_iter().collect();
    c.assert_clean_after_dels(0, &all);
}

// ---------------------------------------------------------------------------------------------
// Malformed input
// ---------------------------------------------------------------------------------------------

/// Bad environment and bad configs, each on a fresh node (no bridge yet): a CNI error object
/// with the expected code(s), and no change at all to the node (no bridge, no veth, no
/// address, no route, no file, no nftables table) nor to the pod namespace.
#[test]
fn malformed_input_is_rejected_without_touching_the_node() {
    let c = Cluster::new(Fabric::single_l2(2));
    let node = c.node(0);
    let dir = node.data_dir.parent().expect("node dir").to_path_buf();
    let write_in = |name: &str, text: &str| {
        let p = dir.join(name);
        write(&p, text);
        p
    };
    let bad_subnet = write_in(
        "subnet-bad.env",
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=garbage\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=true\n",
    );
    let pod_ns = Netns::with_tag("pod");
    let conf = c.conf(0);
    let id = "bad-case";
    let add = |conf: &Value| node.invoke(&plugin(), "ADD", conf, id, pod_ns.path(), "eth0");
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = conf.clone();
        f(&mut v);
        add(&v)
    };
    let cases: Vec<(&str, Invocation, &[u64])> = vec![
        (
            "missing CNI_CONTAINERID",
            add(&conf).unset("CNI_CONTAINERID"),
            &[4],
        ),
        (
            "container ID ../../x",
            add(&conf).container_id("../../x"),
            &[4],
        ),
        ("missing CNI_IFNAME", add(&conf).unset("CNI_IFNAME"), &[4]),
        ("ifname ../x", add(&conf).ifname("../x"), &[4]),
        (
            "ifname of 16 bytes",
            add(&conf).ifname("abcdefghijklmnop"),
            &[4],
        ),
        ("missing CNI_NETNS", add(&conf).unset("CNI_NETNS"), &[4]),
        (
            "CNI_NETNS does not exist",
            add(&conf).netns("/run/netns/twc-no-such-netns"),
            &[3],
        ),
        (
            "CNI_NETNS is the node's own",
            add(&conf).netns(node.ns.path()),
            &[4],
        ),
        ("stdin not JSON", add(&conf).stdin_raw("{nope"), &[6]),
        (
            "unsupported cniVersion",
            with(&|v| v["cniVersion"] = json!("9.9.9")),
            &[1],
        ),
        (
            "network name ../x",
            with(&|v| v["name"] = json!("../x")),
            &[7],
        ),
        ("bridge ../x", with(&|v| v["bridge"] = json!("../x")), &[7]),
        (
            "bridge name of 16 bytes",
            with(&|v| v["bridge"] = json!("abcdefghijklmnop")),
            &[7],
        ),
        ("mtu 10", with(&|v| v["mtu"] = json!(10)), &[7]),
        ("mtu a string", with(&|v| v["mtu"] = json!("big")), &[6, 7]),
        (
            "isGateway a string",
            with(&|v| v["isGateway"] = json!("yes")),
            &[6, 7],
        ),
        (
            "ipMasq a string",
            with(&|v| v["ipMasq"] = json!("yes")),
            &[6, 7],
        ),
        (
            "peers and peersFile",
            with(&|v| v["peers"] = json!([])),
            &[7],
        ),
        // A view that is missing, not JSON or has bad entries is not malformed input: ADD
        // goes on without it (tests/cluster_view.rs).
        (
            "subnetFile missing and no ipam",
            with(&|v| v["subnetFile"] = json!(dir.join("absent.env"))),
            &[7],
        ),
        (
            "subnetFile malformed",
            with(&|v| v["subnetFile"] = json!(bad_subnet)),
            &[7],
        ),
    ];

    let node_dir = DirSnapshot::take(&dir);
    let mut before = NodeSnapshot::take(c.node(0));
    let mut failures = Vec::new();
    for (what, call, codes) in cases {
        let out = call.run();
        if let Err(e) = out.check_error(codes) {
            failures.push(format!("{what}: {e}\n{out}"));
        }
        let after = NodeSnapshot::take(c.node(0));
        if after != before {
            failures.push(format!("{what}: the node changed: {}", before.diff(&after)));
            // Put the node back for the next case: remove links a plugin made, restore the
            // files, and take the rest as the new baseline.
            for l in &after.links {
                if !before.links.contains(l) {
                    node.ns.ip(&["link", "del", l]);
                }
            }
            node_dir.restore(&dir);
            before = NodeSnapshot::take(c.node(0));
        }
        if pod_ns.link_names() != vec!["lo".to_string()] {
            failures.push(format!(
                "{what}: the pod netns changed: {:?}",
                pod_ns.link_names()
            ));
            for l in pod_ns.link_names().iter().filter(|l| *l != "lo") {
                pod_ns.ip(&["link", "del", l]);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} malformed-input failures:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

// ---------------------------------------------------------------------------------------------
// More CHECK, DEL and ADD edge cases
// ---------------------------------------------------------------------------------------------

/// CHECK also looks at the node side: the bridge's gateway address removed is named in the
/// error; a peer route deleted by hand and the ipMasq table removed are node state the next
/// ADD repairs, so CHECK names them on stderr and succeeds.
#[test]
fn check_detects_missing_peer_route_gateway_and_masq_table() {
    let c = Cluster::new(Fabric::single_l2(3));
    let node = c.node(0);
    let mut conf = c.conf(0);
    conf["ipMasq"] = json!(true);
    let p = c.add_pod_with(0, &conf);
    p.run("CHECK").assert_ok_empty();

    let check_names = |what: &str, needle: &str| {
        let out = p.run("CHECK");
        let err = out
            .check_error_shape()
            .unwrap_or_else(|e| panic!("CHECK with {what}: {e}\n{out}"));
        assert!(
            error_text(&err).contains(needle),
            "CHECK with {what} must name {needle}\n{out}"
        );
    };

    node.ns.ip(&["route", "del", &pod_cidr4(2)]);
    let out = p.run("CHECK");
    out.assert_ok_empty();
    assert!(out.stderr.contains(&pod_cidr4(2)), "{out}");
    node.ns.ip(&[
        "route",
        "add",
        &pod_cidr4(2),
        "via",
        "10.99.0.3",
        "proto",
        "116",
    ]);
    p.run("CHECK").assert_ok_empty();

    let table = format!("twill-masq-{}", c.net);
    node.ns.exec_ok(&["nft", "delete", "table", "inet", &table]);
    // The masquerade is node state, not this attachment: CHECK says so on stderr, succeeds.
    let out = p.run("CHECK");
    out.assert_ok_empty();
    assert!(
        out.stderr.contains(&table),
        "CHECK must report {table}\n{out}"
    );

    // A later ADD puts the masquerading back (one netfilter lookup finds it missing).
    let q = c.add_pod_with(0, &conf);
    p.run("CHECK").assert_ok_empty();

    node.ns
        .ip(&["addr", "del", &format!("{}/24", gw4(0)), "dev", "cni0"]);
    check_names("the bridge gateway removed", &gw4(0));

    p.run("DEL").assert_ok_empty();
    q.run("DEL").assert_ok_empty();
}

/// flanneld gone (subnet file removed) between ADD and DEL: DEL still removes the veth and
/// releases the address from the config's dataDir.
#[test]
fn del_after_the_subnet_file_is_gone() {
    let c = Cluster::new(Fabric::single_l2_dual(2));
    let node = c.node(0);
    let p = c.add_pod(0);
    assert_eq!(c.reservations(0).len(), 2);
    std::fs::remove_file(&node.subnet_file).expect("remove subnet file");
    p.run("DEL").assert_ok_empty();
    assert_eq!(tw_links(&node.ns), Vec::<String>::new());
    assert_eq!(
        c.reservations(0),
        BTreeMap::new(),
        "DEL without subnet file releases"
    );
    p.run("DEL").assert_ok_empty();
}

/// A runtime retrying ADD for an attachment that exists: whatever the answer, the existing
/// attachment must survive intact (veth, address, reservation, connectivity).
#[test]
fn repeated_add_never_breaks_the_existing_attachment() {
    let c = Cluster::new(Fabric::single_l2(2));
    let node = c.node(0);
    let p = c.add_pod(0);
    let other = c.add_pod(0);
    let hv = host_veth(&p.result);
    let res_before = c.reservations(0);
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
    if out.success() {
        let again = out.assert_ok();
        assert_eq!(result_ips(&again), result_ips(&p.result), "{again}");
    } else if let Err(e) = out.check_error_shape() {
        panic!("second ADD: {e}\n{out}");
    }
    assert!(
        node.ns.link(&hv).is_some(),
        "second ADD removed {hv}\n{out}"
    );
    assert_eq!(
        c.reservations(0),
        res_before,
        "second ADD changed reservations\n{out}"
    );
    let want: Vec<String> = p.result["ips"]
        .as_array()
        .expect("ips")
        .iter()
        .filter_map(|i| i["address"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        p.ns.global_cidrs("eth0"),
        want,
        "second ADD changed the pod\n{out}"
    );
    p.run("CHECK").assert_ok_empty();
    assert!(ping(&other.ns, result_ips(&p.result)[0]), "\n{out}");
    p.run("DEL").assert_ok_empty();
    other.run("DEL").assert_ok_empty();
}

/// Two networks on one node (bridges cni0 and cni1, their own peer views): each keeps its own
/// peer routes when the other's view changes, and DEL on one leaves the other alone.
#[test]
fn two_networks_on_one_node_keep_their_own_routes() {
    let c = Cluster::new(Fabric::single_l2(3));
    let node = c.node(0);
    let a = c.add_pod(0);

    let other_dir = node.run_dir.join("b");
    std::fs::create_dir_all(&other_dir).expect("mkdir");
    let sub_b = other_dir.join("subnet.env");
    write(
        &sub_b,
        "FLANNEL_NETWORK=10.245.0.0/16\nFLANNEL_SUBNET=10.245.1.1/24\nFLANNEL_MTU=1500\n\
         FLANNEL_IPMASQ=true\n",
    );
    let conf_b = |peers: Value| {
        json!({
            "cniVersion": "1.1.0",
            "name": unique_name("hgb").replace(|ch: char| ch.is_ascii_digit(), "") + "b",
            "type": "bridge-host-gw",
            "bridge": "cni1",
            "subnetFile": sub_b,
            "dataDir": other_dir.join("data"),
            "runDir": other_dir.join("run"),
            "peers": peers,
        })
    };
    let mut b_conf = conf_b(json!([
        {"nodeIP": "10.99.0.2", "podCIDR": "10.245.2.0/24"},
        {"nodeIP": "10.99.0.3", "podCIDR": "10.245.3.0/24"},
    ]));
    let b_name = b_conf["name"].clone();
    let b = c.add_pod_with(0, &b_conf);
    let all: BTreeSet<(String, String)> = c
        .expected_peer_routes(0)
        .into_iter()
        .chain([
            ("10.245.2.0/24".to_string(), "10.99.0.2".to_string()),
            ("10.245.3.0/24".to_string(), "10.99.0.3".to_string()),
        ])
        .collect();
    assert_eq!(peer_routes(&node.ns), all);
    assert_eq!(
        node.ns
            .link(&host_veth(&b.result))
            .and_then(|l| l.master)
            .as_deref(),
        Some("cni1")
    );

    // Network b's view shrinks: only its own route to 10.245.3.0/24 goes.
    b_conf = conf_b(json!([{"nodeIP": "10.99.0.2", "podCIDR": "10.245.2.0/24"}]));
    b_conf["name"] = b_name;
    let b2 = c.add_pod_with(0, &b_conf);
    let mut want = all.clone();
    want.remove(&("10.245.3.0/24".to_string(), "10.99.0.3".to_string()));
    assert_eq!(peer_routes(&node.ns), want, "network b touched a's routes");

    // Network a's view shrinks: b's routes stay.
    write(&node.peers_file, &c.peers(|j| j != 2).to_string());
    let a2 = c.add_pod(0);
    want.remove(&(pod_cidr4(2), "10.99.0.3".to_string()));
    assert_eq!(peer_routes(&node.ns), want, "network a touched b's routes");

    for p in [&b, &b2] {
        p.run("DEL").assert_ok_empty();
    }
    a.run("CHECK").assert_ok_empty();
    assert!(ping(&a2.ns, result_ips(&a.result)[0]));
    a.run("DEL").assert_ok_empty();
    a2.run("DEL").assert_ok_empty();
    assert_eq!(tw_links(&node.ns), Vec::<String>::new());
}

/// An IPv6-only cluster (only FLANNEL_IPV6_* in the subnet files): pods get one IPv6
/// address and reach each other across nodes.
#[test]
fn ipv6_only_cluster() {
    let c = Cluster::new(Fabric::single_l2_dual(2));
    for i in 0..2 {
        write(
            &c.node(i).subnet_file,
            &format!(
                "FLANNEL_IPV6_NETWORK={CLUSTER6}\nFLANNEL_IPV6_SUBNET={}/64\nFLANNEL_MTU={MTU}\n\
                 FLANNEL_IPMASQ=true\n",
                gw6(i)
            ),
        );
        let v6_peers: Vec<Value> = (0..2)
            .map(|j| {
                json!({"nodeIP": c.node(j).ip6.expect("v6").to_string(), "podCIDR": pod_cidr6(j)})
            })
            .collect();
        write(&c.node(i).peers_file, &Value::Array(v6_peers).to_string());
    }
    let p0 = c.add_pod(0);
    let p1 = c.add_pod(1);
    for (i, p) in [(0, &p0), (1, &p1)] {
        let ips = result_ips(&p.result);
        assert_eq!(ips.len(), 1, "{}", p.result);
        assert!(in_cidr(&ips[0], &pod_cidr6(i)), "{}", p.result);
        assert_eq!(p.result["ips"][0]["gateway"], gw6(i).as_str());
        assert_eq!(p.ns.global_cidrs("eth0").len(), 1);
    }
    assert_eq!(
        peer_routes(&c.node(0).ns),
        [(pod_cidr6(1), "fd99::2".to_string())]
            .into_iter()
            .collect()
    );
    assert!(ping(&p0.ns, result_ips(&p1.result)[0]));
    assert!(ping(&p1.ns, result_ips(&p0.result)[0]));
    p0.run("DEL").assert_ok_empty();
    p1.run("DEL").assert_ok_empty();
}

/// What a kubelet sends: a 64-hex container ID, CNI_ARGS with IgnoreUnknown and K8S_* keys,
/// and a requested MAC (runtimeConfig.mac), which the pod interface gets.
#[test]
fn kubelet_style_call_with_requested_mac() {
    let c = Cluster::new(Fabric::single_l2(2));
    let node = c.node(0);
    let id = format!(
        "{:064x}",
        u128::from(std::process::id()) << 64 | u128::from(0xabcdef_u32)
    );
    let mut conf = c.conf(0);
    conf["runtimeConfig"] = json!({"mac": "0a:58:0a:f4:01:63"});
    let pod_ns = Netns::with_tag("pod");
    let call = |cmd: &str, conf: &Value| {
        node.invoke(&plugin(), cmd, conf, &id, pod_ns.path(), "eth0")
            .cni_args("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc")
            .run()
    };
    let res = call("ADD", &conf).assert_ok();
    let pl = pod_ns.link("eth0").expect("eth0");
    assert_eq!(pl.mac.as_deref(), Some("0a:58:0a:f4:01:63"));
    assert_eq!(res["interfaces"][2]["mac"], "0a:58:0a:f4:01:63", "{res}");
    let hv = host_veth(&res);
    assert!(hv.starts_with("tw") && hv.len() == 15, "{res}");
    let mut check = conf.clone();
    check["prevResult"] = res.clone();
    call("CHECK", &check).assert_ok_empty();
    call("DEL", &conf).assert_ok_empty();
    assert!(node.ns.link(&hv).is_none());
    assert_eq!(c.reservations(0), BTreeMap::new());
}

/// A device that is not a bridge already holds the bridge's name: ADD refuses (naming it)
/// and leaves that device and the node alone.
#[test]
fn existing_non_bridge_device_with_the_bridge_name_is_refused() {
    let c = Cluster::new(Fabric::single_l2(2));
    let node = c.node(0);
    node.ns.ip(&[
        "link", "add", "cni0", "type", "veth", "peer", "name", "cni0p",
    ]);
    let before = NodeSnapshot::take(c.node(0));
    let (pod, out) = node.try_add_pod(&plugin(), &c.conf(0), &unique_name("c"));
    let err = out
        .check_error_shape()
        .unwrap_or_else(|e| panic!("ADD onto a veth named cni0: {e}\n{out}"));
    assert!(error_text(&err).contains("cni0"), "{out}");
    let after = NodeSnapshot::take(c.node(0));
    assert!(after == before, "the node changed: {}", before.diff(&after));
    assert_eq!(pod.ns.link_names(), vec!["lo".to_string()]);
}

/// A second interface of the same pod on the same network is an attachment of its own: its
/// own host veth and address; DEL and GC of one leave the other.
#[test]
fn second_interface_of_a_pod_is_its_own_attachment() {
    let c = Cluster::new(Fabric::single_l2(2));
    let node = c.node(0);
    let p = c.add_pod(0);
    let eth1 = |cmd: &str, conf: &Value| {
        node.invoke(&plugin(), cmd, conf, &p.container_id, p.ns.path(), "eth1")
            .run()
    };
    let out = eth1("ADD", &c.conf(0));
    if !out.success() {
        // At least the failure must have been rolled back.
        assert_eq!(tw_links(&node.ns), vec![host_veth(&p.result)], "{out}");
        assert_eq!(c.reservations(0).len(), 1, "{out}");
        assert!(p.ns.link("eth1").is_none(), "{out}");
        panic!(
            "ADD of a second interface failed (the reference bridge plugin accepts it and \
             adds a second default route, one per interface):\n{out}"
        );
    }
    let res1 = out.assert_ok();
    let (hv0, hv1) = (host_veth(&p.result), host_veth(&res1));
    assert_ne!(hv0, hv1);
    assert_ne!(result_ips(&p.result), result_ips(&res1));
    assert_eq!(c.reservations(0).len(), 2);
    assert_eq!(res1["interfaces"][2]["name"], "eth1", "{res1}");
    assert_eq!(p.ns.global_cidrs("eth1").len(), 1);

    // GC keeping only eth0 removes eth1's veth and address.
    let gc = with_attachments(&c.conf(0), &[(&p.container_id, "eth0")]);
    plain(node, "GC", &gc).assert_ok_empty();
    assert!(node.ns.link(&hv1).is_none(), "GC kept {hv1}");
    assert!(node.ns.link(&hv0).is_some(), "GC removed {hv0}");
    let res = c.reservations(0);
    assert_eq!(res.len(), 1, "{res:?}");
    assert!(res.values().all(|o| o.ends_with("eth0")), "{res:?}");

    // Again eth1, then DEL of eth1 leaves eth0.
    eth1("ADD", &c.conf(0)).assert_ok();
    eth1("DEL", &c.conf(0)).assert_ok_empty();
    assert!(node.ns.link(&hv0).is_some(), "DEL of eth1 removed {hv0}");
    assert!(p.ns.link("eth0").is_some());
    assert_eq!(c.reservations(0).len(), 1);
    p.run("CHECK").assert_ok_empty();
    p.run("DEL").assert_ok_empty();
}

/// Without an `ipMasq` key the plugin follows flannel: it masquerades exactly when the subnet
/// file says flanneld does not (FLANNEL_IPMASQ=false); an explicit `ipMasq` wins.
#[test]
fn ip_masq_default_follows_flannel_ipmasq() {
    let c = Cluster::new(Fabric::single_l2(2));
    let node = c.node(0);
    let table = format!("twill-masq-{}", c.net);
    let has_table = || {
        node.ns
            .exec(&["nft", "list", "table", "inet", &table])
            .status
            .success()
    };
    let p = c.add_pod(0);
    assert!(
        !has_table(),
        "FLANNEL_IPMASQ=true: flanneld masquerades, the plugin must not"
    );
    let mut off = c.conf(0);
    off["ipMasq"] = json!(false);
    write(
        &node.subnet_file,
        &subnet_env(0, false, MTU).replace("FLANNEL_IPMASQ=true", "FLANNEL_IPMASQ=false"),
    );
    let q = c.add_pod_with(0, &off);
    assert!(!has_table(), "explicit ipMasq false wins");
    let r = c.add_pod(0);
    assert!(
        has_table(),
        "FLANNEL_IPMASQ=false and no ipMasq key: the plugin masquerades"
    );
    for x in [&p, &q, &r] {
        x.run("DEL").assert_ok_empty();
    }
}

/// The MAC the node (on `cni0`) or a pod (on `eth0`) has for `ip`, if any.
fn neighbour_mac(ns: &Netns, ip: &str, dev: &str) -> Option<String> {
    let out = ns.ip(&["neigh", "show", ip, "dev", dev]);
    let words: Vec<&str> = out.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "lladdr")?;
    words.get(at + 1).map(|m| m.to_string())
}

#[test]
fn add_of_a_reused_address_corrects_the_node_and_the_other_pods_at_once() {
    // A pod's address used before by another pod: the node and the pods on the bridge still
    // map it to the old MAC. The ADD's gratuitous ARP must correct both before the new pod has
    // sent anything else.
    let c = Cluster::new(Fabric::single_l2(1));
    let node = c.node(0);
    let other = c.add_pod(0);
    let reused = "10.244.1.77";
    let stale = "02:00:00:00:00:99";
    node.ns.ip(&[
        "neigh", "replace", reused, "lladdr", stale, "dev", "cni0", "nud", "stale",
    ]);
    other.ns.ip(&[
        "neigh", "replace", reused, "lladdr", stale, "dev", "eth0", "nud", "stale",
    ]);
    let mut conf = c.conf(0);
    conf["runtimeConfig"] = json!({"ips": [format!("{reused}/24")]});
    let pod = c.add_pod_with(0, &conf);
    assert_eq!(pod.result["ips"][0]["address"], format!("{reused}/24"));
    let mac = pod.result["interfaces"][2]["mac"]
        .as_str()
        .expect("pod MAC")
        .to_string();
    // The ARP is processed as it is sent; a few reads cover a slow scheduler.
    let corrected = |ns: &Netns, dev: &str| {
        (0..50).any(|_| {
            let now = neighbour_mac(ns, reused, dev);
            if now.as_deref() != Some(mac.as_str()) {
                std::thread::sleep(std::time::Duration::from_millis(10));
                return false;
            }
            true
        })
    };
    assert!(
        corrected(&node.ns, "cni0"),
        "node still maps {reused} elsewhere"
    );
    assert!(
        corrected(&other.ns, "eth0"),
        "other pod still maps {reused} elsewhere"
    );
    pod.run("DEL").assert_ok_empty();
    other.run("DEL").assert_ok_empty();
}
