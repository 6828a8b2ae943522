//! DEL of every data plane (bridge-host-gw, routed-veth, vxlan with bridged and with routed
//! pods, ipip), proven from outside: it removes exactly the pod's own state (its marked veth
//! pair, its host routes, its reservation) and nothing of the node's, repeats without change,
//! succeeds when the netns, the link or the allocation is already gone, never deletes a link
//! that is not provably the pod's, still finds the unmarked pair of an ADD killed before it
//! marked it, and reports a failed link removal and a failed release together, each with its
//! reason. Every plane's DEL is `twill::pod::teardown::run`.
//!
//! ipip devices need a kernel module the development machine lacks, but ipip's DEL touches no
//! device: its pods are wired exactly as routed-veth's, so they are made with routed-veth on
//! the same network, dataDir and host veth prefix, and deleted by ipip.

use conformance::hostgw::{Cluster, NodeSnapshot, link_aliases, owner_mark, reservations};
use conformance::routed::RoutedCluster;
use conformance::strace::Traced;
use conformance::{Fabric, Invocation, Netns, Node, Outcome, Pod, result_ips};
use conformance::{twill_bin, unique_name};
use serde_json::{Value, json};
use std::path::PathBuf;

/// One data plane's pods on node 0 of a cluster of its own.
struct Plane {
    label: &'static str,
    c: Cluster,
    /// The plugin that makes the pods (routed-veth for ipip) and its config.
    add_bin: PathBuf,
    add_conf: Value,
    /// The plugin under test and its config.
    del_bin: PathBuf,
    del_conf: Value,
}

impl Plane {
    fn bridge_host_gw() -> Plane {
        let c = Cluster::new(Fabric::single_l2(1));
        let conf = c.conf(0);
        Plane::same("bridge-host-gw", c, conf)
    }

    fn routed_veth() -> Plane {
        let rc = RoutedCluster::new(Fabric::single_l2(1));
        let conf = rc.conf(0);
        Plane::same("routed-veth", rc.c, conf)
    }

    fn vxlan(pods: &str) -> Plane {
        let c = Cluster::new(Fabric::routed(2));
        let extra = if pods == "routed" {
            json!({"pods": "routed"})
        } else {
            json!({})
        };
        let conf = conformance::vxlan::conf(&c, 0, extra);
        let label = if pods == "routed" {
            "vxlan (routed pods)"
        } else {
            "vxlan (bridged pods)"
        };
        Plane::same(label, c, conf)
    }

    fn ipip() -> Plane {
        let rc = RoutedCluster::new(Fabric::single_l2(1));
        let add_conf = rc.conf(0);
        let mut del_conf = add_conf.clone();
        del_conf["type"] = json!("ipip");
        Plane {
            label: "ipip",
            c: rc.c,
            add_bin: conformance::routed::plugin(),
            add_conf,
            del_bin: twill_bin("ipip"),
            del_conf,
        }
    }

    fn same(label: &'static str, c: Cluster, conf: Value) -> Plane {
        let bin = twill_bin(conf["type"].as_str().expect("type"));
        Plane {
            label,
            c,
            add_bin: bin.clone(),
            add_conf: conf.clone(),
            del_bin: bin,
            del_conf: conf,
        }
    }

    /// Every data plane.
    fn all() -> Vec<Plane> {
        vec![
            Plane::bridge_host_gw(),
            Plane::routed_veth(),
            Plane::vxlan("bridged"),
            Plane::vxlan("routed"),
            Plane::ipip(),
        ]
    }

    /// One of each host veth lookup: bridged (by name and mark) and routed (by name and mark,
    /// then a dump for the mark).
    fn bridged_and_routed() -> Vec<Plane> {
        vec![Plane::bridge_host_gw(), Plane::routed_veth()]
    }

    /// Whether the plane's pods are routed (its DEL falls back to a link dump for the mark).
    fn routed(&self) -> bool {
        match self.del_conf["type"].as_str() {
            Some("routed-veth" | "ipip") => true,
            Some("vxlan") => self.del_conf["pods"] == "routed",
            _ => false,
        }
    }

    fn node(&self) -> &Node {
        self.c.node(0)
    }

    fn add(&self) -> Pod {
        self.node()
            .add_pod(&self.add_bin, &self.add_conf, &unique_name("c"))
    }

