//! Hostile input, black-box, across plugins: one table of cases (traversal and symlinks in data
//! dirs, oversized names and stdin, control characters in variables, netns paths that are not a
//! pod's, prevResults naming links twill did not create, bad subnet files and cluster views, bad
//! CNI_ARGS, every key with a wrong type). Each case is one plugin call; each must answer the
//! expected CNI error code (or succeed, where the SPEC says the command proceeds) with a
//! well-formed error object and a message free of Rust debug output, and must leave the node
//! (links, addresses, routes, nftables, every file under its directories), the pod namespace
//! and the scratch files exactly as they were.
//!
//! Plugins are entries of [`PLUGINS`]: adding a data-plane plugin is one entry (its binary, its
//! base config, and whether it has the data-plane keys).

use conformance::hostgw::{Cluster, NodeSnapshot};
use conformance::{DirSnapshot, Fabric, Invocation, Netns, Node, TempDir, twill_bin};
use serde_json::{Value, json};
use std::path::Path;

/// A plugin under test: binary name, base config on its node, and its kind of keys.
struct PluginEntry {
    bin: &'static str,
    /// The base 1.1.0 config for node `node` of the cluster.
    conf: fn(&Cluster, &Node) -> Value,
    /// True for data-plane plugins (bridge, subnet file, cluster view, runDir keys).
    data_plane: bool,
}

fn bridge_conf(c: &Cluster, n: &Node) -> Value {
    json!({
        "cniVersion": "1.1.0", "name": c.net, "type": "bridge-host-gw", "bridge": "cni0",
        "subnetFile": n.subnet_file, "dataDir": n.data_dir, "peersFile": n.peers_file,
        "runDir": n.run_dir,
    })
}

fn routed_conf(c: &Cluster, n: &Node) -> Value {
    json!({
        "cniVersion": "1.1.0", "name": c.net, "type": "routed-veth",
        "hostVethPrefix": conformance::routed::PREFIX,
        "subnetFile": n.subnet_file, "dataDir": n.data_dir, "peersFile": n.peers_file,
        "runDir": n.run_dir,
    })
}

