//! twill::pod::veth against the real kernel: a "node" netns with a bridge and "pod" netns (root).

mod common;

use common::{TestNs, eventually, first, net};
use ipnetwork::IpNetwork;
use twill::cni::types::{Attachment, CniResult, Interface, IpConfig, Route};
use twill::code;
use twill::kernel::netlink::{MacAddr, Netlink, RouteSpec};
use twill::pod::bridge;
use twill::pod::veth::{self, CreateError, Owner, PairSpec};

/// A node netns with bridge `twbr0` (10.1.0.1/24, fd00:1::1/64) and its netlink socket.
struct Node {
    ns: TestNs,
    nl: Netlink,
    br: bridge::Bridge,
}

impl Node {
    fn new() -> Node {
        let ns = TestNs::new();
        let mut nl = ns.netlink();
        let br = bridge::ensure(&mut nl, "twbr0", 1450).unwrap();
        bridge::ensure_gateway(&mut nl, &br, net("10.1.0.1/24"), false).unwrap();
        bridge::ensure_gateway(&mut nl, &br, net("fd00:1::1/64"), false).unwrap();
        Node { ns, nl, br }
    }

    fn pair(&mut self, pod: &TestNs, id: &str, mac: Option<MacAddr>) -> veth::HostEnd {
        self.pair_of(pod, &owner(id), mac)
    }

    fn pair_of(&mut self, pod: &TestNs, owner: &Owner, mac: Option<MacAddr>) -> veth::HostEnd {
        let pod_ns = pod.open();
        let spec = PairSpec {
            owner: *owner,
            pod_ns: &pod_ns,
            mtu: 1450,
            bridge: self.br.index,
            pod_mac: mac,
        };
        veth::create(&mut self.nl, &spec).unwrap()
    }
}

/// Attachment (`id`, eth0) of network "pods".
fn owner(id: &str) -> Owner<'_> {
    Owner {
        network: "pods",
        container_id: id,
        ifname: "eth0",
    }
}

fn ipc(addr: &str, gw: &str) -> IpConfig {
    IpConfig {
        address: net(addr),
        gateway: Some(gw.parse().unwrap()),
        interface: Some(2),
    }
}

