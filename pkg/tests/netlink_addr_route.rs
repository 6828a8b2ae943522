//! Addresses and routes against the real kernel, in throwaway namespaces (run as root).

mod common;

use common::{TestNs, first, net};
use twill::kernel::netlink::{
    AddrOptions, BridgeSpec, Broadcast, Family, Netlink, NetlinkError, Route, RouteFilter,
    RouteSpec, TWILL_PROTO, probe_address, rt_table,
};

/// A namespace with an up bridge `twbr0` (a link that can carry addresses and routes).
fn setup() -> (TestNs, Netlink, u32) {
    let ns = TestNs::new();
    let mut nl = ns.netlink();
    let (br, _) = nl
        .ensure_bridge(&BridgeSpec {
            name: "twbr0",
            up: true,
            ..Default::default()
        })
        .unwrap();
    (ns, nl, br.index)
}

#[test]
fn addresses_v4_broadcast_and_v6_nodad() {
    let (ns, mut nl, br) = setup();
    nl.add_address(br, net("10.77.0.1/24"), &AddrOptions::default())
        .unwrap();
    let e = nl
        .add_address(br, net("10.77.0.1/24"), &AddrOptions::default())
        .unwrap_err();
    assert!(e.is_exists(), "{e}");
    nl.replace_address(br, net("10.77.0.1/24"), &AddrOptions::default())
        .unwrap();
    let opts = AddrOptions {
        broadcast: Broadcast::None,
        ..Default::default()
    };
    nl.add_address(br, net("10.78.0.1/16"), &opts).unwrap();
    let v6 = AddrOptions {
        nodad: true,
        ..Default::default()
    };
    nl.add_address(br, net("fd77::1/64"), &v6).unwrap();

    let v4 = nl.addresses(Some(br), Some(Family::V4)).unwrap();
    assert_eq!(v4.len(), 2, "{v4:?}");
    let a = v4
        .iter()
        .find(|a| a.network() == net("10.77.0.1/24"))
        .unwrap();
    assert_eq!(a.broadcast, Some("10.77.0.255".parse().unwrap()));
    assert_eq!(a.label.as_deref(), Some("twbr0"));
    let b = v4
        .iter()
        .find(|a| a.network() == net("10.78.0.1/16"))
        .unwrap();
    assert_eq!(b.broadcast, None);

    let six = nl.addresses(Some(br), Some(Family::V6)).unwrap();
    let g = six
        .iter()
        .find(|a| a.network() == net("fd77::1/64"))
        .expect("v6 address listed");
    assert!(
        !g.is_tentative(),
        "nodad => not tentative: flags {:#x}",
        g.flags
    );
    assert!(six.iter().all(|a| a.family() == Family::V6));
    let lo = nl.link_by_name("lo").unwrap().unwrap();
    nl.set_link_up(lo.index, true).unwrap(); // lo gets 127.0.0.1 when up
    let all = nl.addresses(None, None).unwrap();
    assert!(all.iter().any(|a| a.index == br) && all.iter().any(|a| a.index == lo.index));
    assert!(
        all.iter()
            .any(|a| a.addr == "127.0.0.1".parse::<std::net::IpAddr>().unwrap())
    );

    // Cross-check with iproute2.
    let j = ns.ip_json(&["addr", "show", "dev", "twbr0"]);
    let infos = first(&j)["addr_info"].as_array().unwrap().clone();
    let ip6 = infos.iter().find(|i| i["local"] == "fd77::1").unwrap();
    assert!(ip6.get("tentative").is_none(), "{ip6}");
    assert_eq!(ip6["prefixlen"], 64);
    let ip4 = infos.iter().find(|i| i["local"] == "10.77.0.1").unwrap();
    assert_eq!(ip4["broadcast"], "10.77.0.255");

    nl.delete_address(br, net("10.78.0.1/16")).unwrap();
    let e = nl.delete_address(br, net("10.78.0.1/16")).unwrap_err();
    assert!(e.is_not_found(), "{e}");
    nl.delete_address(br, net("fd77::1/64")).unwrap();
    assert_eq!(
        nl.addresses(Some(br), None)
            .unwrap()
            .iter()
            .filter(|a| !a.addr.is_ipv6() || !a.addr.to_string().starts_with("fe80"))
            .count(),
        1
    );
}

#[test]
fn address_on_missing_link_surfaces_kernel_text() {
    let (_ns, mut nl, _br) = setup();
    let e = nl
        .add_address(4242, net("10.9.9.9/24"), &AddrOptions::default())
        .unwrap_err();
    assert_eq!(e.errno(), Some(nix::libc::ENODEV), "{e}");
    let te: twill::Error = e.into();
    assert_eq!(te.code, twill::code::NETLINK);
    assert!(
        te.msg.contains("10.9.9.9/24") && te.msg.contains("4242"),
        "{te:?}"
    );
    assert!(te.details.contains("No such device"), "{te:?}");
    eprintln!("missing-link error: {te}");
}

