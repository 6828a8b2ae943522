//! Black-box suite of the `vxlan` plugin (flannel's VXLAN overlay; routed pods: Calico's VXLAN
//! mode), run on fabrics of network namespaces: nodes on two L2 segments joined by a router
//! (only IP reachability between them), pods on each node's bridge (or routed veths), other
//! nodes' pods through the vxlan device.
//!
//! Covered: the mesh across the router (ping, a TCP transfer of a few MB, DF pings at exactly
//! the pod MTU and one byte more), the device (VNI, port, local, learning off, MTU, address,
//! MAC, checksum offload; recreated on a VNI change, left alone otherwise; racing ADDs), the
//! per-peer neighbour / FDB / route following the view, directRouting, dual stack, and the
//! command / version / DEL / rollback / CHECK / GC / STATUS matrix with malformed input; for
//! routed pods the mesh, TCP and DF pings, peers leaving and joining, the blackhole, repairs on
//! an unchanged view, and the command matrix.

use conformance::hostgw::{
    Cluster, NodeSnapshot, error_text, pod_cidr4, pod_cidr6, state_without_cursors,
    with_attachments,
};
use conformance::vxlan::{
    DEV4, DEV6, add, conf, conf_v, device, df_ping, fdb_of, plugin, routed_dual, tcp_transfer,
    tx_checksum_on,
};
use conformance::{Fabric, Invocation, Netns, Pod, no_reply, ping, result_ips, unique_name};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::net::IpAddr;

/// The default device of routed pod mode (Calico's VXLAN mode).
const ROUTED_DEV: &str = "vxlan.twill";

