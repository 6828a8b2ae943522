//! twill::node::masq against real network namespaces: the table exists once, with the right content,
//! in the test namespace only; it masquerades real packets leaving the cluster and only those.
//! The forward rules land in the host's forward chains and leave with the network. Never touches
//! the root namespace (asserted).

mod common;

use common::{TestNs, net, sh};
use serde_json::Value;
use twill::kernel::netlink::netfilter::Netfilter;
use twill::node::masq;

/// A private directory under the temp dir, removed on drop (also when the test panics).
struct TmpDir(std::path::PathBuf);

impl TmpDir {
    fn new(tag: &str) -> TmpDir {
        let p = std::env::temp_dir().join(format!("tw-masq-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TmpDir(p)
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A netfilter socket in the calling thread's namespace.
fn nf() -> Netfilter {
    Netfilter::new().expect("netfilter socket")
}

/// A namespace made by this test with its loopback up.
fn up_ns() -> TestNs {
    let ns = TestNs::new();
    ns.run(&["ip", "link", "set", "lo", "up"]);
    ns
}

fn objects<'a>(all: &'a [Value], kind: &str) -> Vec<&'a Value> {
    all.iter().filter_map(|o| o.get(kind)).collect()
}

/// The root namespace has no table of ours.
fn assert_root_untouched(network: &str) {
    let out = sh(&["nft", "list", "tables"]);
    assert!(
        !out.contains(&format!("twill-masq-{network}")),
        "root ns has our table: {out}"
    );
}

#[test]
fn ensure_creates_one_table_with_the_right_rules() {
    let ns = up_ns();
    let network = format!("mq{}", std::process::id());
    let pods = [net("10.244.1.0/24"), net("fd10:0:0:1::/64")];
    let cluster = [net("10.244.0.0/16"), net("fd10::/48")];
    ns.enter(|| masq::ensure(&mut nf(), &network, &pods, &cluster))
        .unwrap();
    let first = ns.ruleset_json();
    let tables = objects(&first, "table");
    assert_eq!(tables.len(), 1, "{first:?}");
    assert_eq!(tables[0]["name"], format!("twill-masq-{network}"));
    assert_eq!(tables[0]["family"], "inet");
    let handle = tables[0]["handle"].clone();

    // Many more calls, sequential and concurrent: the same table object (same handle) stays.
    for _ in 0..50 {
        ns.enter(|| masq::ensure(&mut nf(), &network, &pods, &cluster))
            .unwrap();
    }
    std::thread::scope(|s| {
        for _ in 0..6 {
            s.spawn(|| {
                for _ in 0..10 {
                    ns.enter(|| masq::ensure(&mut nf(), &network, &pods, &cluster))
                        .unwrap();
                }
            });
        }
    });
    let all = ns.ruleset_json();
    let tables = objects(&all, "table");
    assert_eq!(tables.len(), 1);
    assert_eq!(
        tables[0]["handle"], handle,
        "fast path must not recreate the table"
    );

    let chains = objects(&all, "chain");
    assert_eq!(chains.len(), 1);
    assert_eq!(chains[0]["name"], "postrouting");
    assert_eq!(chains[0]["type"], "nat");
    assert_eq!(chains[0]["hook"], "postrouting");
    assert_eq!(chains[0]["prio"], 100);
    let rules = objects(&all, "rule");
    assert_eq!(rules.len(), 2, "{rules:?}");
    for (rule, (proto, src, src_len, dsts)) in rules.iter().zip([
        (
            "ip",
            "10.244.1.0",
            24,
            vec![("10.244.0.0", 16), ("224.0.0.0", 4)],
        ),
        (
            "ip6",
            "fd10:0:0:1::",
            64,
            vec![("fd10::", 48), ("ff00::", 8)],
        ),
    ]) {
        let expr = rule["expr"].as_array().unwrap();
        assert_eq!(expr.len(), 3, "{rule}");
        let m0 = &expr[0]["match"];
        assert_eq!(m0["op"], "==");
        assert_eq!(m0["left"]["payload"]["protocol"], proto);
        assert_eq!(m0["left"]["payload"]["field"], "saddr");
        assert_eq!(m0["right"]["prefix"]["addr"], src);
        assert_eq!(m0["right"]["prefix"]["len"], src_len);
        let m1 = &expr[1]["match"];
        assert_eq!(m1["op"], "!=");
        assert_eq!(m1["left"]["payload"]["field"], "daddr");
        let set: Vec<(String, u64)> = m1["right"]["set"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["prefix"]["addr"].as_str().unwrap().to_string(),
                    e["prefix"]["len"].as_u64().unwrap(),
                )
            })
            .collect();
        let want: Vec<(String, u64)> = dsts.iter().map(|(a, l)| (a.to_string(), *l)).collect();
        assert_eq!(set, want);
        assert_eq!(expr[2]["masquerade"]["flags"], "fully-random");
        assert!(rule["comment"].as_str().unwrap().starts_with("twill masq "));
    }
    masq::check(&mut nf(), &network, &pods, &cluster).unwrap_err(); // root ns: not there
    ns.enter(|| masq::check(&mut nf(), &network, &pods, &cluster))
        .unwrap();
    assert_root_untouched(&network);
}

