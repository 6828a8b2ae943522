//! The skeleton every plugin's `main` calls: reads the CNI environment and stdin, validates them,
//! dispatches the command to a [`Plugin`], and prints the result or the error object.

use crate::error::Result;
use crate::types::CniResult;
use std::path::PathBuf;

/// A CNI command (`CNI_COMMAND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// ADD
    Add,
    /// DEL
    Del,
    /// CHECK
    Check,
    /// VERSION
    Version,
    /// GC (1.1.0)
    Gc,
    /// STATUS (1.1.0)
    Status,
}

/// Everything a plugin receives from the runtime, validated for its command.
#[derive(Debug, Clone)]
pub struct CmdArgs {
    /// The command.
    pub command: Command,
    /// `CNI_CONTAINERID` (empty for GC, STATUS, VERSION).
    pub container_id: String,
    /// `CNI_NETNS`, if given.
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME` (empty for GC, STATUS, VERSION).
    pub ifname: String,
    /// `CNI_ARGS`, raw (parse with [`crate::args::CniArgs`]).
    pub args: String,
    /// `CNI_PATH`, split on `:`.
    pub path: Vec<PathBuf>,
    /// The raw network configuration from stdin.
    pub stdin: Vec<u8>,
    /// The config's `cniVersion` (validated as supported).
    pub cni_version: String,
}

/// What a plugin implements; the skeleton does all the talking to the runtime.
pub trait Plugin {
    /// ADD: returns the result, which the skeleton prints in the config's CNI version.
    fn add(&self, args: &CmdArgs) -> Result<CniResult>;
    /// DEL: must be idempotent.
    fn del(&self, args: &CmdArgs) -> Result<()>;
    /// CHECK: verifies the attachment against `prevResult`.
    fn check(&self, args: &CmdArgs) -> Result<()>;
    /// GC: releases what is not in `cni.dev/valid-attachments`.
    fn gc(&self, _args: &CmdArgs) -> Result<()> {
        Ok(())
    }
    /// STATUS: `Ok` when ready to serve ADD; code 50/51 otherwise.
    fn status(&self, _args: &CmdArgs) -> Result<()> {
        Ok(())
    }
}

/// Runs `plugin` as the current process's CNI command and exits with the right code.
/// `about` is printed to stderr when the binary is run without `CNI_COMMAND`.
pub fn run(plugin: &dyn Plugin, about: &str) -> ! {
    let _ = (plugin, about);
    todo!("skeleton::run")
}
