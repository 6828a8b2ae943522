//! Black-box conformance of bridge-host-gw's node rules: the masquerade decided by the cluster
//! (never pod-to-pod, every configured range, following `ipMasq`), the forward rules on a node
//! whose forward policy drops, CHECK treating their drift as node state, and STATUS checking
//! what ADD needs.
//!
//! Layout as in `bridge_host_gw.rs` (see `conformance::hostgw`): node `i` is `10.99.0.(i+1)`,
//! its pods are in `10.244.(i+1).0/24`; "outside" hosts hang on the same segment. Real packets
//! are counted with nftables counters in the namespace that receives them. Nothing touches
//! the root namespace; every namespace and directory is removed by its guard.

use conformance::hostgw::*;
use conformance::{Fabric, Invocation, Netns, Pod, TempDir, no_reply, ping, result_ips};
use serde_json::{Value, json};
use std::net::IpAddr;

/// The table of this cluster's network.
fn masq_table(c: &Cluster) -> String {
    format!("twill-masq-{}", c.net)
}

fn has_table(ns: &Netns, table: &str) -> bool {
    ns.exec(&["nft", "list", "table", "inet", table])
        .status
        .success()
}

/// Node `i`'s config with host-local `ipam` given explicitly (its pod subnet, plus `extra`
/// ranges as further ranges of the same set), `mtu` and `ipMasq: true`, and no subnet file:
/// the plugin learns the cluster only from the peers file.
fn explicit_conf(c: &Cluster, i: usize, extra: &[&str]) -> Value {
    let mut conf = c.conf(i);
    let mut ranges = vec![json!({"subnet": pod_cidr4(i)})];
    ranges.extend(extra.iter().map(|s| json!({"subnet": s})));
    conf["ipam"] = json!({
        "type": "host-local",
        "ranges": [ranges],
        "dataDir": c.node(i).data_dir,
    });
    conf["mtu"] = json!(MTU);
    conf["ipMasq"] = json!(true);
    conf["subnetFile"] = json!(c.node(i).data_dir.join("no-such-subnet.env"));
    conf
}

/// Loads counters of ICMP echo requests by source into `ns` (table `inet obs`, one counter
/// per `(name, source CIDR)`).
fn count_sources(ns: &Netns, sources: &[(&str, &str)]) {
    let mut counters = String::new();
    let mut rules = String::new();
    for (name, src) in sources {
        counters.push_str(&format!("counter {name} {{ }}\n"));
        let (proto, icmp) = if src.contains(':') {
            ("ip6", "icmpv6")
        } else {
            ("ip", "icmp")
        };
        rules.push_str(&format!(
            "{proto} saddr {src} {icmp} type echo-request counter name \"{name}\"\n"
        ));
    }
    ns.nft_load(&format!(
        "table inet obs {{\n{counters}chain pre {{\n\
         type filter hook prerouting priority -300; policy accept;\n{rules}}}\n}}"
    ));
}

fn del_all(pods: &[&Pod]) {
    for p in pods {
        p.run("DEL").assert_ok_empty();
    }
}

// ---------------------------------------------------------------------------------------------
// The masquerade is decided by the cluster
// ---------------------------------------------------------------------------------------------