#[test]
fn concurrent_first_creation_converges() {
    let ns = up_ns();
    let network = format!("conc{}", std::process::id());
    let pods = [net("10.50.3.0/24")];
    let cluster = [net("10.50.0.0/16")];
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                ns.enter(|| masq::ensure(&mut nf(), &network, &pods, &cluster))
                    .unwrap()
            });
        }
    });
    let all = ns.ruleset_json();
    assert_eq!(objects(&all, "table").len(), 1);
    assert_eq!(objects(&all, "chain").len(), 1);
    assert_eq!(objects(&all, "rule").len(), 1);
    ns.enter(|| masq::check(&mut nf(), &network, &pods, &cluster))
        .unwrap();
    assert_root_untouched(&network);
}

#[test]
fn config_change_replaces_rule_set() {
    let ns = up_ns();
    let network = "chg";
    let pods = [net("10.60.1.0/24")];
    ns.enter(|| masq::ensure(&mut nf(), network, &pods, &[net("10.60.0.0/16")]))
        .unwrap();
    ns.enter(|| masq::ensure(&mut nf(), network, &pods, &[net("10.60.0.0/15")]))
        .unwrap();
    let all = ns.ruleset_json();
    assert_eq!(objects(&all, "table").len(), 1);
    let rules = objects(&all, "rule");
    assert_eq!(rules.len(), 1);
    let set = &rules[0]["expr"][1]["match"]["right"]["set"];
    assert_eq!(set[0]["prefix"]["len"], 15, "{set}");
    ns.enter(|| masq::check(&mut nf(), network, &pods, &[net("10.60.0.0/15")]))
        .unwrap();
    let e = ns
        .enter(|| masq::check(&mut nf(), network, &pods, &[net("10.60.0.0/16")]))
        .unwrap_err();
    assert_eq!(e.code, twill::code::CHECK_FAILED);
}

#[test]
fn check_detects_tampering_rebuild_repairs_remove_is_idempotent() {
    let ns = up_ns();
    let network = "tamper";
    let pods = [net("10.70.1.0/24"), net("fd70::/64")];
    let cluster = [net("10.70.0.0/16")];
    ns.enter(|| masq::ensure(&mut nf(), network, &pods, &cluster))
        .unwrap();
    ns.enter(|| masq::check(&mut nf(), network, &pods, &cluster))
        .unwrap();

    ns.run(&[
        "nft",
        "flush",
        "chain",
        "inet",
        "twill-masq-tamper",
        "postrouting",
    ]);
    let e = ns
        .enter(|| masq::check(&mut nf(), network, &pods, &cluster))
        .unwrap_err();
    assert_eq!(e.code, twill::code::CHECK_FAILED);
    assert!(e.msg.contains("expected 2"), "{e}");
    ns.enter(|| masq::rebuild(network, &pods, &cluster))
        .unwrap();
    ns.enter(|| masq::check(&mut nf(), network, &pods, &cluster))
        .unwrap();

    // An extra foreign rule in our chain is also a CHECK failure.
    ns.run(&[
        "nft",
        "add",
        "rule",
        "inet",
        "twill-masq-tamper",
        "postrouting",
        "counter",
    ]);
    let e = ns
        .enter(|| masq::check(&mut nf(), network, &pods, &cluster))
        .unwrap_err();
    assert!(e.msg.contains("3 in total"), "{e}");

    assert!(ns.enter(|| masq::exists(&mut nf(), network)).unwrap());
    ns.enter(|| masq::remove(&mut nf(), network)).unwrap();
    assert!(!ns.enter(|| masq::exists(&mut nf(), network)).unwrap());
    assert!(ns.run(&["nft", "list", "tables"]).trim().is_empty());
    ns.enter(|| masq::remove(&mut nf(), network)).unwrap();
    let e = ns
        .enter(|| masq::check(&mut nf(), network, &pods, &cluster))
        .unwrap_err();
    assert!(e.msg.contains("does not exist"), "{e}");
}

