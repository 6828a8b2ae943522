//! Guards for the resources a test owns: named network namespaces and temporary directories.

use crate::process::{DEFAULT_TIMEOUT, run_bounded};
use crate::unique_name;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A named network namespace (`ip netns add`), deleted on drop (also on panic).
///
/// Deleting the namespace destroys every link in it; a veth whose peer lives elsewhere is
/// destroyed with it. Commands run inside via `nsenter --net=/run/netns/NAME`.
#[derive(Debug)]
pub struct Netns {
    name: String,
    path: PathBuf,
}

impl Netns {
    /// Creates a fresh namespace named `twc-<pid>-<n>`.
    pub fn new() -> Netns {
        Netns::create(unique_name(""))
    }

    /// Creates a fresh namespace named `twc-<pid>-<n>-<tag>` (the tag helps debugging).
    pub fn with_tag(tag: &str) -> Netns {
        Netns::create(unique_name(tag))
    }

    fn create(name: String) -> Netns {
        crate::process::run_ok("ip", &["netns", "add", &name]);
        let path = PathBuf::from("/run/netns").join(&name);
        Netns { name, path }
    }

    /// The namespace's name (as `ip -n` takes it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mounted namespace file (what `CNI_NETNS` points to).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The namespace path as a string (for `CNI_NETNS`).
    pub fn path_str(&self) -> String {
        self.path.display().to_string()
    }

    /// Runs `cmd` (program and arguments) inside the namespace; returns its output.
    pub fn exec(&self, cmd: &[&str]) -> Output {
        assert!(!cmd.is_empty(), "Netns::exec needs a program");
        let net = format!("--net={}", self.path.display());
        run_bounded(
            Command::new("nsenter").arg(net).args(cmd),
            b"",
            DEFAULT_TIMEOUT,
        )
    }

    /// Runs `cmd` inside the namespace with `stdin` fed to it (e.g. `nft -f -`).
    pub fn exec_stdin(&self, cmd: &[&str], stdin: &[u8]) -> Output {
        assert!(!cmd.is_empty(), "Netns::exec_stdin needs a program");
        let net = format!("--net={}", self.path.display());
        run_bounded(
            Command::new("nsenter").arg(net).args(cmd),
            stdin,
            DEFAULT_TIMEOUT,
        )
    }

    /// Loads an nftables script into the namespace (`nft -f -`); panics with nft's message
    /// unless it is accepted.
    pub fn nft_load(&self, script: &str) {
        let out = self.exec_stdin(&["nft", "-f", "-"], script.as_bytes());
        assert!(
            out.status.success(),
            "in netns {}: nft -f rejected the script ({}): {}\n{script}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    /// Deletes the namespace now (`ip netns del`), e.g. to test a plugin against a pod whose
    /// netns is gone; the guard then has nothing left to do.
    pub fn delete_now(&self) {
        crate::process::run_ok("ip", &["netns", "del", &self.name]);
    }

    /// Like [`Netns::exec`], but panics (with stderr) unless the command succeeds; returns stdout.
    pub fn exec_ok(&self, cmd: &[&str]) -> String {
        let out = self.exec(cmd);
        if !out.status.success() {
            panic!(
                "in netns {}: `{}` failed ({}): {}",
                self.name,
                cmd.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `ip -n NAME args...`; panics unless it succeeds; returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        crate::process::run_ok("ip", &full)
    }

    /// Brings the loopback device up.
    pub fn lo_up(&self) {
        self.ip(&["link", "set", "lo", "up"]);
    }
}

impl Default for Netns {
    fn default() -> Self {
        Netns::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.path.exists() {
            // Already deleted (Netns::delete_now).
            return;
        }
        let out = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "warning: ip netns del {} failed: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("warning: cannot run ip netns del {}: {e}", self.name),
        }
    }
}

/// A temporary directory `$TMPDIR/twc-<pid>-<n>-<tag>`, removed recursively on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a fresh, empty directory.
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(unique_name(tag));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("create temp dir {}: {e}", path.display()));
        TempDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path/rel`.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("warning: remove {}: {e}", self.path.display());
        }
    }
}
