//! `twill-bench host-local`: ADD then DEL, n times each, twill host-local vs the reference one,
//! each on its own fresh dataDir, same config, alternating invocation by invocation.

use crate::cleanup::{NetnsSet, TempDir, netns_path, prefix};
use crate::invoke::{find_bin, ref_bin_dir, twill_bin_dir};
use crate::report::{self, Target};
use crate::runner::{Job, Op, Results, Side, alternate, run_phase};
use crate::stats::Summary;
use serde_json::{Value, json};
use std::path::Path;

/// Network name used in the host-local config.
pub(crate) const NETWORK: &str = "twbench-hl";
/// A /16: 65k addresses, no exhaustion at any allowed n.
const SUBNET: &str = "10.88.0.0/16";
/// Target for the ADD median ratio twill/ref.
const ADD_RATIO_TARGET: f64 = 0.10;

/// The config a main plugin would pass to its IPAM plugin (the whole network config).
pub(crate) fn config(data_dir: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "type": "bridge",
        "ipam": {
            "type": "host-local",
            "ranges": [[{ "subnet": SUBNET }]],
            "routes": [{ "dst": "0.0.0.0/0" }],
            "dataDir": data_dir,
        }
    })
}

/// Runs the benchmark; returns its JSON.
pub fn run(n: usize, warmup: usize) -> Result<Value, String> {
    let twill_dir = twill_bin_dir();
    let Some(twill_bin) = find_bin(&twill_dir, "host-local") else {
        return Err(format!(
            "twill host-local not found in {} (set TWILL_BIN_DIR or run make build)",
            twill_dir.display()
        ));
    };
    let ref_dir = ref_bin_dir();
    let ref_bin = find_bin(&ref_dir, "host-local").ok_or_else(|| {
        format!(
            "reference host-local not found in {} (install containernetworking-plugins or set REF_CNI_DIR)",
            ref_dir.display()
        )
    })?;
    println!(
        "== host-local: n={n} warm-up={warmup}, cniVersion 1.0.0, {SUBNET}\n   twill: {}\n   ref:   {}",
        twill_bin.display(),
        ref_bin.display()
    );

    // host-local never enters the netns, but CNI_NETNS must name one for ADD: give a real one.
    let ns_name = format!("{}-hl", prefix());
    let ns = NetnsSet::create(vec![ns_name.clone()])?;
    let ns_path = netns_path(&ns.names()[0]);
    let twill_data = TempDir::create("hl-twill")?;
    let ref_data = TempDir::create("hl-ref")?;

    let total = warmup + n;
    let make = |label: &'static str, bin: &Path, data: &TempDir, cni_path: &Path| {
        Side::new(
            label,
            bin.to_path_buf(),
            cni_path.to_path_buf(),
            None,
            vec![ns_path.clone(); total],
            (0..total)
                .map(|i| format!("{}-hl-{label}-{i}", prefix()))
                .collect(),
            config(data.path()),
        )
    };
    let twill = make("twill", &twill_bin, &twill_data, &twill_dir);
    let refp = make("ref", &ref_bin, &ref_data, &ref_dir);

    // Warm-up (page cache, dataDir creation), untimed.
    let warm: Vec<usize> = (0..warmup).collect();
    let mut warm_rss = Vec::new();
    for side in [&twill, &refp] {
        for op in [Op::Add, Op::Del] {
            // Under twill-spawn: the only calls whose peak RSS is the plugin's own.
            let probe = run_phase(Job::Probe(side, op), &warm, 1)?;
            warm_rss.push(((side.label, op), probe.rss_kb));
        }
    }

    let timed: Vec<usize> = (warmup..total).collect();
    let mut results = Results::new();
    for (key, rss) in warm_rss {
        results.entry(key).or_default().rss_kb.extend(rss);
    }
    for op in [Op::Add, Op::Del] {
        let jobs = [Job::Plugin(&twill, op), Job::Plugin(&refp, op)];
        alternate(&jobs, &timed, 1, 1, &mut results)?;
    }

    crate::table::record(
        "host-local",
        "seq",
        &results,
        false,
        &[
            ("twill", vec![twill_bin.clone()]),
            ("ref", vec![ref_bin.clone()]),
        ],
    );
    let leftovers = [
        ("twill", leftover_reservations(twill_data.path())),
        ("ref", leftover_reservations(ref_data.path())),
    ];
    drop(ns);

    report::header("");
    let mut out = serde_json::Map::new();
    for label in ["twill", "ref"] {
        let mut ops = serde_json::Map::new();
        for op in [Op::Add, Op::Del] {
            if let Some(s) = results.get(&(label, op)).and_then(|s| Summary::of(&s.lat)) {
                report::row(label, op.name(), &s, "");
                ops.insert(op.name().into(), s.to_json());
            }
        }
        out.insert(label.into(), Value::Object(ops));
    }
    let mut figures = Vec::new();
    for (op, target) in [
        (Op::Add, Target::AtMost(ADD_RATIO_TARGET)),
        (Op::Del, Target::Info),
    ] {
        if let Some(r) = ratio(&results, op) {
            figures.push(report::figure(
                &format!("{} median ratio twill/ref", op.name()),
                r,
                "",
                target,
            ));
        }
    }
    for (label, left) in &leftovers {
        if *left != 0 {
            println!("  WARNING: {label} left {left} reservation(s) in its dataDir after DEL");
        }
    }
    out.insert("n".into(), json!(n));
    out.insert("warmup".into(), json!(warmup));
    out.insert("figures".into(), Value::Array(figures));
    out.insert(
        "leftover_reservations".into(),
        json!({ "twill": leftovers[0].1, "ref": leftovers[1].1 }),
    );
    Ok(Value::Object(out))
}

/// twill median / ref median for `op`.
pub fn ratio(results: &Results, op: Op) -> Option<f64> {
    let t = Summary::of(&results.get(&("twill", op))?.lat)?;
    let r = Summary::of(&results.get(&("ref", op))?.lat)?;
    (r.median_ms > 0.0).then(|| t.median_ms / r.median_ms)
}

/// Files named like an IP address in `<dataDir>/<network>/` (reservations left behind).
fn leftover_reservations(data_dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(data_dir.join(NETWORK)) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<std::net::IpAddr>().is_ok())
        })
        .count()
}