/// With `ipam` explicit and no subnet file, the cluster view's podCIDRs are the cluster: a pod
/// on node 0 reaching a pod on node 1 keeps its own address (pod 1 counts requests from pod
/// 0's address, none from node 0's), while traffic leaving the cluster is still masqueraded.
#[test]
fn pod_to_pod_across_nodes_is_never_masqueraded_with_explicit_ipam() {
    let c = Cluster::new(Fabric::single_l2(2));
    let outside = c.fab.attach_host("out", &["10.99.0.250/24"]);
    count_sources(&outside, &[("node0", "10.99.0.1"), ("pods", CLUSTER4)]);
    let p0 = c.add_pod_with(0, &explicit_conf(&c, 0, &[]));
    let p1 = c.add_pod_with(1, &explicit_conf(&c, 1, &[]));
    assert!(has_table(&c.node(0).ns, &masq_table(&c)));

    let ip0 = result_ips(&p0.result)[0];
    let ip1 = result_ips(&p1.result)[0];
    count_sources(
        &p1.ns,
        &[
            ("from_pod0", &format!("{ip0}/32")),
            ("from_node0", "10.99.0.1/32"),
        ],
    );
    assert!(ping(&p0.ns, ip1), "pod 0 -> pod 1 {ip1}");
    assert!(wait_counter(&p1.ns, "obs", "from_pod0", 1) >= 1);
    assert_eq!(
        p1.ns.nft_counter("inet", "obs", "from_node0"),
        0,
        "pod-to-pod traffic was masqueraded:\n{}",
        c.node(0).ns.nft_ruleset()
    );

    let out: IpAddr = "10.99.0.250".parse().expect("ip");
    assert!(ping(&p0.ns, out), "masqueraded pod 0 -> outside");
    assert!(wait_counter(&outside, "obs", "node0", 1) >= 1);
    assert_eq!(outside.nft_counter("inet", "obs", "pods"), 0);
    del_all(&[&p0, &p1]);
}

/// `clusterNetworks` adds to the cluster space: a destination inside it is reached with the
/// pod's own address. A bad CIDR there is code 7 and the node is left as it was.
#[test]
fn cluster_networks_key_is_never_masqueraded_and_bad_cidr_is_code_7() {
    let c = Cluster::new(Fabric::single_l2(1));
    let node = c.node(0);
    // An "outside" host inside the declared cluster space, reachable on the segment; it routes
    // the pod subnet back via node 0 so it can answer unmasqueraded requests.
    let inside = c.fab.attach_host("in", &["10.99.0.240/24"]);
    inside.ip(&["route", "add", &pod_cidr4(0), "via", "10.99.0.1"]);
    count_sources(&inside, &[("node0", "10.99.0.1"), ("pods", CLUSTER4)]);

    let mut bad = explicit_conf(&c, 0, &[]);
    bad["clusterNetworks"] = json!(["10.99.0.0/33"]);
    let before = node.ns.nft_ruleset();
    let (_pod, out) = node.try_add_pod(&plugin(), &bad, "bad-cluster-networks");
    out.assert_error(7);
    assert!(
        error_text(out.stdout_json.as_ref().expect("error object")).contains("clusterNetworks"),
        "{out}"
    );
    assert_eq!(tw_links(&node.ns), Vec::<String>::new());
    assert_eq!(
        node.ns.nft_ruleset(),
        before,
        "a refused ADD changed nftables"
    );

    let mut conf = explicit_conf(&c, 0, &[]);
    conf["clusterNetworks"] = json!(["10.99.0.240/28"]);
    let p = c.add_pod_with(0, &conf);
    let dst: IpAddr = "10.99.0.240".parse().expect("ip");
    assert!(ping(&p.ns, dst), "pod -> inside {dst}");
    assert!(wait_counter(&inside, "obs", "pods", 1) >= 1);
    assert_eq!(
        inside.nft_counter("inet", "obs", "node0"),
        0,
        "traffic to clusterNetworks was masqueraded"
    );
    p.run("DEL").assert_ok_empty();
}

