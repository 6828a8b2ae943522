//! Multi-node test fabrics built only from network namespaces.
//!
//! Layout of [`Fabric::single_l2`]`(n)`: one "switch" namespace holding bridge `br0`; node `i`
//! (0-based) is a namespace whose uplink `eth0` is a veth attached to `br0`, with address
//! `10.99.0.(i+1)/24`, `lo` up and `net.ipv4.ip_forward=1`.
//!
//! [`Fabric::single_l2_dual`]`(n)` is the same segment, dual-stack: node `i` also has
//! `fd99::(i+1)/64` on `eth0` (no DAD) and IPv6 forwarding on. [`Fabric::attach_host`] plugs an
//! extra namespace (an "outside" host, not a node) into a single-segment fabric's switch.
//!
//! Layout of [`Fabric::routed`]`(n)`: the switch namespace holds two bridges, `br-a` and
//! `br-b` (two L2 segments), joined by a router namespace (`eth-a` = `10.99.1.254/24`,
//! `eth-b` = `10.99.2.254/24`, forwarding on). Nodes `0..ceil(n/2)` sit on segment A with
//! `10.99.1.(i+1)/24`, the others on segment B with `10.99.2.(j+1)/24` (`j` counted from the
//! first B node); every node has a default route via its segment's router address. Nodes on
//! different segments are not L2 neighbours, so host-gw style routing must fail across it.
//!
//! Every node has its own directories under a unique temp root: `data_dir` (IPAM data),
//! `subnet_file` and `peers_file` (paths, not created), `run_dir` (created). Dropping the fabric
//! removes the nodes, then the router and switch, then the temp root.

use crate::netns::{Netns, TempDir};
use crate::plugin::{Invocation, Outcome};
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A node of a fabric: its namespace, its uplink address and its private directories.
#[derive(Debug)]
pub struct Node {
    /// 0-based index in the fabric.
    pub index: usize,
    /// The node's network namespace (the "host" a plugin runs on).
    pub ns: Netns,
    /// Name of the uplink device in the node (`eth0`).
    pub uplink: String,
    /// The uplink's IPv4 address.
    pub ip: Ipv4Addr,
    /// The uplink's prefix length.
    pub prefix_len: u8,
    /// The uplink's IPv6 address (`/64`), on a dual-stack fabric.
    pub ip6: Option<Ipv6Addr>,
    /// IPAM data directory (created).
    pub data_dir: PathBuf,
    /// Where the node's subnet file goes (not created).
    pub subnet_file: PathBuf,
    /// Where the node's peers file goes (not created).
    pub peers_file: PathBuf,
    /// A private run directory (created).
    pub run_dir: PathBuf,
}

/// A pod made on a node: its namespace (deleted on drop) and the ADD result.
#[derive(Debug)]
pub struct Pod {
    /// The pod's network namespace.
    pub ns: Netns,
    /// The container ID used for ADD.
    pub container_id: String,
    /// The interface name inside the pod.
    pub ifname: String,
    /// The ADD result as printed by the plugin.
    pub result: Value,
    plugin: PathBuf,
    conf: Value,
    node: PathBuf,
}

/// A set of nodes plus the namespaces wiring them together, and their temp root.
#[derive(Debug)]
pub struct Fabric {
    /// The nodes (dropped first).
    pub nodes: Vec<Node>,
    /// The router namespace of a routed fabric.
    pub router: Option<Netns>,
    /// The switch namespace holding the bridge(s).
    pub switch: Netns,
    root: TempDir,
    hosts: AtomicUsize,
}

impl Fabric {
    /// `n` nodes on one L2 segment (see the module docs for the addresses).
    pub fn single_l2(n: usize) -> Fabric {
        Fabric::one_segment(n, false)
    }

    /// `n` nodes on one dual-stack L2 segment: as [`Fabric::single_l2`], plus `fd99::(i+1)/64`
    /// on each node's uplink and IPv6 forwarding on.
    pub fn single_l2_dual(n: usize) -> Fabric {
        Fabric::one_segment(n, true)
    }

