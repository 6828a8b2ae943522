//! Black-box conformance of twill's `ipip` plugin (Calico's IP-in-IP data plane).
//!
//! The fabric is routed-veth's (see `conformance::routed`): node `i` (0-based) has the
//! underlay address `10.99.0.(i+1)`, the block `10.244.(i+1).0/24` in its own subnet file,
//! and its own dataDir, runDir and peers file; the plugin runs "on" a node via `nsenter
//! --net`. Nothing touches the root namespace; every namespace and directory is removed by its
//! guard, also on failure.
//!
//! Tests:
//! - On a kernel without ipip (this development machine): every command in every CNI version,
//!   where ADD ends in the clear missing-ipip error (code 50, naming CONFIG_NET_IPIP and
//!   `modprobe ipip`) leaving nothing behind, CHECK and STATUS answer the same, DEL and GC
//!   succeed. They return early on a kernel that has ipip (the VM runs the `vm_*` ones).
//! - Anywhere: refused configs (IPv6 ranges, bad keys) change nothing; a link of another kind
//!   with the device's name is a conflict left alone; GC removes the orphans' host veths and
//!   reservations; DEL is idempotent.
//! - `vm_*` (`#[ignore]`: they need a kernel with ipip; conformance/tests/vm.rs runs them in
//!   a VM on Debian's cloud kernel): 3 nodes x 3 pods, all pairs through the tunnel, the tunnel
//!   and pod MTU proven with DF pings, DEL leaves nothing of the pods.

