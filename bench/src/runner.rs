//! Runs one timed phase (an operation over a list of pods) at a given concurrency, and alternates
//! phases of the compared sides chunk by chunk so machine noise hits all of them alike.

use crate::bare::{BareVeths, RouteSocket};
use crate::cleanup::check_interrupted;
use crate::invoke::{CniEnv, enter_netns, invoke, invoke_args, invoke_probe};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// CNI_IFNAME used everywhere.
pub const IFNAME: &str = "eth0";

/// A CNI operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    /// ADD
    Add,
    /// DEL
    Del,
}

impl Op {
    /// "ADD" / "DEL".
    pub fn name(self) -> &'static str {
        match self {
            Op::Add => "ADD",
            Op::Del => "DEL",
        }
    }
}

/// One plugin under test with everything its invocations need.
pub struct Side {
    /// "twill" or "ref".
    pub label: &'static str,
    /// The plugin binary.
    pub bin: PathBuf,
    /// `CNI_PATH`.
    pub cni_path: PathBuf,
    /// The netns the plugin runs in ("the node"); `None`: the harness's own (host-local only).
    pub node: Option<PathBuf>,
    /// `CNI_NETNS` per pod index.
    pub pod_netns: Vec<PathBuf>,
    /// `CNI_CONTAINERID` per pod index.
    pub ids: Vec<String>,
    /// The network configuration (stdin of ADD; DEL gets it plus `prevResult`).
    pub config: Value,
    /// Not a CNI plugin but netavark: `netavark --config DIR setup|teardown NETNS` with the
    /// network options (see [`netavark_options`]) on stdin; this is DIR.
    pub netavark_dir: Option<PathBuf>,
    /// Held around each invocation (podman serializes netavark calls under its network lock;
    /// netavark 1.4 run concurrently tears the shared bridge down under its neighbours). The
    /// wait is part of the measured time, as it is for the runtime.
    serial: Mutex<()>,
    prev: Mutex<Vec<Option<Value>>>,
}

/// netavark's network options for pod `i`: the network of `config` (a bridge config: its
/// bridge, first range's subnet and gateway; `ipMasq` false makes it `internal`, which is
/// netavark's only way to leave NAT out), and the static IP `10.88.(i+2)` as twill allocates
/// them in order (netavark does not allocate).
pub fn netavark_options(config: &Value, id: &str, i: usize) -> Value {
    let host = i + 2;
    let subnet = config
        .pointer("/ipam/ranges/0/0/subnet")
        .and_then(Value::as_str)
        .unwrap_or("10.88.0.0/16");
    let name = config["name"].as_str().unwrap_or("twbench");
    serde_json::json!({
        "container_id": id,
        "container_name": id,
        "networks": { name: {
            "interface_name": IFNAME,
            "static_ips": [format!("10.88.{}.{}", host / 256, host % 256)],
        }},
        "network_info": { name: {
            "dns_enabled": false,
            "driver": "bridge",
            "id": format!("{:0>64}", "7477696c6c"),
            "internal": !config["ipMasq"].as_bool().unwrap_or(false),
            "ipv6_enabled": false,
            "name": name,
            "network_interface": config["bridge"].as_str().unwrap_or("twbr0"),
            "subnets": [{ "gateway": "10.88.0.1", "subnet": subnet }],
        }},
        "port_mappings": null,
    })
}

impl Side {
    /// A side with `pod_netns.len()` pods.
    pub fn new(
        label: &'static str,
        bin: PathBuf,
        cni_path: PathBuf,
        node: Option<PathBuf>,
        pod_netns: Vec<PathBuf>,
        ids: Vec<String>,
        config: Value,
    ) -> Side {
        let n = pod_netns.len();
        Side {
            label,
            bin,
            cni_path,
            node,
            pod_netns,
            ids,
            config,
            netavark_dir: None,
            serial: Mutex::new(()),
            prev: Mutex::new(vec![None; n]),
        }
    }

    /// One timed invocation of `op` for pod `i` (see [`Side::run_one_with`]).
    pub fn run_one(&self, op: Op, i: usize) -> Result<Duration, String> {
        self.run_one_with(op, i, false).map(|(d, _)| d)
    }

