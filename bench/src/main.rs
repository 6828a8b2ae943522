//! twill-bench: times whole plugin invocations (exec with env + stdin, wait, read stdout) of twill
//! against the reference Go plugins, in the same run, and prints median, p95 and ratios.
//!
//! Usage:
//!   twill-bench host-local [--n 200] [--warmup 5]
//!   twill-bench bridge [--pods 100] [--concurrency 1,8] [--masq both|on|off]
//!   twill-bench routed [--pods 100] [--concurrency 1,8]
//!   twill-bench twilld
//!   twill-bench vxlan [--pods 100]
//!   twill-bench peers [--pods 50]
//!   twill-bench soak [--cycles 2000] [--workers 8] [--plugins a,b] [--fd-every 100]
//!   twill-bench etcd                 (twilld's etcd mode; not part of `all`: it idles 30 s)
//!   twill-bench all [all of the options above]
//!
//! Env: TWILL_BIN_DIR (default <workspace>/target/release), REF_CNI_DIR (default /usr/lib/cni),
//! BENCH_OUT_DIR (default <workspace>/bench/out). Exit status is non-zero only when the harness
//! could not measure (missing binaries, a plugin error, a signal); missed targets print "MISSED".

mod bare;
mod bridge;
mod cleanup;
mod etcd;
mod host_local;
mod invoke;
mod peers;
mod report;
mod routed;
mod runner;
mod soak;
mod stats;
mod svg;
mod table;
mod twilld;
mod vxlan;

use serde_json::{Value, json};
use std::path::PathBuf;

const USAGE: &str = "usage: twill-bench host-local [--n N] [--warmup W]
       twill-bench bridge [--pods N] [--concurrency 1,8] [--masq both|on|off]
       twill-bench routed [--pods N] [--concurrency 1,8]
       twill-bench twilld
       twill-bench vxlan [--pods N]
       twill-bench peers [--pods N]
       twill-bench soak [--cycles N] [--workers W] [--plugins a,b] [--fd-every K]
       twill-bench etcd
       twill-bench all [options of all]";

/// Parsed command line.
struct Args {
    what: String,
    n: usize,
    warmup: usize,
    bridge: bridge::BridgeOpts,
    soak: soak::SoakOpts,
    pods_given: bool,
}

fn parse_num(flag: &str, v: Option<String>, max: usize) -> Result<usize, String> {
    let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
    let n: usize = v
        .parse()
        .map_err(|_| format!("{flag}: not a number: {v}"))?;
    if n == 0 || n > max {
        return Err(format!("{flag}: must be in 1..={max}"));
    }
    Ok(n)
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let what = it.next().ok_or_else(|| USAGE.to_string())?;
    if ![
        "host-local",
        "bridge",
        "routed",
        "twilld",
        "vxlan",
        "peers",
        "soak",
        "etcd",
        "all",
    ]
    .contains(&what.as_str())
    {
        return Err(format!("unknown subcommand {what:?}\n{USAGE}"));
    }
    let mut a = Args {
        what,
        n: 200,
        warmup: 5,
        bridge: bridge::BridgeOpts {
            pods: 100,
            concurrency: vec![1, 8],
            masq: vec![false, true],
        },
        soak: soak::SoakOpts {
            cycles: 2000,
            workers: 8,
            plugins: soak::PLUGINS.iter().map(|p| p.to_string()).collect(),
            fd_every: 100,
        },
        pods_given: false,
    };
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--n" => a.n = parse_num("--n", it.next(), 100_000)?,
            "--warmup" => {
                let v = it.next().ok_or("--warmup needs a value")?;
                a.warmup = v
                    .parse()
                    .map_err(|_| format!("--warmup: not a number: {v}"))?;
                if a.warmup > 1000 {
                    return Err("--warmup: at most 1000".into());
                }
            }
            "--pods" => {
                a.bridge.pods = parse_num("--pods", it.next(), 2000)?;
                a.pods_given = true;
            }
            "--concurrency" => {
                let v = it.next().ok_or("--concurrency needs a value")?;
                a.bridge.concurrency = v
                    .split(',')
                    .map(|c| parse_num("--concurrency", Some(c.trim().to_string()), 64))
                    .collect::<Result<_, _>>()?;
            }
            "--masq" => {
                a.bridge.masq = match it.next().as_deref() {
                    Some("both") => vec![false, true],
                    Some("on") => vec![true],
                    Some("off") => vec![false],
                    other => return Err(format!("--masq: both|on|off, got {other:?}")),
                }
            }
            "--cycles" => a.soak.cycles = parse_num("--cycles", it.next(), 1_000_000)?,
            "--workers" => a.soak.workers = parse_num("--workers", it.next(), 64)?,
            "--fd-every" => a.soak.fd_every = parse_num("--fd-every", it.next(), 1_000_000)?,
            "--plugins" => {
                let v = it.next().ok_or("--plugins needs a value")?;
                a.soak.plugins = v.split(',').map(|p| p.trim().to_string()).collect();
                if let Some(bad) = a
                    .soak
                    .plugins
                    .iter()
                    .find(|p| !soak::PLUGINS.contains(&p.as_str()))
                {
                    return Err(format!(
                        "--plugins: unknown plugin {bad:?} (one of {:?})",
                        soak::PLUGINS
                    ));
                }
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown option {other:?}\n{USAGE}")),
        }
    }
    Ok(a)
}

