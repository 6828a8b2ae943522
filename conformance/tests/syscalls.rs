//! The system calls of an ADD on a node already set up (a second pod), proven from outside
//! with strace: what the fast path no longer asks the kernel.
//!
//! - The run state's nsfs identity (SIOCGSKNS) is asked only when a state is written: an ADD
//!   whose cluster view is unchanged only reads the state's header, so it makes no SIOCGSKNS.
//!   The previous code asked it on every ADD.
//! - The flannel subnet file is read without an fstat and in at most two reads (the content
//!   and its end). The previous code made an fstat and four reads (a growing buffer).
//!
//! Each test runs its own one-node fabric; strace writes its log into a temp dir; every
//! namespace and directory is removed by its guard.

use conformance::hostgw::Cluster;
use conformance::routed::RoutedCluster;
use conformance::strace::Traced;
use conformance::{Fabric, Node, unique_name};
use serde_json::Value;
use std::path::Path;

/// ADDs a first pod with `plugin` (it sets the node up and records the run state), then a
/// second one under strace; returns the second ADD's strace log. Both pods are deleted.
fn second_add_log(node: &Node, plugin: &Path, conf: &Value) -> String {
    let first = node.add_pod(plugin, conf, &unique_name("c"));
    let traced = Traced::new(plugin, "-yy -s 0");
    let second = node.add_pod(&traced.plugin(), conf, &unique_name("c"));
    let log = traced.log();
    for pod in [&second, &first] {
        pod.run("DEL").assert_ok_empty();
    }
    log
}

/// Every line of `log` whose call is one of `names`, whatever the pid prefix.
fn lines_of<'a>(log: &'a str, names: &[&str]) -> Vec<&'a str> {
    log.lines()
        .filter(|l| {
            let body = match l.split_once(' ') {
                Some((pid, rest)) if pid.bytes().all(|b| b.is_ascii_digit()) => rest.trim_start(),
                _ => l.trim_start(),
            };
            names.iter().any(|n| body.starts_with(&format!("{n}(")))
        })
        .collect()
}

fn assert_no_nsfs_lookup_and_one_subnet_read(log: &str, subnet_file: &Path, what: &str) {
    let sksns: Vec<&str> = lines_of(log, &["ioctl"])
        .into_iter()
        .filter(|l| l.contains("SIOCGSKNS"))
        .collect();
    assert!(
        sksns.is_empty(),
        "{what}: an ADD with an unchanged view asks no nsfs identity: {sksns:?}"
    );
    let name = subnet_file.display().to_string();
    let on_subnet = |names: &[&str]| -> Vec<String> {
        lines_of(log, names)
            .into_iter()
            .filter(|l| l.contains(&name))
            .map(str::to_string)
            .collect()
    };
    let stats = on_subnet(&["fstat", "newfstatat", "statx", "stat"]);
    assert!(
        stats.is_empty(),
        "{what}: the subnet file is read without a stat: {stats:?}"
    );
    let reads = on_subnet(&["read", "pread64"]);
    assert!(
        !reads.is_empty() && reads.len() <= 2,
        "{what}: the subnet file is read in one read and the one that sees its end: {reads:?}"
    );
}

#[test]
fn bridge_add_with_an_unchanged_view_asks_no_nsfs_identity_and_reads_the_subnet_file_once() {
    let c = Cluster::new(Fabric::single_l2(1));
    let plugin = conformance::hostgw::plugin();
    let log = second_add_log(c.node(0), &plugin, &c.conf(0));
    assert_no_nsfs_lookup_and_one_subnet_read(&log, &c.node(0).subnet_file, "bridge-host-gw");
}

#[test]
fn routed_add_with_an_unchanged_view_asks_no_nsfs_identity_and_reads_the_subnet_file_once() {
    let c = RoutedCluster::new(Fabric::single_l2(1));
    let plugin = conformance::routed::plugin();
    let log = second_add_log(c.node(0), &plugin, &c.conf(0));
    assert_no_nsfs_lookup_and_one_subnet_read(&log, &c.node(0).subnet_file, "routed-veth");
}

