//! twill::node::ipip against real network namespaces (the tests' own, never the root one).
//!
//! On a kernel without ipip (this development machine: "Unknown device type"), the tunnel
//! cannot be made: the error names CONFIG_NET_IPIP and `modprobe ipip`, STATUS answers 50
//! with it, and nothing is left in the namespace. The tests marked `ignore` need a kernel with
//! ipip: the VM harness (conformance/tests/vm.rs) runs them inside a Debian cloud kernel with
//! `--ignored`: the tunnel's MTU, address and state, onlink peer routes through it (host-gw
//! style for a directly connected peer with `crossSubnet`), repair of a drifted device, and
//! real packets through two nodes' tunnels, with a don't-fragment ping at the tunnel MTU.

mod common;

use std::path::PathBuf;

use common::{TestNs, net};
use serde_json::{Value, json};
use twill::code;
use twill::kernel::netlink::Netlink;
use twill::node::ipip::{self, Ipip, TunnelConf};
use twill::node::peers::ViewSource;
use twill::node::reconcile::{Inputs, Reconciled, reconcile};
use twill::node::state::StateFile;

/// What a namespace holds that ipip code could change: links and IPv4/IPv6 addresses.
fn links_and_addrs(nl: &mut Netlink) -> (Vec<String>, Vec<String>) {
    let mut links: Vec<String> = nl
        .links()
        .unwrap()
        .into_iter()
        .map(|l| format!("{} {:?} up={} mtu={}", l.name, l.kind, l.admin_up, l.mtu))
        .collect();
    links.sort();
    let mut addrs: Vec<String> = nl
        .addresses(None, None)
        .unwrap()
        .into_iter()
        .map(|a| format!("{} {}/{}", a.index, a.addr, a.prefix_len))
        .collect();
    addrs.sort();
    (links, addrs)
}

fn conf(device: &str, block: &str, cross_subnet: bool) -> TunnelConf {
    TunnelConf {
        device: device.into(),
        mtu: None,
        block: net(block),
        local: Some("10.0.0.1".parse().unwrap()),
        cross_subnet,
    }
}

fn assert_missing_ipip(e: &twill::Error) {
    assert_eq!(e.code, code::NOT_AVAILABLE, "{e}");
    assert!(
        e.msg.contains("CONFIG_NET_IPIP") && e.msg.contains("modprobe ipip"),
        "the message names the kernel feature and how to get it: {e}"
    );
    assert!(!e.msg.contains("Some(") && !e.msg.contains("Os {"), "{e}");
}

/// On this machine's kernel (no ipip) the missing-ipip error; on a kernel with ipip (a CI
/// runner that can load the module) the probe says so and the tunnel is made instead, so the
/// test holds everywhere and still asserts real kernel state on both.
#[test]
fn without_ipip_the_tunnel_fails_naming_the_kernel_feature_and_leaves_nothing() {
    let ns = TestNs::new();
    ns.ip(&[
        "link", "add", "under0", "type", "veth", "peer", "name", "under1",
    ]);
    ns.ip(&["addr", "add", "10.0.0.1/24", "dev", "under0"]);
    ns.ip(&["link", "set", "under0", "up"]);
    let mut nl = ns.netlink();
    let before = links_and_addrs(&mut nl);
    if nl.ipip_available().unwrap() {
        ipip::status(&mut nl, "tunl0").unwrap();
        Ipip::ensure(&mut nl, &conf("tunl0", "10.244.1.0/24", false), 1500).unwrap();
        assert_eq!(ipv4_addrs(&ns, "tunl0"), ["10.244.1.0/32"]);
        return;
    }
    for device in ["tunl0", "twip0"] {
        let e = Ipip::ensure(&mut nl, &conf(device, "10.244.1.0/24", false), 1500).unwrap_err();
        assert_missing_ipip(&e);
        assert!(e.msg.contains(device), "{e}");
        let e = ipip::status(&mut nl, device).unwrap_err();
        assert_missing_ipip(&e);
        assert_eq!(
            links_and_addrs(&mut nl),
            before,
            "{device}: nothing left behind"
        );
    }
}

#[test]
fn the_ipip_probe_creates_nothing_and_an_ipv6_block_is_refused_first() {
    let ns = TestNs::new();
    let mut nl = ns.netlink();
    let before = links_and_addrs(&mut nl);
    let available = nl.ipip_available().unwrap();
    assert_eq!(
        available,
        nl.ipip_available().unwrap(),
        "the probe is stable"
    );
    assert_eq!(links_and_addrs(&mut nl), before);
    let e = Ipip::ensure(&mut nl, &conf("tunl0", "fd10:1::/64", false), 1500).unwrap_err();
    assert_eq!(e.code, code::INVALID_CONFIG, "{e}");
    assert!(
        e.msg.contains("IPv4 only") && e.msg.contains("fd10:1::/64"),
        "{e}"
    );
    assert_eq!(links_and_addrs(&mut nl), before);
}

