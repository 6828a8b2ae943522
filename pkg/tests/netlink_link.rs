//! Links against the real kernel, in throwaway namespaces (run as root).

mod common;

use common::{TestNs, first};
use twill::kernel::netlink::{BridgeSpec, MacAddr, Netlink, VethSpec, VxlanSpec};

#[test]
fn bridge_create_exists_and_lookup() {
    let ns = TestNs::new();
    let mut nl = ns.netlink();
    let mac: MacAddr = "02:00:00:aa:bb:01".parse().unwrap();
    let spec = BridgeSpec {
        name: "twbr0",
        mtu: Some(1400),
        mac: Some(mac),
        up: true,
    };
    nl.create_bridge(&spec).unwrap();

    let again = nl.create_bridge(&spec).unwrap_err();
    assert!(again.is_exists(), "{again}");
    assert!(!again.is_not_found());
    let (br, created) = nl.ensure_bridge(&spec).unwrap();
    assert!(!created);

    assert_eq!(br.name, "twbr0");
    assert_eq!(br.kind.as_deref(), Some("bridge"));
    assert_eq!(br.mtu, 1400);
    assert_eq!(br.mac, Some(mac));
    assert!(br.admin_up);
    assert_eq!(nl.link_by_index(br.index).unwrap().unwrap().name, "twbr0");

    let j = ns.ip_json(&["-d", "link", "show", "dev", "twbr0"]);
    let j = first(&j);
    assert_eq!(j["mtu"], 1400);
    assert_eq!(j["address"], "02:00:00:aa:bb:01");
    assert_eq!(j["linkinfo"]["info_kind"], "bridge");
    assert!(j["flags"].as_array().unwrap().iter().any(|f| f == "UP"));

    assert!(nl.link_by_name("nothere0").unwrap().is_none());
    assert!(nl.link_by_index(99999).unwrap().is_none());
    let names: Vec<String> = nl.links().unwrap().into_iter().map(|l| l.name).collect();
    assert!(
        names.contains(&"lo".to_string()) && names.contains(&"twbr0".to_string()),
        "{names:?}"
    );

    // ensure_bridge on a fresh name creates it.
    let (b2, created) = nl
        .ensure_bridge(&BridgeSpec {
            name: "twbr1",
            ..Default::default()
        })
        .unwrap();
    assert!(created);
    assert!(!b2.admin_up);

    assert!(nl.delete_link_if_exists("twbr1").unwrap());
    assert!(!nl.delete_link_if_exists("twbr1").unwrap());
    let e = nl.delete_link(b2.index).unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(nl.link_by_name("twbr1").unwrap().is_none());
}

