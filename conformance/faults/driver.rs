//! Crash safety proven from outside, with no hooks in the product: each plugin's ADD runs under
//! `strace -f -e inject=<syscall>:error=<errno>:when=<n>` and `...:signal=KILL:when=<n>` for
//! every n up to the number of such calls one ADD makes (counted first with strace), and after
//! each step the node is compared with its state before:
//!
//! - an ADD that answered an error object must have rolled back on its own: nothing of the pod
//!   is left;
//! - an ADD that was killed, crashed, or could not print its answer is followed by a DEL and a
//!   GC (what a runtime does), after which nothing of the pod is left;
//! - an ADD that succeeded despite the fault (a retried call) is DELeted, and then nothing of
//!   the pod is left.
//!
//! "Nothing of the pod": no link in the pod namespace but `lo`, no link, route or permanent
//! neighbour entry on the node beyond those before the step, no file under the node's
//! directories beyond or different from those before the step (host-local's allocation
//! cursors `last_reserved_ip.*` excepted: they may advance). Node-level state made by the
//! warm-up ADD (bridge, peer routes, masquerade table) exists before every step.
//!
//! Plugins are entries of a table (`PluginUnderTest`): adding a data plane is one entry.

use conformance::hostgw::Cluster;
use conformance::process::run_bounded;
use conformance::{DirSnapshot, Netns, Node, twill_bin};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A plugin whose ADD is put under fault injection.
pub struct PluginUnderTest {
    /// Binary name.
    pub bin: &'static str,
    /// Its 1.1.0 config on a cluster node.
    pub conf: fn(&Cluster, &Node) -> Value,
}

/// One kind of fault: a syscall and what strace does on its n-th call.
#[derive(Clone, Copy)]
pub struct Fault {
    /// The syscall name as strace knows it.
    pub syscall: &'static str,
    /// `error=EIO`-style action, or `signal=KILL`.
    pub action: &'static str,
}

/// One row of the table: plugin, fault, how many steps, and what came of them.
#[derive(Default, Clone)]
pub struct Row {
    pub plugin: String,
    pub syscall: String,
    pub action: String,
    pub calls: usize,
    pub rolled_back: usize,
    pub cleaned_by_del: usize,
    pub survived: usize,
    pub leftovers: Vec<String>,
}

/// What of the node a step compares: link names of node and pod, routes, permanent
/// neighbours, files.
#[derive(PartialEq, Eq, Clone)]
struct State {
    node_links: Vec<String>,
    pod_links: Vec<String>,
    routes: Vec<String>,
    neighbours: Vec<String>,
    files: BTreeMap<String, Vec<u8>>,
}

impl State {
    fn take(node: &Node, pod: &Netns) -> State {
        let mut node_links = node.ns.link_names();
        node_links.sort();
        let mut pod_links = pod.link_names();
        pod_links.sort();
        let mut routes: Vec<String> = node
            .ns
            .routes()
            .iter()
            .filter(|r| !r.dst.starts_with("fe80:") && !r.dst.starts_with("ff00:"))
            .map(|r| {
                // Flags (linkdown) follow the bridge's carrier: node-level, not the pod's.
                let mut raw = r.raw.clone();
                if let Some(o) = raw.as_object_mut() {
                    o.remove("flags");
                }
                raw.to_string()
            })
            .collect();
        routes.sort();
        let mut neighbours: Vec<String> = node
            .ns
            .neighbours()
            .into_iter()
            .filter(|n| n.state.iter().any(|s| s == "PERMANENT"))
            .map(|n| format!("{} dev {}", n.dst, n.dev))
            .collect();
        neighbours.sort();
        let root = node.data_dir.parent().expect("node dir");
        let files = DirSnapshot::take(root)
            .files()
            .into_iter()
            .map(|(p, b)| (p.display().to_string(), b))
            .filter(|(p, _)| {
                !p.rsplit('/')
                    .next()
                    .unwrap_or("")
                    .starts_with("last_reserved_ip")
            })
            .collect();
        State {
            node_links,
            pod_links,
            routes,
            neighbours,
            files,
        }
    }

    /// Everything in `after` that is not in `self` (and files that changed or went away).
    fn leftovers(&self, after: &State) -> Vec<String> {
        fn added(what: &str, a: &[String], b: &[String], out: &mut Vec<String>) {
            out.extend(
                b.iter()
                    .filter(|x| !a.contains(x))
                    .map(|x| format!("{what} {x}")),
            );
        }
        let mut out = Vec::new();
        added("node link", &self.node_links, &after.node_links, &mut out);
        added("pod link", &self.pod_links, &after.pod_links, &mut out);
        added("route", &self.routes, &after.routes, &mut out);
        added("neighbour", &self.neighbours, &after.neighbours, &mut out);
        for (p, b) in &after.files {
            match self.files.get(p) {
                None => out.push(format!("file {p} ({} bytes)", b.len())),
                Some(old) if old != b => out.push(format!("file {p} changed")),
                _ => {}
            }
        }
        for p in self.files.keys() {
            if !after.files.contains_key(p) {
                out.push(format!("file {p} removed"));
            }
        }
        out
    }
}