/// A pod in the second range of the network must not take the masquerade away from the pods
/// of the first: both leave the cluster with the node's address. (A bridge holds one gateway
/// per family, so the test plays the admin: `isGateway: false`, both gateways put on the bridge
/// and the pods' default routes set by hand.)
#[test]
fn a_pod_in_a_second_range_keeps_the_first_ranges_masquerade() {
    let c = Cluster::new(Fabric::single_l2(1));
    let node = c.node(0);
    let outside = c.fab.attach_host("out", &["10.99.0.250/24"]);
    count_sources(
        &outside,
        &[
            ("node0", "10.99.0.1"),
            ("pods", CLUSTER4),
            ("second", "10.246.1.0/24"),
        ],
    );
    let mut conf = explicit_conf(&c, 0, &["10.246.1.0/24"]);
    conf["isGateway"] = json!(false);
    let first = c.add_pod_with(0, &conf);
    let mut in_second = conf.clone();
    in_second["args"] = json!({"cni": {"ips": ["10.246.1.10"]}});
    let second = c.add_pod_with(0, &in_second);
    assert_eq!(result_ips(&second.result)[0].to_string(), "10.246.1.10");
    for gw in [gw4(0), "10.246.1.1".to_string()] {
        node.ns
            .ip(&["addr", "add", &format!("{gw}/24"), "dev", "cni0"]);
    }
    first.ns.ip(&["route", "add", "default", "via", &gw4(0)]);
    second
        .ns
        .ip(&["route", "add", "default", "via", "10.246.1.1"]);

    let out: IpAddr = "10.99.0.250".parse().expect("ip");
    for (i, p) in [&first, &second].into_iter().enumerate() {
        assert!(
            ping(&p.ns, out),
            "pod {i} -> outside: not masqueraded?\n{}",
            node.ns.nft_ruleset()
        );
        assert!(wait_counter(&outside, "obs", "node0", i as u64 + 1) > i as u64);
    }
    assert_eq!(outside.nft_counter("inet", "obs", "pods"), 0);
    assert_eq!(outside.nft_counter("inet", "obs", "second"), 0);
    del_all(&[&first, &second]);
}

/// An IPAM twill cannot read (the reference `static`, exec'd from CNI_PATH): the masquerade
/// grows with the pods' subnets and never narrows, so a pod in a second subnet does not take
/// it away from the first; CHECK sees no drift. (Gateways and default routes set by hand, as
/// in `a_pod_in_a_second_range_keeps_the_first_ranges_masquerade`.)
#[test]
fn an_exec_ipam_grows_the_masquerade_and_never_narrows_it() {
    let c = Cluster::new(Fabric::single_l2(1));
    let node = c.node(0);
    let outside = c.fab.attach_host("out", &["10.99.0.250/24"]);
    count_sources(
        &outside,
        &[
            ("node0", "10.99.0.1"),
            ("pods", CLUSTER4),
            ("second", "10.246.1.0/24"),
        ],
    );
    let cni_path = format!(
        "{}:{}",
        plugin().parent().expect("dir").display(),
        conformance::bins::ref_dir().display()
    );
    let mut pods = Vec::new();
    for (addr, gw) in [
        ("10.244.1.77/24", gw4(0)),
        ("10.246.1.77/24", "10.246.1.1".into()),
    ] {
        let mut conf = explicit_conf(&c, 0, &[]);
        conf["cniVersion"] = json!("1.0.0"); // the reference static stops at 1.0.0
        conf["isGateway"] = json!(false);
        conf["ipam"] = json!({"type": "static", "addresses": [{"address": addr}]});
        let ns = Netns::with_tag("pod");
        let id = conformance::unique_name("c");
        let call = |cmd: &str| {
            node.invoke(&plugin(), cmd, &conf, &id, ns.path(), "eth0")
                .cni_path(&cni_path)
                .run()
        };
        let prev = call("ADD").assert_ok();
        let mut conf = conf.clone();
        conf["prevResult"] = prev;
        pods.push((ns, id, conf, gw));
    }
    for (ns, _, _, gw) in &pods {
        node.ns
            .ip(&["addr", "add", &format!("{gw}/24"), "dev", "cni0"]);
        ns.ip(&["route", "add", "default", "via", gw]);
    }
    let out: IpAddr = "10.99.0.250".parse().expect("ip");
    for (i, (ns, ..)) in pods.iter().enumerate() {
        assert!(
            ping(ns, out),
            "pod {i} -> outside: not masqueraded?\n{}",
            node.ns.nft_ruleset()
        );
        assert!(wait_counter(&outside, "obs", "node0", i as u64 + 1) > i as u64);
    }
    assert_eq!(outside.nft_counter("inet", "obs", "pods"), 0);
    assert_eq!(outside.nft_counter("inet", "obs", "second"), 0);
    for (ns, id, conf, _) in &pods {
        let out = node
            .invoke(&plugin(), "CHECK", conf, id, ns.path(), "eth0")
            .cni_path(&cni_path)
            .run();
        out.assert_ok_empty();
        assert!(!out.stderr.contains("drift"), "{out}");
        node.invoke(&plugin(), "DEL", conf, id, ns.path(), "eth0")
            .cni_path(&cni_path)
            .run()
            .assert_ok_empty();
    }
}

