//! Churn: many ADD/DEL cycles of each twill plugin, in parallel on one node, leave the node as it
//! was and cost the same number of file descriptors per call from the first cycle to the last.
//!
//! Each test makes a node netns and 8 pod netns (one per worker), runs one untimed cycle per pod
//! (so node-level state such as the bridge and the masquerade table exists), snapshots the node,
//! then runs 400 cycles (a new container ID each) over the 8 workers, every 25th under `strace`
//! counting the descriptors the call creates. Afterwards the node's links, routes of every table,
//! permanent neighbours, nftables ruleset and the files under the plugin's data dir must equal the
//! snapshot, every pod netns must hold only `lo`, and every traced ADD (and every traced DEL) must
//! have opened the same number of descriptors. Timings are not asserted (the bench reports them).
//! Everything is made in namespaces and temp dirs removed by their guards, also on failure.

use conformance::process::run_bounded;
use conformance::{Invocation, Netns, TempDir, twill_bin, unique_name};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const CYCLES: usize = 400;
const WORKERS: usize = 8;
const TRACE_EVERY: usize = 25;
/// Every syscall that creates a file descriptor.
const FD_SYSCALLS: &str = "trace=open,openat,openat2,creat,socket,socketpair,pipe,pipe2,dup,dup2,\
dup3,fcntl,eventfd2,epoll_create1,memfd_create,accept4,pidfd_open,timerfd_create,signalfd4";

/// The descriptors a traced call created, from its `strace -f -o` log (successful calls only).
fn fds_opened(log: &str) -> usize {
    log.lines()
        .filter_map(|line| {
            let (call, ret) = line.rsplit_once(" = ")?;
            let r: i64 = ret.split_whitespace().next()?.parse().ok()?;
            let body = call.trim_start_matches(|c: char| c.is_ascii_digit() || c == ' ');
            let name = match body.strip_prefix("<... ") {
                Some(rest) => rest.split(' ').next()?,
                None => body.split('(').next()?,
            };
            match name {
                _ if r < 0 => None,
                "pipe" | "pipe2" | "socketpair" => Some(2),
                "fcntl" if !call.contains("F_DUPFD") => None,
                _ => Some(1),
            }
        })
        .sum()
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out
}