    fn one_segment(n: usize, dual: bool) -> Fabric {
        assert!((1..=200).contains(&n), "single_l2 supports 1..=200 nodes");
        let root = TempDir::new("fabric");
        let switch = Netns::with_tag("sw");
        make_bridge(&switch, "br0");
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let ip = Ipv4Addr::new(10, 99, 0, (i + 1) as u8);
            let mut node = make_node(&root, &switch, "br0", i, ip, None);
            if dual {
                let ip6 = Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, (i + 1) as u16);
                node.ns.set_sysctl("net.ipv6.conf.all.forwarding", "1");
                node.ns
                    .ip(&["addr", "add", &format!("{ip6}/64"), "dev", "eth0", "nodad"]);
                node.ip6 = Some(ip6);
            }
            nodes.push(node);
        }
        Fabric {
            nodes,
            router: None,
            switch,
            root,
            hosts: AtomicUsize::new(0),
        }
    }

    /// `n` nodes (n >= 2) on two L2 segments joined by a router (see the module docs).
    pub fn routed(n: usize) -> Fabric {
        assert!((2..=200).contains(&n), "routed supports 2..=200 nodes");
        let root = TempDir::new("fabric");
        let switch = Netns::with_tag("sw");
        make_bridge(&switch, "br-a");
        make_bridge(&switch, "br-b");
        let router = Netns::with_tag("rt");
        router.lo_up();
        router.set_sysctl("net.ipv4.ip_forward", "1");
        for (side, br, addr) in [
            ("a", "br-a", "10.99.1.254/24"),
            ("b", "br-b", "10.99.2.254/24"),
        ] {
            let sw_end = format!("r{side}");
            let rt_end = format!("eth-{side}");
            veth_into(&switch, &sw_end, &router, &rt_end);
            switch.ip(&["link", "set", &sw_end, "master", br, "up"]);
            router.ip(&["addr", "add", addr, "dev", &rt_end]);
            router.ip(&["link", "set", &rt_end, "up"]);
        }
        let half = n.div_ceil(2);
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let (br, ip, gw) = if i < half {
                (
                    "br-a",
                    Ipv4Addr::new(10, 99, 1, (i + 1) as u8),
                    Ipv4Addr::new(10, 99, 1, 254),
                )
            } else {
                let j = i - half;
                (
                    "br-b",
                    Ipv4Addr::new(10, 99, 2, (j + 1) as u8),
                    Ipv4Addr::new(10, 99, 2, 254),
                )
            };
            nodes.push(make_node(&root, &switch, br, i, ip, Some(gw)));
        }
        Fabric {
            nodes,
            router: Some(router),
            switch,
            root,
            hosts: AtomicUsize::new(0),
        }
    }

    /// The temp root holding every node's directories.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// Plugs a new namespace (a host that is not a node, e.g. "the outside world") into the
    /// segment of a single-segment fabric: uplink `eth0` on the switch's `br0` with the given
    /// addresses (`ip/prefix`; IPv6 without DAD), `lo` up. The caller owns the namespace; the
    /// switch end of its veth goes away with either side.
    pub fn attach_host(&self, tag: &str, cidrs: &[&str]) -> Netns {
        assert!(
            self.router.is_none(),
            "attach_host needs a single-segment fabric"
        );
        let ns = Netns::with_tag(tag);
        ns.lo_up();
        let sw_end = format!("h{}", self.hosts.fetch_add(1, Ordering::Relaxed));
        veth_into(&self.switch, &sw_end, &ns, "eth0");
        self.switch
            .ip(&["link", "set", &sw_end, "master", "br0", "up"]);
        for cidr in cidrs {
            if cidr.contains(':') {
                ns.ip(&["addr", "add", cidr, "dev", "eth0", "nodad"]);
            } else {
                ns.ip(&["addr", "add", cidr, "dev", "eth0"]);
            }
        }
        ns.ip(&["link", "set", "eth0", "up"]);
        ns
    }
}

fn make_bridge(ns: &Netns, name: &str) {
    ns.lo_up();
    // No multicast snooping: IPv6 neighbour discovery is flooded like on a dumb switch.
    ns.ip(&["link", "add", name, "type", "bridge", "mcast_snooping", "0"]);
    ns.ip(&["link", "set", name, "up"]);
}

/// Creates a veth inside `a` (`a_end`) with its peer created directly in `b` (`b_end`):
/// nothing ever exists in the root namespace.
fn veth_into(a: &Netns, a_end: &str, b: &Netns, b_end: &str) {
    a.ip(&[
        "link",
        "add",
        a_end,
        "type",
        "veth",
        "peer",
        "name",
        b_end,
        "netns",
        b.name(),
    ]);
}

fn make_node(
    root: &TempDir,
    switch: &Netns,
    bridge: &str,
    index: usize,
    ip: Ipv4Addr,
    gateway: Option<Ipv4Addr>,
) -> Node {
    let ns = Netns::with_tag(&format!("n{index}"));
    ns.lo_up();
    let sw_end = format!("n{index}");
    veth_into(switch, &sw_end, &ns, "eth0");
    switch.ip(&["link", "set", &sw_end, "master", bridge, "up"]);
    ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
    ns.ip(&["link", "set", "eth0", "up"]);
    ns.set_sysctl("net.ipv4.ip_forward", "1");
    if let Some(gw) = gateway {
        ns.ip(&["route", "add", "default", "via", &gw.to_string()]);
    }
    let dir = root.join(format!("node{index}"));
    let data_dir = dir.join("data");
    let run_dir = dir.join("run");
    for d in [&data_dir, &run_dir] {
        std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("create {}: {e}", d.display()));
    }
    Node {
        index,
        ns,
        uplink: "eth0".to_string(),
        ip,
        prefix_len: 24,
        ip6: None,
        data_dir,
        subnet_file: dir.join("subnet.env"),
        peers_file: dir.join("peers.json"),
        run_dir,
    }
}

