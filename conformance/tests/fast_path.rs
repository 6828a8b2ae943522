//! The ADD fast path, proven from outside with strace: on a node whose masquerade and forward
//! rules are already right (an earlier pod's ADD made them), an ADD of bridge-host-gw or
//! routed-veth execs nothing, never looks for the `nft` binary, and asks nf_tables exactly
//! once (one chain dump answering both "is there a masquerade table of this network" and
//! "which forward chains does the host have"); with ipMasq on, one table request more. The
//! previous code probed every PATH directory for `nft` and made a table dump and a chain
//! dump on every ADD.
//!
//! Each test runs its own one-node fabric; strace writes its log into a temp dir; every
//! namespace and directory is removed by its guard.

use conformance::hostgw::Cluster;
use conformance::routed::RoutedCluster;
use conformance::strace::Traced;
use conformance::{Fabric, Node, unique_name};
use serde_json::{Value, json};
use std::path::Path;

/// What one traced ADD did: programs exec'd, nf_tables requests, lookups of an `nft` path.
#[derive(Debug)]
struct Seen {
    execs: usize,
    netfilter_sends: usize,
    nft_lookups: Vec<String>,
}

fn seen(log: &str) -> Seen {
    let lines: Vec<&str> = log.lines().collect();
    Seen {
        execs: lines.iter().filter(|l| l.contains("execve(")).count(),
        netfilter_sends: lines
            .iter()
            .filter(|l| l.contains("send") && l.contains("NETLINK:[NETFILTER"))
            .count(),
        nft_lookups: lines
            .iter()
            .filter(|l| l.contains("/nft\""))
            .map(|l| l.to_string())
            .collect(),
    }
}

/// ADDs a first pod with `plugin` (it sets the node rules up), then a second one under
/// strace; returns what the second ADD did. Both pods are deleted.
fn second_add(node: &Node, plugin: &Path, conf: &Value) -> Seen {
    let first = node.add_pod(plugin, conf, &unique_name("c"));
    let traced = Traced::new(
        plugin,
        "-yy -s 0 -e trace=execve,sendto,sendmsg,stat,statx,newfstatat,access,faccessat2",
    );
    let second = node.add_pod(&traced.plugin(), conf, &unique_name("c"));
    let s = seen(&traced.log());
    for pod in [&second, &first] {
        pod.run("DEL").assert_ok_empty();
    }
    s
}

fn assert_fast(s: &Seen, what: &str, netfilter_requests: usize) {
    assert_eq!(
        s.execs, 1,
        "{what}: only the plugin itself is exec'd: {s:?}"
    );
    assert_eq!(
        s.nft_lookups,
        Vec::<String>::new(),
        "{what}: nothing looks for nft when no rule needs writing"
    );
    assert_eq!(
        s.netfilter_sends, netfilter_requests,
        "{what}: nf_tables requests: {s:?}"
    );
}

#[test]
fn bridge_add_on_a_node_with_its_rules_in_place_asks_nf_tables_once_and_execs_nothing() {
    let c = Cluster::new(Fabric::single_l2(1));
    let plugin = conformance::hostgw::plugin();
    let conf = c.conf(0);
    assert_eq!(
        conf.get("ipMasq"),
        None,
        "ipMasq off (flanneld masquerades)"
    );
    let s = second_add(c.node(0), &plugin, &conf);
    assert_fast(&s, "bridge-host-gw, ipMasq off", 1);

    let mut masq = c.conf(0);
    masq["ipMasq"] = json!(true);
    let s = second_add(c.node(0), &plugin, &masq);
    assert_fast(&s, "bridge-host-gw, ipMasq on", 2);
}

#[test]
fn routed_add_on_a_node_with_its_rules_in_place_asks_nf_tables_once_and_execs_nothing() {
    let c = RoutedCluster::new(Fabric::single_l2(1));
    let plugin = conformance::routed::plugin();
    let s = second_add(c.node(0), &plugin, &c.conf(0));
    assert_fast(&s, "routed-veth", 1);
}
