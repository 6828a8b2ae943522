//! libcni (Debian's golang-github-appc-cni-dev 1.1.2, what containerd, CRI-O and podman link)
//! runs every twill plugin chained with Debian's reference meta plugins: `tuning` (a sysctl in
//! the pod), `portmap` (a hostPort reaches the pod from another namespace), `bandwidth` (tc
//! qdiscs) and `firewall` (iptables rules), through ADD, CHECK and DEL, at CNI 0.4.0 and 1.0.0.
//!
//! libcni caches the ADD result and feeds it as `prevResult` to CHECK and DEL, so this proves
//! that twill's results are accepted and passed through by every meta plugin. CNI 1.1.0 is not
//! covered here: libcni 1.1.2 cannot parse a 1.1.0 result and the meta plugins (1.1.1) refuse a
//! 1.1.0 config; the conformance suite covers 1.1.0 (GC, STATUS).

use conformance::Fabric;
use conformance::hostgw::{reservations, tw_links};
use conformance::runtimes::{
    Listener, NetSpec, PLUGINS, PluginUnderTest, bin_dir, iptables_rules, libcni_driver,
    portmap_chains, report, tcp_exchange,
};
use conformance::{Netns, TempDir, result_ips, unique_name};
use serde_json::{Value, json};
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

const HOST_PORT: u16 = 18080;
const POD_PORT: u16 = 8080;
const SOMAXCONN: &str = "321";

/// One pod's attachment as the libcni driver sees it: which conflist, which pod, where the
/// cache is, where the plugins are.
struct Attachment<'a> {
    node: &'a Netns,
    conf_dir: &'a Path,
    net: &'a str,
    pod: &'a Netns,
    id: &'a str,
    cache: &'a Path,
    path: &'a str,
}

impl Attachment<'_> {
    /// One libcni operation (`add`, `check`, `del`) of the driver, run on the node.
    fn run(&self, op: &str) -> std::process::Output {
        let mappings =
            json!([{"hostPort": HOST_PORT, "containerPort": POD_PORT, "protocol": "tcp"}])
                .to_string();
        let mut cmd = Command::new("nsenter");
        cmd.env(conformance::INDEX_DIR_ENV, conformance::private_index_dir())
            .arg(format!("--net={}", self.node.path().display()))
            .arg(libcni_driver())
            .arg(op)
            .arg("-confdir")
            .arg(self.conf_dir)
            .args(["-net", self.net, "-netns", &self.pod.path_str()])
            .args([
                "-id",
                self.id,
                "-ifname",
                "eth0",
                "-path",
                self.path,
                "-cachedir",
            ])
            .arg(self.cache);
        // Runtimes pass the port mappings on ADD and DEL. Not on CHECK here: Debian's portmap
        // 1.1.1 checks its IPv4 rules in ip6tables whenever mappings are given, so its CHECK
        // fails whoever the main plugin is (containernetworking/plugins#819, fixed upstream
        // later); without mappings it still receives and checks the cached prevResult.
        if op != "check" {
            cmd.args(["-portmappings", &mappings]);
        }
        conformance::process::run_bounded(&mut cmd, b"", conformance::process::DEFAULT_TIMEOUT)
    }
}

fn assert_ok(out: &std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} through libcni failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The meta plugins chained after the twill plugin.
fn meta_plugins() -> Vec<Value> {
    vec![
        json!({"type": "tuning", "sysctl": {"net.core.somaxconn": SOMAXCONN}}),
        json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}),
        json!({"type": "bandwidth", "ingressRate": 100_000_000u64, "ingressBurst": 1_000_000u64,
               "egressRate": 100_000_000u64, "egressBurst": 1_000_000u64}),
        json!({"type": "firewall", "backend": "iptables"}),
    ]
}

/// The portmap DNAT chains (`CNI-DN-*`) of ip6tables in `ns`.
fn portmap_chains6(ns: &Netns) -> Vec<String> {
    ns.exec_ok(&["ip6tables", "-w", "5", "-t", "nat", "-S"])
        .lines()
        .filter(|l| l.starts_with("-N CNI-DN-"))
        .map(str::to_string)
        .collect()
}

/// Names of the links in `ns` that carry a tbf qdisc (bandwidth's shaping).
fn tbf_devices(ns: &Netns) -> Vec<String> {
    let out = ns.exec_ok(&["tc", "-j", "qdisc", "show"]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("tc -j: {e}: {out}"));
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|q| q["kind"] == "tbf")
        .filter_map(|q| q["dev"].as_str().map(str::to_string))
        .collect()
}

