//! `twill-bench peers`: the cost of the cluster view on bridge-host-gw's ADD. Three nodes, each
//! with an underlay (a veth pair inside the node, 10.250.0.1/16) so peer routes have a next hop:
//! The view is a `peersFile` (what a cluster manager or twilld's feed writes):
//! - "1 peer": a one-entry view, unchanged from ADD to ADD (applied once in the warm-up);
//! - "250 peers": a 250-entry view, unchanged from ADD to ADD;
//! - "250 changed": a 250-entry view whose next hops all change on every ADD, so every ADD
//!   applies 250 route changes.
//!
//! ADDs alternate between the nodes pod by pod (then DELs), so noise hits all three alike. One
//! extra ADD per node runs under `strace -c`-style counting of netlink sends, to show that a
//! changed view is applied as one batch (a handful of sends, not one per route).

use crate::cleanup::{NetnsSet, TempDir, check_interrupted, ip_batch, netns_path, prefix};
use crate::invoke::{CniEnv, enter_netns, find_bin, invoke, invoke_args, twill_bin_dir};
use crate::report::{self, Target};
use crate::runner::{IFNAME, Op, Results};
use crate::stats::Summary;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// Timed pods per node by default.
pub const PODS: usize = 50;
/// Peers of the large view.
const PEERS: usize = 250;
/// "250 peers unchanged" ADD median / "1 peer" ADD median target (issue 12: "costs no more").
const UNCHANGED_TARGET: f64 = 1.00;
/// Netlink sends a changed 250-peer ADD may make beyond an unchanged one ("one batch").
const BATCH_SENDS_TARGET: f64 = 5.0;

/// A view of `n` peers; `shift` moves every next hop (a changed view when it differs).
fn view(n: usize, shift: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|k| {
                let host = 2 + (k + shift * n) % 60_000;
                json!({
                    "nodeIP": format!("10.250.{}.{}", host / 250, host % 250 + 2),
                    "podCIDR": format!("10.{}.{}.0/24", 90 + k / 250, k % 250),
                })
            })
            .collect(),
    )
}

struct Node {
    label: &'static str,
    ns: String,
    peers: usize,
    changing: bool,
    data: TempDir,
    subnet_file: PathBuf,
    pods: Vec<String>,
}

impl Node {
    /// The config of pod `i`'s call. The view is a `peersFile` (as a cluster manager or
    /// twilld's feed writes it), replaced by rename before the call when it changes.
    fn config(&self, i: usize) -> Result<Value, String> {
        let ipam = self.data.path().join("ipam");
        let mut c = crate::bridge::twill_config(false, &ipam, &self.subnet_file);
        let file = self.data.path().join("peers.json");
        if self.changing || !file.exists() {
            let text = view(self.peers, if self.changing { i } else { 0 }).to_string();
            let tmp = file.with_extension("tmp");
            std::fs::write(&tmp, text)
                .and_then(|()| std::fs::rename(&tmp, &file))
                .map_err(|e| format!("write {}: {e}", file.display()))?;
        }
        c.as_object_mut().map(|o| o.remove("peers"));
        c["peersFile"] = json!(file);
        Ok(c)
    }
}

/// One call of `op` for pod `i` of `node` (in the calling thread's netns); returns the time
/// and ADD's result. With `strace`, it runs under it and the log goes to that path.
fn call(
    bin: &Path,
    node: &Node,
    op: Op,
    i: usize,
    prev: Option<&Value>,
    strace: Option<(&Path, &Path)>,
) -> Result<(std::time::Duration, Value), String> {
    let mut conf = node.config(i)?;
    if let Some(p) = prev {
        conf["prevResult"] = p.clone();
    }
    let stdin = conf.to_string();
    let id = format!("{}-peers-{}-{i}", prefix(), node.label.replace(' ', ""));
    let pod = netns_path(&node.pods[i]);
    let env = CniEnv {
        command: op.name(),
        container_id: &id,
        netns: &pod,
        ifname: IFNAME,
        cni_path: bin.parent().unwrap_or(Path::new("/")),
    };
    let inv = match strace {
        Some((strace, log)) => {
            let (log_s, bin_s) = (log.display().to_string(), bin.display().to_string());
            let args = [
                "-f",
                "-qq",
                "-o",
                &log_s,
                "-e",
                "trace=sendto,sendmsg",
                &bin_s,
            ];
            invoke_args(strace, &args, &env, stdin.as_bytes())?
        }
        None => invoke(bin, &env, stdin.as_bytes())?,
    };
    let result = if op == Op::Add {
        serde_json::from_slice(&inv.stdout).map_err(|e| format!("ADD {id}: not JSON: {e}"))?
    } else {
        Value::Null
    };
    Ok((inv.elapsed, result))
}

/// Successful netlink sends in an strace log of sendto/sendmsg.
fn sends(log: &str) -> usize {
    log.lines()
        .filter(|l| {
            l.rsplit_once(" = ")
                .and_then(|(_, r)| r.split_whitespace().next()?.parse::<i64>().ok())
                .is_some_and(|r| r >= 0)
        })
        .count()
}