    /// One invocation of `op` for pod `i`; ADD's result is kept as DEL's `prevResult`, as a
    /// runtime does. The stdin is built before the clock starts. Returns the time and the
    /// process's peak RSS (KiB); with `probe` it runs under `twill-spawn` (untimed use), whose
    /// RSS figure is the plugin's own.
    pub fn run_one_with(&self, op: Op, i: usize, probe: bool) -> Result<(Duration, u64), String> {
        let mut conf = self.config.clone();
        if op == Op::Del {
            let prev = self.prev.lock().ok().and_then(|mut v| v[i].take());
            if let (Some(p), Some(obj)) = (prev, conf.as_object_mut()) {
                obj.insert("prevResult".into(), p);
            }
        }
        let stdin = match &self.netavark_dir {
            Some(_) => netavark_options(&self.config, &self.ids[i], i).to_string(),
            None => conf.to_string(),
        };
        let ns = self.pod_netns[i].display().to_string();
        let dir = self
            .netavark_dir
            .as_ref()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        let verb = if op == Op::Add { "setup" } else { "teardown" };
        let args: Vec<&str> = match &self.netavark_dir {
            Some(_) => vec!["--config", &dir, verb, &ns],
            None => vec![],
        };
        let env = CniEnv {
            command: op.name(),
            container_id: &self.ids[i],
            netns: &self.pod_netns[i],
            ifname: IFNAME,
            cni_path: &self.cni_path,
        };
        let start = Instant::now();
        let _serial = match self.netavark_dir {
            Some(_) => Some(self.serial.lock().map_err(|_| "poisoned netavark lock")?),
            None => None,
        };
        let waited = start.elapsed();
        let mut inv = if probe {
            invoke_probe(&self.bin, &args, &env, stdin.as_bytes())
        } else if args.is_empty() {
            invoke(&self.bin, &env, stdin.as_bytes())
        } else {
            invoke_args(&self.bin, &args, &env, stdin.as_bytes())
        }
        .map_err(|e| format!("{} {}: {e}", self.label, op.name()))?;
        inv.elapsed += waited;
        if op == Op::Add {
            let result: Value = serde_json::from_slice(&inv.stdout).map_err(|e| {
                format!(
                    "{} ADD {}: stdout is not JSON ({e}): {}",
                    self.label,
                    self.ids[i],
                    String::from_utf8_lossy(&inv.stdout)
                )
            })?;
            let has_ip = match &self.netavark_dir {
                // netavark: {"<network>": {"interfaces": {"eth0": {"subnets": [...]}}}}
                Some(_) => result
                    .as_object()
                    .and_then(|o| o.values().next())
                    .and_then(|n| n.pointer(&format!("/interfaces/{IFNAME}/subnets/0/ipnet")))
                    .is_some(),
                None => result["ips"].as_array().is_some_and(|a| !a.is_empty()),
            };
            if !has_ip {
                return Err(format!(
                    "{} ADD {}: result has no ips: {result}",
                    self.label, self.ids[i]
                ));
            }
            if let Ok(mut v) = self.prev.lock() {
                v[i] = Some(result);
            }
        }
        Ok((inv.elapsed, inv.max_rss_kb))
    }
}

/// What a phase runs per pod.
#[derive(Clone, Copy)]
pub enum Job<'a> {
    /// A plugin invocation.
    Plugin(&'a Side, Op),
    /// A plugin invocation under `twill-spawn`, for its peak RSS (untimed warm-up).
    Probe(&'a Side, Op),
    /// The bare kernel sequence of one pod's ADD (baseline), one exec of `twill-bare-add`.
    BareAdd(&'a BareVeths),
    /// A bare veth delete (baseline).
    BareDel(&'a BareVeths),
}

impl Job<'_> {
    /// Row label ("twill", "ref", "bare").
    pub fn label(&self) -> &'static str {
        match self {
            Job::Plugin(s, _) | Job::Probe(s, _) => s.label,
            Job::BareAdd(_) | Job::BareDel(_) => "bare",
        }
    }

    /// The operation.
    pub fn op(&self) -> Op {
        match self {
            Job::Plugin(_, op) | Job::Probe(_, op) => *op,
            Job::BareAdd(_) => Op::Add,
            Job::BareDel(_) => Op::Del,
        }
    }
}

/// Latencies of one phase plus its wall time.
#[derive(Default, Debug, Clone)]
pub struct Samples {
    /// Per-invocation latencies.
    pub lat: Vec<Duration>,
    /// Peak RSS per invocation (KiB); empty for in-process baselines.
    pub rss_kb: Vec<u64>,
    /// Sum of the wall times of the phases (throughput = lat.len() / wall).
    pub wall: Duration,
}

/// Runs `job` for every pod index in `indices`, `conc` at a time (each worker thread first
/// enters the node netns, untimed, so the plugin processes it spawns start there).
pub fn run_phase(job: Job, indices: &[usize], conc: usize) -> Result<Samples, String> {
    check_interrupted()?;
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let lat = Mutex::new(Vec::with_capacity(indices.len()));
    let rss = Mutex::new(Vec::with_capacity(indices.len()));
    let first_err: Mutex<Option<String>> = Mutex::new(None);
    let threads = conc.clamp(1, indices.len().max(1));
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                if let Err(e) = worker(job, indices, &next, &failed, &lat, &rss) {
                    failed.store(true, Ordering::Relaxed);
                    if let Ok(mut fe) = first_err.lock() {
                        fe.get_or_insert(e);
                    }
                }
            });
        }
    });
    let wall = start.elapsed();
    if let Some(e) = first_err.into_inner().ok().flatten() {
        return Err(e);
    }
    let lat = lat.into_inner().map_err(|_| "poisoned latency list")?;
    let rss_kb = rss.into_inner().map_err(|_| "poisoned RSS list")?;
    Ok(Samples { lat, rss_kb, wall })
}

