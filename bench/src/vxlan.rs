//! `twill-bench vxlan`: twill `vxlan` ADD/DEL vs the reference `bridge` + `host-local` (the
//! nearest Go equivalent: same pod wiring, no overlay), sequential, each in its own node netns;
//! then pod-to-pod TCP throughput across two nodes with iperf3 (bounded to a few seconds),
//! vxlan against bridge-host-gw on the same L2 underlay: the price of the overlay.

use crate::cleanup::{NetnsSet, TempDir, check_interrupted, ip_batch, netns_path, prefix};
use crate::host_local::ratio;
use crate::invoke::{find_bin, ref_bin_dir, twill_bin_dir};
use crate::report::{self, Target};
use crate::runner::{Job, Op, Results, Side, alternate, run_phase};
use crate::stats::Summary;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Network name of the configs.
const NETWORK: &str = "twbenchvx";
/// Warm-up pods per side (untimed ADD+DEL; also creates the bridge and the device).
const WARMUP: usize = 3;
/// Seconds of each iperf3 run.
const IPERF_SECONDS: u32 = 3;

/// Options of the vxlan benchmark.
pub struct VxlanOpts {
    /// Timed pods per side.
    pub pods: usize,
}

/// Node `n` (1-based) of a two-node underlay: `10.77.0.n/24` on `eth0`.
fn node_ip(n: u8) -> String {
    format!("10.77.0.{n}")
}

/// The pod subnet of node `n`.
fn pod_cidr(n: u8) -> String {
    format!("10.78.{n}.0/24")
}

/// The reference config: `bridge` + `host-local` on node `n`'s pod subnet.
fn ref_config(n: u8, data_dir: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "type": "bridge",
        "bridge": "cni0",
        "isGateway": true,
        "ipam": {
            "type": "host-local",
            "ranges": [[{ "subnet": pod_cidr(n) }]],
            "routes": [{ "dst": "0.0.0.0/0" }],
            "dataDir": data_dir,
        }
    })
}

/// twill's config of `plugin` on node `n`: the reference keys (no `bridge` key for vxlan),
/// the two-node view and a `runDir` under `data_dir`.
fn twill_config(plugin: &str, n: u8, data_dir: &Path) -> Value {
    let mut c = ref_config(n, data_dir);
    c["type"] = json!(plugin);
    if plugin == "vxlan" {
        if let Some(o) = c.as_object_mut() {
            o.remove("bridge");
        }
        c["nodeIP"] = json!(node_ip(n));
    }
    c["peers"] = json!([
        {"nodeIP": node_ip(1), "podCIDR": pod_cidr(1)},
        {"nodeIP": node_ip(2), "podCIDR": pod_cidr(2)},
    ]);
    c["runDir"] = json!(data_dir.join("run"));
    c
}

/// Joins nodes `a` and `b` with a veth (`eth0` each side, 10.77.0.1 and .2), both up.
fn wire(a: &str, b: &str) -> Result<(), String> {
    ip_batch(
        &["-n", a],
        &[
            format!("link add eth0 type veth peer name eth0 netns {b}"),
            format!("addr add {}/24 dev eth0", node_ip(1)),
            "link set eth0 up".into(),
            "link set lo up".into(),
        ],
        false,
    )?;
    ip_batch(
        &["-n", b],
        &[
            format!("addr add {}/24 dev eth0", node_ip(2)),
            "link set eth0 up".into(),
            "link set lo up".into(),
        ],
        false,
    )
}