    /// DEL of `container_id` (ifname eth0) with `CNI_NETNS` = `netns`, run under `wrap`
    /// (strace) when given.
    fn del_raw(&self, container_id: &str, netns: &Netns, wrap: Option<&Traced>) -> Outcome {
        let program = match wrap {
            Some(w) => w.plugin(),
            None => self.del_bin.clone(),
        };
        let cni_path = self
            .del_bin
            .parent()
            .expect("bin dir")
            .display()
            .to_string();
        Invocation::new(program)
            .command("DEL")
            .container_id(container_id)
            .netns(netns.path())
            .ifname("eth0")
            .cni_path(&cni_path)
            .stdin_json(&self.del_conf)
            .on(self.node().ns.path())
            .run()
    }

    fn del(&self, p: &Pod) -> Outcome {
        self.del_raw(&p.container_id, &p.ns, None)
    }

    /// The node link carrying `p`'s owner mark.
    fn host_veth(&self, p: &Pod) -> String {
        let mark = owner_mark(&self.c.net, &p.container_id, "eth0");
        link_aliases(&self.node().ns)
            .into_iter()
            .find(|(_, a)| *a == mark)
            .map(|(n, _)| n)
            .unwrap_or_else(|| panic!("{}: no node link carries {mark:?}", self.label))
    }

    /// Whether any reservation of the network is one of `p`'s addresses.
    fn holds_address_of(&self, p: &Pod) -> bool {
        let res = reservations(self.node(), &self.c.net);
        result_ips(&p.result)
            .iter()
            .any(|ip| res.contains_key(&ip.to_string()))
    }
}

/// What of a node one pod's DEL must leave exactly as it was: [`NodeSnapshot`] (links,
/// addresses, routes, nftables, files; host-local's allocation cursors aside, they may
/// advance), the FDB (vxlan's peers) and the permanent neighbour entries.
#[derive(Debug, PartialEq)]
struct NodeState {
    snap: NodeSnapshot,
    fdb: Vec<String>,
    neighbours: Vec<String>,
}

impl NodeState {
    fn take(node: &Node) -> NodeState {
        let mut snap = NodeSnapshot::take(node);
        snap.files.retain(|(p, _)| {
            !p.rsplit('/')
                .next()
                .unwrap_or("")
                .starts_with("last_reserved_ip")
        });
        let mut fdb: Vec<String> = node.ns.fdb().iter().map(|e| e.raw.to_string()).collect();
        fdb.sort();
        let mut neighbours: Vec<String> = node
            .ns
            .neighbours()
            .iter()
            .filter(|n| n.state.iter().any(|s| s == "PERMANENT"))
            .map(|n| n.raw.to_string())
            .collect();
        neighbours.sort();
        NodeState {
            snap,
            fdb,
            neighbours,
        }
    }

    fn diff(&self, after: &NodeState) -> String {
        let mut out = self.snap.diff(&after.snap);
        for (what, a, b) in [
            ("fdb", &self.fdb, &after.fdb),
            ("neighbour", &self.neighbours, &after.neighbours),
        ] {
            for x in b.iter().filter(|x| !a.contains(x)) {
                out.push_str(&format!("\n+{what} {x}"));
            }
            for x in a.iter().filter(|x| !b.contains(x)) {
                out.push_str(&format!("\n-{what} {x}"));
            }
        }
        out
    }
}

/// On every data plane, DEL of a pod next to a neighbour removes the pod's veth pair, host
/// routes and reservation and leaves the node exactly as before the pod's ADD (vxlan's device,
/// FDB and neighbour entries, peer routes, blackholes, masquerade, run state: node state,
/// which DEL never touches); a second DEL changes nothing.
#[test]
fn del_removes_exactly_the_pods_own_state_on_every_data_plane_and_a_repeat_changes_nothing() {
    for plane in Plane::all() {
        let l = plane.label;
        let node = plane.node();
        let neighbour = plane.add();
        let before = NodeState::take(node);
        let p = plane.add();
        let hv = plane.host_veth(&p);
        assert!(plane.holds_address_of(&p), "{l}: ADD reserved nothing");

        plane.del(&p).assert_ok_empty();
        assert!(node.ns.link(&hv).is_none(), "{l}: DEL left {hv}");
        assert_eq!(
            p.ns.link_names(),
            vec!["lo".to_string()],
            "{l}: the pod end outlived DEL"
        );
        assert!(!plane.holds_address_of(&p), "{l}: DEL kept the reservation");
        let after = NodeState::take(node);
        assert!(
            after == before,
            "{l}: DEL changed more than the pod's own state:\n{}",
            before.diff(&after)
        );

        plane.del(&p).assert_ok_empty();
        let again = NodeState::take(node);
        assert!(
            again == after,
            "{l}: a second DEL changed the node:\n{}",
            after.diff(&again)
        );
        assert!(
            node.ns.link(&plane.host_veth(&neighbour)).is_some(),
            "{l}: the neighbour's veth went"
        );
        plane.del(&neighbour).assert_ok_empty();
    }
}

