//! twill::pod::bridge against the real kernel, in throwaway namespaces (run as root).

mod common;

use common::{TestNs, net};
use twill::code;
use twill::kernel::netlink::{MacAddr, Netlink};
use twill::pod::bridge;

#[test]
fn ensure_creates_up_with_mtu_and_a_mac_that_ignores_ports() {
    let ns = TestNs::new();
    let mut nl = ns.netlink();
    let br = bridge::ensure(&mut nl, "twbr0", 1400).unwrap();
    assert!(br.created);
    assert_eq!(br.mtu, 1400);
    let j = ns.link("twbr0");
    assert_eq!(j["linkinfo"]["info_kind"], "bridge");
    assert_eq!(j["mtu"], 1400);
    assert!(j["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
    let mac = br.mac.expect("bridge MAC");
    assert_eq!(j["address"], mac.to_string());
    assert_eq!(mac.0[0] & 0x03, 0x02, "locally administered unicast");

    // A port with a numerically lower MAC would become the bridge's MAC if it were not fixed.
    ns.ip(&[
        "link",
        "add",
        "p0",
        "address",
        "00:00:00:00:00:01",
        "mtu",
        "1400",
        "type",
        "veth",
        "peer",
        "name",
        "p1",
    ]);
    ns.ip(&["link", "set", "p0", "master", "twbr0", "up"]);
    assert_eq!(ns.link("twbr0")["address"], mac.to_string());

    // Second call: found, not created, same device.
    let again = bridge::ensure(&mut nl, "twbr0", 1400).unwrap();
    assert!(!again.created);
    assert_eq!(again.index, br.index);
    assert_eq!(again.mac, Some(mac));
}

#[test]
fn a_bridge_made_here_has_a_usable_ipv6_link_local_at_once() {
    let ns = TestNs::new();
    let n = ns.open();
    let mut nl = ns.netlink();
    // As in a plugin: the thread is in the node netns.
    n.run(|| bridge::ensure(&mut nl, "twbr0", 1500).unwrap())
        .unwrap();
    assert_eq!(ns.sysctl("net/ipv6/conf/twbr0/accept_dad"), "0");
    // The link-local appears when the bridge gets carrier (first port up).
    ns.ip(&[
        "link", "add", "p0", "master", "twbr0", "up", "type", "veth", "peer", "name", "p1",
    ]);
    ns.ip(&["link", "set", "p1", "up"]);
    ns.ip(&["link", "show", "dev", "p0"]);
    ns.ip(&["link", "show", "dev", "twbr0"]);
    let j = ns.ip_json(&["-6", "addr", "show", "dev", "twbr0", "scope", "link"]);
    let infos = common::first(&j)["addr_info"].as_array().unwrap().clone();
    assert_eq!(infos.len(), 1, "{infos:?}");
    assert_ne!(infos[0]["tentative"], true, "{infos:?}");
}

#[test]
fn ensure_fixes_an_existing_bridge_that_is_down_or_has_another_mtu() {
    let ns = TestNs::new();
    ns.ip(&["link", "add", "twbr0", "mtu", "1500", "type", "bridge"]);
    let mut nl = ns.netlink();
    let br = bridge::ensure(&mut nl, "twbr0", 1450).unwrap();
    assert!(!br.created);
    assert_eq!(br.mtu, 1450);
    let j = ns.link("twbr0");
    assert_eq!(j["mtu"], 1450);
    assert!(j["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
}

#[test]
fn a_non_bridge_link_with_the_name_is_a_conflict() {
    let ns = TestNs::new();
    ns.ip(&[
        "link", "add", "twbr0", "type", "veth", "peer", "name", "twbr0p",
    ]);
    let mut nl = ns.netlink();
    let e = bridge::ensure(&mut nl, "twbr0", 1500).unwrap_err();
    assert_eq!(e.code, code::CONFLICT, "{e}");
    assert!(e.msg.contains("veth") && e.msg.contains("twbr0"), "{e}");
    assert_eq!(
        bridge::find(&mut nl, "twbr0").unwrap_err().code,
        code::CONFLICT
    );
    assert!(bridge::find(&mut nl, "nobr0").unwrap().is_none());
    // Nothing was changed: still the veth, no bridge made.
    assert_eq!(ns.link("twbr0")["linkinfo"]["info_kind"], "veth");
    assert_eq!(
        bridge::ensure(&mut nl, "bad/name", 1500).unwrap_err().code,
        code::INVALID_CONFIG
    );
}

#[test]
fn concurrent_creators_share_one_bridge() {
    let ns = TestNs::new();
    let path = ns.path();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || {
                let ns = twill::kernel::netns::Netns::open(&path).unwrap();
                let mut nl = Netlink::new_in(&ns).unwrap();
                bridge::ensure(&mut nl, "twbr0", 1500).unwrap()
            })
        })
        .collect();
    let made: Vec<bridge::Bridge> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(made.iter().all(|b| b.index == made[0].index));
    assert_eq!(made.iter().filter(|b| b.created).count(), 1);
    let bridges = ns
        .link_names()
        .into_iter()
        .filter(|n| n.starts_with("twbr"))
        .count();
    assert_eq!(bridges, 1);
}

fn addrs(ns: &TestNs, dev: &str) -> Vec<String> {
    let j = ns.ip_json(&["addr", "show", "dev", dev]);
    common::first(&j)["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let mut s = format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]);
            if a["tentative"].as_bool() == Some(true) {
                s.push_str(" tentative");
            }
            s
        })
        .collect()
}

