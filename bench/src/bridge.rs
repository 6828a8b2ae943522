//! `twill-bench bridge`: twill `bridge-host-gw` vs reference `bridge` + `host-local`, each run in
//! its own "node" netns, pods in pre-created netns; sequential and concurrent, ipMasq on/off;
//! plus the bare veth delete baseline.

use crate::bare::{BRIDGE, BareMode, BareVeths};
use crate::cleanup::{NetnsSet, TempDir, check_interrupted, netns_path, prefix};
use crate::host_local::ratio;
use crate::invoke::{find_bin, ref_bin_dir, twill_bin_dir};
use crate::report::{self, Target};
use crate::runner::{Job, Op, Results, Side, alternate, run_phase};
use crate::stats::Summary;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// Network name of the bridge configs.
pub(crate) const NETWORK: &str = "twbench";
/// Pod subnet (host-local range), a /16.
const SUBNET: &str = "10.88.0.0/16";
/// Cluster network written to twill's subnet file.
const CLUSTER: &str = "10.0.0.0/8";
/// Warm-up pods per side and config (untimed ADD+DEL; also creates the bridge and masq rules).
const WARMUP: usize = 3;
/// ADD median twill/ref target.
const ADD_RATIO_TARGET: f64 = 0.10;
/// ADD median / bare kernel sequence target.
const ADD_BARE_TARGET: f64 = 1.5;
/// DEL median / bare veth delete target.
const DEL_BARE_TARGET: f64 = 1.05;
/// ipMasq ADD cost target (ms).
const MASQ_COST_TARGET_MS: f64 = 1.0;

/// Options of the bridge benchmark.
pub struct BridgeOpts {
    /// Timed pods per side and config.
    pub pods: usize,
    /// Concurrency levels.
    pub concurrency: Vec<usize>,
    /// ipMasq values.
    pub masq: Vec<bool>,
}

/// The reference config (`bridge` + `host-local`).
fn ref_config(masq: bool, data_dir: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "type": "bridge",
        "bridge": BRIDGE,
        "isGateway": true,
        "ipMasq": masq,
        "ipam": {
            "type": "host-local",
            "ranges": [[{ "subnet": SUBNET }]],
            "routes": [{ "dst": "0.0.0.0/0" }],
            "dataDir": data_dir,
        }
    })
}

/// twill's config: the same keys, type `bridge-host-gw`, plus `subnetFile`, `peers` and a
/// `runDir` inside the bench's state dir (so its fingerprint stamps go away with it).
pub(crate) fn twill_config(masq: bool, data_dir: &Path, subnet_file: &Path) -> Value {
    let mut c = ref_config(masq, data_dir);
    c["type"] = json!("bridge-host-gw");
    c["subnetFile"] = json!(subnet_file);
    c["peers"] = json!([]);
    c["runDir"] = json!(data_dir.join("run"));
    c
}

/// A flannel-style subnet.env matching the host-local range.
pub(crate) fn write_subnet_file(dir: &Path, masq: bool) -> Result<PathBuf, String> {
    let p = dir.join("subnet.env");
    let text = format!(
        "FLANNEL_NETWORK={CLUSTER}\nFLANNEL_SUBNET=10.88.0.1/16\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ={masq}\n"
    );
    std::fs::write(&p, text).map_err(|e| format!("write {}: {e}", p.display()))?;
    Ok(p)
}

struct Bins {
    twill: Option<(PathBuf, PathBuf)>,
    reference: (PathBuf, PathBuf),
    /// podman's netavark (`$NETAVARK_BIN`, else Debian's /usr/lib/podman/netavark), if present.
    netavark: Option<PathBuf>,
}

fn find_bins() -> Result<Bins, String> {
    let td = twill_bin_dir();
    let rd = ref_bin_dir();
    let reference = find_bin(&rd, "bridge")
        .filter(|_| find_bin(&rd, "host-local").is_some())
        .ok_or_else(|| {
            format!(
                "reference bridge/host-local not found in {} (install containernetworking-plugins or set REF_CNI_DIR)",
                rd.display()
            )
        })?;
    Ok(Bins {
        twill: find_bin(&td, "bridge-host-gw").map(|b| (b, td)),
        reference: (reference, rd),
        netavark: std::env::var_os("NETAVARK_BIN")
            .map(PathBuf::from)
            .or_else(|| Some(PathBuf::from("/usr/lib/podman/netavark")))
            .filter(|p| p.is_file()),
    })
}