/// The twill routes of node `i` as (dst, gateway, dev, onlink).
fn vx_routes(c: &Cluster, i: usize) -> BTreeSet<(String, String, String, bool)> {
    c.node(i)
        .ns
        .main_routes()
        .into_iter()
        .filter(|r| r.protocol.as_deref() == Some("116"))
        .map(|r| {
            let onlink = r.raw["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x == "onlink"));
            (
                r.dst.clone(),
                r.gateway.map(|g| g.to_string()).unwrap_or_default(),
                r.dev.clone().unwrap_or_default(),
                onlink,
            )
        })
        .collect()
}

/// The veths of a node (twill's host ends; the vxlan device's name starts with "tw" too).
fn host_veths(ns: &Netns) -> Vec<String> {
    ns.links()
        .into_iter()
        .filter(|l| l.kind.as_deref() == Some("veth") && l.name.starts_with("tw"))
        .map(|l| l.name)
        .collect()
}

fn first_ip(p: &Pod, v4: bool) -> IpAddr {
    result_ips(&p.result)
        .into_iter()
        .find(|ip| ip.is_ipv4() == v4)
        .unwrap_or_else(|| panic!("no IPv{} in {}", if v4 { 4 } else { 6 }, p.result))
}

/// Node `i`'s device MAC.
fn dev_mac(c: &Cluster, i: usize, dev: &str) -> String {
    device(&c.node(i).ns, dev)
        .unwrap_or_else(|| panic!("node {i} has no {dev}"))
        .0
        .mac
        .unwrap_or_default()
}

/// Asserts node `i` holds, for every other node `j`, the neighbour (j's subnet address ->
/// j's device MAC, permanent), the FDB entry (that MAC -> j's node IP, self permanent) and
/// the route `j's subnet via j's subnet address dev <vxlan> onlink`, and nothing else of that
/// kind on the device.
fn assert_overlay_entries(c: &Cluster, i: usize, peers: &[usize]) {
    assert_overlay_entries_on(c, i, DEV4, peers);
    let on_dev = vx_routes(c, i).into_iter().filter(|r| r.2 == DEV4).count();
    assert_eq!(
        vx_routes(c, i).len(),
        on_dev,
        "node {i}: only overlay routes"
    );
}

/// [`assert_overlay_entries`] on device `dev`, for the twill routes through `dev` only.
fn assert_overlay_entries_on(c: &Cluster, i: usize, dev: &str, peers: &[usize]) {
    let node = c.node(i);
    let mut neigh = BTreeSet::new();
    let mut fdb = BTreeSet::new();
    let mut routes = BTreeSet::new();
    for &j in peers {
        let net4 = pod_cidr4(j);
        let gw: IpAddr = net4.split('/').next().unwrap().parse().unwrap();
        let mac = dev_mac(c, j, dev);
        neigh.insert((gw, mac.clone()));
        fdb.insert((mac, IpAddr::V4(c.node(j).ip)));
        routes.insert((net4, gw.to_string(), dev.to_string(), true));
    }
    let got_neigh: BTreeSet<(IpAddr, String)> = node
        .ns
        .neighbours()
        .into_iter()
        .filter(|n| n.dev == dev)
        .map(|n| {
            assert!(n.state.iter().any(|s| s == "PERMANENT"), "{:?}", n.raw);
            (n.dst, n.lladdr.unwrap_or_default())
        })
        .collect();
    assert_eq!(got_neigh, neigh, "node {i}: neighbours on {dev}");
    let got_fdb: BTreeSet<(String, IpAddr)> = fdb_of(&node.ns, dev)
        .into_iter()
        .map(|(mac, dst, how)| {
            assert!(how.contains("self") && how.contains("permanent"), "{how}");
            (mac, dst)
        })
        .collect();
    assert_eq!(got_fdb, fdb, "node {i}: FDB of {dev}");
    let got_routes: BTreeSet<_> = vx_routes(c, i).into_iter().filter(|r| r.2 == dev).collect();
    assert_eq!(got_routes, routes, "node {i}: twill routes through {dev}");
}

// ---------------------------------------------------------------------------------------------
// The overlay across the router
// ---------------------------------------------------------------------------------------------

/// 3 nodes on two segments behind a router: the device is as flannel's, every pod pings every
/// other pod, each node holds exactly the per-peer entries, pod MTU = device MTU.
#[test]
fn every_pod_reaches_every_other_pod_across_the_router() {
    let c = Cluster::new(Fabric::routed(3));
    let pods: Vec<Pod> = (0..3)
        .map(|i| add(&c, i, &conf(&c, i, json!({}))))
        .collect();
    for (i, p) in pods.iter().enumerate() {
        let node = c.node(i);
        let (l, data) = device(&node.ns, DEV4).expect("device");
        assert_eq!(l.kind.as_deref(), Some("vxlan"));
        assert_eq!(data["id"], json!(1), "VNI: {data}");
        assert_eq!(data["port"], json!(8472), "port: {data}");
        assert_eq!(data["local"], json!(node.ip.to_string()), "local: {data}");
        assert_eq!(data["learning"], json!(false), "learning off: {data}");
        assert_eq!(l.mtu, 1450, "underlay 1500 - 50");
        assert!(l.up);
        assert_eq!(
            node.ns.global_cidrs(DEV4),
            vec![format!("10.244.{}.0/32", i + 1)]
        );
        let mac = l.mac.clone().unwrap_or_default();
        let first = u8::from_str_radix(&mac[..2], 16).unwrap();
        assert_eq!(first & 3, 2, "locally administered unicast: {mac}");
        assert!(!tx_checksum_on(&node.ns, DEV4), "tx checksum offload off");
        assert_eq!(
            node.ns.link("cni0").unwrap().mtu,
            1450,
            "bridge at device MTU"
        );
        assert_eq!(p.ns.link("eth0").unwrap().mtu, 1450, "pod MTU = device MTU");
        let others: Vec<usize> = (0..3).filter(|j| *j != i).collect();
        assert_overlay_entries(&c, i, &others);
    }
    let macs: BTreeSet<String> = (0..3).map(|i| dev_mac(&c, i, DEV4)).collect();
    assert_eq!(macs.len(), 3, "one VTEP MAC per node");
    for a in &pods {
        for b in pods.iter().filter(|b| b.container_id != a.container_id) {
            let ip = first_ip(b, true);
            assert!(ping(&a.ns, ip), "{} -> {ip}", first_ip(a, true));
        }
    }
    for p in &pods {
        p.run("DEL").assert_ok_empty();
    }
    for i in 0..3 {
        assert!(
            device(&c.node(i).ns, DEV4).is_some(),
            "DEL keeps the device"
        );
        assert_eq!(host_veths(&c.node(i).ns), Vec::<String>::new());
    }
}

/// 3 nodes behind the router, 3 pods on each: every pod pings every other pod (on its own
/// node through the bridge, on the others through the overlay); DEL leaves no veth and no
/// reservation. Uses only iproute2 and ping, so the VM suite runs it on a stock kernel.
#[test]
fn mesh_3x3_ipv4() {
    let c = Cluster::new(Fabric::routed(3));
    let pods: Vec<Pod> = (0..9)
        .map(|k| add(&c, k % 3, &conf(&c, k % 3, json!({}))))
        .collect();
    for a in &pods {
        for b in pods.iter().filter(|b| b.container_id != a.container_id) {
            let ip = first_ip(b, true);
            assert!(ping(&a.ns, ip), "{} -> {ip}", first_ip(a, true));
        }
    }
    for p in &pods {
        p.run("DEL").assert_ok_empty();
    }
    for i in 0..3 {
        assert_eq!(host_veths(&c.node(i).ns), Vec::<String>::new(), "node {i}");
        assert!(c.reservations(i).is_empty(), "node {i}");
    }
}

/// A TCP transfer of 4 MiB between pods on nodes behind the router arrives whole; a DF ping
/// of exactly the pod MTU crosses, one byte more fails locally with "message too long"
/// instead of vanishing in the tunnel.
#[test]
fn tcp_transfer_and_df_pings_at_exactly_the_pod_mtu_cross_the_overlay() {
    let c = Cluster::new(Fabric::routed(2));
    let a = add(&c, 0, &conf(&c, 0, json!({})));
    let b = add(&c, 1, &conf(&c, 1, json!({})));
    let to = first_ip(&b, true);
    let size = 4 << 20;
    assert_eq!(tcp_transfer(&a.ns, &b.ns, to, size), size);
    let mtu = a.ns.link("eth0").unwrap().mtu;
    assert_eq!(mtu, 1450);
    let (ok, text) = df_ping(&a.ns, to, mtu - 28);
    assert!(ok, "DF ping of {mtu} bytes: {text}");
    let (ok, text) = df_ping(&a.ns, to, mtu - 27);
    assert!(
        !ok && text.contains("message too long"),
        "DF ping of {} bytes: {text}",
        mtu + 1
    );
    for p in [a, b] {
        p.run("DEL").assert_ok_empty();
    }
}

/// A peer that leaves the view loses its neighbour, FDB entry and route at the next ADD (and
/// becomes unreachable); when it joins again, the next ADD makes it reachable.
#[test]
fn a_departed_peer_loses_its_entries_and_a_joining_peer_becomes_reachable() {
    let c = Cluster::new(Fabric::routed(3));
    let pods: Vec<Pod> = (0..3)
        .map(|i| add(&c, i, &conf(&c, i, json!({}))))
        .collect();
    let far = first_ip(&pods[2], true);
    assert!(ping(&pods[0].ns, far));
    let node = c.node(0);
    conformance::hostgw::write(&node.peers_file, &c.peers(|j| j != 2).to_string());
    let p = add(&c, 0, &conf(&c, 0, json!({})));
    assert_overlay_entries(&c, 0, &[1]);
    assert!(no_reply(&pods[0].ns, far), "a departed peer is unreachable");
    conformance::hostgw::write(&node.peers_file, &c.peers(|_| true).to_string());
    let q = add(&c, 0, &conf(&c, 0, json!({})));
    assert_overlay_entries(&c, 0, &[1, 2]);
    assert!(ping(&pods[0].ns, far), "a joining peer is reachable");
    for p in pods.into_iter().chain([p, q]) {
        p.run("DEL").assert_ok_empty();
    }
}

/// An unchanged config leaves the device alone (same ifindex); a new VNI on the same device
/// name replaces it (entries re-made on the new device); a new VNI under the default name makes
/// `twill.<VNI>` and removes the device this network made before.
#[test]
fn device_is_left_alone_when_unchanged_and_recreated_when_the_vni_changes() {
    let c = Cluster::new(Fabric::routed(2));
    let base = conf(&c, 0, json!({}));
    let a = add(&c, 0, &base);
    let (l1, _) = device(&c.node(0).ns, DEV4).unwrap();
    let b = add(&c, 0, &base);
    let (l2, _) = device(&c.node(0).ns, DEV4).unwrap();
    assert_eq!(l1.ifindex, l2.ifindex, "left alone when nothing changed");

    let renumbered = conf(&c, 0, json!({"vni": 2, "device": DEV4}));
    let d = add(&c, 0, &renumbered);
    let (l3, data) = device(&c.node(0).ns, DEV4).unwrap();
    assert_ne!(l3.ifindex, l1.ifindex, "replaced");
    assert_eq!(data["id"], json!(2));
    assert_eq!(fdb_of(&c.node(0).ns, DEV4).len(), 1, "FDB entry re-made");
    assert_eq!(vx_routes(&c, 0).len(), 1, "route re-made");

    let default_named = conf(&c, 0, json!({"vni": 3}));
    let e = add(&c, 0, &default_named);
    let (_, data) = device(&c.node(0).ns, "twill.3").expect("twill.3");
    assert_eq!(data["id"], json!(3));
    assert!(
        device(&c.node(0).ns, DEV4).is_none(),
        "the device this network made before is removed"
    );
    let routes = vx_routes(&c, 0);
    assert!(routes.iter().all(|r| r.2 == "twill.3" && r.3), "{routes:?}");
    for p in [a, b, d, e] {
        p.run("DEL").assert_ok_empty();
    }
}

/// directRouting: a peer on this node's segment is routed via its node IP (no neighbour, FDB
/// entry or tunnel route for it); a peer behind the router goes through the device; both
/// answer.
#[test]
fn direct_routing_skips_the_tunnel_on_the_segment_and_encapsulates_behind_the_router() {
    let c = Cluster::new(Fabric::routed(3));
    let direct = |i| conf(&c, i, json!({"directRouting": true}));
    let pods: Vec<Pod> = (0..3).map(|i| add(&c, i, &direct(i))).collect();
    let want: BTreeSet<(String, String, String, bool)> = [
        (
            pod_cidr4(1),
            c.node(1).ip.to_string(),
            "eth0".to_string(),
            false,
        ),
        (
            pod_cidr4(2),
            "10.244.3.0".to_string(),
            DEV4.to_string(),
            true,
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(vx_routes(&c, 0), want);
    let fdb = fdb_of(&c.node(0).ns, DEV4);
    assert_eq!(fdb.len(), 1, "{fdb:?}");
    assert_eq!(fdb[0].1, IpAddr::V4(c.node(2).ip));
    assert!(ping(&pods[0].ns, first_ip(&pods[1], true)));
    assert!(ping(&pods[0].ns, first_ip(&pods[2], true)));
    for p in pods {
        p.run("DEL").assert_ok_empty();
    }
}

/// Dual stack over a dual-stack routed underlay: a second device over IPv6 (MTU underlay -
/// 70), pods at the smaller MTU, IPv4 and IPv6 pods reach each other across the router.
#[test]
fn dual_stack_pods_reach_each_other_through_both_devices() {
    let c = Cluster::new(routed_dual(2));
    let a = add(&c, 0, &conf(&c, 0, json!({})));
    let b = add(&c, 1, &conf(&c, 1, json!({})));
    let node = c.node(0);
    let (l6, data) = device(&node.ns, DEV6).expect("IPv6 device");
    assert_eq!(
        data["local6"],
        json!(node.ip6.unwrap().to_string()),
        "{data}"
    );
    assert_eq!(l6.mtu, 1430);
    assert_eq!(device(&node.ns, DEV4).unwrap().0.mtu, 1450);
    assert_eq!(
        a.ns.link("eth0").unwrap().mtu,
        1430,
        "the smaller device MTU"
    );
    assert_eq!(
        node.ns.global_cidrs(DEV6),
        vec!["fd00:10:0:1::/128".to_string()]
    );
    let routes = vx_routes(&c, 0);
    assert!(
        routes.contains(&(
            pod_cidr6(1),
            "fd00:10:0:2::".to_string(),
            DEV6.to_string(),
            true
        )),
        "{routes:?}"
    );
    assert!(ping(&a.ns, first_ip(&b, true)));
    assert!(ping(&a.ns, first_ip(&b, false)));
    let (ok, text) = df_ping(&a.ns, first_ip(&b, false), 1430 - 48);
    assert!(ok, "IPv6 DF ping at the pod MTU: {text}");
    for p in [a, b] {
        p.run("DEL").assert_ok_empty();
    }
}

/// A `vtepMAC` in the view is the device's MAC on that node and the peers' neighbour and FDB
/// entries use it.
#[test]
fn an_explicit_vtep_mac_in_the_view_is_used_by_the_node_and_its_peers() {
    let c = Cluster::new(Fabric::routed(2));
    let mut view = c.peers(|_| true);
    view[1]["vtepMAC"] = json!("02:42:00:00:be:ef");
    for i in 0..2 {
        conformance::hostgw::write(&c.node(i).peers_file, &view.to_string());
    }
    let a = add(&c, 0, &conf(&c, 0, json!({})));
    let b = add(&c, 1, &conf(&c, 1, json!({})));
    assert_eq!(dev_mac(&c, 1, DEV4), "02:42:00:00:be:ef");
    assert_overlay_entries(&c, 0, &[1]);
    assert!(ping(&a.ns, first_ip(&b, true)));
    for p in [a, b] {
        p.run("DEL").assert_ok_empty();
    }
}

/// `txChecksumOffload: true` leaves the device's transmit checksum offload on (off by
/// default, see the first test).
#[test]
fn tx_checksum_offload_true_leaves_offload_on() {
    let c = Cluster::new(Fabric::routed(2));
    let a = add(&c, 0, &conf(&c, 0, json!({"txChecksumOffload": true})));
    assert!(tx_checksum_on(&c.node(0).ns, DEV4));
    a.run("DEL").assert_ok_empty();
}

/// Eight ADDs at once on a fresh node: one device, every pod wired, the entries complete.
#[test]
fn racing_adds_on_a_fresh_node_share_one_device() {
    let c = Cluster::new(Fabric::routed(2));
    let conf0 = conf(&c, 0, json!({}));
    let pods: Vec<Pod> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8).map(|_| s.spawn(|| add(&c, 0, &conf0))).collect();
        hs.into_iter().map(|h| h.join().expect("ADD")).collect()
    });
    let vx: Vec<String> = c
        .node(0)
        .ns
        .links()
        .into_iter()
        .filter(|l| l.kind.as_deref() == Some("vxlan"))
        .map(|l| l.name)
        .collect();
    assert_eq!(vx, vec![DEV4.to_string()]);
    assert_eq!(host_veths(&c.node(0).ns).len(), 8);
    let b = add(&c, 1, &conf(&c, 1, json!({})));
    assert_overlay_entries(&c, 0, &[1]);
    assert!(ping(&b.ns, first_ip(&pods[7], true)));
    for p in pods.into_iter().chain([b]) {
        p.run("DEL").assert_ok_empty();
    }
}