#[test]
fn gateway_addresses_idempotent_conflicting_and_forced() {
    let ns = TestNs::new();
    let mut nl = ns.netlink();
    let br = bridge::ensure(&mut nl, "twbr0", 1500).unwrap();
    bridge::ensure_gateway(&mut nl, &br, net("10.1.0.1/24"), false).unwrap();
    bridge::ensure_gateway(&mut nl, &br, net("10.1.0.1/24"), false).unwrap();
    bridge::ensure_gateway(&mut nl, &br, net("fd00:1::1/64"), false).unwrap();
    let have = addrs(&ns, "twbr0");
    assert!(have.contains(&"10.1.0.1/24".to_string()), "{have:?}");
    assert!(
        have.contains(&"fd00:1::1/64".to_string()),
        "IPv6 gateway usable at once (no DAD): {have:?}"
    );
    assert_eq!(have.iter().filter(|a| a.starts_with("10.")).count(), 1);

    // The bridge as found later (not created by this call): conflicts are looked for.
    let found = bridge::ensure(&mut nl, "twbr0", 1500).unwrap();
    let e = bridge::ensure_gateway(&mut nl, &found, net("10.2.0.1/24"), false).unwrap_err();
    assert_eq!(e.code, code::CONFLICT);
    assert!(
        e.msg.contains("10.1.0.1/24") && e.msg.contains("forceAddress"),
        "{e}"
    );
    let have = addrs(&ns, "twbr0");
    assert!(
        !have.iter().any(|a| a.starts_with("10.2.")),
        "the refused gateway is not left on the bridge: {have:?}"
    );
    // Another IPv6 subnet does not conflict; an overlapping one does.
    bridge::ensure_gateway(&mut nl, &found, net("fd00:2::1/64"), false).unwrap();
    let e = bridge::ensure_gateway(&mut nl, &found, net("fd00:1::9/64"), false).unwrap_err();
    assert_eq!(e.code, code::CONFLICT, "{e}");

    bridge::ensure_gateway(&mut nl, &found, net("10.2.0.1/24"), true).unwrap();
    let have = addrs(&ns, "twbr0");
    assert!(have.contains(&"10.2.0.1/24".to_string()), "{have:?}");
    assert!(!have.contains(&"10.1.0.1/24".to_string()), "{have:?}");

    bridge::check_gateways(&mut nl, br.index, "twbr0", &[net("10.2.0.1/24")]).unwrap();
    let e = bridge::check_gateways(&mut nl, br.index, "twbr0", &[net("10.1.0.1/24")]).unwrap_err();
    assert_eq!(e.code, code::CHECK_FAILED);
    assert!(e.msg.contains("10.1.0.1/24"), "{e}");
}

#[test]
fn forced_gateway_survives_removal_of_the_old_primary() {
    // 10.1.0.1/16 primary, and the new gateway 10.1.5.1/16 would become its secondary:
    // removing the old primary must not take the new address with it.
    let ns = TestNs::new();
    ns.open()
        .run(|| twill::kernel::sysctl::set("net/ipv4/conf/all/promote_secondaries", "0"))
        .unwrap()
        .unwrap();
    let mut nl = ns.netlink();
    let br = bridge::ensure(&mut nl, "twbr0", 1500).unwrap();
    ns.ip(&["addr", "add", "10.1.0.1/16", "dev", "twbr0"]);
    let found = bridge::ensure(&mut nl, "twbr0", 1500).unwrap();
    assert_eq!(found.index, br.index);
    bridge::ensure_gateway(&mut nl, &found, net("10.1.5.1/16"), true).unwrap();
    let have = addrs(&ns, "twbr0");
    assert!(have.contains(&"10.1.5.1/16".to_string()), "{have:?}");
    assert!(!have.contains(&"10.1.0.1/16".to_string()), "{have:?}");
}

#[test]
fn hairpin_on_a_port() {
    let ns = TestNs::new();
    let mut nl = ns.netlink();
    bridge::ensure(&mut nl, "twbr0", 1500).unwrap();
    ns.ip(&["link", "add", "p0", "type", "veth", "peer", "name", "p1"]);
    ns.ip(&["link", "set", "p0", "master", "twbr0"]);
    assert_eq!(
        ns.link("p0")["linkinfo"]["info_slave_data"]["hairpin"],
        false
    );
    let p0 = nl.link_by_name("p0").unwrap().unwrap().index;
    bridge::set_hairpin(&mut nl, p0, true).unwrap();
    assert_eq!(
        ns.link("p0")["linkinfo"]["info_slave_data"]["hairpin"],
        true
    );
}

