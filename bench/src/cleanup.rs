//! Everything the harness creates (network namespaces, temp dirs) is owned by a guard that removes
//! it on drop, and is also listed in a process-wide registry so that a panic (the release profile
//! aborts, so no unwinding) or a signal still removes it.

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// A resource the harness made and must remove.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Resource {
    Netns(String),
    Dir(PathBuf),
}

static REGISTRY: Mutex<Vec<Resource>> = Mutex::new(Vec::new());
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// True once SIGINT/SIGTERM/SIGHUP arrived: loops check it and bail out so guards run.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// `Err` when interrupted, for `?` in loops.
pub fn check_interrupted() -> Result<(), String> {
    if interrupted() {
        Err("interrupted by signal".into())
    } else {
        Ok(())
    }
}

extern "C" fn on_signal(_: nix::libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Installs the signal handlers and a panic hook that removes everything still registered.
pub fn install_handlers() -> Result<(), String> {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &action) }.map_err(|e| format!("sigaction {sig}: {e}"))?;
    }
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        eprintln!("twill-bench: panic, removing everything the harness created");
        remove_all_registered();
    }));
    Ok(())
}

fn register(r: Resource) {
    if let Ok(mut reg) = REGISTRY.lock() {
        reg.push(r);
    }
}

fn unregister(r: &Resource) {
    if let Ok(mut reg) = REGISTRY.lock() {
        reg.retain(|x| x != r);
    }
}

/// Removes every resource still registered (panic hook and last-resort path in `main`).
pub fn remove_all_registered() {
    // try_lock: the panicking thread may hold the lock; never deadlock in the hook.
    let items: Vec<Resource> = match REGISTRY.try_lock() {
        Ok(mut reg) => std::mem::take(&mut *reg),
        Err(_) => return,
    };
    let names: Vec<String> = items
        .iter()
        .filter_map(|r| match r {
            Resource::Netns(n) => Some(n.clone()),
            Resource::Dir(_) => None,
        })
        .collect();
    delete_netns(&names);
    for r in &items {
        if let Resource::Dir(p) = r {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// The path of a named netns.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// Runs `ip [pre...] -batch -` feeding `lines` on stdin.
pub fn ip_batch(pre: &[&str], lines: &[String], force: bool) -> Result<(), String> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut cmd = Command::new("ip");
    cmd.args(pre);
    if force {
        cmd.arg("-force");
    }
    cmd.args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("spawn ip: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let mut text = lines.join("\n");
        text.push('\n');
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| format!("write to ip: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("wait ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {} -batch failed: {}",
            pre.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Deletes the named netns that still exist (errors ignored: best effort cleanup).
fn delete_netns(names: &[String]) {
    let lines: Vec<String> = names
        .iter()
        .filter(|n| netns_path(n).exists())
        .map(|n| format!("netns del {n}"))
        .collect();
    let _ = ip_batch(&[], &lines, true);
}

/// A set of named network namespaces, created together, deleted on drop.
pub struct NetnsSet {
    names: Vec<String>,
}

impl NetnsSet {
    /// Creates all `names` with one `ip -batch`; on failure removes those that were made.
    pub fn create(names: Vec<String>) -> Result<NetnsSet, String> {
        for n in &names {
            register(Resource::Netns(n.clone()));
        }
        let set = NetnsSet { names };
        let lines: Vec<String> = set.names.iter().map(|n| format!("netns add {n}")).collect();
        ip_batch(&[], &lines, false)?;
        Ok(set)
    }

    /// The names, in creation order.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

impl Drop for NetnsSet {
    fn drop(&mut self) {
        delete_netns(&self.names);
        for n in &self.names {
            unregister(&Resource::Netns(n.clone()));
        }
    }
}

/// A temp directory removed (recursively) on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<base>/tw-bench-<pid>-<tag>` (fails if it exists). The base is `$BENCH_STATE_DIR`,
    /// else `/var/lib/cni` (where plugin state lives on a node; created if needed): on this machine
    /// file creation under `/tmp` costs 10-30x more than elsewhere on the same disk, which would
    /// swamp the plugins' own cost.
    pub fn create(tag: &str) -> Result<TempDir, String> {
        let base = std::env::var_os("BENCH_STATE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/lib/cni"));
        std::fs::create_dir_all(&base).map_err(|e| format!("create {}: {e}", base.display()))?;
        let path = base.join(format!("tw-bench-{}-{tag}", std::process::id()));
        std::fs::create_dir(&path).map_err(|e| format!("create {}: {e}", path.display()))?;
        register(Resource::Dir(path.clone()));
        Ok(TempDir { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
        unregister(&Resource::Dir(self.path.clone()));
    }
}

/// A unique name prefix for this run: `tw-bench-<pid>`.
pub fn prefix() -> String {
    format!("tw-bench-{}", std::process::id())
}
