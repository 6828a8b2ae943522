//! `twill-bench routed`: twill `routed-veth` vs reference `ptp` + `host-local` (its closest Go
//! analogue: a veth per pod, no bridge, a host route per pod), each run in its own "node" netns,
//! pods in pre-created netns; sequential and concurrent; plus the bare veth delete baseline.

use crate::bare::{BareMode, BareVeths};
use crate::cleanup::{NetnsSet, TempDir, check_interrupted, netns_path, prefix};
use crate::host_local::ratio;
use crate::invoke::{find_bin, ref_bin_dir, twill_bin_dir};
use crate::report::{self, Target};
use crate::runner::{Job, Op, Results, Side, alternate, run_phase};
use crate::stats::Summary;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// Network name of the routed configs.
pub(crate) const NETWORK: &str = "twbench-routed";
/// Pod block (host-local range), a /16.
const SUBNET: &str = "10.89.0.0/16";
/// Warm-up pods per side (untimed ADD+DEL; also makes the node state: blackhole, rules).
const WARMUP: usize = 3;
/// ADD median twill/ref target.
const ADD_RATIO_TARGET: f64 = 0.10;
/// ADD median / bare kernel sequence target.
const ADD_BARE_TARGET: f64 = 1.5;
/// DEL median / bare veth delete target.
const DEL_BARE_TARGET: f64 = 1.05;

/// Options of the routed benchmark.
pub struct RoutedOpts {
    /// Timed pods per side and concurrency.
    pub pods: usize,
    /// Concurrency levels.
    pub concurrency: Vec<usize>,
}

/// The reference config (`ptp` + `host-local`).
fn ref_config(data_dir: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "type": "ptp",
        "ipMasq": false,
        "ipam": {
            "type": "host-local",
            "ranges": [[{ "subnet": SUBNET }]],
            "routes": [{ "dst": "0.0.0.0/0" }],
            "dataDir": data_dir,
        }
    })
}

/// twill's config: the same IPAM, type `routed-veth`, an empty cluster view and a `runDir`
/// inside the bench's state dir (so its state goes away with it).
pub(crate) fn twill_config(data_dir: &Path) -> Value {
    let mut c = ref_config(data_dir);
    c["type"] = json!("routed-veth");
    c["peers"] = json!([]);
    c["runDir"] = json!(data_dir.join("run"));
    c
}

/// Runs the benchmark; returns its JSON.
pub fn run(opts: &RoutedOpts) -> Result<Value, String> {
    let td = twill_bin_dir();
    let rd = ref_bin_dir();
    let reference = find_bin(&rd, "ptp")
        .filter(|_| find_bin(&rd, "host-local").is_some())
        .ok_or_else(|| {
            format!(
                "reference ptp/host-local not found in {} (install containernetworking-plugins \
                 or set REF_CNI_DIR)",
                rd.display()
            )
        })?;
    let twill = find_bin(&td, "routed-veth").ok_or_else(|| {
        format!(
            "routed-veth not found in {} (build it or set TWILL_BIN_DIR)",
            td.display()
        )
    })?;
    println!(
        "== routed: pods={} concurrency={:?} warm-up={WARMUP}, {SUBNET}",
        opts.pods, opts.concurrency
    );
    println!("   twill: {}", twill.display());
    println!("   ref:   {} + host-local", reference.display());

    let p = prefix();
    let total = WARMUP + opts.pods;
    let tw_pods: Vec<String> = (0..total).map(|i| format!("{p}-rtp{i}")).collect();
    let ref_pods: Vec<String> = (0..total).map(|i| format!("{p}-rrp{i}")).collect();
    let bare_pods: Vec<String> = (0..opts.pods).map(|i| format!("{p}-rbp{i}")).collect();
    let bare_node = format!("{p}-rbnode");
    let mut names: Vec<String> = tw_pods.iter().chain(&ref_pods).cloned().collect();
    // The kernel floor runs in every configuration, sequential and concurrent.
    let bare_needed = true;
    if bare_needed {
        names.extend(bare_pods.iter().cloned());
        names.push(bare_node.clone());
    }
    let pool = NetnsSet::create(names)?;

    let mut configs = Vec::new();
    for &conc in &opts.concurrency {
        check_interrupted()?;
        let bins = ((twill.clone(), td.clone()), (reference.clone(), rd.clone()));
        let bare = bare_needed.then_some((&bare_node, &bare_pods[..]));
        configs.push(run_config(
            &bins, conc, opts.pods, &tw_pods, &ref_pods, bare,
        )?);
    }
    drop(pool);
    Ok(json!({
        "pods": opts.pods,
        "warmup": WARMUP,
        "configs": configs,
    }))
}

type Bin = (PathBuf, PathBuf);

