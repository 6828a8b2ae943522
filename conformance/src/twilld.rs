//! twilld under test: a conf dir per node, the daemon run inside a node's namespace
//! (`nsenter --net`) with its log in a file, stopped on drop (also when a test panics), and
//! bounded waits for the kernel state it keeps.

use crate::fabric::Node;
use crate::process::{DEFAULT_TIMEOUT, run_bounded};
use crate::twill_bin;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The twilld binary under test.
pub fn bin() -> PathBuf {
    twill_bin("twilld")
}

/// The conf dir of `node` (created): `<node dir>/net.d`.
pub fn conf_dir(node: &Node) -> PathBuf {
    let dir = conf_dir_path(node);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// The path of the conf dir of `node`, whether it exists or not.
pub fn conf_dir_path(node: &Node) -> PathBuf {
    node_dir(node).join("net.d")
}

fn node_dir(node: &Node) -> &Path {
    node.run_dir.parent().expect("node dir")
}

/// Replaces `path` with `text` as a view writer does: a temp file in the same directory,
/// renamed over it.
pub fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, text).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}

/// Writes network config `conf` as `<conf dir>/<file>` of `node` (atomically).
pub fn write_conf(node: &Node, file: &str, conf: &Value) -> PathBuf {
    let path = conf_dir(node).join(file);
    replace_file(&path, &conf.to_string());
    path
}

/// The arguments every twilld command of `node` gets: its conf dir and run dir.
fn node_args(node: &Node) -> Vec<String> {
    vec![
        "--cni-conf-dir".into(),
        conf_dir_path(node).display().to_string(),
        "--run-dir".into(),
        node.run_dir.display().to_string(),
    ]
}

/// Runs `twilld <cmd>` (sync, check) on `node` to completion, bounded.
pub fn once(node: &Node, cmd: &str) -> Output {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", node.ns.path().display()))
        .arg(bin())
        .arg(cmd)
        .args(node_args(node));
    run_bounded(&mut c, b"", DEFAULT_TIMEOUT)
}

/// A running `twilld run` on a node; killed (SIGKILL) and reaped on drop unless it exited.
pub struct Daemon {
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Daemon {
    /// Starts `twilld run` on `node` (log in the node's directory) and waits, bounded,
    /// until it has said it runs and finished its first pass.
    pub fn start(node: &Node) -> Daemon {
        let d = Daemon::spawn(node);
        d.wait_log("running (pid", Duration::from_secs(5));
        d
    }

    /// Starts `twilld run` on `node` without waiting for anything.
    pub fn spawn(node: &Node) -> Daemon {
        Daemon::spawn_with(node, &[])
    }

    /// Starts `twilld run` on `node` with `extra` arguments after its conf and run dirs (etcd
    /// mode's `--etcd-endpoints ...`), without waiting for anything.
    pub fn spawn_with(node: &Node, extra: &[String]) -> Daemon {
        let log = node_dir(node).join(format!("{}.log", crate::unique_name("twilld")));
        let err =
            std::fs::File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let child = Command::new("nsenter")
            .arg(format!("--net={}", node.ns.path().display()))
            .arg(bin())
            .arg("run")
            .args(node_args(node))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start twilld: {e}"));
        Daemon {
            child,
            log,
            status: None,
        }
    }

    /// The daemon's pid (nsenter execs twilld in place).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to `limit` for a log line containing `text`; panics with the log otherwise.
    pub fn wait_log(&self, text: &str, limit: Duration) {
        let ok = wait_until(limit, || self.log().contains(text));
        assert!(
            ok,
            "twilld did not log {text:?} within {limit:?}; log:\n{}",
            self.log()
        );
    }

    /// Sends `sig` to the daemon.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, sig).unwrap_or_else(|e| panic!("kill {sig}: {e}"));
    }

    /// Waits up to `limit` for the daemon to exit; its status, or None if it still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait twilld") {
                self.status = Some(s);
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// CPU time (user + system) the daemon used so far, in clock ticks (/proc/PID/stat).
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .expect("read /proc/PID/stat of twilld");
        // Fields after the command name (which is in parentheses): state is field 3, utime 14.
        let rest = stat.rsplit_once(')').expect("stat format").1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Calls `cond` every 10 ms until it holds or `limit` passed; whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
