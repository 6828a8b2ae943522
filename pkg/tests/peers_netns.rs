//! twill::node::peers::reconcile against real network namespaces (the test's own "node" namespace,
//! never the root one): routes appear with twill's protocol, foreign routes are left alone,
//! removed peers' routes go, an unchanged view costs no netlink call, concurrent reconciles
//! converge.

mod common;

use common::{TestNs, net, sh};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Instant;
use twill::kernel::netlink::{Netlink, TWILL_PROTO};
use twill::kernel::netns::Netns;
use twill::node::peers::{
    ClusterView, KernelRoute, Peer, PeerRoute, PeerRouteOps, Reconciled, RouteMode, StateFile,
    reconcile, verify,
};

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
    fn netns(&self) -> Netns {
        self.ns.open()
    }
    fn netlink(&self) -> Netlink {
        self.ns.netlink()
    }
    fn state(&self, network: &str) -> StateFile {
        StateFile::new(&self.run_dir, network, self.netns().cookie().unwrap()).unwrap()
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

fn peer(node: &str, cidr: &str) -> Peer {
    Peer {
        node_ip: node.parse::<IpAddr>().unwrap(),
        pod_cidr: net(cidr),
    }
}

fn pair(d: &str, g: &str) -> (String, String) {
    (d.to_string(), g.to_string())
}

/// Counts the calls that reach the kernel.
struct Counting<'a> {
    inner: &'a mut Netlink,
    calls: usize,
}

impl PeerRouteOps for Counting<'_> {
    fn local_addrs(&mut self) -> twill::Result<Vec<IpAddr>> {
        self.calls += 1;
        self.inner.local_addrs()
    }
    fn main_routes(&mut self) -> twill::Result<Vec<KernelRoute>> {
        self.calls += 1;
        self.inner.main_routes()
    }
    fn replace_peer_route(&mut self, r: &PeerRoute) -> twill::Result<()> {
        self.calls += 1;
        self.inner.replace_peer_route(r)
    }
    fn delete_peer_route(&mut self, r: &KernelRoute) -> twill::Result<()> {
        self.calls += 1;
        self.inner.delete_peer_route(r)
    }
}

const OWN: &str = "10.244.1.0/24";

fn view_v1() -> ClusterView {
    ClusterView::new(vec![
        peer("192.168.77.1", OWN), // this node, by subnet and by address
        peer("192.168.77.2", "10.244.2.0/24"),
        peer("192.168.77.3", "10.244.3.0/24"),
        peer("192.168.77.1", "10.244.9.0/24"), // by local address only
        peer("fd77::2", "fd10:0:0:2::/64"),
    ])
    .unwrap()
}

