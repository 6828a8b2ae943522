//! `twill-bench twilld`: the node daemon's reaction times and the cost of applying a view.
//!
//! One "node" netns whose uplink `eth0` (10.77.0.1/16) is a veth into a "switch" netns; the
//! cluster view lists 250 peers on that segment (node IPs 10.77.x.y, pod CIDRs 10.201.x.0/24).
//! - `twilld sync` of a changed 250-peer view (half the peers replaced), run in the node netns
//!   (one process exec, as a timer or a hook would run it), and of an unchanged view;
//! - with `twilld run` going: a peer added to the view until its route is in the kernel, a
//!   deleted route until it is back, a flush of every twill route and an uplink bounce until all
//!   are back. Times come from the kernel's own route notifications (`ip monitor route`).

use crate::cleanup::{NetnsSet, TempDir, check_interrupted, ip_batch, netns_path, prefix};
use crate::invoke::{enter_netns, find_bin, twill_bin_dir};
use crate::report::{self, Target};
use crate::stats::Summary;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

/// Peers in the view.
const PEERS: usize = 250;
/// Timed repetitions of each daemon figure.
const ROUNDS: usize = 20;
/// Timed `sync` runs per view kind.
const SYNCS: usize = 10;
/// The target for the daemon's reaction (ms).
const REACT_TARGET_MS: f64 = 1000.0;
/// Longest wait for one reaction before the harness gives up.
const GIVE_UP: Duration = Duration::from_secs(5);

/// Peer `k` of the view: (node IP, pod CIDR). `k` < 60000.
fn peer(k: usize) -> (String, String) {
    let (hi, lo) = ((k + 2) / 250, (k + 2) % 250 + 1);
    (
        format!("10.77.{hi}.{lo}"),
        format!("10.{}.{}.0/24", 201 + k / 256, k % 256),
    )
}

fn view(ks: impl IntoIterator<Item = usize>) -> String {
    let list: Vec<Value> = ks
        .into_iter()
        .map(|k| {
            let (ip, cidr) = peer(k);
            json!({"nodeIP": ip, "podCIDR": cidr})
        })
        .collect();
    Value::Array(list).to_string()
}

fn replace(path: &Path, text: &str) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("write {}: {e}", path.display()))
}

/// The kernel's route notifications of a netns, line by line with their arrival time.
struct Monitor {
    child: Child,
    lines: Receiver<(Instant, String)>,
}

