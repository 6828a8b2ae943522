//! A private containerd 1.6 with its CRI plugin, driven as kubelet drives it, on a test node.
//!
//! containerd runs as `nsenter --net=<node> containerd --config <own>` with its own root, state,
//! socket, opt and runc directories, so pods' host veths, routes and portmap rules land in the
//! node namespace. Its CRI plugin's `bin_dir` holds the twill binaries (plus the reference
//! `portmap` and `loopback`) and its `conf_dir` one twill conflist. It is stopped by PID on drop.
//! Machine facts it encodes: no CAP_SYS_RESOURCE (`restrict_oom_score_adj`), no registry (the
//! sandbox image is built locally and imported with `ctr`), no systemd (cgroupfs).
//!
//! The CRI client is `conformance/clients/cri.py` (see [`Containerd::cri`]).

use crate::netns::{Netns, TempDir};
use crate::process::run_bounded;
use crate::runtimes::{
    NetSpec, PYTHON, PluginUnderTest, bin_dir, build_image, client_source, unmount_under,
};
use serde_json::Value;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The sandbox ("pause") image: busybox-static sleeping.
pub const SANDBOX_IMAGE: &str = "localhost/twill-pause:1";

/// Upper bound of one CRI call, `ctr` call, or containerd's start-up and shutdown.
pub const TIMEOUT: Duration = Duration::from_secs(90);

/// A running private containerd; on drop removes every sandbox, stops containerd (SIGTERM,
/// then SIGKILL after a bounded wait), kills leftover shims by PID and removes its directories.
#[derive(Debug)]
pub struct Containerd {
    child: Option<Child>,
    socket: PathBuf,
    state: PathBuf,
    log: PathBuf,
    dir: TempDir,
}

/// What `PodSandboxStatus` says about a pod.
#[derive(Debug, Clone)]
pub struct SandboxStatus {
    /// `SANDBOX_READY` or `SANDBOX_NOTREADY`.
    pub state: String,
    /// The pod's IP (from the CNI result).
    pub ip: String,
    /// PID of the sandbox's first process (its network namespace is `/proc/PID/ns/net`).
    pub pid: u32,
}