/// One concurrency level on fresh node netns and dataDirs.
fn run_config(
    bins: &(Bin, Bin),
    conc: usize,
    pods: usize,
    tw_pods: &[String],
    ref_pods: &[String],
    bare: Option<(&String, &[String])>,
) -> Result<Value, String> {
    let tag = format!("c{conc}");
    println!("-- concurrency {conc}");
    let p = prefix();
    let tw_node = format!("{p}-rtnode-{tag}");
    let ref_node = format!("{p}-rrnode-{tag}");
    let nodes = NetnsSet::create(vec![tw_node.clone(), ref_node.clone()])?;
    let ref_data = TempDir::create(&format!("rt-ref-{tag}"))?;
    let tw_data = TempDir::create(&format!("rt-twill-{tag}"))?;
    let total = WARMUP + pods;
    let ids = |label: &str| -> Vec<String> {
        (0..total)
            .map(|i| format!("{p}-{label}-{tag}-{i}"))
            .collect()
    };
    let paths =
        |names: &[String]| -> Vec<PathBuf> { names.iter().map(|n| netns_path(n)).collect() };
    let ((tw_bin, tw_dir), (ref_bin, ref_dir)) = bins;
    let refp = Side::new(
        "ref",
        ref_bin.clone(),
        ref_dir.clone(),
        Some(netns_path(&ref_node)),
        paths(ref_pods),
        ids("ref"),
        ref_config(ref_data.path()),
    );
    let twill = Side::new(
        "twill",
        tw_bin.clone(),
        tw_dir.clone(),
        Some(netns_path(&tw_node)),
        paths(tw_pods),
        ids("twill"),
        twill_config(tw_data.path()),
    );
    let sides = [&twill, &refp];
    let warm: Vec<usize> = (0..WARMUP).collect();
    let mut warm_rss = Vec::new();
    for side in &sides {
        for op in [Op::Add, Op::Del] {
            // Under twill-spawn: the only calls whose peak RSS is the plugin's own.
            let probe = run_phase(Job::Probe(side, op), &warm, 1)?;
            warm_rss.push(((side.label, op), probe.rss_kb));
        }
    }
    let bare_veths = match bare {
        Some((node, pods)) => Some(BareVeths::prepare(node, pods, WARMUP, BareMode::Routed)?),
        _ => None,
    };

    let timed: Vec<usize> = (WARMUP..total).collect();
    let chunk = 2 * conc;
    let mut results = Results::new();
    for (key, rss) in warm_rss {
        results.entry(key).or_default().rss_kb.extend(rss);
    }
    let mut add_jobs: Vec<Job> = sides.iter().map(|s| Job::Plugin(s, Op::Add)).collect();
    if let Some(b) = &bare_veths {
        add_jobs.push(Job::BareAdd(b));
    }
    alternate(&add_jobs, &timed, chunk, conc, &mut results)?;
    let mut del_jobs: Vec<Job> = sides.iter().map(|s| Job::Plugin(s, Op::Del)).collect();
    if let Some(b) = &bare_veths {
        // Bare deletes interleave with the plugins' DELs, pod index for pod index.
        del_jobs.push(Job::BareDel(b));
    }
    alternate(&del_jobs, &timed, chunk, conc, &mut results)?;
    drop(nodes);

    let thru = conc > 1;
    report::header(if thru { "   pods/s" } else { "" });
    let mut res_json = serde_json::Map::new();
    let order = ["twill", "ref", "bare"]
        .into_iter()
        .flat_map(|l| [(l, Op::Add), (l, Op::Del)]);
    for (label, op) in order {
        let Some((s, sum)) = results
            .get(&(label, op))
            .and_then(|s| Some((s, Summary::of(&s.lat)?)))
        else {
            continue;
        };
        let rate = s.lat.len() as f64 / s.wall.as_secs_f64().max(1e-9);
        let extra = if thru {
            format!(" {rate:>8.1}")
        } else {
            String::new()
        };
        report::row(label, op.name(), &sum, &extra);
        let mut j = sum.to_json();
        j["per_second"] = json!(crate::stats::round3(rate));
        res_json
            .entry(label.to_string())
            .or_insert_with(|| json!({}))[op.name()] = j;
    }
    let config = if conc == 1 {
        "seq".to_string()
    } else {
        format!("{conc}-way")
    };
    let mut bins = vec![
        ("twill", vec![tw_bin.clone()]),
        ("ref", vec![ref_bin.clone(), ref_dir.join("host-local")]),
    ];
    if let Some(b) = &bare_veths {
        bins.push(("bare", vec![b.bin.clone()]));
    }
    crate::table::record("routed-veth", &config, &results, thru, &bins);
    let mut figures = Vec::new();
    let add_median = |label: &str| {
        results
            .get(&(label, Op::Add))
            .and_then(|s| Summary::of(&s.lat))
            .map(|s| s.median_ms)
    };
    if let (Some(t), Some(b)) = (add_median("twill"), add_median("bare")) {
        figures.push(report::figure(
            "routed ADD median vs bare kernel sequence",
            t / b,
            "",
            Target::AtMost(ADD_BARE_TARGET),
        ));
    }
    if let Some(r) = ratio(&results, Op::Add) {
        figures.push(report::figure(
            "routed ADD median ratio twill/ref",
            r,
            "",
            Target::AtMost(ADD_RATIO_TARGET),
        ));
    }
    if let Some(r) = ratio(&results, Op::Del) {
        figures.push(report::figure(
            "routed DEL median ratio twill/ref",
            r,
            "",
            Target::Info,
        ));
    }
    let median = |label: &str| {
        results
            .get(&(label, Op::Del))
            .and_then(|s| Summary::of(&s.lat))
            .map(|s| s.median_ms)
    };
    if let (Some(del), Some(bare)) = (median("twill"), median("bare")) {
        figures.push(report::figure(
            "routed DEL median vs bare veth delete",
            del / bare,
            "",
            Target::AtMost(DEL_BARE_TARGET),
        ));
    }
    Ok(json!({
        "concurrency": conc,
        "results": res_json,
        "figures": figures,
    }))
}
