//! `twill-bench soak`: churn. Per twill plugin, `cycles` ADD/DEL cycles (a new container ID each)
//! spread over `workers` parallel workers, each with its own pod netns, all on one node netns.
//! Afterwards it compares the node with its state before the timed cycles (links, routes,
//! permanent neighbours, nftables ruleset, files under the data dir) and reports what is left;
//! it counts the file descriptors each traced call opens (one cycle in `fd_every` runs under
//! `strace`), and compares the per-call medians of the first 100 cycles with the last 100.

use crate::cleanup::{NetnsSet, TempDir, check_interrupted, netns_path, prefix};
use crate::invoke::{
    CniEnv, enter_netns, find_bin, invoke, invoke_args, invoke_probe, twill_bin_dir,
};
use crate::report::{self, Target};
use crate::runner::{IFNAME, Op};
use crate::stats::{Summary, round3};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The plugins a soak covers by default.
pub const PLUGINS: &[&str] = &["bridge-host-gw", "routed-veth", "host-local"];
/// Cycles compared at each end of the run.
const WINDOW: usize = 100;
/// Last-window / first-window median target.
const DRIFT_TARGET: f64 = 1.5;
/// What `strace` traces to count a call's file descriptors: every syscall that makes one.
const FD_SYSCALLS: &str = "trace=open,openat,openat2,creat,socket,socketpair,pipe,pipe2,dup,dup2,\
dup3,fcntl,eventfd2,epoll_create1,memfd_create,accept4,pidfd_open,timerfd_create,signalfd4";

/// Options of the soak.
#[derive(Debug, Clone)]
pub struct SoakOpts {
    /// ADD/DEL cycles per plugin.
    pub cycles: usize,
    /// Parallel workers.
    pub workers: usize,
    /// Plugins to soak.
    pub plugins: Vec<String>,
    /// One cycle in this many runs under strace (fd count; excluded from timings).
    pub fd_every: usize,
}

/// File descriptors one traced call made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FdCount {
    /// Descriptors created (open, socket, pipe, dup, ...).
    pub opened: u32,
    /// Highest descriptor number returned.
    pub highest: i64,
}

/// Counts the descriptors created in an `strace -f -o` log (successful calls only).
pub fn count_fds(log: &str) -> FdCount {
    let mut c = FdCount::default();
    for line in log.lines() {
        let Some((call, ret)) = line.rsplit_once(" = ") else {
            continue;
        };
        let Ok(r) = ret.split_whitespace().next().unwrap_or("").parse::<i64>() else {
            continue;
        };
        if r < 0 {
            continue;
        }
        // "PID name(args" or "PID <... name resumed>args".
        let body = call.trim_start_matches(|ch: char| ch.is_ascii_digit() || ch == ' ');
        let name = match body.strip_prefix("<... ") {
            Some(rest) => rest.split(' ').next().unwrap_or(""),
            None => body.split('(').next().unwrap_or(""),
        };
        match name {
            "pipe" | "pipe2" | "socketpair" => {
                // Two descriptors, in "[a, b]".
                c.opened += 2;
                if let Some(pair) = call.split('[').nth(1).and_then(|s| s.split(']').next()) {
                    for fd in pair.split(',').filter_map(|f| f.trim().parse::<i64>().ok()) {
                        c.highest = c.highest.max(fd);
                    }
                }
            }
            "fcntl" if !call.contains("F_DUPFD") => {}
            "" => {}
            _ => {
                c.opened += 1;
                c.highest = c.highest.max(r);
            }
        }
    }
    c
}

/// One finished cycle.
#[derive(Debug, Clone)]
struct Cycle {
    index: usize,
    add: Duration,
    del: Duration,
    /// Peak RSS of ADD/DEL (KiB), for cycles run under twill-spawn.
    rss_kb: Option<u64>,
    fds: Option<(FdCount, FdCount)>,
}