use conformance::hostgw::{NodeSnapshot, error_text, in_cidr, pod_cidr4, with_attachments};
use conformance::routed::{self as rt, RoutedCluster, blackholes, host_routes, host_veths};
use conformance::{
    CNI_VERSIONS, Fabric, Invocation, Netns, Node, Outcome, Pod, ping, result_ips, twill_bin,
    unique_name,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;

const NOT_AVAILABLE: u64 = 50;
const INVALID_CONFIG: u64 = 7;
const INCOMPATIBLE_VERSION: u64 = 1;
const CONFLICT: u64 = 104;
/// The tunnel MTU on the fabric (underlay 1500 minus the 20-byte outer header).
const TUNNEL_MTU: u32 = 1480;

fn plugin() -> PathBuf {
    twill_bin("ipip")
}

/// Node `i`'s ipip config at CNI version `v` (routed-veth's keys, type ipip).
fn conf_v(c: &RoutedCluster, i: usize, v: &str) -> Value {
    let mut conf = c.conf_v(i, v);
    conf["type"] = json!("ipip");
    conf
}

fn conf(c: &RoutedCluster, i: usize) -> Value {
    conf_v(c, i, "1.1.0")
}

/// A GC or STATUS call of ipip on `node` (no attachment variables).
fn plain(node: &Node, cmd: &str, conf: &Value) -> Outcome {
    Invocation::new(plugin())
        .command(cmd)
        .stdin_json(conf)
        .on(node.ns.path())
        .run()
}

/// Whether this kernel can make ipip devices (tried in a namespace of its own, with
/// endpoints: one without any would collide with the kernel's `tunl0` where ipip exists).
fn kernel_has_ipip() -> bool {
    let ns = Netns::with_tag("probe");
    let probe = [
        "ip",
        "link",
        "add",
        "twprobe",
        "type",
        "ipip",
        "local",
        "192.0.2.1",
        "remote",
        "192.0.2.2",
    ];
    ns.exec(&probe).status.success()
}

/// True (and says so) when the kernel has ipip, so a test of the missing-ipip path has
/// nothing to prove here.
fn has_ipip_so_skip() -> bool {
    let has = kernel_has_ipip();
    if has {
        eprintln!("this kernel has ipip: the missing-ipip path cannot be taken here");
    }
    has
}

/// Asserts `err` is the missing-ipip error: what is missing and how to get it.
fn assert_names_missing_ipip(err: &Value, out: &Outcome) {
    let text = error_text(err);
    for needle in ["CONFIG_NET_IPIP", "modprobe ipip", "tunl0"] {
        assert!(text.contains(needle), "error names {needle}\n{out}");
    }
    assert!(
        !text.contains("Some("),
        "no Debug output in the message\n{out}"
    );
}

// ---------------------------------------------------------------------------------------------
// Without ipip: every command in every version
// ---------------------------------------------------------------------------------------------

/// A prevResult of version `v` for CHECK (0.4.0 and later shapes).
fn prev_result(v: &str, ip: &str) -> Value {
    let mut ipc = json!({"address": format!("{ip}/32"), "gateway": rt::GW4, "interface": 1});
    if v == "0.4.0" {
        ipc["version"] = json!("4");
    }
    json!({
        "cniVersion": v,
        "interfaces": [{"name": "rvtx", "mac": rt::HOST_MAC}, {"name": "eth0", "sandbox": "/x"}],
        "ips": [ipc],
        "routes": [{"dst": "0.0.0.0/0", "gw": rt::GW4}],
    })
}

fn version_matrix(v: &str) {
    if has_ipip_so_skip() {
        return;
    }
    let c = RoutedCluster::new(Fabric::single_l2(1));
    let node = c.node(0);
    let conf = conf_v(&c, 0, v);
    let before = NodeSnapshot::take(node);

    let (pod, out) = node.try_add_pod(&plugin(), &conf, &unique_name("c"));
    let add_err = out.assert_error(NOT_AVAILABLE);
    assert_names_missing_ipip(&add_err, &out);
    let after = NodeSnapshot::take(node);
    assert_eq!(
        after,
        before,
        "{v}: failed ADD changed the node:\n{}",
        before.diff(&after)
    );
    assert_eq!(
        pod.ns.link_names(),
        vec!["lo".to_string()],
        "{v}: pod netns emptied"
    );

    // What a runtime does after a failed ADD: DEL, twice.
    pod.run("DEL").assert_ok_empty();
    pod.run("DEL").assert_ok_empty();

    let mut with_prev = conf.clone();
    with_prev["prevResult"] = prev_result(v, "10.244.1.2");
    let out = pod.call("CHECK", &with_prev);
    if conformance::hostgw::version_at_least(v, "0.4.0") {
        assert_names_missing_ipip(&out.assert_error(NOT_AVAILABLE), &out);
    } else {
        out.assert_error(INCOMPATIBLE_VERSION);
    }

    let gc = with_attachments(&conf, &[]);
    let gc_out = plain(node, "GC", &gc);
    let status = plain(node, "STATUS", &conf);
    if conformance::hostgw::version_at_least(v, "1.1.0") {
        gc_out.assert_ok_empty();
        let err = status.assert_error(NOT_AVAILABLE);
        assert_eq!(
            err["msg"], add_err["msg"],
            "STATUS says what ADD said\n{status}"
        );
    } else {
        gc_out.assert_error(INCOMPATIBLE_VERSION);
        status.assert_error(INCOMPATIBLE_VERSION);
    }
    let end = NodeSnapshot::take(node);
    assert_eq!(
        end,
        before,
        "{v}: DEL/CHECK/GC/STATUS changed the node:\n{}",
        before.diff(&end)
    );
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

/// Without ipip a named device is not made either: code 50 naming it, nothing left (no
/// device, veth, route or reservation).
#[test]
fn without_ipip_a_named_device_fails_the_same_and_leaves_nothing() {
    if has_ipip_so_skip() {
        return;
    }
    let c = RoutedCluster::new(Fabric::single_l2(1));
    let node = c.node(0);
    let mut named = conf(&c, 0);
    named["device"] = json!("twip0");
    named["crossSubnet"] = json!(true);
    let before = NodeSnapshot::take(node);
    let (pod, out) = node.try_add_pod(&plugin(), &named, &unique_name("c"));
    let err = out.assert_error(NOT_AVAILABLE);
    let text = error_text(&err);
    assert!(
        text.contains("twip0") && text.contains("CONFIG_NET_IPIP"),
        "{out}"
    );
    let after = NodeSnapshot::take(node);
    assert_eq!(
        after,
        before,
        "failed ADD changed the node:\n{}",
        before.diff(&after)
    );
    assert_eq!(pod.ns.link_names(), vec!["lo".to_string()]);
    let status = plain(node, "STATUS", &named);
    assert_eq!(
        status.assert_error(NOT_AVAILABLE)["msg"],
        err["msg"],
        "{status}"
    );
}

// ---------------------------------------------------------------------------------------------
// Anywhere: refused configs, conflicts, DEL, GC
// ---------------------------------------------------------------------------------------------

/// Bad configs are code 7 naming what is wrong, and change nothing on the node; an IPv6
/// range (here from a dual-stack subnet file) is refused because ipip carries IPv4 only.
#[test]
fn refused_configs_and_ipv6_ranges_are_code_7_and_change_nothing() {
    let c = RoutedCluster::new(Fabric::single_l2_dual(1));
    let node = c.node(0);
    let before = NodeSnapshot::take(node);
    let (_pod, out) = node.try_add_pod(&plugin(), &conf(&c, 0), &unique_name("c"));
    let err = out.assert_error(INVALID_CONFIG);
    let text = error_text(&err);
    assert!(text.contains("IPv4 only") && text.contains("IPv6"), "{out}");
    let status = plain(node, "STATUS", &conf(&c, 0));
    assert!(
        error_text(&status.assert_error(NOT_AVAILABLE)).contains("IPv4 only"),
        "STATUS names the IPv6 range\n{status}"
    );
    for (extra, key) in [
        (
            json!({"ipam": {"type": "host-local", "ranges": [[{"subnet": "fd00:7::/64"}]]}}),
            "IPv4 only",
        ),
        (
            json!({"ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/24"}]]},
            "device": "no/slash"}),
            "device",
        ),
        (
            json!({"ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/24"}]]},
            "crosssubnet": true}),
            "crossSubnet",
        ),
        (
            json!({"ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/24"}]]},
            "policy": {"type": "k8s"}}),
            "policy",
        ),
        (json!({"ipam": {}}), "ipam"),
        (
            json!({"ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/24"}]]},
            "mtu": 20}),
            "mtu",
        ),
    ] {
        let mut cf = conf(&c, 0);
        for (k, v) in extra.as_object().expect("object") {
            cf[k] = v.clone();
        }
        let (_pod, out) = node.try_add_pod(&plugin(), &cf, &unique_name("c"));
        let err = out.assert_error(INVALID_CONFIG);
        assert!(
            error_text(&err).contains(key),
            "{extra}: names {key}\n{out}"
        );
    }
    let after = NodeSnapshot::take(node);
    assert_eq!(
        after,
        before,
        "refused configs changed the node:\n{}",
        before.diff(&after)
    );
}