/// Real packets: pod → outside is masqueraded to the node's address; pod → another pod
/// subnet of the cluster keeps the pod's source address.
#[test]
fn masquerades_real_packets_leaving_the_cluster_only() {
    let node = up_ns();
    let pod = up_ns();
    let ext = up_ns();
    let peer = up_ns();
    let link = |a: &TestNs, an: &str, b: &TestNs, bn: &str| {
        node.run(&["ip", "link", "add", an, "type", "veth", "peer", "name", bn]);
        if a.name != node.name {
            node.run(&["ip", "link", "set", an, "netns", &a.name]);
        }
        node.run(&["ip", "link", "set", bn, "netns", &b.name]);
        a.run(&["ip", "link", "set", an, "up"]);
        b.run(&["ip", "link", "set", bn, "up"]);
    };
    link(&node, "vpod", &pod, "eth0");
    link(&node, "vext", &ext, "eth0");
    link(&node, "vpeer", &peer, "eth0");
    node.run(&["ip", "addr", "add", "10.80.1.1/24", "dev", "vpod"]);
    node.run(&["ip", "addr", "add", "198.51.100.1/24", "dev", "vext"]);
    node.run(&["ip", "addr", "add", "10.80.2.1/24", "dev", "vpeer"]);
    node.run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    pod.run(&["ip", "addr", "add", "10.80.1.2/24", "dev", "eth0"]);
    pod.run(&["ip", "route", "add", "default", "via", "10.80.1.1"]);
    ext.run(&["ip", "addr", "add", "198.51.100.2/24", "dev", "eth0"]);
    peer.run(&["ip", "addr", "add", "10.80.2.2/24", "dev", "eth0"]);
    peer.run(&["ip", "route", "add", "10.80.1.0/24", "via", "10.80.2.1"]);
    // Count, at each destination, packets by source address.
    for ns in [&ext, &peer] {
        ns.run(&[
            "nft",
            "add table inet seen; add chain inet seen in { type filter hook input priority 0; }; \
             add rule inet seen in ip saddr 10.80.1.2 counter; \
             add rule inet seen in ip saddr 198.51.100.1 counter; \
             add rule inet seen in ip saddr 10.80.2.1 counter",
        ]);
    }
    node.enter(|| {
        masq::ensure(
            &mut nf(),
            "pkt",
            &[net("10.80.1.0/24")],
            &[net("10.80.0.0/16")],
        )
    })
    .unwrap();
    pod.run(&["ping", "-c", "2", "-i", "0.2", "-W", "1", "198.51.100.2"]);
    pod.run(&["ping", "-c", "2", "-i", "0.2", "-W", "1", "10.80.2.2"]);
    let counts = |ns: &TestNs| -> Vec<(String, u64)> {
        objects(&ns.ruleset_json(), "rule")
            .iter()
            .map(|r| {
                let src = r["expr"][0]["match"]["right"].as_str().unwrap().to_string();
                (src, r["expr"][1]["counter"]["packets"].as_u64().unwrap())
            })
            .collect()
    };
    let ext_seen = counts(&ext);
    assert_eq!(
        ext_seen[0],
        ("10.80.1.2".to_string(), 0),
        "not masqueraded: {ext_seen:?}"
    );
    assert!(
        ext_seen[1].1 >= 2,
        "outside sees the node address: {ext_seen:?}"
    );
    let peer_seen = counts(&peer);
    assert!(
        peer_seen[0].1 >= 2,
        "cluster sees the pod address: {peer_seen:?}"
    );
    assert_eq!(
        peer_seen[2].1, 0,
        "cluster traffic masqueraded: {peer_seen:?}"
    );
    assert_root_untouched("pkt");
}

