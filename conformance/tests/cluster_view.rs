//! Black-box conformance of the cluster view and its reconcile in `bridge-host-gw`: the kernel
//! is the truth (lost routes are repaired by the next ADD), an older view never overwrites a
//! newer one, bad entries are skipped (ADD goes on, STATUS answers 51 naming them), this node
//! is recognised in the view, networks sharing a destination do not undo each other, state of
//! dead node namespaces is pruned, and CHECK does not fail on node-level drift.
//!
//! Every test builds its own fabric (`conformance::hostgw::Cluster`: node `i` is `10.99.0.(i+1)`
//! with pods in `10.244.(i+1).0/24`); nothing touches the root namespace.

use conformance::hostgw::*;
use conformance::strace::Traced;
use conformance::{Fabric, Netns, Pod, TempDir, unique_name};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

/// STATUS: limited connectivity (CNI SPEC "Error").
const LIMITED_CONNECTIVITY: u64 = 51;

fn route(dst: &str, gw: &str) -> (String, String) {
    (dst.to_string(), gw.to_string())
}

/// Node 0's config with the view given inline instead of the peers file.
fn with_inline_view(c: &Cluster, view: Value) -> Value {
    let mut conf = c.conf(0);
    let obj = conf.as_object_mut().expect("object");
    obj.remove("peersFile");
    obj.insert("peers".into(), view);
    conf
}

/// Names of the state files (`<network>.peers.<netns>`) in a run dir.
fn state_files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.contains(".peers.") && !n.ends_with(".lock"))
                .collect()
        })
        .unwrap_or_default()
}

fn reversed(list: &Value) -> Value {
    Value::Array(
        list.as_array()
            .expect("list")
            .iter()
            .rev()
            .cloned()
            .collect(),
    )
}

fn del_all(pods: &[&Pod]) {
    for p in pods {
        p.run("DEL").assert_ok_empty();
    }
}

/// The kernel drops routes on an `ip route flush`, an address flush and a link bounce; the view
/// did not change, and the next ADD puts every peer route back.
#[test]
fn add_repairs_peer_routes_the_kernel_lost_while_the_view_stayed_the_same() {
    let c = Cluster::new(Fabric::single_l2_dual(3));
    let node = c.node(0);
    let want = c.expected_peer_routes(0);
    let mut pods = vec![c.add_pod(0)];
    assert_eq!(peer_routes(&node.ns), want);

    let losses: [(&str, &dyn Fn()); 3] = [
        ("ip route flush proto 116", &|| {
            for fam in ["-4", "-6"] {
                node.ns.ip(&[fam, "route", "flush", "proto", TWILL_PROTO]);
            }
        }),
        ("address flush on the uplink", &|| {
            node.ns.ip(&["addr", "flush", "dev", "eth0"]);
            node.ns.ip(&["addr", "add", "10.99.0.1/24", "dev", "eth0"]);
            node.ns
                .ip(&["addr", "add", "fd99::1/64", "dev", "eth0", "nodad"]);
        }),
        ("uplink bounce", &|| {
            node.ns.ip(&["link", "set", "eth0", "down"]);
            node.ns.ip(&["link", "set", "eth0", "up"]);
            // IPv6 addresses do not survive a link down (keep_addr_on_down=0): the node's
            // network setup puts its address back, as it would on a real node.
            node.ns
                .ip(&["addr", "replace", "fd99::1/64", "dev", "eth0", "nodad"]);
        }),
    ];
    for (what, lose) in losses {
        lose();
        assert_ne!(
            peer_routes(&node.ns),
            want,
            "{what}: the kernel kept the routes"
        );
        let (p, out) = node.try_add_pod(&plugin(), &c.conf(0), &unique_name("c"));
        pods.push(p);
        assert_eq!(
            peer_routes(&node.ns),
            want,
            "after {what}, ADD must repair\n{out}"
        );
    }
    del_all(&pods.iter().collect::<Vec<_>>());
}