/// A named set of lines describing node state, for before/after comparison.
type State = Vec<(&'static str, BTreeSet<String>)>;

fn lines_of(cmd: &mut std::process::Command) -> BTreeSet<String> {
    cmd.output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

fn ip(ns: &str, args: &[&str]) -> BTreeSet<String> {
    lines_of(std::process::Command::new("ip").args(["-n", ns]).args(args))
}

/// Every file under `dir`, as paths relative to it.
fn files_under(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(rel) = p.strip_prefix(dir) {
                out.insert(rel.display().to_string());
            }
        }
    }
    out
}

/// The node state a pod's ADD touches: links (names only), routes of every table, permanent
/// neighbours, the nftables ruleset, the files under the data dir; plus the pods' links.
fn node_state(node: &str, pods: &[String], data: &Path) -> State {
    let links: BTreeSet<String> = ip(node, &["-o", "link", "show"])
        .iter()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect();
    let mut pod_links = BTreeSet::new();
    for p in pods {
        for l in ip(p, &["-o", "link", "show"]) {
            if let Some(n) = l.split(": ").nth(1)
                && n != "lo"
            {
                pod_links.insert(format!("{p}: {n}"));
            }
        }
    }
    let nft = lines_of(
        std::process::Command::new("ip").args(["netns", "exec", node, "nft", "list", "ruleset"]),
    );
    vec![
        ("links", links),
        // Without "linkdown": the bridge's carrier follows its ports asynchronously (linkwatch),
        // a flag of the kernel's, not state a plugin made.
        (
            "routes",
            ip(node, &["route", "show", "table", "all"])
                .into_iter()
                .map(|l| l.replace(" linkdown", ""))
                .collect(),
        ),
        (
            "neighbours",
            ip(node, &["neigh", "show", "nud", "permanent"]),
        ),
        ("nft", nft),
        ("files", files_under(data)),
        ("pod links", pod_links),
    ]
}

/// Runs the soak for every plugin in `opts`; returns its JSON.
pub fn run(opts: &SoakOpts) -> Result<Value, String> {
    let mut out = Vec::new();
    for plugin in &opts.plugins {
        check_interrupted()?;
        out.push(soak_one(plugin, opts)?);
    }
    Ok(Value::Array(out))
}

/// The config of `plugin` with its state under `data` (made here).
fn config_of(plugin: &str, data: &Path) -> Result<Value, String> {
    Ok(match plugin {
        "bridge-host-gw" => {
            let subnet = crate::bridge::write_subnet_file(data, true)?;
            let ipam = data.join("ipam");
            std::fs::create_dir(&ipam).map_err(|e| format!("create {}: {e}", ipam.display()))?;
            // ipMasq on, so the masquerade rules are part of what must stay constant.
            crate::bridge::twill_config(true, &ipam, &subnet)
        }
        "routed-veth" => crate::routed::twill_config(data),
        "host-local" => crate::host_local::config(data),
        other => return Err(format!("soak: no config for plugin {other:?}")),
    })
}

/// ADD time, DEL time, peak RSS (KiB) when probed and, when traced, the fds ADD and DEL opened.
type CycleOut = (Duration, Duration, Option<u64>, Option<(FdCount, FdCount)>);