/// The rule set follows the config: an ADD with `ipMasq: false` removes the network's table,
/// and the pods then leave with their own addresses.
#[test]
fn ip_masq_turned_off_removes_the_network_table() {
    let c = Cluster::new(Fabric::single_l2(1));
    let node = c.node(0);
    let table = masq_table(&c);
    let outside = c.fab.attach_host("out", &["10.99.0.250/24"]);
    count_sources(&outside, &[("node0", "10.99.0.1"), ("pods", CLUSTER4)]);
    let mut on = c.conf(0);
    on["ipMasq"] = json!(true);
    let p = c.add_pod_with(0, &on);
    assert!(has_table(&node.ns, &table));
    let mut off = c.conf(0);
    off["ipMasq"] = json!(false);
    let q = c.add_pod_with(0, &off);
    assert!(
        !has_table(&node.ns, &table),
        "ipMasq false must remove table inet {table}:\n{}",
        node.ns.nft_ruleset()
    );
    let out: IpAddr = "10.99.0.250".parse().expect("ip");
    assert!(no_reply(&p.ns, out), "unmasqueraded pod got a reply");
    assert!(wait_counter(&outside, "obs", "pods", 1) >= 1);
    assert_eq!(outside.nft_counter("inet", "obs", "node0"), 0);
    // Turning it off again is one cheap request and no error.
    let r = c.add_pod_with(0, &off);
    del_all(&[&p, &q, &r]);
}

// ---------------------------------------------------------------------------------------------
// Forwarding on a node that drops forwarded packets by default
// ---------------------------------------------------------------------------------------------

/// The `(handle, comment)` of every rule in `family filter FORWARD` of `ns` whose comment
/// names twill.
fn twill_forward_rules(ns: &Netns, family: &str) -> Vec<(u64, String)> {
    let out = ns.exec_ok(&["nft", "-j", "list", "chain", family, "filter", "FORWARD"]);
    let v: Value = serde_json::from_str(&out).expect("nft -j");
    v["nftables"]
        .as_array()
        .expect("nftables array")
        .iter()
        .filter_map(|o| o.get("rule"))
        .filter_map(|r| {
            let comment = r["comment"].as_str()?;
            comment
                .starts_with("twill forward ")
                .then(|| (r["handle"].as_u64().unwrap_or(0), comment.to_string()))
        })
        .collect()
}

