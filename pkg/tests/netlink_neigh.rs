//! Neighbours and FDB entries on a vxlan device, against the real kernel (run as root).

mod common;

use common::TestNs;
use twill::kernel::netlink::{
    BridgeSpec, Family, FdbEntry, MacAddr, NeighbourSpec, Netlink, VxlanSpec, nud,
};

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

fn vxlan_ns() -> (TestNs, Netlink, u32) {
    let ns = TestNs::new();
    let mut nl = ns.netlink();
    let lo = nl.link_by_name("lo").unwrap().unwrap();
    nl.set_link_up(lo.index, true).unwrap();
    nl.create_vxlan(&VxlanSpec {
        name: "twvx0",
        vni: 1,
        local: Some("127.0.0.1".parse().unwrap()),
        port: 8472,
        underlay: Some(lo.index),
        learning: false,
        mtu: Some(1450),
        mac: Some(mac("02:00:00:00:01:01")),
        up: true,
    })
    .unwrap();
    let vx = nl.link_by_name("twvx0").unwrap().unwrap();
    (ns, nl, vx.index)
}

#[test]
fn neighbours_permanent_and_proxy() {
    let (ns, mut nl, vx) = vxlan_ns();
    let ip = "10.244.1.0".parse().unwrap();
    let n = NeighbourSpec::permanent(vx, ip, mac("0a:00:00:00:00:01"));
    nl.add_neighbour(&n).unwrap();
    assert!(nl.add_neighbour(&n).unwrap_err().is_exists());
    let n2 = NeighbourSpec {
        mac: Some(mac("0a:00:00:00:00:02")),
        ..n.clone()
    };
    nl.replace_neighbour(&n2).unwrap();
    let v6 = NeighbourSpec::permanent(vx, "fd44::1".parse().unwrap(), mac("0a:00:00:00:00:03"));
    nl.add_neighbour(&v6).unwrap();

    let list = nl.neighbours(Some(vx), Some(Family::V4), false).unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].ip, Some(ip));
    assert_eq!(list[0].mac, Some(mac("0a:00:00:00:00:02")));
    assert_eq!(list[0].state, nud::PERMANENT);
    assert!(!list[0].proxy);
    let both = nl.neighbours(Some(vx), None, false).unwrap();
    // The kernel may add entries of its own (IPv6 multicast, NOARP): look for ours only.
    let ours = |l: &[twill::kernel::netlink::Neighbour]| {
        let mut ips: Vec<String> = l
            .iter()
            .filter(|n| n.state == nud::PERMANENT)
            .filter_map(|n| n.ip.map(|i| i.to_string()))
            .collect();
        ips.sort();
        ips
    };
    assert_eq!(ours(&both), vec!["10.244.1.0", "fd44::1"], "{both:?}");

    let j = ns.ip_json(&["neigh", "show", "dev", "twvx0"]);
    let arr = j.as_array().unwrap();
    let e = arr.iter().find(|e| e["dst"] == "10.244.1.0").unwrap();
    assert_eq!(e["lladdr"], "0a:00:00:00:00:02");
    assert!(
        e["state"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "PERMANENT")
    );

    // Proxy entry.
    let p = NeighbourSpec::proxy(vx, "10.244.9.9".parse().unwrap());
    nl.add_neighbour(&p).unwrap();
    let proxies = nl.neighbours(Some(vx), None, true).unwrap();
    assert_eq!(proxies.len(), 1, "{proxies:?}");
    assert!(proxies[0].proxy);
    assert_eq!(proxies[0].ip, Some("10.244.9.9".parse().unwrap()));
    let j = ns.ip_json(&["neigh", "show", "proxy", "dev", "twvx0"]);
    assert_eq!(j.as_array().unwrap().len(), 1, "{j}");
    nl.delete_neighbour(&p).unwrap();
    assert!(nl.neighbours(Some(vx), None, true).unwrap().is_empty());

    nl.delete_neighbour(&n2).unwrap();
    assert!(nl.delete_neighbour(&n2).unwrap_err().is_not_found());
    assert_eq!(
        ours(&nl.neighbours(Some(vx), None, false).unwrap()),
        vec!["fd44::1"]
    );
}

