//! twill::node::reconcile against real network namespaces (the test's own "node" namespace,
//! never the root one): routes appear with twill's protocol, foreign routes are left alone,
//! removed peers' routes go, an unchanged view costs one owned-route listing, a route the
//! kernel lost is repaired, with and without kernel-side dump filtering, state files named by
//! the nsfs inode work like cookie-named ones, concurrent reconciles converge, and a plane
//! owning a vxlan device, FDB and neighbour entries is applied by the same reconcile.

mod common;

use common::{TestNs, net, sh};
use ipnetwork::IpNetwork;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::PathBuf;
use twill::kernel::netlink::{MacAddr, Netlink, TWILL_PROTO};
use twill::kernel::netns::NetnsKey;
use twill::node::host_gw::HostGw;
use twill::node::peers::{Peer, ViewSource};
use twill::node::reconcile::{
    DataPlane, Found, Inputs, Kind, NodeKernel, Object, Reconciled, Reject, Report, VxlanDevice,
    reconcile, verify,
};
use twill::node::state::StateFile;

/// A "node": its own namespace with an underlay veth (192.168.77.1/24, fd77::1/64) whose other
/// end sits in a second namespace; a run dir of its own.
struct Node {
    ns: TestNs,
    other: TestNs,
    run_dir: PathBuf,
}

impl Node {
    fn new() -> Node {
        let ns = TestNs::new();
        let other = TestNs::new();
        let run_dir = std::env::temp_dir().join(format!("{}-run", ns.name));
        let node = Node { ns, other, run_dir };
        node.ip(&[
            "link", "add", "under0", "type", "veth", "peer", "name", "under1",
        ]);
        node.ip(&["link", "set", "under1", "netns", &node.other.name]);
        node.ip(&["link", "set", "under0", "up"]);
        node.ip(&["addr", "add", "192.168.77.1/24", "dev", "under0"]);
        node.ip(&["addr", "add", "fd77::1/64", "dev", "under0", "nodad"]);
        node
    }
    fn ip(&self, args: &[&str]) -> String {
        self.ns.ip(args)
    }
    fn netlink(&self) -> Netlink {
        self.ns.netlink()
    }
    fn state(&self, network: &str) -> StateFile {
        let nl = self.netlink();
        StateFile::new(
            &self.run_dir,
            network,
            nl.netns_key().unwrap(),
            nl.netns_inode().unwrap(),
        )
        .unwrap()
    }
    /// (dst, gateway, protocol) of every route in the main table, both families, sorted.
    fn routes(&self) -> BTreeSet<(String, String, String)> {
        let mut out = BTreeSet::new();
        for fam in ["-4", "-6"] {
            let v = self.ns.ip_json(&[fam, "route", "show", "table", "main"]);
            for r in v.as_array().unwrap() {
                let s = |k: &str| r.get(k).map(|x| x.as_str().unwrap_or("").to_string());
                out.insert((
                    s("dst").unwrap_or_default(),
                    s("gateway").unwrap_or_default(),
                    s("protocol").unwrap_or_default(),
                ));
            }
        }
        out
    }
    /// Only the routes with twill's protocol, as (dst, gateway).
    fn twill_routes(&self) -> BTreeSet<(String, String)> {
        let proto = TWILL_PROTO.to_string();
        self.routes()
            .into_iter()
            .filter(|(_, _, p)| *p == proto)
            .map(|(d, g, _)| (d, g))
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.run_dir);
        // Whatever the test did stays in its namespaces: the root table has none of it.
        // (Read only; skipped while unwinding so the first failure is the one reported.)
        // The namespaces themselves go when the `TestNs` fields drop, even if this panics.
        if !std::thread::panicking() {
            let out = sh(&["ip", "route", "show", "table", "main"]);
            for d in ["10.244.", "10.200.", "10.66.0.0", "fd10:0:0:2::"] {
                assert!(!out.contains(d), "{d} in the root namespace: {out}");
            }
        }
    }
}

fn pair(d: &str, g: &str) -> (String, String) {
    (d.to_string(), g.to_string())
}

fn inline(v: Value) -> ViewSource {
    ViewSource::Inline(v)
}

fn entry(node: &str, cidr: &str) -> Value {
    json!({"nodeIP": node, "podCIDR": cidr})
}

fn applied(r: Reconciled) -> Report {
    match r {
        Reconciled::Applied(rep) => rep,
        Reconciled::Unchanged => panic!("expected an apply, got Unchanged"),
    }
}

/// Counts the calls that reach the kernel.
struct Counting<'a> {
    inner: &'a mut Netlink,
    calls: Vec<&'static str>,
}