/// The node namespace's `net.ipv4.ip_forward`.
fn ip_forward(node: &Node) -> String {
    node.ns
        .exec_ok(&["cat", "/proc/sys/net/ipv4/ip_forward"])
        .trim()
        .to_string()
}

fn set_ip_forward(node: &Node, value: &str) {
    node.ns.exec_ok(&[
        "sysctl",
        "-q",
        "-w",
        &format!("net.ipv4.ip_forward={value}"),
    ]);
    assert_eq!(
        ip_forward(node),
        value,
        "set ip_forward in the node namespace"
    );
}

/// IPv4 forwarding through netconf: an ADD on a node whose forwarding is off turns it on (on
/// a fresh node and on one already set up), and an ADD on a node where it is on leaves it and
/// never opens /proc/sys/net/ipv4/ip_forward. The previous code read that file on every ADD.
fn forwarding_is_asked_of_netconf_and_set_when_off(node: &Node, plugin: &Path, conf: &Value) {
    set_ip_forward(node, "0");
    let first = node.add_pod(plugin, conf, &unique_name("c"));
    assert_eq!(ip_forward(node), "1", "the first ADD turns forwarding on");

    let traced = Traced::new(plugin, "-yy -s 0");
    let second = node.add_pod(&traced.plugin(), conf, &unique_name("c"));
    let log = traced.log();
    let opened: Vec<&str> = lines_of(&log, &["open", "openat"])
        .into_iter()
        .filter(|l| l.contains("ip_forward"))
        .collect();
    assert!(
        opened.is_empty(),
        "forwarding on: the ADD asks netconf and opens no /proc file: {opened:?}"
    );
    assert_eq!(ip_forward(node), "1");

    set_ip_forward(node, "0");
    let third = node.add_pod(plugin, conf, &unique_name("c"));
    assert_eq!(
        ip_forward(node),
        "1",
        "an ADD on a set-up node whose forwarding was turned off turns it on again"
    );
    for pod in [&third, &second, &first] {
        pod.run("DEL").assert_ok_empty();
    }
}

#[test]
fn bridge_add_turns_ip_forward_on_when_off_and_leaves_it_without_reading_proc_when_on() {
    let c = Cluster::new(Fabric::single_l2(1));
    let plugin = conformance::hostgw::plugin();
    forwarding_is_asked_of_netconf_and_set_when_off(c.node(0), &plugin, &c.conf(0));
}

#[test]
fn routed_add_turns_ip_forward_on_when_off_and_leaves_it_without_reading_proc_when_on() {
    let c = RoutedCluster::new(Fabric::single_l2(1));
    let plugin = conformance::routed::plugin();
    forwarding_is_asked_of_netconf_and_set_when_off(c.node(0), &plugin, &c.conf(0));
}

/// The opens of `log` naming `file`.
fn opens_of<'a>(log: &'a str, file: &str) -> Vec<&'a str> {
    lines_of(log, &["open", "openat"])
        .into_iter()
        .filter(|l| l.contains(file))
        .collect()
}

/// The second ADD of a boot on an unchanged IPAM directory takes "no earlier boot's
/// reservation here" from the owner index and does not open the boot file; the first one
/// (which made it) did. The previous code read the boot file on every ADD.
#[test]
fn second_add_of_a_boot_does_not_read_the_ipam_boot_file() {
    let c = Cluster::new(Fabric::single_l2(1));
    let plugin = conformance::hostgw::plugin();
    let node = c.node(0);
    let conf = c.conf(0);
    let traced_first = Traced::new(&plugin, "-yy -s 0");
    let first = node.add_pod(&traced_first.plugin(), &conf, &unique_name("c"));
    assert!(
        !opens_of(&traced_first.log(), ".twill-boot-id").is_empty(),
        "the first ADD of a boot reads or makes the boot file"
    );
    let log = second_add_log(node, &plugin, &conf);
    let opened = opens_of(&log, ".twill-boot-id");
    assert!(
        opened.is_empty(),
        "a later ADD of the same boot opens no boot file: {opened:?}"
    );
    first.run("DEL").assert_ok_empty();
}
