//! The network directory's lock, taken with a bound: an operation never waits forever.
//!
//! The lock is `flock(LOCK_EX)` on `<network dir>/lock`, as the reference plugin takes it, so
//! both binaries exclude each other. The uncontended case is one `flock(LOCK_EX | LOCK_NB)`.
//! When the lock is held, the wait is a blocking `flock` interrupted by a one-shot POSIX timer
//! aimed at this thread (`SIGEV_THREAD_ID`, `SIGALRM`): the kernel wakes the waiter the moment
//! the holder releases the lock, and the timer ends the wait at the bound. For the timer to
//! interrupt `flock`, `SIGALRM` needs a handler installed without `SA_RESTART`: the first
//! contended wait of the process installs a no-op one when `SIGALRM` has none (default or
//! ignored) and leaves it for the life of the process, so threads waiting at once never undo
//! each other's handler (a program with its own `SIGALRM` handler keeps it; it must not use
//! `SA_RESTART`). This beats a bounded retry with
//! backoff, which either polls (burning CPU among parallel plugins) or sleeps past the release
//! (each sleep adds up to its length to every contended ADD). After its first expiry the timer
//! repeats every few milliseconds, so a signal that lands just before `flock` went to sleep
//! cannot leave it blocked. Past the bound the operation fails with code 11 (try again later)
//! naming the holder found in `/proc/locks`.

use crate::error::{Error, Result, code};
use nix::libc;
use std::fs::File;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long an operation waits for the lock when `ipam.lockTimeout` is not set.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// Period of the timer after its first expiry (see the module doc).
const REPEAT: Duration = Duration::from_millis(5);

/// Takes the exclusive lock on `file` (the lock file at `path`), waiting at most `bound`;
/// code 11 naming the holder when the bound passes, code 5 on other failures.
pub fn lock_exclusive(file: &File, path: &Path, bound: Duration) -> Result<()> {
    let fd = file.as_raw_fd();
    match flock(fd, libc::LOCK_EX | libc::LOCK_NB) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Err(e) => return Err(Error::io(format!("lock {}", path.display()), e)),
    }
    let start = Instant::now();
    let waited = {
        let _alarm = Alarm::arm(bound)
            .map_err(|e| Error::io(format!("arm the lock timer for {}", path.display()), e))?;
        loop {
            match flock(fd, libc::LOCK_EX) {
                Ok(()) => break Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {
                    if start.elapsed() >= bound {
                        break Err(None);
                    }
                }
                Err(e) => break Err(Some(e)),
            }
        }
    };
    match waited {
        Ok(()) => Ok(()),
        Err(Some(e)) => Err(Error::io(format!("lock {}", path.display()), e)),
        Err(None) => Err(Error::new(
            code::TRY_AGAIN,
            format!(
                "host-local: gave up after {} waiting for the IPAM lock {}{}; try again later \
                 (ipam.lockTimeout sets the wait)",
                seconds(bound),
                path.display(),
                holders(file).map_or(String::new(), |h| format!(", held by {h}"))
            ),
        )),
    }
}

/// `bound` as text for a person: "5 s", "0.25 s".
fn seconds(bound: Duration) -> String {
    format!("{} s", bound.as_secs_f64())
}