fn out_dir() -> PathBuf {
    match std::env::var_os("BENCH_OUT_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/out")),
    }
}

fn machine() -> Value {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    json!({
        "kernel": read("/proc/sys/kernel/osrelease"),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "loadavg": read("/proc/loadavg"),
    })
}

/// Runs the requested benchmarks, filling `doc`; Err on harness failure.
fn run(args: &Args, doc: &mut serde_json::Map<String, Value>) -> Result<(), String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err("must run as root (network namespaces)".into());
    }
    if args.what == "host-local" || args.what == "all" {
        let v = host_local::run(args.n, args.warmup)?;
        doc.insert("host_local".into(), v);
    }
    if args.what == "bridge" || args.what == "all" {
        let v = bridge::run(&args.bridge)?;
        doc.insert("bridge".into(), v);
    }
    if args.what == "routed" || args.what == "all" {
        let opts = routed::RoutedOpts {
            pods: args.bridge.pods,
            concurrency: args.bridge.concurrency.clone(),
        };
        doc.insert("routed".into(), routed::run(&opts)?);
    }
    if args.what == "twilld" || args.what == "all" {
        let v = twilld::run()?;
        doc.insert("twilld".into(), v);
    }
    if args.what == "vxlan" || args.what == "all" {
        let v = vxlan::run(&vxlan::VxlanOpts {
            pods: args.bridge.pods,
        })?;
        doc.insert("vxlan".into(), v);
    }
    if args.what == "peers" || args.what == "all" {
        let pods = if args.pods_given {
            args.bridge.pods.min(200)
        } else {
            peers::PODS
        };
        doc.insert("peers".into(), peers::run(pods)?);
    }
    if args.what == "soak" || args.what == "all" {
        doc.insert("soak".into(), soak::run(&args.soak)?);
    }
    if args.what == "etcd" {
        doc.insert("etcd".into(), etcd::run()?);
    }
    doc.insert("table".into(), table::print());
    let title = format!(
        "twill vs reference: latency per call (CDF), {}",
        doc.get("timestamp").and_then(Value::as_str).unwrap_or("")
    );
    if let Some(svg) = svg::chart(&table::rows(), &title) {
        let dir = out_dir();
        let path = dir.join(format!(
            "{}-latency.svg",
            doc.get("timestamp")
                .and_then(Value::as_str)
                .unwrap_or("run")
        ));
        std::fs::create_dir_all(&dir)
            .and_then(|_| std::fs::write(&path, svg))
            .map_err(|e| format!("write {}: {e}", path.display()))?;
        println!("latency chart: {}", path.display());
        doc.insert("latency_svg".into(), json!(path));
    }
    Ok(())
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = cleanup::install_handlers() {
        eprintln!("twill-bench: {e}");
        std::process::exit(1);
    }
    // host-local's owner index of this run, removed with it (nothing left under /run/twill).
    let index = match cleanup::TempDir::create("index") {
        Ok(d) => d,
        Err(e) => {
            eprintln!("twill-bench: {e}");
            std::process::exit(1);
        }
    };
    invoke::set_index_dir(index.path());
    let ts = report::timestamp();
    let mut doc = serde_json::Map::new();
    doc.insert("timestamp".into(), json!(ts));
    doc.insert("machine".into(), machine());
    doc.insert(
        "command".into(),
        json!(std::env::args().skip(1).collect::<Vec<_>>()),
    );
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&args, &mut doc)));
    // Guards have run by now; this only catches what a panic skipped.
    cleanup::remove_all_registered();
    let status = match outcome {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            eprintln!("twill-bench: FAILED: {e}");
            doc.insert("error".into(), json!(e));
            1
        }
        Err(_) => {
            doc.insert("error".into(), json!("panic"));
            1
        }
    };
    let dir = out_dir();
    let path = dir.join(format!("{ts}.json"));
    let written = std::fs::create_dir_all(&dir).and_then(|_| {
        let text = serde_json::to_string_pretty(&Value::Object(doc)).unwrap_or_default();
        std::fs::write(&path, text + "\n")
    });
    match written {
        Ok(()) => println!("results: {}", path.display()),
        Err(e) => {
            eprintln!("twill-bench: cannot write {}: {e}", path.display());
            std::process::exit(1);
        }
    }
    std::process::exit(status);
}
