//! bridge-host-gw does only what is provably its own: every host veth carries its owner
//! (network, container ID, ifname) as its alias, and GC, DEL and CHECK go by that mark, never
//! by the shape of a name. GC goes on past a failing item; DEL is never refused over what it
//! does not use (the netns, the subnet file, the bridge).

use conformance::hostgw::*;
use conformance::{Fabric, Invocation, Pod, ping, result_ips, unique_name};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Network `name` with host-local addresses `10.244.1.<first>`-`<last>` of node 0's subnet, on
/// bridge cni0 (so two such networks share the bridge and its gateway 10.244.1.1).
fn slice_conf(c: &Cluster, name: &str, first: u8, last: u8, peers: bool) -> Value {
    let mut conf = c.conf(0);
    conf["name"] = json!(name);
    conf["ipam"] = json!({
        "type": "host-local",
        "dataDir": c.node(0).data_dir,
        "ranges": [[{
            "subnet": pod_cidr4(0),
            "rangeStart": format!("10.244.1.{first}"),
            "rangeEnd": format!("10.244.1.{last}"),
            "gateway": gw4(0),
        }]],
        "routes": [{"dst": CLUSTER4}],
    });
    if !peers {
        conf.as_object_mut().map(|o| o.remove("peersFile"));
    }
    conf
}

/// A GC call for network `conf` on node 0 keeping the attachments `valid`.
fn gc(c: &Cluster, conf: &Value, valid: &[&Pod]) -> conformance::Outcome {
    let list: Vec<(&str, &str)> = valid
        .iter()
        .map(|p| (p.container_id.as_str(), p.ifname.as_str()))
        .collect();
    plain(c.node(0), "GC", &with_attachments(conf, &list))
}

/// Asserts that `p`'s host veth, pod end and reservations exist.
fn assert_intact(c: &Cluster, net: &str, p: &Pod, ctx: &str) {
    let hv = host_veth(&p.result);
    assert!(c.node(0).ns.link(&hv).is_some(), "{ctx}: {hv} removed");
    assert!(
        p.ns.link("eth0").is_some(),
        "{ctx}: pod end of {hv} removed"
    );
    let res = reservations(c.node(0), net);
    for ip in result_ips(&p.result) {
        assert!(res.contains_key(&ip.to_string()), "{ctx}: {ip} released");
    }
}

/// Asserts that `p`'s host veth and reservations are gone.
fn assert_removed(c: &Cluster, net: &str, p: &Pod, ctx: &str) {
    let hv = host_veth(&p.result);
    assert!(c.node(0).ns.link(&hv).is_none(), "{ctx}: {hv} left");
    let res = reservations(c.node(0), net);
    for ip in result_ips(&p.result) {
        assert!(!res.contains_key(&ip.to_string()), "{ctx}: {ip} kept");
    }
}

#[test]
fn gc_of_one_network_leaves_a_neighbours_pod_on_the_same_bridge() {
    let c = Cluster::new(Fabric::single_l2(2));
    let a_net = c.net.clone();
    let b_net = unique_name("nb");
    let a_conf = slice_conf(&c, &a_net, 10, 49, true);
    let b_conf = slice_conf(&c, &b_net, 50, 99, false);
    let a1 = c.add_pod_with(0, &a_conf);
    let a2 = c.add_pod_with(0, &a_conf);
    let b1 = c.add_pod_with(0, &b_conf);
    assert_eq!(
        c.node(0)
            .ns
            .link(&host_veth(&b1.result))
            .and_then(|l| l.master)
            .as_deref(),
        Some("cni0"),
        "both networks' pods hang on one bridge"
    );

    gc(&c, &a_conf, &[&a1]).assert_ok_empty();
    assert_intact(&c, &a_net, &a1, "GC of network a, a1 listed");
    assert_removed(&c, &a_net, &a2, "GC of network a, a2 not listed");
    assert_intact(&c, &b_net, &b1, "GC of network a");
    b1.run("CHECK").assert_ok_empty();
    assert!(ping(&a1.ns, result_ips(&b1.result)[0]), "b1 unreachable");

    gc(&c, &b_conf, &[]).assert_ok_empty();
    assert_removed(&c, &b_net, &b1, "GC of network b with nothing listed");
    assert_intact(&c, &a_net, &a1, "GC of network b");
    a1.run("DEL").assert_ok_empty();
}