// ---------------------------------------------------------------------------------------------
// Commands, versions, failures
// ---------------------------------------------------------------------------------------------

/// Every CNI version: ADD answers in that version's shape, CHECK (0.4.0+) passes, DEL twice
/// succeeds and leaves no veth nor reservation.
#[test]
fn every_version_adds_checks_and_deletes() {
    let c = Cluster::new(Fabric::routed(2));
    for v in conformance::CNI_VERSIONS {
        let cf = conf_v(&c, 0, v, json!({}));
        let p = add(&c, 0, &cf);
        assert_eq!(p.result["cniVersion"], json!(v), "{v}");
        let ip = result_ips(&p.result);
        assert!(
            ip.first()
                .is_some_and(|ip| conformance::hostgw::in_cidr(ip, &pod_cidr4(0))),
            "{v}: {}",
            p.result
        );
        if conformance::hostgw::version_at_least(v, "0.4.0") {
            p.run("CHECK").assert_ok_empty();
        }
        p.run("DEL").assert_ok_empty();
        p.run("DEL").assert_ok_empty();
        assert_eq!(host_veths(&c.node(0).ns), Vec::<String>::new(), "{v}");
        assert!(c.reservations(0).is_empty(), "{v}");
    }
    let out = Invocation::new(plugin()).command("VERSION").run();
    let v = out.assert_ok();
    assert_eq!(v["supportedVersions"].as_array().map(Vec::len), Some(7));
}