/// A plugin run on `node` (as `nsenter --net=NODE [strace ...] PLUGIN`), the way a runtime
/// calls it: clean environment, config on stdin.
struct Call<'a> {
    node: &'a Node,
    bin: PathBuf,
    env: Vec<(&'static str, String)>,
    stdin: Vec<u8>,
}

/// What a call returned.
struct Answer {
    exit: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Answer {
    fn error_object(&self) -> bool {
        serde_json::from_str::<Value>(&self.stdout)
            .ok()
            .is_some_and(|v| v.get("code").and_then(Value::as_u64).is_some())
    }
}

impl Call<'_> {
    fn run(&self, strace: Option<&[String]>) -> Answer {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.node.ns.path().display()));
        if let Some(args) = strace {
            cmd.arg("strace").args(args);
        }
        cmd.arg(&self.bin)
            .env_clear()
            .env(conformance::INDEX_DIR_ENV, conformance::private_index_dir())
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env(
                "CNI_PATH",
                self.bin
                    .parent()
                    .unwrap_or(Path::new("/"))
                    .display()
                    .to_string(),
            );
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let out = run_bounded(&mut cmd, &self.stdin, Duration::from_secs(20));
        Answer {
            exit: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// How many calls of each syscall in `faults` one ADD of `p` makes on `node` (a traced,
/// successful ADD of container `id`, DELeted again).
fn count_calls(
    p: &PluginUnderTest,
    c: &Cluster,
    node: &Node,
    pod: &Netns,
    faults: &[Fault],
    scratch: &Path,
) -> BTreeMap<&'static str, usize> {
    let trace = scratch.join(format!("{}.trace", p.bin));
    let conf = (p.conf)(c, node);
    let add = attachment(node, p, &conf, "ADD", "count", pod);
    let args = vec![
        "-f".to_string(),
        "-qq".to_string(),
        "-o".to_string(),
        trace.display().to_string(),
    ];
    let out = add.run(Some(&args));
    assert_eq!(
        out.exit,
        Some(0),
        "{}: traced ADD failed: {}{}",
        p.bin,
        out.stdout,
        out.stderr
    );
    let del = attachment(node, p, &conf, "DEL", "count", pod).run(None);
    assert_eq!(
        del.exit,
        Some(0),
        "{}: DEL after the count: {}",
        p.bin,
        del.stdout
    );
    let text = std::fs::read_to_string(&trace).expect("strace output");
    let mut counts = BTreeMap::new();
    for f in faults {
        let prefix = format!("{}(", f.syscall);
        let n = text
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|call| call.starts_with(&prefix))
            })
            .count();
        counts.insert(f.syscall, n);
    }
    counts
}

fn attachment<'a>(
    node: &'a Node,
    p: &PluginUnderTest,
    conf: &Value,
    cmd: &str,
    id: &str,
    pod: &Netns,
) -> Call<'a> {
    Call {
        node,
        bin: twill_bin(p.bin),
        env: vec![
            ("CNI_COMMAND", cmd.to_string()),
            ("CNI_CONTAINERID", id.to_string()),
            ("CNI_NETNS", pod.path_str()),
            ("CNI_IFNAME", "eth0".to_string()),
        ],
        stdin: conf.to_string().into_bytes(),
    }
}

fn gc<'a>(node: &'a Node, p: &PluginUnderTest, conf: &Value) -> Call<'a> {
    let mut conf = conf.clone();
    conf["cni.dev/valid-attachments"] = json!([]);
    Call {
        node,
        bin: twill_bin(p.bin),
        env: vec![("CNI_COMMAND", "GC".to_string())],
        stdin: conf.to_string().into_bytes(),
    }
}