#[test]
fn create_makes_host_end_on_bridge_and_pod_end_in_pod() {
    let mut node = Node::new();
    let pod = TestNs::new();
    let mac: MacAddr = "02:aa:bb:cc:dd:01".parse().unwrap();
    let host = node.pair(&pod, "c1", Some(mac));
    assert_eq!(host.name, owner("c1").host_name(0));

    let h = node.ns.link(&host.name);
    assert_eq!(h["linkinfo"]["info_kind"], "veth");
    assert_eq!(h["master"], "twbr0");
    assert_eq!(h["mtu"], 1450);
    assert_eq!(h["address"], host.mac.to_string());
    assert!(h["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
    assert_eq!(
        h["ifalias"], "twill pods c1 eth0",
        "the host end carries its owner"
    );

    let p = pod.link("eth0");
    assert_eq!(p["linkinfo"]["info_kind"], "veth");
    assert_eq!(p["mtu"], 1450);
    assert_eq!(p["address"], "02:aa:bb:cc:dd:01");
    assert_eq!(pod.link_names(), vec!["lo", "eth0"]);

    assert!(veth::delete(&mut node.nl, &owner("c1")).unwrap());
    assert!(!node.ns.link_names().contains(&host.name));
    assert_eq!(
        pod.link_names(),
        vec!["lo"],
        "the pod end goes with the host end"
    );
    assert!(!veth::delete(&mut node.nl, &owner("c1")).unwrap());
}

#[test]
fn create_clashes_say_which_name_and_leave_nothing() {
    let mut node = Node::new();
    let pod = TestNs::new();
    node.pair(&pod, "c1", None);
    let before_node = node.ns.link_names();

    // Same attachment again: the host end exists.
    let pod_ns = pod.open();
    let spec = PairSpec {
        owner: owner("c1"),
        pod_ns: &pod_ns,
        mtu: 1450,
        bridge: node.br.index,
        pod_mac: None,
    };
    let e = veth::create(&mut node.nl, &spec).unwrap_err();
    assert!(matches!(e, CreateError::AttachmentExists { .. }), "{e}");
    assert_eq!(twill::Error::from(e).code, code::CONFLICT);

    // Another container, same pod ifname: the pod side clashes.
    let spec = PairSpec {
        owner: owner("c2"),
        ..spec
    };
    let e = veth::create(&mut node.nl, &spec).unwrap_err();
    assert!(matches!(e, CreateError::IfnameTaken { .. }), "{e}");
    let e = twill::Error::from(e);
    assert_eq!(e.code, code::CONFLICT);
    assert!(e.msg.contains("eth0") && e.msg.contains(&pod.name), "{e}");

    assert_eq!(node.ns.link_names(), before_node, "no half-made pair");
    assert_eq!(pod.link_names(), vec!["lo", "eth0"]);
}

#[test]
fn configure_pod_addresses_up_routes_and_traffic() {
    let mut node = Node::new();
    let pod = TestNs::new();
    let host = node.pair(&pod, "c1", None);
    let ips = [
        ipc("10.1.0.5/24", "10.1.0.1"),
        ipc("fd00:1::5/64", "fd00:1::1"),
    ];
    let ipam_routes = [Route::new(net("10.0.0.0/8"), None)];
    let (routes, _) = veth::pod_routes(&ips, &ipam_routes, true);
    let addrs: Vec<IpNetwork> = ips.iter().map(|c| c.address).collect();
    let end = veth::configure_pod(&mut node.nl, &pod.open(), "eth0", &addrs, &routes).unwrap();

    let host_index = node.nl.link_by_name(&host.name).unwrap().unwrap().index;
    assert_eq!(end.peer_index, Some(host_index));
    let p = pod.link("eth0");
    assert_eq!(p["ifindex"], end.index);
    assert_eq!(p["address"], end.mac.unwrap().to_string());
    assert!(p["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
    assert_eq!(pod.sysctl("net/ipv4/conf/eth0/arp_notify"), "1");

    let a = pod.ip_json(&["addr", "show", "dev", "eth0"]);
    let infos = first(&a)["addr_info"].as_array().unwrap().clone();
    let v4 = infos.iter().find(|i| i["local"] == "10.1.0.5").expect("v4");
    assert_eq!(v4["prefixlen"], 24);
    let v6 = infos
        .iter()
        .find(|i| i["local"] == "fd00:1::5")
        .expect("v6");
    assert_eq!(v6["prefixlen"], 64);
    assert_ne!(v6["tentative"], true, "IPv6 without DAD is usable at once");

    let r4 = pod.ip_json(&["-4", "route", "show"]);
    let dsts: Vec<(String, String)> = r4
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["dst"].as_str().unwrap().to_string(),
                r["gateway"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert!(
        dsts.contains(&("default".into(), "10.1.0.1".into())),
        "{dsts:?}"
    );
    assert!(
        dsts.contains(&("10.0.0.0/8".into(), "10.1.0.1".into())),
        "{dsts:?}"
    );
    let r6 = pod.ip_json(&["-6", "route", "show", "default"]);
    assert_eq!(first(&r6)["gateway"], "fd00:1::1");

    // Real packets: pod -> gateway over the bridge, both families.
    assert!(pod.ping("10.1.0.1"));
    assert!(pod.ping("fd00:1::1"));
}

#[test]
fn bringing_the_pod_up_announces_its_address() {
    // The node still maps the pod's IP to an old MAC (a previous pod): the gratuitous ARP that
    // arp_notify sends when the interface comes up must correct it without any traffic.
    let mut node = Node::new();
    let pod = TestNs::new();
    // A bridge that has carrier already (another port up), as on a node with pods, and whose
    // carrier change has been processed (RTM_GETLINK syncs linkwatch): otherwise the kernel
    // flushes the neighbour table of the bridge when it does.
    node.ns.ip(&[
        "link", "add", "k0", "master", "twbr0", "up", "type", "veth", "peer", "name", "k1",
    ]);
    node.ns.ip(&["link", "set", "k1", "up"]);
    node.ns.ip(&["link", "show", "dev", "k0"]);
    node.ns.ip(&["link", "show", "dev", "twbr0"]);
    node.ns.ip(&[
        "neigh",
        "add",
        "10.1.0.7",
        "lladdr",
        "02:00:00:00:00:99",
        "dev",
        "twbr0",
        "nud",
        "stale",
    ]);
    let host = node.pair(&pod, "c1", None);
    // Let the kernel process the new host end's carrier-off first (the kworker often does so
    // on its own before the pod comes up): its bridge port is disabled from then on, until the
    // carrier-on that bringing the pod up causes has been processed too.
    node.nl.link_by_name(&host.name).unwrap();
    let end = veth::configure_pod(
        &mut node.nl,
        &pod.open(),
        "eth0",
        &[net("10.1.0.7/24")],
        &[],
    )
    .unwrap();
    let want = end.mac.unwrap().to_string();
    let learned = eventually(|| {
        let n = node
            .ns
            .ip_json(&["neigh", "show", "10.1.0.7", "dev", "twbr0"]);
        n.as_array()
            .and_then(|a| a.first())
            .is_some_and(|e| e["lladdr"] == want.as_str())
    });
    assert!(learned, "node neighbour entry not updated to {want}");
}

#[test]
fn configure_pod_fails_cleanly_on_a_missing_interface_or_bad_route() {
    let mut node = Node::new();
    let pod = TestNs::new();
    let e = veth::configure_pod(
        &mut node.nl,
        &pod.open(),
        "eth0",
        &[net("10.1.0.5/24")],
        &[],
    )
    .unwrap_err();
    assert!(e.msg.contains("eth0"), "{e}");
    node.pair(&pod, "c1", None);
    let bad = RouteSpec {
        gateway: Some("172.30.0.1".parse().unwrap()),
        ..RouteSpec::new(net("192.168.0.0/16"))
    };
    let e = veth::configure_pod(
        &mut node.nl,
        &pod.open(),
        "eth0",
        &[net("10.1.0.5/24")],
        &[bad],
    )
    .unwrap_err();
    assert_eq!(e.code, code::NETLINK, "{e}");
    assert!(e.msg.contains("192.168.0.0/16"), "{e}");
}

#[test]
fn stale_host_ends_are_this_networks_marked_links_not_in_the_valid_list() {
    let mut node = Node::new();
    let pods: Vec<TestNs> = (0..3).map(|_| TestNs::new()).collect();
    node.pair(&pods[0], "keep", None);
    let stale = node.pair(&pods[1], "gone", None);
    // Another network's pod on the same bridge, and a hand-made veth holding the name a twill
    // host end would have: neither carries this network's mark, so neither is listed.
    let neighbour = Owner {
        network: "other",
        ..owner("gone")
    };
    node.pair_of(&pods[2], &neighbour, None);
    let lookalike = owner("never-added").host_name(0);
    node.ns.ip(&[
        "link", "add", &lookalike, "master", "twbr0", "type", "veth", "peer", "name", "x1",
    ]);

    let valid = [Attachment {
        container_id: "keep".into(),
        ifname: "eth0".into(),
    }];
    let found = veth::stale_host_ends(&mut node.nl, "pods", &valid).unwrap();
    let names: Vec<(&str, &str)> = found
        .iter()
        .map(|s| (s.link.name.as_str(), s.attachment.as_str()))
        .collect();
    assert_eq!(names, vec![(stale.name.as_str(), "gone eth0")]);
    let all = veth::stale_host_ends(&mut node.nl, "pods", &[]).unwrap();
    assert_eq!(all.len(), 2);
}

#[test]
fn a_foreign_link_on_the_host_name_makes_create_take_the_next_and_find_follows() {
    let mut node = Node::new();
    let pod = TestNs::new();
    let first = owner("c1").host_name(0);
    node.ns
        .ip(&["link", "add", &first, "type", "veth", "peer", "name", "x1"]);
    let host = node.pair(&pod, "c1", None);
    assert_eq!(host.name, owner("c1").host_name(1));
    let found = veth::find(&mut node.nl, &owner("c1")).unwrap().unwrap();
    assert_eq!(found.name, host.name);
    // Found by mark even once the squatter is gone (the first name is then free).
    node.ns.ip(&["link", "del", &first]);
    assert!(veth::delete(&mut node.nl, &owner("c1")).unwrap());
    assert!(!node.ns.link_names().contains(&host.name));
    assert!(!veth::delete(&mut node.nl, &owner("c1")).unwrap());
}

/// Kernels before 6.3 ignore NLM_F_ECHO on RTM_NEWLINK: without the echoed ifindexes the pod
/// end is looked up by name, and the result is the same.
#[test]
fn pod_setup_without_the_creation_echo_looks_the_ends_up() {
    let mut node = Node::new();
    let pod = TestNs::new();
    let mut host = node.pair(&pod, "c1", None);
    host.index = None;
    host.pod_index = None;
    let addrs = [net("10.1.0.5/24")];
    let (routes, _) = veth::pod_routes(&[ipc("10.1.0.5/24", "10.1.0.1")], &[], true);
    let end = veth::configure_created_pod(
        &mut node.nl,
        &pod.open(),
        "eth0",
        &host,
        &addrs,
        &routes,
        veth::PodOptions::default(),
    )
    .unwrap();
    let host_index = node.nl.link_by_name(&host.name).unwrap().unwrap().index;
    assert_eq!(end.peer_index, Some(host_index));
    assert_eq!(pod.link("eth0")["ifindex"], end.index);
    assert!(pod.ping("10.1.0.1"));
    assert!(veth::delete_created(&mut node.nl, &host).unwrap());
    assert_eq!(pod.link_names(), vec!["lo"]);
}

fn prev_result(node: &Node, host: &veth::HostEnd, pod: &TestNs, end: &veth::PodEnd) -> CniResult {
    CniResult {
        interfaces: vec![
            Interface {
                name: "twbr0".into(),
                mac: node.br.mac.map(|m| m.to_string()),
                ..Default::default()
            },
            Interface {
                name: host.name.clone(),
                mac: Some(host.mac.to_string()),
                ..Default::default()
            },
            Interface {
                name: "eth0".into(),
                mac: end.mac.map(|m| m.to_string()),
                sandbox: Some(pod.path().display().to_string()),
                ..Default::default()
            },
        ],
        ips: vec![ipc("10.1.0.5/24", "10.1.0.1")],
        routes: vec![
            Route::new(net("0.0.0.0/0"), Some("10.1.0.1".parse().unwrap())),
            Route::new(net("10.0.0.0/8"), None),
        ],
        dns: Default::default(),
    }
}

#[test]
fn check_passes_as_made_and_names_what_changed() {
    let mut node = Node::new();
    let pod = TestNs::new();
    let host = node.pair(&pod, "c1", None);
    let ips = [ipc("10.1.0.5/24", "10.1.0.1")];
    let (routes, _) = veth::pod_routes(&ips, &[Route::new(net("10.0.0.0/8"), None)], true);
    let end = veth::configure_pod(
        &mut node.nl,
        &pod.open(),
        "eth0",
        &[net("10.1.0.5/24")],
        &routes,
    )
    .unwrap();
    let prev = prev_result(&node, &host, &pod, &end);
    let pod_ns = pod.open();
    let check = |node: &mut Node| {
        veth::check(
            &mut node.nl,
            &pod_ns,
            node.br.index,
            &owner("c1"),
            &prev,
            veth::PodOptions::default(),
        )
    };
    check(&mut node).unwrap();

    let expect_fail = |node: &mut Node, what: &str| {
        let e = check(node).unwrap_err();
        assert_eq!(e.code, code::CHECK_FAILED, "{e}");
        assert!(e.msg.contains(what), "{what:?} not in {e}");
    };
    pod.ip(&["route", "del", "10.0.0.0/8"]);
    expect_fail(&mut node, "10.0.0.0/8");
    pod.ip(&["route", "add", "10.0.0.0/8", "via", "10.1.0.1"]);
    check(&mut node).unwrap();

    pod.ip(&["addr", "del", "10.1.0.5/24", "dev", "eth0"]);
    expect_fail(&mut node, "10.1.0.5/24");
    pod.ip(&["addr", "add", "10.1.0.5/24", "dev", "eth0"]);
    pod.ip(&["route", "add", "default", "via", "10.1.0.1"]);
    pod.ip(&["route", "replace", "10.0.0.0/8", "via", "10.1.0.1"]);
    check(&mut node).unwrap();

    node.ns.ip(&["link", "set", &host.name, "nomaster"]);
    expect_fail(&mut node, "not a port of the bridge");
    node.ns.ip(&["link", "set", &host.name, "master", "twbr0"]);

    pod.ip(&["link", "set", "eth0", "address", "02:00:00:00:00:42"]);
    expect_fail(&mut node, "MAC");
    pod.ip(&[
        "link",
        "set",
        "eth0",
        "address",
        &end.mac.unwrap().to_string(),
    ]);
    check(&mut node).unwrap();

    // The host end's mark gone: it is no longer provably this attachment's.
    node.ns
        .ip(&["link", "set", &host.name, "alias", "someone else"]);
    expect_fail(&mut node, "does not exist");
    node.ns
        .ip(&["link", "set", &host.name, "alias", "twill pods c1 eth0"]);
    check(&mut node).unwrap();

    // The pod interface gone: named.
    pod.ip(&["link", "del", "eth0"]);
    expect_fail(&mut node, "does not exist");
}