/// ADD then DEL of one container on `pod`; with `strace`, both run under it and their fd counts
/// come back too; with `probe`, both run under twill-spawn and their peak RSS comes back.
fn cycle(
    bin: &Path,
    conf: &Value,
    id: &str,
    pod: &Path,
    strace: Option<(&Path, &Path)>,
    probe: bool,
) -> Result<CycleOut, String> {
    let mut times = [Duration::ZERO; 2];
    let mut rss = 0;
    let mut fds = [FdCount::default(); 2];
    let mut conf = conf.clone();
    for (k, op) in [Op::Add, Op::Del].into_iter().enumerate() {
        let stdin = conf.to_string();
        let env = CniEnv {
            command: op.name(),
            container_id: id,
            netns: pod,
            ifname: IFNAME,
            cni_path: bin.parent().unwrap_or(Path::new("/")),
        };
        let inv = match strace {
            Some((strace, log)) => {
                let log_s = log.display().to_string();
                let bin_s = bin.display().to_string();
                let args = ["-f", "-qq", "-o", &log_s, "-e", FD_SYSCALLS, &bin_s];
                let inv = invoke_args(strace, &args, &env, stdin.as_bytes())?;
                let text = std::fs::read_to_string(log)
                    .map_err(|e| format!("read {}: {e}", log.display()))?;
                fds[k] = count_fds(&text);
                inv
            }
            None if probe => invoke_probe(bin, &[], &env, stdin.as_bytes())?,
            None => invoke(bin, &env, stdin.as_bytes())?,
        };
        times[k] = inv.elapsed;
        rss = rss.max(inv.max_rss_kb);
        if op == Op::Add {
            let result: Value = serde_json::from_slice(&inv.stdout)
                .map_err(|e| format!("ADD {id}: stdout is not JSON: {e}"))?;
            if let Some(o) = conf.as_object_mut() {
                o.insert("prevResult".into(), result);
            }
        }
    }
    let fds = strace.map(|_| (fds[0], fds[1]));
    Ok((times[0], times[1], probe.then_some(rss), fds))
}