/// Runs the benchmark; returns its JSON.
pub fn run(opts: &BridgeOpts) -> Result<Value, String> {
    let bins = find_bins()?;
    println!(
        "== bridge: pods={} concurrency={:?} ipMasq={:?} warm-up={WARMUP}, {SUBNET}",
        opts.pods, opts.concurrency, opts.masq
    );
    match &bins.twill {
        Some((b, _)) => println!("   twill: {}", b.display()),
        None => println!(
            "   twill: SKIPPED (bridge-host-gw absent from {}): reference side only",
            twill_bin_dir().display()
        ),
    }
    println!("   ref:   {} + host-local", bins.reference.0.display());
    match &bins.netavark {
        Some(b) => println!(
            "   netavark: {} (setup/teardown, static IPs; ipMasq off = internal network)",
            b.display()
        ),
        None => println!("   netavark: SKIPPED (install Debian's netavark or set NETAVARK_BIN)"),
    }

    let p = prefix();
    let total = WARMUP + opts.pods;
    // Pod netns are made once and reused by every config (DEL leaves them empty).
    let mut names: Vec<String> = Vec::new();
    let tw_pods: Vec<String> = (0..total).map(|i| format!("{p}-tp{i}")).collect();
    let ref_pods: Vec<String> = (0..total).map(|i| format!("{p}-rp{i}")).collect();
    let bare_pods: Vec<String> = (0..opts.pods).map(|i| format!("{p}-bp{i}")).collect();
    let bare_node = format!("{p}-bnode");
    if bins.twill.is_some() {
        names.extend(tw_pods.iter().cloned());
    }
    names.extend(ref_pods.iter().cloned());
    let nv_pods: Vec<String> = (0..total).map(|i| format!("{p}-np{i}")).collect();
    if bins.netavark.is_some() {
        names.extend(nv_pods.iter().cloned());
    }
    // The kernel floor runs in every configuration, sequential and concurrent.
    let bare_needed = true;
    if bare_needed {
        names.extend(bare_pods.iter().cloned());
        names.push(bare_node.clone());
    }
    let pool = NetnsSet::create(names)?;

    let mut configs = Vec::new();
    let mut masq_medians: Vec<(usize, bool, &'static str, f64)> = Vec::new();
    for &conc in &opts.concurrency {
        for &masq in &opts.masq {
            check_interrupted()?;
            let cfg = run_config(
                &bins,
                conc,
                masq,
                opts.pods,
                (&tw_pods, &ref_pods, &nv_pods),
                bare_needed.then_some((&bare_node, &bare_pods[..])),
            )?;
            for label in ["twill", "ref"] {
                if let Some(m) = cfg.1.get(label) {
                    masq_medians.push((conc, masq, label, *m));
                }
            }
            configs.push(cfg.0);
        }
    }
    drop(pool);

    let mut masq_figures = Vec::new();
    if opts.masq.len() == 2 {
        println!("-- ipMasq cost on ADD (masq-on median - masq-off median)");
        for &conc in &opts.concurrency {
            for label in ["twill", "ref"] {
                let get = |m: bool| {
                    masq_medians
                        .iter()
                        .find(|x| x.0 == conc && x.1 == m && x.2 == label)
                        .map(|x| x.3)
                };
                if let (Some(on), Some(off)) = (get(true), get(false)) {
                    let target = if label == "twill" {
                        Target::Below(MASQ_COST_TARGET_MS)
                    } else {
                        Target::Info
                    };
                    let mut f = report::figure(
                        &format!("{label} ipMasq ADD cost, concurrency {conc}"),
                        on - off,
                        " ms",
                        target,
                    );
                    f["concurrency"] = json!(conc);
                    masq_figures.push(f);
                }
            }
        }
    }
    Ok(json!({
        "pods": opts.pods,
        "warmup": WARMUP,
        "twill_skipped": bins.twill.is_none(),
        "configs": configs,
        "masq_cost": masq_figures,
    }))
}

/// One (concurrency, ipMasq) configuration on fresh node netns and dataDirs. Returns its JSON
/// and the ADD median per label.
fn run_config(
    bins: &Bins,
    conc: usize,
    masq: bool,
    pods: usize,
    (tw_pods, ref_pods, nv_pods): (&[String], &[String], &[String]),
    bare: Option<(&String, &[String])>,
) -> Result<(Value, std::collections::BTreeMap<&'static str, f64>), String> {
    let tag = format!("c{conc}-{}", if masq { "masq" } else { "nomasq" });
    println!("-- concurrency {conc}, ipMasq {masq}");
    let p = prefix();
    let tw_node = format!("{p}-tnode-{tag}");
    let ref_node = format!("{p}-rnode-{tag}");
    let nv_node = format!("{p}-nnode-{tag}");
    let mut node_names = vec![ref_node.clone()];
    if bins.twill.is_some() {
        node_names.push(tw_node.clone());
    }
    if bins.netavark.is_some() {
        node_names.push(nv_node.clone());
    }
    let nodes = NetnsSet::create(node_names)?;
    let ref_data = TempDir::create(&format!("br-ref-{tag}"))?;
    let tw_data = TempDir::create(&format!("br-twill-{tag}"))?;
    let total = WARMUP + pods;
    let ids = |label: &str| -> Vec<String> {
        (0..total)
            .map(|i| format!("{p}-{label}-{tag}-{i}"))
            .collect()
    };
    let paths =
        |names: &[String]| -> Vec<PathBuf> { names.iter().map(|n| netns_path(n)).collect() };

    let refp = Side::new(
        "ref",
        bins.reference.0.clone(),
        bins.reference.1.clone(),
        Some(netns_path(&ref_node)),
        paths(ref_pods),
        ids("ref"),
        ref_config(masq, ref_data.path()),
    );
    let twill = match &bins.twill {
        Some((bin, dir)) => {
            let subnet_file = write_subnet_file(tw_data.path(), masq)?;
            let ipam_dir = tw_data.path().join("ipam");
            std::fs::create_dir(&ipam_dir)
                .map_err(|e| format!("create {}: {e}", ipam_dir.display()))?;
            Some(Side::new(
                "twill",
                bin.clone(),
                dir.clone(),
                Some(netns_path(&tw_node)),
                paths(tw_pods),
                ids("twill"),
                twill_config(masq, &ipam_dir, &subnet_file),
            ))
        }
        None => None,
    };
    let nv_dir = TempDir::create(&format!("br-netavark-{tag}"))?;
    let netavark = bins.netavark.as_ref().map(|bin| {
        let mut side = Side::new(
            "netavark",
            bin.clone(),
            bins.reference.1.clone(),
            Some(netns_path(&nv_node)),
            paths(nv_pods),
            ids("nv"),
            ref_config(masq, nv_dir.path()),
        );
        side.netavark_dir = Some(nv_dir.path().to_path_buf());
        side
    });
    let sides: Vec<&Side> = twill
        .iter()
        .chain(std::iter::once(&refp))
        .chain(netavark.iter())
        .collect();

    // Warm-up, untimed: creates the bridge and (ipMasq) the masquerade rules in each node.
    let warm: Vec<usize> = (0..WARMUP).collect();
    let mut warm_rss = Vec::new();
    for side in &sides {
        for op in [Op::Add, Op::Del] {
            // Under twill-spawn: the only calls whose peak RSS is the plugin's own.
            let probe = run_phase(Job::Probe(side, op), &warm, 1)?;
            warm_rss.push(((side.label, op), probe.rss_kb));
        }
    }
    // Bare veth pairs for the baseline, sequential configs only, made before any timing.
    let bare_veths = match bare {
        Some((node, pods)) => Some(BareVeths::prepare(node, pods, WARMUP, BareMode::Bridge)?),
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

    let leftovers: Vec<(String, usize)> = sides
        .iter()
        .map(|s| {
            let node = s.node.as_deref().unwrap_or(Path::new(""));
            (s.label.to_string(), leftover_links(node))
        })
        .collect();
    drop(nodes);

    let thru = conc > 1;
    let bins_twill = bins.twill.clone();
    let bins_netavark = bins.netavark.clone();
    report::header(if thru { "   pods/s" } else { "" });
    let mut res_json = serde_json::Map::new();
    let mut add_medians = std::collections::BTreeMap::new();
    let order = ["twill", "ref", "netavark", "bare"]
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
        if op == Op::Add {
            add_medians.insert(label, sum.median_ms);
        }
    }
    let config = format!(
        "{} {}",
        if conc == 1 {
            "seq".to_string()
        } else {
            format!("{conc}-way")
        },
        if masq { "masq" } else { "nomasq" }
    );
    let mut bins = vec![(
        "ref",
        vec![
            bins.reference.0.clone(),
            bins.reference.1.join("host-local"),
        ],
    )];
    if let Some((b, _)) = &bins_twill {
        bins.push(("twill", vec![b.clone()]));
    }
    if let Some(b) = &bins_netavark {
        bins.push(("netavark", vec![b.clone()]));
    }
    if let Some(b) = &bare_veths {
        bins.push(("bare", vec![b.bin.clone()]));
    }
    crate::table::record("bridge-host-gw", &config, &results, thru, &bins);
    let mut figures = Vec::new();
    let add_median = |label: &str| {
        results
            .get(&(label, Op::Add))
            .and_then(|s| Summary::of(&s.lat))
            .map(|s| s.median_ms)
    };
    if let (Some(t), Some(b)) = (add_median("twill"), add_median("bare")) {
        figures.push(report::figure(
            "ADD median vs bare kernel sequence",
            t / b,
            "",
            Target::AtMost(ADD_BARE_TARGET),
        ));
    }
    if let Some(r) = ratio(&results, Op::Add) {
        figures.push(report::figure(
            "ADD median ratio twill/ref",
            r,
            "",
            Target::AtMost(ADD_RATIO_TARGET),
        ));
    }
    if let Some(r) = ratio(&results, Op::Del) {
        figures.push(report::figure(
            "DEL median ratio twill/ref",
            r,
            "",
            Target::Info,
        ));
    }
    let bare_med = results
        .get(&("bare", Op::Del))
        .and_then(|s| Summary::of(&s.lat))
        .map(|s| s.median_ms);
    for label in ["twill", "ref"] {
        let del = results
            .get(&(label, Op::Del))
            .and_then(|s| Summary::of(&s.lat));
        if let (Some(del), Some(bare)) = (del, bare_med) {
            let (name, target) = if label == "twill" {
                (
                    "DEL median vs bare veth delete".to_string(),
                    Target::AtMost(DEL_BARE_TARGET),
                )
            } else {
                (
                    "ref DEL median vs bare veth delete".to_string(),
                    Target::Info,
                )
            };
            figures.push(report::figure(&name, del.median_ms / bare, "", target));
        }
    }
    for (label, n) in &leftovers {
        if *n != 0 {
            println!(
                "  WARNING: {label} left {n} link(s) other than lo/{BRIDGE} in its node netns after DEL"
            );
        }
    }
    let json = json!({
        "concurrency": conc,
        "ipMasq": masq,
        "results": res_json,
        "figures": figures,
        "leftover_node_links": leftovers.iter().map(|(l, n)| json!({"plugin": l, "links": n})).collect::<Vec<_>>(),
    });
    Ok((json, add_medians))
}

/// Links in the node netns other than lo and the bridge (veth ends a DEL should have removed).
fn leftover_links(node: &Path) -> usize {
    let Some(name) = node.file_name().and_then(|n| n.to_str()) else {
        return 0;
    };
    let Ok(out) = std::process::Command::new("ip")
        .args(["-n", name, "-o", "link", "show"])
        .output()
    else {
        return 0;
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .filter(|n| *n != "lo" && *n != BRIDGE)
        .count()
}
