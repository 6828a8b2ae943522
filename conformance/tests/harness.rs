//! Self-tests of the harness, run against the reference Go plugins (/usr/lib/cni or
//! $REF_CNI_DIR): they prove the guards clean up, the readers see real kernel state, the
//! error-shape checks can fail, and the fabrics carry packets.

use conformance::{
    DirSnapshot, Fabric, Invocation, Netns, TempDir, no_reply, ping, ref_bin, result_ips,
    unique_name,
};
use serde_json::{Value, json};
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

fn host_local_conf(name: &str, data_dir: &Path, subnet: &str) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": name,
        "type": "host-local",
        "ipam": {
            "type": "host-local",
            "dataDir": data_dir,
            "ranges": [[{"subnet": subnet}]],
            "routes": [{"dst": "0.0.0.0/0"}]
        }
    })
}

#[test]
fn netns_guard_creates_and_removes_namespace() {
    let path;
    let name;
    {
        let ns = Netns::new();
        path = ns.path().to_path_buf();
        name = ns.name().to_string();
        assert!(path.exists(), "{} not created", path.display());
        assert!(name.contains(&std::process::id().to_string()));
        assert_eq!(ns.link_names(), vec!["lo".to_string()]);
        let lo = ns.link("lo").expect("lo");
        assert!(!lo.up, "lo of a fresh netns is down");
        ns.lo_up();
        assert!(ns.link("lo").expect("lo").up);
    }
    assert!(!path.exists(), "netns {name} not removed on drop");
}

#[test]
fn netns_guard_removes_namespace_on_panic() {
    let (tx, rx) = std::sync::mpsc::channel();
    let res = std::thread::spawn(move || {
        let ns = Netns::new();
        tx.send(ns.path().to_path_buf()).expect("send");
        panic!("deliberate panic with a live netns");
    })
    .join();
    assert!(res.is_err());
    let path = rx.recv().expect("path");
    assert!(!path.exists(), "netns {} survived a panic", path.display());
}

#[test]
fn exec_runs_inside_the_namespace() {
    let ns = Netns::new();
    ns.ip(&["link", "add", "br-x", "type", "bridge"]);
    // `ip link` run through nsenter sees the namespace's links, not the root's.
    let out = ns.exec_ok(&["ip", "-o", "link", "show"]);
    assert!(out.contains("br-x"), "{out}");
    let root = conformance::process::run_ok("ip", &["-o", "link", "show"]);
    assert!(
        !root.contains("br-x"),
        "bridge leaked into the root namespace"
    );
    // sysctls read inside are the namespace's own.
    assert_eq!(ns.sysctl("net.ipv4.ip_forward"), "0");
    ns.set_sysctl("net.ipv4.ip_forward", "1");
    assert_eq!(ns.sysctl("net/ipv4/ip_forward"), "1");
}

#[test]
fn temp_dir_is_removed_on_drop() {
    let p;
    {
        let t = TempDir::new("x");
        p = t.path().to_path_buf();
        std::fs::write(t.join("f"), b"1").expect("write");
        std::fs::create_dir_all(t.join("a/b")).expect("mkdir");
    }
    assert!(!p.exists());
}

#[test]
fn snapshot_sees_every_change() {
    let t = TempDir::new("snap");
    std::fs::write(t.join("a"), b"1").expect("write");
    let before = DirSnapshot::take(t.path());
    assert!(before.diff(&DirSnapshot::take(t.path())).is_empty());
    std::fs::write(t.join("a"), b"2").expect("write");
    std::fs::create_dir(t.join("d")).expect("mkdir");
    let after = DirSnapshot::take(t.path());
    let d = before.diff(&after);
    assert_eq!(d.len(), 2, "{d:?}");
    assert!(d[0].starts_with("changed: a"), "{d:?}");
    assert!(d[1].starts_with("added: d"), "{d:?}");
    assert_eq!(after.get("a"), Some(&b"2"[..]));
    before.restore(t.path());
    assert!(
        before.diff(&DirSnapshot::take(t.path())).is_empty(),
        "restore is exact"
    );
}

#[test]
fn reference_host_local_add_del_round_trip() {
    let t = TempDir::new("ref");
    let ns = Netns::new();
    let conf = host_local_conf(&unique_name("net"), &t.join("data"), "10.77.0.0/24");
    let name = conf["name"].as_str().expect("name").to_string();
    let id = unique_name("c");
    let call = |cmd: &str| {
        Invocation::new(ref_bin("host-local"))
            .command(cmd)
            .container_id(&id)
            .netns(ns.path())
            .ifname("eth0")
            .stdin_json(&conf)
    };
    let res = call("ADD").run().assert_ok();
    assert_eq!(res["ips"][0]["address"], "10.77.0.2/24");
    let snap = DirSnapshot::take(t.join("data").join(&name));
    assert_eq!(
        snap.get("10.77.0.2"),
        Some(format!("{id}\r\neth0").as_bytes())
    );
    call("DEL").run().assert_ok_empty();
    assert!(
        DirSnapshot::take(t.join("data").join(&name))
            .get("10.77.0.2")
            .is_none()
    );
}

