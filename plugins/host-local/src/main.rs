//! twill host-local: the file-locked IPAM plugin, a drop-in for the reference host-local (same
//! config, same on-disk state under `dataDir`). All the work is in `twill::ipam::host_local`.
//! The entry point is `twill::plugin_main!` (no Rust runtime start-up: the process lives for
//! about a millisecond).
#![cfg_attr(not(test), no_main)]

use twill::ipam::host_local;
use twill::{CmdArgs, CniResult, NetConf, Plugin, Result};

/// The host-local plugin: each command parses the config and runs in-process.
struct HostLocal;

/// The network config from stdin (code 6 when not JSON, 7 when of the wrong shape).
fn netconf(args: &CmdArgs) -> Result<NetConf> {
    twill::cni::types::parse_netconf(&args.stdin)
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

twill::plugin_main!(
    HostLocal,
    "twill host-local: IP address management from local ranges (reference-compatible state)"
);
