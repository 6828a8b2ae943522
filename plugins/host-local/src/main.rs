//! twill host-local: the file-locked IPAM plugin, a drop-in for the reference host-local (same
//! config, same on-disk state under `dataDir`). All the work is in `twill::ipam::host_local`.
//!
//! The binary lives for about a millisecond, so its start-up counts: it defines the C `main`
//! itself (`no_main`) instead of going through the Rust runtime's start-up, which would install
//! a stack-overflow handler (an alternate signal stack, and reading `/proc/self/maps` to find
//! the main thread's stack) that a short-lived plugin does not need. The two parts of that
//! start-up that do matter are kept: standard descriptors that are closed at exec are opened on
//! `/dev/null` (so no file the plugin opens can become its stdout or stderr), and `SIGPIPE` is
//! ignored (a runtime that stopped reading gets an exit code, not a killed plugin).
#![no_main]

use std::ffi::{c_char, c_int};
use twill::ipam::host_local;
use twill::{CmdArgs, CniResult, NetConf, Plugin, Result};

/// The host-local plugin: each command parses the config and runs in-process.
struct HostLocal;

/// The network config from stdin (code 6 when not JSON, 7 when of the wrong shape).
fn netconf(args: &CmdArgs) -> Result<NetConf> {
    twill::types::parse_netconf(&args.stdin)
}

impl Plugin for HostLocal {
    fn add(&self, args: &CmdArgs) -> Result<CniResult> {
        host_local::add(args, &netconf(args)?)
    }

    fn del(&self, args: &CmdArgs) -> Result<()> {
        host_local::del(args, &netconf(args)?)
    }

    fn check(&self, args: &CmdArgs) -> Result<()> {
        host_local::check(args, &netconf(args)?)
    }

    fn gc(&self, args: &CmdArgs) -> Result<()> {
        host_local::gc(args, &netconf(args)?)
    }

    fn status(&self, args: &CmdArgs) -> Result<()> {
        host_local::status(args, &netconf(args)?)
    }
}

/// Opens `/dev/null` on whichever of the descriptors 0, 1 and 2 is closed (one `poll`).
fn sanitize_standard_fds() {
    use nix::libc;
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: `fds` is a valid array of three pollfd for the duration of the call.
    if unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) } < 0 {
        return;
    }
    for pfd in fds {
        if pfd.revents & libc::POLLNVAL != 0 {
            // The lowest free descriptor is the closed one; it stays open (and inherited, as a
            // standard descriptor is) for the process's lifetime.
            // SAFETY: a NUL-terminated path and plain flags.
            unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        }
    }
}

/// The process entry point (see the crate doc).
#[unsafe(no_mangle)]
extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    sanitize_standard_fds();
    // SAFETY: setting a signal's disposition to "ignore" has no memory-safety requirements.
    unsafe { nix::libc::signal(nix::libc::SIGPIPE, nix::libc::SIG_IGN) };
    twill::skeleton::run(
        &HostLocal,
        "twill host-local: IP address management from local ranges (reference-compatible state)",
    )
}