/// DEL needs neither the netns nor the subnet file, and repeats.
#[test]
fn del_is_idempotent_without_netns() {
    let c = Cluster::new(Fabric::routed(2));
    let p = add(&c, 0, &conf(&c, 0, json!({})));
    let cf = p.conf().clone();
    let out = c
        .node(0)
        .invoke(&plugin(), "DEL", &cf, &p.container_id, p.ns.path(), "eth0")
        .unset("CNI_NETNS")
        .run();
    out.assert_ok_empty();
    std::fs::remove_file(&c.node(0).subnet_file).unwrap();
    p.run("DEL").assert_ok_empty();
    assert_eq!(host_veths(&c.node(0).ns), Vec::<String>::new());
    assert!(c.reservations(0).is_empty());
}

/// A failure after allocation (a runDir under a file) rolls back the veth and the
/// reservation, and names the run dir.
#[test]
fn add_failure_after_allocation_rolls_back() {
    let c = Cluster::new(Fabric::routed(2));
    let node = c.node(0);
    let keep = add(&c, 0, &conf(&c, 0, json!({})));
    let veths = host_veths(&node.ns);
    let state = state_without_cursors(node);
    let bad_dir = node.subnet_file.join("run");
    let bad = conf(&c, 0, json!({"runDir": bad_dir}));
    let (pod, out) = node.try_add_pod(&plugin(), &bad, &unique_name("c"));
    let err = out
        .check_error_shape()
        .unwrap_or_else(|e| panic!("ADD with an unusable runDir: {e}\n{out}"));
    assert!(
        error_text(&err).contains(&bad_dir.display().to_string()),
        "{out}"
    );
    assert_eq!(host_veths(&node.ns), veths, "no veth left\n{out}");
    assert_eq!(state_without_cursors(node), state, "no reservation left");
    assert_eq!(pod.ns.link_names(), vec!["lo".to_string()]);
    keep.run("DEL").assert_ok_empty();
}

/// CHECK fails (105) naming the device when it is gone; the next ADD repairs the node and the
/// first pod's CHECK passes again.
#[test]
fn check_detects_a_missing_device_and_the_next_add_repairs_it() {
    let c = Cluster::new(Fabric::routed(2));
    let a = add(&c, 0, &conf(&c, 0, json!({})));
    a.run("CHECK").assert_ok_empty();
    c.node(0).ns.ip(&["link", "del", DEV4]);
    let out = a.run("CHECK");
    let err = out.assert_error(105);
    assert!(error_text(&err).contains(DEV4), "{out}");
    let b = add(&c, 0, &conf(&c, 0, json!({})));
    a.run("CHECK").assert_ok_empty();
    assert_eq!(vx_routes(&c, 0).len(), 1, "route via the new device");
    for p in [a, b] {
        p.run("DEL").assert_ok_empty();
    }
}

/// GC removes exactly the attachments not listed (veth and reservation), never the device.
#[test]
fn gc_removes_exactly_the_orphans() {
    let c = Cluster::new(Fabric::routed(2));
    let cf = conf(&c, 0, json!({}));
    let a = add(&c, 0, &cf);
    let b = add(&c, 0, &cf);
    let gc = with_attachments(&cf, &[(&a.container_id, "eth0")]);
    let gcv = Invocation::new(plugin())
        .command("GC")
        .stdin_json(&gc)
        .on(c.node(0).ns.path())
        .run();
    gcv.assert_ok_empty();
    let ips: Vec<String> = c.reservations(0).keys().cloned().collect();
    assert_eq!(ips, vec![first_ip(&a, true).to_string()]);
    assert_eq!(host_veths(&c.node(0).ns).len(), 1);
    assert!(device(&c.node(0).ns, DEV4).is_some());
    a.run("CHECK").assert_ok_empty();
    drop(b);
    a.run("DEL").assert_ok_empty();
}