// ---------------------------------------------------------------------------------------------
// Inside the VM (a kernel with ipip)
// ---------------------------------------------------------------------------------------------

/// A node: its own namespace and run dir (removed on drop).
struct Node {
    ns: TestNs,
    run_dir: PathBuf,
}

impl Node {
    fn new() -> Node {
        let ns = TestNs::new();
        let run_dir = std::env::temp_dir().join(format!("{}-run", ns.name));
        Node { ns, run_dir }
    }

    fn state(&self) -> StateFile {
        let nl = self.ns.netlink();
        StateFile::new(
            &self.run_dir,
            "ipip",
            nl.netns_key().unwrap(),
            nl.netns_inode().unwrap(),
        )
        .unwrap()
    }

    fn reconcile(&self, plane: &Ipip, view: &Value, own: &str) -> Reconciled {
        let src = ViewSource::Inline(view.clone());
        let own = [net(own)];
        let inputs = Inputs {
            source: &src,
            own_ranges: &own,
            plane,
        };
        reconcile(&mut self.ns.netlink(), &self.state(), &inputs).unwrap()
    }

    /// `dst -> (gateway, dev, onlink)` of twill's routes (protocol 116).
    fn twill_routes(&self) -> Vec<(String, String, String, bool)> {
        let v = self.ns.ip_json(&["-4", "route", "show", "proto", "116"]);
        let mut out: Vec<_> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
                let onlink = r["flags"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|x| x == "onlink"));
                (s("dst"), s("gateway"), s("dev"), onlink)
            })
            .collect();
        out.sort();
        out
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

fn entry(node: &str, cidr: &str) -> Value {
    json!({"nodeIP": node, "podCIDR": cidr})
}