/// Runs the benchmark; returns its JSON.
pub fn run(opts: &VxlanOpts) -> Result<Value, String> {
    let td = twill_bin_dir();
    let rd = ref_bin_dir();
    let vx = find_bin(&td, "vxlan")
        .ok_or_else(|| format!("twill vxlan not found in {}", td.display()))?;
    let hg = find_bin(&td, "bridge-host-gw")
        .ok_or_else(|| format!("twill bridge-host-gw not found in {}", td.display()))?;
    let reference = find_bin(&rd, "bridge")
        .filter(|_| find_bin(&rd, "host-local").is_some())
        .ok_or_else(|| format!("reference bridge/host-local not found in {}", rd.display()))?;
    println!(
        "== vxlan: pods={} warm-up={WARMUP}, iperf3 {IPERF_SECONDS} s",
        opts.pods
    );
    println!("   twill: {}", vx.display());
    println!("   ref:   {} + host-local", reference.display());
    let add_del = add_del(opts.pods, (&vx, &td), (&reference, &rd))?;
    check_interrupted()?;
    let mut thru = Vec::new();
    let cases = [
        ("vxlan", &vx, false, "tx"),
        ("vxlan", &vx, true, "to"),
        ("bridge-host-gw", &hg, false, "th"),
    ];
    for (plugin, bin, offload, tag) in cases {
        check_interrupted()?;
        let label = match (plugin, offload) {
            ("vxlan", true) => "vxlan with txChecksumOffload".to_string(),
            _ => plugin.to_string(),
        };
        let gbps = throughput(plugin, bin, &td, offload, tag)?;
        thru.push(report::figure(
            &format!("pod-to-pod TCP across nodes, {label}"),
            gbps,
            " Gbit/s",
            Target::Info,
        ));
    }
    Ok(json!({"pods": opts.pods, "add_del": add_del, "throughput": thru}))
}

fn add_del(pods: usize, twill: (&Path, &Path), reference: (&Path, &Path)) -> Result<Value, String> {
    let p = prefix();
    let total = WARMUP + pods;
    let tw_pods: Vec<String> = (0..total).map(|i| format!("{p}-vtp{i}")).collect();
    let ref_pods: Vec<String> = (0..total).map(|i| format!("{p}-vrp{i}")).collect();
    let tw_node = format!("{p}-vtnode");
    let tw_peer = format!("{p}-vtpeer");
    let ref_node = format!("{p}-vrnode");
    let mut names = tw_pods.clone();
    names.extend(ref_pods.iter().cloned());
    names.extend([tw_node.clone(), tw_peer.clone(), ref_node.clone()]);
    let _pool = NetnsSet::create(names)?;
    // The twill node needs an underlay address for the device; the peer end is idle.
    wire(&tw_node, &tw_peer)?;
    let tw_data = TempDir::create("vx-twill")?;
    let ref_data = TempDir::create("vx-ref")?;
    let paths = |v: &[String]| -> Vec<PathBuf> { v.iter().map(|n| netns_path(n)).collect() };
    let ids =
        |label: &str| -> Vec<String> { (0..total).map(|i| format!("{p}-{label}-{i}")).collect() };
    let tw = Side::new(
        "twill",
        twill.0.to_path_buf(),
        twill.1.to_path_buf(),
        Some(netns_path(&tw_node)),
        paths(&tw_pods),
        ids("vtw"),
        twill_config("vxlan", 1, tw_data.path()),
    );
    let rf = Side::new(
        "ref",
        reference.0.to_path_buf(),
        reference.1.to_path_buf(),
        Some(netns_path(&ref_node)),
        paths(&ref_pods),
        ids("vref"),
        ref_config(1, ref_data.path()),
    );
    let warm: Vec<usize> = (0..WARMUP).collect();
    for side in [&tw, &rf] {
        for op in [Op::Add, Op::Del] {
            run_phase(Job::Plugin(side, op), &warm, 1)?;
        }
    }
    let timed: Vec<usize> = (WARMUP..total).collect();
    let mut results = Results::new();
    for op in [Op::Add, Op::Del] {
        let jobs = [Job::Plugin(&tw, op), Job::Plugin(&rf, op)];
        alternate(&jobs, &timed, 2, 1, &mut results)?;
    }
    report::header("");
    let mut res = serde_json::Map::new();
    for label in ["twill", "ref"] {
        for op in [Op::Add, Op::Del] {
            if let Some(s) = results.get(&(label, op)).and_then(|s| Summary::of(&s.lat)) {
                report::row(label, op.name(), &s, "");
                res.entry(label.to_string()).or_insert_with(|| json!({}))[op.name()] = s.to_json();
            }
        }
    }
    let mut figures = Vec::new();
    for op in [Op::Add, Op::Del] {
        if let Some(r) = ratio(&results, op) {
            figures.push(report::figure(
                &format!("{} median ratio twill vxlan / ref bridge", op.name()),
                r,
                "",
                Target::Info,
            ));
        }
    }
    Ok(json!({"results": res, "figures": figures}))
}