/// ADD, CHECK, DEL (twice) of `plugin` chained with every meta plugin at `version`, asserting
/// each meta plugin's effect after ADD and that nothing of the pod is left after DEL.
fn chain_with_meta_plugins(plugin: &PluginUnderTest, version: &str) {
    let fab = Fabric::single_l2(1);
    let node = fab.node(0);
    let outside = fab.attach_host("out", &["10.99.0.200/24"]);
    // Dual-stack, so every meta plugin handles both families of twill's result.
    let net = NetSpec::dual_stack(node, "lc");
    let dir = TempDir::new("libcni");
    let (conf_dir, cache) = (dir.join("net.d"), dir.join("cache"));
    std::fs::create_dir_all(&conf_dir).unwrap_or_else(|e| panic!("create conf dir: {e}"));
    net.write_conflist(&conf_dir, version, plugin, &meta_plugins());
    let pod = Netns::with_tag("pod");
    let id = unique_name("lc");
    let path = format!(
        "{}:{}",
        bin_dir(dir.path(), plugin, &[]).display(),
        conformance::bins::ref_dir().display()
    );
    let attachment = Attachment {
        node: &node.ns,
        conf_dir: &conf_dir,
        net: &net.name,
        pod: &pod,
        id: &id,
        cache: &cache,
        path: &path,
    };
    let run = |op: &str| attachment.run(op);
    let ctx = format!(
        "libcni {version} {} + tuning, portmap, bandwidth, firewall",
        plugin.name
    );

    // ADD: the whole chain's result, converted by libcni to the config's version.
    let text = assert_ok(&run("add"), "ADD");
    let result: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{ctx}: ADD result {e}: {text}"));
    assert_eq!(result["cniVersion"], version, "{ctx}: {result}");
    // twill's interfaces came through every meta plugin: the pod's eth0 in its sandbox.
    let sandboxed: Vec<&Value> = result["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["sandbox"] == pod.path_str().as_str())
        .collect();
    assert!(
        sandboxed.len() == 1 && sandboxed[0]["name"] == "eth0",
        "{ctx}: the pod's eth0 must be in the chain's result: {result}"
    );
    let ips = result_ips(&result);
    assert_eq!(
        ips.len(),
        2,
        "{ctx}: an IPv4 and an IPv6 address expected: {result}"
    );
    assert!(
        ips.iter().all(|ip| net.holds(*ip)),
        "{ctx}: {ips:?} are not in the network's subnets"
    );
    let ip = ips
        .iter()
        .copied()
        .find(IpAddr::is_ipv4)
        .unwrap_or_else(|| panic!("{ctx}: no IPv4 address in {result}"));
    let mut want: Vec<String> = ips
        .iter()
        .map(|ip| format!("{ip}/{}", if ip.is_ipv4() { 24 } else { 64 }))
        .collect();
    want.sort();
    assert_eq!(
        pod.global_cidrs("eth0"),
        want,
        "{ctx}: the pod's eth0 must hold the result's addresses"
    );
    report(&format!("{ctx}: ADD gave {ips:?}, on the pod's eth0"));

    // tuning set its sysctl inside the pod.
    assert_eq!(pod.sysctl("net.core.somaxconn"), SOMAXCONN, "{ctx}: tuning");
    // bandwidth shaped the host veth (ingress) and its ifb device (egress).
    let host_veths = tw_links(&node.ns);
    assert_eq!(host_veths.len(), 1, "{ctx}: one host veth: {host_veths:?}");
    let shaped = tbf_devices(&node.ns);
    assert!(
        shaped.contains(&host_veths[0]) && shaped.len() == 2,
        "{ctx}: bandwidth must put tbf on the host veth and its ifb: {shaped:?}"
    );
    // firewall admitted the pod's traffic in its CNI-FORWARD chain.
    let filter = iptables_rules(&node.ns, "filter");
    assert!(
        filter.contains(&format!("-A CNI-FORWARD -s {ip}/32 -j ACCEPT")),
        "{ctx}: firewall rule for {ip} missing:\n{filter}"
    );
    // portmap: the hostPort on the node reaches the pod from another namespace.
    assert_eq!(
        portmap_chains(&node.ns).len(),
        1,
        "{ctx}: one portmap chain"
    );
    let greeting = format!("pod {id}");
    let listener = Listener::start(pod.path(), POD_PORT, &greeting);
    let got = tcp_exchange(outside.path(), node.ip.into(), HOST_PORT, "");
    assert_eq!(
        got.as_deref(),
        Some(greeting.as_str()),
        "{ctx}: {}:{HOST_PORT} from outside must reach the pod's port {POD_PORT}",
        node.ip
    );
    drop(listener);
    report(&format!(
        "{ctx}: tuning sysctl, tbf on {} and its ifb, firewall rule, hostPort {HOST_PORT} from \
         another namespace: all present",
        host_veths[0]
    ));

    // CHECK: libcni feeds the cached result to every plugin of the chain.
    assert_ok(&run("check"), "CHECK");
    report(&format!("{ctx}: CHECK with the cached prevResult passed"));

    // DEL: nothing of the pod is left on the node; a second DEL succeeds too.
    assert_ok(&run("del"), "DEL");
    assert_eq!(tw_links(&node.ns), Vec::<String>::new(), "{ctx}: host veth");
    assert_eq!(reservations(node, &net.name).len(), 0, "{ctx}: reservation");
    assert_eq!(
        portmap_chains(&node.ns),
        Vec::<String>::new(),
        "{ctx}: portmap"
    );
    assert_eq!(
        tbf_devices(&node.ns),
        Vec::<String>::new(),
        "{ctx}: bandwidth"
    );
    let filter = iptables_rules(&node.ns, "filter");
    assert!(
        !filter.contains(&ip.to_string()),
        "{ctx}: firewall rules for {ip} left:\n{filter}"
    );
    assert_eq!(
        portmap_chains6(&node.ns),
        Vec::<String>::new(),
        "{ctx}: IPv6 portmap"
    );
    let cached = std::fs::read_dir(cache.join("results"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(cached, 0, "{ctx}: libcni's cached result must be gone");
    assert_ok(&run("del"), "the second DEL");
    report(&format!(
        "{ctx}: DEL left no veth, reservation, portmap chain, qdisc, firewall rule or cache \
         entry; a second DEL succeeded"
    ));
}

#[test]
fn every_plugin_chains_with_tuning_portmap_bandwidth_firewall_at_0_4_0() {
    for plugin in PLUGINS {
        chain_with_meta_plugins(plugin, "0.4.0");
    }
}

#[test]
fn every_plugin_chains_with_tuning_portmap_bandwidth_firewall_at_1_0_0() {
    for plugin in PLUGINS {
        chain_with_meta_plugins(plugin, "1.0.0");
    }
}

/// The shipped sample conflists (`examples/*.conflist`), with their file paths pointed into the
/// test's directories, pass ADD, CHECK and DEL through libcni and leave nothing behind.
#[test]
fn shipped_example_conflists_pass_add_check_del_through_libcni() {
    let examples = conformance::bins::workspace_dir().join("examples");
    let mut files: Vec<_> = std::fs::read_dir(&examples)
        .unwrap_or_else(|e| panic!("read {}: {e}", examples.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "conflist"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no sample conflists in {}",
        examples.display()
    );
    for file in files {
        run_example(&file);
    }
}

fn run_example(file: &Path) {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut conflist: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let ctx = format!("libcni + {}", file.display());
    let fab = Fabric::single_l2(1);
    let node = fab.node(0);
    let net = NetSpec::new(node, "ex");
    let dir = TempDir::new("example");
    let (conf_dir, cache) = (dir.join("net.d"), dir.join("cache"));
    std::fs::create_dir_all(&conf_dir).unwrap_or_else(|e| panic!("create conf dir: {e}"));
    let peers = dir.join("peers.json");
    std::fs::write(&peers, "[]").unwrap_or_else(|e| panic!("write peers: {e}"));
    let log = dir.join("twill.log");
    // Every path the sample names goes into the test's directories; nothing else changes.
    let first = &mut conflist["plugins"][0];
    let redirect: [(&str, Value); 5] = [
        ("subnetFile", json!(net.subnet_file)),
        ("peersFile", json!(peers)),
        ("dataDir", json!(node.data_dir)),
        ("runDir", json!(node.run_dir)),
        ("logFile", json!(log)),
    ];
    for (key, value) in &redirect {
        if first.get(key).is_some() {
            first[*key] = value.clone();
        }
    }
    if first.pointer("/ipam/dataDir").is_some() {
        first["ipam"]["dataDir"] = json!(node.data_dir);
    }
    let bridge = first["bridge"].as_str().unwrap_or("cni0").to_string();
    let name = conflist["name"].as_str().unwrap_or_default().to_string();
    std::fs::write(conf_dir.join("net.conflist"), conflist.to_string())
        .unwrap_or_else(|e| panic!("write conflist: {e}"));
    // twill's binaries first, so `host-local` is twill's; then the reference plugins.
    let path = format!(
        "{}:{}",
        conformance::bins::twill_bin("host-local")
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        conformance::bins::ref_dir().display()
    );
    let pod = Netns::with_tag("pod");
    let id = unique_name("ex");
    let attachment = Attachment {
        node: &node.ns,
        conf_dir: &conf_dir,
        net: &name,
        pod: &pod,
        id: &id,
        cache: &cache,
        path: &path,
    };
    let text = assert_ok(&attachment.run("add"), "ADD");
    let result: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{ctx}: ADD result {e}: {text}"));
    let ips = result_ips(&result);
    assert_eq!(ips.len(), 1, "{ctx}: {result}");
    assert_eq!(
        pod.global_cidrs("eth0").len(),
        1,
        "{ctx}: the pod's eth0 holds the address"
    );
    assert_ok(&attachment.run("check"), "CHECK");
    assert_ok(&attachment.run("del"), "DEL");
    let on_bridge: Vec<String> = node
        .ns
        .links()
        .into_iter()
        .filter(|l| l.master.as_deref() == Some(bridge.as_str()))
        .map(|l| l.name)
        .collect();
    assert_eq!(on_bridge, Vec::<String>::new(), "{ctx}: host veth left");
    assert_eq!(
        reservations(node, &name).len(),
        0,
        "{ctx}: reservation left"
    );
    // The sample's log level is `error`: successful operations write nothing.
    assert!(
        !log.exists(),
        "{ctx}: an error-level log got lines for successes"
    );
    report(&format!(
        "{ctx}: ADD gave {ips:?}; CHECK and DEL passed; nothing left"
    ));
}
