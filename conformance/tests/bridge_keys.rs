//! Black-box conformance of the reference `bridge` plugin's keys in twill's `bridge-host-gw`:
//! each is honoured with the reference's meaning or refused with code 7 naming it, never
//! silently ignored; and an existing bridge keeps its MTU (pods get it) unless `mtu` is set.
//!
//! Every test builds its own cluster of namespaces (`conformance::hostgw::Cluster`; node `i`
//! has the pod subnet `10.244.(i+1).0/24`, dual-stack `fd00:10:0:(i+1)::/64`, and a subnet file
//! giving MTU 1500) and asserts on kernel state read with iproute2 (`ip -j -d link`, `ip -j
//! addr`, `/proc/sys` inside the pod) and on real packets (ping).

use conformance::hostgw::*;
use conformance::{Fabric, Pod, no_reply, ping};
use serde_json::{Value, json};

/// The link `name` of `ns`, or a panic naming it.
fn link(ns: &conformance::Netns, name: &str) -> conformance::Link {
    ns.link(name)
        .unwrap_or_else(|| panic!("no link {name} in {}", ns.name()))
}

fn flags(l: &conformance::Link) -> Vec<String> {
    l.raw["flags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The `info_slave_data` field `key` of the pod's host veth (its bridge-port flags).
fn port_flag(c: &Cluster, i: usize, pod: &Pod, key: &str) -> Value {
    let hv = link(&c.node(i).ns, &host_veth(&pod.result));
    hv.raw
        .pointer(&format!("/linkinfo/info_slave_data/{key}"))
        .cloned()
        .unwrap_or_else(|| panic!("no {key} in {}", hv.raw))
}

fn with(conf: &Value, extra: Value) -> Value {
    let mut c = conf.clone();
    for (k, v) in extra.as_object().expect("object") {
        c[k] = v.clone();
    }
    c
}

/// A bridge that exists before the first ADD keeps its MTU, and the pod's veth ends get that
/// MTU (not the subnet file's); a configured `mtu` is imposed on the bridge and the pods.
#[test]
fn existing_bridge_keeps_its_mtu_and_pods_get_it_unless_mtu_is_set() {
    let c = Cluster::new(Fabric::single_l2(1));
    let node = c.node(0);
    node.ns
        .ip(&["link", "add", "cni0", "mtu", "1400", "type", "bridge"]);

    let p = c.add_pod(0);
    assert_eq!(link(&node.ns, "cni0").mtu, 1400, "the bridge keeps its MTU");
    assert_eq!(link(&node.ns, &host_veth(&p.result)).mtu, 1400, "host veth");
    assert_eq!(link(&p.ns, "eth0").mtu, 1400, "pod interface");
    assert!(ping(&p.ns, gw4(0).parse().expect("ip")), "pod reaches gw");

    let q = c.add_pod_with(0, &with(&c.conf(0), json!({"mtu": 1300})));
    assert_eq!(link(&node.ns, "cni0").mtu, 1300, "mtu is imposed");
    assert_eq!(link(&node.ns, &host_veth(&q.result)).mtu, 1300, "host veth");
    assert_eq!(link(&q.ns, "eth0").mtu, 1300, "pod interface");
    for pod in [&p, &q] {
        pod.run("CHECK").assert_ok_empty();
        pod.run("DEL").assert_ok_empty();
    }
}

/// `promiscMode`: the bridge made by the ADD is promiscuous, and so becomes an existing bridge
/// that was not; hairpin mode then defaults to off (the reference refuses both together).
#[test]
fn promisc_mode_makes_the_bridge_promiscuous_new_or_existing() {
    let c = Cluster::new(Fabric::single_l2(2));
    let promisc = |i: usize| with(&c.conf(i), json!({"promiscMode": true}));

    let fresh = c.add_pod_with(1, &promisc(1));
    let br = link(&c.node(1).ns, "cni0");
    assert!(flags(&br).contains(&"PROMISC".to_string()), "{}", br.raw);
    assert_eq!(port_flag(&c, 1, &fresh, "hairpin"), json!(false));

    let plain = c.add_pod(0);
    let br = link(&c.node(0).ns, "cni0");
    assert!(!flags(&br).contains(&"PROMISC".to_string()), "{}", br.raw);
    assert_eq!(port_flag(&c, 0, &plain, "hairpin"), json!(true));
    let p = c.add_pod_with(0, &promisc(0));
    let br = link(&c.node(0).ns, "cni0");
    assert!(flags(&br).contains(&"PROMISC".to_string()), "{}", br.raw);
    for pod in [&fresh, &plain, &p] {
        pod.run("CHECK").assert_ok_empty();
        pod.run("DEL").assert_ok_empty();
    }
}

/// `portIsolation`: the host veth port carries the isolated flag; two isolated pods on one
/// bridge cannot reach each other, yet both reach the gateway, and a pod on a port that is not
/// isolated reaches them.
#[test]
fn port_isolation_cuts_isolated_pods_off_from_each_other_only() {
    let c = Cluster::new(Fabric::single_l2(1));
    let isolated = with(&c.conf(0), json!({"portIsolation": true}));
    let a = c.add_pod_with(0, &isolated);
    let b = c.add_pod_with(0, &isolated);
    let open = c.add_pod(0);
    assert_eq!(port_flag(&c, 0, &a, "isolated"), json!(true));
    assert_eq!(port_flag(&c, 0, &b, "isolated"), json!(true));
    assert_eq!(port_flag(&c, 0, &open, "isolated"), json!(false));
    assert_eq!(port_flag(&c, 0, &a, "hairpin"), json!(true), "hairpin kept");

    let gw = gw4(0).parse().expect("gateway");
    let ip = |p: &Pod| p.ip().expect("pod ip");
    assert!(ping(&a.ns, gw), "isolated pod reaches the gateway");
    assert!(ping(&b.ns, gw), "isolated pod reaches the gateway");
    assert!(
        ping(&open.ns, ip(&a)),
        "an open port reaches an isolated one"
    );
    assert!(
        ping(&b.ns, ip(&open)),
        "an isolated port reaches an open one"
    );
    assert!(
        no_reply(&a.ns, ip(&b)),
        "isolated pods must not reach each other"
    );
    assert!(
        no_reply(&b.ns, ip(&a)),
        "isolated pods must not reach each other"
    );
    for pod in [&a, &b, &open] {
        pod.run("CHECK").assert_ok_empty();
        pod.run("DEL").assert_ok_empty();
    }
}

/// `enabledad` false (default): DAD is off on the pod interface (`accept_dad=0`) and its IPv6
/// addresses are usable at once. True: `accept_dad=1`, `enhanced_dad=1`, the address goes
/// through DAD (no `nodad` flag), and ADD returns once it is no longer tentative.
#[test]
fn enabledad_switches_ipv6_dad_on_the_pod_interface() {
    let c = Cluster::new(Fabric::single_l2_dual(1));
    let v6 = |p: &Pod| -> Value {
        let addr =
            p.ns.addrs("eth0")
                .into_iter()
                .find(|a| a.ip.is_ipv6() && a.scope == "global")
                .unwrap_or_else(|| panic!("no global IPv6 address on eth0"));
        addr.raw
    };
    let sysctl = |p: &Pod, key: &str| p.ns.sysctl(&format!("net/ipv6/conf/eth0/{key}"));

    let off = c.add_pod(0);
    assert_eq!(sysctl(&off, "accept_dad"), "0");
    let a = v6(&off);
    assert_eq!(a.get("tentative"), None, "usable at once: {a}");

    let on = c.add_pod_with(0, &with(&c.conf(0), json!({"enabledad": true})));
    assert_eq!(sysctl(&on, "accept_dad"), "1");
    assert_eq!(sysctl(&on, "enhanced_dad"), "1");
    let a = v6(&on);
    assert_eq!(a.get("nodad"), None, "DAD must run: {a}");
    assert_eq!(a.get("tentative"), None, "ADD waits for DAD: {a}");
    assert_eq!(a.get("dadfailed"), None, "{a}");
    let gw6 = gw6(0).parse().expect("gateway");
    assert!(ping(&on.ns, gw6), "the DAD-checked address works");
    for pod in [&off, &on] {
        pod.run("CHECK").assert_ok_empty();
        pod.run("DEL").assert_ok_empty();
    }
}

/// `enabledad` with the pod's IPv6 address already held by another host on the bridge: DAD
/// fails, ADD fails with code 104 naming the address, and the attachment is rolled back (no
/// veth, no reservation).
#[test]
fn enabledad_refuses_an_ipv6_address_in_use_and_rolls_back() {
    let c = Cluster::new(Fabric::single_l2_dual(1));
    let node = c.node(0);
    let first = c.add_pod(0);
    let taken = "fd00:10:0:1::3";
    assert!(
        !conformance::result_ips(&first.result)
            .iter()
            .any(|ip| ip.to_string() == taken),
        "the first pod must not hold {taken}: {}",
        first.result
    );
    // A squatter on the bridge with the address IPAM hands out next.
    let squatter = conformance::Netns::with_tag("sq");
    node.ns.ip(&[
        "link",
        "add",
        "sq0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        squatter.name(),
    ]);
    node.ns.ip(&["link", "set", "sq0", "master", "cni0", "up"]);
    squatter.ip(&[
        "addr",
        "add",
        &format!("{taken}/64"),
        "dev",
        "eth0",
        "nodad",
    ]);
    squatter.ip(&["link", "set", "eth0", "up"]);
    let links_before = tw_links(&node.ns);
    let reserved_before = c.reservations(0);

    let conf = with(&c.conf(0), json!({"enabledad": true}));
    let (pod, out) = node.try_add_pod(&plugin(), &conf, "dad-victim");
    let err = out.assert_error(code::CONFLICT);
    assert!(error_text(&err).contains(taken), "{err}");
    assert_eq!(
        tw_links(&node.ns),
        links_before,
        "the pod's veth is rolled back"
    );
    assert_eq!(
        c.reservations(0),
        reserved_before,
        "its addresses are released"
    );
    assert_eq!(pod.ns.link("eth0").map(|l| l.name), None);
    first.run("DEL").assert_ok_empty();
}

/// `disableContainerInterface` on a layer-2 only network (`"ipam": {}`): the pod interface is
/// made and plugged into the bridge but left down, without addresses; without the key it is up.
#[test]
fn disable_container_interface_leaves_the_pod_interface_down() {
    let c = Cluster::new(Fabric::single_l2(1));
    let l2 = with(&c.conf(0), json!({"ipam": {}}));
    let down = c.add_pod_with(0, &with(&l2, json!({"disableContainerInterface": true})));
    let eth0 = link(&down.ns, "eth0");
    assert!(!eth0.up, "left down: {}", eth0.raw);
    assert_eq!(down.ns.global_cidrs("eth0"), Vec::<String>::new());
    let hv = link(&c.node(0).ns, &host_veth(&down.result));
    assert_eq!(hv.master.as_deref(), Some("cni0"));

    let up = c.add_pod_with(0, &l2);
    assert!(link(&up.ns, "eth0").up, "a layer-2 pod is up by default");
    // CHECK knows which state the config asked for: down for one, up for the other.
    down.run("CHECK").assert_ok_empty();
    up.run("CHECK").assert_ok_empty();
    for pod in [&down, &up] {
        pod.run("DEL").assert_ok_empty();
    }
    assert_eq!(tw_links(&c.node(0).ns), Vec::<String>::new());
}

/// Keys of the reference bridge that bridge-host-gw does not implement, keys in another case
/// than theirs, and contradictory combinations the reference refuses too: ADD fails with code 7
/// naming the key, and nothing of the node changes (no bridge, veth, address, route, nftables rule or file) nor of the pod.
#[test]
fn unsupported_reference_keys_are_refused_with_code_7_and_change_nothing() {
    let c = Cluster::new(Fabric::single_l2(1));
    let node = c.node(0);
    let pod_ns = conformance::Netns::with_tag("pod");
    let cases = [
        (json!({"vlan": 100}), "\"vlan\""),
        (json!({"vlan": 5000}), "\"vlan\""),
        (json!({"vlanTrunk": [{"id": 5}]}), "\"vlanTrunk\""),
        (
            json!({"vlanTrunk": [{"minID": 10, "maxID": 20}]}),
            "\"vlanTrunk\"",
        ),
        (json!({"macspoofchk": true}), "\"macspoofchk\""),
        // The reference's decoder ignores case; a key in another case is named, not ignored.
        (json!({"macSpoofChk": true}), "\"macSpoofChk\""),
        (json!({"PromiscMode": true}), "\"promiscMode\""),
        (
            json!({"promiscMode": true, "hairpinMode": true}),
            "\"hairpinMode\"",
        ),
        (
            json!({"disableContainerInterface": true}),
            "\"disableContainerInterface\"",
        ),
    ];
    let before = NodeSnapshot::take(node);
    let pod_before = pod_ns.link_names();
    for (extra, key) in cases {
        let out = node
            .invoke(
                &plugin(),
                "ADD",
                &with(&c.conf(0), extra.clone()),
                "refused",
                pod_ns.path(),
                "eth0",
            )
            .run();
        let err = out.assert_error(7);
        let text = error_text(&err);
        assert!(
            text.contains(key),
            "{extra}: message must name {key}: {text}"
        );
        assert!(
            !text.contains("Some("),
            "{extra}: no Rust debug output: {text}"
        );
        assert_eq!(
            NodeSnapshot::take(node),
            before,
            "{extra}: the node changed"
        );
        assert_eq!(pod_ns.link_names(), pod_before, "{extra}: the pod changed");
    }
    // A DEL with such a config still succeeds (nothing to undo).
    let del = node
        .invoke(
            &plugin(),
            "DEL",
            &with(&c.conf(0), json!({"vlan": 100, "macspoofchk": true})),
            "refused",
            pod_ns.path(),
            "eth0",
        )
        .run();
    del.assert_ok_empty();
}