/// Inode of `path` as /proc/locks prints it (`maj:min:inode`).
fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .ino()
}

/// An ADD that read the view before a newer one was written, and waited for the reconcile lock
/// meanwhile, applies the newer view, not the one it read first.
#[test]
fn an_add_waiting_for_the_lock_applies_the_newest_view_not_the_one_it_read() {
    let c = Cluster::new(Fabric::single_l2(3));
    let node = c.node(0);
    let first = c.add_pod(0);
    assert_eq!(peer_routes(&node.ns), c.expected_peer_routes(0));

    // Hold every lock in the run dir, as a concurrent reconcile would.
    let locks: Vec<(std::fs::File, u64)> = std::fs::read_dir(&node.run_dir)
        .expect("run dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("lock"))
        .map(|e| {
            let f = std::fs::File::options()
                .write(true)
                .open(e.path())
                .expect("open lock");
            f.lock().expect("lock");
            (f, inode(&e.path()))
        })
        .collect();
    assert!(!locks.is_empty(), "no lock file in the run dir");

    // View 1: node 2 left. The ADD reads it and blocks on the lock.
    write(&node.peers_file, &c.peers(|j| j != 2).to_string());
    let waiting = std::thread::scope(|s| {
        let add = s.spawn(|| c.add_pod(0));
        let deadline = Instant::now() + Duration::from_secs(10);
        let blocked = loop {
            let table = std::fs::read_to_string("/proc/locks").unwrap_or_default();
            let waits = table.lines().any(|l| {
                l.contains("->") && locks.iter().any(|(_, i)| l.contains(&format!(":{i} ")))
            });
            if waits || Instant::now() > deadline || add.is_finished() {
                break waits;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        // View 2, written while that ADD waits: node 1 left instead, node 2 is back.
        write(&node.peers_file, &c.peers(|j| j != 1).to_string());
        drop(locks);
        (blocked, add.join().expect("ADD thread"))
    });
    let (blocked, second) = waiting;
    assert!(blocked, "the ADD never waited for the reconcile lock");
    let want: BTreeSet<_> = [route(&pod_cidr4(2), "10.99.0.3")].into();
    assert_eq!(
        peer_routes(&node.ns),
        want,
        "the ADD applied the view it read before the newer one"
    );
    del_all(&[&first, &second]);
}

/// Bad entries of every kind: ADD succeeds, the good entries are routed, stderr names every
/// skipped entry; STATUS answers 51 naming them too.
#[test]
fn bad_entries_are_skipped_the_rest_applied_and_status_names_them() {
    let c = Cluster::new(Fabric::single_l2(3));
    let node = c.node(0);
    let mut view = c.peers(|_| true);
    let bad = [
        (
            json!({"nodeIP": "10.98.0.5", "podCIDR": "10.244.50.0/24"}),
            "10.98.0.5",
        ),
        (
            json!({"nodeIP": "10.99.0.9", "podCIDR": "0.0.0.0/0"}),
            "0.0.0.0/0",
        ),
        (
            json!({"nodeIP": "10.99.0.10", "podCIDR": "10.244.1.0/25"}),
            "10.244.1.0/25",
        ),
        (
            json!({"nodeIP": "10.99.0.11", "podCIDR": "10.244.60.0/24"}),
            "10.244.60.0/24",
        ),
        (
            json!({"nodeIP": "10.99.0.12", "podCIDR": "10.244.60.0/23"}),
            "10.244.60.0/23",
        ),
        (
            json!({"nodeIP": "10.99.0.13", "podCIDR": "fd00:99::/64"}),
            "fd00:99::/64",
        ),
        (
            json!({"nodeIP": "not-an-ip", "podCIDR": "10.244.70.0/24"}),
            "not-an-ip",
        ),
        (
            json!({"nodeIP": "10.99.0.14", "podCIDR": "10.244.71.0/24", "vtepMAC": "zz"}),
            "zz",
        ),
        (json!({"podCIDR": "10.244.72.0/24"}), "10.244.72.0/24"),
    ];
    let list = view.as_array_mut().expect("list");
    list.extend(bad.iter().map(|(e, _)| e.clone()));
    for conf in [
        {
            write(&node.peers_file, &view.to_string());
            c.conf(0)
        },
        // The same entries in another order: new bytes, so this ADD applies (and reports) again.
        with_inline_view(&c, reversed(&view)),
    ] {
        let (pod, out) = node.try_add_pod(&plugin(), &conf, &unique_name("c"));
        assert!(out.success(), "one bad entry failed the ADD\n{out}");
        assert_eq!(
            peer_routes(&node.ns),
            c.expected_peer_routes(0),
            "good entries routed, bad ones not\n{out}"
        );
        let status = plain(node, "STATUS", &conf);
        let err = status.assert_error(LIMITED_CONNECTIVITY);
        for (_, needle) in &bad {
            assert!(
                out.stderr.contains(needle),
                "stderr must name {needle}\n{out}"
            );
            assert!(
                error_text(&err).contains(needle),
                "STATUS must name {needle}\n{status}"
            );
        }
        assert!(!error_text(&err).contains("Some("), "{status}");
        pod.run("DEL").assert_ok_empty();
    }
}

/// A peers file that is not a JSON list (or is missing) fails neither ADD nor a repair: the
/// routes last applied stay (and come back if lost); STATUS answers 51 naming the file.
#[test]
fn an_unreadable_view_keeps_the_routes_last_applied_and_status_answers_51() {
    let c = Cluster::new(Fabric::single_l2(3));
    let node = c.node(0);
    let want = c.expected_peer_routes(0);
    let p1 = c.add_pod(0);
    assert_eq!(peer_routes(&node.ns), want);

    write(&node.peers_file, "{not json");
    let (p2, out) = node.try_add_pod(&plugin(), &c.conf(0), &unique_name("c"));
    assert!(out.success(), "a broken peers file failed ADD\n{out}");
    assert!(
        out.stderr.contains("peers.json"),
        "stderr names the file\n{out}"
    );
    assert_eq!(peer_routes(&node.ns), want, "routes kept\n{out}");
    let status = plain(node, "STATUS", &c.conf(0));
    let err = status.assert_error(LIMITED_CONNECTIVITY);
    assert!(error_text(&err).contains("peers.json"), "{status}");

    // Lost while the view is unreadable: the last applied routes come back.
    node.ns.ip(&["route", "flush", "proto", TWILL_PROTO]);
    std::fs::remove_file(&node.peers_file).expect("remove peers file");
    let (p3, out) = node.try_add_pod(&plugin(), &c.conf(0), &unique_name("c"));
    assert!(out.success(), "a missing peers file failed ADD\n{out}");
    assert_eq!(
        peer_routes(&node.ns),
        want,
        "last applied routes restored\n{out}"
    );
    plain(node, "STATUS", &c.conf(0)).assert_error(LIMITED_CONNECTIVITY);
    del_all(&[&p1, &p2, &p3]);
}

/// The view lists this node twice: by its address, and under another node IP with the second
/// range of its IPAM (not the range this pod got its address from). Both are this node: no
/// route, and STATUS has nothing to report.
#[test]
fn the_view_lists_this_node_by_address_or_by_any_configured_range() {
    let c = Cluster::new(Fabric::single_l2(3));
    let node = c.node(0);
    let mut conf = c.conf(0);
    conf["ipam"] = json!({
        "type": "host-local",
        "dataDir": node.data_dir,
        "ranges": [[{"subnet": "10.244.1.0/25"}, {"subnet": "10.244.1.128/25"}]],
    });
    let mut view = c.peers(|j| j != 0);
    let list = view.as_array_mut().expect("list");
    list.push(json!({"nodeIP": "10.99.0.1", "podCIDR": "10.244.1.0/25"}));
    list.push(json!({"nodeIP": "10.99.0.201", "podCIDR": "10.244.1.128/25"}));
    write(&node.peers_file, &view.to_string());
    let p = c.add_pod_with(0, &conf);
    assert!(in_cidr(&p.ip().expect("ip"), "10.244.1.0/25"));
    assert_eq!(
        peer_routes(&node.ns),
        c.expected_peer_routes(0),
        "no route for this node's own ranges"
    );
    plain(node, "STATUS", &conf).assert_ok_empty();
    p.run("DEL").assert_ok_empty();
}

/// Networks A and B on one node both route node 1's pod CIDR. A's view drops node 1: the route
/// stays, because B still wants it; once B drops it too, it goes.
#[test]
fn a_network_dropping_a_destination_leaves_it_to_another_network_still_listing_it() {
    let c = Cluster::new(Fabric::single_l2(3));
    let node = c.node(0);
    let a1 = c.add_pod(0);
    let dir = node.run_dir.join("b");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let sub_b = dir.join("subnet.env");
    write(
        &sub_b,
        "FLANNEL_NETWORK=10.245.0.0/16\nFLANNEL_SUBNET=10.245.1.1/24\nFLANNEL_MTU=1500\n\
         FLANNEL_IPMASQ=true\n",
    );
    let b_name = unique_name("nb");
    let conf_b = |peers: Value| {
        json!({
            "cniVersion": "1.1.0",
            "name": b_name,
            "type": "bridge-host-gw",
            "bridge": "cni1",
            "subnetFile": sub_b,
            "dataDir": dir.join("data"),
            "runDir": node.run_dir,
            "peers": peers,
        })
    };
    let shared = route(&pod_cidr4(1), "10.99.0.2");
    let b_view = json!([
        {"nodeIP": "10.99.0.2", "podCIDR": pod_cidr4(1)},
        {"nodeIP": "10.99.0.3", "podCIDR": "10.245.3.0/24"},
    ]);
    let b1 = c.add_pod_with(0, &conf_b(b_view));
    assert!(peer_routes(&node.ns).contains(&shared));

    write(&node.peers_file, &c.peers(|j| j != 1).to_string());
    let a2 = c.add_pod(0);
    let routes = peer_routes(&node.ns);
    assert!(
        routes.contains(&shared),
        "network A deleted the route network B still wants: {routes:?}"
    );
    assert!(routes.contains(&route(&pod_cidr4(2), "10.99.0.3")));

    let b2 = c.add_pod_with(
        0,
        &conf_b(json!([{"nodeIP": "10.99.0.3", "podCIDR": "10.245.3.0/24"}])),
    );
    let routes = peer_routes(&node.ns);
    assert!(
        !routes.contains(&shared),
        "nobody wants it any more: {routes:?}"
    );
    assert!(routes.contains(&route("10.245.3.0/24", "10.99.0.3")));
    del_all(&[&a1, &a2, &b1, &b2]);
}

/// A run dir shared by node namespaces: once one of them is deleted, the next reconcile in
/// another removes the deleted namespace's state file.
#[test]
fn state_files_of_node_namespaces_that_no_longer_exist_are_pruned() {
    let shared = TempDir::new("run");
    let keep = Cluster::new(Fabric::single_l2(2));
    let conf_in = |c: &Cluster| {
        let mut conf = c.conf(0);
        conf["runDir"] = json!(shared.path());
        conf
    };
    let gone_net;
    {
        let gone = Cluster::new(Fabric::single_l2(2));
        gone_net = gone.net.clone();
        let p = gone.add_pod_with(0, &conf_in(&gone));
        p.run("DEL").assert_ok_empty();
        let files = state_files(shared.path());
        assert!(
            files.iter().any(|f| f.starts_with(&format!("{gone_net}."))),
            "no state file written: {files:?}"
        );
    } // the cluster's namespaces are deleted here
    // The pod namespace exists before the ADD, so no namespace is born between the deletion
    // and the reconcile in this test.
    let pod_ns = Netns::with_tag("pod");
    let out = keep
        .node(0)
        .invoke(
            &plugin(),
            "ADD",
            &conf_in(&keep),
            "prune-1",
            pod_ns.path(),
            "eth0",
        )
        .run();
    out.assert_ok();
    let files = state_files(shared.path());
    assert!(
        !files.iter().any(|f| f.starts_with(&format!("{gone_net}."))),
        "state of a deleted namespace left behind: {files:?}"
    );
    assert!(
        files
            .iter()
            .any(|f| f.starts_with(&format!("{}.", keep.net))),
        "the live namespace's state must stay: {files:?}"
    );
    keep.node(0)
        .invoke(
            &plugin(),
            "DEL",
            &conf_in(&keep),
            "prune-1",
            pod_ns.path(),
            "eth0",
        )
        .run()
        .assert_ok_empty();
}

/// A peer route deleted by hand is node state the next ADD repairs, not a broken attachment:
/// CHECK succeeds and says so on stderr.
#[test]
fn check_succeeds_on_peer_route_drift_and_reports_it_on_stderr() {
    let c = Cluster::new(Fabric::single_l2(3));
    let node = c.node(0);
    let p = c.add_pod(0);
    node.ns.ip(&["route", "del", &pod_cidr4(2)]);
    let out = p.run("CHECK");
    out.assert_ok_empty();
    assert!(out.stderr.contains(&pod_cidr4(2)), "drift reported\n{out}");
    let q = c.add_pod(0);
    assert_eq!(peer_routes(&node.ns), c.expected_peer_routes(0));
    let out = p.run("CHECK");
    out.assert_ok_empty();
    assert!(out.stderr.is_empty(), "no drift left\n{out}");
    del_all(&[&p, &q]);
}

/// A peer skipped as off-link is looked at again by every ADD: once the node has an address
/// on that peer's segment, the next ADD routes it (no stale "unchanged" fast path).
#[test]
fn an_off_link_peer_is_routed_once_the_node_joins_its_segment() {
    let c = Cluster::new(Fabric::single_l2(2));
    let node = c.node(0);
    let mut view = c.peers(|_| true);
    view.as_array_mut()
        .expect("list")
        .push(json!({"nodeIP": "10.98.0.5", "podCIDR": "10.244.50.0/24"}));
    write(&node.peers_file, &view.to_string());
    let (p1, out) = node.try_add_pod(&plugin(), &c.conf(0), &unique_name("c"));
    assert!(out.success(), "{out}");
    assert_eq!(peer_routes(&node.ns), c.expected_peer_routes(0), "{out}");
    node.ns.ip(&["addr", "add", "10.98.0.1/24", "dev", "eth0"]);
    let (p2, out) = node.try_add_pod(&plugin(), &c.conf(0), &unique_name("c"));
    assert!(out.success(), "{out}");
    let mut want = c.expected_peer_routes(0);
    want.insert(route("10.244.50.0/24", "10.98.0.5"));
    assert_eq!(peer_routes(&node.ns), want, "{out}");
    plain(node, "STATUS", &c.conf(0)).assert_ok_empty();
    del_all(&[&p1, &p2]);
}

/// Waits until a view file written now is older than the 50 ms a stamp must have settled for
/// (`ViewStamp::SETTLE_NS`), so the next reconcile records and later trusts its stamp.
fn let_the_view_settle() {
    std::thread::sleep(Duration::from_millis(120));
}

/// With an unchanged view, one peer route deleted by hand, and one put on another next hop
/// under twill's own protocol (as many routes as before, one different): each is put back by
/// the next ADD. The fast path compares a count and a hash of the kernel's routes, so a
/// changed route must count as much as a missing one.
#[test]
fn a_peer_route_deleted_or_redirected_behind_twills_back_is_restored_by_the_next_add() {
    let c = Cluster::new(Fabric::single_l2(4));
    let node = c.node(0);
    let want = c.expected_peer_routes(0);
    let_the_view_settle();
    let mut pods = vec![c.add_pod(0), c.add_pod(0)];
    assert_eq!(peer_routes(&node.ns), want);
    let (dst, _) = want.iter().next().expect("a peer route").clone();
    let other_hop = c.node(3).ip.to_string();

    let tamper: [(&str, &dyn Fn()); 2] = [
        ("deleted", &|| {
            node.ns.ip(&["route", "del", &dst, "proto", TWILL_PROTO]);
        }),
        ("redirected", &|| {
            node.ns.ip(&[
                "route",
                "replace",
                &dst,
                "via",
                &other_hop,
                "proto",
                TWILL_PROTO,
            ]);
        }),
    ];
    for (what, act) in tamper {
        act();
        let now = peer_routes(&node.ns);
        assert_ne!(now, want, "{what}: the route was not touched");
        let (p, out) = node.try_add_pod(&plugin(), &c.conf(0), &unique_name("c"));
        pods.push(p);
        assert_eq!(peer_routes(&node.ns), want, "{what}: not repaired\n{out}");
    }
    del_all(&pods.iter().collect::<Vec<_>>());
}

/// The view rewritten in place (same inode) with content of the same size, its mtime then
/// set back: the change time still moves, so the next ADD applies the new next hops.
#[test]
fn a_view_rewritten_in_place_with_the_same_size_and_mtime_is_applied_by_the_next_add() {
    let c = Cluster::new(Fabric::single_l2(3));
    let node = c.node(0);
    let_the_view_settle();
    let mut pods = vec![c.add_pod(0), c.add_pod(0)];
    assert_eq!(peer_routes(&node.ns), c.expected_peer_routes(0));

    // Nodes 1 and 2 swap addresses: same length, same size.
    let (ip1, ip2) = (c.node(1).ip.to_string(), c.node(2).ip.to_string());
    let text = std::fs::read_to_string(&node.peers_file).expect("view");
    let swapped = text
        .replace(&ip1, "SWAP")
        .replace(&ip2, &ip1)
        .replace("SWAP", &ip2);
    assert_eq!(swapped.len(), text.len());
    let meta = std::fs::metadata(&node.peers_file).expect("stat view");
    let mtime = meta.modified().expect("mtime");
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&node.peers_file)
            .expect("open view");
        f.write_all(swapped.as_bytes()).expect("rewrite view");
        f.set_modified(mtime).expect("set mtime back");
    }
    let after = std::fs::metadata(&node.peers_file).expect("stat view");
    {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            (after.ino(), after.len(), after.modified().ok()),
            (meta.ino(), meta.len(), Some(mtime))
        );
    }

    let (p, out) = node.try_add_pod(&plugin(), &c.conf(0), &unique_name("c"));
    pods.push(p);
    let want: BTreeSet<(String, String)> = [route(&pod_cidr4(1), &ip2), route(&pod_cidr4(2), &ip1)]
        .into_iter()
        .collect();
    assert_eq!(peer_routes(&node.ns), want, "{out}");
    del_all(&pods.iter().collect::<Vec<_>>());
}