/// STATUS: available on a fresh node (ADD makes the device), in both pod modes; a view entry
/// this node cannot serve is limited connectivity (51) naming it.
#[test]
fn status_is_available_on_a_fresh_node_in_both_pod_modes() {
    let c = Cluster::new(Fabric::routed(2));
    let status = |cf: &Value| {
        Invocation::new(plugin())
            .command("STATUS")
            .stdin_json(cf)
            .on(c.node(0).ns.path())
            .run()
    };
    status(&conf(&c, 0, json!({}))).assert_ok_empty();
    status(&conf(&c, 0, json!({"pods": "routed"}))).assert_ok_empty();
    assert!(
        device(&c.node(0).ns, ROUTED_DEV).is_none(),
        "STATUS made nothing"
    );
}

/// Bad configs, each on a fresh node: code 7 naming the key, and no change to the node.
#[test]
fn malformed_input_is_rejected_without_touching_the_node() {
    let c = Cluster::new(Fabric::routed(2));
    let node = c.node(0);
    let before = NodeSnapshot::take(node);
    for (extra, key) in [
        (json!({"pods": "ipvlan"}), "\"pods\""),
        (
            json!({"pods": "routed", "hostVethPrefix": "much-too-long"}),
            "hostVethPrefix",
        ),
        (json!({"pods": "routed", "ipam": {}}), "\"ipam\""),
        (json!({"vni": 0}), "\"vni\""),
        (json!({"vni": 16777216}), "\"vni\""),
        (json!({"port": 0}), "\"port\""),
        (json!({"device": "a-much-too-long-name"}), "\"device\""),
        (json!({"nodeIP": "10.99.9.9"}), "10.99.9.9"),
        (json!({"nodeIP": "fd00::1"}), "\"nodeIP\""),
        (json!({"directRouting": "yes"}), "directRouting"),
    ] {
        let (pod, out) = node.try_add_pod(&plugin(), &conf(&c, 0, extra.clone()), "c-bad");
        let err = out.assert_error(7);
        assert!(error_text(&err).contains(key), "{extra}: {out}");
        assert!(!error_text(&err).contains("Some("), "{out}");
        assert_eq!(pod.ns.link_names(), vec!["lo".to_string()], "{extra}");
        let after = NodeSnapshot::take(node);
        assert!(before == after, "{extra}: {}", before.diff(&after));
    }
}

/// A link that is not a vxlan device under the device's name is another owner's: ADD fails
/// with 104 naming it, leaves it as it was and rolls back the pod.
#[test]
fn a_foreign_device_with_the_device_name_is_refused_and_left_alone() {
    let c = Cluster::new(Fabric::routed(2));
    let node = c.node(0);
    node.ns.ip(&["link", "add", DEV4, "type", "bridge"]);
    let (pod, out) = node.try_add_pod(&plugin(), &conf(&c, 0, json!({})), "c-foreign");
    let err = out.assert_error(104);
    assert!(error_text(&err).contains(DEV4), "{out}");
    assert_eq!(
        node.ns.link(DEV4).and_then(|l| l.kind),
        Some("bridge".to_string())
    );
    assert_eq!(host_veths(&node.ns), Vec::<String>::new(), "{out}");
    assert!(c.reservations(0).is_empty());
    assert_eq!(pod.ns.link_names(), vec!["lo".to_string()]);
}

/// flannel's FLANNEL_MTU below the underlay's caps the device MTU (and the pods'); a
/// configured `mtu` is imposed on the device as given, in place.
#[test]
fn subnet_file_mtu_caps_the_device_and_a_configured_mtu_is_imposed() {
    let c = Cluster::new(Fabric::routed(2));
    let node = c.node(0);
    conformance::hostgw::write(
        &node.subnet_file,
        &conformance::hostgw::subnet_env(0, false, 1400),
    );
    let a = add(&c, 0, &conf(&c, 0, json!({})));
    let (before, _) = device(&node.ns, DEV4).unwrap();
    assert_eq!(before.mtu, 1400);
    assert_eq!(a.ns.link("eth0").unwrap().mtu, 1400);
    let b = add(&c, 0, &conf(&c, 0, json!({"mtu": 1300})));
    let (after, _) = device(&node.ns, DEV4).unwrap();
    assert_eq!(after.mtu, 1300);
    assert_eq!(after.ifindex, before.ifindex, "MTU corrected in place");
    assert_eq!(b.ns.link("eth0").unwrap().mtu, 1300);
    for p in [a, b] {
        p.run("DEL").assert_ok_empty();
    }
}

/// A node whose underlay address cannot be found (no default route, not in the view) still
/// wires pods (no device: the peers are skipped and reported), STATUS answers 51 saying to
/// set `nodeIP`; with `nodeIP` set, the device is made on that address.
#[test]
fn without_an_underlay_address_pods_are_wired_and_status_says_to_set_node_ip() {
    let c = Cluster::new(Fabric::single_l2(2));
    let node = c.node(0);
    conformance::hostgw::write(&node.peers_file, &c.peers(|j| j != 0).to_string());
    let cf = conf(&c, 0, json!({}));
    let (a, out) = node.try_add_pod(&plugin(), &cf, &unique_name("c"));
    assert!(out.success(), "{out}");
    assert!(out.stderr.contains("nodeIP"), "the skip is reported: {out}");
    assert!(device(&node.ns, DEV4).is_none());
    let status = Invocation::new(plugin())
        .command("STATUS")
        .stdin_json(&cf)
        .on(node.ns.path())
        .run();
    let err = status.assert_error(51);
    assert!(error_text(&err).contains("\"nodeIP\""), "{status}");
    let with_ip = conf(&c, 0, json!({"nodeIP": node.ip.to_string()}));
    let b = add(&c, 0, &with_ip);
    let (_, data) = device(&node.ns, DEV4).expect("device on the given address");
    assert_eq!(data["local"], json!(node.ip.to_string()));
    assert_eq!(vx_routes(&c, 0).len(), 1);
    a.run("DEL").assert_ok_empty();
    b.run("DEL").assert_ok_empty();
}

/// The state files in a node's runDir with their modification times.
fn run_state(c: &Cluster, i: usize) -> Vec<(std::path::PathBuf, std::time::SystemTime)> {
    let mut v: Vec<_> = std::fs::read_dir(&c.node(i).run_dir)
        .expect("runDir")
        .filter_map(|e| {
            let e = e.ok()?;
            Some((e.path(), e.metadata().ok()?.modified().ok()?))
        })
        .collect();
    v.sort();
    v
}