fn host_local_conf(c: &Cluster, n: &Node) -> Value {
    json!({
        "cniVersion": "1.1.0", "name": c.net, "type": "host-local",
        "ipam": {
            "type": "host-local", "dataDir": n.data_dir,
            "ranges": [[{"subnet": "10.250.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}],
        },
    })
}

/// Every plugin on main; one node of the cluster each (index = position).
const PLUGINS: &[PluginEntry] = &[
    PluginEntry {
        bin: "bridge-host-gw",
        conf: bridge_conf,
        data_plane: true,
    },
    PluginEntry {
        bin: "routed-veth",
        conf: routed_conf,
        data_plane: true,
    },
    PluginEntry {
        bin: "host-local",
        conf: host_local_conf,
        data_plane: false,
    },
];

/// What a case runs against: the cluster, a pod namespace holding a foreign `eth0`, a scratch
/// directory with victim files, and the plugin's node.
struct Ctx<'a> {
    c: &'a Cluster,
    pod: &'a Netns,
    scratch: &'a TempDir,
    plugin: &'a PluginEntry,
    node: &'a Node,
}

impl Ctx<'_> {
    fn conf(&self) -> Value {
        (self.plugin.conf)(self.c, self.node)
    }

    /// The base config with top-level keys replaced (a `null` removes the key).
    fn with(&self, patch: Value) -> Value {
        merge(self.conf(), patch)
    }

    /// The base config with `ipam` keys replaced.
    fn with_ipam(&self, patch: Value) -> Value {
        let mut c = self.conf();
        let ipam = c.get("ipam").cloned().unwrap_or_else(|| json!({}));
        c["ipam"] = merge(ipam, patch);
        c
    }

    /// A call of the plugin on its node for the container `hostile`, ifname `eth1`.
    fn call(&self, cmd: &str, conf: &Value) -> Invocation {
        self.node.invoke(
            &twill_bin(self.plugin.bin),
            cmd,
            conf,
            "hostile",
            self.pod.path(),
            "eth1",
        )
    }

    fn add(&self, conf: &Value) -> Invocation {
        self.call("ADD", conf)
    }

    /// A file in the scratch directory with `text`; its path.
    fn file(&self, name: &str, text: &[u8]) -> String {
        let p = self.scratch.join(name);
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p.display().to_string()
    }

    fn victim(&self) -> String {
        self.scratch.join("victim").display().to_string()
    }
}

fn merge(mut base: Value, patch: Value) -> Value {
    if let (Some(b), Some(p)) = (base.as_object_mut(), patch.as_object()) {
        for (k, v) in p {
            if v.is_null() {
                b.remove(k);
            } else {
                b.insert(k.clone(), v.clone());
            }
        }
    }
    base
}

/// Expected answer: an error with one of these codes, or success (`&[]`).
type Codes = &'static [u64];

/// How long one hostile call may take (a plugin answers in milliseconds; a hang is a defect).
const CALL_BOUND: std::time::Duration = std::time::Duration::from_secs(5);
const OK: Codes = &[];
/// Success or any well-formed error: the case is about what must not be touched.
const ANY: Codes = &[u64::MAX];

/// One hostile case: a name, the plugins it applies to, the expected codes, and the call.
struct Case {
    name: &'static str,
    applies: fn(&PluginEntry) -> bool,
    codes: Codes,
    call: Box<dyn Fn(&Ctx) -> Invocation>,
}

fn all(_: &PluginEntry) -> bool {
    true
}

fn planes(p: &PluginEntry) -> bool {
    p.data_plane
}

fn case(
    name: &'static str,
    applies: fn(&PluginEntry) -> bool,
    codes: Codes,
    call: impl Fn(&Ctx) -> Invocation + 'static,
) -> Case {
    Case {
        name,
        applies,
        codes,
        call: Box::new(call),
    }
}

/// A config key set to a value of the wrong type (or range) is refused with code 7.
fn wrong_type(name: &'static str, applies: fn(&PluginEntry) -> bool, patch: Value) -> Case {
    case(name, applies, &[7], move |x| x.add(&x.with(patch.clone())))
}

fn wrong_ipam(name: &'static str, patch: Value) -> Case {
    case(name, all, &[7], move |x| x.add(&x.with_ipam(patch.clone())))
}

fn cases() -> Vec<Case> {
    let long_name = "n".repeat(300);
    let mut v = vec![
        // Names and identifiers.
        case("network name of 300 bytes", all, &[7], move |x| {
            x.add(&x.with(json!({"name": long_name.clone()})))
        }),
        case("network name with traversal", all, &[7], |x| {
            x.add(&x.with(json!({"name": "../../etc"})))
        }),
        case("network name with a slash", all, &[7], |x| {
            x.add(&x.with(json!({"name": "a/b"})))
        }),
        case("network name with a newline", all, &[7], |x| {
            x.add(&x.with(json!({"name": "pods\nx"})))
        }),
        case("network name of a wrong type", all, &[7], |x| {
            x.add(&x.with(json!({"name": 5})))
        }),
        case("ifname with a newline", all, &[4], |x| {
            x.add(&x.conf()).ifname("eth\n1")
        }),
        case("ifname of 16 bytes", all, &[4], |x| {
            x.add(&x.conf()).ifname("abcdefghijklmnop")
        }),
        case("ifname dot-dot", all, &[4], |x| {
            x.add(&x.conf()).ifname("..")
        }),
        case("ifname with a slash", all, &[4], |x| {
            x.add(&x.conf()).ifname("a/b")
        }),
        case("ifname empty", all, &[4], |x| x.add(&x.conf()).ifname("")),
        case("container ID with traversal", all, &[4], |x| {
            x.add(&x.conf()).container_id("../../x")
        }),
        case("container ID with a newline", all, &[4], |x| {
            x.add(&x.conf()).container_id("abc\ndef")
        }),
        case("DEL with a container ID with traversal", all, &[4], |x| {
            x.call("DEL", &x.conf()).container_id("../victim")
        }),
        // Network namespaces that are not a pod's.
        case("ADD with CNI_NETNS a regular file", planes, &[4, 7], |x| {
            let f = x.file("not-a-netns", b"x");
            x.add(&x.conf()).netns(f)
        }),
        case(
            "CHECK with CNI_NETNS a regular file",
            planes,
            &[4, 7],
            |x| {
                let f = x.file("not-a-netns", b"x");
                let conf = x.with(json!({"prevResult": foreign_result(x)}));
                x.call("CHECK", &conf).netns(f)
            },
        ),
        case("DEL with CNI_NETNS a regular file proceeds", all, OK, |x| {
            let f = x.file("not-a-netns", b"x");
            x.call("DEL", &x.conf()).netns(f)
        }),
        case(
            "ADD with CNI_NETNS the plugin's own netns",
            all,
            &[4],
            |x| x.add(&x.conf()).netns("/proc/self/ns/net"),
        ),
        case(
            "CHECK with CNI_NETNS the plugin's own netns",
            all,
            &[4],
            |x| x.call("CHECK", &x.conf()).netns("/proc/self/ns/net"),
        ),
        case(
            "DEL with CNI_NETNS the plugin's own netns proceeds",
            all,
            OK,
            |x| x.call("DEL", &x.conf()).netns("/proc/self/ns/net"),
        ),
        case(
            "ADD with CNI_NETNS a missing path",
            planes,
            &[3, 4, 5],
            |x| x.add(&x.conf()).netns("/run/netns/twill-hostile-gone"),
        ),
        case("ADD with CNI_NETNS a directory", planes, &[4, 7], |x| {
            x.add(&x.conf()).netns("/run/netns")
        }),
        case(
            "ADD with CNI_NETNS a mount namespace",
            planes,
            &[4, 7],
            |x| x.add(&x.conf()).netns("/proc/self/ns/mnt"),
        ),
        // prevResult naming links twill did not create.
        case("DEL with a prevResult naming foreign links", all, OK, |x| {
            let conf = x.with(json!({"prevResult": foreign_result(x)}));
            x.call("DEL", &conf).ifname("eth0")
        }),
        case(
            "CHECK with a prevResult naming foreign links",
            planes,
            &[105],
            |x| {
                let conf = x.with(json!({"prevResult": foreign_result(x)}));
                x.call("CHECK", &conf).ifname("eth0")
            },
        ),
        case("ADD onto a foreign eth0 in the pod", planes, &[104], |x| {
            x.add(&x.conf()).ifname("eth0")
        }),
        case(
            "CHECK with a prevResult of a wrong type",
            all,
            &[6, 7],
            |x| x.call("CHECK", &x.with(json!({"prevResult": "eth0"}))),
        ),
        case(
            "ADD with a prevResult naming foreign links",
            planes,
            &[104],
            |x| {
                let conf = x.with(json!({"prevResult": foreign_result(x)}));
                x.add(&conf).ifname("eth0")
            },
        ),
        // stdin.
        case("stdin larger than 1 MiB", all, &[7], |x| {
            x.add(&x.conf()).stdin_raw(vec![b' '; 2 << 20])
        }),
        case("valid JSON config of 50 MB", all, &[7], |x| {
            let mut c = x.conf();
            c["padding"] = Value::String("p".repeat(50 << 20));
            x.add(&c)
        }),
        case("stdin empty", all, &[6], |x| {
            x.add(&x.conf()).stdin_raw(Vec::new())
        }),
        case("stdin truncated JSON", all, &[6], |x| {
            let s = x.conf().to_string();
            x.add(&x.conf()).stdin_raw(&s.as_bytes()[..s.len() / 2])
        }),
        case("stdin not UTF-8", all, &[6], |x| {
            x.add(&x.conf())
                .stdin_raw(b"{\"name\": \"\xff\xfe\"}".to_vec())
        }),
        case("stdin a JSON array", all, &[7], |x| {
            x.add(&x.conf()).stdin_raw(b"[1,2]".to_vec())
        }),
        case("stdin deeply nested JSON", all, &[6, 7], |x| {
            let mut s = "[".repeat(100_000);
            s.push_str(&"]".repeat(100_000));
            x.add(&x.conf()).stdin_raw(s.into_bytes())
        }),
        case("cniVersion unknown", all, &[1], |x| {
            x.add(&x.with(json!({"cniVersion": "99.0.0"})))
        }),
        case("cniVersion a number", all, &[7], |x| {
            x.add(&x.with(json!({"cniVersion": 1.0})))
        }),
        // CNI_ARGS.
        case("CNI_ARGS with a pair without '='", all, &[4, 7], |x| {
            x.add(&x.conf()).cni_args("IgnoreUnknown=1;novalue")
        }),
        case("CNI_ARGS IP not an address", all, &[4, 7], |x| {
            x.add(&x.conf()).cni_args("IP=10.250.0.300")
        }),
        case("CNI_ARGS IP outside every range", all, &[7, 102], |x| {
            x.add(&x.conf()).cni_args("IP=192.0.2.7")
        }),
        case("CNI_ARGS IgnoreUnknown not a boolean", all, &[4, 7], |x| {
            x.add(&x.conf()).cni_args("IgnoreUnknown=maybe;FOO=bar")
        }),
        case("CNI_ARGS of 100 kB", all, &[4, 7], |x| {
            x.add(&x.conf())
                .cni_args(&format!("IgnoreUnknown=1;IP={}", "1".repeat(100_000)))
        }),
        // Data dirs: traversal and symlinks.
        case("dataDir with traversal into a file", all, &[5, 7], |x| {
            let f = x.file("datafile", b"x");
            let dd = format!("{f}/../datafile/sub");
            if x.plugin.data_plane {
                x.add(&x.with(json!({"dataDir": dd})))
            } else {
                x.add(&x.with_ipam(json!({"dataDir": dd})))
            }
        }),
        case("dataDir relative", planes, &[7], |x| {
            if x.plugin.data_plane {
                x.add(&x.with(json!({"dataDir": "relative/dir"})))
            } else {
                x.add(&x.with_ipam(json!({"dataDir": "relative/dir"})))
            }
        }),
        case(
            "reservation files symlinked to a victim",
            |p| p.bin == "host-local",
            ANY,
            |x| {
                let dd = x.scratch.join("dd-links");
                let netdir = dd.join(&x.c.net);
                std::fs::create_dir_all(&netdir).expect("mkdir");
                for i in 1..=20 {
                    let link = netdir.join(format!("10.250.0.{i}"));
                    std::os::unix::fs::symlink(x.victim(), &link).expect("symlink");
                }
                let dd = dd.display().to_string();
                x.add(&x.with_ipam(json!({"dataDir": dd})))
            },
        ),
        // Wrong types and ranges of shared keys.
        wrong_type("mtu a string", planes, json!({"mtu": "1500"})),
        wrong_type("mtu negative", planes, json!({"mtu": -1})),
        wrong_type("mtu too large", planes, json!({"mtu": 10_000_000_000u64})),
        wrong_type("mtu below the IPv4 minimum", planes, json!({"mtu": 10})),
        wrong_type("ipMasq a string", planes, json!({"ipMasq": "true"})),
        wrong_type("subnetFile a number", planes, json!({"subnetFile": 7})),
        wrong_type(
            "subnetFile relative",
            planes,
            json!({"subnetFile": "subnet.env"}),
        ),
        wrong_type("peersFile a list", planes, json!({"peersFile": []})),
        wrong_type("runDir a number", planes, json!({"runDir": 1})),
        wrong_type("runDir relative", planes, json!({"runDir": "run"})),
        wrong_type(
            "peersFile relative",
            planes,
            json!({"peersFile": "peers.json"}),
        ),
        wrong_type("dataDir an object", planes, json!({"dataDir": {}})),
        wrong_type(
            "clusterNetworks a string",
            planes,
            json!({"clusterNetworks": "10.0.0.0/8"}),
        ),
        wrong_type(
            "clusterNetworks not CIDRs",
            planes,
            json!({"clusterNetworks": ["bogus"]}),
        ),
        wrong_type("forwardRules a number", planes, json!({"forwardRules": 1})),
        wrong_type("ipam a string", planes, json!({"ipam": "host-local"})),
        wrong_type("dns a string", all, json!({"dns": "8.8.8.8"})),
        wrong_type(
            "bridge name of 16 bytes",
            |p| p.bin == "bridge-host-gw",
            json!({"bridge": "abcdefghijklmnop"}),
        ),
        wrong_type(
            "bridge name with a newline",
            |p| p.bin == "bridge-host-gw",
            json!({"bridge": "br\n0"}),
        ),
        wrong_type(
            "bridge name with traversal",
            |p| p.bin == "bridge-host-gw",
            json!({"bridge": "../x"}),
        ),
        wrong_type(
            "bridge a number",
            |p| p.bin == "bridge-host-gw",
            json!({"bridge": 5}),
        ),
        wrong_type(
            "isGateway a string",
            |p| p.bin == "bridge-host-gw",
            json!({"isGateway": "yes"}),
        ),
        wrong_type(
            "hairpinMode a number",
            |p| p.bin == "bridge-host-gw",
            json!({"hairpinMode": 1}),
        ),
        wrong_type(
            "hostVethPrefix a number",
            |p| p.bin == "routed-veth",
            json!({"hostVethPrefix": 3}),
        ),
        wrong_type(
            "hostVethPrefix with a slash",
            |p| p.bin == "routed-veth",
            json!({"hostVethPrefix": "a/"}),
        ),
        wrong_type(
            "hostVethPrefix of 14 bytes",
            |p| p.bin == "routed-veth",
            json!({"hostVethPrefix": "abcdefghijklmn"}),
        ),
        case(
            "bridge naming the node's uplink",
            |p| p.bin == "bridge-host-gw",
            &[7, 104],
            |x| x.add(&x.with(json!({"bridge": x.node.uplink}))),
        ),
        // IPAM keys.
        wrong_type("ipam.type a number", planes, json!({"ipam": {"type": 5}})),
        wrong_ipam("ipam.ranges a string", json!({"ranges": "10.0.0.0/24"})),
        wrong_ipam("ipam.ranges an empty set", json!({"ranges": [[]]})),
        wrong_ipam(
            "ipam range subnet not a CIDR",
            json!({"ranges": [[{"subnet": "10.0.0.0/33"}]]}),
        ),
        wrong_ipam(
            "ipam range start outside its subnet",
            json!({"ranges": [[{"subnet": "10.250.0.0/24", "rangeStart": "10.9.0.1"}]]}),
        ),
        wrong_ipam("ipam.routes an object", json!({"routes": {}})),
        wrong_ipam(
            "ipam route dst not a CIDR",
            json!({"routes": [{"dst": "nowhere"}]}),
        ),
        wrong_ipam(
            "ipam.dataDir a number",
            json!({"dataDir": 5, "ranges": [[{"subnet": "10.250.0.0/24"}]]}),
        ),
        wrong_ipam(
            "ipam.resolvConf a number",
            json!({"resolvConf": 5, "ranges": [[{"subnet": "10.250.0.0/24"}]]}),
        ),
    ];
    // Bad subnet files (data planes read them on ADD).
    let subnet_files: &[(&'static str, &'static [u8])] = &[
        ("subnet file of garbage", b"\x00\x01garbage\n==\n"),
        (
            "subnet file with a bad FLANNEL_SUBNET",
            b"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.300/24\nFLANNEL_MTU=1500\n",
        ),
        (
            "subnet file with a bad FLANNEL_MTU",
            b"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=abc\n",
        ),
        (
            "subnet file with the subnet outside the network",
            b"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.9.1.1/24\nFLANNEL_MTU=1500\n",
        ),
        ("subnet file empty", b""),
    ];
    for (name, text) in subnet_files {
        let text = text.to_vec();
        v.push(case(name, planes, &[7], move |x| {
            let f = x.file("subnet.env", &text);
            x.add(&x.with(json!({"subnetFile": f, "ipam": null})))
        }));
    }
    v.push(case(
        "subnet file a symlink to /dev/zero",
        planes,
        &[5, 7],
        |x| {
            let link = x.scratch.join("zero.env");
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink("/dev/zero", &link).expect("symlink");
            x.add(&x.with(json!({"subnetFile": link})))
        },
    ));
    v.push(case("subnet file a directory", planes, &[5, 7], |x| {
        x.add(&x.with(json!({"subnetFile": x.scratch.path()})))
    }));
    // Bad cluster views: STATUS names them (the view never blocks a pod's ADD).
    let views: &[(&'static str, &'static [u8])] = &[
        ("cluster view of garbage", b"{not json"),
        ("cluster view not a list", b"{\"nodeIP\": \"10.99.0.2\"}"),
    ];
    for (name, text) in views {
        let text = text.to_vec();
        v.push(case(name, planes, &[50, 51], move |x| {
            let f = x.file("view.json", &text);
            x.call("STATUS", &x.with(json!({"peersFile": f})))
        }));
    }
    v.push(case(
        "cluster view a symlink to /dev/zero",
        planes,
        &[50, 51],
        |x| {
            let link = x.scratch.join("zero.json");
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink("/dev/zero", &link).expect("symlink");
            x.call("STATUS", &x.with(json!({"peersFile": link})))
        },
    ));
    v.push(case("cluster view a directory", planes, &[50, 51], |x| {
        x.call("STATUS", &x.with(json!({"peersFile": x.scratch.path()})))
    }));
    v
}

/// A CNI 1.1.0 result naming links twill did not create: the node's uplink and the foreign
/// `fgn0`, and the pod's foreign `eth0`.
fn foreign_result(x: &Ctx) -> Value {
    json!({
        "cniVersion": "1.1.0",
        "interfaces": [
            {"name": "fgn0"},
            {"name": x.node.uplink},
            {"name": "eth0", "sandbox": x.pod.path_str()},
        ],
        "ips": [{"address": "10.250.0.9/24", "interface": 2}],
    })
}

/// Every hostile case against every plugin it applies to answers its code and changes nothing:
/// not the node (links, addresses, routes, nftables, files), not the pod, not the scratch files.
#[test]
fn hostile_input_is_refused_with_its_code_and_changes_nothing() {
    let c = Cluster::new(Fabric::single_l2(PLUGINS.len()));
    let pod = Netns::with_tag("hpod");
    // The pod holds a link twill did not make, and so does every node.
    pod.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "fgnpeer",
    ]);
    for i in 0..PLUGINS.len() {
        c.node(i).ns.ip(&[
            "link", "add", "fgn0", "type", "veth", "peer", "name", "fgn1",
        ]);
    }
    let scratch = TempDir::new("hostile");
    std::fs::write(scratch.join("victim"), b"victim\n").expect("victim");

    // A resident pod per plugin: hostile calls must leave it alone.
    let mut residents = Vec::new();
    for (i, p) in PLUGINS.iter().enumerate() {
        let n = c.node(i);
        residents.push(n.add_pod(&twill_bin(p.bin), &(p.conf)(&c, n), "resident"));
    }

    let mut failures = Vec::new();
    let mut tried = 0;
    for case in cases() {
        for (i, p) in PLUGINS
            .iter()
            .enumerate()
            .filter(|(_, p)| (case.applies)(p))
        {
            let x = Ctx {
                c: &c,
                pod: &pod,
                scratch: &scratch,
                plugin: p,
                node: c.node(i),
            };
            tried += 1;
            let node_before = NodeSnapshot::take(x.node);
            let pod_before = pod.link_names();
            let scratch_before = DirSnapshot::take(scratch.path());
            let inv = (case.call)(&x);
            let scratch_mid = DirSnapshot::take(scratch.path());
            let who = format!("{} / {}", p.bin, case.name);
            let run = std::panic::AssertUnwindSafe(|| inv.timeout(CALL_BOUND).run());
            let out = match std::panic::catch_unwind(run) {
                Ok(out) => out,
                Err(_) => {
                    failures.push(format!("{who}: did not finish within {CALL_BOUND:?}"));
                    scratch_before.restore_into(scratch.path());
                    continue;
                }
            };
            let verdict = if case.codes == ANY {
                if out.success() {
                    Ok(())
                } else {
                    out.check_error_shape()
                        .map(drop)
                        .map_err(|e| format!("{e}\n{out}"))
                }
            } else if case.codes.is_empty() {
                if out.success() {
                    Ok(())
                } else {
                    Err(format!("expected success\n{out}"))
                }
            } else {
                out.check_error(case.codes)
                    .map(drop)
                    .map_err(|e| format!("{e}\n{out}"))
            };
            if let Err(e) = verdict {
                failures.push(format!("{who}: {e}"));
            }
            if out.stdout_raw.contains("Some(") || out.stdout_raw.contains("Os {") {
                failures.push(format!("{who}: Rust debug output in the answer\n{out}"));
            }
            if case.codes == ANY {
                let victim = std::fs::read(x.victim()).unwrap_or_default();
                if victim != b"victim\n" {
                    failures.push(format!("{who}: the victim behind a symlink was written"));
                }
                // host-local keeps its state in the scratch dataDir only: the restore undoes it.
                scratch_before.restore_into(scratch.path());
                continue;
            }
            if out.success() && !case.codes.is_empty() {
                // Undo an ADD that should have been refused, so later cases start clean.
                let _ = x.call("DEL", &x.conf()).run();
            }
            let node_after = NodeSnapshot::take(x.node);
            if node_after != node_before {
                failures.push(format!(
                    "{who}: the node changed:\n  {}",
                    node_before.diff(&node_after)
                ));
            }
            if pod.link_names() != pod_before {
                failures.push(format!("{who}: the pod namespace changed"));
            }
            let d = scratch_mid.diff(&DirSnapshot::take(scratch.path()));
            if !d.is_empty() {
                failures.push(format!("{who}: scratch files changed: {}", d.join(", ")));
            }
            // Undo the case's own setup so cases stay independent.
            scratch_before.restore_into(scratch.path());
        }
    }
    assert!(tried >= 50, "only {tried} hostile calls in the table");
    for r in &residents {
        let check = r.run("CHECK");
        if !check.success() {
            failures.push(format!(
                "the resident pod is broken after the table\n{check}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {tried} hostile calls misbehaved:\n\n{}",
        failures.len(),
        failures
            .iter()
            .map(|f| clip(f))
            .collect::<Vec<_>>()
            .join("\n\n")
    );
    for r in &residents {
        r.run("DEL").assert_ok_empty();
    }
}

/// Restoring the scratch directory between cases (its symlinks included).
trait RestoreInto {
    fn restore_into(&self, root: &Path);
}

impl RestoreInto for DirSnapshot {
    fn restore_into(&self, root: &Path) {
        let now = DirSnapshot::take(root);
        if &now == self {
            return;
        }
        // Remove what the case added, then rewrite the victim.
        for name in now.file_names() {
            if self.get(&name).is_none() {
                let _ = std::fs::remove_file(root.join(&name));
            }
        }
        let _ = std::fs::remove_dir_all(root.join("dd-links"));
        for (p, b) in self.files() {
            let _ = std::fs::remove_file(root.join(&p));
            std::fs::write(root.join(&p), b).expect("restore scratch");
        }
    }
}

/// A failure message cut to a readable length (some calls carry megabytes of input).
fn clip(s: &str) -> String {
    if s.len() <= 2000 {
        return s.to_string();
    }
    let mut end = 2000;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}