/// A link of another kind holding the configured device name is a conflict (104) naming it;
/// it is left as it was, and nothing else is made.
#[test]
fn a_link_of_another_kind_named_as_the_device_is_a_conflict_left_alone() {
    let c = RoutedCluster::new(Fabric::single_l2(1));
    let node = c.node(0);
    node.ns.ip(&["link", "add", "twip0", "type", "bridge"]);
    let mut cf = conf(&c, 0);
    cf["device"] = json!("twip0");
    let before = NodeSnapshot::take(node);
    let (pod, out) = node.try_add_pod(&plugin(), &cf, &unique_name("c"));
    let err = out.assert_error(CONFLICT);
    let text = error_text(&err);
    assert!(text.contains("twip0") && text.contains("bridge"), "{out}");
    let after = NodeSnapshot::take(node);
    assert_eq!(
        after,
        before,
        "conflict changed the node:\n{}",
        before.diff(&after)
    );
    assert_eq!(
        node.ns.link("twip0").and_then(|l| l.kind).as_deref(),
        Some("bridge")
    );
    assert_eq!(pod.ns.link_names(), vec!["lo".to_string()]);
}

/// DEL succeeds and changes nothing for an attachment that never came to be: without a netns,
/// with prevResult, for a container that never existed, twice.
#[test]
fn del_is_idempotent_for_attachments_that_never_came_to_be() {
    let c = RoutedCluster::new(Fabric::single_l2(1));
    let node = c.node(0);
    let before = NodeSnapshot::take(node);
    let ghost = unique_name("ghost");
    for netns in ["/run/netns/does-not-exist", ""] {
        for prev in [None, Some(prev_result("1.1.0", "10.244.1.9"))] {
            let mut cf = conf(&c, 0);
            if let Some(p) = &prev {
                cf["prevResult"] = p.clone();
            }
            let mut inv = Invocation::new(plugin())
                .command("DEL")
                .container_id(&ghost)
                .ifname("eth0")
                .stdin_json(&cf)
                .on(node.ns.path());
            if !netns.is_empty() {
                inv = inv.netns(netns);
            }
            inv.run().assert_ok_empty();
        }
    }
    let after = NodeSnapshot::take(node);
    assert_eq!(
        after,
        before,
        "DEL changed the node:\n{}",
        before.diff(&after)
    );
}