#[test]
fn veth_peer_in_other_netns_with_master_up_and_hairpin() {
    let host = TestNs::new();
    let pod = TestNs::new();
    let pod_ns = pod.open();
    let mut h = Netlink::new_in(&host.open()).unwrap();
    let mut p = Netlink::new_in(&pod_ns).unwrap();

    h.create_bridge(&BridgeSpec {
        name: "twbr0",
        mtu: Some(1450),
        mac: None,
        up: true,
    })
    .unwrap();
    let br = h.link_by_name("twbr0").unwrap().unwrap();
    let pod_mac: MacAddr = "02:00:00:00:00:42".parse().unwrap();
    let spec = VethSpec {
        name: "vethtw0",
        mtu: Some(1450),
        mac: None,
        master: Some(br.index),
        up: true,
        peer_name: "eth0",
        peer_netns: Some(pod_ns.as_fd()),
        peer_mtu: Some(1450),
        peer_mac: Some(pod_mac),
    };
    h.create_veth(&spec).unwrap();
    let pv = p.link_by_name("eth0").unwrap().unwrap();
    assert!(!pv.admin_up, "peer is created down");
    p.set_link_up(pv.index, true).unwrap();

    let hv = h.link_by_name("vethtw0").unwrap().unwrap();
    assert_eq!(hv.kind.as_deref(), Some("veth"));
    assert_eq!(hv.mtu, 1450);
    assert_eq!(hv.master, Some(br.index));
    assert!(hv.admin_up);
    assert!(hv.link_netnsid.is_some(), "peer lives in another netns");
    assert!(
        h.link_by_name("eth0").unwrap().is_none(),
        "peer must not exist in the host ns"
    );

    let pv = p.link_by_name("eth0").unwrap().unwrap();
    assert_eq!(pv.kind.as_deref(), Some("veth"));
    assert_eq!(pv.mtu, 1450);
    assert_eq!(pv.mac, Some(pod_mac));
    assert!(pv.admin_up);
    assert!(pv.master.is_none());
    assert_eq!(
        pv.link,
        Some(hv.index),
        "pod end's IFLA_LINK is the host end's index"
    );
    assert_eq!(hv.link, Some(pv.index));
    assert!(pv.oper_up && hv.oper_up, "both ends up => carrier on both");

    let pj = pod.ip_json(&["link", "show", "dev", "eth0"]);
    let pj = first(&pj);
    assert_eq!(pj["mtu"], 1450);
    assert_eq!(pj["address"], "02:00:00:00:00:42");
    assert_eq!(pj["operstate"], "UP");
    let hj = host.ip_json(&["link", "show", "dev", "vethtw0"]);
    assert_eq!(first(&hj)["master"], "twbr0");

    // Same host name again: EEXIST, nothing half-made in the pod.
    let spec2 = VethSpec {
        peer_name: "eth1",
        ..spec.clone()
    };
    assert!(h.create_veth(&spec2).unwrap_err().is_exists());
    assert!(p.link_by_name("eth1").unwrap().is_none());

    h.set_hairpin(hv.index, true).unwrap();
    let d = host.ip_json(&["-d", "link", "show", "dev", "vethtw0"]);
    assert_eq!(first(&d)["linkinfo"]["info_slave_data"]["hairpin"], true);
    h.set_hairpin(hv.index, false).unwrap();
    let d = host.ip_json(&["-d", "link", "show", "dev", "vethtw0"]);
    assert_eq!(first(&d)["linkinfo"]["info_slave_data"]["hairpin"], false);

    // nomaster, then down, mtu, mac, alias.
    h.set_master(hv.index, None).unwrap();
    assert_eq!(h.link_by_index(hv.index).unwrap().unwrap().master, None);
    h.set_master(hv.index, Some(br.index)).unwrap();
    assert_eq!(
        h.link_by_index(hv.index).unwrap().unwrap().master,
        Some(br.index)
    );
    p.set_link_up(pv.index, false).unwrap();
    p.set_mtu(pv.index, 1300).unwrap();
    let m2: MacAddr = "02:00:00:00:00:43".parse().unwrap();
    p.set_mac(pv.index, m2).unwrap();
    p.set_alias(pv.index, "pod side").unwrap();
    let pv2 = p.link_by_index(pv.index).unwrap().unwrap();
    assert!(!pv2.admin_up);
    assert_eq!(
        (pv2.mtu, pv2.mac, pv2.alias.as_deref()),
        (1300, Some(m2), Some("pod side"))
    );
    let pj = pod.ip_json(&["link", "show", "dev", "eth0"]);
    assert_eq!(first(&pj)["ifalias"], "pod side");

    // Deleting the host end removes the pod end too.
    h.delete_link(hv.index).unwrap();
    assert!(p.link_by_name("eth0").unwrap().is_none());
}

#[test]
fn vxlan_create_and_read_back() {
    let ns = TestNs::new();
    let mut nl = ns.netlink();
    let lo = nl.link_by_name("lo").unwrap().unwrap();
    let spec = VxlanSpec {
        name: "twvx0",
        vni: 4242,
        local: Some("127.0.0.1".parse().unwrap()),
        port: 8472,
        underlay: Some(lo.index),
        learning: false,
        mtu: Some(1400),
        mac: None,
        up: false,
    };
    nl.create_vxlan(&spec).unwrap();
    assert!(nl.create_vxlan(&spec).unwrap_err().is_exists());
    let l = nl.link_by_name("twvx0").unwrap().unwrap();
    assert_eq!(l.kind.as_deref(), Some("vxlan"));
    assert_eq!(l.mtu, 1400);
    let x = l.vxlan.unwrap();
    assert_eq!(x.vni, 4242);
    assert_eq!(x.port, 8472);
    assert_eq!(x.local, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(x.underlay, Some(lo.index));
    assert!(!x.learning);
    let j = ns.ip_json(&["-d", "link", "show", "dev", "twvx0"]);
    let d = &first(&j)["linkinfo"]["info_data"];
    assert_eq!(d["id"], 4242);
    assert_eq!(d["port"], 8472);
    assert_eq!(d["learning"], false);
}

#[test]
fn kernel_error_text_and_invalid_names() {
    let ns = TestNs::new();
    let mut nl = ns.netlink();
    nl.create_bridge(&BridgeSpec {
        name: "twbr0",
        ..Default::default()
    })
    .unwrap();
    let br = nl.link_by_name("twbr0").unwrap().unwrap();
    // Enslaving a bridge to itself is refused by the kernel, with an extack message.
    let e = nl.set_master(br.index, Some(br.index)).unwrap_err();
    assert!(e.errno().is_some(), "{e}");
    let te: twill::Error = e.into();
    assert_eq!(te.code, twill::code::NETLINK);
    assert!(te.msg.contains("master"), "{te:?}");
    assert!(!te.details.is_empty(), "{te:?}");
    eprintln!("kernel error surfaced as: {te}");

    let e = nl
        .create_bridge(&BridgeSpec {
            name: "../evil",
            ..Default::default()
        })
        .unwrap_err();
    assert!(e.to_string().contains("invalid interface name"), "{e}");
    assert!(
        nl.create_bridge(&BridgeSpec {
            name: "abcdefghijklmnop",
            ..Default::default()
        })
        .is_err()
    );
}