#[test]
fn routes_appear_with_twill_protocol_and_skip_costs_nothing() {
    let node = Node::new();
    let mut nl = node.netlink();
    let st = node.state("hgw");
    let own = [net(OWN)];
    let r = reconcile(&mut nl, &st, &view_v1(), &own, &RouteMode::HostGw).unwrap();
    assert!(
        matches!(r, Reconciled::Applied(ref p) if p.replace.len() == 3),
        "{r:?}"
    );
    assert_eq!(
        node.twill_routes(),
        [
            pair("10.244.2.0/24", "192.168.77.2"),
            pair("10.244.3.0/24", "192.168.77.3"),
            pair("fd10:0:0:2::/64", "fd77::2"),
        ]
        .into()
    );

    // Same view: not a single netlink call, and a route deleted by hand stays deleted
    // (the documented cost of the skip) ...
    node.ip(&["route", "del", "10.244.3.0/24"]);
    let mut counting = Counting {
        inner: &mut nl,
        calls: 0,
    };
    let r = reconcile(&mut counting, &st, &view_v1(), &own, &RouteMode::HostGw).unwrap();
    assert_eq!(r, Reconciled::Unchanged);
    assert_eq!(counting.calls, 0);
    assert!(
        !node
            .twill_routes()
            .contains(&pair("10.244.3.0/24", "192.168.77.3"))
    );
    // ... until CHECK looks (verify) or the view changes.
    let plan = verify(&mut nl, &st, &view_v1(), &own, &RouteMode::HostGw).unwrap();
    assert_eq!(plan.replace.len(), 1, "{plan:?}");
    assert_eq!(plan.replace[0].dst, net("10.244.3.0/24"));

    // Peer 3 leaves, peer 4 joins, peer 2 moves to another node IP.
    let v2 = ClusterView::new(vec![
        peer("192.168.77.22", "10.244.2.0/24"),
        peer("192.168.77.4", "10.244.4.0/24"),
        peer("fd77::2", "fd10:0:0:2::/64"),
    ])
    .unwrap();
    let r = reconcile(&mut nl, &st, &v2, &own, &RouteMode::HostGw).unwrap();
    assert!(matches!(r, Reconciled::Applied(_)), "{r:?}");
    assert_eq!(
        node.twill_routes(),
        [
            pair("10.244.2.0/24", "192.168.77.22"),
            pair("10.244.4.0/24", "192.168.77.4"),
            pair("fd10:0:0:2::/64", "fd77::2"),
        ]
        .into()
    );
    // Peers leave: routes deleted.
    let v3 = ClusterView::new(vec![peer("192.168.77.4", "10.244.4.0/24")]).unwrap();
    reconcile(&mut nl, &st, &v3, &own, &RouteMode::HostGw).unwrap();
    assert_eq!(
        node.twill_routes(),
        [pair("10.244.4.0/24", "192.168.77.4")].into()
    );
    assert!(
        verify(&mut nl, &st, &v3, &own, &RouteMode::HostGw)
            .unwrap()
            .is_empty()
    );
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
    let view = ClusterView::new(vec![
        peer("192.168.77.2", "10.244.2.0/24"),
        peer("192.168.77.3", "10.244.3.0/24"),
    ])
    .unwrap();
    let r = reconcile(&mut nl, &st, &view, &[net(OWN)], &RouteMode::HostGw).unwrap();
    let Reconciled::Applied(plan) = r else {
        panic!("{r:?}")
    };
    assert_eq!(plan.conflicts.len(), 1, "{plan:?}");
    assert_eq!(plan.conflicts[0].dst, net("10.244.2.0/24"));
    let after = node.routes();
    assert!(
        after.is_superset(&before),
        "nothing foreign removed or changed"
    );
    assert!(after.contains(&(
        "10.244.2.0/24".into(),
        "192.168.77.200".into(),
        "static".into()
    )));
    assert!(after.contains(&("10.244.3.0/24".into(), "192.168.77.3".into(), proto.clone())));
    assert!(!after.contains(&("10.244.2.0/24".into(), "192.168.77.2".into(), proto.clone())));

    // Conflict pending: no stamp, so the next reconcile looks again; once the admin's
    // route is gone, ours is installed.
    node.ip(&["route", "del", "10.244.2.0/24", "proto", "static"]);
    let r = reconcile(&mut nl, &st, &view, &[net(OWN)], &RouteMode::HostGw).unwrap();
    assert!(
        matches!(r, Reconciled::Applied(ref p) if p.replace.len() == 1),
        "{r:?}"
    );
    assert!(
        node.twill_routes()
            .contains(&pair("10.244.2.0/24", "192.168.77.2"))
    );

    // Emptying the view deletes this network's routes only; the other twill network's stays.
    let empty = ClusterView::new(vec![]).unwrap();
    reconcile(&mut nl, &st, &empty, &[net(OWN)], &RouteMode::HostGw).unwrap();
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
    let view: Vec<Peer> = (2..40)
        .map(|i| peer(&format!("192.168.77.{i}"), &format!("10.200.{i}.0/24")))
        .collect();
    let view = ClusterView::new(view).unwrap();
    let ns = node.netns();
    let cookie = ns.cookie().unwrap();
    std::thread::scope(|s| {
        for _ in 0..6 {
            s.spawn(|| {
                let mut nl = Netlink::new_in(&ns).unwrap();
                let st = StateFile::new(&node.run_dir, "conc", cookie).unwrap();
                reconcile(&mut nl, &st, &view, &[net(OWN)], &RouteMode::HostGw).unwrap()
            });
        }
    });
    let routes = node.twill_routes();
    assert_eq!(routes.len(), 38);
    // Also racing without the lock's help: every process seeing a missing state file.
    let mut nl = node.netlink();
    for _ in 0..3 {
        let st = StateFile::new(&node.run_dir, "conc", cookie).unwrap();
        st.remove().unwrap();
        reconcile(&mut nl, &st, &view, &[net(OWN)], &RouteMode::HostGw).unwrap();
    }
    assert_eq!(node.twill_routes(), routes);
}

#[test]
fn unreachable_gateway_is_reported_and_retried() {
    let node = Node::new();
    let mut nl = node.netlink();
    let st = node.state("unr");
    let view = ClusterView::new(vec![
        peer("192.168.77.2", "10.244.2.0/24"),
        peer("172.31.0.9", "10.244.3.0/24"), // not on a connected subnet: host-gw can't
    ])
    .unwrap();
    let e = reconcile(&mut nl, &st, &view, &[net(OWN)], &RouteMode::HostGw).unwrap_err();
    assert_eq!(e.code, twill::code::NETLINK);
    assert!(e.details.contains("10.244.3.0/24"), "{e}");
    assert_eq!(
        node.twill_routes(),
        [pair("10.244.2.0/24", "192.168.77.2")].into()
    );
    // Still pending: retried (not skipped) next time.
    assert!(reconcile(&mut nl, &st, &view, &[net(OWN)], &RouteMode::HostGw).is_err());
}

/// Prints the cost of the skip path and of a full apply; run with `--nocapture`.
#[test]
fn reconcile_cost() {
    let node = Node::new();
    let mut nl = node.netlink();
    let st = node.state("cost");
    let view: Vec<Peer> = (2..202)
        .map(|i| {
            peer(
                &format!("192.168.77.{}", i % 250 + 2),
                &format!("10.{}.{}.0/24", 100 + i / 250, i % 250),
            )
        })
        .collect();
    let view = ClusterView::new(view).unwrap();
    let t = Instant::now();
    reconcile(&mut nl, &st, &view, &[net(OWN)], &RouteMode::HostGw).unwrap();
    let apply = t.elapsed();
    let n = 2000;
    let t = Instant::now();
    for _ in 0..n {
        assert_eq!(
            reconcile(&mut nl, &st, &view, &[net(OWN)], &RouteMode::HostGw).unwrap(),
            Reconciled::Unchanged
        );
    }
    let skip = t.elapsed() / n;
    let t = Instant::now();
    let plan = verify(&mut nl, &st, &view, &[net(OWN)], &RouteMode::HostGw).unwrap();
    let verify_t = t.elapsed();
    assert!(plan.is_empty());
    println!(
        "peers::reconcile with {} peers: first apply {apply:?}, skip path {skip:?}/call, verify {verify_t:?}",
        view.peers().len()
    );
}