#[test]
fn error_shape_check_can_fail() {
    // The reference 1.1.1 error object lacks cniVersion: the strict check must reject it.
    let out = Invocation::new(ref_bin("host-local"))
        .command("ADD")
        .container_id("x")
        .netns("/nonexistent")
        .ifname("eth0")
        .stdin_raw("{not json")
        .run();
    assert_ne!(out.exit_code, 0);
    assert_eq!(out.error_code(), Some(6));
    let err = out
        .check_error(&[6])
        .expect_err("missing cniVersion must be rejected");
    assert!(err.contains("cniVersion"), "{err}");
    // A success is never accepted as an error.
    let ok = Invocation::new("/bin/true").run();
    assert!(ok.check_error(&[6]).is_err());
}

#[test]
fn invocation_bounds_wall_time() {
    let res = std::panic::catch_unwind(|| {
        Invocation::new("/bin/sh")
            .stdin_raw("sleep 5")
            .timeout(Duration::from_millis(200))
            .run()
    });
    assert!(res.is_err(), "a hanging plugin must fail the test");
}

#[test]
fn invocation_passes_only_cni_environment() {
    let out = Invocation::new("/usr/bin/env")
        .command("ADD")
        .container_id("abc")
        .ifname("eth0")
        .cni_args("IgnoreUnknown=1")
        .unset("CNI_PATH")
        .run();
    let mut lines: Vec<&str> = out.stdout_raw.lines().collect();
    lines.sort();
    // Besides the CNI variables, only host-local's private owner-index dir (no test writes
    // under /run/twill).
    let index = format!(
        "{}={}",
        conformance::INDEX_DIR_ENV,
        conformance::private_index_dir().display()
    );
    assert_eq!(
        lines,
        vec![
            "CNI_ARGS=IgnoreUnknown=1",
            "CNI_COMMAND=ADD",
            "CNI_CONTAINERID=abc",
            "CNI_IFNAME=eth0",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            index.as_str(),
        ]
    );
}

fn bridge_conf(name: &str, data_dir: &Path, subnet: &str) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": name,
        "type": "bridge",
        "bridge": "cni0",
        "isGateway": true,
        "ipam": {
            "type": "host-local",
            "dataDir": data_dir,
            "ranges": [[{"subnet": subnet}]],
            "routes": [{"dst": "0.0.0.0/0"}]
        }
    })
}

/// The reference bridge plugin on a two-node L2 fabric with manual host-gw routes: proves the
/// fabric, `add_pod`, the readers and `ping`.
#[test]
fn single_l2_fabric_with_reference_bridge() {
    let fab = Fabric::single_l2(2);
    let (n0, n1) = (fab.node(0), fab.node(1));
    assert_eq!(n0.ip.to_string(), "10.99.0.1");
    assert_eq!(n1.ip.to_string(), "10.99.0.2");
    assert_eq!(n0.ns.global_cidrs("eth0"), vec!["10.99.0.1/24".to_string()]);
    assert_eq!(n0.ns.sysctl("net.ipv4.ip_forward"), "1");
    assert!(
        ping(&n0.ns, IpAddr::from(n1.ip)),
        "nodes must reach each other"
    );

    let bridge = ref_bin("bridge");
    let c0 = bridge_conf("fab", &n0.data_dir, "10.244.0.0/24");
    let c1 = bridge_conf("fab", &n1.data_dir, "10.244.1.0/24");
    let p0 = n0.add_pod(&bridge, &c0, &unique_name("p0"));
    let p1 = n1.add_pod(&bridge, &c1, &unique_name("p1"));
    let ip0 = p0.ip().expect("pod ip");
    let ip1 = p1.ip().expect("pod ip");
    assert_eq!(ip0.to_string(), "10.244.0.2");

    // Kernel state the readers must see on the node.
    let cni0 = n0.ns.link("cni0").expect("bridge made by the plugin");
    assert_eq!(cni0.kind.as_deref(), Some("bridge"));
    assert!(cni0.up);
    let port = n0
        .ns
        .links()
        .into_iter()
        .find(|l| l.master.as_deref() == Some("cni0"));
    let port = port.expect("veth port on cni0");
    assert_eq!(port.kind.as_deref(), Some("veth"));
    assert_eq!(
        n0.ns.global_cidrs("cni0"),
        vec!["10.244.0.1/24".to_string()]
    );
    let routes = n0.ns.main_routes();
    let r = routes
        .iter()
        .find(|r| r.dst == "10.244.0.0/24")
        .expect("connected route");
    assert_eq!(r.protocol.as_deref(), Some("kernel"));
    assert_eq!(r.dev.as_deref(), Some("cni0"));
    let fdb = n0.ns.fdb();
    assert!(
        fdb.iter()
            .any(|e| e.dev == port.name && e.master.as_deref() == Some("cni0"))
    );
    // In the pod: eth0 with the address, default route via the gateway.
    assert_eq!(
        p0.ns.global_cidrs("eth0"),
        vec!["10.244.0.2/24".to_string()]
    );
    let def = p0
        .ns
        .main_routes()
        .into_iter()
        .find(|r| r.dst == "default")
        .expect("default");
    assert_eq!(
        def.gateway.map(|g| g.to_string()).as_deref(),
        Some("10.244.0.1")
    );

    // host-gw by hand: each node routes the other's pod subnet via the other's node IP.
    n0.ns
        .ip(&["route", "add", "10.244.1.0/24", "via", "10.99.0.2"]);
    n1.ns
        .ip(&["route", "add", "10.244.0.0/24", "via", "10.99.0.1"]);
    assert!(ping(&p0.ns, ip1), "pod-to-pod across nodes");
    assert!(ping(&p1.ns, ip0));
    let neigh = n0.ns.neighbours();
    assert!(
        neigh
            .iter()
            .any(|n| n.dst.to_string() == "10.99.0.2" && n.dev == "eth0"),
        "node0 resolved node1: {neigh:?}"
    );

    // CHECK and DEL through the pod helper.
    p0.run("CHECK").assert_ok_empty();
    p0.run("DEL").assert_ok_empty();
    assert!(
        n0.ns
            .links()
            .iter()
            .all(|l| l.master.as_deref() != Some("cni0"))
    );
    assert_eq!(result_ips(&p1.result), vec![ip1]);
}