/// A view's podCIDR outside the flannel network is cluster space: the masquerade leaves it
/// alone from the ADD after it appears, and masquerades it again from the ADD after it is gone,
/// also while the space is taken from the network's space file rather than the view.
#[test]
fn the_masquerade_follows_the_views_pod_cidrs_from_one_add_to_the_next() {
    let c = Cluster::new(Fabric::single_l2(2));
    let node = c.node(0);
    let mut conf = c.conf(0);
    conf["ipMasq"] = json!(true);
    let outside = "10.77.0.0/24";
    let mut view = c.peers(|_| true);
    view.as_array_mut()
        .expect("list")
        .push(json!({"nodeIP": c.node(1).ip.to_string(), "podCIDR": outside}));
    let mut pods = vec![c.add_pod_with(0, &conf)];
    assert!(!node.ns.nft_ruleset().contains(outside));

    write(&node.peers_file, &view.to_string());
    let_the_view_settle();
    for round in 0..2 {
        pods.push(c.add_pod_with(0, &conf));
        assert!(
            node.ns.nft_ruleset().contains(outside),
            "ADD {round} after the view named {outside}:\n{}",
            node.ns.nft_ruleset()
        );
    }
    assert!(
        std::fs::read_to_string(node.run_dir.join(format!("{}.space", c.net)))
            .is_ok_and(|t| t.contains(outside)),
        "the space is remembered"
    );

    write(&node.peers_file, &c.peers(|_| true).to_string());
    pods.push(c.add_pod_with(0, &conf));
    assert!(
        !node.ns.nft_ruleset().contains(outside),
        "{}",
        node.ns.nft_ruleset()
    );
    del_all(&pods.iter().collect::<Vec<_>>());
}

