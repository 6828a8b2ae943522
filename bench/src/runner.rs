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
    prev: Mutex<Vec<Option<Value>>>,
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
            prev: Mutex::new(vec![None; n]),
        }
    }

    /// One invocation of `op` for pod `i`; ADD's result is kept as DEL's `prevResult`, as a
    /// runtime does. The stdin is built before the clock starts. Returns the time and the
    /// process's peak RSS (KiB); with `probe` it runs under `twill-spawn` (untimed use), whose
    /// RSS figure is the plugin's own.
    pub fn run_one(&self, op: Op, i: usize, probe: bool) -> Result<(Duration, u64), String> {
        let mut conf = self.config.clone();
        if op == Op::Del {
            let prev = self.prev.lock().ok().and_then(|mut v| v[i].take());
            if let (Some(p), Some(obj)) = (prev, conf.as_object_mut()) {
                obj.insert("prevResult".into(), p);
            }
        }
        let stdin = conf.to_string();
        let env = CniEnv {
            command: op.name(),
            container_id: &self.ids[i],
            netns: &self.pod_netns[i],
            ifname: IFNAME,
            cni_path: &self.cni_path,
        };
        let inv = if probe {
            invoke_probe(&self.bin, &[], &env, stdin.as_bytes())
        } else {
            invoke(&self.bin, &env, stdin.as_bytes())
        }
        .map_err(|e| format!("{} {}: {e}", self.label, op.name()))?;
        if op == Op::Add {
            let result: Value = serde_json::from_slice(&inv.stdout).map_err(|e| {
                format!(
                    "{} ADD {}: stdout is not JSON ({e}): {}",
                    self.label,
                    self.ids[i],
                    String::from_utf8_lossy(&inv.stdout)
                )
            })?;
            if result["ips"].as_array().is_none_or(|a| a.is_empty()) {
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
            (Job::Plugin(side, op), _) => (side.run_one(op, i, false)?.0, None),
            (Job::Probe(side, op), _) => {
                let (d, kb) = side.run_one(op, i, true)?;
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
