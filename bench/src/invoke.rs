//! One timed plugin invocation, exactly what a runtime pays: spawn the binary with the CNI
//! environment, write the config to its stdin, wait, read its stdout. The child is reaped with
//! wait4(2), whose rusage gives its peak RSS.

use nix::libc;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The CNI environment of one invocation.
pub struct CniEnv<'a> {
    /// `CNI_COMMAND`: "ADD" or "DEL".
    pub command: &'a str,
    /// `CNI_CONTAINERID`.
    pub container_id: &'a str,
    /// `CNI_NETNS`.
    pub netns: &'a Path,
    /// `CNI_IFNAME`.
    pub ifname: &'a str,
    /// `CNI_PATH`.
    pub cni_path: &'a Path,
}

/// What a successful invocation returned.
pub struct Invocation {
    /// Wall time from spawn to the collected exit status and stdout.
    pub elapsed: Duration,
    /// The plugin's stdout.
    pub stdout: Vec<u8>,
    /// Peak resident set size of the process, KiB (`ru_maxrss` from wait4; never below the
    /// harness's own peak, see [`invoke_probe`]).
    pub max_rss_kb: u64,
    /// The child's own peak RSS as reported by `twill-spawn`, when it ran under it.
    pub probed_rss_kb: Option<u64>,
}

/// The owner-index directory twill's host-local gets in this run (see [`set_index_dir`]).
static INDEX_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Gives every plugin call of this run `dir` as host-local's owner-index directory
/// (`TWILL_HOST_LOCAL_INDEX_DIR`), so the bench leaves nothing under `/run/twill`.
pub fn set_index_dir(dir: &Path) {
    let _ = INDEX_DIR.set(dir.to_path_buf());
}

/// Runs `bin` once and times it. The child inherits the calling thread's network namespace
/// (see [`enter_netns`]). Non-zero exit is an `Err` with the plugin's stdout and stderr.
pub fn invoke(bin: &Path, env: &CniEnv, stdin: &[u8]) -> Result<Invocation, String> {
    invoke_args(bin, &[], env, stdin)
}

/// [`invoke`] with command-line arguments (plugins get none; the bare-kernel program does).
pub fn invoke_args(
    bin: &Path,
    args: &[&str],
    env: &CniEnv,
    stdin: &[u8],
) -> Result<Invocation, String> {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("CNI_COMMAND", env.command)
        .env("CNI_CONTAINERID", env.container_id)
        .env("CNI_NETNS", env.netns)
        .env("CNI_IFNAME", env.ifname)
        .env("CNI_PATH", env.cni_path)
        .envs(INDEX_DIR.get().map(|d| ("TWILL_HOST_LOCAL_INDEX_DIR", d)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
    if let Some(mut pipe) = child.stdin.take() {
        // A config is far below the pipe buffer: this never blocks on the child.
        pipe.write_all(stdin)
            .map_err(|e| format!("write stdin of {}: {e}", bin.display()))?;
    }
    // A plugin writes a few KiB at most: stdout to its end, then stderr, cannot deadlock.
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    if let Some(mut p) = child.stdout.take() {
        p.read_to_end(&mut stdout)
            .map_err(|e| format!("read stdout of {}: {e}", bin.display()))?;
    }
    if let Some(mut p) = child.stderr.take() {
        p.read_to_end(&mut stderr)
            .map_err(|e| format!("read stderr of {}: {e}", bin.display()))?;
    }
    let (status, max_rss_kb) =
        reap(child.id()).map_err(|e| format!("wait4 {}: {e}", bin.display()))?;
    let elapsed = start.elapsed();
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    if !ok {
        let how = if libc::WIFEXITED(status) {
            format!("exit status {}", libc::WEXITSTATUS(status))
        } else {
            format!("signal {}", libc::WTERMSIG(status))
        };
        return Err(format!(
            "{} {} {} failed ({how}): stdout: {} stderr: {}",
            bin.display(),
            env.command,
            env.container_id,
            String::from_utf8_lossy(&stdout).trim(),
            String::from_utf8_lossy(&stderr).trim()
        ));
    }
    Ok(Invocation {
        elapsed,
        stdout,
        max_rss_kb,
        probed_rss_kb: probed_rss(&stderr),
    })
}

/// [`invoke_args`] through `twill-spawn` (next to the twill binaries), which reports the
/// program's own peak RSS, free of the harness's (see bench/src/spawn.rs). Untimed use only:
/// the extra exec is in `elapsed`.
pub fn invoke_probe(
    bin: &Path,
    args: &[&str],
    env: &CniEnv,
    stdin: &[u8],
) -> Result<Invocation, String> {
    let dir = twill_bin_dir();
    let spawn = find_bin(&dir, "twill-spawn")
        .ok_or_else(|| format!("twill-spawn not found in {}", dir.display()))?;
    let bin_s = bin.display().to_string();
    let mut all = vec![bin_s.as_str()];
    all.extend_from_slice(args);
    let mut inv = invoke_args(&spawn, &all, env, stdin)?;
    inv.max_rss_kb = inv
        .probed_rss_kb
        .ok_or_else(|| format!("twill-spawn printed no maxrss line for {}", bin.display()))?;
    Ok(inv)
}

/// The `maxrss_kb=` of twill-spawn's last stderr line, if any.
fn probed_rss(stderr: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with("twill-spawn: "))?;
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("maxrss_kb="))?
        .parse()
        .ok()
}

/// Reaps child `pid` with wait4(2): its wait status and peak RSS in KiB.
fn reap(pid: u32) -> std::io::Result<(i32, u64)> {
    let mut status = 0;
    // SAFETY: rusage is plain old data; wait4 fills it for the child we spawned.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to locals for the duration of the call.
        let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut ru) };
        if r >= 0 {
            return Ok((status, u64::try_from(ru.ru_maxrss).unwrap_or(0)));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Moves the calling thread (only it) into the named netns; processes it spawns afterwards start
/// there. Only for harness worker threads, never the main thread.
pub fn enter_netns(path: &Path) -> Result<(), String> {
    let f = File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("setns {}: {e}", path.display()))
}

/// Where the twill binaries are: `$TWILL_BIN_DIR`, else `<workspace>/target/release`.
pub fn twill_bin_dir() -> PathBuf {
    match std::env::var_os("TWILL_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release");
            d.canonicalize().unwrap_or(d)
        }
    }
}

/// Where the reference plugins are: `$REF_CNI_DIR`, else `/usr/lib/cni`.
pub fn ref_bin_dir() -> PathBuf {
    match std::env::var_os("REF_CNI_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from("/usr/lib/cni"),
    }
}

/// `dir/name` if it is an executable file.
pub fn find_bin(dir: &Path, name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    match std::fs::metadata(&p) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Some(p),
        _ => None,
    }
}