/// An ADD with an unchanged 250-peer view, on a node with a masquerade table and a host
/// forward chain (both compared with the cluster space), opens neither the view nor more of
/// the run state than its header: what it costs does not grow with the view. The routes are
/// all there.
#[test]
fn an_add_with_an_unchanged_250_peer_view_reads_neither_the_view_nor_the_whole_run_state() {
    let c = Cluster::new(Fabric::single_l2(3));
    let node = c.node(0);
    node.ns.nft_load(
        "table ip filter {\n\tchain FORWARD {\n\t\ttype filter hook forward priority 0; policy drop;\n\t}\n}\n",
    );
    let mut view = c.peers(|_| true);
    let mut want = c.expected_peer_routes(0);
    for k in 0..250 {
        let hop = format!("10.99.0.{}", 10 + k % 200);
        let cidr = format!("10.{}.{}.0/24", 100 + k / 250, k % 250);
        want.insert(route(&cidr, &hop));
        view.as_array_mut()
            .expect("list")
            .push(json!({"nodeIP": hop, "podCIDR": cidr}));
    }
    write(&node.peers_file, &view.to_string());
    let mut conf = c.conf(0);
    conf["ipMasq"] = json!(true);
    conf["clusterNetworks"] = json!(["10.0.0.0/8"]);
    let_the_view_settle();
    let mut pods = vec![c.add_pod_with(0, &conf), c.add_pod_with(0, &conf)];
    assert_eq!(peer_routes(&node.ns), want);

    let traced = Traced::new(&plugin(), "-yy -s 0 -e trace=open,openat,read,pread64");
    pods.push(node.add_pod(&traced.plugin(), &conf, &unique_name("c")));
    let log = traced.log();
    let view_name = node.peers_file.display().to_string();
    assert!(
        !log.lines()
            .any(|l| l.contains("open") && l.contains(&view_name)),
        "the view was opened:\n{log}"
    );
    let state_reads: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("read") || l.contains(" read("))
        .filter(|l| l.contains(".peers.") && !l.contains(".space"))
        .collect();
    let bytes: usize = state_reads
        .iter()
        .filter_map(|l| l.rsplit_once(" = ")?.1.trim().parse::<usize>().ok())
        .sum();
    assert!(
        !state_reads.is_empty() && bytes <= 512,
        "the run state was read past its header ({bytes} bytes):\n{}",
        state_reads.join("\n")
    );
    assert_eq!(peer_routes(&node.ns), want);
    assert!(node.ns.nft_ruleset().contains("twill forward"));
    del_all(&pods.iter().collect::<Vec<_>>());
}