impl Containerd {
    /// Starts containerd in the node namespace `node` with `plugin` on the network `net` (its
    /// conflist chaining `portmap`), waits until its CRI service answers, and imports the
    /// sandbox image.
    pub fn start(node: &Netns, plugin: &PluginUnderTest, net: &NetSpec) -> Containerd {
        let dir = TempDir::new("containerd");
        let netconf = dir.join("net.d");
        std::fs::create_dir_all(&netconf)
            .unwrap_or_else(|e| panic!("create {}: {e}", netconf.display()));
        let bin = bin_dir(dir.path(), plugin, &["portmap", "loopback"]);
        net.write_conflist(
            &netconf,
            "1.0.0",
            plugin,
            &[serde_json::json!({"type": "portmap", "capabilities": {"portMappings": true}})],
        );
        let socket = dir.join("containerd.sock");
        let state = dir.join("state");
        let p = |rel: &str| dir.join(rel).display().to_string();
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{image}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin}"
    conf_dir = "{netconf}"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{runc}"
"#,
            root = p("root"),
            state = state.display(),
            sock = socket.display(),
            opt = p("opt"),
            image = SANDBOX_IMAGE,
            bin = bin.display(),
            netconf = netconf.display(),
            runc = p("runc"),
        );
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config)
            .unwrap_or_else(|e| panic!("write {}: {e}", config_path.display()));
        let log = dir.join("containerd.log");
        let log_file =
            std::fs::File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let log_err = log_file
            .try_clone()
            .unwrap_or_else(|e| panic!("dup {}: {e}", log.display()));
        let child = Command::new("nsenter")
            .env(crate::INDEX_DIR_ENV, crate::private_index_dir())
            .arg(format!("--net={}", node.path().display()))
            .arg("containerd")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start containerd (install containerd): {e}"));
        let cd = Containerd {
            child: Some(child),
            socket,
            state,
            log,
            dir,
        };
        cd.cri_ok(&["version"]);
        let archive = cd.dir.join("pause.tar");
        build_image(&[
            "oci",
            &archive.display().to_string(),
            SANDBOX_IMAGE,
            "/bin/sleep",
            "2147483647",
        ]);
        let mut ctr = Command::new("ctr");
        ctr.arg("--address")
            .arg(&cd.socket)
            .args(["-n", "k8s.io", "images", "import"])
            .arg(&archive);
        let out = run_bounded(&mut ctr, b"", TIMEOUT);
        assert!(
            out.status.success(),
            "ctr images import failed: {}{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            cd.log_tail()
        );
        cd
    }

    /// Runs the CRI client (`cri.py SOCKET args...`); returns its output whatever the status.
    pub fn cri(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(PYTHON);
        cmd.arg(client_source("cri.py"))
            .arg(&self.socket)
            .args(args);
        run_bounded(&mut cmd, b"", TIMEOUT)
    }

    /// Like [`Containerd::cri`], but panics (with containerd's log) unless the call succeeds;
    /// returns stdout.
    pub fn cri_ok(&self, args: &[&str]) -> String {
        let out = self.cri(args);
        assert!(
            out.status.success(),
            "CRI {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim(),
            self.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// RunPodSandbox of pod `name` with the port mappings `ports` (`tcp:CONTAINER:HOST`);
    /// returns the sandbox ID.
    pub fn run_pod(&self, name: &str, ports: &[&str]) -> String {
        let uid = format!("uid-{name}");
        let mut args = vec!["runp", name, &uid, "default"];
        args.extend_from_slice(ports);
        self.cri_ok(&args).trim().to_string()
    }

    /// PodSandboxStatus (verbose) of sandbox `id`.
    pub fn status(&self, id: &str) -> SandboxStatus {
        let text = self.cri_ok(&["status", id]);
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("PodSandboxStatus answer is not JSON ({e}): {text}"));
        SandboxStatus {
            state: v["state"].as_str().unwrap_or_default().to_string(),
            ip: v["ip"].as_str().unwrap_or_default().to_string(),
            pid: v["pid"]
                .as_u64()
                .and_then(|p| u32::try_from(p).ok())
                .unwrap_or_else(|| panic!("no sandbox pid in PodSandboxStatus: {text}")),
        }
    }

    /// The last lines of containerd's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        format!("\n--- containerd log (last lines) ---\n{tail}")
    }

    /// The PIDs of the shims still recorded under containerd's state directory.
    fn shim_pids(&self) -> Vec<i32> {
        let tasks = self.state.join("io.containerd.runtime.v2.task");
        let mut pids = Vec::new();
        for ns in read_dirs(&tasks) {
            for task in read_dirs(&ns) {
                if let Ok(text) = std::fs::read_to_string(task.join("shim.pid"))
                    && let Ok(pid) = text.trim().parse::<i32>()
                {
                    pids.push(pid);
                }
            }
        }
        pids
    }
}

fn read_dirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

impl Drop for Containerd {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let out = self.cri(&["cleanup"]);
        if !out.status.success() {
            eprintln!(
                "warning: removing the remaining pod sandboxes failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let shims = self.shim_pids();
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(child.id() as i32);
            let _ = kill(pid, Signal::SIGTERM);
            let (tx, rx) = mpsc::channel();
            let waiter = std::thread::spawn(move || {
                let _ = child.wait();
                let _ = tx.send(());
            });
            if rx.recv_timeout(TIMEOUT).is_err() {
                eprintln!("warning: containerd did not stop on SIGTERM; killing it");
                let _ = kill(pid, Signal::SIGKILL);
                let _ = rx.recv_timeout(Duration::from_secs(5));
            }
            drop(waiter);
        }
        for pid in shims {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        unmount_under(self.dir.path());
    }
}