#[test]
fn routed_fabric_joins_two_segments() {
    let fab = Fabric::routed(3);
    let a = fab.node(0);
    let a2 = fab.node(1);
    let b = fab.node(2);
    assert_eq!(a.ip.to_string(), "10.99.1.1");
    assert_eq!(a2.ip.to_string(), "10.99.1.2");
    assert_eq!(b.ip.to_string(), "10.99.2.1");
    assert!(ping(&a.ns, IpAddr::from(b.ip)), "routed across the router");
    let def =
        a.ns.main_routes()
            .into_iter()
            .find(|r| r.dst == "default")
            .expect("default");
    assert_eq!(
        def.gateway.map(|g| g.to_string()).as_deref(),
        Some("10.99.1.254")
    );
    // b is not an L2 neighbour of a: a route via b's address is refused by the kernel.
    let out =
        a.ns.exec(&["ip", "route", "add", "10.244.2.0/24", "via", "10.99.2.1"]);
    assert!(
        !out.status.success(),
        "gateway across the router must not be on-link"
    );
}

#[test]
fn dual_stack_fabric_attached_host_and_nft_counters() {
    let fab = Fabric::single_l2_dual(2);
    let (n0, n1) = (fab.node(0), fab.node(1));
    assert_eq!(n0.ip6.map(|i| i.to_string()).as_deref(), Some("fd99::1"));
    assert_eq!(
        n1.ns.global_cidrs("eth0"),
        vec!["10.99.0.2/24".to_string(), "fd99::2/64".to_string()]
    );
    assert_eq!(n0.ns.sysctl("net.ipv6.conf.all.forwarding"), "1");
    assert!(
        ping(&n0.ns, IpAddr::from(n1.ip6.expect("v6"))),
        "v6 between nodes"
    );

    let out = fab.attach_host("out", &["10.99.0.250/24", "fd99::250/64"]);
    n0.ns.nft_load(
        "table inet obs {
            counter from_out { }
            chain pre {
                type filter hook prerouting priority -300; policy accept;
                ip saddr 10.99.0.250 icmp type echo-request counter name \"from_out\"
                ip6 saddr fd99::250 icmpv6 type echo-request counter name \"from_out\"
            }
        }",
    );
    assert_eq!(n0.ns.nft_counter("inet", "obs", "from_out"), 0);
    assert!(ping(&out, IpAddr::from(n0.ip)));
    assert!(ping(&out, IpAddr::from(n0.ip6.expect("v6"))));
    assert_eq!(n0.ns.nft_counter("inet", "obs", "from_out"), 2);
    assert!(n0.ns.nft_ruleset().contains("from_out"));
    // no_reply: true for an address nobody holds, false for a live one.
    assert!(no_reply(&out, "10.99.0.200".parse().expect("ip")));
    assert!(!no_reply(&out, IpAddr::from(n1.ip)));
}

#[test]
fn rules_reader_and_delete_now() {
    let ns = Netns::new();
    let rules = ns.rules();
    assert_eq!(rules.len(), 5, "3 IPv4 + 2 IPv6 default rules: {rules:?}");
    ns.ip(&["rule", "add", "from", "10.1.2.3", "table", "100"]);
    assert!(
        ns.rules()
            .iter()
            .any(|r| r["src"] == "10.1.2.3" && r["table"] == "100")
    );
    let path = ns.path().to_path_buf();
    ns.delete_now();
    assert!(!path.exists());
    drop(ns); // nothing left to do, no warning
}
