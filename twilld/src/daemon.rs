//! `twilld run`: reconcile at start, then on every change (debounced), sleeping in poll(2) on
//! inotify, rtnetlink, nf_tables and a signalfd; no timer runs while nothing happens. SIGHUP
//! re-reads everything and says standing problems again; SIGTERM and SIGINT exit 0 at once,
//! leaving the node state in place. One daemon per network namespace. In etcd mode the lease
//! feed's descriptor is polled too: a lease change rewrites the view and wakes the loop.

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::os::fd::AsFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::time::Instant;

use crate::events::KernelEvents;
use crate::feed::ViewFeed;
use crate::log::Log;
use crate::round::{Options, Round};
use crate::watch::Watches;

/// The abstract unix socket a daemon binds: abstract names are per network namespace, and the
/// kernel frees the name when the process ends, however it ends.
const INSTANCE_NAME: &[u8] = b"twilld";

/// Runs the daemon until SIGTERM or SIGINT (Ok) or until it cannot go on (Err, why), with the
/// view feed `make_feed` opens once this daemon is the namespace's only one.
pub fn run(
    opts: &Options,
    make_feed: impl FnOnce() -> Result<Box<dyn ViewFeed>, String>,
) -> Result<(), String> {
    let _instance = claim_instance()?;
    let mut mask = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        mask.add(s);
    }
    mask.thread_block()
        .map_err(|e| format!("cannot block signals: {e}"))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("cannot create a signalfd: {e}"))?;
    let mut events =
        KernelEvents::open().map_err(|e| format!("cannot subscribe to rtnetlink: {e}"))?;
    let mut watches = Watches::new().map_err(|e| format!("cannot create inotify: {e}"))?;
    let mut feed = make_feed()?;
    let mut log = Log::once();
    for p in watches.set(&opts.conf_dir, &[]).1 {
        log.error(&p);
    }
    log.change(&format!(
        "running (pid {}), conf dir {}",
        std::process::id(),
        opts.conf_dir.display()
    ));
    // On a fresh node in etcd mode the first pass waits (bounded) for the lease's files.
    let mut due = match feed.first_files_within() {
        Some(bound) => Some(Instant::now() + bound),
        None => pass(opts, feed.as_ref(), &mut watches, &mut log),
    };
    loop {
        let timeout = match due {
            None => PollTimeout::NONE,
            Some(t) => {
                let left = t.saturating_duration_since(Instant::now());
                PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
            }
        };
        let (sig, ino, route, nft, fed) = {
            let mut fds = vec![
                PollFd::new(signals.as_fd(), PollFlags::POLLIN),
                PollFd::new(watches.fd(), PollFlags::POLLIN),
                PollFd::new(events.rtnl_fd(), PollFlags::POLLIN),
            ];
            let nft_at = events.nft_fd().map(|fd| {
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
                fds.len() - 1
            });
            let feed_at = feed.fd().map(|fd| {
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
                fds.len() - 1
            });
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(format!("poll failed: {e}")),
            }
            let ready = |i: Option<usize>| {
                i.and_then(|i| fds.get(i))
                    .and_then(PollFd::revents)
                    .is_some_and(|r| !r.is_empty())
            };
            (
                ready(Some(0)),
                ready(Some(1)),
                ready(Some(2)),
                ready(nft_at),
                ready(feed_at),
            )
        };
        if sig {
            while let Ok(Some(si)) = signals.read_signal() {
                match Signal::try_from(si.ssi_signo as i32) {
                    Ok(s @ (Signal::SIGTERM | Signal::SIGINT)) => {
                        log.change(&format!("{s}: exiting, node state left in place"));
                        return Ok(());
                    }
                    Ok(Signal::SIGHUP) => {
                        log.change("SIGHUP: re-reading the conf dir and the views");
                        log.repeat();
                        due = Some(Instant::now());
                    }
                    _ => {}
                }
            }
        }
        let mut changed = ino && watches.drain();
        changed |= route && events.drain_rtnl();
        changed |= nft && events.drain_nft();
        changed |= fed && feed.drain();
        if changed {
            let soon = Instant::now() + opts.debounce;
            due = Some(due.map_or(soon, |d| d.min(soon)));
        }
        if due.is_some_and(|t| Instant::now() >= t) {
            due = pass(opts, feed.as_ref(), &mut watches, &mut log);
        }
    }
}

/// One pass: load, watch what it reads, sync. Returns when the next pass is due: after the
/// debounce when the watches changed (a file written between this pass's read and its new
/// watch would be missed otherwise), else none.
fn pass(
    opts: &Options,
    feed: &dyn ViewFeed,
    watches: &mut Watches,
    log: &mut Log,
) -> Option<Instant> {
    let mut rewatched = false;
    match Round::load(opts, log) {
        Ok(round) => {
            let (changed, problems) = watches.set(&opts.conf_dir, &round.watched_files(feed));
            rewatched = changed;
            for p in problems {
                log.error(&p);
            }
            round.sync(log);
        }
        Err(e) => log.error(&format!("cannot reconcile: {e}")),
    }
    log.end_pass();
    rewatched.then(|| Instant::now() + opts.debounce)
}

/// Binds the namespace's twilld name; a second daemon in the same namespace is refused.
fn claim_instance() -> Result<UnixListener, String> {
    let addr = SocketAddr::from_abstract_name(INSTANCE_NAME)
        .map_err(|e| format!("cannot name the instance socket: {e}"))?;
    UnixListener::bind_addr(&addr).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            "another twilld is already running in this network namespace (it holds the \
             abstract socket @twilld): stop it before starting a new one"
                .to_string()
        } else {
            format!("cannot bind the instance socket @twilld: {e}")
        }
    })
}