/// Runs the benchmark; returns its JSON.
pub fn run(pods: usize) -> Result<Value, String> {
    let dir = twill_bin_dir();
    let bin = find_bin(&dir, "bridge-host-gw")
        .ok_or_else(|| format!("bridge-host-gw not found in {}", dir.display()))?;
    let strace = find_bin(Path::new("/usr/bin"), "strace");
    println!(
        "== peers: bridge-host-gw ADD with a 1-peer view, an unchanged {PEERS}-peer view and a changing one; {pods} pods each"
    );
    let p = prefix();
    let specs: [(&'static str, usize, bool); 3] = [
        ("1 peer", 1, false),
        ("250 peers", PEERS, false),
        ("250 changed", PEERS, true),
    ];
    // Pod index 0 is the warm-up, 1..=pods timed, pods+1 the traced one.
    let total = pods + 2;
    let mut names = Vec::new();
    let mut nodes = Vec::new();
    for (k, (label, peers, changing)) in specs.into_iter().enumerate() {
        let ns = format!("{p}-peers{k}");
        let pod_names: Vec<String> = (0..total).map(|i| format!("{p}-peers{k}-p{i}")).collect();
        names.push(ns.clone());
        names.extend(pod_names.iter().cloned());
        let data = TempDir::create(&format!("peers{k}"))?;
        let subnet_file = crate::bridge::write_subnet_file(data.path(), false)?;
        std::fs::create_dir(data.path().join("ipam"))
            .map_err(|e| format!("create ipam dir: {e}"))?;
        nodes.push(Node {
            label,
            ns,
            peers,
            changing,
            data,
            subnet_file,
            pods: pod_names,
        });
    }
    let _pool = NetnsSet::create(names)?;
    for n in &nodes {
        let lines = vec![
            "link add und0 type veth peer name und1".to_string(),
            "addr add 10.250.0.1/16 dev und0".to_string(),
            "link set und1 up".to_string(),
            "link set und0 up".to_string(),
        ];
        ip_batch(&["-n", &n.ns], &lines, false)?;
    }
    let logs = TempDir::create("peers-strace")?;

    let mut results: Vec<Results> = (0..nodes.len()).map(|_| Results::new()).collect();
    let mut batch = Vec::new();
    let outcome = std::thread::scope(|s| {
        s.spawn(|| -> Result<(), String> {
            let mut prev: Vec<Vec<Option<Value>>> = vec![vec![None; total]; nodes.len()];
            let mut run = |k: usize, op: Op, i: usize, trace: Option<(&Path, &Path)>| {
                let node = &nodes[k];
                enter_netns(&netns_path(&node.ns))?;
                let (d, r) = call(&bin, node, op, i, prev[k][i].as_ref(), trace)?;
                prev[k][i] = (op == Op::Add).then_some(r);
                Ok::<_, String>(d)
            };
            // The views are written some time before the pods come (a view changes rarely):
            // the warm-up's reconcile then records the file's stamp, trusted from then on.
            for n in &nodes {
                n.config(0)?;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            for k in 0..nodes.len() {
                run(k, Op::Add, 0, None)?;
                run(k, Op::Del, 0, None)?;
            }
            for op in [Op::Add, Op::Del] {
                for i in 1..=pods {
                    check_interrupted()?;
                    for j in 0..nodes.len() {
                        let k = (i + j) % nodes.len();
                        let d = run(k, op, i, None)?;
                        let e = results[k].entry(("twill", op)).or_default();
                        e.lat.push(d);
                    }
                }
            }
            if let Some(strace) = &strace {
                for k in 0..nodes.len() {
                    let log = logs.path().join(format!("n{k}.log"));
                    run(k, Op::Add, total - 1, Some((strace, &log)))?;
                    let text = std::fs::read_to_string(&log)
                        .map_err(|e| format!("read {}: {e}", log.display()))?;
                    batch.push((k, sends(&text)));
                    run(k, Op::Del, total - 1, None)?;
                }
            }
            Ok(())
        })
        .join()
        .map_err(|_| "peers worker panicked".to_string())?
    });
    outcome?;

    println!(
        "  {:<12} {:<4} {:>5} {:>10} {:>10}",
        "view", "op", "n", "median ms", "p95 ms"
    );
    let mut out = serde_json::Map::new();
    let mut medians = Vec::new();
    for (k, node) in nodes.iter().enumerate() {
        for op in [Op::Add, Op::Del] {
            if let Some(s) = results[k]
                .get(&("twill", op))
                .and_then(|s| Summary::of(&s.lat))
            {
                println!(
                    "  {:<12} {:<4} {:>5} {:>10.3} {:>10.3}",
                    node.label,
                    op.name(),
                    s.n,
                    s.median_ms,
                    s.p95_ms
                );
                out.insert(format!("{} {}", node.label, op.name()), s.to_json());
                if op == Op::Add {
                    medians.push(s.median_ms);
                }
            }
        }
        crate::table::record(
            "bridge-host-gw",
            &format!("view {}", node.label),
            &results[k],
            false,
            &[("twill", vec![bin.clone()])],
        );
    }
    let mut figures = Vec::new();
    if let [one, many, changed] = medians[..] {
        figures.push(report::figure(
            "ADD median, unchanged 250-peer view / 1-peer view",
            many / one,
            "",
            Target::AtMost(UNCHANGED_TARGET),
        ));
        figures.push(report::figure(
            "ADD median, changed 250-peer view - unchanged",
            changed - many,
            " ms",
            Target::Info,
        ));
    }
    for (k, n) in &batch {
        println!("  netlink sends in one ADD, view {}: {n}", nodes[*k].label);
        out.insert(format!("sends {}", nodes[*k].label), json!(n));
    }
    if let (Some((_, unchanged)), Some((_, changed))) = (
        batch.iter().find(|b| b.0 == 1),
        batch.iter().find(|b| b.0 == 2),
    ) {
        figures.push(report::figure(
            "netlink sends, changed 250-peer ADD beyond an unchanged one",
            *changed as f64 - *unchanged as f64,
            "",
            Target::AtMost(BATCH_SENDS_TARGET),
        ));
    }
    out.insert("pods".into(), json!(pods));
    out.insert("figures".into(), Value::Array(figures));
    Ok(Value::Object(out))
}