impl NodeKernel for Counting<'_> {
    fn netns_inode(&mut self) -> twill::Result<Option<(u64, u64)>> {
        NodeKernel::netns_inode(self.inner)
    }
    fn local_addrs(&mut self) -> twill::Result<Vec<IpNetwork>> {
        self.calls.push("local_addrs");
        self.inner.local_addrs()
    }
    fn list(&mut self, kind: Kind) -> twill::Result<Vec<Found>> {
        self.calls.push("list");
        self.inner.list(kind)
    }
    fn list_owned(&mut self, kind: Kind) -> twill::Result<Vec<Object>> {
        self.calls.push("list_owned");
        self.inner.list_owned(kind)
    }
    fn apply(&mut self, o: &Object) -> twill::Result<()> {
        self.calls.push("apply");
        self.inner.apply(o)
    }
    fn remove(&mut self, o: &Object) -> twill::Result<()> {
        self.calls.push("remove");
        self.inner.remove(o)
    }
}

const OWN: &str = "10.244.1.0/24";

fn view_v1() -> ViewSource {
    inline(json!([
        entry("192.168.77.1", OWN), // this node, by subnet and by address
        entry("192.168.77.2", "10.244.2.0/24"),
        entry("192.168.77.3", "10.244.3.0/24"),
        entry("192.168.77.1", "10.244.9.0/24"), // by local address only
        entry("fd77::2", "fd10:0:0:2::/64"),
    ]))
}

fn run(nl: &mut dyn NodeKernel, st: &StateFile, src: &ViewSource) -> Reconciled {
    let own = [net(OWN)];
    let inputs = Inputs {
        source: src,
        own_ranges: &own,
        plane: &HostGw,
    };
    reconcile(nl, st, &inputs).unwrap()
}

fn check(nl: &mut Netlink, st: &StateFile, src: &ViewSource) -> Report {
    let own = [net(OWN)];
    let inputs = Inputs {
        source: src,
        own_ranges: &own,
        plane: &HostGw,
    };
    verify(nl, st, &inputs).unwrap()
}

#[test]
fn unchanged_view_costs_one_owned_listing_and_a_lost_route_is_repaired() {
    let node = Node::new();
    let mut nl = node.netlink();
    assert!(nl.strict_dumps(), "this kernel filters dumps (4.20+)");
    let st = node.state("hgw");
    let r = applied(run(&mut nl, &st, &view_v1()));
    assert_eq!(r.plan.apply.len(), 3, "{r:?}");
    let v1_routes: BTreeSet<_> = [
        pair("10.244.2.0/24", "192.168.77.2"),
        pair("10.244.3.0/24", "192.168.77.3"),
        pair("fd10:0:0:2::/64", "fd77::2"),
    ]
    .into();
    assert_eq!(node.twill_routes(), v1_routes);

    // Same view, routes all there: one kernel-filtered listing, nothing else.
    let mut counting = Counting {
        inner: &mut nl,
        calls: Vec::new(),
    };
    assert_eq!(run(&mut counting, &st, &view_v1()), Reconciled::Unchanged);
    assert_eq!(counting.calls, ["list_owned"]);

    // A route deleted by hand: CHECK's verify sees it, and the next reconcile repairs it.
    node.ip(&["route", "del", "10.244.3.0/24"]);
    let p = check(&mut nl, &st, &view_v1()).plan;
    assert_eq!(p.apply.len(), 1, "{p:?}");
    let r = applied(run(&mut nl, &st, &view_v1()));
    assert_eq!(r.plan.apply.len(), 1, "{r:?}");
    assert_eq!(node.twill_routes(), v1_routes);

    // Peer 3 leaves, peer 4 joins, peer 2 moves to another node IP.
    let v2 = inline(json!([
        entry("192.168.77.22", "10.244.2.0/24"),
        entry("192.168.77.4", "10.244.4.0/24"),
        entry("fd77::2", "fd10:0:0:2::/64"),
    ]));
    applied(run(&mut nl, &st, &v2));
    assert_eq!(
        node.twill_routes(),
        [
            pair("10.244.2.0/24", "192.168.77.22"),
            pair("10.244.4.0/24", "192.168.77.4"),
            pair("fd10:0:0:2::/64", "fd77::2"),
        ]
        .into()
    );
    let v3 = inline(json!([entry("192.168.77.4", "10.244.4.0/24")]));
    applied(run(&mut nl, &st, &v3));
    assert_eq!(
        node.twill_routes(),
        [pair("10.244.4.0/24", "192.168.77.4")].into()
    );
    assert!(check(&mut nl, &st, &v3).plan.is_empty());
}

