//! Black-box conformance of twilld, the node daemon: three nodes on one L2 fabric share one
//! view file listing every node; each node has its own conf dir holding its bridge-host-gw
//! network, and twilld runs inside the node's namespace. Every wait is bounded.

use conformance::hostgw::*;
use conformance::twilld::{self, Daemon, replace_file, wait_until, write_conf};
use conformance::{Fabric, Node, ping};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// How soon a change must be on the node (the target).
const WITHIN: Duration = Duration::from_secs(1);

fn route(dst: &str, gw: &str) -> (String, String) {
    (dst.to_string(), gw.to_string())
}

/// A 3-node cluster whose nodes each have the network in their conf dir (`pods.conf`).
fn cluster() -> Cluster {
    let c = Cluster::new(Fabric::single_l2(3));
    for i in 0..c.len() {
        write_conf(c.node(i), "10-pods.conf", &c.conf(i));
    }
    c
}

/// Writes `view` to every node's peers file, replaced by rename as a view writer does.
fn set_view(c: &Cluster, view: &Value) {
    for i in 0..c.len() {
        replace_file(&c.node(i).peers_file, &view.to_string());
    }
}

/// Waits (bounded by `limit`) until node `i`'s twill routes are `want`; panics saying what
/// they were otherwise. Returns how long it took.
fn wait_routes(
    c: &Cluster,
    i: usize,
    want: &BTreeSet<(String, String)>,
    limit: Duration,
) -> Duration {
    let t0 = Instant::now();
    let ok = wait_until(limit, || peer_routes(&c.node(i).ns) == *want);
    assert!(
        ok,
        "node {i}: twill routes not {want:?} within {limit:?}: {:?}",
        peer_routes(&c.node(i).ns)
    );
    t0.elapsed()
}