fn worker(
    job: Job,
    indices: &[usize],
    next: &AtomicUsize,
    failed: &AtomicBool,
    lat: &Mutex<Vec<Duration>>,
    rss: &Mutex<Vec<u64>>,
) -> Result<(), String> {
    let node = match job {
        Job::Plugin(side, _) | Job::Probe(side, _) => side.node.clone(),
        Job::BareAdd(b) | Job::BareDel(b) => Some(b.node.clone()),
    };
    if let Some(node) = &node {
        enter_netns(node)?;
    }
    // The baseline's netlink socket is opened in the node netns, outside the timed region.
    let sock = match job {
        Job::BareDel(_) => Some(RouteSocket::open()?),
        Job::Plugin(..) | Job::Probe(..) | Job::BareAdd(_) => None,
    };
    loop {
        if failed.load(Ordering::Relaxed) {
            return Ok(());
        }
        check_interrupted()?;
        let k = next.fetch_add(1, Ordering::Relaxed);
        let Some(&i) = indices.get(k) else {
            return Ok(());
        };
        let (d, kb) = match (job, &sock) {
            // Timed runs report no RSS: theirs is floored by the harness's (see invoke_probe).
            (Job::Plugin(side, op), _) => (side.run_one(op, i)?, None),
            (Job::Probe(side, op), _) => {
                let (d, kb) = side.run_one_with(op, i, true)?;
                (d, Some(kb))
            }
            (Job::BareAdd(b), _) => {
                let args = b.add_args(i)?;
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let env = CniEnv {
                    command: "ADD",
                    container_id: "bare",
                    netns: &b.pods[b.slot(i)?],
                    ifname: IFNAME,
                    cni_path: &b.bin,
                };
                let inv = invoke_args(&b.bin, &args, &env, b"")?;
                (inv.elapsed, None)
            }
            (Job::BareDel(b), Some(sock)) => (sock.del_link_timed(&b.links[b.slot(i)?])?, None),
            (Job::BareDel(_), None) => return Err("no netlink socket".into()),
        };
        if let Ok(mut v) = lat.lock() {
            v.push(d);
        }
        if let (Some(kb), Ok(mut v)) = (kb, rss.lock()) {
            v.push(kb);
        }
    }
}

/// Results keyed by (label, op).
pub type Results = BTreeMap<(&'static str, Op), Samples>;

/// Runs each job over `indices` in chunks of `chunk` pods, `conc` at a time; within a chunk the
/// jobs run one after the other, and the order rotates from chunk to chunk.
pub fn alternate(
    jobs: &[Job],
    indices: &[usize],
    chunk: usize,
    conc: usize,
    results: &mut Results,
) -> Result<(), String> {
    for (k, part) in indices.chunks(chunk.max(1)).enumerate() {
        for j in 0..jobs.len() {
            let job = jobs[(j + k) % jobs.len()];
            let s = run_phase(job, part, conc)?;
            let e = results.entry((job.label(), job.op())).or_default();
            e.lat.extend(s.lat);
            e.rss_kb.extend(s.rss_kb);
            e.wall += s.wall;
        }
    }
    Ok(())
}