/// Kernels before 5.10 drop table comments (and nft before 0.9.7 cannot write them): a table
/// holding the rule set without a table comment is recognised by its rules' comments and left
/// alone; a change in its rules is still found and repaired.
#[test]
fn without_table_comment_the_rule_comments_decide() {
    let ns = up_ns();
    let network = "legacy";
    let pods = [net("10.91.1.0/24"), net("fd91::/64")];
    let cluster = [net("10.91.0.0/16")];
    let rs = masq::ruleset(network, &pods, &cluster).unwrap();
    let tmp = TmpDir::new("legacy");
    let file = tmp.0.join("legacy.nft");
    std::fs::write(&file, &rs.legacy_script).unwrap();
    ns.run(&["nft", "-f", file.to_str().unwrap()]);
    let all = ns.ruleset_json();
    let tables = objects(&all, "table");
    assert_eq!(tables.len(), 1);
    assert!(tables[0].get("comment").is_none(), "{all:?}");
    let handle = tables[0]["handle"].clone();

    assert!(
        !ns.enter(|| masq::ensure(&mut nf(), network, &pods, &cluster))
            .unwrap()
    );
    assert_eq!(objects(&ns.ruleset_json(), "table")[0]["handle"], handle);
    ns.enter(|| masq::check(&mut nf(), network, &pods, &cluster))
        .unwrap();

    // One rule gone: found through the rules, rewritten.
    ns.run(&[
        "nft",
        "delete",
        "rule",
        "inet",
        "twill-masq-legacy",
        "postrouting",
        "handle",
        &objects(&ns.ruleset_json(), "rule")[0]["handle"].to_string(),
    ]);
    let e = ns
        .enter(|| masq::check(&mut nf(), network, &pods, &cluster))
        .unwrap_err();
    assert_eq!(e.code, twill::code::CHECK_FAILED);
    assert!(
        ns.enter(|| masq::ensure(&mut nf(), network, &pods, &cluster))
            .unwrap()
    );
    ns.enter(|| masq::check(&mut nf(), network, &pods, &cluster))
        .unwrap();
    assert_root_untouched(network);
}