/// Runs every fault of `faults` at every n against `p`'s ADD on node `node_index` of `c`;
/// one row per fault.
pub fn run_plugin(
    p: &PluginUnderTest,
    c: &Cluster,
    node_index: usize,
    faults: &[Fault],
    scratch: &Path,
) -> Vec<Row> {
    let node = c.node(node_index);
    let pod = Netns::with_tag("fpod");
    let conf = (p.conf)(c, node);
    // Warm-up: node-level state (bridge, peer routes, masquerade) exists before every step.
    let warm = attachment(node, p, &conf, "ADD", "warmup", &pod).run(None);
    assert_eq!(
        warm.exit,
        Some(0),
        "{}: warm-up ADD: {}",
        p.bin,
        warm.stdout
    );
    let del = attachment(node, p, &conf, "DEL", "warmup", &pod).run(None);
    assert_eq!(del.exit, Some(0), "{}: warm-up DEL: {}", p.bin, del.stdout);

    let counts = count_calls(p, c, node, &pod, faults, scratch);
    let mut rows = Vec::new();
    for f in faults {
        let calls = counts.get(f.syscall).copied().unwrap_or(0);
        let mut row = Row {
            plugin: p.bin.to_string(),
            syscall: f.syscall.to_string(),
            action: f.action.to_string(),
            calls,
            ..Row::default()
        };
        for n in 1..=calls {
            let before = State::take(node, &pod);
            let id = format!("f{n}");
            let args = vec![
                "-f".to_string(),
                "-qq".to_string(),
                "-o".to_string(),
                "/dev/null".to_string(),
                "-e".to_string(),
                format!("trace={}", f.syscall),
                "-e".to_string(),
                format!("inject={}:{}:when={n}", f.syscall, f.action),
            ];
            let add = attachment(node, p, &conf, "ADD", &id, &pod).run(Some(&args));
            let step = format!("{} {} {}#{n}", p.bin, f.action, f.syscall);
            let found = if add.exit == Some(0) {
                // The fault was absorbed (a retried call): an ordinary DEL must clean up.
                row.survived += 1;
                del_and_gc(node, p, &conf, &id, &pod, false);
                before.leftovers(&State::take(node, &pod))
            } else if add.error_object() {
                // Rolled back on its own: nothing may be left before any DEL.
                row.rolled_back += 1;
                let left = before.leftovers(&State::take(node, &pod));
                del_and_gc(node, p, &conf, &id, &pod, true);
                left
            } else {
                // Killed, or the answer itself could not be written: DEL, then GC.
                let killed = f.action.starts_with("signal=");
                let answer_lost = f.syscall == "write" && n == calls;
                let loader = add.stderr.contains("error while loading shared libraries");
                if !(killed || answer_lost || loader) {
                    row.leftovers.push(format!(
                        "{step}: failed without an error object (exit {:?}): {} {}",
                        add.exit,
                        add.stdout.trim(),
                        add.stderr.trim()
                    ));
                }
                row.cleaned_by_del += 1;
                del_and_gc(node, p, &conf, &id, &pod, true);
                before.leftovers(&State::take(node, &pod))
            };
            row.leftovers
                .extend(found.into_iter().map(|l| format!("{step}: {l}")));
            // Whatever the step left, the next step starts from the same node.
            if !row.leftovers.is_empty() {
                scrub(node, &pod, &before);
            }
        }
        rows.push(row);
    }
    rows
}

/// DEL of the step's container, then (after a failed ADD) a GC with no valid attachment; both
/// must succeed.
fn del_and_gc(
    node: &Node,
    p: &PluginUnderTest,
    conf: &Value,
    id: &str,
    pod: &Netns,
    with_gc: bool,
) {
    let del = attachment(node, p, conf, "DEL", id, pod).run(None);
    assert_eq!(
        del.exit,
        Some(0),
        "{}: DEL of {id} failed: {}{}",
        p.bin,
        del.stdout,
        del.stderr
    );
    if with_gc {
        let gc = gc(node, p, conf).run(None);
        assert_eq!(
            gc.exit,
            Some(0),
            "{}: GC after {id} failed: {}{}",
            p.bin,
            gc.stdout,
            gc.stderr
        );
    }
}

/// Removes what a failed step left (extra links of node and pod), so later steps are judged
/// on their own.
fn scrub(node: &Node, pod: &Netns, before: &State) {
    for l in pod.link_names() {
        if !before.pod_links.contains(&l) {
            let _ = pod.exec(&["ip", "link", "del", &l]);
        }
    }
    for l in node.ns.link_names() {
        if !before.node_links.contains(&l) {
            let _ = node.ns.exec(&["ip", "link", "del", &l]);
        }
    }
}

/// The table as text: one line per fault, then every leftover found.
pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<16} {:<10} {:<13} {:>5} {:>11} {:>13} {:>8} {:>9}\n",
        "plugin",
        "syscall",
        "fault",
        "steps",
        "rolled back",
        "DEL+GC clean",
        "survived",
        "leftovers"
    );
    let mut total = (0, 0);
    for r in rows {
        out.push_str(&format!(
            "{:<16} {:<10} {:<13} {:>5} {:>11} {:>13} {:>8} {:>9}\n",
            r.plugin,
            r.syscall,
            r.action,
            r.calls,
            r.rolled_back,
            r.cleaned_by_del,
            r.survived,
            r.leftovers.len()
        ));
        total.0 += r.calls;
        total.1 += r.leftovers.len();
    }
    out.push_str(&format!(
        "total: {} steps, {} leftovers\n",
        total.0, total.1
    ));
    for r in rows {
        for l in &r.leftovers {
            out.push_str(&format!("  {l}\n"));
        }
    }
    out
}