#[test]
fn fdb_add_append_replace_delete_on_vxlan() {
    let (ns, mut nl, vx) = vxlan_ns();
    let m = mac("0a:00:00:00:00:11");
    let e = FdbEntry::vxlan(vx, m, "192.0.2.10".parse().unwrap());
    nl.fdb_add(&e).unwrap();
    assert!(nl.fdb_add(&e).unwrap_err().is_exists());

    // Default (flood) destinations: two remotes for 00:00:00:00:00:00.
    let z1 = FdbEntry::vxlan(vx, MacAddr::ZERO, "192.0.2.21".parse().unwrap());
    let z2 = FdbEntry::vxlan(vx, MacAddr::ZERO, "192.0.2.22".parse().unwrap());
    nl.fdb_append(&z1).unwrap();
    nl.fdb_append(&z2).unwrap();
    // With a VNI of its own.
    let v = FdbEntry {
        vni: Some(77),
        ..FdbEntry::vxlan(vx, mac("0a:00:00:00:00:12"), "192.0.2.12".parse().unwrap())
    };
    nl.fdb_add(&v).unwrap();

    let list = nl.fdb_entries(Some(vx)).unwrap();
    let ours = |mac: MacAddr| {
        list.iter()
            .filter(move |x| x.mac == mac)
            .collect::<Vec<_>>()
    };
    let got = ours(m);
    assert_eq!(got.len(), 1, "{list:?}");
    assert_eq!(got[0].dst, Some("192.0.2.10".parse().unwrap()));
    assert!(got[0].is_self());
    assert_eq!(got[0].state, nud::PERMANENT);
    let zeros = ours(MacAddr::ZERO);
    assert_eq!(zeros.len(), 2, "{list:?}");
    assert_eq!(ours(mac("0a:00:00:00:00:12"))[0].vni, Some(77));

    let out = std::process::Command::new("bridge")
        .args(["-j", "-n", &ns.name, "fdb", "show", "dev", "twvx0"])
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let arr = j.as_array().unwrap();
    assert!(
        arr.iter()
            .any(|x| x["mac"] == "0a:00:00:00:00:11" && x["dst"] == "192.0.2.10"),
        "{j}"
    );
    assert_eq!(
        arr.iter()
            .filter(|x| x["mac"] == "00:00:00:00:00:00")
            .count(),
        2,
        "{j}"
    );

    // Replace moves the MAC to another remote.
    let moved = FdbEntry::vxlan(vx, m, "192.0.2.11".parse().unwrap());
    nl.fdb_replace(&moved).unwrap();
    let list = nl.fdb_entries(Some(vx)).unwrap();
    let got: Vec<_> = list.iter().filter(|x| x.mac == m).collect();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].dst, Some("192.0.2.11".parse().unwrap()));

    // Delete one flood destination, then the MAC.
    nl.fdb_delete(&z1).unwrap();
    let zeros = nl
        .fdb_entries(Some(vx))
        .unwrap()
        .into_iter()
        .filter(|x| x.mac == MacAddr::ZERO)
        .count();
    assert_eq!(zeros, 1);
    nl.fdb_delete(&moved).unwrap();
    assert!(nl.fdb_delete(&moved).unwrap_err().is_not_found());
    assert!(nl.fdb_entries(Some(vx)).unwrap().iter().all(|x| x.mac != m));
}

#[test]
fn fdb_master_entries_on_bridge_port() {
    let ns = TestNs::new();
    let mut nl = ns.netlink();
    let (br, _) = nl
        .ensure_bridge(&BridgeSpec {
            name: "twbr0",
            up: true,
            ..Default::default()
        })
        .unwrap();
    nl.create_vxlan(&VxlanSpec {
        name: "twvx1",
        vni: 2,
        local: None,
        port: 4789,
        underlay: None,
        learning: false,
        mtu: None,
        mac: None,
        up: true,
    })
    .unwrap();
    let vx = nl.link_by_name("twvx1").unwrap().unwrap();
    nl.set_master(vx.index, Some(br.index)).unwrap();
    let e = FdbEntry {
        index: vx.index,
        mac: mac("0a:00:00:00:00:31"),
        dst: None,
        vni: None,
        port: None,
        vlan: None,
        master: None,
        state: nud::PERMANENT,
        flags: 0x04, // NTF_MASTER: the bridge's table
    };
    nl.fdb_add(&e).unwrap();
    let list = nl.fdb_entries(Some(vx.index)).unwrap();
    let got = list
        .iter()
        .find(|x| x.mac == e.mac && x.is_master())
        .unwrap_or_else(|| panic!("bridge fdb entry in {list:#?}"));
    assert_eq!(got.master, Some(br.index));
    nl.fdb_delete(&e).unwrap();
    assert!(
        !nl.fdb_entries(Some(vx.index))
            .unwrap()
            .iter()
            .any(|x| x.mac == e.mac)
    );
}