/// Kernels before 5.2 have no nat in the inet family: the rule set then lives in an `ip` and
/// an `ip6` table (what the split script writes). Such a pair is recognised and left alone,
/// checked, read back and removed like the inet table.
#[test]
fn the_split_ip_and_ip6_layout_is_recognised_checked_and_removed() {
    let ns = up_ns();
    let network = "split";
    let pods = [net("10.96.1.0/24"), net("fd96::/64")];
    let cluster = [net("10.96.0.0/16")];
    let rs = masq::ruleset(network, &pods, &cluster).unwrap();
    let tmp = TmpDir::new("split");
    let file = tmp.0.join("split.nft");
    std::fs::write(&file, &rs.split_script).unwrap();
    ns.run(&["nft", "-f", file.to_str().unwrap()]);
    let families = |ns: &TestNs| -> Vec<String> {
        objects(&ns.ruleset_json(), "table")
            .iter()
            .map(|t| t["family"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(families(&ns), ["ip", "ip6"]);

    assert!(
        !ns.enter(|| masq::ensure(&mut nf(), network, &pods, &cluster))
            .unwrap()
    );
    assert_eq!(families(&ns), ["ip", "ip6"], "left alone");
    ns.enter(|| masq::check(&mut nf(), network, &pods, &cluster))
        .unwrap();
    let mut held = ns.enter(|| masq::sources(&mut nf(), network)).unwrap();
    held.sort();
    assert_eq!(held, pods);
    ns.run(&[
        "nft",
        "flush",
        "chain",
        "ip6",
        "twill-masq-split",
        "postrouting",
    ]);
    let e = ns
        .enter(|| masq::check(&mut nf(), network, &pods, &cluster))
        .unwrap_err();
    assert!(
        e.msg.contains("table ip twill-masq-split + table ip6"),
        "{e}"
    );
    assert!(ns.enter(|| masq::remove(&mut nf(), network)).unwrap());
    assert!(ns.run(&["nft", "list", "tables"]).trim().is_empty());
    assert!(!ns.enter(|| masq::exists(&mut nf(), network)).unwrap());
    assert_root_untouched(network);
}

/// An IPAM twill cannot read: the sources only grow. Eight concurrent first ADDs in eight new
/// subnets all end up masqueraded; a later ADD in a known subnet writes nothing.
#[test]
fn ensure_growing_never_narrows_even_when_concurrent() {
    let ns = up_ns();
    let network = format!("grow{}", std::process::id());
    let cluster = [net("10.92.0.0/16")];
    let tmp = TmpDir::new("grow");
    let lock_dir = tmp.0.clone();
    std::thread::scope(|s| {
        for i in 0..8 {
            let (ns, network, lock_dir) = (&ns, &network, &lock_dir);
            s.spawn(move || {
                let pod = [net(&format!("10.93.{i}.0/24"))];
                ns.enter(|| masq::ensure_growing(&mut nf(), network, &pod, &cluster, lock_dir))
                    .unwrap()
            });
        }
    });
    let mut held = ns.enter(|| masq::sources(&mut nf(), &network)).unwrap();
    held.sort();
    let want: Vec<_> = (0..8).map(|i| net(&format!("10.93.{i}.0/24"))).collect();
    assert_eq!(held, want);
    assert!(
        !ns.enter(|| masq::ensure_growing(
            &mut nf(),
            &network,
            &[net("10.93.3.0/24")],
            &cluster,
            &lock_dir
        ))
        .unwrap()
    );
    ns.enter(|| masq::check(&mut nf(), &network, &want, &cluster))
        .unwrap();
    assert_root_untouched(&network);
}

/// Forward rules go into every filter base chain at the forward hook (iptables-nft's and an
/// nftables one), are left alone when in sync, replaced when the space changes, and removed with
/// the network without touching another network's rules or the chains.
#[test]
fn forward_rules_follow_the_space_and_leave_with_the_network() {
    use twill::node::forward;
    let ns = up_ns();
    ns.run(&["iptables-nft", "-P", "FORWARD", "DROP"]);
    ns.run(&["nft", "add table inet filter; add chain inet filter forward { type filter hook forward priority 0; policy drop; }"]);
    let tmp = TmpDir::new("fwd");
    let dir = tmp.0.clone();
    let count = |family: &str, table: &str, chain: &str, network: &str| {
        objects(&ns.ruleset_json(), "rule")
            .iter()
            .filter(|r| {
                r["family"] == family
                    && r["table"] == table
                    && r["chain"] == chain
                    && r["comment"]
                        .as_str()
                        .is_some_and(|c| c.starts_with(&format!("twill forward {network} ")))
            })
            .count()
    };
    let space = [net("10.94.0.0/16"), net("fd94::/48")];
    assert!(
        ns.enter(|| forward::ensure(&mut nf(), "a", &space, false, &dir))
            .unwrap()
    );
    assert_eq!(count("ip", "filter", "FORWARD", "a"), 2);
    assert_eq!(count("inet", "filter", "forward", "a"), 4);
    assert!(
        !ns.enter(|| forward::ensure(&mut nf(), "a", &space, false, &dir))
            .unwrap()
    );
    ns.enter(|| forward::check(&mut nf(), "a", &space, false))
        .unwrap();
    let e = ns
        .enter(|| forward::check(&mut nf(), "a", &space[..1], false))
        .unwrap_err();
    assert_eq!(e.code, twill::code::CHECK_FAILED);
    assert!(e.msg.contains("inet filter forward"), "{e}");

    assert!(
        ns.enter(|| forward::ensure(&mut nf(), "a", &space[..1], false, &dir))
            .unwrap()
    );
    assert_eq!(count("inet", "filter", "forward", "a"), 2);
    assert!(
        ns.enter(|| forward::ensure(&mut nf(), "b", &[net("10.95.0.0/16")], false, &dir))
            .unwrap()
    );
    assert_eq!(ns.enter(|| forward::remove(&mut nf(), "a")).unwrap(), 4);
    assert_eq!(ns.enter(|| forward::remove(&mut nf(), "a")).unwrap(), 0);
    assert_eq!(count("ip", "filter", "FORWARD", "a"), 0);
    assert_eq!(count("ip", "filter", "FORWARD", "b"), 2);
    assert_eq!(objects(&ns.ruleset_json(), "chain").len(), 2, "chains stay");
}

/// Eight concurrent first ADDs of one network on a node with a forward chain leave exactly one
/// copy of its rules (the slow path re-reads under the lock).
#[test]
fn concurrent_forward_ensure_adds_the_rules_once() {
    use twill::node::forward;
    let ns = up_ns();
    ns.run(&["iptables-nft", "-P", "FORWARD", "DROP"]);
    let tmp = TmpDir::new("fwd-conc");
    let dir = tmp.0.clone();
    let space = [net("10.97.0.0/16")];
    let written: usize = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    ns.enter(|| forward::ensure(&mut nf(), "conc", &space, false, &dir))
                        .unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| usize::from(h.join().unwrap())).sum()
    });
    assert_eq!(written, 1, "exactly one run writes");
    let rules = objects(&ns.ruleset_json(), "rule").len();
    assert_eq!(rules, 2, "{}", ns.run(&["nft", "list", "ruleset"]));
    ns.enter(|| forward::check(&mut nf(), "conc", &space, false))
        .unwrap();
}