impl Node {
    /// A CNI call of `plugin` prepared to run on this node: command, container ID, netns and
    /// ifname set, `conf` on stdin. Add more with the builder, then `.run()`.
    pub fn invoke(
        &self,
        plugin: &Path,
        command: &str,
        conf: &Value,
        container_id: &str,
        netns: &Path,
        ifname: &str,
    ) -> Invocation {
        Invocation::new(plugin)
            .command(command)
            .container_id(container_id)
            .netns(netns)
            .ifname(ifname)
            .stdin_json(conf)
            .on(self.ns.path())
    }

    /// Makes a pod: creates its namespace and runs ADD (ifname `eth0`) on this node; panics
    /// with the plugin's output when ADD fails.
    pub fn add_pod(&self, plugin: &Path, conf: &Value, container_id: &str) -> Pod {
        let (pod, out) = self.try_add_pod(plugin, conf, container_id);
        let result = out.assert_ok();
        Pod { result, ..pod }
    }

    /// Like [`Node::add_pod`] but returns the outcome instead of asserting success (the pod's
    /// `result` is `Value::Null` on failure).
    pub fn try_add_pod(&self, plugin: &Path, conf: &Value, container_id: &str) -> (Pod, Outcome) {
        let ns = Netns::with_tag("pod");
        let out = self
            .invoke(plugin, "ADD", conf, container_id, ns.path(), "eth0")
            .run();
        let result = if out.success() {
            out.stdout_json.clone().unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        let pod = Pod {
            ns,
            container_id: container_id.to_string(),
            ifname: "eth0".to_string(),
            result,
            plugin: plugin.to_path_buf(),
            conf: conf.clone(),
            node: self.ns.path().to_path_buf(),
        };
        (pod, out)
    }
}

impl Pod {
    /// The first IP of the ADD result (any CNI version's shape).
    pub fn ip(&self) -> Option<IpAddr> {
        result_ips(&self.result).into_iter().next()
    }

    /// The config the pod was added with.
    pub fn conf(&self) -> &Value {
        &self.conf
    }

    /// Runs `command` (DEL, CHECK) for this pod on its node with the same config (plus
    /// `prevResult` for CHECK).
    pub fn run(&self, command: &str) -> Outcome {
        let mut conf = self.conf.clone();
        if command == "CHECK"
            && let Some(obj) = conf.as_object_mut()
        {
            obj.insert("prevResult".to_string(), self.result.clone());
        }
        self.call(command, &conf)
    }

    /// Runs `command` for this pod (same container ID, netns path, ifname, node and plugin)
    /// with `conf` as given on stdin.
    pub fn call(&self, command: &str, conf: &Value) -> Outcome {
        Invocation::new(&self.plugin)
            .command(command)
            .container_id(&self.container_id)
            .netns(self.ns.path())
            .ifname(&self.ifname)
            .stdin_json(conf)
            .on(&self.node)
            .run()
    }
}

/// The addresses (without prefix) of a CNI result of any version: `ips[].address` (0.3.0+)
/// or `ip4.ip` / `ip6.ip` (0.1.0, 0.2.0).
pub fn result_ips(result: &Value) -> Vec<IpAddr> {
    let mut cidrs: Vec<&str> = Vec::new();
    if let Some(ips) = result.get("ips").and_then(Value::as_array) {
        cidrs.extend(
            ips.iter()
                .filter_map(|i| i.get("address").and_then(Value::as_str)),
        );
    }
    for k in ["ip4", "ip6"] {
        if let Some(s) = result
            .get(k)
            .and_then(|v| v.get("ip"))
            .and_then(Value::as_str)
        {
            cidrs.push(s);
        }
    }
    cidrs
        .iter()
        .filter_map(|c| c.split('/').next()?.parse().ok())
        .collect()
}

/// True when `ip` does *not* answer one `ping -c1 -W1` from inside `from` (for paths that must
/// be broken; one attempt is enough there, and it bounds the wait at about a second).
pub fn no_reply(from: &Netns, ip: IpAddr) -> bool {
    let target = ip.to_string();
    !from
        .exec(&["ping", "-n", "-q", "-c1", "-W1", &target])
        .status
        .success()
}

/// Pings `ip` from inside `from`: up to 3 attempts of `ping -c1 -W1`; true on the first reply.
pub fn ping(from: &Netns, ip: IpAddr) -> bool {
    let target = ip.to_string();
    (0..3).any(|_| {
        from.exec(&["ping", "-n", "-q", "-c1", "-W1", &target])
            .status
            .success()
    })
}