#[test]
fn forwarding_is_turned_on_only_where_asked() {
    let ns = TestNs::new();
    let n = ns.open();
    n.run(|| {
        twill::kernel::sysctl::set("net/ipv4/ip_forward", "0").unwrap();
        twill::kernel::sysctl::set("net/ipv6/conf/all/forwarding", "0").unwrap();
    })
    .unwrap();
    n.run(|| bridge::enable_forwarding(true, false))
        .unwrap()
        .unwrap();
    assert_eq!(ns.sysctl("net/ipv4/ip_forward"), "1");
    assert_eq!(ns.sysctl("net/ipv6/conf/all/forwarding"), "0");
    n.run(|| bridge::enable_forwarding(true, true))
        .unwrap()
        .unwrap();
    assert_eq!(ns.sysctl("net/ipv6/conf/all/forwarding"), "1");
}

#[test]
fn random_macs_differ() {
    let a: MacAddr = twill::pod::veth::random_mac();
    let b: MacAddr = twill::pod::veth::random_mac();
    assert_ne!(a, b);
}

#[test]
fn the_bridge_is_found_with_its_own_ipv4_addresses_which_answer_a_present_gateway() {
    let ns = TestNs::new();
    let mut nl = ns.netlink();
    bridge::ensure(&mut nl, "twbr0", 1500).unwrap();
    ns.ip(&["addr", "add", "10.1.0.1/24", "dev", "twbr0"]);
    ns.ip(&["link", "add", "other0", "type", "bridge"]);
    ns.ip(&["addr", "add", "10.7.0.1/24", "dev", "other0"]);
    let found = bridge::ensure(&mut nl, "twbr0", 1500).unwrap();
    assert!(!found.created);
    assert_eq!(
        found.ipv4,
        Some(vec![net("10.1.0.1/24")]),
        "only the bridge's own"
    );
    // Listed: present, nothing sent; not listed: the conflict rule still holds.
    bridge::ensure_gateway(&mut nl, &found, net("10.1.0.1/24"), false).unwrap();
    let e = bridge::ensure_gateway(&mut nl, &found, net("10.7.0.1/24"), false).unwrap_err();
    assert_eq!(e.code, code::CONFLICT, "{e}");
    assert_eq!(addrs(&ns, "twbr0"), vec!["10.1.0.1/24".to_string()]);
}

#[test]
fn netconf_forwarding_answers_as_proc_and_a_known_value_decides_the_write() {
    use twill::kernel::netlink::{Batch, Family};
    let ns = TestNs::new();
    let n = ns.open();
    let mut nl = ns.netlink();
    for (v4, v6) in [("0", "0"), ("1", "0"), ("0", "1"), ("1", "1")] {
        n.run(|| {
            twill::kernel::sysctl::set("net/ipv4/ip_forward", v4).unwrap();
            twill::kernel::sysctl::set("net/ipv6/conf/all/forwarding", v6).unwrap();
        })
        .unwrap();
        let mut b = Batch::new();
        b.get_link_by_name("lo");
        b.ask_forwarding(Family::V4);
        b.ask_forwarding(Family::V6);
        let r = nl.send_batch_reading(b).unwrap();
        assert_eq!(r.ipv4_forwarding, Some(v4 == "1"), "ip_forward={v4}");
        assert_eq!(r.ipv6_forwarding, Some(v6 == "1"), "all.forwarding={v6}");
        assert_eq!(
            r.links.len(),
            1,
            "the other requests of the batch still answer"
        );
    }
    // A known "on" is believed (no write even though /proc says 0 now); a known "off" and an
    // unknown one that /proc says is 0 are written.
    n.run(|| twill::kernel::sysctl::set("net/ipv4/ip_forward", "0").unwrap())
        .unwrap();
    n.run(|| bridge::enable_forwarding_known(true, false, Some(true), None))
        .unwrap()
        .unwrap();
    assert_eq!(ns.sysctl("net/ipv4/ip_forward"), "0");
    n.run(|| bridge::enable_forwarding_known(true, false, Some(false), None))
        .unwrap()
        .unwrap();
    assert_eq!(ns.sysctl("net/ipv4/ip_forward"), "1");
    n.run(|| twill::kernel::sysctl::set("net/ipv4/ip_forward", "0").unwrap())
        .unwrap();
    n.run(|| bridge::enable_forwarding_known(true, false, None, None))
        .unwrap()
        .unwrap();
    assert_eq!(ns.sysctl("net/ipv4/ip_forward"), "1");
}
