//! The one performance table of a run: every benchmark records its rows here (per plugin,
//! configuration, side and operation) and `all` prints them together at the end, with the ratio
//! to the reference and to the kernel floor ("bare") of the same configuration, peak RSS and
//! binary size. The raw latencies stay with the rows for the latency chart (`svg`).

use crate::runner::{Op, Results};
use crate::stats::{Summary, round3};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// One row: one side's figures for one operation in one configuration.
#[derive(Debug, Clone)]
pub struct Row {
    /// The twill plugin the configuration benchmarks ("bridge-host-gw", ...).
    pub plugin: String,
    /// The configuration ("seq", "8-way masq", ...).
    pub config: String,
    /// "twill", "ref", "netavark" or "bare".
    pub side: String,
    /// The operation.
    pub op: Op,
    /// Latency summary.
    pub summary: Summary,
    /// Invocations per second of wall time (concurrent configurations only).
    pub per_second: Option<f64>,
    /// Largest peak RSS of any invocation, KiB (none for in-process baselines).
    pub max_rss_kb: Option<u64>,
    /// Bytes of the binaries the side execs (for the reference: plugin plus its IPAM plugin).
    pub bin_bytes: Option<u64>,
    /// The raw latencies.
    pub lat: Vec<Duration>,
}

static ROWS: Mutex<Vec<Row>> = Mutex::new(Vec::new());

/// Bytes of the files in `bins` together; None when any is unreadable or the list is empty.
pub fn size_of(bins: &[PathBuf]) -> Option<u64> {
    if bins.is_empty() {
        return None;
    }
    bins.iter()
        .map(|b| std::fs::metadata(b).ok().map(|m| m.len()))
        .sum()
}

/// Records every (side, op) of `results` as rows of `plugin` / `config`; `bins` gives each
/// side's binaries (for their size).
pub fn record(
    plugin: &str,
    config: &str,
    results: &Results,
    concurrent: bool,
    bins: &[(&str, Vec<PathBuf>)],
) {
    let Ok(mut rows) = ROWS.lock() else {
        return;
    };
    for ((label, op), s) in results {
        let Some(summary) = Summary::of(&s.lat) else {
            continue;
        };
        let per_second =
            (concurrent && !s.wall.is_zero()).then(|| s.lat.len() as f64 / s.wall.as_secs_f64());
        rows.push(Row {
            plugin: plugin.into(),
            config: config.into(),
            side: (*label).into(),
            op: *op,
            summary,
            per_second,
            max_rss_kb: s.rss_kb.iter().copied().max(),
            // The bare DEL is one in-process request: it execs no binary.
            bin_bytes: bins
                .iter()
                .find(|(l, _)| l == label)
                .filter(|_| !(*label == "bare" && *op == Op::Del))
                .and_then(|(_, b)| size_of(b)),
            lat: s.lat.clone(),
        });
    }
}

/// Where a side sorts within its group: twill, the reference, netavark, the floor.
fn side_rank(side: &str) -> u8 {
    match side {
        "twill" => 0,
        "ref" => 1,
        "netavark" => 2,
        "bare" => 3,
        _ => 4,
    }
}

/// A copy of every row recorded so far: groups (plugin, config) in recording order, within a
/// group ADD before DEL, and twill, ref, netavark, bare.
pub fn rows() -> Vec<Row> {
    let mut rows = ROWS.lock().map(|r| r.clone()).unwrap_or_default();
    let mut groups: Vec<(String, String)> = Vec::new();
    for r in &rows {
        let g = (r.plugin.clone(), r.config.clone());
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    rows.sort_by_key(|r| {
        let g = groups
            .iter()
            .position(|g| g.0 == r.plugin && g.1 == r.config)
            .unwrap_or(usize::MAX);
        (g, r.op, side_rank(&r.side))
    });
    rows
}

/// The median of the row of `side` with the same plugin, config and op as `row`.
fn median_of(rows: &[Row], row: &Row, side: &str) -> Option<f64> {
    rows.iter()
        .find(|r| {
            r.side == side && r.plugin == row.plugin && r.config == row.config && r.op == row.op
        })
        .map(|r| r.summary.median_ms)
        .filter(|m| *m > 0.0)
}

/// Prints the table of every recorded row and returns it as JSON.
pub fn print() -> Value {
    let rows = rows();
    if rows.is_empty() {
        return json!([]);
    }
    println!("== performance table (one run; ratios are within this run)");
    println!(
        "  {:<15} {:<16} {:<9} {:<4} {:>9} {:>9} {:>8} {:>8} {:>9} {:>7} {:>8}",
        "plugin",
        "config",
        "side",
        "op",
        "median ms",
        "p95 ms",
        "per s",
        "RSS KiB",
        "size KiB",
        "vs ref",
        "vs floor"
    );
    let mut out = Vec::new();
    let mut last = String::new();
    for row in &rows {
        let group = format!("{} {}", row.plugin, row.config);
        if group != last && !last.is_empty() {
            println!();
        }
        last = group;
        let opt = |v: Option<f64>, prec: usize| match v {
            Some(v) => format!("{v:.prec$}"),
            None => "-".into(),
        };
        let vs_ref = (row.side != "ref" && row.side != "bare")
            .then(|| median_of(&rows, row, "ref"))
            .flatten()
            .map(|m| row.summary.median_ms / m);
        let vs_floor = (row.side != "bare")
            .then(|| median_of(&rows, row, "bare"))
            .flatten()
            .map(|m| row.summary.median_ms / m);
        println!(
            "  {:<15} {:<16} {:<9} {:<4} {:>9.3} {:>9.3} {:>8} {:>8} {:>9} {:>7} {:>8}",
            row.plugin,
            row.config,
            row.side,
            row.op.name(),
            row.summary.median_ms,
            row.summary.p95_ms,
            opt(row.per_second, 0),
            row.max_rss_kb.map_or("-".into(), |k| k.to_string()),
            row.bin_bytes.map_or("-".into(), |b| (b / 1024).to_string()),
            opt(vs_ref, 2),
            opt(vs_floor, 2),
        );
        out.push(json!({
            "plugin": row.plugin,
            "config": row.config,
            "side": row.side,
            "op": row.op.name(),
            "summary": row.summary.to_json(),
            "per_second": row.per_second.map(round3),
            "max_rss_kb": row.max_rss_kb,
            "bin_bytes": row.bin_bytes,
            "vs_ref": vs_ref.map(round3),
            "vs_floor": vs_floor.map(round3),
        }));
    }
    Value::Array(out)
}