#[test]
fn without_kernel_dump_filtering_the_fast_path_still_sees_lost_routes() {
    let node = Node::new();
    let mut nl = node.netlink();
    nl.set_strict_dumps(false).unwrap();
    assert!(!nl.strict_dumps());
    // A foreign route the unfiltered dump also returns.
    node.ip(&["route", "add", "10.55.0.0/16", "via", "192.168.77.201"]);
    let st = node.state("nostrict");
    applied(run(&mut nl, &st, &view_v1()));
    let owned = nl.list_owned(Kind::Route).unwrap();
    assert_eq!(owned.len(), 3, "only twill's routes: {owned:?}");
    assert_eq!(run(&mut nl, &st, &view_v1()), Reconciled::Unchanged);
    for fam in ["-4", "-6"] {
        node.ip(&[fam, "route", "flush", "proto", &TWILL_PROTO.to_string()]);
    }
    assert!(node.twill_routes().is_empty());
    let r = applied(run(&mut nl, &st, &view_v1()));
    assert_eq!(r.plan.apply.len(), 3, "{r:?}");
    assert_eq!(node.twill_routes().len(), 3);
}

#[test]
fn state_named_by_the_nsfs_inode_works_like_a_cookie_named_one() {
    let node = Node::new();
    let mut nl = node.netlink();
    let (dev, ino) = nl.netns_inode().unwrap();
    assert_eq!((dev, ino), node.ns.open().id());
    let key = NetnsKey::Inode { dev, ino };
    let st = StateFile::new(&node.run_dir, "byino", key, (dev, ino)).unwrap();
    assert!(
        st.path()
            .to_string_lossy()
            .ends_with(&format!("byino.peers.i{dev:x}-{ino:x}"))
    );
    applied(run(&mut nl, &st, &view_v1()));
    assert_eq!(run(&mut nl, &st, &view_v1()), Reconciled::Unchanged);
    assert_eq!(node.twill_routes().len(), 3);
    // A state file of a namespace that is gone (inode 1 is none) is pruned by the next apply;
    // this live namespace's file is kept.
    let gone = StateFile::new(
        &node.run_dir,
        "byino",
        NetnsKey::Inode { dev, ino: 1 },
        (dev, 1),
    )
    .unwrap();
    gone.write(&Default::default()).unwrap();
    applied(run(&mut nl, &st, &inline(json!([]))));
    assert!(!gone.path().exists());
    assert!(st.path().exists());
    assert!(node.twill_routes().is_empty());
}

#[test]
fn foreign_routes_are_left_alone() {
    let node = Node::new();
    let mut nl = node.netlink();
    let st = node.state("hgw");
    // An admin's static route on the key of a desired route, an unrelated one, and a twill
    // route of another network.
    node.ip(&[
        "route",
        "add",
        "10.244.2.0/24",
        "via",
        "192.168.77.200",
        "proto",
        "static",
    ]);
    node.ip(&["route", "add", "10.55.0.0/16", "via", "192.168.77.201"]);
    let proto = TWILL_PROTO.to_string();
    node.ip(&[
        "route",
        "add",
        "10.66.0.0/24",
        "via",
        "192.168.77.202",
        "proto",
        &proto,
    ]);
    let before = node.routes();
    let view = inline(json!([
        entry("192.168.77.2", "10.244.2.0/24"),
        entry("192.168.77.3", "10.244.3.0/24"),
    ]));
    let r = applied(run(&mut nl, &st, &view));
    assert_eq!(r.plan.conflicts.len(), 1, "{r:?}");
    assert!(r.warnings().iter().any(|w| w.contains("10.244.2.0/24")));
    let after = node.routes();
    assert!(
        after.is_superset(&before),
        "nothing foreign removed or changed"
    );
    assert!(after.contains(&("10.244.3.0/24".into(), "192.168.77.3".into(), proto.clone())));
    assert!(!after.contains(&("10.244.2.0/24".into(), "192.168.77.2".into(), proto.clone())));

    // Conflict pending: no stamp, so the next reconcile looks again; once the admin's
    // route is gone, ours is installed.
    node.ip(&["route", "del", "10.244.2.0/24", "proto", "static"]);
    let r = applied(run(&mut nl, &st, &view));
    assert_eq!(r.plan.apply.len(), 1, "{r:?}");
    assert!(
        node.twill_routes()
            .contains(&pair("10.244.2.0/24", "192.168.77.2"))
    );

    // Emptying the view deletes this network's routes only; the other twill network's stays.
    applied(run(&mut nl, &st, &inline(json!([]))));
    assert_eq!(
        node.twill_routes(),
        [pair("10.66.0.0/24", "192.168.77.202")].into()
    );
    assert!(node.routes().contains(&(
        "10.55.0.0/16".into(),
        "192.168.77.201".into(),
        String::new() // ip -j omits the default protocol (boot)
    )));
}

