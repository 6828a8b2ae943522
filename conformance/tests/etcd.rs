//! Black-box conformance of twilld's etcd mode (issue 13): flannel-compatible subnet leases in a
//! real etcd (Debian's etcd-server 3.4), each member in its own namespace on the nodes' segment,
//! and twilld running inside every node's namespace with its own files:
//!
//! `twilld run --etcd-endpoints <members> --public-ip <node ip> --subnet-file <node>/subnet.env
//!  --view-file <node>/peers.json --cni-conf-dir <node>/net.d --run-dir <node>/run`
//!
//! Each node's conf dir holds one twill network whose `subnetFile` and `peersFile` are the files
//! twilld writes, so twilld reconciles it on every change of the leases. What is expected is
//! computed from the leases read back from etcd (the subnets are chosen at random) and checked
//! against the kernel state of every node and real pings. The first tests prove the etcd harness
//! itself. Every wait is bounded, and everything is removed on drop, also on failure.

use conformance::etcd::{
    Creds, DEFAULT_PREFIX, EtcdCluster, SubnetLease, b64encode, flannel_config,
    flannel_vxlan_lease, lease_of, node_conf, read_env, subnet_leases, twilld_args,
};
use conformance::hostgw::{TWILL_PROTO, peer_routes};
use conformance::twilld::{Daemon, wait_until, write_conf};
use conformance::vxlan::{DEV4, fdb_of};
use conformance::{Fabric, Netns, Node, Pod, no_reply, ping, unique_name};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

/// The cluster network of every test's flannel config.
const NETWORK: &str = "10.244.0.0/16";
/// The network name in every node's conf dir.
const NET: &str = "pods";
/// How soon the other nodes must hold a joining node's entries (the issue's target).
const WITHIN: Duration = Duration::from_secs(1);
/// How long a daemon may take from its start to a leased subnet with its files written (debug
/// binaries on a loaded 2-core machine).
const LEASE_WAIT: Duration = Duration::from_secs(10);
/// How long the nodes may take to converge on a view they all have.
const CONVERGE: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// The harness: a real etcd cluster in namespaces
// ---------------------------------------------------------------------------------------------