#[test]
fn routes_gateway_default_onlink_filter_delete() {
    let (ns, mut nl, br) = setup();
    nl.add_address(br, net("10.80.0.1/24"), &AddrOptions::default())
        .unwrap();
    nl.add_address(
        br,
        net("fd80::1/64"),
        &AddrOptions {
            nodad: true,
            ..Default::default()
        },
    )
    .unwrap();

    // Default route via a gateway on the subnet.
    let def = RouteSpec::default_via("10.80.0.254".parse().unwrap());
    nl.add_route(&def).unwrap();
    assert!(nl.add_route(&def).unwrap_err().is_exists());
    let def6 = RouteSpec {
        oif: Some(br),
        ..RouteSpec::default_via("fd80::fe".parse().unwrap())
    };
    nl.add_route(&def6).unwrap();

    // A route via a gateway outside every subnet needs onlink.
    let mut onl = RouteSpec::new(net("10.90.0.0/16"));
    onl.gateway = Some("192.168.250.1".parse().unwrap());
    onl.oif = Some(br);
    let e = nl.add_route(&onl).unwrap_err();
    eprintln!("non-onlink error: {e}");
    assert!(e.errno().is_some());
    onl.onlink = true;
    nl.add_route(&onl).unwrap();

    // A direct (link-scope) route with src, metric, mtu, in the main table, other protocol.
    let mut direct = RouteSpec::new(net("10.91.0.0/24"));
    direct.oif = Some(br);
    direct.src = Some("10.80.0.1".parse().unwrap());
    direct.metric = Some(50);
    direct.mtu = Some(1400);
    direct.protocol = 4; // static
    nl.add_route(&direct).unwrap();

    // Another table.
    let mut t = RouteSpec::new(net("10.92.0.0/24"));
    t.oif = Some(br);
    t.table = 1234;
    nl.add_route(&t).unwrap();

    let twill = nl
        .routes(&RouteFilter {
            protocol: Some(TWILL_PROTO),
            table: Some(rt_table::MAIN),
            ..Default::default()
        })
        .unwrap();
    let dsts: Vec<String> = twill.iter().map(|r| r.dst.to_string()).collect();
    assert_eq!(twill.len(), 3, "{dsts:?}");
    for want in ["0.0.0.0/0", "::/0", "10.90.0.0/16"] {
        assert!(dsts.contains(&want.to_string()), "{dsts:?}");
    }
    let d4 = twill
        .iter()
        .find(|r| r.dst.to_string() == "0.0.0.0/0")
        .unwrap();
    assert_eq!(d4.gateway, Some("10.80.0.254".parse().unwrap()));
    assert_eq!(d4.oif, Some(br));
    let o = twill.iter().find(|r| r.dst == net("10.90.0.0/16")).unwrap();
    assert!(o.onlink);
    let v4 = nl
        .routes(&RouteFilter {
            family: Some(Family::V4),
            oif: Some(br),
            ..Default::default()
        })
        .unwrap();
    let d = v4
        .iter()
        .find(|r| r.dst == net("10.91.0.0/24"))
        .expect("direct route");
    assert_eq!(
        (d.protocol, d.scope, d.metric, d.mtu),
        (4, 253, Some(50), Some(1400))
    );
    assert_eq!(d.src, Some("10.80.0.1".parse().unwrap()));
    assert!(
        v4.iter()
            .all(|r| r.family() == Family::V4 && r.oif == Some(br))
    );
    let in_t = nl
        .routes(&RouteFilter {
            table: Some(1234),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(in_t.len(), 1);
    assert_eq!(in_t[0].table, 1234);
    assert!(
        nl.routes(&RouteFilter {
            table: Some(4321),
            ..Default::default()
        })
        .unwrap()
        .is_empty()
    );

    // iproute2 agrees.
    let j = ns.ip_json(&["route", "show", "proto", "116"]);
    let arr = j.as_array().unwrap();
    assert_eq!(arr.len(), 2, "{j}");
    assert!(
        arr.iter()
            .any(|r| r["dst"] == "default" && r["gateway"] == "10.80.0.254")
    );
    assert!(arr.iter().any(|r| r["dst"] == "10.90.0.0/16"
        && r["flags"].as_array().unwrap().iter().any(|f| f == "onlink")));
    let j = ns.ip_json(&["-6", "route", "show", "default"]);
    assert_eq!(first(&j)["gateway"], "fd80::fe");

    // Replace changes the gateway in place.
    let def2 = RouteSpec::default_via("10.80.0.253".parse().unwrap());
    nl.replace_route(&def2).unwrap();
    let j = ns.ip_json(&["route", "show", "default"]);
    assert_eq!(j.as_array().unwrap().len(), 1);
    assert_eq!(first(&j)["gateway"], "10.80.0.253");

    // Delete: protocol must match unless 0; missing routes report not-found.
    let mut wrong_proto = direct.clone();
    wrong_proto.protocol = TWILL_PROTO;
    assert!(nl.delete_route(&wrong_proto).unwrap_err().is_not_found());
    nl.delete_route(&direct).unwrap();
    nl.delete_route(&def2).unwrap();
    nl.delete_route(&def6).unwrap();
    for r in nl
        .routes(&RouteFilter {
            protocol: Some(TWILL_PROTO),
            ..Default::default()
        })
        .unwrap()
    {
        nl.delete_route(&r.to_spec()).unwrap();
    }
    assert!(
        nl.routes(&RouteFilter {
            protocol: Some(TWILL_PROTO),
            ..Default::default()
        })
        .unwrap()
        .is_empty()
    );
    let e = nl.delete_route(&def2).unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(
        ns.ip_json(&["route", "show", "proto", "116"])
            .as_array()
            .unwrap()
            .is_empty()
    );
}

/// The default route of `family` found by one lookup of its probe address; None when the
/// lookup finds no route or a more specific one.
fn default_route(nl: &mut Netlink, family: Family) -> Result<Option<Route>, NetlinkError> {
    Ok(nl
        .route_to(probe_address(family))?
        .filter(|r| r.dst.prefix() == 0))
}

#[test]
fn the_default_route_is_found_in_one_lookup_and_a_more_specific_match_is_not_taken_for_it() {
    let (ns, mut nl, br) = setup();
    assert_eq!(default_route(&mut nl, Family::V4).unwrap(), None);
    assert_eq!(default_route(&mut nl, Family::V6).unwrap(), None);
    nl.add_address(br, net("10.77.0.1/24"), &AddrOptions::default())
        .unwrap();
    let v6 = AddrOptions {
        nodad: true,
        ..Default::default()
    };
    nl.add_address(br, net("fd77::1/64"), &v6).unwrap();
    // Many more specific routes in the way change nothing.
    for i in 0..20 {
        ns.ip(&["route", "add", &format!("10.88.{i}.0/24"), "dev", "twbr0"]);
    }
    nl.add_route(&RouteSpec::default_via("10.77.0.254".parse().unwrap()))
        .unwrap();
    nl.add_route(&RouteSpec::default_via("fd77::fe".parse().unwrap()))
        .unwrap();
    let r4 = default_route(&mut nl, Family::V4).unwrap().expect("v4");
    assert_eq!(r4.dst, net("0.0.0.0/0"));
    assert_eq!(r4.oif, Some(br));
    assert_eq!(r4.gateway, Some("10.77.0.254".parse().unwrap()));
    assert_eq!(r4.table, rt_table::MAIN);
    let r6 = default_route(&mut nl, Family::V6).unwrap().expect("v6");
    assert_eq!(r6.dst, net("::/0"));
    assert_eq!(r6.oif, Some(br));
    // A route covering the probe address hides the default route: no answer, not a wrong one.
    ns.ip(&["route", "add", "192.0.2.0/24", "dev", "twbr0"]);
    assert_eq!(default_route(&mut nl, Family::V4).unwrap(), None);
}

#[test]
fn the_uplink_mtu_is_the_default_routes_link_found_by_lookup_or_by_dump_when_a_route_hides_it() {
    let (ns, mut nl, br) = setup();
    // No route at all: no uplink.
    assert_eq!(twill::network::uplink_mtu(&mut nl).unwrap(), None);
    // Veth pairs with both ends here (this kernel has no dummy links), all up.
    for (l, mtu) in [("up4", "1400"), ("up6", "1300"), ("cover", "1200")] {
        let peer = format!("{l}p");
        ns.ip(&[
            "link", "add", l, "mtu", mtu, "type", "veth", "peer", "name", &peer,
        ]);
        ns.ip(&["link", "set", l, "up"]);
        ns.ip(&["link", "set", &peer, "up"]);
    }
    // IPv6 only: its default route's link.
    ns.ip(&["-6", "route", "add", "default", "dev", "up6"]);
    assert_eq!(twill::network::uplink_mtu(&mut nl).unwrap(), Some(1300));
    // IPv4 first once it has one; routes elsewhere (the bridge) change nothing.
    ns.ip(&["route", "add", "10.88.0.0/16", "dev", "twbr0"]);
    ns.ip(&["route", "add", "default", "dev", "up4"]);
    assert_eq!(twill::network::uplink_mtu(&mut nl).unwrap(), Some(1400));
    // A more specific route covering the lookup's probe address: the dump still finds the
    // default route, not the covering route's link.
    ns.ip(&["route", "add", "192.0.2.0/24", "dev", "cover"]);
    assert_eq!(twill::network::uplink_mtu(&mut nl).unwrap(), Some(1400));
    // An IPv4 default route that is not unicast is no uplink: IPv6's is taken.
    ns.ip(&["route", "del", "192.0.2.0/24"]);
    ns.ip(&["route", "del", "default"]);
    ns.ip(&["route", "add", "unreachable", "default"]);
    assert_eq!(twill::network::uplink_mtu(&mut nl).unwrap(), Some(1300));
    let _ = br;
}
