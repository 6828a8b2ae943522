//! A plugin call maps the code it runs, not its whole binary.
//!
//! The kernel maps 64 KiB of file pages around every page fault (fault-around), so a call's
//! peak RSS follows how spread out the code it runs is. `make build` links the functions a
//! runtime's calls run side by side (`scripts/hot-functions.order`, given to lld by
//! `scripts/link-ordered.sh`): an ADD of bridge-host-gw then maps under 60% of its binary,
//! where the unordered link mapped 95% of it. These tests hold that layout for the release
//! binaries (`TWILL_BIN_DIR` ending in `release`, as `make test` sets it): a peak RSS above
//! 70% of the binary means the list is stale (`make hot-functions`) or the link ignored it.
//! A debug build is never laid out: there the tests say so and check nothing.
//!
//! Peak RSS is the child's `ru_maxrss` as `twill-spawn` (bench crate) reports it; the plugin
//! runs in a node namespace of the test's own, with pods of its own.

use conformance::hostgw::Cluster;
use conformance::routed::RoutedCluster;
use conformance::{Fabric, Netns, Node, Outcome, twill_bin, unique_name};
use serde_json::Value;
use std::path::Path;

/// The share of its binary's size a call may map at its peak.
const MAX_SHARE: f64 = 0.70;

/// True when the binaries under test are `make build`'s (laid out); says so when not.
fn laid_out() -> bool {
    let dir = twill_bin("twill-spawn");
    let release = dir
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|n| n == "release");
    if !release {
        eprintln!(
            "footprint: {} is not a release build; only `make build` lays the functions out",
            dir.display()
        );
    }
    release
}

/// The peak RSS in KiB that twill-spawn reports for the wrapped call.
fn peak_kib(out: &Outcome) -> u64 {
    out.stderr
        .lines()
        .find_map(|l| l.strip_prefix("twill-spawn: maxrss_kb="))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS from twill-spawn\n{out}"))
}

/// Runs `command` of `plugin` on `node` under twill-spawn for pod netns `pod`; returns the
/// outcome (asserted successful) and the call's peak RSS in KiB.
fn measured(
    node: &Node,
    plugin: &Path,
    command: &str,
    conf: &Value,
    id: &str,
    pod: &Netns,
) -> (Outcome, u64) {
    let out = node
        .invoke(plugin, command, conf, id, pod.path(), "eth0")
        .under(twill_bin("twill-spawn"))
        .run();
    assert!(out.success(), "{command} failed\n{out}");
    let kib = peak_kib(&out);
    (out, kib)
}

/// Asserts a call's peak RSS is at most MAX_SHARE of `plugin`'s size.
fn assert_laid_out(plugin: &Path, what: &str, kib: u64) {
    let size_kib = std::fs::metadata(plugin).expect("plugin metadata").len() / 1024;
    let share = kib as f64 / size_kib as f64;
    eprintln!("footprint: {what}: peak RSS {kib} KiB of a {size_kib} KiB binary ({share:.2})");
    assert!(
        share <= MAX_SHARE,
        "{what} mapped {kib} KiB of its {size_kib} KiB binary ({share:.2} > {MAX_SHARE}): the \
         functions it runs are not laid out together (stale scripts/hot-functions.order: run \
         `make hot-functions`; or the link did not go through scripts/link-ordered.sh)"
    );
}

#[test]
fn a_bridge_host_gw_add_and_del_map_the_code_they_run_not_the_whole_binary() {
    if !laid_out() {
        return;
    }
    let c = Cluster::new(Fabric::single_l2(1));
    let _first = c.add_pod(0); // makes the bridge: the measured ADD is a node's usual one
    let plugin = twill_bin("bridge-host-gw");
    let (pod, id) = (Netns::with_tag("pod"), unique_name("c"));
    let (_, add) = measured(c.node(0), &plugin, "ADD", &c.conf(0), &id, &pod);
    assert_laid_out(&plugin, "bridge-host-gw ADD", add);
    let (_, del) = measured(c.node(0), &plugin, "DEL", &c.conf(0), &id, &pod);
    assert_laid_out(&plugin, "bridge-host-gw DEL", del);
}

#[test]
fn a_routed_veth_add_maps_the_code_it_runs_not_the_whole_binary() {
    if !laid_out() {
        return;
    }
    let c = RoutedCluster::new(Fabric::single_l2(1));
    let _first = c.add_pod(0);
    let plugin = twill_bin("routed-veth");
    let (pod, id) = (Netns::with_tag("pod"), unique_name("c"));
    let (_, add) = measured(c.node(0), &plugin, "ADD", &c.conf(0), &id, &pod);
    assert_laid_out(&plugin, "routed-veth ADD", add);
    measured(c.node(0), &plugin, "DEL", &c.conf(0), &id, &pod);
}
