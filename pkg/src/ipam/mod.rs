//! IPAM: the in-process host-local allocator and delegation to any other IPAM plugin.
//!
//! The dispatchers [`add`], [`del`], [`check`], [`gc`] and [`status`] look at `ipam.type` of the
//! network config: `host-local` runs in-process ([`host_local`]), anything else is executed
//! from `CNI_PATH` ([`exec`]) with the same `CNI_*` values and the config on stdin. The command
//! run is the dispatcher's, not `args.command` (a plugin rolling back a failed ADD calls
//! [`del`] with its ADD arguments).

pub mod exec;
pub mod host_local;
pub mod resolv;

use crate::cni::skeleton::{CmdArgs, Command};
use crate::cni::types::{CniResult, NetConf};
use crate::error::{Error, Result};
use serde::Serialize;

/// The `ipam.type` that runs in-process.
pub const HOST_LOCAL: &str = "host-local";

/// `ipam.type` of `conf`: code 7 when the section or its type is missing.
pub fn ipam_type<P>(conf: &NetConf<P>) -> Result<&str> {
    let ipam = conf
        .ipam
        .as_ref()
        .ok_or_else(|| Error::invalid_config("ipam: missing; this plugin needs an ipam section"))?;
    match ipam.get("type") {
        Some(serde_json::Value::String(t)) if !t.is_empty() => Ok(t),
        Some(other) => Err(Error::invalid_config(format!(
            "ipam.type: expected a plugin name such as \"host-local\", got {other}"
        ))),
        None => Err(Error::invalid_config(
            "ipam.type: missing (e.g. \"host-local\")",
        )),
    }
}

/// IPAM ADD: the addresses (and routes, DNS) for this attachment.
pub fn add<P: Serialize>(args: &CmdArgs, conf: &NetConf<P>) -> Result<CniResult> {
    match ipam_type(conf)? {
        HOST_LOCAL => host_local::add(args, conf),
        other => exec::add(other, args, conf),
    }
}

/// IPAM DEL: releases this attachment's addresses (idempotent).
pub fn del<P: Serialize>(args: &CmdArgs, conf: &NetConf<P>) -> Result<()> {
    match ipam_type(conf)? {
        HOST_LOCAL => host_local::del(args, conf),
        other => exec::simple(other, Command::Del, args, conf),
    }
}

/// IPAM CHECK: verifies this attachment still holds its addresses.
pub fn check<P: Serialize>(args: &CmdArgs, conf: &NetConf<P>) -> Result<()> {
    match ipam_type(conf)? {
        HOST_LOCAL => host_local::check(args, conf),
        other => exec::simple(other, Command::Check, args, conf),
    }
}

/// IPAM GC: releases what is not in `cni.dev/valid-attachments`.
pub fn gc<P: Serialize>(args: &CmdArgs, conf: &NetConf<P>) -> Result<()> {
    match ipam_type(conf)? {
        HOST_LOCAL => host_local::gc(args, conf),
        other => exec::simple(other, Command::Gc, args, conf),
    }
}

/// IPAM STATUS: Ok when an ADD could be served.
pub fn status<P: Serialize>(args: &CmdArgs, conf: &NetConf<P>) -> Result<()> {
    match ipam_type(conf)? {
        HOST_LOCAL => host_local::status(args, conf),
        other => exec::simple(other, Command::Status, args, conf),
    }
}
