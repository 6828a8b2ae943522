//! A private podman 4 (CNI backend) whose containers live on a test node: every call runs as
//! `nsenter --net=<node> podman --root <own> --runroot <own>` with its own `CONTAINERS_CONF`, so
//! the bridge, routes and portmap rules land in the node namespace and podman's state in the
//! test's directory. Machine facts it encodes: crun 1.8 fails on this cgroup mode (`runc`);
//! root lacks CAP_SYS_RESOURCE (ulimits at or below the current ones); no registry (the image is
//! imported from a local busybox-static rootfs).

use crate::netns::{Netns, TempDir};
use crate::process::run_bounded;
use crate::runtimes::{NetSpec, PluginUnderTest, bin_dir, build_image, unmount_under};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

/// The local image every podman test runs (busybox-static with `/www/index.html`).
pub const IMAGE: &str = "localhost/twill-busybox:1";

/// Upper bound of one podman command.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// A podman instance private to one test; on drop removes its containers, images and
/// directories (also on panic).
#[derive(Debug)]
pub struct Podman {
    node: PathBuf,
    conf: PathBuf,
    storage_conf: PathBuf,
    root: PathBuf,
    runroot: PathBuf,
    dir: TempDir,
    /// `<dataDir>/<network>`: podman runs the plugins with an environment of its own, so their
    /// host-local keeps its owner index in the node-wide default dir; dropped with the guard.
    ipam_dir: PathBuf,
}

impl Podman {
    /// Configures podman for the node namespace `node` with `plugin` on the network `net` (its
    /// conflist chaining `portmap`), and imports [`IMAGE`].
    pub fn new(node: &Netns, plugin: &PluginUnderTest, net: &NetSpec) -> Podman {
        let dir = TempDir::new("podman");
        let d = |rel: &str| {
            let p = dir.join(rel);
            std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
            p
        };
        let (netconf, tmp, root, runroot) = (d("net.d"), d("tmp"), d("root"), d("runroot"));
        let bin = bin_dir(dir.path(), plugin, &["portmap"]);
        net.write_conflist(
            &netconf,
            "1.0.0",
            plugin,
            &[serde_json::json!({"type": "portmap", "capabilities": {"portMappings": true}})],
        );
        let conf = dir.join("containers.conf");
        let text = format!(
            "[containers]\n\
             default_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
             [engine]\n\
             runtime = \"runc\"\n\
             cgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\n\
             events_logfile_path = \"{events}\"\n\
             tmp_dir = \"{tmp}\"\n\
             [network]\n\
             network_backend = \"cni\"\n\
             cni_plugin_dirs = [\"{bin}\"]\n\
             network_config_dir = \"{netconf}\"\n",
            events = dir.join("events.log").display(),
            tmp = tmp.display(),
            bin = bin.display(),
            netconf = netconf.display(),
        );
        std::fs::write(&conf, text).unwrap_or_else(|e| panic!("write {}: {e}", conf.display()));
        let registries = dir.join("registries.conf");
        std::fs::write(&registries, "unqualified-search-registries = []\n")
            .unwrap_or_else(|e| panic!("write {}: {e}", registries.display()));
        let storage_conf = dir.join("storage.conf");
        let text = format!(
            "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            root.display(),
            runroot.display()
        );
        std::fs::write(&storage_conf, text)
            .unwrap_or_else(|e| panic!("write {}: {e}", storage_conf.display()));
        let podman = Podman {
            node: node.path().to_path_buf(),
            conf,
            storage_conf,
            root,
            runroot,
            dir,
            ipam_dir: net.data_dir.join(&net.name),
        };
        let rootfs = podman.dir.join("rootfs.tar");
        build_image(&["rootfs", &rootfs.display().to_string()]);
        podman.ok(&["import", "-q", &rootfs.display().to_string(), IMAGE]);
        podman
    }

    /// Runs `podman args...` on the node; returns its output whatever the exit status.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("nsenter");
        cmd.env(crate::INDEX_DIR_ENV, crate::private_index_dir())
            .arg(format!("--net={}", self.node.display()))
            .arg("podman")
            .arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(&self.runroot)
            .args(args)
            .env("CONTAINERS_CONF", &self.conf)
            .env("CONTAINERS_STORAGE_CONF", &self.storage_conf)
            .env(
                "CONTAINERS_REGISTRIES_CONF",
                self.dir.join("registries.conf"),
            );
        run_bounded(&mut cmd, b"", TIMEOUT)
    }

    /// Runs `podman args...`; panics with podman's stderr unless it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "`podman {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        for args in [&["rm", "-af", "-t", "0"][..], &["rmi", "-af"][..]] {
            let out = self.run(args);
            if !out.status.success() {
                eprintln!(
                    "warning: podman {} failed: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        unmount_under(self.dir.path());
        crate::remove_default_index_of(&self.ipam_dir);
    }
}