/// GC of the network removes exactly the orphans: their host veths (with their host routes)
/// and reservations, keeping the valid attachment. The attachments are made with routed-veth
/// on the same network and dataDir (ipip pods are wired the same way).
#[test]
fn gc_removes_the_orphans_host_veths_and_reservations_and_keeps_the_valid() {
    let c = RoutedCluster::new(Fabric::single_l2(1));
    let node = c.node(0);
    let keep = c.add_pod(0);
    let orphans: Vec<Pod> = (0..2).map(|_| c.add_pod(0)).collect();
    assert_eq!(host_veths(&node.ns).len(), 3);
    let gc = with_attachments(&conf(&c, 0), &[(&keep.container_id, "eth0")]);
    plain(node, "GC", &gc).assert_ok_empty();
    assert_eq!(host_veths(&node.ns), vec![rt::host_veth(&keep.result)]);
    let kept_ip = keep.ip().expect("pod ip").to_string();
    assert_eq!(
        host_routes(&node.ns).into_keys().collect::<Vec<_>>(),
        vec![kept_ip.clone()],
        "only the valid pod's host route stays"
    );
    let reserved: Vec<String> = c.reservations(0).into_keys().collect();
    assert_eq!(
        reserved,
        vec![kept_ip],
        "only the valid pod's address stays reserved"
    );
    for o in &orphans {
        assert!(
            o.ns.link("eth0").is_none(),
            "orphan's pod end went with its pair"
        );
    }
    plain(node, "GC", &gc).assert_ok_empty();
    assert_eq!(
        host_veths(&node.ns).len(),
        1,
        "a second GC keeps the valid one"
    );
}

/// CHECK without prevResult is code 7 saying it needs it.
#[test]
fn check_without_prev_result_is_code_7() {
    let c = RoutedCluster::new(Fabric::single_l2(1));
    let node = c.node(0);
    let pod_ns = Netns::with_tag("pod");
    let out = node
        .invoke(
            &plugin(),
            "CHECK",
            &conf(&c, 0),
            &unique_name("c"),
            pod_ns.path(),
            "eth0",
        )
        .run();
    let err = out.assert_error(INVALID_CONFIG);
    assert!(error_text(&err).contains("prevResult"), "{out}");
}

// ---------------------------------------------------------------------------------------------
// With ipip (the VM): 3 nodes x 3 pods through the tunnel
// ---------------------------------------------------------------------------------------------

