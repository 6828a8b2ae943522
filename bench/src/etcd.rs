//! `twill-bench etcd`: twilld's etcd mode (issue 13) on a real 3-member etcd (Debian's
//! `/usr/bin/etcd`), every member and node in its own netns on one switch.
//!
//! - etcd requests per idle node per minute: with 3 nodes leased and settled, the members'
//!   gRPC counters (`grpc_server_started_total`: RPCs, the JSON gateway's included;
//!   `grpc_server_msg_received_total`: messages, keepalives on a stream included) from their
//!   `/metrics` before and after an idle window, summed over the members, per node, scaled to a
//!   minute. Nothing else talks to etcd meanwhile (metrics come from a separate listener).
//! - etcd RPCs per join (the joiner's list, grant, claim and watch, and any the others make).
//! - join-to-reachable: a new node's `twilld run` started until every other node holds its FDB
//!   entry (from the kernel's own notifications, `bridge monitor fdb`), and until a ping from
//!   an existing node to the new node's VXLAN address answers; the median of a few joins.
//!
//! Every process it starts dies with it (parent-death signal), and its namespaces and files
//! are removed on exit.

use crate::cleanup::{NetnsSet, TempDir, check_interrupted, ip_batch, netns_path, prefix};
use crate::invoke::{find_bin, twill_bin_dir};
use crate::report::{self, Target};
use crate::stats::Summary;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

/// The etcd server.
const ETCD: &str = "/usr/bin/etcd";
/// The etcd v3 client.
const ETCDCTL: &str = "/usr/bin/etcdctl";
/// Members of the etcd cluster.
const MEMBERS: usize = 3;
/// Nodes running twilld through the idle window.
const IDLE_NODES: usize = 3;
/// Timed joins.
const JOINS: usize = 5;
/// Length of the idle window (scaled to a minute).
const IDLE_WINDOW: Duration = Duration::from_secs(30);
/// The target for a join (ms).
const JOIN_TARGET_MS: f64 = 1000.0;
/// Longest wait for one step before the harness gives up.
const GIVE_UP: Duration = Duration::from_secs(15);
/// flannel's default prefix and the cluster network.
const PREFIX: &str = "/coreos.com/network";
const NETWORK: &str = "10.244.0.0/16";

fn member_ip(k: usize) -> String {
    format!("10.77.0.{}", 241 + k)
}

fn node_ip(n: usize) -> String {
    format!("10.77.0.{}", n + 1)
}