#[test]
fn gc_leaves_hand_made_links_that_merely_look_like_twills() {
    let c = Cluster::new(Fabric::single_l2(2));
    let node = c.node(0);
    let p = c.add_pod(0);
    // Veths named like twill host ends (`tw` + 13 hex digits): one a port of the bridge, one
    // not.
    node.ns.ip(&[
        "link",
        "add",
        "tw0123456789abc",
        "master",
        "cni0",
        "type",
        "veth",
        "peer",
        "name",
        "hand1",
    ]);
    node.ns.ip(&[
        "link",
        "add",
        "twfedcba9876543",
        "type",
        "veth",
        "peer",
        "name",
        "hand2",
    ]);

    gc(&c, &c.conf(0), &[]).assert_ok_empty();
    assert_removed(&c, &c.net, &p, "GC with nothing listed");
    for name in ["tw0123456789abc", "twfedcba9876543"] {
        assert!(node.ns.link(name).is_some(), "GC removed hand-made {name}");
    }
    assert_eq!(
        node.ns
            .link("tw0123456789abc")
            .and_then(|l| l.master)
            .as_deref(),
        Some("cni0")
    );
}

#[test]
fn gc_goes_on_past_a_failing_item_reports_it_and_still_runs_ipam_gc() {
    let c = Cluster::new(Fabric::single_l2(2));
    let node = c.node(0);
    let pods: Vec<Pod> = (0..3).map(|_| c.add_pod(0)).collect();
    // An item the kernel refuses to remove: `lo` (EOPNOTSUPP) carrying the mark of a stale
    // attachment of this network, a stand-in for any per-item failure.
    let mark = owner_mark(&c.net, "ghost", "eth0");
    node.ns.ip(&["link", "set", "lo", "alias", &mark]);

    let out = gc(&c, &c.conf(0), &[&pods[1]]);
    let err = out
        .check_error_shape()
        .unwrap_or_else(|e| panic!("GC must fail: {e}\n{out}"));
    let text = error_text(&err);
    assert!(
        text.contains("host veth lo of ghost eth0"),
        "the error names the failed item\n{out}"
    );
    for p in [&pods[0], &pods[2]] {
        assert_removed(&c, &c.net, p, "GC past a failing item");
    }
    assert_intact(&c, &c.net, &pods[1], "GC past a failing item");
    assert_eq!(c.reservations(0).len(), 1, "IPAM GC ran");
    assert!(node.ns.link("lo").is_some());

    node.ns.ip(&["link", "set", "lo", "alias", ""]);
    gc(&c, &c.conf(0), &[&pods[1]]).assert_ok_empty();
    pods[1].run("DEL").assert_ok_empty();
}

#[test]
fn add_takes_another_name_when_a_foreign_link_holds_its_own_and_del_removes_only_its_own() {
    let c = Cluster::new(Fabric::single_l2(2));
    let node = c.node(0);
    let cid = unique_name("c");
    // The name this attachment gets, learnt by one ADD and DEL.
    let first = node.add_pod(&plugin(), &c.conf(0), &cid);
    let name = host_veth(&first.result);
    first.run("DEL").assert_ok_empty();
    drop(first);
    // Someone else's link takes that name.
    node.ns.ip(&[
        "link", "add", &name, "master", "cni0", "type", "veth", "peer", "name", "squat1",
    ]);
    node.ns.ip(&["link", "set", &name, "alias", "not twill's"]);

    let p = node.add_pod(&plugin(), &c.conf(0), &cid);
    let hv = host_veth(&p.result);
    assert_ne!(hv, name, "the pod took the foreign link's name");
    assert_eq!(
        link_aliases(&node.ns).get(&hv).map(String::as_str),
        Some(owner_mark(&c.net, &cid, "eth0").as_str())
    );
    p.run("CHECK").assert_ok_empty();
    let other = c.add_pod(0);
    assert!(ping(&other.ns, result_ips(&p.result)[0]), "pod not wired");

    p.run("DEL").assert_ok_empty();
    assert!(node.ns.link(&hv).is_none(), "DEL left {hv}");
    let squat = node.ns.link(&name).expect("DEL removed the foreign link");
    assert_eq!(squat.raw["ifalias"], "not twill's");
    p.run("DEL").assert_ok_empty();
    assert!(
        node.ns.link(&name).is_some(),
        "second DEL removed the foreign link"
    );
    other.run("DEL").assert_ok_empty();
    assert_eq!(c.reservations(0), BTreeMap::new());
}

/// DEL on node 0 for `p` with `CNI_NETNS` = `netns` and the config `conf`.
fn del_with(p: &Pod, c: &Cluster, netns: &str, conf: &Value) -> conformance::Outcome {
    Invocation::new(plugin())
        .command("DEL")
        .container_id(&p.container_id)
        .netns(netns)
        .ifname(&p.ifname)
        .stdin_json(conf)
        .on(c.node(0).ns.path())
        .run()
}