/// twill's peer routes on a node: destination → (gateway, device, onlink).
fn tunnel_routes(ns: &Netns) -> BTreeMap<String, (String, String, bool)> {
    ns.main_routes()
        .into_iter()
        .filter(|r| r.protocol.as_deref() == Some(conformance::hostgw::TWILL_PROTO))
        .filter_map(|r| {
            let onlink = r.raw["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x == "onlink"));
            Some((r.dst, (r.gateway?.to_string(), r.dev?, onlink)))
        })
        .collect()
}

/// Packets received on a node's tunl0 (`ip -s` counters).
fn tunnel_rx_packets(ns: &Netns) -> u64 {
    let out = ns.exec_ok(&["ip", "-j", "-s", "link", "show", "tunl0"]);
    let v: Value = serde_json::from_str(&out).expect("ip -j -s link");
    v[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .expect("rx packets")
}

/// The `targets` that do not answer up to 3 pings of one second from inside `from`, tried at
/// once from one shell inside the namespace (one exec per source, not per target, and the
/// waits overlap: that is what costs under the VM's emulation).
fn unanswered(from: &Netns, targets: &[IpAddr]) -> Vec<IpAddr> {
    let list: Vec<String> = targets.iter().map(IpAddr::to_string).collect();
    let script = format!(
        "p() {{ ping -n -q -c1 -W1 $1 >/dev/null 2>&1; }}; \
         for t in {}; do (p $t || p $t || p $t || echo $t) & done; wait",
        list.join(" ")
    );
    let out = from.exec(&["sh", "-c", &script]);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect()
}

/// One ping of `size` payload bytes with DF set from `from` to `ip`: whether it was answered.
fn df_ping(from: &Netns, ip: IpAddr, size: u32) -> bool {
    let (s, t) = (size.to_string(), ip.to_string());
    (0..3).any(|_| {
        from.exec(&["ping", "-n", "-q", "-c1", "-W1", "-M", "do", "-s", &s, &t])
            .status
            .success()
    })
}

#[test]
#[ignore = "needs a kernel with ipip: run inside the VM (conformance/tests/vm.rs)"]
fn vm_mesh_3x3_through_the_tunnel_with_df_pings_at_the_tunnel_mtu() {
    assert!(kernel_has_ipip(), "this test needs a kernel with ipip");
    let c = RoutedCluster::new(Fabric::single_l2(3));
    let mut pods: Vec<(usize, Pod)> = Vec::new();
    for i in 0..3 {
        for _ in 0..3 {
            pods.push((
                i,
                c.node(i)
                    .add_pod(&plugin(), &conf(&c, i), &unique_name("c")),
            ));
        }
    }
    for (n, (i, p)) in pods.iter().enumerate() {
        let ips = result_ips(&p.result);
        assert_eq!(ips.len(), 1, "{}", p.result);
        assert!(in_cidr(&ips[0], &pod_cidr4(*i)), "{}", p.result);
        if n % 3 == 0 {
            // One pod per node is read back (each read is an exec, slow under emulation).
            let eth0 = p.ns.link("eth0").expect("pod eth0");
            assert_eq!(eth0.mtu, TUNNEL_MTU, "pod MTU = tunnel MTU");
            assert_eq!(p.ns.global_cidrs("eth0"), vec![format!("{}/32", ips[0])]);
        }
    }
    for i in 0..3 {
        let ns = &c.node(i).ns;
        let tunl = ns.link("tunl0").expect("tunl0");
        assert_eq!((tunl.mtu, tunl.up), (TUNNEL_MTU, true), "node {i}: tunl0");
        let block_first = pod_cidr4(i).replace("/24", "/32");
        assert!(
            ns.global_cidrs("tunl0").contains(&block_first),
            "node {i}: tunl0 holds {block_first}: {:?}",
            ns.global_cidrs("tunl0")
        );
        let want: BTreeMap<String, (String, String, bool)> = (0..3)
            .filter(|j| *j != i)
            .map(|j| {
                let gw = c.node(j).ip.to_string();
                (pod_cidr4(j), (gw, "tunl0".to_string(), true))
            })
            .collect();
        assert_eq!(tunnel_routes(ns), want, "node {i}: peers via tunl0 onlink");
        assert_eq!(
            blackholes(ns),
            c.own_blocks(i),
            "node {i}: own block blackholed"
        );
        assert_eq!(host_routes(ns).len(), 3, "node {i}: one host route per pod");
    }

    // One cross-node ping first: when the tunnel carries nothing, fail at once with the
    // nodes' tunnel state instead of timing out over every pair.
    let first = pods[3].1.ip().expect("pod ip");
    if !ping(&pods[0].1.ns, first) {
        let state: Vec<String> = (0..2)
            .map(|i| {
                let ns = &c.node(i).ns;
                format!(
                    "node {i}:\n{}{}{}",
                    ns.exec_ok(&["ip", "-d", "-s", "link", "show", "tunl0"]),
                    ns.exec_ok(&["ip", "addr"]),
                    ns.exec_ok(&["ip", "route"])
                )
            })
            .collect();
        panic!(
            "pod 0 on node 0 cannot reach pod 3 on node 1 ({first}):\n{}",
            state.join("\n")
        );
    }
    let rx_before: Vec<u64> = (0..3).map(|i| tunnel_rx_packets(&c.node(i).ns)).collect();
    let mut failures = Vec::new();
    for (a, (i, p)) in pods.iter().enumerate() {
        let targets: Vec<IpAddr> = pods
            .iter()
            .enumerate()
            .filter(|(b, _)| *b != a)
            .filter_map(|(_, (_, q))| q.ip())
            .collect();
        for ip in unanswered(&p.ns, &targets) {
            failures.push(format!("pod {a} on node {i} -> {ip}"));
        }
    }
    // Each node reaches the pods of the next node through the tunnel (from tunl0's address).
    for n in 0..3 {
        let next: Vec<IpAddr> = pods
            .iter()
            .filter(|(j, _)| *j == (n + 1) % 3)
            .filter_map(|(_, p)| p.ip())
            .collect();
        for ip in unanswered(&c.node(n).ns, &next) {
            failures.push(format!("node {n} -> pod {ip} on node {}", (n + 1) % 3));
        }
    }
    assert!(
        failures.is_empty(),
        "unreachable:\n  {}",
        failures.join("\n  ")
    );
    for (i, before) in rx_before.iter().enumerate() {
        let after = tunnel_rx_packets(&c.node(i).ns);
        assert!(
            after > *before,
            "node {i}: tunl0 received no packets ({before} -> {after})"
        );
    }

    // The largest packet the tunnel carries (IP 20 + ICMP 8 + payload = 1480) crosses with DF;
    // one byte more is refused by the pod's own MTU.
    let (from, to) = (&pods[0].1, &pods[3].1);
    let to_ip = to.ip().expect("pod ip");
    let max = TUNNEL_MTU - 28;
    assert!(
        df_ping(&from.ns, to_ip, max),
        "DF ping of {max} bytes across the tunnel"
    );
    assert!(
        !df_ping(&from.ns, to_ip, max + 1),
        "DF ping of {} bytes must not pass",
        max + 1
    );

    let all_ips: Vec<IpAddr> = pods.iter().filter_map(|(_, p)| p.ip()).collect();
    for (_, p) in &pods {
        p.run("DEL").assert_ok_empty();
    }
    for i in 0..3 {
        let ns = &c.node(i).ns;
        assert_eq!(host_veths(ns), Vec::<String>::new(), "node {i}: host veths");
        assert_eq!(host_routes(ns), BTreeMap::new(), "node {i}: host routes");
        assert_eq!(c.reservations(i), BTreeMap::new(), "node {i}: reservations");
        for r in ns.routes() {
            let dst = r.dst.split('/').next().unwrap_or("");
            assert!(
                !all_ips.iter().any(|ip| ip.to_string() == dst),
                "node {i}: per-pod route left: {}",
                r.raw
            );
        }
    }
}