/// Two nodes on one veth, a pod on each through `bin` (`txChecksumOffload` = `offload` for
/// vxlan), iperf3 from pod 1 to pod 2 for [`IPERF_SECONDS`]: the receiver's Gbit/s. `tag`
/// names the namespaces.
fn throughput(
    label: &str,
    bin: &Path,
    bin_dir: &Path,
    offload: bool,
    tag: &str,
) -> Result<f64, String> {
    let p = prefix();
    let nodes = [format!("{p}-{tag}n1"), format!("{p}-{tag}n2")];
    let pods = [format!("{p}-{tag}p1"), format!("{p}-{tag}p2")];
    let _pool = NetnsSet::create(nodes.iter().chain(pods.iter()).cloned().collect())?;
    wire(&nodes[0], &nodes[1])?;
    let data = TempDir::create(&format!("{tag}-thru"))?;
    let mut sides = Vec::new();
    for n in 0..2u8 {
        let dir = data.path().join(format!("node{n}"));
        std::fs::create_dir(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let mut config = twill_config(label, n + 1, &dir);
        if offload {
            config["txChecksumOffload"] = json!(true);
        }
        sides.push(Side::new(
            "twill",
            bin.to_path_buf(),
            bin_dir.to_path_buf(),
            Some(netns_path(&nodes[usize::from(n)])),
            vec![netns_path(&pods[usize::from(n)])],
            vec![format!("{p}-{tag}-{n}")],
            config,
        ));
    }
    for s in &sides {
        run_phase(Job::Plugin(s, Op::Add), &[0], 1)?;
    }
    // host-local's first address of node 2's range.
    let server_ip = "10.78.2.2";
    let net = |pod: &str| format!("--net={}", netns_path(pod).display());
    let log_path = data.path().join("iperf3-server.log");
    let log = std::fs::File::create(&log_path)
        .map_err(|e| format!("create {}: {e}", log_path.display()))?;
    let log_err = log
        .try_clone()
        .map_err(|e| format!("dup {}: {e}", log_path.display()))?;
    let mut server = Command::new("nsenter")
        .args([
            &net(&pods[1]),
            "iperf3",
            "-s",
            "-B",
            server_ip,
            "--forceflush",
        ])
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        .spawn()
        .map_err(|e| format!("spawn iperf3 server (install iperf3): {e}"))?;
    // Start the client only once the server listens (bounded: a loaded machine is slow).
    let deadline = Instant::now() + Duration::from_secs(15);
    let listening = || {
        Command::new("nsenter")
            .args([&net(&pods[1]), "ss", "-Hltn", "sport = :5201"])
            .output()
            .is_ok_and(|o| !o.stdout.is_empty())
    };
    while !listening() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = IPERF_SECONDS.to_string();
    let timeout = (IPERF_SECONDS + 10).to_string();
    let mut failures = Vec::new();
    let mut out = None;
    for _ in 0..3 {
        let o = Command::new("timeout")
            .args([
                &timeout,
                "nsenter",
                &net(&pods[0]),
                "iperf3",
                "-c",
                server_ip,
                "-t",
                &secs,
                "--connect-timeout",
                "3000",
                "-J",
            ])
            .output()
            .map_err(|e| format!("run iperf3 client: {e}"))?;
        if o.status.success() {
            out = Some(o);
            break;
        }
        failures.push(format!(
            "exit {:?}: {}{}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    let _ = server.kill();
    let _ = server.wait();
    for s in &sides {
        run_phase(Job::Plugin(s, Op::Del), &[0], 1)?;
    }
    let out = out.ok_or_else(|| {
        format!(
            "{label}: iperf3 failed 3 times ({}); server: {}",
            failures.join(" | "),
            std::fs::read_to_string(&log_path).unwrap_or_default()
        )
    })?;
    let v: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("{label}: iperf3 output is not JSON ({e})"))?;
    let bps = v
        .pointer("/end/sum_received/bits_per_second")
        .and_then(Value::as_f64)
        .ok_or_else(|| format!("{label}: iperf3 gave no receiver rate: {v}"))?;
    Ok(bps / 1e9)
}