/// A view entry of a family the network has no pods of is skipped once, and the unchanged
/// view is not applied again by the next ADD (its state is not rewritten): the skip depends
/// on the config, not on the node. (It used to count as node-dependent, so every ADD took
/// the slow path under the lock and warned again.)
#[test]
fn an_unchanged_view_is_not_applied_again_despite_an_entry_of_a_family_the_network_lacks() {
    let c = Cluster::new(Fabric::routed(2));
    let mut view = c.peers(|_| true);
    if let Some(list) = view.as_array_mut() {
        list.push(json!({"nodeIP": "fd99:2::1", "podCIDR": pod_cidr6(1)}));
    }
    conformance::hostgw::write(&c.node(0).peers_file, &view.to_string());
    let cf = conf(&c, 0, json!({}));
    let (a, first) = c.node(0).try_add_pod(&plugin(), &cf, &unique_name("c"));
    assert!(first.success(), "{first}");
    assert!(first.stderr.contains("no IPv6 pods"), "{first}");
    let before = run_state(&c, 0);
    let texts: Vec<String> = before
        .iter()
        .filter_map(|(p, _)| std::fs::read_to_string(p).ok())
        .collect();
    assert!(
        texts.iter().any(|t| t.contains("twill-node-state")),
        "{texts:?}"
    );
    assert!(
        !texts.iter().any(|t| t.contains("fingerprint pending")),
        "fingerprint recorded: {texts:?}"
    );
    let (b, second) = c.node(0).try_add_pod(&plugin(), &cf, &unique_name("c"));
    assert!(second.success(), "{second}");
    assert!(
        !second.stderr.contains("skipped"),
        "not warned again: {second}"
    );
    assert_eq!(run_state(&c, 0), before, "state not rewritten");
    assert_eq!(fdb_of(&c.node(0).ns, DEV4).len(), 1);
    assert_eq!(vx_routes(&c, 0).len(), 1);
    for p in [a, b] {
        p.run("DEL").assert_ok_empty();
    }
}

/// Turning `directRouting` on for a network whose same-segment peer went through the tunnel:
/// the next ADD removes that peer's neighbour and FDB entry and routes it via its node IP;
/// turning it off again restores the tunnel entries. Traffic flows in both states.
#[test]
fn toggling_direct_routing_swaps_a_same_segment_peer_between_tunnel_and_direct_route() {
    let c = Cluster::new(Fabric::routed(3));
    let b = add(&c, 1, &conf(&c, 1, json!({})));
    let f = add(&c, 2, &conf(&c, 2, json!({})));
    let a = add(&c, 0, &conf(&c, 0, json!({})));
    assert_overlay_entries(&c, 0, &[1, 2]);
    let d = add(&c, 0, &conf(&c, 0, json!({"directRouting": true})));
    let routes = vx_routes(&c, 0);
    assert!(
        routes.contains(&(pod_cidr4(1), c.node(1).ip.to_string(), "eth0".into(), false)),
        "{routes:?}"
    );
    let fdb = fdb_of(&c.node(0).ns, DEV4);
    assert!(
        fdb.iter().all(|e| e.1 != IpAddr::V4(c.node(1).ip)),
        "tunnel FDB entry of the direct peer removed: {fdb:?}"
    );
    let neigh: Vec<IpAddr> = c
        .node(0)
        .ns
        .neighbours()
        .into_iter()
        .filter(|n| n.dev == DEV4)
        .map(|n| n.dst)
        .collect();
    assert!(!neigh.contains(&"10.244.2.0".parse().unwrap()), "{neigh:?}");
    assert!(ping(&a.ns, first_ip(&b, true)), "direct");
    let e = add(&c, 0, &conf(&c, 0, json!({})));
    assert_overlay_entries(&c, 0, &[1, 2]);
    assert!(ping(&a.ns, first_ip(&b, true)), "through the tunnel again");
    for p in [a, b, d, e, f] {
        p.run("DEL").assert_ok_empty();
    }
}

// ---------------------------------------------------------------------------------------------
// Routed pods (Calico's VXLAN mode)
// ---------------------------------------------------------------------------------------------

/// Node `i`'s config with routed pods.
fn rconf(c: &Cluster, i: usize) -> Value {
    conf(c, i, json!({"pods": "routed"}))
}

/// Asserts node `i` has no pod left: no host veth, no twill route but the overlay's and the
/// blackhole, no reservation.
fn assert_no_pod_left(c: &Cluster, i: usize) {
    let ns = &c.node(i).ns;
    assert_eq!(host_veths(ns), Vec::<String>::new(), "node {i}: host veths");
    let pod_routes: Vec<_> = vx_routes(c, i)
        .into_iter()
        .filter(|r| r.2.starts_with("twv"))
        .collect();
    assert!(pod_routes.is_empty(), "node {i}: pod routes {pod_routes:?}");
    assert!(c.reservations(i).is_empty(), "node {i}: reservations");
}

