//! The bridge options behind the reference bridge's keys, against the real kernel in throwaway
//! namespaces (run as root): the MTU rule and promiscuous mode of `bridge::ensure_with`, port
//! flags (hairpin, isolation), and waiting for IPv6 DAD on address notifications.

mod common;

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use common::{TestNs, first};
use twill::kernel::netlink::{DadOutcome, Ipv6AddrEvents, PortFlags};
use twill::pod::bridge::{self, BridgeOptions};

fn has_flag(ns: &TestNs, dev: &str, flag: &str) -> bool {
    ns.link(dev)["flags"]
        .as_array()
        .is_some_and(|a| a.iter().any(|f| f == flag))
}

#[test]
fn ensure_with_imposes_only_a_configured_mtu_and_asks_the_default_only_to_create() {
    let ns = TestNs::new();
    let mut nl = ns.netlink();
    let keep = BridgeOptions {
        mtu: None,
        promisc: false,
    };
    let br = bridge::ensure_with(&mut nl, "twbr0", &keep, |_| Ok(1450)).unwrap();
    assert!(br.created);
    assert_eq!(
        (br.mtu, ns.link("twbr0")["mtu"].as_u64()),
        (1450, Some(1450))
    );
    assert!(!has_flag(&ns, "twbr0", "PROMISC"));

    ns.ip(&["link", "set", "twbr0", "mtu", "1400"]);
    let br = bridge::ensure_with(&mut nl, "twbr0", &keep, |_| {
        panic!("the default MTU is not needed for an existing bridge")
    })
    .unwrap();
    assert_eq!(br.mtu, 1400, "an existing bridge keeps its MTU");
    assert_eq!(ns.link("twbr0")["mtu"], 1400);

    let set = BridgeOptions {
        mtu: Some(1300),
        promisc: true,
    };
    let br = bridge::ensure_with(&mut nl, "twbr0", &set, |_| Ok(1450)).unwrap();
    assert_eq!(br.mtu, 1300);
    assert_eq!(ns.link("twbr0")["mtu"], 1300);
    assert!(has_flag(&ns, "twbr0", "PROMISC"));
    // Not asking for promiscuous mode leaves it as another network set it.
    bridge::ensure_with(&mut nl, "twbr0", &keep, |_| Ok(1450)).unwrap();
    assert!(has_flag(&ns, "twbr0", "PROMISC"));
}

#[test]
fn configure_port_sets_hairpin_and_isolation_in_one_request() {
    let ns = TestNs::new();
    let mut nl = ns.netlink();
    let br = bridge::ensure(&mut nl, "twbr0", 1500).unwrap();
    ns.ip(&["link", "add", "p0", "type", "veth", "peer", "name", "p1"]);
    ns.ip(&["link", "set", "p0", "master", "twbr0"]);
    let p0 = nl.link_by_name("p0").unwrap().unwrap();
    assert_eq!(p0.master, Some(br.index));
    let slave = |ns: &TestNs| {
        let d = ns.ip_json(&["-d", "link", "show", "dev", "p0"]);
        let s = &first(&d)["linkinfo"]["info_slave_data"];
        (s["hairpin"].clone(), s["isolated"].clone())
    };
    let both = PortFlags {
        hairpin: true,
        isolated: true,
    };
    bridge::configure_port(&mut nl, None, "p0", both).unwrap();
    assert_eq!(slave(&ns), (true.into(), true.into()));
    let isolated_only = PortFlags {
        hairpin: false,
        isolated: true,
    };
    nl.set_port_flags(p0.index, isolated_only).unwrap();
    assert_eq!(slave(&ns), (false.into(), true.into()));
    nl.set_port_flags(p0.index, PortFlags::default()).unwrap();
    assert_eq!(slave(&ns), (false.into(), false.into()));
}

#[test]
fn dad_wait_ends_on_the_kernels_notification_and_is_bounded() {
    let ns = TestNs::new();
    let mut nl = ns.netlink();
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
    let v0 = nl.link_by_name("v0").unwrap().unwrap().index;
    let ip: Ipv6Addr = "fd00:5::1".parse().unwrap();
    let mut events = ns.enter(Ipv6AddrEvents::open).unwrap();
    ns.ip(&["addr", "add", "fd00:5::1/64", "dev", "v0"]);

    // The link is down: DAD cannot start, the wait ends at its bound.
    let start = Instant::now();
    let out = events
        .wait_dad(&mut nl, v0, &[ip], Duration::from_millis(200))
        .unwrap();
    assert_eq!(out, DadOutcome::TimedOut(vec![ip]));
    assert!(start.elapsed() < Duration::from_secs(5));

    ns.ip(&["link", "set", "v1", "up"]);
    ns.ip(&["link", "set", "v0", "up"]);
    let out = events
        .wait_dad(&mut nl, v0, &[ip], Duration::from_secs(10))
        .unwrap();
    assert_eq!(out, DadOutcome::Settled);
    let a = ns.ip_json(&["addr", "show", "dev", "v0"]);
    let info = first(&a)["addr_info"].as_array().unwrap().clone();
    let mine = info.iter().find(|i| i["local"] == "fd00:5::1").unwrap();
    assert!(mine.get("tentative").is_none(), "{mine}");
}