/// Docker's (and hardened hosts') FORWARD policy DROP, set with iptables-nft in every node:
/// after ADD, pods reach pods on the other node in both families; traffic forwarded by the
/// node that is not the network's stays dropped; iptables-nft still lists the chain. A rule
/// removed by hand comes back with the next ADD; `forwardRules: false` removes them all and the
/// pods are cut off again (so it was twill's rules that let them through).
#[test]
fn forward_policy_drop_node_still_forwards_its_pods_and_nothing_else() {
    let c = Cluster::new(Fabric::single_l2_dual(2));
    // Unrelated forwarding through node 0: host A reaches 192.0.2.2 (on host B) via node 0.
    let a = c.fab.attach_host("a", &["10.99.0.250/24"]);
    let _b = c.fab.attach_host("b", &["10.99.0.251/24", "192.0.2.2/24"]);
    // No ICMP redirect may teach A the direct way to B: every request must cross node 0.
    for key in [
        "net.ipv4.conf.all.accept_redirects",
        "net.ipv4.conf.eth0.accept_redirects",
    ] {
        a.set_sysctl(key, "0");
    }
    for key in [
        "net.ipv4.conf.all.send_redirects",
        "net.ipv4.conf.eth0.send_redirects",
    ] {
        c.node(0).ns.set_sysctl(key, "0");
    }
    a.ip(&["route", "add", "192.0.2.0/24", "via", "10.99.0.1"]);
    c.node(0)
        .ns
        .ip(&["route", "add", "192.0.2.0/24", "via", "10.99.0.251"]);
    let unrelated: IpAddr = "192.0.2.2".parse().expect("ip");
    assert!(ping(&a, unrelated), "control: node 0 forwards A -> B");
    for n in &c.fab.nodes {
        n.ns.exec_ok(&["iptables-nft", "-P", "FORWARD", "DROP"]);
        n.ns.exec_ok(&["ip6tables-nft", "-P", "FORWARD", "DROP"]);
    }
    assert!(no_reply(&a, unrelated), "control: policy DROP drops A -> B");

    let p0 = c.add_pod(0);
    let p1 = c.add_pod(1);
    let ips1 = result_ips(&p1.result);
    assert_eq!(ips1.len(), 2);
    for ip in &ips1 {
        assert!(
            ping(&p0.ns, *ip),
            "pod 0 -> pod 1 {ip} under FORWARD DROP:\n{}",
            c.node(0).ns.nft_ruleset()
        );
    }
    assert!(
        no_reply(&a, unrelated),
        "unrelated forwarded traffic was accepted:\n{}",
        c.node(0).ns.nft_ruleset()
    );
    let node0 = &c.node(0).ns;
    let v4 = twill_forward_rules(node0, "ip");
    let v6 = twill_forward_rules(node0, "ip6");
    assert_eq!((v4.len(), v6.len()), (2, 2), "{}", node0.nft_ruleset());
    assert!(
        v4.iter()
            .all(|(_, c0)| c0.contains(&c.net) && c0.ends_with(CLUSTER4))
    );
    let listed = node0.exec_ok(&["iptables-nft", "-S", "FORWARD"]);
    assert!(
        listed.contains(&format!("-s {CLUSTER4}")) && listed.contains("-j ACCEPT"),
        "iptables-nft must still read the chain:\n{listed}"
    );

    // Drift: one rule deleted by hand, one foreign rule added; the next ADD restores twill's
    // rules only, leaving the foreign rule alone.
    node0.exec_ok(&[
        "nft",
        "delete",
        "rule",
        "ip",
        "filter",
        "FORWARD",
        "handle",
        &v4[0].0.to_string(),
    ]);
    node0.exec_ok(&[
        "iptables-nft",
        "-A",
        "FORWARD",
        "-s",
        "198.51.100.0/24",
        "-j",
        "ACCEPT",
    ]);
    let q0 = c.add_pod(0);
    assert_eq!(twill_forward_rules(node0, "ip").len(), 2);
    assert!(
        node0
            .exec_ok(&["iptables-nft", "-S", "FORWARD"])
            .contains("-s 198.51.100.0/24")
    );
    // A second ADD in sync changes nothing (same handles).
    let before = twill_forward_rules(node0, "ip");
    let q1 = c.add_pod(0);
    assert_eq!(twill_forward_rules(node0, "ip"), before);

    let mut off = c.conf(0);
    off["forwardRules"] = json!(false);
    let r0 = c.add_pod_with(0, &off);
    assert_eq!(twill_forward_rules(node0, "ip"), vec![]);
    assert_eq!(twill_forward_rules(node0, "ip6"), vec![]);
    assert!(
        no_reply(&p0.ns, ips1[0]),
        "without twill's rules node 0 must drop pod traffic again"
    );
    del_all(&[&p0, &p1, &q0, &q1, &r0]);
}

/// An nftables host firewall (`inet filter forward`, policy drop) is opened for the network's
/// pods as well.
#[test]
fn forward_policy_drop_in_an_inet_filter_chain_is_opened_for_pods() {
    let c = Cluster::new(Fabric::single_l2(2));
    for n in &c.fab.nodes {
        n.ns.nft_load(
            "table inet filter {\n chain forward {\n  type filter hook forward priority 0; \
             policy drop;\n }\n}",
        );
    }
    let p0 = c.add_pod(0);
    let p1 = c.add_pod(1);
    let ip1 = result_ips(&p1.result)[0];
    assert!(
        ping(&p0.ns, ip1),
        "pod 0 -> pod 1 under inet filter forward drop:\n{}",
        c.node(0).ns.nft_ruleset()
    );
    del_all(&[&p0, &p1]);
}

// ---------------------------------------------------------------------------------------------
// CHECK and STATUS
// ---------------------------------------------------------------------------------------------