/// A child process killed (and reaped) on drop; it also dies with the bench (PDEATHSIG).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `cmd` so that it gets SIGKILL when the bench dies, even by abort (release panics).
fn spawn(cmd: &mut Command) -> Result<Proc, String> {
    // SAFETY: prctl is async-signal-safe and touches only the child's own state.
    unsafe {
        cmd.pre_exec(|| {
            if nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .map(Proc)
        .map_err(|e| format!("spawn {:?}: {e}", cmd.get_program()))
}

/// `nsenter --net=<ns> program args...`.
fn in_ns(ns: &str, program: &str) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", netns_path(ns).display()))
        .arg(program);
    c
}

/// Runs `cmd` to completion; stdout, or Err with stderr.
fn output(cmd: &mut Command, what: &str) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn etcdctl(ns: &str, endpoints: &str, args: &[&str]) -> Result<String, String> {
    output(
        in_ns(ns, ETCDCTL)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .args(["--dial-timeout=1s", "--command-timeout=5s"])
            .args(args),
        &format!("etcdctl {}", args.join(" ")),
    )
}

/// The kernel's FDB notifications of a netns (`bridge monitor fdb`), with their arrival time.
struct FdbMonitor {
    _proc: Proc,
    lines: Receiver<(Instant, String)>,
    seen: std::cell::RefCell<BTreeMap<String, Instant>>,
}

impl FdbMonitor {
    fn start(ns: &str) -> Result<FdbMonitor, String> {
        let mut p = spawn(
            Command::new("bridge")
                .args(["-n", ns, "monitor", "fdb"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        )?;
        let out = p.0.stdout.take().ok_or("bridge monitor has no stdout")?;
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Ok(FdbMonitor {
            _proc: p,
            lines: rx,
            seen: Default::default(),
        })
    }

    /// Waits until an FDB entry towards `dst` was added (seen now or by an earlier wait since
    /// the last [`FdbMonitor::forget`]); when it came.
    fn added(&self, dst: &str, deadline: Instant) -> Result<Instant, String> {
        if let Some(at) = self.seen.borrow().get(dst) {
            return Ok(*at);
        }
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            let (at, line) = self
                .lines
                .recv_timeout(wait)
                .map_err(|_| format!("no FDB entry towards {dst} within {GIVE_UP:?}"))?;
            if line.starts_with("Deleted") {
                continue;
            }
            let mut words = line.split_whitespace();
            if let Some(to) = words.find(|w| *w == "dst").and_then(|_| words.next()) {
                self.seen.borrow_mut().entry(to.to_string()).or_insert(at);
                if to == dst {
                    return Ok(at);
                }
            }
        }
    }

    /// Drops every notification so far.
    fn forget(&self) {
        while self.lines.try_recv().is_ok() {}
        self.seen.borrow_mut().clear();
    }
}

/// One node: its netns, files and (once started) its twilld.
struct BenchNode {
    ns: String,
    ip: String,
    dir: PathBuf,
    daemon: Option<Proc>,
}

impl BenchNode {
    fn subnet_file(&self) -> PathBuf {
        self.dir.join("subnet.env")
    }

    fn start(&mut self, twilld: &Path, endpoints: &str) -> Result<(), String> {
        let log = std::fs::File::create(self.dir.join("twilld.log"))
            .map_err(|e| format!("create twilld.log: {e}"))?;
        let d = |name: &str| self.dir.join(name).display().to_string();
        self.daemon = Some(spawn(
            in_ns(&self.ns, &twilld.display().to_string())
                .arg("run")
                .args(["--etcd-endpoints", endpoints])
                .args(["--public-ip", &self.ip])
                .args(["--subnet-file", &d("subnet.env")])
                .args(["--view-file", &d("view.json")])
                .args(["--cni-conf-dir", &d("net.d")])
                .args(["--run-dir", &d("run")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log),
        )?);
        Ok(())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("twilld.log")).unwrap_or_default()
    }

    /// The VXLAN address of its leased subnet (the network address), once its subnet file
    /// exists.
    fn vtep_addr(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.subnet_file()).ok()?;
        let cidr = text
            .lines()
            .find_map(|l| l.strip_prefix("FLANNEL_SUBNET="))?;
        let net: ipnetwork::Ipv4Network = cidr.trim().parse().ok()?;
        Some(net.network().to_string())
    }
}

/// Sums the samples of the counter `name` in Prometheus text, per `grpc_method` label.
fn counters(text: &str, name: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with(name)) {
        let rest = &line[name.len()..];
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        let method = rest
            .split("grpc_method=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("")
            .to_string();
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        *out.entry(method).or_insert(0.0) += value;
    }
    out
}

/// The gRPC counters of every member: (RPCs started, messages received), per method.
type Counters = (BTreeMap<String, f64>, BTreeMap<String, f64>);

fn scrape(members: &[String]) -> Result<Counters, String> {
    let (mut rpcs, mut msgs) = (BTreeMap::new(), BTreeMap::new());
    for (k, ns) in members.iter().enumerate() {
        let url = format!("http://{}:2381/metrics", member_ip(k));
        let text = output(
            in_ns(ns, "curl").args(["-sf", "--max-time", "5", &url]),
            "curl /metrics",
        )?;
        for (m, v) in counters(&text, "grpc_server_started_total") {
            *rpcs.entry(m).or_insert(0.0) += v;
        }
        for (m, v) in counters(&text, "grpc_server_msg_received_total") {
            *msgs.entry(m).or_insert(0.0) += v;
        }
    }
    Ok((rpcs, msgs))
}

/// `(after - before) / divisor` per method (methods with no change left out).
fn delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    divisor: f64,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(m, v)| (m.clone(), (v - before.get(m).unwrap_or(&0.0)) / divisor))
        .filter(|(_, d)| *d > 0.0)
        .collect()
}

/// `after - before` per method, per node, per minute.
fn rate(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    nodes: usize,
    window: Duration,
) -> BTreeMap<String, f64> {
    delta(before, after, nodes as f64 * window.as_secs_f64() / 60.0)
}