/// On every data plane, DEL succeeds and removes what is left when part of the attachment is
/// already gone: the pod's netns (the kernel took the pair), the host veth (deleted by hand),
/// or the reservation (removed by hand).
#[test]
fn del_succeeds_when_the_netns_the_link_or_the_allocation_is_already_gone() {
    for plane in Plane::all() {
        let l = plane.label;
        let node = plane.node();

        let a = plane.add();
        let hv = plane.host_veth(&a);
        a.ns.delete_now();
        plane.del(&a).assert_ok_empty();
        assert!(node.ns.link(&hv).is_none(), "{l}: {hv} outlived its netns");
        assert!(!plane.holds_address_of(&a), "{l}: netns gone: not released");

        let b = plane.add();
        let hv = plane.host_veth(&b);
        node.ns.ip(&["link", "del", &hv]);
        plane.del(&b).assert_ok_empty();
        assert!(!plane.holds_address_of(&b), "{l}: link gone: not released");

        let d = plane.add();
        let hv = plane.host_veth(&d);
        for ip in result_ips(&d.result) {
            let file = node.data_dir.join(&plane.c.net).join(ip.to_string());
            std::fs::remove_file(&file)
                .unwrap_or_else(|e| panic!("{l}: remove {}: {e}", file.display()));
        }
        plane.del(&d).assert_ok_empty();
        assert!(
            node.ns.link(&hv).is_none(),
            "{l}: allocation gone: {hv} kept"
        );
        assert_eq!(d.ns.link_names(), vec!["lo".to_string()], "{l}");

        assert_eq!(reservations(node, &plane.c.net).len(), 0, "{l}");
    }
}

/// On every data plane, a DEL whose link removal and release both fail (the RTM_DELLINK and
/// the reservation's unlink refused, by fault injection) is one CNI error naming both, each
/// with the kernel's or the OS's reason; the pod's link and reservation are still there, and
/// the next DEL removes both. (Before, the list dropped the reasons: "delete link ifindex 7
/// failed", without EACCES.)
#[test]
fn del_reports_a_failed_link_removal_and_a_failed_release_together_each_with_its_reason() {
    for plane in Plane::all() {
        let l = plane.label;
        let node = plane.node();
        let p = plane.add();
        let hv = plane.host_veth(&p);
        // The plugin's netlink sends are the host end's lookup, then its deletion.
        let wrap = Traced::new(
            &plane.del_bin,
            "-e inject=sendto:error=EACCES:when=2 -e inject=unlink:error=EIO",
        );
        let out = plane.del_raw(&p.container_id, &p.ns, Some(&wrap));
        let err = out
            .check_error_shape()
            .unwrap_or_else(|e| panic!("{l}: {e}\n{out}"));
        let msg = err["msg"].as_str().unwrap_or("");
        // The reasons as the OS words them (glibc and musl differ; the errno does not).
        for want in [
            "remove the host veth",
            "os error 13",
            "release the addresses",
            "os error 5",
        ] {
            assert!(msg.contains(want), "{l}: the error lacks {want:?}\n{out}");
        }
        assert!(node.ns.link(&hv).is_some(), "{l}: {hv} went\n{out}");
        assert!(plane.holds_address_of(&p), "{l}: released after all\n{out}");

        plane.del(&p).assert_ok_empty();
        assert!(node.ns.link(&hv).is_none(), "{l}: retry left {hv}");
        assert!(
            !plane.holds_address_of(&p),
            "{l}: retry kept the reservation"
        );
    }
}

/// A veth pair made by hand on `node`: `name` there, its peer `peer` in `pod` (no owner mark).
fn veth_into(node: &Netns, name: &str, peer: &str, pod: &Netns) {
    node.ip(&[
        "link",
        "add",
        name,
        "type",
        "veth",
        "peer",
        "name",
        peer,
        "netns",
        pod.name(),
    ]);
}