#[test]
fn del_with_the_nodes_own_netns_as_cni_netns_still_cleans_up() {
    let c = Cluster::new(Fabric::single_l2(2));
    let p = c.add_pod(0);
    let own = c.node(0).ns.path_str();
    del_with(&p, &c, &own, &c.conf(0)).assert_ok_empty();
    assert_removed(&c, &c.net, &p, "DEL with the node's netns");
    assert_eq!(c.reservations(0), BTreeMap::new());
    // ADD and CHECK still refuse it.
    let out = c
        .node(0)
        .invoke(
            &plugin(),
            "ADD",
            &c.conf(0),
            &unique_name("c"),
            c.node(0).ns.path(),
            "eth1",
        )
        .run();
    out.assert_error(4);
    assert_eq!(c.reservations(0), BTreeMap::new());
}

#[test]
fn del_with_a_stale_netns_path_still_cleans_up() {
    let c = Cluster::new(Fabric::single_l2(2));
    let p = c.add_pod(0);
    let stale = format!("/run/netns/{}", unique_name("gone"));
    del_with(&p, &c, &stale, &c.conf(0)).assert_ok_empty();
    assert_removed(&c, &c.net, &p, "DEL with a stale netns path");
    assert!(
        p.ns.link("eth0").is_none(),
        "the pod end goes with the host end"
    );
}

#[test]
fn del_with_a_malformed_subnet_file_or_a_bad_unused_key_still_cleans_up() {
    let c = Cluster::new(Fabric::single_l2(2));
    let node = c.node(0);
    let p = c.add_pod(0);
    let q = c.add_pod(0);
    write(
        &node.subnet_file,
        "FLANNEL_NETWORK=garbage\nFLANNEL_SUBNET=10.244.1.1/99\n",
    );
    del_with(&p, &c, &p.ns.path_str(), &c.conf(0)).assert_ok_empty();
    assert_removed(&c, &c.net, &p, "DEL with a malformed subnet file");
    // A bridge name or MTU DEL does not use.
    let mut bad = c.conf(0);
    bad["bridge"] = json!("no/such/bridge");
    bad["mtu"] = json!(1);
    del_with(&q, &c, &q.ns.path_str(), &bad).assert_ok_empty();
    assert_removed(&c, &c.net, &q, "DEL with a bad bridge name and MTU");
    assert_eq!(c.reservations(0), BTreeMap::new());
}

#[test]
fn status_checks_what_add_needs_and_creates_nothing() {
    let c = Cluster::new(Fabric::single_l2(2));
    let node = c.node(0);
    let links = node.ns.link_names();
    let run = conformance::DirSnapshot::take(&node.run_dir);
    plain(node, "STATUS", &c.conf(0)).assert_ok_empty();
    assert_eq!(node.ns.link_names(), links, "STATUS made a link");
    run.assert_same(
        &conformance::DirSnapshot::take(&node.run_dir),
        "STATUS, runDir",
    );
    // host-local's STATUS makes its lock file; no reservation.
    assert_eq!(
        c.reservations(0),
        BTreeMap::new(),
        "STATUS reserved an address"
    );

    // A link of another kind holds the bridge's name: ADD could not work.
    node.ns.ip(&[
        "link", "add", "cni0", "type", "veth", "peer", "name", "cni0p",
    ]);
    let out = plain(node, "STATUS", &c.conf(0));
    let err = out.assert_error(code::NOT_AVAILABLE);
    assert!(error_text(&err).contains("cni0"), "STATUS names it\n{out}");
    node.ns.ip(&["link", "del", "cni0"]);

    // An existing bridge: available; a pod on it changes nothing.
    let p = c.add_pod(0);
    plain(node, "STATUS", &c.conf(0)).assert_ok_empty();
    p.run("DEL").assert_ok_empty();
}

#[test]
fn check_fails_when_the_host_veth_no_longer_carries_the_attachments_mark() {
    let c = Cluster::new(Fabric::single_l2(2));
    let node = c.node(0);
    let p = c.add_pod(0);
    let hv = host_veth(&p.result);
    p.run("CHECK").assert_ok_empty();
    node.ns.ip(&["link", "set", &hv, "alias", "someone else's"]);
    let out = p.run("CHECK");
    let err = out
        .check_error_shape()
        .unwrap_or_else(|e| panic!("CHECK with the mark replaced: {e}\n{out}"));
    assert!(error_text(&err).contains(&hv), "CHECK names {hv}\n{out}");
    // DEL leaves a link that is no longer provably the pod's, and still releases.
    p.run("DEL").assert_ok_empty();
    assert!(node.ns.link(&hv).is_some(), "DEL removed an unmarked link");
    assert_eq!(c.reservations(0), BTreeMap::new());
    node.ns.ip(&["link", "del", &hv]);
}
