//! Running external commands with a bounded wall time.
//!
//! Every process the harness starts goes through [`run_bounded`]: stdin is written from a
//! separate thread (so a plugin that stops reading cannot deadlock us), and a process still
//! running after the timeout is killed with its whole process group and reported as a test failure.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The default upper bound for one helper command (`ip`, `nsenter`, a plugin run).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `cmd` with `stdin` fed to it, capturing stdout and stderr.
///
/// Panics when the command cannot be started or does not finish within `timeout` (after
/// killing it). A broken pipe while writing stdin is ignored: the exit code tells the story.
pub fn run_bounded(cmd: &mut Command, stdin: &[u8], timeout: Duration) -> Output {
    let desc = format!("{cmd:?}");
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Own process group, so a timeout kills the command and everything it started.
    cmd.process_group(0);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {desc}: {e}"));
    let pid = child.id();
    let mut pipe = child.stdin.take();
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        if let Some(p) = pipe.as_mut() {
            let _ = p.write_all(&input);
        }
        drop(pipe);
    });
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(timeout) {
        Ok(res) => res.unwrap_or_else(|e| panic!("waiting for {desc}: {e}")),
        Err(_) => {
            let group = nix::unistd::Pid::from_raw(-(pid as i32));
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
            // The waiter reaps the child once the group is dead; it is not joined here.
            panic!("{desc} did not finish within {timeout:?}; killed it");
        }
    };
    let _ = waiter.join();
    let _ = writer.join();
    out
}

/// Runs `program args...` (no stdin) and returns stdout; panics with stderr on failure.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run_bounded(Command::new(program).args(args), b"", DEFAULT_TIMEOUT);
    if !out.status.success() {
        panic!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}