fn flock(fd: i32, op: i32) -> std::io::Result<()> {
    // SAFETY: flock on a descriptor owned by the caller's File; no memory is passed.
    if unsafe { libc::flock(fd, op) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A thread-directed `SIGALRM` timer, undone on drop (timer deleted, the thread's signal
/// mask restored).
///
/// The timer calls are raw system calls: in a static musl binary the C library's
/// `timer_create` and `gettid` resolved to null functions (found by a segfault, as
/// `getrandom` before them), and the kernel's interface is all this needs.
struct Alarm {
    /// The kernel's timer id (`kernel_timer_t`, an int).
    timer: libc::c_int,
    old_mask: libc::sigset_t,
}

extern "C" fn wake(_: libc::c_int) {}

/// Installs the no-op `SIGALRM` handler (no `SA_RESTART`) unless the process has its own;
/// once per process.
fn ensure_handler() -> std::io::Result<()> {
    static INSTALLED: std::sync::OnceLock<std::result::Result<(), i32>> =
        std::sync::OnceLock::new();
    let installed = INSTALLED.get_or_init(|| {
        // SAFETY: sigaction with zero-initialised C structs owned by this frame.
        unsafe {
            let mut current: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGALRM, std::ptr::null(), &mut current) != 0 {
                return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
            }
            if current.sa_sigaction != libc::SIG_DFL && current.sa_sigaction != libc::SIG_IGN {
                return Ok(());
            }
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = wake as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = 0; // no SA_RESTART: the blocked flock returns EINTR
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(libc::SIGALRM, &action, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
            }
            Ok(())
        }
    });
    installed.map_err(std::io::Error::from_raw_os_error)
}

impl Alarm {
    fn arm(first: Duration) -> std::io::Result<Alarm> {
        let last = std::io::Error::last_os_error;
        ensure_handler()?;
        // SAFETY: plain libc calls on zero-initialised C structs owned by this frame; every
        // change made is recorded in the returned Alarm and undone by its Drop.
        unsafe {
            let mut unblock: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut unblock);
            libc::sigaddset(&mut unblock, libc::SIGALRM);
            let mut old_mask: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &unblock, &mut old_mask);

            let mut event: libc::sigevent = std::mem::zeroed();
            event.sigev_notify = libc::SIGEV_THREAD_ID;
            event.sigev_signo = libc::SIGALRM;
            event.sigev_notify_thread_id = libc::syscall(libc::SYS_gettid) as libc::c_int;
            let mut timer: libc::c_int = 0;
            if libc::syscall(
                libc::SYS_timer_create,
                libc::CLOCK_MONOTONIC,
                &mut event as *mut libc::sigevent,
                &mut timer as *mut libc::c_int,
            ) != 0
            {
                let e = last();
                libc::pthread_sigmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut());
                return Err(e);
            }
            let alarm = Alarm { timer, old_mask };
            let spec = libc::itimerspec {
                it_interval: timespec(REPEAT),
                it_value: timespec(first.max(Duration::from_nanos(1))),
            };
            if libc::syscall(
                libc::SYS_timer_settime,
                timer,
                0,
                &spec as *const libc::itimerspec,
                std::ptr::null_mut::<libc::itimerspec>(),
            ) != 0
            {
                return Err(last());
            }
            Ok(alarm)
        }
    }
}

impl Drop for Alarm {
    fn drop(&mut self) {
        // SAFETY: undoes Alarm::arm in reverse; a signal the timer generated before deletion
        // is delivered (to the handler) on return from timer_delete, before the mask is back.
        unsafe {
            libc::syscall(libc::SYS_timer_delete, self.timer);
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old_mask, std::ptr::null_mut());
        }
    }
}

fn timespec(d: Duration) -> libc::timespec {
    // SAFETY: timespec is plain data; all-zero is a valid value (the fields' types differ
    // between C libraries, hence the inferred casts below).
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    ts.tv_sec = d.as_secs() as _;
    ts.tv_nsec = d.subsec_nanos() as _;
    ts
}

/// The processes holding a lock on `file`, from `/proc/locks`: "pid 123 (comm: cmdline)", or
/// `None` when none is found (another pid namespace, no /proc).
pub fn holders(file: &File) -> Option<String> {
    let meta = file.metadata().ok()?;
    let (major, minor) = (libc::major(meta.dev()), libc::minor(meta.dev()));
    let want = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let mut found: Vec<String> = Vec::new();
    for line in locks.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; waiters have "->" after the number
        if fields.get(1) == Some(&"->") || fields.get(5) != Some(&want.as_str()) {
            continue;
        }
        let Some(pid) = fields.get(4).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let text = describe(pid);
        if !found.contains(&text) {
            found.push(text);
        }
    }
    (!found.is_empty()).then(|| found.join(", "))
}

/// "pid 123 (comm: arg0 arg1 ...)" from /proc, as much of it as can be read.
fn describe(pid: u32) -> String {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut cmd: String = String::from_utf8_lossy(&cmdline)
        .split('\0')
        .filter(|a| !a.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if cmd.len() > 200 {
        let mut end = 200;
        while !cmd.is_char_boundary(end) {
            end -= 1;
        }
        cmd.truncate(end);
        cmd.push_str("...");
    }
    match (comm.trim(), cmd.as_str()) {
        ("", "") => format!("pid {pid}"),
        (c, "") => format!("pid {pid} ({c})"),
        ("", a) => format!("pid {pid} ({a})"),
        (c, a) => format!("pid {pid} ({c}: {a})"),
    }
}