fn sync_ok(node: &Node) {
    let out = twilld::once(node, "sync");
    assert!(
        out.status.success(),
        "twilld sync failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sync_on_nodes_without_pods_routes_to_every_peer_and_not_to_itself() {
    let c = cluster();
    for i in 0..c.len() {
        sync_ok(c.node(i));
    }
    for i in 0..c.len() {
        let got = peer_routes(&c.node(i).ns);
        assert_eq!(got, c.expected_peer_routes(i), "node {i}");
        assert!(
            !got.iter().any(|(dst, _)| *dst == pod_cidr4(i)),
            "node {i} routes its own subnet: {got:?}"
        );
    }
    let out = twilld::once(c.node(0), "check");
    assert!(
        out.status.success(),
        "check after sync must find no drift: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_node_joining_the_view_is_routed_within_a_second_and_pods_on_both_nodes_reach_each_other() {
    let c = cluster();
    set_view(&c, &c.peers(|i| i < 2));
    let p0 = c.add_pod(0);
    let p2 = c.add_pod(2);
    let daemons: Vec<Daemon> = (0..c.len()).map(|i| Daemon::start(c.node(i))).collect();
    wait_routes(
        &c,
        0,
        &BTreeSet::from([route(&pod_cidr4(1), "10.99.0.2")]),
        WITHIN,
    );

    set_view(&c, &c.peers(|_| true));
    for i in [0, 2] {
        let took = wait_routes(&c, i, &c.expected_peer_routes(i), WITHIN);
        assert!(took <= WITHIN, "node {i} took {took:?}");
    }
    let (ip0, ip2) = (p0.ip().expect("pod 0 ip"), p2.ip().expect("pod 2 ip"));
    assert!(
        ping(&p0.ns, ip2),
        "pod on node 0 cannot reach the pod on node 2"
    );
    assert!(
        ping(&p2.ns, ip0),
        "pod on node 2 cannot reach the pod on node 0"
    );
    let log = daemons[0].log();
    assert!(
        log.contains(&format!("installed route {} via 10.99.0.3", pod_cidr4(2))),
        "the change is logged:\n{log}"
    );
}

#[test]
fn a_node_leaving_the_view_has_its_route_removed() {
    let c = cluster();
    let d = Daemon::start(c.node(0));
    wait_routes(&c, 0, &c.expected_peer_routes(0), WITHIN);
    set_view(&c, &c.peers(|i| i != 2));
    wait_routes(
        &c,
        0,
        &BTreeSet::from([route(&pod_cidr4(1), "10.99.0.2")]),
        WITHIN,
    );
    d.wait_log(
        &format!("removed route {} via 10.99.0.3", pod_cidr4(2)),
        WITHIN,
    );
}

#[test]
fn routes_flushed_by_hand_come_back_within_a_second() {
    let c = cluster();
    let _d = Daemon::start(c.node(0));
    let want = c.expected_peer_routes(0);
    wait_routes(&c, 0, &want, WITHIN);
    c.node(0).ns.ip(&["route", "flush", "proto", TWILL_PROTO]);
    let took = wait_routes(&c, 0, &want, WITHIN);
    assert!(took <= WITHIN);
    // Deleting a single route is noticed as well.
    c.node(0).ns.ip(&["route", "del", &pod_cidr4(1)]);
    wait_routes(&c, 0, &want, WITHIN);
}

#[test]
fn an_uplink_bounce_is_repaired() {
    let c = cluster();
    let _d = Daemon::start(c.node(0));
    let want = c.expected_peer_routes(0);
    wait_routes(&c, 0, &want, WITHIN);
    let ns = &c.node(0).ns;
    ns.ip(&["link", "set", "eth0", "down"]);
    assert!(
        wait_until(WITHIN, || peer_routes(ns).is_empty()),
        "the kernel keeps routes via a down uplink: {:?}",
        peer_routes(ns)
    );
    ns.ip(&["link", "set", "eth0", "up"]);
    wait_routes(&c, 0, &want, WITHIN);
}

/// The daemon's repair on whatever kernel runs it: the VM test runs this one on Debian's stock
/// cloud kernel under software emulation, hence bounds far above the 1 s target the tests above
/// hold on this machine. Routes flushed by hand and an uplink bounce are both put back.
#[test]
fn routes_lost_to_a_flush_or_an_uplink_bounce_are_repaired_on_this_kernel() {
    let slow = Duration::from_secs(30);
    let c = cluster();
    let _d = Daemon::start(c.node(0));
    let want = c.expected_peer_routes(0);
    wait_routes(&c, 0, &want, slow);
    let ns = &c.node(0).ns;
    ns.ip(&["route", "flush", "proto", TWILL_PROTO]);
    wait_routes(&c, 0, &want, slow);
    ns.ip(&["link", "set", "eth0", "down"]);
    assert!(
        wait_until(slow, || peer_routes(ns).is_empty()),
        "the kernel keeps routes via a down uplink: {:?}",
        peer_routes(ns)
    );
    ns.ip(&["link", "set", "eth0", "up"]);
    wait_routes(&c, 0, &want, slow);
}

#[test]
fn a_broken_view_file_is_survived_then_recovered_from() {
    let c = cluster();
    let mut d = Daemon::start(c.node(0));
    let want = c.expected_peer_routes(0);
    wait_routes(&c, 0, &want, WITHIN);
    replace_file(&c.node(0).peers_file, "[{\"nodeIP\": ");
    d.wait_log("keeping the node state last applied", WITHIN);
    assert_eq!(peer_routes(&c.node(0).ns), want, "last good state kept");
    assert!(
        d.wait_exit(Duration::ZERO).is_none(),
        "twilld died:\n{}",
        d.log()
    );
    replace_file(&c.node(0).peers_file, &c.peers(|i| i != 1).to_string());
    wait_routes(
        &c,
        0,
        &BTreeSet::from([route(&pod_cidr4(2), "10.99.0.3")]),
        WITHIN,
    );
}

#[test]
fn a_second_instance_in_the_same_namespace_is_refused() {
    let c = cluster();
    let mut first = Daemon::start(c.node(0));
    let mut second = Daemon::spawn(c.node(0));
    let status = second
        .wait_exit(Duration::from_secs(5))
        .expect("the second twilld must exit");
    assert!(!status.success(), "second instance exited 0");
    assert!(
        second
            .log()
            .contains("already running in this network namespace"),
        "{}",
        second.log()
    );
    assert!(
        first.wait_exit(Duration::ZERO).is_none(),
        "the first one must keep running"
    );
    // Another namespace is another instance.
    let _other = Daemon::start(c.node(1));
}

#[test]
fn sigterm_exits_zero_at_once_and_leaves_the_routes() {
    let c = cluster();
    let mut d = Daemon::start(c.node(0));
    let want = c.expected_peer_routes(0);
    wait_routes(&c, 0, &want, WITHIN);
    d.signal(Signal::SIGTERM);
    let status = d
        .wait_exit(WITHIN)
        .expect("twilld exits within a second of SIGTERM");
    assert!(status.success(), "exit status {status}");
    assert_eq!(peer_routes(&c.node(0).ns), want, "routes left in place");
    let mut d = Daemon::start(c.node(0));
    d.signal(Signal::SIGINT);
    let status = d
        .wait_exit(WITHIN)
        .expect("twilld exits within a second of SIGINT");
    assert!(status.success(), "exit status {status}");
}

#[test]
fn an_idle_daemon_uses_no_cpu() {
    let c = cluster();
    let d = Daemon::start(c.node(0));
    wait_routes(&c, 0, &c.expected_peer_routes(0), WITHIN);
    // Let the pass started by its own changes finish.
    std::thread::sleep(Duration::from_millis(300));
    let before = d.cpu_ticks();
    std::thread::sleep(Duration::from_secs(3));
    let used = d.cpu_ticks() - before;
    // A clock tick is 10 ms: at most one tick in 3 s is below 0.4% of a core.
    assert!(used <= 1, "idle twilld used {used} ticks in 3 s");
}

#[test]
fn check_reports_drift_made_by_hand_and_changes_nothing() {
    let c = cluster();
    let mut conf = c.conf(0);
    conf["ipMasq"] = Value::Bool(true);
    write_conf(c.node(0), "10-pods.conf", &conf);
    let node = c.node(0);
    sync_ok(node);
    node.ns.ip(&["route", "del", &pod_cidr4(2)]);
    let table = format!("twill-masq-{}", c.net);
    node.ns.exec_ok(&["nft", "delete", "table", "inet", &table]);
    let before = peer_routes(&node.ns);
    let out = twilld::once(node, "check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "check exits 1 on drift: {text}");
    assert!(
        text.contains(&format!("missing route {} via 10.99.0.3", pod_cidr4(2))),
        "{text}"
    );
    assert!(
        text.contains(&table),
        "the missing masquerade table is named: {text}"
    );
    assert_eq!(peer_routes(&node.ns), before, "check changed the routes");
    assert!(
        !node.ns.nft_ruleset().contains(&table),
        "check made the table"
    );
    sync_ok(node);
    assert_eq!(twilld::once(node, "check").status.code(), Some(0));
}

#[test]
fn a_masquerade_table_deleted_by_hand_is_restored_by_the_daemon() {
    let c = cluster();
    let mut conf = c.conf(0);
    conf["ipMasq"] = Value::Bool(true);
    write_conf(c.node(0), "10-pods.conf", &conf);
    let d = Daemon::start(c.node(0));
    let ns = &c.node(0).ns;
    let table = format!("twill-masq-{}", c.net);
    assert!(wait_until(WITHIN, || ns.nft_ruleset().contains(&table)));
    ns.exec_ok(&["nft", "delete", "table", "inet", &table]);
    assert!(
        wait_until(WITHIN, || ns.nft_ruleset().contains(&table)),
        "table not restored; log:\n{}",
        d.log()
    );
}

#[test]
fn a_network_removed_from_the_conf_dir_loses_its_routes_and_masquerade_but_others_keep_theirs() {
    let c = cluster();
    let node = c.node(0);
    let mut gone = c.conf(0);
    gone["ipMasq"] = Value::Bool(true);
    let gone_file = write_conf(node, "10-pods.conf", &gone);
    // A second network on the same node, sharing one destination (node 1's subnet) with the
    // first: removing the first must not take it.
    let other_view = node.peers_file.with_file_name("other-peers.json");
    replace_file(&other_view, &c.peers(|i| i == 1).to_string());
    let mut other = c.conf(0);
    other["name"] = Value::String(format!("{}-b", c.net));
    other["bridge"] = Value::String("cni1".into());
    other["peersFile"] = Value::String(other_view.display().to_string());
    write_conf(node, "20-other.conf", &other);
    let d = Daemon::start(node);
    wait_routes(&c, 0, &c.expected_peer_routes(0), WITHIN);
    let table = format!("twill-masq-{}", c.net);
    assert!(wait_until(WITHIN, || node
        .ns
        .nft_ruleset()
        .contains(&table)));

    std::fs::remove_file(&gone_file).expect("remove the conf file");
    wait_routes(
        &c,
        0,
        &BTreeSet::from([route(&pod_cidr4(1), "10.99.0.2")]),
        WITHIN,
    );
    assert!(
        wait_until(WITHIN, || !node.ns.nft_ruleset().contains(&table)),
        "masquerade table of the removed network left:\n{}",
        node.ns.nft_ruleset()
    );
    d.wait_log("no longer a twill network of the conf dir", WITHIN);
}

#[test]
fn a_network_added_to_the_conf_dir_is_picked_up() {
    let c = cluster();
    let node = c.node(0);
    std::fs::remove_file(twilld::conf_dir(node).join("10-pods.conf")).expect("rm conf");
    let _d = Daemon::start(node);
    assert!(peer_routes(&node.ns).is_empty());
    write_conf(node, "10-pods.conf", &c.conf(0));
    wait_routes(&c, 0, &c.expected_peer_routes(0), WITHIN);
}

#[test]
fn a_standing_problem_is_logged_once_and_again_after_sighup() {
    let c = cluster();
    let node = c.node(0);
    let d = Daemon::start(node);
    wait_routes(&c, 0, &c.expected_peer_routes(0), WITHIN);
    replace_file(&node.peers_file, "not json");
    let line = "keeping the node state last applied";
    d.wait_log(line, WITHIN);
    // More passes (a link event each) do not repeat it.
    for _ in 0..3 {
        node.ns.ip(&["link", "set", "lo", "mtu", "65000"]);
        node.ns.ip(&["link", "set", "lo", "mtu", "65536"]);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(d.log().matches(line).count(), 1, "{}", d.log());
    d.signal(Signal::SIGHUP);
    d.wait_log("SIGHUP: re-reading", WITHIN);
    assert!(
        wait_until(WITHIN, || d.log().matches(line).count() == 2),
        "{}",
        d.log()
    );
}

#[test]
fn sync_with_a_broken_view_exits_non_zero_naming_the_file_and_keeps_the_routes() {
    let c = cluster();
    let node = c.node(0);
    sync_ok(node);
    replace_file(&node.peers_file, "[{\"nodeIP\": 1}");
    let out = twilld::once(node, "sync");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&node.peers_file.display().to_string()),
        "{err}"
    );
    assert_eq!(peer_routes(&node.ns), c.expected_peer_routes(0));
}

#[test]
fn a_network_of_a_type_twilld_does_not_know_is_skipped_with_a_log_line() {
    let c = cluster();
    let node = c.node(0);
    let mut foreign = c.conf(0);
    foreign["name"] = Value::String("foreign".into());
    foreign["type"] = Value::String("bridge".into());
    write_conf(node, "05-foreign.conf", &foreign);
    let d = Daemon::start(node);
    wait_routes(&c, 0, &c.expected_peer_routes(0), WITHIN);
    d.wait_log("network \"foreign\"", WITHIN);
    assert!(d.log().contains("skipped"), "{}", d.log());
}

#[test]
fn a_network_whose_type_changes_away_from_twill_is_reported_by_check_and_cleaned_by_sync() {
    let c = cluster();
    let node = c.node(0);
    sync_ok(node);
    assert_eq!(peer_routes(&node.ns), c.expected_peer_routes(0));
    let mut conf = c.conf(0);
    conf["type"] = Value::String("bridge".into());
    write_conf(node, "10-pods.conf", &conf);
    let out = twilld::once(node, "check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("no longer a twill network"), "{text}");
    assert_eq!(
        peer_routes(&node.ns),
        c.expected_peer_routes(0),
        "check changed nothing"
    );
    sync_ok(node);
    assert_eq!(peer_routes(&node.ns), BTreeSet::new());
    assert_eq!(twilld::once(node, "check").status.code(), Some(0));
}

#[test]
fn a_foreign_route_on_a_peer_subnet_is_left_alone_and_replaced_once_its_owner_removes_it() {
    let c = cluster();
    let node = c.node(0);
    let dst = pod_cidr4(2);
    node.ns
        .ip(&["route", "add", &dst, "via", "10.99.0.2", "proto", "static"]);
    let d = Daemon::start(node);
    wait_routes(
        &c,
        0,
        &BTreeSet::from([route(&pod_cidr4(1), "10.99.0.2")]),
        WITHIN,
    );
    d.wait_log("left alone", WITHIN);
    node.ns.ip(&["route", "del", &dst, "proto", "static"]);
    wait_routes(&c, 0, &c.expected_peer_routes(0), WITHIN);
}

#[test]
fn the_twill_entry_of_a_conflist_is_kept() {
    let c = cluster();
    let node = c.node(0);
    std::fs::remove_file(twilld::conf_dir(node).join("10-pods.conf")).expect("rm conf");
    let mut entry = c.conf(0);
    let obj = entry.as_object_mut().expect("object");
    obj.remove("name");
    obj.remove("cniVersion");
    let list = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": c.net,
        "plugins": [entry, {"type": "portmap", "capabilities": {"portMappings": true}}],
    });
    write_conf(node, "10-pods.conflist", &list);
    sync_ok(node);
    assert_eq!(peer_routes(&node.ns), c.expected_peer_routes(0));
}

/// The twill forward rules in the `inet filter forward` chain of `node`.
fn forward_rule_count(node: &Node) -> usize {
    node.ns
        .exec_ok(&["nft", "list", "chain", "inet", "filter", "forward"])
        .matches("twill forward ")
        .count()
}

#[test]
fn forward_rules_deleted_by_hand_on_a_policy_drop_node_are_restored_by_the_daemon() {
    let c = cluster();
    let node = c.node(0);
    node.ns.nft_load(
        "table inet filter {\n chain forward {\n  type filter hook forward priority 0; \
         policy drop;\n }\n}",
    );
    let d = Daemon::start(node);
    assert!(wait_until(WITHIN, || forward_rule_count(node) > 0));
    let n = forward_rule_count(node);
    node.ns
        .exec_ok(&["nft", "flush", "chain", "inet", "filter", "forward"]);
    assert!(
        wait_until(WITHIN, || forward_rule_count(node) == n),
        "forward rules not restored; log:\n{}",
        d.log()
    );
    let out = twilld::once(node, "check");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_conf_dir_created_after_the_start_is_watched_and_its_network_kept() {
    let c = cluster();
    let node = c.node(0);
    let dir = twilld::conf_dir(node);
    std::fs::remove_dir_all(&dir).expect("rm conf dir");
    let d = Daemon::start(node);
    d.wait_log("cannot read the conf dir", WITHIN);
    write_conf(node, "10-pods.conf", &c.conf(0));
    wait_routes(&c, 0, &c.expected_peer_routes(0), WITHIN);
}

#[test]
fn pod_adds_racing_the_daemon_over_changing_views_leave_the_newest_view_routed() {
    let c = cluster();
    let _d = Daemon::start(c.node(0));
    let views = [c.peers(|i| i != 2), c.peers(|i| i != 1), c.peers(|_| true)];
    let pods = std::thread::scope(|s| {
        let adder = s.spawn(|| (0..6).map(|_| c.add_pod(0)).collect::<Vec<_>>());
        for round in 0..9 {
            replace_file(&c.node(0).peers_file, &views[round % 3].to_string());
            std::thread::sleep(Duration::from_millis(40));
        }
        adder.join().expect("the ADD thread")
    });
    assert_eq!(pods.len(), 6);
    // The last view written lists every node.
    wait_routes(&c, 0, &c.expected_peer_routes(0), WITHIN);
    let out = twilld::once(c.node(0), "check");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A vxlan network on 3 nodes behind a router, twilld on node 0 and no pod anywhere: twilld
/// makes the device and, for a peer joining the view, its neighbour, FDB entry and route; an
/// FDB entry deleted by hand comes back, and so does the device with its entries.
#[test]
fn a_vxlan_network_gets_a_joining_peers_entries_and_a_deleted_fdb_entry_back_without_pods() {
    use conformance::vxlan::{DEV4, conf, fdb_of};
    let c = Cluster::new(Fabric::routed(3));
    for i in 0..c.len() {
        write_conf(
            c.node(i),
            "10-pods.conf",
            &conf(&c, i, serde_json::json!({})),
        );
    }
    set_view(&c, &c.peers(|i| i < 2));
    let ns = &c.node(0).ns;
    let fdb_dsts = || -> BTreeSet<String> {
        fdb_of(ns, DEV4)
            .into_iter()
            .map(|(_, dst, _)| dst.to_string())
            .collect()
    };
    let entries = || {
        let neigh: BTreeSet<String> = ns
            .neighbours()
            .into_iter()
            .filter(|n| n.dev == DEV4)
            .map(|n| n.dst.to_string())
            .collect();
        let routes: BTreeSet<String> = ns
            .main_routes()
            .into_iter()
            .filter(|r| r.dev.as_deref() == Some(DEV4) && r.protocol.as_deref() == Some("116"))
            .map(|r| r.dst)
            .collect();
        (fdb_dsts(), neigh, routes)
    };
    let ip = |j: usize| c.node(j).ip.to_string();
    let gw = |j: usize| format!("10.244.{}.0", j + 1);
    let _d = Daemon::start(c.node(0));
    let one = (
        BTreeSet::from([ip(1)]),
        BTreeSet::from([gw(1)]),
        BTreeSet::from([pod_cidr4(1)]),
    );
    assert!(
        wait_until(Duration::from_secs(5), || entries() == one),
        "node 0 without pods: {:?}",
        entries()
    );
    set_view(&c, &c.peers(|_| true));
    let both = (
        BTreeSet::from([ip(1), ip(2)]),
        BTreeSet::from([gw(1), gw(2)]),
        BTreeSet::from([pod_cidr4(1), pod_cidr4(2)]),
    );
    assert!(
        wait_until(WITHIN, || entries() == both),
        "the joining node 2: {:?}",
        entries()
    );
    let (mac, dst, _) = fdb_of(ns, DEV4)
        .into_iter()
        .find(|(_, dst, _)| dst.to_string() == ip(2))
        .expect("node 2's FDB entry");
    ns.exec_ok(&[
        "bridge",
        "fdb",
        "del",
        &mac,
        "dev",
        DEV4,
        "dst",
        &dst.to_string(),
        "self",
    ]);
    assert!(!fdb_dsts().contains(&ip(2)), "deleted by hand");
    assert!(
        wait_until(WITHIN, || entries() == both),
        "the deleted FDB entry is back: {:?}",
        entries()
    );
    // A deleted device is made again before the next reconcile, with its entries.
    ns.ip(&["link", "del", DEV4]);
    assert!(
        wait_until(WITHIN, || entries() == both),
        "the deleted device and its entries are back: {:?}",
        entries()
    );
}