/// Runs the benchmark; returns its JSON.
pub fn run() -> Result<Value, String> {
    let dir = twill_bin_dir();
    let twilld = find_bin(&dir, "twilld")
        .ok_or_else(|| format!("twilld not found in {} (build it first)", dir.display()))?;
    for tool in [ETCD, ETCDCTL] {
        if !Path::new(tool).is_file() {
            return Err(format!(
                "{tool} not found: apt-get install etcd-server etcd-client"
            ));
        }
    }
    println!(
        "== etcd: {MEMBERS} etcd members, {IDLE_NODES} idle nodes for {}s, {JOINS} joins",
        IDLE_WINDOW.as_secs()
    );
    println!("   twilld: {}", twilld.display());
    let p = prefix();
    let switch = format!("{p}-esw");
    let members: Vec<String> = (0..MEMBERS).map(|k| format!("{p}-em{k}")).collect();
    let node_names: Vec<String> = (0..IDLE_NODES + JOINS)
        .map(|n| format!("{p}-en{n}"))
        .collect();
    let mut all = vec![switch.clone()];
    all.extend(members.iter().cloned());
    all.extend(node_names.iter().cloned());
    let _ns = NetnsSet::create(all)?;
    ip_batch(
        &["-n", &switch],
        &[
            "link set lo up".into(),
            "link add br0 type bridge".into(),
            "link set br0 up".into(),
        ],
        false,
    )?;
    let plug = |ns: &str, port: &str, ip: &str| -> Result<(), String> {
        ip_batch(
            &["-n", ns],
            &[
                "link set lo up".into(),
                format!("link add eth0 type veth peer name {port} netns {switch}"),
                format!("addr add {ip}/24 dev eth0"),
                "link set eth0 up".into(),
            ],
            false,
        )?;
        ip_batch(
            &["-n", &switch],
            &[format!("link set {port} master br0 up")],
            false,
        )
    };
    for (k, m) in members.iter().enumerate() {
        plug(m, &format!("m{k}"), &member_ip(k))?;
    }
    let state = TempDir::create("etcd")?;
    let mut nodes = Vec::new();
    for (n, ns) in node_names.iter().enumerate() {
        plug(ns, &format!("n{n}"), &node_ip(n))?;
        let dir = state.path().join(format!("node{n}"));
        for d in ["net.d", "run", "data"] {
            std::fs::create_dir_all(dir.join(d))
                .map_err(|e| format!("create {}: {e}", dir.join(d).display()))?;
        }
        let conf = json!({
            "cniVersion": "1.0.0", "name": "twbenchetcd", "type": "vxlan",
            "subnetFile": dir.join("subnet.env"), "peersFile": dir.join("view.json"),
            "runDir": dir.join("run"), "dataDir": dir.join("data"),
        });
        std::fs::write(dir.join("net.d/10-pods.conf"), conf.to_string())
            .map_err(|e| format!("write conf: {e}"))?;
        nodes.push(BenchNode {
            ns: ns.clone(),
            ip: node_ip(n),
            dir,
            daemon: None,
        });
    }

    // The etcd cluster.
    let initial: Vec<String> = (0..MEMBERS)
        .map(|k| format!("m{k}=http://{}:2380", member_ip(k)))
        .collect();
    let mut etcd = Vec::new();
    for (k, ns) in members.iter().enumerate() {
        let ip = member_ip(k);
        let log = std::fs::File::create(state.path().join(format!("m{k}.log")))
            .map_err(|e| format!("create etcd log: {e}"))?;
        etcd.push(spawn(
            in_ns(ns, ETCD)
                .args(["--name", &format!("m{k}")])
                .arg("--data-dir")
                .arg(state.path().join(format!("m{k}")))
                .args(["--listen-client-urls", &format!("http://{ip}:2379")])
                .args(["--advertise-client-urls", &format!("http://{ip}:2379")])
                .args(["--listen-peer-urls", &format!("http://{ip}:2380")])
                .args([
                    "--initial-advertise-peer-urls",
                    &format!("http://{ip}:2380"),
                ])
                .args(["--listen-metrics-urls", &format!("http://{ip}:2381")])
                .args(["--initial-cluster", &initial.join(",")])
                .args(["--initial-cluster-token", &p])
                .args(["--logger", "zap", "--log-level", "warn"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log),
        )?);
    }
    let endpoints: String = (0..MEMBERS)
        .map(|k| format!("http://{}:2379", member_ip(k)))
        .collect::<Vec<_>>()
        .join(",");
    let deadline = Instant::now() + GIVE_UP;
    while etcdctl(&members[0], &endpoints, &["endpoint", "health"]).is_err() {
        check_interrupted()?;
        if Instant::now() >= deadline {
            return Err(format!("etcd not healthy within {GIVE_UP:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let config = json!({"Network": NETWORK, "Backend": {"Type": "vxlan"}}).to_string();
    etcdctl(
        &members[0],
        &endpoints,
        &["put", "--", &format!("{PREFIX}/config"), &config],
    )?;

    // Three nodes lease and settle (each sees the two others' FDB entries).
    let monitors: Vec<FdbMonitor> = nodes
        .iter()
        .map(|n| FdbMonitor::start(&n.ns))
        .collect::<Result<_, _>>()?;
    std::thread::sleep(Duration::from_millis(100));
    for n in nodes.iter_mut().take(IDLE_NODES) {
        n.start(&twilld, &endpoints)?;
    }
    let deadline = Instant::now() + GIVE_UP;
    for a in 0..IDLE_NODES {
        for b in (0..IDLE_NODES).filter(|b| *b != a) {
            monitors[a]
                .added(&nodes[b].ip, deadline)
                .map_err(|e| format!("node {a}: {e}; its log:\n{}", nodes[a].log()))?;
        }
    }
    std::thread::sleep(Duration::from_secs(1));

    // The idle window.
    println!("-- {IDLE_NODES} idle nodes, {}s", IDLE_WINDOW.as_secs());
    let before = scrape(&members)?;
    let t0 = Instant::now();
    while t0.elapsed() < IDLE_WINDOW {
        check_interrupted()?;
        std::thread::sleep(Duration::from_millis(200));
    }
    let after = scrape(&members)?;
    let window = t0.elapsed();
    let rpcs = rate(&before.0, &after.0, IDLE_NODES, window);
    let msgs = rate(&before.1, &after.1, IDLE_NODES, window);
    let f_rpcs = report::figure(
        "etcd RPCs per idle node per minute",
        rpcs.values().fold(0.0, |a, b| a + b),
        "",
        Target::Info,
    );
    let f_msgs = report::figure(
        "etcd messages per idle node per minute",
        msgs.values().fold(0.0, |a, b| a + b),
        "",
        Target::Info,
    );
    println!("    by method: {rpcs:?}");

    // Joins.
    println!("-- {JOINS} joins, from twilld's start on a new node");
    let before_joins = scrape(&members)?;
    let (mut fdb_times, mut ping_times) = (Vec::new(), Vec::new());
    for j in IDLE_NODES..IDLE_NODES + JOINS {
        check_interrupted()?;
        for m in &monitors {
            m.forget();
        }
        let t0 = Instant::now();
        nodes[j].start(&twilld, &endpoints)?;
        let deadline = t0 + GIVE_UP;
        let mut last = t0;
        for (a, m) in monitors.iter().enumerate().take(j) {
            let at = m
                .added(&nodes[j].ip, deadline)
                .map_err(|e| format!("node {a}: {e}; joiner's log:\n{}", nodes[j].log()))?;
            last = last.max(at);
        }
        fdb_times.push(last - t0);
        let vtep = nodes[j]
            .vtep_addr()
            .ok_or_else(|| format!("joiner {j} has no subnet file; log:\n{}", nodes[j].log()))?;
        loop {
            let ok = in_ns(&nodes[0].ns, "ping")
                .args(["-n", "-q", "-c1", "-W1", &vtep])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map_err(|e| format!("ping: {e}"))?
                .success();
            if ok {
                ping_times.push(t0.elapsed());
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!("node 0 never reached joiner {j}'s {vtep}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let summary = |label: &str, samples: &[Duration]| -> Result<Value, String> {
        let s = Summary::of(samples).ok_or("no samples")?;
        let mut f = report::figure(label, s.median_ms, " ms", Target::AtMost(JOIN_TARGET_MS));
        f["p95_ms"] = json!(crate::stats::round3(s.p95_ms));
        f["max_ms"] = json!(crate::stats::round3(s.max_ms));
        f["n"] = json!(s.n);
        Ok(f)
    };
    let after_joins = scrape(&members)?;
    // Per join: the RPCs of the joiner and of everyone's reaction, from start to reachable.
    let join_rpcs = delta(&before_joins.0, &after_joins.0, JOINS as f64);
    let f_join_rpcs = report::figure(
        "etcd RPCs per join",
        join_rpcs.values().fold(0.0, |a, b| a + b),
        "",
        Target::Info,
    );
    println!("    by method: {join_rpcs:?}");
    let f_fdb = summary("join -> FDB entry on every other node, median", &fdb_times)?;
    let f_ping = summary(
        "join -> ping from an existing node answers, median",
        &ping_times,
    )?;
    drop(monitors);
    for n in &mut nodes {
        n.daemon = None;
    }
    drop(etcd);
    Ok(json!({
        "members": MEMBERS,
        "idle_nodes": IDLE_NODES,
        "idle_window_s": crate::stats::round3(window.as_secs_f64()),
        "rpcs_per_idle_node_per_minute": f_rpcs,
        "rpcs_by_method": rpcs,
        "messages_per_idle_node_per_minute": f_msgs,
        "messages_by_method": msgs,
        "rpcs_per_join": f_join_rpcs,
        "rpcs_per_join_by_method": join_rpcs,
        "join_fdb": f_fdb,
        "join_ping": f_ping,
        "binary": twilld,
    }))
}