#[test]
fn concurrent_reconciles_converge() {
    let node = Node::new();
    let view: Vec<Value> = (2..40)
        .map(|i| entry(&format!("192.168.77.{i}"), &format!("10.200.{i}.0/24")))
        .collect();
    let view = inline(Value::Array(view));
    let ns = node.ns.open();
    std::thread::scope(|s| {
        for _ in 0..6 {
            s.spawn(|| {
                let mut nl = Netlink::new_in(&ns).unwrap();
                let st = node.state("conc");
                run(&mut nl, &st, &view)
            });
        }
    });
    let routes = node.twill_routes();
    assert_eq!(routes.len(), 38);
    // Every process seeing a missing state file: the kernel comparison still converges.
    let mut nl = node.netlink();
    for _ in 0..3 {
        let st = node.state("conc");
        st.remove().unwrap();
        run(&mut nl, &st, &view);
    }
    assert_eq!(node.twill_routes(), routes);
}

#[test]
fn off_link_peers_are_skipped_and_refused_routes_retried() {
    let node = Node::new();
    let mut nl = node.netlink();
    let st = node.state("unr");
    // 192.168.78.0/24 is an address prefix without its connected route: the on-link check
    // passes, the kernel refuses the route (ENETUNREACH).
    node.ip(&[
        "addr",
        "add",
        "192.168.78.1/24",
        "dev",
        "under0",
        "noprefixroute",
    ]);
    let view = inline(json!([
        entry("192.168.77.2", "10.244.2.0/24"),
        entry("172.31.0.9", "10.244.3.0/24"),
        entry("192.168.78.2", "10.244.4.0/24"),
    ]));
    let r = applied(run(&mut nl, &st, &view));
    assert_eq!(r.skipped.len(), 1, "{r:?}");
    assert!(r.skipped[0].reason.contains("172.31.0.9"), "{r:?}");
    assert_eq!(r.failures.len(), 1, "{r:?}");
    assert!(r.failures[0].contains("10.244.4.0/24"), "{r:?}");
    assert_eq!(
        node.twill_routes(),
        [pair("10.244.2.0/24", "192.168.77.2")].into()
    );
    // Not stamped: retried, and installed once the kernel can.
    node.ip(&["route", "add", "192.168.78.0/24", "dev", "under0"]);
    let r = applied(run(&mut nl, &st, &view));
    assert!(r.failures.is_empty(), "{r:?}");
    assert!(
        node.twill_routes()
            .contains(&pair("10.244.4.0/24", "192.168.78.2"))
    );
    // The off-link peer is looked at again on every call (the node may gain an address on
    // its subnet), and routed once the node is on its segment.
    assert_eq!(applied(run(&mut nl, &st, &view)).skipped.len(), 1);
    node.ip(&["addr", "add", "172.31.0.1/24", "dev", "under0"]);
    let r = applied(run(&mut nl, &st, &view));
    assert!(r.skipped.is_empty() && r.failures.is_empty(), "{r:?}");
    assert_eq!(node.twill_routes().len(), 3);
    assert_eq!(run(&mut nl, &st, &view), Reconciled::Unchanged);
}

/// A vxlan-like plane: the device, one FDB entry and one neighbour per peer with a VTEP MAC.
struct VxlanLike;

impl DataPlane for VxlanLike {
    fn key(&self) -> String {
        "test-vxlan".into()
    }
    fn owns(&self) -> &'static [Kind] {
        &[Kind::Device, Kind::Fdb, Kind::Neighbour]
    }
    fn reject(&self, p: &Peer, _: &[IpNetwork]) -> Option<Reject> {
        p.vtep_mac.is_none().then(|| Reject {
            reason: "no vtepMAC".to_string(),
            depends_on_node: false,
        })
    }
    fn desired(&self, peers: &[&Peer]) -> Vec<Object> {
        let mut out = vec![Object::Vxlan(VxlanDevice {
            name: "twvx0".into(),
            vni: 7,
            port: 8472,
            local: Some("192.168.77.1".parse().unwrap()),
            mac: Some("02:aa:00:00:00:01".parse().unwrap()),
            mtu: Some(1450),
        })];
        for p in peers {
            let mac: MacAddr = p.vtep_mac.unwrap();
            out.push(Object::Fdb {
                dev: "twvx0".into(),
                mac,
                dst: p.node_ip,
            });
            out.push(Object::Neighbour {
                dev: "twvx0".into(),
                ip: p.pod_cidr.ip(),
                mac,
            });
        }
        out
    }
}