impl Monitor {
    /// Starts `ip -n NS monitor route` and waits until it demonstrably listens (a marker route
    /// added and deleted in the netns is seen).
    fn start(ns: &str) -> Result<Monitor, String> {
        let mut child = Command::new("ip")
            .args(["-n", ns, "monitor", "route"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn ip monitor: {e}"))?;
        let out = child.stdout.take().ok_or("ip monitor has no stdout")?;
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        let m = Monitor { child, lines: rx };
        let deadline = Instant::now() + GIVE_UP;
        loop {
            ip_batch(
                &["-n", ns],
                &["route replace blackhole 192.0.2.0/24".to_string()],
                false,
            )?;
            if m.lines.recv_timeout(Duration::from_millis(50)).is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                return Err("ip monitor route did not start".into());
            }
        }
        ip_batch(
            &["-n", ns],
            &["route del blackhole 192.0.2.0/24".to_string()],
            false,
        )?;
        Ok(m)
    }

    fn drain(&self) {
        while self.lines.try_recv().is_ok() {}
    }

    /// Waits until routes to every one of `dsts` were added (after `since`); when the last came.
    fn added(&self, dsts: &BTreeSet<String>, since: Instant) -> Result<Instant, String> {
        let mut left = dsts.clone();
        let deadline = since + GIVE_UP;
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            let (at, line) = self
                .lines
                .recv_timeout(wait)
                .map_err(|_| format!("{} route(s) not back within {GIVE_UP:?}", left.len()))?;
            if line.starts_with("Deleted") || !line.contains("proto 116") {
                continue;
            }
            if let Some(dst) = line.split_whitespace().next() {
                left.remove(dst);
            }
            if left.is_empty() {
                return Ok(at);
            }
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `twilld run` in the node netns, killed on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A process's resident set and its peak (VmRSS, VmHWM of /proc/PID/status), in KiB.
fn resident_kb(pid: u32) -> Result<(u64, u64), String> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .ok_or_else(|| format!("{path}: no {name}"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

fn summary(label: &str, samples: &[Duration], target: Target) -> Result<Value, String> {
    let s = Summary::of(samples).ok_or("no samples")?;
    let mut f = report::figure(&format!("{label}, p95"), s.p95_ms, " ms", target);
    f["median_ms"] = json!(crate::stats::round3(s.median_ms));
    f["max_ms"] = json!(crate::stats::round3(s.max_ms));
    f["n"] = json!(s.n);
    println!(
        "    (median {:.2} ms, max {:.2} ms, n {})",
        s.median_ms, s.max_ms, s.n
    );
    Ok(f)
}

/// Runs the benchmark; returns its JSON.
pub fn run() -> Result<Value, String> {
    let dir = twill_bin_dir();
    let bin = find_bin(&dir, "twilld")
        .ok_or_else(|| format!("twilld not found in {} (build it first)", dir.display()))?;
    println!("== twilld: {PEERS} peers, {ROUNDS} rounds per reaction, {SYNCS} syncs per view");
    println!("   twilld: {}", bin.display());
    let p = prefix();
    let (node, switch) = (format!("{p}-tdnode"), format!("{p}-tdsw"));
    let _ns = NetnsSet::create(vec![node.clone(), switch.clone()])?;
    ip_batch(
        &["-n", &node],
        &[
            "link set lo up".into(),
            format!("link add eth0 type veth peer name up0 netns {switch}"),
            "addr add 10.77.0.1/16 dev eth0".into(),
            "link set eth0 up".into(),
        ],
        false,
    )?;
    ip_batch(&["-n", &switch], &["link set up0 up".into()], false)?;
    let state = TempDir::create("twilld")?;
    let conf_dir = state.path().join("net.d");
    let run_dir = state.path().join("run");
    for d in [&conf_dir, &run_dir] {
        std::fs::create_dir_all(d).map_err(|e| format!("create {}: {e}", d.display()))?;
    }
    let peers_file = state.path().join("peers.json");
    let subnet_file = state.path().join("subnet.env");
    std::fs::write(
        &subnet_file,
        "FLANNEL_NETWORK=10.0.0.0/8\nFLANNEL_SUBNET=10.200.0.1/24\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=true\n",
    )
    .map_err(|e| format!("write subnet file: {e}"))?;
    let conf = json!({
        "cniVersion": "1.0.0", "name": "twbench-d", "type": "bridge-host-gw",
        "subnetFile": subnet_file, "peersFile": peers_file, "runDir": run_dir,
        "dataDir": state.path().join("data"), "forwardRules": false,
    });
    replace(&conf_dir.join("10-twbench.conf"), &conf.to_string())?;
    let args = |cmd: &str| -> Vec<String> {
        vec![
            cmd.to_string(),
            "--cni-conf-dir".into(),
            conf_dir.display().to_string(),
            "--run-dir".into(),
            run_dir.display().to_string(),
        ]
    };
    let node_path = netns_path(&node);

    // sync: a changed view (half of the peers replaced) and an unchanged one, in the node netns.
    let view_a = view(0..PEERS);
    let view_b = view((0..PEERS / 2).chain(PEERS..PEERS + PEERS / 2));
    let (changed, unchanged) = std::thread::scope(|s| {
        s.spawn(|| -> Result<(Vec<Duration>, Vec<Duration>), String> {
            enter_netns(&node_path)?;
            let sync = || -> Result<Duration, String> {
                let t0 = Instant::now();
                let out = Command::new(&bin)
                    .args(args("sync"))
                    .output()
                    .map_err(|e| format!("spawn twilld: {e}"))?;
                let took = t0.elapsed();
                if !out.status.success() {
                    return Err(format!(
                        "twilld sync failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
                Ok(took)
            };
            replace(&peers_file, &view_a)?;
            sync()?;
            let (mut changed, mut unchanged) = (Vec::new(), Vec::new());
            for i in 0..SYNCS {
                check_interrupted()?;
                replace(&peers_file, if i % 2 == 0 { &view_b } else { &view_a })?;
                changed.push(sync()?);
                unchanged.push(sync()?);
            }
            Ok((changed, unchanged))
        })
        .join()
        .map_err(|_| "sync thread panicked".to_string())?
    })?;
    println!("-- twilld sync, {PEERS}-peer view");
    let f_changed = summary(
        &format!("sync of a changed view ({} routes replaced)", PEERS / 2),
        &changed,
        Target::Info,
    )?;
    let f_unchanged = summary("sync of an unchanged view", &unchanged, Target::Info)?;

    // The daemon, started on a node whose routes are gone: it installs all of them.
    replace(&peers_file, &view_a)?;
    ip_batch(&["-n", &node], &["route flush proto 116".into()], false)?;
    let mon = Monitor::start(&node)?;
    let daemon = Daemon(
        Command::new("nsenter")
            .arg(format!("--net={}", node_path.display()))
            .arg(&bin)
            .args(args("run"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn twilld run: {e}"))?,
    );
    let all: BTreeSet<String> = (0..PEERS).map(|k| peer(k).1).collect();
    mon.added(&all, Instant::now())?;
    println!("-- twilld run (debounce 100 ms), from the change to the route in the kernel");
    let mut joined = Vec::new();
    let mut present: Vec<usize> = (0..PEERS).collect();
    for r in 0..ROUNDS {
        check_interrupted()?;
        let k = PEERS + PEERS / 2 + r;
        present.push(k);
        mon.drain();
        let t0 = Instant::now();
        replace(&peers_file, &view(present.iter().copied()))?;
        let at = mon.added(&BTreeSet::from([peer(k).1]), t0)?;
        joined.push(at - t0);
    }
    let f_join = summary(
        "peer added to the view, routed",
        &joined,
        Target::AtMost(REACT_TARGET_MS),
    )?;
    let mut back = Vec::new();
    for r in 0..ROUNDS {
        check_interrupted()?;
        let dst = peer(r).1;
        mon.drain();
        let t0 = Instant::now();
        ip_batch(&["-n", &node], &[format!("route del {dst}")], false)?;
        let at = mon.added(&BTreeSet::from([dst]), t0)?;
        back.push(at - t0);
    }
    let f_back = summary(
        "route deleted by hand, back",
        &back,
        Target::AtMost(REACT_TARGET_MS),
    )?;
    let every: BTreeSet<String> = present.iter().map(|k| peer(*k).1).collect();
    let mut flushed = Vec::new();
    let mut bounced = Vec::new();
    for _ in 0..ROUNDS / 4 {
        check_interrupted()?;
        mon.drain();
        let t0 = Instant::now();
        ip_batch(&["-n", &node], &["route flush proto 116".into()], false)?;
        flushed.push(mon.added(&every, t0)? - t0);
        ip_batch(&["-n", &node], &["link set eth0 down".into()], false)?;
        mon.drain();
        let t0 = Instant::now();
        ip_batch(&["-n", &node], &["link set eth0 up".into()], false)?;
        bounced.push(mon.added(&every, t0)? - t0);
    }
    let n = every.len();
    let f_flush = summary(
        &format!("all {n} routes flushed, all back"),
        &flushed,
        Target::AtMost(REACT_TARGET_MS),
    )?;
    let f_bounce = summary(
        &format!("uplink down and up, all {n} routes back after up"),
        &bounced,
        Target::AtMost(REACT_TARGET_MS),
    )?;
    // Idle now (every route of the last reaction is back): its resident memory as it waits in
    // poll(2), and its peak over the whole run (the initial apply of 250 peers included).
    let (idle_kb, peak_kb) = resident_kb(daemon.0.id())?;
    println!("-- twilld run, memory");
    let f_idle = report::figure(
        &format!("twilld idle RSS ({n} peers installed)"),
        idle_kb as f64,
        " KiB",
        Target::Info,
    );
    let f_peak = report::figure(
        "twilld peak RSS over the run",
        peak_kb as f64,
        " KiB",
        Target::Info,
    );
    drop(daemon);
    drop(mon);
    Ok(json!({
        "idle_rss_kib": f_idle,
        "peak_rss_kib": f_peak,
        "peers": PEERS,
        "sync_changed_view": f_changed,
        "sync_unchanged_view": f_unchanged,
        "peer_added_routed": f_join,
        "route_deleted_back": f_back,
        "routes_flushed_back": f_flush,
        "uplink_bounce_back": f_bounce,
        "binary": PathBuf::from(&bin),
    }))
}