/// The masquerade table and the forward rules are node state, not the attachment's: CHECK
/// succeeds when they drifted and says so on stderr; the next ADD repairs them.
#[test]
fn check_reports_node_rule_drift_on_stderr_without_failing() {
    let c = Cluster::new(Fabric::single_l2(2));
    let node = &c.node(0).ns;
    node.exec_ok(&["iptables-nft", "-P", "FORWARD", "DROP"]);
    let mut conf = c.conf(0);
    conf["ipMasq"] = json!(true);
    let p = c.add_pod_with(0, &conf);
    let out = p.run("CHECK");
    out.assert_ok_empty();
    assert!(!out.stderr.contains("drift"), "{out}");

    let table = masq_table(&c);
    node.exec_ok(&["nft", "delete", "table", "inet", &table]);
    node.exec_ok(&["nft", "flush", "chain", "ip", "filter", "FORWARD"]);
    let out = p.run("CHECK");
    out.assert_ok_empty();
    assert!(
        out.stderr.contains(&table) && out.stderr.contains("forward rules"),
        "CHECK must report both drifts on stderr:\n{out}"
    );

    let q = c.add_pod_with(0, &conf);
    assert!(has_table(node, &table));
    let out = p.run("CHECK");
    out.assert_ok_empty();
    assert!(!out.stderr.contains("drift"), "ADD repaired it:\n{out}");
    del_all(&[&p, &q]);
}

/// A wrapper running the plugin in a private mount namespace where `nft` is hidden (a
/// character device bound over it), as on a node without nftables installed.
struct WithoutNft {
    dir: TempDir,
}

impl WithoutNft {
    fn new() -> WithoutNft {
        let dir = TempDir::new("nonft");
        let script = format!(
            "#!/bin/sh\nexec unshare --mount sh -c 'for f in /usr/sbin/nft /sbin/nft; do \
             [ -e \"$f\" ] && mount --bind /dev/null \"$f\"; done; PATH=/usr/bin:/bin exec \"$0\"' {}\n",
            plugin().display()
        );
        let path = dir.join("bridge-host-gw");
        std::fs::write(&path, script).expect("write wrapper");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("chmod wrapper");
        WithoutNft { dir }
    }

    fn plugin(&self) -> std::path::PathBuf {
        self.dir.join("bridge-host-gw")
    }
}

/// STATUS checks what ADD needs and creates nothing: with ipMasq on and no `nft`, 50 naming
/// nft; with ipMasq and forwardRules off, no nft is needed. ADD without nft fails cleanly.
#[test]
fn status_needs_nft_when_node_rules_are_on_and_creates_nothing() {
    let c = Cluster::new(Fabric::single_l2(1));
    let node = c.node(0);
    let no_nft = WithoutNft::new();
    let status = |conf: &Value| {
        Invocation::new(no_nft.plugin())
            .command("STATUS")
            .stdin_json(conf)
            .on(node.ns.path())
            .run()
    };
    let mut conf = c.conf(0);
    conf["ipMasq"] = json!(true);
    let before = node.ns.nft_ruleset();

    // Control: with nft present STATUS answers 0.
    plain(node, "STATUS", &conf).assert_ok_empty();
    let out = status(&conf);
    let err = out.assert_error(code::NOT_AVAILABLE);
    assert!(error_text(&err).contains("nft"), "{out}");

    let mut off = conf.clone();
    off["ipMasq"] = json!(false);
    off["forwardRules"] = json!(false);
    status(&off).assert_ok_empty();
    assert_eq!(
        node.ns.nft_ruleset(),
        before,
        "STATUS created netfilter state"
    );

    let pod_ns = Netns::with_tag("pod");
    let out = node
        .invoke(
            &no_nft.plugin(),
            "ADD",
            &conf,
            "no-nft",
            pod_ns.path(),
            "eth0",
        )
        .run();
    assert_eq!(out.error_code(), Some(106), "{out}");
    assert_eq!(tw_links(&node.ns), Vec::<String>::new(), "ADD left a veth");
    assert_eq!(c.reservations(0).len(), 0, "ADD left a reservation");
    assert!(node.ns.link("cni0").is_none(), "ADD left the bridge");
}