#[test]
fn a_plane_owning_a_device_fdb_and_neighbours_is_applied_by_the_same_reconcile() {
    let node = Node::new();
    let mut nl = node.netlink();
    let st = node.state("vx");
    let view = inline(json!([
        {"nodeIP": "192.168.77.2", "podCIDR": "10.244.2.0/24", "vtepMAC": "02:aa:00:00:00:02"},
        {"nodeIP": "192.168.77.3", "podCIDR": "10.244.3.0/24", "vtepMAC": "02:aa:00:00:00:03"},
        {"nodeIP": "192.168.77.4", "podCIDR": "10.244.4.0/24"},
    ]));
    let own = [net(OWN)];
    let inputs = Inputs {
        source: &view,
        own_ranges: &own,
        plane: &VxlanLike,
    };
    let r = applied(reconcile(&mut nl, &st, &inputs).unwrap());
    assert!(r.failures.is_empty(), "{r:?}");
    assert_eq!(r.skipped.len(), 1);
    let fdb = node.ns.run(&["bridge", "fdb", "show", "dev", "twvx0"]);
    assert!(fdb.contains("02:aa:00:00:00:02 dst 192.168.77.2"), "{fdb}");
    assert!(fdb.contains("02:aa:00:00:00:03 dst 192.168.77.3"), "{fdb}");
    let neigh = node.ip(&["neigh", "show", "dev", "twvx0"]);
    assert!(
        neigh.contains("10.244.2.0 lladdr 02:aa:00:00:00:02 PERMANENT"),
        "{neigh}"
    );
    assert_eq!(
        reconcile(&mut nl, &st, &inputs).unwrap(),
        Reconciled::Unchanged
    );

    // A peer leaves: its FDB entry and neighbour go, the other's stay.
    let v2 = inline(json!([
        {"nodeIP": "192.168.77.2", "podCIDR": "10.244.2.0/24", "vtepMAC": "02:aa:00:00:00:02"},
    ]));
    let inputs = Inputs {
        source: &v2,
        ..inputs
    };
    let r = applied(reconcile(&mut nl, &st, &inputs).unwrap());
    assert!(r.failures.is_empty(), "{r:?}");
    let fdb = node.ns.run(&["bridge", "fdb", "show", "dev", "twvx0"]);
    assert!(!fdb.contains("02:aa:00:00:00:03"), "{fdb}");
    assert!(fdb.contains("02:aa:00:00:00:02 dst 192.168.77.2"), "{fdb}");
    let neigh = node.ip(&["neigh", "show", "dev", "twvx0"]);
    assert!(!neigh.contains("10.244.3.0"), "{neigh}");
}

#[test]
fn routes_recorded_by_the_previous_state_format_are_taken_over_and_cleaned_up() {
    let node = Node::new();
    let mut nl = node.netlink();
    let proto = TWILL_PROTO.to_string();
    for (dst, gw) in [
        ("10.244.2.0/24", "192.168.77.2"),
        ("10.244.5.0/24", "192.168.77.5"),
    ] {
        node.ip(&["route", "add", dst, "via", gw, "proto", &proto]);
    }
    let NetnsKey::Cookie(cookie) = nl.netns_key().unwrap() else {
        panic!("this kernel has SO_NETNS_COOKIE")
    };
    std::fs::create_dir_all(&node.run_dir).unwrap();
    let legacy = node.run_dir.join(format!("old.peers.{cookie:016x}"));
    std::fs::write(&legacy, "00000000000000aa\n10.244.2.0/24\n10.244.5.0/24\n").unwrap();
    std::fs::write(node.run_dir.join("old.peers.lock"), "").unwrap();
    let st = node.state("old");
    // The new view no longer lists 10.244.5.0/24: the old network's route to it goes.
    let view = inline(json!([entry("192.168.77.2", "10.244.2.0/24")]));
    let r = applied(run(&mut nl, &st, &view));
    assert!(r.plan.apply.is_empty(), "{r:?}");
    assert_eq!(r.plan.remove.len(), 1, "{r:?}");
    assert_eq!(
        node.twill_routes(),
        [pair("10.244.2.0/24", "192.168.77.2")].into()
    );
    assert!(!legacy.exists() && !node.run_dir.join("old.peers.lock").exists());
    assert_eq!(run(&mut nl, &st, &view), Reconciled::Unchanged);
}