fn ipv4_addrs(ns: &TestNs, dev: &str) -> Vec<String> {
    let v = ns.ip_json(&["-4", "addr", "show", "dev", dev]);
    v[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

#[test]
#[ignore = "needs a kernel with ipip: run inside the VM (conformance/tests/vm.rs)"]
fn vm_tunl0_gets_its_mtu_and_address_and_peers_get_onlink_routes_repaired_after_drift() {
    let node = Node::new();
    let ns = &node.ns;
    ns.ip(&[
        "link", "add", "under0", "type", "veth", "peer", "name", "under1",
    ]);
    ns.ip(&["addr", "add", "10.0.0.1/24", "dev", "under0"]);
    ns.ip(&["link", "set", "under0", "up"]);
    ns.ip(&["link", "set", "under1", "up"]);
    let mut nl = ns.netlink();
    assert!(nl.ipip_available().unwrap(), "the VM kernel has ipip");
    ipip::status(&mut nl, "tunl0").unwrap();

    let (plane, created) =
        Ipip::ensure(&mut nl, &conf("tunl0", "10.244.1.0/24", true), 1500).unwrap();
    assert!(!created, "tunl0 is the kernel's, never created by twill");
    let link = ns.link("tunl0");
    assert_eq!(link["mtu"], 1480, "underlay 1500 - 20: {link}");
    assert!(
        link["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "{link}"
    );
    assert_eq!(ipv4_addrs(ns, "tunl0"), ["10.244.1.0/32"]);

    let view = json!([
        entry("10.0.0.1", "10.244.1.0/24"),     // this node
        entry("10.0.0.2", "10.244.2.0/24"),     // same subnet: host-gw style with crossSubnet
        entry("192.168.50.3", "10.244.3.0/24"), // behind a router: through the tunnel
        entry("fd00::4", "fd10:4::/64"),        // IPv6: skipped with its reason
    ]);
    let Reconciled::Applied(report) = node.reconcile(&plane, &view, "10.244.1.0/24") else {
        panic!("the first reconcile applies")
    };
    assert_eq!(report.skipped.len(), 1, "{report:?}");
    assert!(report.skipped[0].reason.contains("IPv4 only"), "{report:?}");
    assert!(report.failures.is_empty(), "{report:?}");
    assert_eq!(
        node.twill_routes(),
        [
            (
                "10.244.2.0/24".into(),
                "10.0.0.2".into(),
                "under0".into(),
                false
            ),
            (
                "10.244.3.0/24".into(),
                "192.168.50.3".into(),
                "tunl0".into(),
                true
            ),
        ]
    );
    assert_eq!(
        node.reconcile(&plane, &view, "10.244.1.0/24"),
        Reconciled::Unchanged
    );

    // Drift (what twilld repairs): MTU changed, address flushed, device down.
    ns.ip(&["link", "set", "tunl0", "mtu", "1300"]);
    ns.ip(&["addr", "flush", "dev", "tunl0"]);
    ns.ip(&["link", "set", "tunl0", "down"]);
    assert!(matches!(
        node.reconcile(&plane, &view, "10.244.1.0/24"),
        Reconciled::Applied(_)
    ));
    assert_eq!(ns.link("tunl0")["mtu"], 1480);
    assert_eq!(ipv4_addrs(ns, "tunl0"), ["10.244.1.0/32"]);
    assert_eq!(
        node.twill_routes().len(),
        2,
        "routes back after the device came up"
    );

    // Without crossSubnet every peer goes through the tunnel.
    let (always, _) = Ipip::ensure(&mut nl, &conf("tunl0", "10.244.1.0/24", false), 1500).unwrap();
    node.reconcile(&always, &view, "10.244.1.0/24");
    assert!(
        node.twill_routes().iter().all(|r| r.2 == "tunl0" && r.3),
        "{:?}",
        node.twill_routes()
    );
}

#[test]
#[ignore = "needs a kernel with ipip: run inside the VM (conformance/tests/vm.rs)"]
fn vm_named_tunnels_carry_packets_between_two_nodes_up_to_the_tunnel_mtu() {
    let a = Node::new();
    let b = Node::new();
    a.ns.ip(&[
        "link", "add", "under0", "type", "veth", "peer", "name", "under0", "netns", &b.ns.name,
    ]);
    a.ns.ip(&["addr", "add", "10.0.0.1/24", "dev", "under0"]);
    b.ns.ip(&["addr", "add", "10.0.0.2/24", "dev", "under0"]);
    a.ns.ip(&["link", "set", "under0", "up"]);
    b.ns.ip(&["link", "set", "under0", "up"]);
    let view = json!([
        entry("10.0.0.1", "10.244.1.0/24"),
        entry("10.0.0.2", "10.244.2.0/24"),
    ]);
    let mut planes = Vec::new();
    for (n, block, local) in [
        (&a, "10.244.1.0/24", "10.0.0.1"),
        (&b, "10.244.2.0/24", "10.0.0.2"),
    ] {
        let c = TunnelConf {
            device: "twip0".into(),
            local: Some(local.parse().unwrap()),
            ..conf("twip0", block, false)
        };
        let (plane, created) = Ipip::ensure(&mut n.ns.netlink(), &c, 1500).unwrap();
        assert!(created, "a named device is made by twill");
        assert_eq!(n.ns.link("twip0")["mtu"], 1480);
        n.reconcile(&plane, &view, block);
        assert_eq!(n.twill_routes().len(), 1, "{:?}", n.twill_routes());
        planes.push(plane);
    }
    assert!(
        a.ns.ping("10.244.2.0"),
        "a's tunnel address reaches b's through ipip"
    );
    let df = |size: u32| {
        std::process::Command::new("ip")
            .args([
                "netns", "exec", &a.ns.name, "ping", "-c", "1", "-W", "2", "-M", "do", "-s",
            ])
            .arg(size.to_string())
            .arg("10.244.2.0")
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(
        df(1480 - 28),
        "a don't-fragment packet of the tunnel MTU passes"
    );
    assert!(!df(1480 - 27), "one byte more does not fit the tunnel");
    let stats = a.ns.ip_json(&["-s", "link", "show", "dev", "twip0"]);
    let tx = stats[0]["stats64"]["tx"]["packets"].as_u64().unwrap();
    assert!(
        tx >= 2,
        "the packets left through the tunnel device: {stats}"
    );
}

#[test]
fn a_link_of_another_kind_with_the_tunnels_name_is_a_conflict_left_alone() {
    let ns = TestNs::new();
    ns.ip(&[
        "link", "add", "twip0", "type", "veth", "peer", "name", "twip1",
    ]);
    let mut nl = ns.netlink();
    let before = links_and_addrs(&mut nl);
    let e = Ipip::ensure(&mut nl, &conf("twip0", "10.244.1.0/24", false), 1500).unwrap_err();
    assert_eq!(e.code, code::CONFLICT, "{e}");
    assert!(
        e.msg.contains("twip0") && e.msg.contains("a veth device") && e.msg.contains("`device`"),
        "{e}"
    );
    assert_eq!(links_and_addrs(&mut nl), before, "the veth is untouched");
}