/// 3 nodes behind the router with routed pods: the device is Calico's (VNI 4096, port 4789,
/// `vxlan.twill`, learning off, MTU underlay - 50), each pod is a /32 at the device MTU
/// behind 169.254.1.1 and a host veth with MAC ee:ee:ee:ee:ee:ee, the own block is
/// blackholed, each node holds exactly the per-peer neighbour, FDB entry and route, and every
/// pod pings every other; DEL leaves the device and the blackhole, and nothing of the pods.
#[test]
fn routed_pods_reach_every_other_pod_across_the_router() {
    let c = Cluster::new(Fabric::routed(3));
    let pods: Vec<Pod> = (0..3).map(|i| add(&c, i, &rconf(&c, i))).collect();
    for (i, p) in pods.iter().enumerate() {
        let node = c.node(i);
        let (l, data) = device(&node.ns, ROUTED_DEV).expect("device");
        assert_eq!(data["id"], json!(4096), "VNI: {data}");
        assert_eq!(data["port"], json!(4789), "port: {data}");
        assert_eq!(data["local"], json!(node.ip.to_string()), "local: {data}");
        assert_eq!(data["learning"], json!(false), "learning off: {data}");
        assert_eq!(l.mtu, 1450, "underlay 1500 - 50");
        assert_eq!(
            node.ns.global_cidrs(ROUTED_DEV),
            vec![format!("10.244.{}.0/32", i + 1)]
        );
        assert!(node.ns.link("cni0").is_none(), "no bridge in routed mode");
        let eth0 = p.ns.link("eth0").unwrap();
        assert_eq!(eth0.mtu, 1450, "pod MTU = device MTU");
        let ip = first_ip(p, true);
        assert_eq!(p.ns.global_cidrs("eth0"), vec![format!("{ip}/32")]);
        let veths = host_veths(&node.ns);
        assert_eq!(veths.len(), 1, "{veths:?}");
        let host = node.ns.link(&veths[0]).unwrap();
        assert!(host.name.starts_with("twv"), "{}", host.name);
        assert_eq!(host.mac.as_deref(), Some("ee:ee:ee:ee:ee:ee"));
        assert_eq!(host.mtu, 1450);
        assert!(
            vx_routes(&c, i).contains(&(format!("{ip}"), String::new(), host.name.clone(), false)),
            "node {i}: host route to the pod: {:?}",
            vx_routes(&c, i)
        );
        assert_eq!(
            conformance::routed::blackholes(&node.ns),
            BTreeSet::from([pod_cidr4(i)]),
            "node {i}: own block blackholed"
        );
        let others: Vec<usize> = (0..3).filter(|j| *j != i).collect();
        assert_overlay_entries_on(&c, i, ROUTED_DEV, &others);
    }
    for a in &pods {
        for b in pods.iter().filter(|b| b.container_id != a.container_id) {
            let ip = first_ip(b, true);
            assert!(ping(&a.ns, ip), "{} -> {ip}", first_ip(a, true));
        }
    }
    for p in &pods {
        p.run("DEL").assert_ok_empty();
    }
    for i in 0..3 {
        assert!(
            device(&c.node(i).ns, ROUTED_DEV).is_some(),
            "DEL keeps the device"
        );
        assert_no_pod_left(&c, i);
    }
}

/// Routed pods: a 4 MiB TCP transfer across the router arrives whole; a DF ping of exactly
/// the pod MTU crosses, one byte more fails with "message too long".
#[test]
fn routed_pods_tcp_transfer_and_df_pings_at_exactly_the_pod_mtu() {
    let c = Cluster::new(Fabric::routed(2));
    let a = add(&c, 0, &rconf(&c, 0));
    let b = add(&c, 1, &rconf(&c, 1));
    let to = first_ip(&b, true);
    let size = 4 << 20;
    assert_eq!(tcp_transfer(&a.ns, &b.ns, to, size), size);
    let mtu = a.ns.link("eth0").unwrap().mtu;
    assert_eq!(mtu, 1450);
    let (ok, text) = df_ping(&a.ns, to, mtu - 28);
    assert!(ok, "DF ping of {mtu} bytes: {text}");
    let (ok, text) = df_ping(&a.ns, to, mtu - 27);
    assert!(
        !ok && text.contains("message too long"),
        "DF ping of {} bytes: {text}",
        mtu + 1
    );
    for p in [a, b] {
        p.run("DEL").assert_ok_empty();
    }
}

/// Routed pods: a peer that leaves the view loses its neighbour, FDB entry and route at the
/// next ADD and becomes unreachable; when it joins again, the next ADD makes it reachable.
#[test]
fn routed_pods_a_departed_peer_loses_its_entries_and_a_joining_peer_becomes_reachable() {
    let c = Cluster::new(Fabric::routed(3));
    let pods: Vec<Pod> = (0..3).map(|i| add(&c, i, &rconf(&c, i))).collect();
    let far = first_ip(&pods[2], true);
    assert!(ping(&pods[0].ns, far));
    let node = c.node(0);
    conformance::hostgw::write(&node.peers_file, &c.peers(|j| j != 2).to_string());
    let p = add(&c, 0, &rconf(&c, 0));
    assert_overlay_entries_on(&c, 0, ROUTED_DEV, &[1]);
    assert!(no_reply(&pods[0].ns, far), "a departed peer is unreachable");
    conformance::hostgw::write(&node.peers_file, &c.peers(|_| true).to_string());
    let q = add(&c, 0, &rconf(&c, 0));
    assert_overlay_entries_on(&c, 0, ROUTED_DEV, &[1, 2]);
    assert!(ping(&pods[0].ns, far), "a joining peer is reachable");
    for p in pods.into_iter().chain([p, q]) {
        p.run("DEL").assert_ok_empty();
    }
}

/// Routed pods, every CNI version: ADD answers in that version's shape with a /32, CHECK
/// (0.4.0+) passes, DEL twice succeeds (also without the netns) and leaves no veth, host
/// route nor reservation; STATUS is available.
#[test]
fn routed_pods_every_version_adds_checks_and_deletes() {
    let c = Cluster::new(Fabric::routed(2));
    for v in conformance::CNI_VERSIONS {
        let cf = conf_v(&c, 0, v, json!({"pods": "routed"}));
        let p = add(&c, 0, &cf);
        assert_eq!(p.result["cniVersion"], json!(v), "{v}");
        let ip = result_ips(&p.result);
        assert!(
            ip.first()
                .is_some_and(|ip| conformance::hostgw::in_cidr(ip, &pod_cidr4(0))),
            "{v}: {}",
            p.result
        );
        if conformance::hostgw::version_at_least(v, "0.4.0") {
            p.run("CHECK").assert_ok_empty();
        }
        let out = c
            .node(0)
            .invoke(&plugin(), "DEL", &cf, &p.container_id, p.ns.path(), "eth0")
            .unset("CNI_NETNS")
            .run();
        out.assert_ok_empty();
        p.run("DEL").assert_ok_empty();
        assert_no_pod_left(&c, 0);
    }
    Invocation::new(plugin())
        .command("STATUS")
        .stdin_json(&rconf(&c, 0))
        .on(c.node(0).ns.path())
        .run()
        .assert_ok_empty();
}