fn soak_one(plugin: &str, opts: &SoakOpts) -> Result<Value, String> {
    let dir = twill_bin_dir();
    let bin = find_bin(&dir, plugin).ok_or_else(|| {
        format!(
            "{plugin} not found in {} (set TWILL_BIN_DIR)",
            dir.display()
        )
    })?;
    let strace = find_bin(Path::new("/usr/bin"), "strace");
    println!(
        "== soak: {plugin}, {} cycles, {} workers, fds traced every {} cycles{}",
        opts.cycles,
        opts.workers,
        opts.fd_every,
        if strace.is_none() {
            " (strace missing: fds not counted)"
        } else {
            ""
        }
    );
    let p = prefix();
    let short: String = plugin.split('-').map(|w| &w[..1]).collect();
    let node = format!("{p}-soak-{short}");
    let pods: Vec<String> = (0..opts.workers)
        .map(|w| format!("{p}-soak-{short}-p{w}"))
        .collect();
    let mut names = vec![node.clone()];
    names.extend(pods.iter().cloned());
    let _ns = NetnsSet::create(names)?;
    let data = TempDir::create(&format!("soak-{short}"))?;
    let conf = config_of(plugin, data.path())?;
    let logs = TempDir::create(&format!("soak-{short}-strace"))?;

    // Warm-up, untimed: one cycle per pod makes the node-level state (bridge, rules).
    let node_path = netns_path(&node);
    let warm_err: Mutex<Option<String>> = Mutex::new(None);
    std::thread::scope(|s| {
        s.spawn(|| {
            let r = enter_netns(&node_path).and_then(|_| {
                pods.iter().enumerate().try_for_each(|(w, pod)| {
                    let id = format!("{p}-soak-{short}-warm{w}");
                    cycle(&bin, &conf, &id, &netns_path(pod), None, false).map(drop)
                })
            });
            if let (Err(e), Ok(mut slot)) = (r, warm_err.lock()) {
                *slot = Some(e);
            }
        });
    });
    if let Some(e) = warm_err.into_inner().ok().flatten() {
        return Err(format!("soak {plugin} warm-up: {e}"));
    }
    let before = node_state(&node, &pods, data.path());

    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let cycles: Mutex<Vec<Cycle>> = Mutex::new(Vec::with_capacity(opts.cycles));
    let first_err: Mutex<Option<String>> = Mutex::new(None);
    let start = Instant::now();
    std::thread::scope(|s| {
        for (w, pod) in pods.iter().enumerate() {
            let (next, failed, cycles, first_err) = (&next, &failed, &cycles, &first_err);
            let (bin, conf, node_path, strace) = (&bin, &conf, &node_path, &strace);
            let log = logs.path().join(format!("w{w}.log"));
            let pod = netns_path(pod);
            let p = &p;
            let short = &short;
            s.spawn(move || {
                let r = (|| -> Result<(), String> {
                    enter_netns(node_path)?;
                    loop {
                        if failed.load(Ordering::Relaxed) {
                            return Ok(());
                        }
                        check_interrupted()?;
                        let c = next.fetch_add(1, Ordering::Relaxed);
                        if c >= opts.cycles {
                            return Ok(());
                        }
                        let id = format!("{p}-soak-{short}-{c}");
                        let traced = (c % opts.fd_every == opts.fd_every / 2)
                            .then_some(())
                            .and(strace.as_deref())
                            .map(|s| (s, log.as_path()));
                        let probe = c % opts.fd_every == 0;
                        let (add, del, rss_kb, fds) = cycle(bin, conf, &id, &pod, traced, probe)?;
                        if let Ok(mut v) = cycles.lock() {
                            v.push(Cycle {
                                index: c,
                                add,
                                del,
                                rss_kb,
                                fds,
                            });
                        }
                    }
                })();
                if let Err(e) = r {
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
        return Err(format!("soak {plugin}: {e}"));
    }
    let after = node_state(&node, &pods, data.path());
    let mut cycles = cycles.into_inner().map_err(|_| "poisoned cycle list")?;
    cycles.sort_by_key(|c| c.index);
    summarize(plugin, opts, wall, &cycles, &before, &after)
}

/// Prints the soak's figures and returns them as JSON.
fn summarize(
    plugin: &str,
    opts: &SoakOpts,
    wall: Duration,
    cycles: &[Cycle],
    before: &State,
    after: &State,
) -> Result<Value, String> {
    println!(
        "  {} cycles in {:.1} s ({:.1} cycles/s)",
        cycles.len(),
        wall.as_secs_f64(),
        cycles.len() as f64 / wall.as_secs_f64().max(1e-9)
    );
    let timed: Vec<&Cycle> = cycles
        .iter()
        .filter(|c| c.fds.is_none() && c.rss_kb.is_none())
        .collect();
    let n = WINDOW.min(timed.len() / 2);
    let mut figures = Vec::new();
    let mut drift = serde_json::Map::new();
    if n > 0 {
        let (first, last) = (&timed[..n], &timed[timed.len() - n..]);
        type Pick = fn(&Cycle) -> Duration;
        let picks: [(&str, Pick); 3] = [
            ("ADD", |c| c.add),
            ("DEL", |c| c.del),
            ("cycle", |c| c.add + c.del),
        ];
        for (what, pick) in picks {
            let med = |w: &[&Cycle]| {
                Summary::of(&w.iter().map(|c| pick(c)).collect::<Vec<_>>()).map(|s| s.median_ms)
            };
            let (Some(a), Some(b)) = (med(first), med(last)) else {
                continue;
            };
            println!("  {what} median, first {n} / last {n} cycles: {a:.3} / {b:.3} ms");
            drift.insert(
                what.into(),
                json!({"first_ms": round3(a), "last_ms": round3(b)}),
            );
            figures.push(report::figure(
                &format!("{plugin} {what} last/first {n} cycles"),
                b / a.max(1e-9),
                "",
                Target::AtMost(DRIFT_TARGET),
            ));
        }
    }
    // Peak RSS of the probed cycles (under twill-spawn), first half of the run vs second half.
    let probed: Vec<u64> = cycles.iter().filter_map(|c| c.rss_kb).collect();
    if probed.len() >= 2 {
        let (a, b) = probed.split_at(probed.len() / 2);
        let (a, b) = (
            a.iter().copied().max().unwrap_or(0),
            b.iter().copied().max().unwrap_or(0),
        );
        println!(
            "  peak RSS over {} probed cycles, first half / second half: {a} / {b} KiB",
            probed.len()
        );
        drift.insert("rss_kb".into(), json!({"first_half": a, "second_half": b}));
    }
    let traced: Vec<(FdCount, FdCount)> = cycles.iter().filter_map(|c| c.fds).collect();
    let mut fd_json = json!(null);
    if !traced.is_empty() {
        let range = |f: fn(&(FdCount, FdCount)) -> i64| {
            let v: Vec<i64> = traced.iter().map(f).collect();
            (
                v.iter().copied().min().unwrap_or(0),
                v.iter().copied().max().unwrap_or(0),
            )
        };
        let add_open = range(|t| i64::from(t.0.opened));
        let del_open = range(|t| i64::from(t.1.opened));
        let add_high = range(|t| t.0.highest);
        let del_high = range(|t| t.1.highest);
        println!(
            "  fds per call over {} traced cycles: ADD opens {}..{} (highest fd {}..{}), DEL opens {}..{} (highest fd {}..{})",
            traced.len(),
            add_open.0,
            add_open.1,
            add_high.0,
            add_high.1,
            del_open.0,
            del_open.1,
            del_high.0,
            del_high.1
        );
        let spread = [add_open, del_open, add_high, del_high]
            .iter()
            .map(|(lo, hi)| hi - lo)
            .max()
            .unwrap_or(0);
        figures.push(report::figure(
            &format!("{plugin} fd count spread across traced calls"),
            spread as f64,
            "",
            Target::AtMost(0.0),
        ));
        fd_json = json!({
            "traced_cycles": traced.len(),
            "add_opened": [add_open.0, add_open.1],
            "del_opened": [del_open.0, del_open.1],
            "add_highest_fd": [add_high.0, add_high.1],
            "del_highest_fd": [del_high.0, del_high.1],
        });
    }
    let mut leftovers = serde_json::Map::new();
    let mut total = 0usize;
    for ((what, b), (_, a)) in before.iter().zip(after) {
        let extra: Vec<&String> = a.difference(b).collect();
        let gone: Vec<&String> = b.difference(a).collect();
        total += extra.len();
        for l in extra.iter().take(5) {
            println!("  LEFTOVER {what}: {l}");
        }
        for l in gone.iter().take(5) {
            println!("  GONE {what}: {l}");
        }
        leftovers.insert((*what).into(), json!({"extra": extra, "gone": gone}));
    }
    figures.push(report::figure(
        &format!("{plugin} leftovers (links, routes, neighbours, nft, files, pod links)"),
        total as f64,
        "",
        Target::AtMost(0.0),
    ));
    Ok(json!({
        "plugin": plugin,
        "cycles": cycles.len(),
        "workers": opts.workers,
        "wall_s": round3(wall.as_secs_f64()),
        "drift": drift,
        "fds": fd_json,
        "leftovers": leftovers,
        "figures": figures,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_counting_reads_strace_logs() {
        let log = "101 openat(AT_FDCWD, \"/x\", O_RDONLY|O_CLOEXEC) = 3\n\
                   101 socket(AF_NETLINK, SOCK_RAW|SOCK_CLOEXEC, NETLINK_ROUTE) = 4\n\
                   101 openat(AT_FDCWD, \"/y\", O_RDONLY) = -1 ENOENT (No such file or directory)\n\
                   101 pipe2([5, 6], O_CLOEXEC) = 0\n\
                   101 fcntl(3, F_GETFD) = 1\n\
                   101 fcntl(3, F_DUPFD_CLOEXEC, 3) = 7\n\
                   102 <... openat resumed>) = 8\n\
                   101 +++ exited with 0 +++\n";
        let c = count_fds(log);
        assert_eq!(c.opened, 6);
        assert_eq!(c.highest, 8);
    }
}