fn stdout_of(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// etcd's JSON gateway (what twilld's client speaks) asked from `from` with curl: the range of
/// `key` at `endpoint`, with `tls_args` for curl; the command's output.
fn gateway_range(
    from: &Netns,
    endpoint: &str,
    key: &str,
    tls_args: &[&str],
) -> std::process::Output {
    let url = format!("{endpoint}/v3/kv/range");
    let body = format!(r#"{{"key":"{}"}}"#, b64encode(key.as_bytes()));
    let mut cmd = vec!["curl", "-sS", "--fail", "--max-time", "5"];
    cmd.extend_from_slice(tls_args);
    cmd.extend(["-X", "POST", "-d", &body, &url]);
    from.exec(&cmd)
}

/// Harness: three members form one cluster; a key written through it is read from every
/// member, also over etcd's JSON gateway from a node's namespace (what twilld's client speaks);
/// a key put with a lease is bound to it.
#[test]
fn a_three_member_cluster_forms_and_every_member_answers_reads_and_the_json_gateway() {
    let fab = Fabric::single_l2(1);
    let etcd = EtcdCluster::start(&fab, 3);
    let members = etcd.etcdctl(Creds::ClientCert, &["member", "list", "-w", "json"]);
    let list: Value = serde_json::from_slice(&members.stdout).expect("member list JSON");
    assert_eq!(
        list["members"].as_array().map(Vec::len),
        Some(3),
        "three members: {list}"
    );
    etcd.put("/twc/self-test", "forty-two");
    for k in 0..3 {
        let out = etcd.etcdctl_on(
            &etcd.endpoint(k),
            Creds::ClientCert,
            &["get", "--print-value-only", "/twc/self-test"],
        );
        assert!(out.status.success(), "member m{k}: {}", stdout_of(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "forty-two",
            "member m{k} answers the key written through the cluster"
        );
        // A node reaches every member by IP, over the gateway twilld's client uses.
        let out = gateway_range(&fab.node(0).ns, &etcd.endpoint(k), "/twc/self-test", &[]);
        let text = stdout_of(&out);
        assert!(out.status.success(), "node 0 -> m{k} gateway: {text}");
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("gateway answer is not JSON ({e}): {text}"));
        assert_eq!(
            v["kvs"][0]["value"].as_str(),
            Some(b64encode(b"forty-two").as_str()),
            "gateway of m{k}: {text}"
        );
    }
    let id = etcd.put_with_lease("/twc/leased", "x", 60);
    let kv = etcd.get("/twc/leased").expect("the leased key exists");
    assert_eq!(kv.lease, id, "the key is bound to the lease granted");
    let ttl = etcd.lease_ttl(id).expect("the lease exists");
    assert!((50..=60).contains(&ttl), "lease TTL {ttl}");
    assert!(etcd.delete("/twc/leased"));
    assert_eq!(etcd.get("/twc/leased"), None);
    assert!(!etcd.delete("/twc/leased"), "a second delete finds nothing");
}

/// Harness: with the leader killed, every key and lease is still there, another member leads,
/// writes succeed, and the killed member, started again, serves what was written meanwhile.
#[test]
fn killing_the_leader_loses_no_key_writes_still_succeed_and_a_restarted_member_catches_up() {
    let fab = Fabric::single_l2(1);
    let mut etcd = EtcdCluster::start(&fab, 3);
    for n in 0..20 {
        etcd.put(&format!("/twc/keys/{n:02}"), &format!("value {n}"));
    }
    let id = etcd.put_with_lease("/twc/keys/leased", "lease", 600);
    let before = etcd.list("/twc/keys/");
    assert_eq!(before.len(), 21);
    let leader = etcd.leader();
    etcd.kill(leader);
    etcd.wait_healthy();
    let after = etcd.list("/twc/keys/");
    assert_eq!(after, before, "every key survives the loss of the leader");
    assert!(etcd.lease_ttl(id).is_some(), "the lease survives it too");
    let new_leader = etcd.leader();
    assert_ne!(new_leader, leader, "another member leads");
    etcd.put("/twc/keys/written-after", "yes");
    etcd.restart(leader);
    let out = etcd.etcdctl_on(
        &etcd.endpoint(leader),
        Creds::ClientCert,
        &["get", "--print-value-only", "/twc/keys/written-after"],
    );
    assert!(out.status.success(), "{}", stdout_of(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "yes",
        "the restarted member serves what was written while it was down"
    );
}

/// Harness: a TLS cluster with `--client-cert-auth` refuses etcdctl and curl without a client
/// certificate (and plain HTTP), and serves both with the certificate made at test time.
#[test]
fn the_tls_cluster_refuses_a_client_without_a_certificate_and_accepts_one_with_it() {
    let fab = Fabric::single_l2(1);
    let etcd = EtcdCluster::start_tls(&fab, 1);
    let tls = etcd.tls().expect("TLS cluster").clone();
    let refused = etcd.etcdctl(Creds::NoClientCert, &["put", "/twc/tls", "anonymous"]);
    assert!(
        !refused.status.success(),
        "etcdctl without a client certificate must be refused: {}",
        stdout_of(&refused)
    );
    assert_eq!(
        etcd.get("/twc/tls"),
        None,
        "nothing was written without a certificate"
    );
    etcd.put("/twc/tls", "certified");
    assert_eq!(
        etcd.get("/twc/tls").map(|kv| kv.value),
        Some("certified".into())
    );

    let node = &fab.node(0).ns;
    let ca = tls.ca.display().to_string();
    let (cert, key) = (
        tls.client_cert.display().to_string(),
        tls.client_key.display().to_string(),
    );
    let out = gateway_range(node, &etcd.endpoint(0), "/twc/tls", &["--cacert", &ca]);
    assert!(
        !out.status.success(),
        "curl without a client certificate must be refused: {}",
        stdout_of(&out)
    );
    let out = gateway_range(
        node,
        &etcd.endpoint(0),
        "/twc/tls",
        &["--cacert", &ca, "--cert", &cert, "--key", &key],
    );
    assert!(
        out.status.success(),
        "curl with the client certificate: {}",
        stdout_of(&out)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("gateway JSON");
    assert_eq!(
        v["kvs"][0]["value"].as_str(),
        Some(b64encode(b"certified").as_str())
    );
    let out = gateway_range(
        node,
        &etcd.endpoint(0).replace("https", "http"),
        "/twc/tls",
        &[],
    );
    assert!(
        !out.status.success(),
        "plain HTTP is refused: {}",
        stdout_of(&out)
    );
}

// ---------------------------------------------------------------------------------------------
// twilld in etcd mode
// ---------------------------------------------------------------------------------------------

/// Nodes on one segment with an etcd cluster beside them, flannel's config in etcd, one twill
/// network per node's conf dir, and a daemon slot per node. Daemons stop first on drop.
struct Env {
    daemons: Vec<Option<Daemon>>,
    etcd: EtcdCluster,
    fab: Fabric,
    backend: &'static str,
    prefix: String,
}

impl Env {
    /// `nodes` nodes and `members` etcd members; flannel's config `{"Network": NETWORK,
    /// "Backend": {"Type": backend}}` at the default prefix; every node's conf dir holds the
    /// twill network of that backend (`vxlan` or `host-gw` -> `bridge-host-gw`), or nothing
    /// when `backend` is empty.
    fn new(nodes: usize, members: usize, backend: &'static str, tls: bool) -> Env {
        Env::at_prefix(nodes, members, backend, tls, DEFAULT_PREFIX)
    }

    /// [`Env::new`] with flannel's data under `prefix` (twilld gets `--etcd-prefix` unless it
    /// is the default).
    fn at_prefix(
        nodes: usize,
        members: usize,
        backend: &'static str,
        tls: bool,
        prefix: &str,
    ) -> Env {
        let fab = Fabric::single_l2(nodes);
        let etcd = if tls {
            EtcdCluster::start_tls(&fab, members)
        } else {
            EtcdCluster::start(&fab, members)
        };
        let flannel_backend = if backend.is_empty() { "vxlan" } else { backend };
        etcd.put(
            &format!("{prefix}/config"),
            &flannel_config(NETWORK, flannel_backend),
        );
        for node in &fab.nodes {
            conformance::twilld::conf_dir(node);
            if !backend.is_empty() {
                write_conf(
                    node,
                    "10-pods.conf",
                    &node_conf(NET, plugin_type(backend), node),
                );
            }
        }
        Env {
            daemons: (0..nodes).map(|_| None).collect(),
            etcd,
            fab,
            backend,
            prefix: prefix.to_string(),
        }
    }

    /// Every subnet lease in etcd now.
    fn leases(&self) -> Vec<SubnetLease> {
        subnet_leases(&self.etcd, &self.prefix)
    }

    fn node(&self, i: usize) -> &Node {
        self.fab.node(i)
    }

    /// Starts twilld in etcd mode on node `i` (with `extra` arguments), not waiting.
    fn start(&mut self, i: usize, extra: &[&str]) {
        assert!(self.daemons[i].is_none(), "node {i}: twilld already runs");
        let mut extra = extra.to_vec();
        if self.prefix != DEFAULT_PREFIX {
            extra.extend(["--etcd-prefix", self.prefix.as_str()]);
        }
        let args = twilld_args(&self.etcd, self.node(i), &extra);
        self.daemons[i] = Some(Daemon::spawn_with(self.node(i), &args));
    }

    fn daemon(&self, i: usize) -> &Daemon {
        self.daemons[i].as_ref().expect("twilld runs on that node")
    }

    fn log(&self, i: usize) -> String {
        self.daemons[i]
            .as_ref()
            .map(Daemon::log)
            .unwrap_or_else(|| "(no twilld on that node)".into())
    }

    /// Waits (bounded by [`LEASE_WAIT`]) until node `i`'s twilld wrote its subnet file and
    /// view file and etcd holds a lease with its PublicIP; returns that lease, checking the
    /// subnet file names its subnet. A daemon that exits meanwhile fails the test at once.
    fn wait_leased(&mut self, i: usize) -> SubnetLease {
        let deadline = Instant::now() + LEASE_WAIT;
        let ip = self.fab.nodes[i].ip;
        let mut leases = Vec::new();
        loop {
            let node = &self.fab.nodes[i];
            if node.subnet_file.exists() && node.peers_file.exists() {
                leases = self.leases();
                if let Some(lease) = lease_of(&leases, ip) {
                    let env = read_env(&node.subnet_file).expect("subnet file");
                    assert_eq!(
                        env.get("FLANNEL_SUBNET").map(String::as_str),
                        Some(gateway_cidr(&lease).as_str()),
                        "node {i}: the subnet file names the subnet of its lease {}",
                        lease.key
                    );
                    return lease;
                }
            }
            let exited = self.daemons[i]
                .as_mut()
                .and_then(|d| d.wait_exit(Duration::ZERO));
            if let Some(status) = exited {
                panic!(
                    "node {i} ({ip}): twilld exited ({status}) before leasing a subnet and \
                     writing its subnet and view files; its log:\n{}",
                    self.log(i)
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "node {i} ({ip}): within {LEASE_WAIT:?} twilld did not lease a subnet \
                     (etcd: {leases:#?}) and write its subnet file ({}) and view file ({}); \
                     its log:\n{}",
                    exists(&self.fab.nodes[i].subnet_file),
                    exists(&self.fab.nodes[i].peers_file),
                    self.log(i)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What node `i` must hold for the leases `leases` (all but its own), read from the same
    /// kernel objects as [`Env::overlay`].
    fn want(&self, i: usize, leases: &[SubnetLease]) -> Overlay {
        let me = IpAddr::V4(self.node(i).ip);
        let mut o = Overlay::default();
        for l in leases.iter().filter(|l| l.public_ip != me) {
            let cidr = l.subnet.to_string();
            if self.backend == "host-gw" {
                o.routes
                    .insert((cidr, l.public_ip.to_string(), String::new()));
                continue;
            }
            let vtep = IpAddr::V4(l.subnet.network());
            let mac = l
                .vtep_mac
                .clone()
                .unwrap_or_else(|| panic!("vxlan lease without VtepMAC: {l:?}"));
            o.fdb.insert((mac.clone(), l.public_ip));
            o.neigh.insert((vtep, mac));
            o.routes.insert((cidr, vtep.to_string(), DEV4.to_string()));
        }
        o
    }

    /// The cross-node state node `i` holds now.
    fn overlay(&self, i: usize) -> Overlay {
        let ns = &self.node(i).ns;
        if self.backend == "host-gw" {
            return Overlay {
                routes: peer_routes(ns)
                    .into_iter()
                    .map(|(d, g)| (d, g, String::new()))
                    .collect(),
                ..Overlay::default()
            };
        }
        Overlay {
            fdb: fdb_of(ns, DEV4)
                .into_iter()
                .map(|(mac, dst, _)| (mac, dst))
                .collect(),
            neigh: ns
                .neighbours()
                .into_iter()
                .filter(|n| n.dev == DEV4 && n.state.iter().any(|s| s == "PERMANENT"))
                .map(|n| (n.dst, n.lladdr.unwrap_or_default()))
                .collect(),
            routes: ns
                .main_routes()
                .into_iter()
                .filter(|r| r.protocol.as_deref() == Some(TWILL_PROTO))
                .map(|r| {
                    let gw = r.gateway.map(|g| g.to_string()).unwrap_or_default();
                    (r.dst, gw, r.dev.unwrap_or_default())
                })
                .collect(),
        }
    }

    /// Waits (bounded by `limit`) until node `i` holds exactly the entries of `leases`; how
    /// long it took. Panics saying what it holds and what its log says otherwise.
    fn wait_overlay(&self, i: usize, leases: &[SubnetLease], limit: Duration) -> Duration {
        let t0 = Instant::now();
        let want = self.want(i, leases);
        let ok = wait_until(limit, || self.overlay(i) == want);
        let took = t0.elapsed();
        if !ok {
            panic!(
                "node {i} ({}): cross-node state not as the leases say within {limit:?}\n\
                 want {want:#?}\nhave {:#?}\nleases {leases:#?}\ntwilld log:\n{}",
                self.node(i).ip,
                self.overlay(i),
                self.log(i)
            );
        }
        took
    }

    /// Asserts node `i`'s view file lists exactly `leases` as {nodeIP, podCIDR, vtepMAC}.
    fn assert_view(&self, i: usize, leases: &[SubnetLease]) {
        let path = &self.node(i).peers_file;
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("node {i}: read {}: {e}", path.display()));
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("node {i}: view file is not JSON ({e}): {text}"));
        let got: BTreeSet<(String, String, Option<String>)> = v
            .as_array()
            .unwrap_or_else(|| panic!("node {i}: view file is not a JSON list: {text}"))
            .iter()
            .map(|p| {
                (
                    p["nodeIP"].as_str().unwrap_or("").to_string(),
                    p["podCIDR"].as_str().unwrap_or("").to_string(),
                    p.get("vtepMAC")
                        .and_then(Value::as_str)
                        .map(str::to_lowercase),
                )
            })
            .collect();
        let want: BTreeSet<(String, String, Option<String>)> = leases
            .iter()
            .map(|l| {
                (
                    l.public_ip.to_string(),
                    l.subnet.to_string(),
                    l.vtep_mac.clone(),
                )
            })
            .collect();
        assert_eq!(
            got, want,
            "node {i}: the view file lists every lease, its own included"
        );
    }

    /// Waits (bounded by [`CONVERGE`]) until every running node holds the entries of the
    /// current leases; the leases.
    fn converge(&self) -> Vec<SubnetLease> {
        self.converge_within(CONVERGE)
    }

    /// [`Env::converge`] bounded by `limit`.
    fn converge_within(&self, limit: Duration) -> Vec<SubnetLease> {
        let leases = self.leases();
        for i in (0..self.daemons.len()).filter(|i| self.daemons[*i].is_some()) {
            self.wait_overlay(i, &leases, limit);
        }
        leases
    }

    /// A pod of the node's network on node `i`.
    fn add_pod(&self, i: usize) -> Pod {
        let node = self.node(i);
        let conf = node_conf(NET, plugin_type(self.backend), node);
        node.add_pod(
            &conformance::twill_bin(plugin_type(self.backend)),
            &conf,
            &unique_name("c"),
        )
    }
}

/// The cross-node state of a node: FDB (MAC, remote), permanent neighbours on the device
/// (address, MAC), twill routes (dst, gateway, device; no device for host-gw).
#[derive(Debug, Default, PartialEq, Eq)]
struct Overlay {
    fdb: BTreeSet<(String, IpAddr)>,
    neigh: BTreeSet<(IpAddr, String)>,
    routes: BTreeSet<(String, String, String)>,
}

fn exists(p: &std::path::Path) -> &'static str {
    if p.exists() { "exists" } else { "missing" }
}

fn plugin_type(backend: &str) -> &'static str {
    match backend {
        "host-gw" => "bridge-host-gw",
        _ => "vxlan",
    }
}

/// flannel's FLANNEL_SUBNET for a lease: the subnet's first address with its prefix.
fn gateway_cidr(l: &SubnetLease) -> String {
    let gw = Ipv4Addr::from(u32::from(l.subnet.network()) + 1);
    format!("{gw}/{}", l.subnet.prefix())
}

fn first_ip(p: &Pod) -> IpAddr {
    p.ip().unwrap_or_else(|| panic!("no IP in {}", p.result))
}

/// Asserts a lease is in flannel's format for a subnet of [`NETWORK`] as flannel picks them.
fn assert_flannel_lease(l: &SubnetLease, backend: &str) {
    let cluster: ipnetwork::Ipv4Network = NETWORK.parse().unwrap();
    assert_eq!(l.subnet.prefix(), 24, "SubnetLen defaults to 24: {}", l.key);
    assert!(
        cluster.contains(l.subnet.network()),
        "{} outside {NETWORK}",
        l.key
    );
    assert_ne!(
        l.subnet.network(),
        cluster.network(),
        "the first subnet is skipped, as flannel does: {}",
        l.key
    );
    assert_eq!(
        l.backend_type, backend,
        "BackendType of {}: {}",
        l.key, l.value
    );
    if backend == "vxlan" {
        assert_eq!(l.vni, Some(1), "BackendData.VNI of {}: {}", l.key, l.value);
        let mac = l.vtep_mac.as_deref().unwrap_or("");
        assert_eq!(
            mac.len(),
            17,
            "BackendData.VtepMAC of {}: {}",
            l.key,
            l.value
        );
    }
    assert_ne!(
        l.lease, 0,
        "{} is bound to an etcd lease (not a reservation)",
        l.key
    );
}

/// Three nodes lease three subnets in flannel's format (VNI 1, their device's MAC, a 24 h etcd
/// lease), write flannel's subnet file and a view of every lease, hold each other's FDB entry,
/// neighbour and route with no pod yet, and then every pod pings every other pod.
#[test]
fn three_nodes_lease_distinct_subnets_write_flannels_files_and_every_pod_reaches_every_other() {
    let mut env = Env::new(3, 3, "vxlan", false);
    for i in 0..3 {
        env.start(i, &[]);
    }
    let mine: Vec<SubnetLease> = (0..3).map(|i| env.wait_leased(i)).collect();
    let subnets: BTreeSet<_> = mine.iter().map(|l| l.subnet).collect();
    assert_eq!(subnets.len(), 3, "one subnet per node: {mine:#?}");
    let leases = env.converge();
    assert_eq!(leases.len(), 3, "exactly one lease per node: {leases:#?}");
    for (i, l) in mine.iter().enumerate() {
        let node = env.node(i);
        assert_flannel_lease(l, "vxlan");
        let dev = node
            .ns
            .link(DEV4)
            .unwrap_or_else(|| panic!("node {i}: no {DEV4} with no pod ADD yet"));
        assert_eq!(
            dev.mac.as_deref(),
            l.vtep_mac.as_deref(),
            "node {i}: the lease publishes the MAC of its VXLAN device"
        );
        let ttl = env.etcd.lease_ttl(l.lease).expect("the etcd lease exists");
        assert!(
            (86_000..=86_400).contains(&ttl),
            "node {i}: default --subnet-lease-ttl is 24 h, etcd says {ttl} s"
        );
        let subnet_env = read_env(&node.subnet_file).unwrap();
        for (k, v) in [
            ("FLANNEL_NETWORK", NETWORK.to_string()),
            ("FLANNEL_SUBNET", gateway_cidr(l)),
            // flannel writes the pod MTU: the VXLAN device's, underlay 1500 - 50.
            ("FLANNEL_MTU", "1450".to_string()),
            ("FLANNEL_IPMASQ", "false".to_string()),
        ] {
            assert_eq!(
                subnet_env.get(k),
                Some(&v),
                "node {i}: {k} in the subnet file: {subnet_env:?}"
            );
        }
        env.assert_view(i, &leases);
    }
    let pods: Vec<(usize, Pod)> = (0..6).map(|k| (k % 3, env.add_pod(k % 3))).collect();
    for (i, p) in &pods {
        assert!(
            mine[*i].subnet.contains(match first_ip(p) {
                IpAddr::V4(ip) => ip,
                other => panic!("IPv6 pod address {other}"),
            }),
            "a pod of node {i} gets an address of the node's leased subnet: {}",
            p.result
        );
        assert_eq!(p.ns.link("eth0").map(|l| l.mtu), Some(1450), "pod MTU");
    }
    for (i, a) in &pods {
        for (j, b) in pods
            .iter()
            .filter(|(_, b)| b.container_id != a.container_id)
        {
            let to = first_ip(b);
            assert!(
                ping(&a.ns, to),
                "pod {} on node {i} cannot reach pod {to} on node {j}",
                first_ip(a)
            );
        }
    }
}

/// A fourth node's twilld starts: within a second of its lease, the other nodes hold its FDB
/// entry, neighbour and route, and a pod on node 0 reaches its VXLAN address and then its pod,
/// with no pod ADD on node 0.
#[test]
fn a_joining_node_is_in_every_other_nodes_fdb_within_a_second_and_reachable_without_a_pod_add() {
    let mut env = Env::new(4, 3, "vxlan", false);
    for i in 0..3 {
        env.start(i, &[]);
    }
    for i in 0..3 {
        env.wait_leased(i);
    }
    env.converge();
    let p0 = env.add_pod(0);

    let t0 = Instant::now();
    env.start(3, &[]);
    let joined = env.wait_leased(3);
    let leased_after = t0.elapsed();
    let leases = env.leases();
    assert_eq!(leases.len(), 4, "{leases:#?}");
    let t_lease = Instant::now();
    for i in 0..3 {
        env.wait_overlay(i, &leases, WITHIN);
    }
    let took = t_lease.elapsed();
    assert!(
        took <= WITHIN + Duration::from_millis(200),
        "the others held the joining node's FDB entry, neighbour and route {took:?} after its \
         lease was written (target {WITHIN:?}; the lease itself took {leased_after:?})"
    );
    env.wait_overlay(3, &leases, CONVERGE);
    for i in 0..4 {
        env.assert_view(i, &leases);
    }
    // The new node's VTEP address answers a pod of an existing node: no pod ADD anywhere.
    let vtep = IpAddr::V4(joined.subnet.network());
    assert!(
        ping(&p0.ns, vtep),
        "a pod on node 0 cannot reach the joining node's VXLAN address {vtep}"
    );
    // A pod made on the new node now is reached with no ADD on node 0.
    let p3 = env.add_pod(3);
    assert!(
        ping(&p0.ns, first_ip(&p3)),
        "pod on node 0 -> pod on the joining node"
    );
    assert!(
        ping(&p3.ns, first_ip(&p0)),
        "pod on the joining node -> pod on node 0"
    );
}

/// A running twilld renews a 3 s lease; killed (SIGKILL), its lease expires and its entries
/// vanish from the others; restarted, it gets the same subnet and the same subnet file. SIGTERM
/// keeps the lease, and a restart without its files reuses it (the lease holding its PublicIP).
#[test]
fn an_expired_lease_leaves_the_others_and_a_restart_or_a_stop_keeps_the_nodes_subnet() {
    let mut env = Env::new(3, 1, "vxlan", false);
    for i in 0..2 {
        env.start(i, &[]);
    }
    env.start(2, &["--subnet-lease-ttl", "3"]);
    let mine: Vec<SubnetLease> = (0..3).map(|i| env.wait_leased(i)).collect();
    let all = env.converge();
    let ttl = env
        .etcd
        .lease_ttl(mine[2].lease)
        .expect("node 2's etcd lease");
    assert!(ttl <= 3, "--subnet-lease-ttl 3: etcd says {ttl} s");
    let p0 = env.add_pod(0);
    // Renewed: still there after more than its TTL.
    std::thread::sleep(Duration::from_secs(5));
    let still = lease_of(&env.leases(), env.node(2).ip);
    assert_eq!(
        still.as_ref().map(|l| &l.key),
        Some(&mine[2].key),
        "a running twilld renews its 3 s lease; log:\n{}",
        env.log(2)
    );

    // SIGKILL: nobody renews; the lease expires and the others drop the node.
    let subnet_file_2 = std::fs::read(&env.node(2).subnet_file).unwrap();
    env.daemon(2).signal(Signal::SIGKILL);
    env.daemons[2] = None;
    let gone = wait_until(Duration::from_secs(12), || {
        env.etcd.get(&mine[2].key).is_none()
    });
    assert!(
        gone,
        "node 2's key outlived its 3 s lease by far: {:?}",
        env.etcd.get(&mine[2].key)
    );
    let left = env.leases();
    assert_eq!(left.len(), 2);
    for i in 0..2 {
        env.wait_overlay(i, &left, CONVERGE);
        env.assert_view(i, &left);
    }
    assert!(
        no_reply(&p0.ns, IpAddr::V4(mine[2].subnet.network())),
        "the expired node is no longer reached through the overlay"
    );

    // It restarts: the subnet of its subnet file is free, so it gets it again (its view file
    // is removed, so that a file written again proves the restarted daemon's work).
    std::fs::remove_file(&env.node(2).peers_file).unwrap();
    env.start(2, &["--subnet-lease-ttl", "3"]);
    let again = env.wait_leased(2);
    assert_eq!(
        again.key, mine[2].key,
        "the restarted node reclaims its subnet"
    );
    assert_eq!(
        std::fs::read(&env.node(2).subnet_file).unwrap(),
        subnet_file_2,
        "the same subnet file"
    );
    let back = env.converge();
    let keys = |ls: &[SubnetLease]| -> Vec<(String, IpAddr)> {
        ls.iter().map(|l| (l.key.clone(), l.public_ip)).collect()
    };
    assert_eq!(
        keys(&back),
        keys(&all),
        "the cluster is as before the expiry"
    );
    assert!(
        ping(&p0.ns, IpAddr::V4(again.subnet.network())),
        "reachable again"
    );

    // SIGTERM keeps the lease: the key and its etcd lease stay, a restart reuses them.
    env.daemon(1).signal(Signal::SIGTERM);
    let status = env.daemons[1]
        .as_mut()
        .unwrap()
        .wait_exit(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM: twilld exits 0 at once ({status:?}); log:\n{}",
        env.log(1)
    );
    let kept = env.etcd.get(&mine[1].key).expect("SIGTERM keeps the lease");
    assert_eq!(
        kept.lease, mine[1].lease,
        "the same etcd lease, not revoked"
    );
    assert!(
        env.etcd.lease_ttl(kept.lease).is_some(),
        "the etcd lease still lives"
    );
    env.daemons[1] = None;
    // Without its files, only the lease holding its PublicIP can give it the same subnet.
    std::fs::remove_file(&env.node(1).peers_file).unwrap();
    std::fs::remove_file(&env.node(1).subnet_file).unwrap();
    env.start(1, &[]);
    let reused = env.wait_leased(1);
    assert_eq!(
        reused.key, mine[1].key,
        "a restart reuses the lease holding its PublicIP"
    );
    assert_eq!(env.leases().len(), 3, "no second lease");
}

/// The etcd leader is killed mid-test: every lease survives, pods still reach each other, every
/// twilld keeps running, a new node still leases and joins, and the member comes back.
#[test]
fn killing_the_etcd_leader_loses_no_lease_and_a_new_node_still_joins() {
    let mut env = Env::new(4, 3, "vxlan", false);
    for i in 0..3 {
        env.start(i, &[]);
    }
    for i in 0..3 {
        env.wait_leased(i);
    }
    let before = env.converge();
    let pods: Vec<Pod> = (0..3).map(|i| env.add_pod(i)).collect();
    let leader = env.etcd.leader();
    env.etcd.kill(leader);
    env.etcd.wait_healthy();
    let after = env.leases();
    assert_eq!(
        after, before,
        "every lease survives the loss of the etcd leader"
    );
    for a in &pods {
        for b in pods.iter().filter(|b| b.container_id != a.container_id) {
            assert!(
                ping(&a.ns, first_ip(b)),
                "{} -> {} with etcd member m{leader} dead",
                first_ip(a),
                first_ip(b)
            );
        }
    }
    env.start(3, &[]);
    let joined = env.wait_leased(3);
    assert_flannel_lease(&joined, "vxlan");
    // Nodes whose member died reconnect to another one first.
    let leases = env.converge_within(2 * CONVERGE);
    assert_eq!(leases.len(), 4, "{leases:#?}");
    let p3 = env.add_pod(3);
    assert!(
        ping(&pods[0].ns, first_ip(&p3)),
        "the node that joined while a member was dead is reachable"
    );
    for i in 0..4 {
        let exited = env.daemons[i]
            .as_mut()
            .and_then(|d| d.wait_exit(Duration::ZERO));
        assert_eq!(
            exited,
            None,
            "node {i}: twilld survives the loss of an etcd member; log:\n{}",
            env.log(i)
        );
    }
    env.etcd.restart(leader);
    assert_eq!(env.leases(), leases);
}

/// twilld given `--etcd-cafile/--etcd-certfile/--etcd-keyfile` leases and peers through a TLS
/// cluster that demands client certificates; pods reach each other.
#[test]
fn twilld_leases_and_peers_over_tls_with_client_certificates() {
    let mut env = Env::new(2, 1, "vxlan", true);
    for i in 0..2 {
        env.start(i, &[]);
    }
    for i in 0..2 {
        env.wait_leased(i);
    }
    let leases = env.converge();
    assert_eq!(leases.len(), 2);
    let (a, b) = (env.add_pod(0), env.add_pod(1));
    assert!(
        ping(&a.ns, first_ip(&b)),
        "pods reach each other over a TLS-leased overlay"
    );
}

/// Fifty twilld processes (one per node namespace, empty conf dirs) started at once in one /16
/// end with fifty distinct subnets, one per PublicIP, each named by its node's subnet file.
#[test]
fn fifty_racing_claimers_in_one_slash_16_end_with_fifty_distinct_subnets() {
    const N: usize = 50;
    let mut env = Env::new(N, 1, "", false);
    for i in 0..N {
        env.start(i, &[]);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let missing: Vec<usize> = (0..N)
            .filter(|i| !env.node(*i).subnet_file.exists())
            .collect();
        let Some(&first) = missing.first() else {
            break;
        };
        for &i in &missing {
            let exited = env.daemons[i]
                .as_mut()
                .and_then(|d| d.wait_exit(Duration::ZERO));
            if let Some(status) = exited {
                panic!(
                    "claimer {i} ({}) exited ({status}) without a subnet file; its log:\n{}",
                    env.node(i).ip,
                    env.log(i)
                );
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} of {N} claimers wrote no subnet file within 60 s: {missing:?}; claimer \
             {first}'s log:\n{}",
            missing.len(),
            env.log(first)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let leases = env.leases();
    assert_eq!(leases.len(), N, "one key per claimer: {leases:#?}");
    let subnets: BTreeSet<_> = leases.iter().map(|l| l.subnet).collect();
    assert_eq!(subnets.len(), N, "50 distinct subnets");
    for (i, node) in env.fab.nodes.iter().enumerate() {
        let l = lease_of(&leases, node.ip)
            .unwrap_or_else(|| panic!("node {i} ({}) holds no lease", node.ip));
        assert_flannel_lease(&l, "vxlan");
        let env_file = read_env(&node.subnet_file).unwrap();
        assert_eq!(
            env_file.get("FLANNEL_SUBNET"),
            Some(&gateway_cidr(&l)),
            "node {i}: its subnet file names its own lease"
        );
    }
}

/// What flanneld sets up on a node with the vxlan backend, made by hand: `flannel.1` (VNI 1,
/// port 8472, learning off) with `mac` and the subnet's network address, and per twill lease the
/// neighbour, FDB entry and onlink route flanneld would write.
fn flanneld_by_hand(node: &Node, subnet: Ipv4Addr, mac: &str, peers: &[SubnetLease]) {
    let ns = &node.ns;
    ns.ip(&[
        "link",
        "add",
        "flannel.1",
        "address",
        mac,
        "type",
        "vxlan",
        "id",
        "1",
        "local",
        &node.ip.to_string(),
        "dev",
        "eth0",
        "dstport",
        "8472",
        "nolearning",
    ]);
    ns.ip(&["link", "set", "flannel.1", "mtu", "1450", "up"]);
    ns.ip(&["addr", "add", &format!("{subnet}/32"), "dev", "flannel.1"]);
    for p in peers {
        let vtep = p.subnet.network().to_string();
        let mac = p.vtep_mac.as_deref().expect("VtepMAC");
        ns.ip(&[
            "neigh",
            "replace",
            &vtep,
            "lladdr",
            mac,
            "dev",
            "flannel.1",
            "nud",
            "permanent",
        ]);
        conformance::process::run_ok(
            "bridge",
            &[
                "-n",
                ns.name(),
                "fdb",
                "replace",
                mac,
                "dev",
                "flannel.1",
                "dst",
                &p.public_ip.to_string(),
                "self",
                "permanent",
            ],
        );
        ns.ip(&[
            "route",
            "replace",
            &p.subnet.to_string(),
            "via",
            &vtep,
            "dev",
            "flannel.1",
            "onlink",
        ]);
    }
}

/// A lease written by hand exactly as flanneld writes it (its own etcd lease) becomes a peer:
/// its VtepMAC -> its node IP in the twill nodes' FDB, in their views, and a twill pod reaches a
/// flanneld-style `flannel.1` on that node. A key without a lease (a reservation) is a peer no
/// node takes.
#[test]
fn a_lease_written_in_flannels_format_becomes_a_peer_with_its_vtep_mac_in_the_fdb() {
    let mut env = Env::new(3, 1, "vxlan", false);
    // Node 2 is a flannel node: flanneld's lease, with its own etcd lease.
    let flannel_mac = "0e:f1:a2:00:00:77";
    let flannel_subnet = Ipv4Addr::new(10, 244, 77, 0);
    let flannel_key = format!("{DEFAULT_PREFIX}/subnets/10.244.77.0-24");
    env.etcd.put_with_lease(
        &flannel_key,
        &flannel_vxlan_lease(env.node(2).ip, 1, flannel_mac),
        600,
    );
    // A reservation: a key without an etcd lease, for a node not started yet.
    let reserved_key = format!("{DEFAULT_PREFIX}/subnets/10.244.99.0-24");
    env.etcd.put(
        &reserved_key,
        &flannel_vxlan_lease(Ipv4Addr::new(10, 99, 0, 200), 1, "0e:f1:a2:00:00:99"),
    );
    for i in 0..2 {
        env.start(i, &[]);
    }
    let twill: Vec<SubnetLease> = (0..2).map(|i| env.wait_leased(i)).collect();
    for l in &twill {
        assert!(
            ![flannel_key.as_str(), reserved_key.as_str()].contains(&l.key.as_str()),
            "a twill node took a subnet held by another: {}",
            l.key
        );
    }
    let leases = env.converge();
    assert_eq!(leases.len(), 4, "{leases:#?}");
    for i in 0..2 {
        let fdb = fdb_of(&env.node(i).ns, DEV4);
        assert!(
            fdb.iter()
                .any(|(mac, dst, _)| mac == flannel_mac && *dst == IpAddr::V4(env.node(2).ip)),
            "node {i}: the flannel node's VtepMAC -> its node IP in the FDB: {fdb:?}"
        );
        env.assert_view(i, &leases);
    }
    assert!(
        env.etcd.get(&reserved_key).is_some_and(|kv| kv.lease == 0),
        "the reservation stays as it was written"
    );
    // Real packets: the flannel node's device answers a twill pod, both ways encapsulated.
    flanneld_by_hand(env.node(2), flannel_subnet, flannel_mac, &twill);
    let p0 = env.add_pod(0);
    assert!(
        ping(&p0.ns, IpAddr::V4(flannel_subnet)),
        "a twill pod reaches the flannel node's flannel.1 ({flannel_subnet})"
    );
}

/// flannel's config with `"Backend": {"Type": "host-gw"}` under `--etcd-prefix`: host-gw leases,
/// FLANNEL_MTU of the underlay, a route per peer via its node IP, and bridge-host-gw pods on two
/// nodes reach each other.
#[test]
fn a_host_gw_backend_under_another_etcd_prefix_routes_bridge_host_gw_pods_across_nodes() {
    let mut env = Env::at_prefix(2, 1, "host-gw", false, "/twc/host-gw/network");
    for i in 0..2 {
        env.start(i, &[]);
    }
    let mine: Vec<SubnetLease> = (0..2).map(|i| env.wait_leased(i)).collect();
    for (i, l) in mine.iter().enumerate() {
        assert_flannel_lease(l, "host-gw");
        let subnet_env = read_env(&env.node(i).subnet_file).unwrap();
        assert_eq!(
            subnet_env.get("FLANNEL_MTU").map(String::as_str),
            Some("1500"),
            "node {i}: host-gw pods get the underlay MTU: {subnet_env:?}"
        );
    }
    let leases = env.converge();
    for i in 0..2 {
        env.assert_view(i, &leases);
    }
    assert_eq!(
        subnet_leases(&env.etcd, DEFAULT_PREFIX),
        vec![],
        "--etcd-prefix: nothing is leased under flannel's default prefix"
    );
    let (a, b) = (env.add_pod(0), env.add_pod(1));
    assert!(ping(&a.ns, first_ip(&b)), "pod on node 0 -> pod on node 1");
    assert!(ping(&b.ns, first_ip(&a)), "pod on node 1 -> pod on node 0");
}