fn lines(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// What a pod's ADD touches on the node, each as a set of lines.
fn node_state(node: &Netns, data: &Path) -> Vec<(&'static str, BTreeSet<String>)> {
    vec![
        ("links", node.link_names().into_iter().collect()),
        (
            // Without `linkdown`: the kernel derives it from the bridge's carrier, which it
            // updates asynchronously (linkwatch) after the last port leaves; it is not state an
            // ADD or DEL owns.
            "routes",
            lines(
                &node
                    .ip(&["route", "show", "table", "all"])
                    .replace(" linkdown", ""),
            ),
        ),
        (
            "permanent neighbours",
            lines(&node.ip(&["neigh", "show", "nud", "permanent"])),
        ),
        ("nftables", lines(&node.nft_ruleset())),
        ("data dir files", files_under(data)),
    ]
}

/// One CNI call on `node`; with `log`, under `strace -f -o log` (returns the fds it opened).
fn call(
    bin: &Path,
    node: &Netns,
    cmd: &str,
    id: &str,
    pod: &Netns,
    conf: &Value,
    log: Option<&Path>,
) -> (Value, Option<usize>) {
    let Some(log) = log else {
        let out = Invocation::new(bin)
            .command(cmd)
            .container_id(id)
            .netns(pod.path())
            .ifname("eth0")
            .cni_path(&bin.parent().unwrap().display().to_string())
            .stdin_json(conf)
            .on(node.path())
            .run();
        let v = if cmd == "ADD" {
            out.assert_ok()
        } else {
            out.assert_ok_empty();
            Value::Null
        };
        return (v, None);
    };
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", node.path().display()))
        .args(["strace", "-f", "-qq", "-o"])
        .arg(log)
        .args(["-e", FD_SYSCALLS])
        .arg(bin)
        .env_clear()
        .env(conformance::INDEX_DIR_ENV, conformance::private_index_dir())
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", pod.path())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", bin.parent().unwrap());
    let out = run_bounded(&mut c, conf.to_string().as_bytes(), Duration::from_secs(30));
    assert!(
        out.status.success(),
        "{cmd} {id} under strace failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(log).expect("strace log");
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (v, Some(fds_opened(&text)))
}

/// The soak of `plugin` with config `make_conf(data dir)`.
fn soak(plugin: &str, make_conf: impl Fn(&Path) -> Value) {
    let bin = twill_bin(plugin);
    assert!(
        Command::new("strace")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success()),
        "strace is needed to count descriptors (make deps installs it)"
    );
    let node = Netns::with_tag("soak");
    let pods: Vec<Netns> = (0..WORKERS).map(|_| Netns::with_tag("soakpod")).collect();
    let data = TempDir::new("soak");
    let logs = TempDir::new("soak-strace");
    let conf = make_conf(data.path());
    let cycle = |id: &str, pod: &Netns, log: Option<&Path>| -> (Option<usize>, Option<usize>) {
        let (result, add_fds) = call(&bin, &node, "ADD", id, pod, &conf, log);
        let mut del_conf = conf.clone();
        del_conf["prevResult"] = result;
        let (_, del_fds) = call(&bin, &node, "DEL", id, pod, &del_conf, log);
        (add_fds, del_fds)
    };
    for pod in &pods {
        cycle(&unique_name("warm"), pod, None);
    }
    let before = node_state(&node, data.path());

    let next = AtomicUsize::new(0);
    let traced: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for (w, pod) in pods.iter().enumerate() {
            let (next, traced, cycle) = (&next, &traced, &cycle);
            let log = logs.join(format!("w{w}.log"));
            s.spawn(move || {
                loop {
                    let c = next.fetch_add(1, Ordering::Relaxed);
                    if c >= CYCLES {
                        break;
                    }
                    let log = (c % TRACE_EVERY == 0).then_some(log.as_path());
                    if let (Some(a), Some(d)) = cycle(&unique_name("soak"), pod, log) {
                        traced.lock().unwrap().push((a, d));
                    }
                }
            });
        }
    });

    let after = node_state(&node, data.path());
    for ((what, b), (_, a)) in before.iter().zip(&after) {
        let extra: Vec<_> = a.difference(b).collect();
        let gone: Vec<_> = b.difference(a).collect();
        assert!(
            extra.is_empty() && gone.is_empty(),
            "{plugin}: after {CYCLES} cycles the node's {what} differ from before: \
             left behind {extra:?}, gone {gone:?}"
        );
    }
    for pod in &pods {
        assert_eq!(
            pod.link_names(),
            vec!["lo".to_string()],
            "{plugin}: pod netns {} keeps links after {CYCLES} cycles",
            pod.name()
        );
    }
    let traced = traced.into_inner().unwrap();
    assert_eq!(
        traced.len(),
        CYCLES / TRACE_EVERY,
        "every traced cycle counted"
    );
    let adds: BTreeSet<usize> = traced.iter().map(|t| t.0).collect();
    let dels: BTreeSet<usize> = traced.iter().map(|t| t.1).collect();
    assert!(
        adds.len() == 1 && dels.len() == 1,
        "{plugin}: descriptors opened per call vary across {CYCLES} cycles: ADD {adds:?}, DEL {dels:?}"
    );
    assert!(
        adds.iter().all(|n| *n > 0),
        "{plugin}: strace saw no descriptor at all (the trace did not work)"
    );
}

fn ipam(data: &Path, subnet: &str) -> Value {
    json!({
        "type": "host-local",
        "ranges": [[{ "subnet": subnet }]],
        "routes": [{ "dst": "0.0.0.0/0" }],
        "dataDir": data.join("ipam"),
    })
}

#[test]
fn bridge_host_gw_churn_of_400_cycles_leaves_the_node_as_it_was_with_constant_fds_per_call() {
    soak("bridge-host-gw", |data| {
        let subnet_file = data.join("subnet.env");
        std::fs::write(
            &subnet_file,
            "FLANNEL_NETWORK=10.0.0.0/8\nFLANNEL_SUBNET=10.77.0.1/16\nFLANNEL_MTU=1500\n\
             FLANNEL_IPMASQ=true\n",
        )
        .unwrap();
        json!({
            "cniVersion": "1.0.0",
            "name": "soak-br",
            "type": "bridge-host-gw",
            "bridge": "soakbr0",
            "isGateway": true,
            "ipMasq": true,
            "ipam": ipam(data, "10.77.0.0/16"),
            "subnetFile": subnet_file,
            "peers": [],
            "runDir": data.join("run"),
        })
    });
}

#[test]
fn routed_veth_churn_of_400_cycles_leaves_the_node_as_it_was_with_constant_fds_per_call() {
    soak("routed-veth", |data| {
        json!({
            "cniVersion": "1.0.0",
            "name": "soak-rt",
            "type": "routed-veth",
            "ipam": ipam(data, "10.78.0.0/16"),
            "peers": [],
            "runDir": data.join("run"),
        })
    });
}

#[test]
fn host_local_churn_of_400_cycles_leaves_no_reservation_with_constant_fds_per_call() {
    soak("host-local", |data| {
        json!({
            "cniVersion": "1.0.0",
            "name": "soak-hl",
            "type": "bridge",
            "ipam": ipam(data, "10.79.0.0/16"),
        })
    });
}