/// Bridged and routed: the pair an ADD killed between the create and the mark (a host end
/// with the attachment's first candidate name and no alias, joined to `eth0` in the pod's
/// netns) is found and deleted by DEL; an unmarked link of that name joined to anything else
/// (another interface name, or an `eth0` that is not its peer) is left alone, and DEL still
/// succeeds.
#[test]
fn del_removes_a_killed_adds_unmarked_pair_and_no_other_unmarked_link() {
    for plane in Plane::bridged_and_routed() {
        let l = plane.label;
        let node = plane.node();
        // The host name an attachment gets, learnt by one ADD and DEL.
        let p = plane.add();
        let name = plane.host_veth(&p);
        plane.del(&p).assert_ok_empty();
        let cid = &p.container_id;

        let killed = Netns::with_tag("pod");
        veth_into(&node.ns, &name, "eth0", &killed);
        plane.del_raw(cid, &killed, None).assert_ok_empty();
        assert!(
            node.ns.link(&name).is_none(),
            "{l}: the unmarked pair stayed"
        );
        assert_eq!(killed.link_names(), vec!["lo".to_string()], "{l}");

        // Its peer has another name.
        let other = Netns::with_tag("pod");
        veth_into(&node.ns, &name, "eth9", &other);
        plane.del_raw(cid, &other, None).assert_ok_empty();
        assert!(node.ns.link(&name).is_some(), "{l}: a pair to eth9 went");
        node.ns.ip(&["link", "del", &name]);

        // The pod netns has an eth0, but not this link's peer.
        let stranger = Netns::with_tag("pod");
        let elsewhere = Netns::with_tag("pod");
        stranger.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "x0"]);
        veth_into(&node.ns, &name, "eth0", &elsewhere);
        plane.del_raw(cid, &stranger, None).assert_ok_empty();
        assert!(
            node.ns.link(&name).is_some(),
            "{l}: a pair whose peer is not the pod's eth0 went"
        );
        assert!(stranger.link("eth0").is_some(), "{l}");
        node.ns.ip(&["link", "del", &name]);
    }
}

/// Bridged and routed: a host veth whose mark names another owner is never deleted by this
/// attachment's DEL (which still releases its addresses and succeeds), by name or by the
/// routed plane's dump for the mark; on the routed plane, the owner it names deletes it.
#[test]
fn del_never_deletes_a_link_carrying_another_owners_mark() {
    for plane in Plane::bridged_and_routed() {
        let l = plane.label;
        let node = plane.node();
        let p = plane.add();
        let hv = plane.host_veth(&p);
        let other = unique_name("other");
        let theirs = owner_mark(&plane.c.net, &other, "eth0");
        node.ns.ip(&["link", "set", &hv, "alias", &theirs]);

        plane.del(&p).assert_ok_empty();
        assert!(node.ns.link(&hv).is_some(), "{l}: {hv} carried {theirs:?}");
        assert!(!plane.holds_address_of(&p), "{l}: not released");

        if plane.routed() {
            // Not among the names of the owner it names: the routed DEL's dump finds it.
            plane.del_raw(&other, &p.ns, None).assert_ok_empty();
            assert!(node.ns.link(&hv).is_none(), "{l}: its owner's DEL left it");
        } else {
            node.ns.ip(&["link", "del", &hv]);
        }
    }
}

/// Bridged and routed: eight DELs at once each remove their own pod and release its address;
/// nothing of any pod is left.
#[test]
fn eight_concurrent_dels_each_remove_their_pod_and_release_its_addresses() {
    for plane in Plane::bridged_and_routed() {
        let l = plane.label;
        let node = plane.node();
        let pods: Vec<Pod> = (0..8).map(|_| plane.add()).collect();
        let veths: Vec<String> = pods.iter().map(|p| plane.host_veth(p)).collect();
        let outs: Vec<Outcome> = std::thread::scope(|s| {
            let hs: Vec<_> = pods.iter().map(|p| s.spawn(|| plane.del(p))).collect();
            hs.into_iter()
                .map(|h| h.join().expect("DEL thread"))
                .collect()
        });
        for out in &outs {
            out.assert_ok_empty();
        }
        for hv in &veths {
            assert!(node.ns.link(hv).is_none(), "{l}: {hv} left");
        }
        for p in &pods {
            assert_eq!(p.ns.link_names(), vec!["lo".to_string()], "{l}");
        }
        assert_eq!(reservations(node, &plane.c.net).len(), 0, "{l}");
    }
}