/// Routed pods: CHECK fails (105) naming what is gone (the host route to the pod, then the
/// device); the next ADD repairs the device and CHECK of the untouched pod passes again.
#[test]
fn routed_pods_check_detects_a_missing_host_route_and_a_missing_device() {
    let c = Cluster::new(Fabric::routed(2));
    let a = add(&c, 0, &rconf(&c, 0));
    a.run("CHECK").assert_ok_empty();
    let ns = &c.node(0).ns;
    ns.ip(&["link", "del", ROUTED_DEV]);
    let out = a.run("CHECK");
    let err = out.assert_error(105);
    assert!(error_text(&err).contains(ROUTED_DEV), "{out}");
    let b = add(&c, 0, &rconf(&c, 0));
    a.run("CHECK").assert_ok_empty();
    let ip = first_ip(&b, true);
    ns.ip(&["route", "del", &format!("{ip}/32")]);
    let out = b.run("CHECK");
    let err = out.assert_error(105);
    assert!(error_text(&err).contains(&ip.to_string()), "{out}");
    for p in [a, b] {
        p.run("DEL").assert_ok_empty();
    }
    assert_no_pod_left(&c, 0);
}

/// Routed pods: a failure after allocation rolls back the veth and the reservation; GC
/// removes exactly the attachments not listed (veth, host route, reservation), never the
/// device nor the blackhole.
#[test]
fn routed_pods_roll_back_a_failed_add_and_gc_removes_exactly_the_orphans() {
    let c = Cluster::new(Fabric::routed(2));
    let node = c.node(0);
    let cf = rconf(&c, 0);
    let a = add(&c, 0, &cf);
    let veths = host_veths(&node.ns);
    let state = state_without_cursors(node);
    let bad_dir = node.subnet_file.join("run");
    let bad = conf(&c, 0, json!({"pods": "routed", "runDir": bad_dir}));
    let (pod, out) = node.try_add_pod(&plugin(), &bad, &unique_name("c"));
    out.check_error_shape()
        .unwrap_or_else(|e| panic!("ADD with an unusable runDir: {e}\n{out}"));
    assert_eq!(host_veths(&node.ns), veths, "no veth left\n{out}");
    assert_eq!(state_without_cursors(node), state, "no reservation left");
    assert_eq!(pod.ns.link_names(), vec!["lo".to_string()]);

    let b = add(&c, 0, &cf);
    let gone = first_ip(&b, true);
    let gc = with_attachments(&cf, &[(&a.container_id, "eth0")]);
    Invocation::new(plugin())
        .command("GC")
        .stdin_json(&gc)
        .on(node.ns.path())
        .run()
        .assert_ok_empty();
    let ips: Vec<String> = c.reservations(0).keys().cloned().collect();
    assert_eq!(ips, vec![first_ip(&a, true).to_string()]);
    assert_eq!(host_veths(&node.ns).len(), 1);
    assert!(
        !vx_routes(&c, 0).iter().any(|r| r.0 == gone.to_string()),
        "the orphan's host route went with its veth"
    );
    assert!(device(&node.ns, ROUTED_DEV).is_some());
    assert_eq!(
        conformance::routed::blackholes(&node.ns),
        BTreeSet::from([pod_cidr4(0)])
    );
    a.run("CHECK").assert_ok_empty();
    drop(b);
    a.run("DEL").assert_ok_empty();
    assert_no_pod_left(&c, 0);
}

/// With the view unchanged, the next ADD still sees (in its one-dump-per-kind fast path) an
/// overlay object deleted by hand and makes it again: a peer's neighbour, its FDB entry, its
/// route, the own block's blackhole.
#[test]
fn an_unchanged_view_still_repairs_each_kind_of_overlay_object_deleted_by_hand() {
    let c = Cluster::new(Fabric::routed(3));
    let mut pods = vec![add(&c, 0, &rconf(&c, 0))];
    let ns = &c.node(0).ns;
    let gw1 = pod_cidr4(1).split('/').next().unwrap().to_string();
    let mac1 = fdb_of(ns, ROUTED_DEV)
        .into_iter()
        .find(|(_, dst, _)| *dst == IpAddr::V4(c.node(1).ip))
        .expect("node 1's FDB entry")
        .0;
    let node1 = c.node(1).ip.to_string();
    let (own, route2) = (pod_cidr4(0), pod_cidr4(2));
    let whole = |c: &Cluster| {
        let (n, f, r, b) = overlay_state(c, 0);
        (n.len(), f.len(), r.len(), b.len())
    };
    assert_eq!(whole(&c), (2, 2, 2, 1));
    let cuts: [(&str, Vec<&str>); 4] = [
        ("ip", vec!["neigh", "del", &gw1, "dev", ROUTED_DEV]),
        (
            "bridge",
            vec![
                "fdb", "del", &mac1, "dev", ROUTED_DEV, "dst", &node1, "self",
            ],
        ),
        ("ip", vec!["route", "del", &route2]),
        ("ip", vec!["route", "del", "blackhole", &own]),
    ];
    for (tool, args) in &cuts {
        if *tool == "ip" {
            ns.ip(args);
        } else {
            ns.exec_ok(&[&[*tool][..], &args[..]].concat());
        }
        assert_ne!(whole(&c), (2, 2, 2, 1), "{tool} {args:?} took effect");
        pods.push(add(&c, 0, &rconf(&c, 0)));
        assert_eq!(whole(&c), (2, 2, 2, 1), "{tool} {args:?} repaired");
    }
    for p in pods {
        p.run("DEL").assert_ok_empty();
    }
}

/// Node `i`'s overlay objects on the routed device: neighbours, FDB remotes, routes through
/// it, twill blackholes.
fn overlay_state(
    c: &Cluster,
    i: usize,
) -> (
    BTreeSet<IpAddr>,
    BTreeSet<IpAddr>,
    BTreeSet<String>,
    BTreeSet<String>,
) {
    let ns = &c.node(i).ns;
    let n = ns
        .neighbours()
        .into_iter()
        .filter(|n| n.dev == ROUTED_DEV)
        .map(|n| n.dst)
        .collect();
    let f = fdb_of(ns, ROUTED_DEV).into_iter().map(|e| e.1).collect();
    let r = vx_routes(c, i)
        .into_iter()
        .filter(|r| r.2 == ROUTED_DEV)
        .map(|r| r.0)
        .collect();
    (n, f, r, conformance::routed::blackholes(ns))
}
