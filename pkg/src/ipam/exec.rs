//! Delegation to an IPAM plugin binary found in `CNI_PATH` (any `ipam.type` but host-local).
//!
//! The plugin runs with the caller's `CNI_*` values (the command being the one delegated), the
//! network config serialized as JSON on stdin, and its stdout and stderr captured. A failure is
//! returned with the plugin's own error code; output that is not a CNI error object becomes
//! code 103 with the plugin's stderr in the details.

use crate::error::{Error, Result, code};
use crate::skeleton::{CmdArgs, Command};
use crate::types::{CniResult, NetConf};
use crate::version;
use serde::Serialize;
use serde_json::Value;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};

/// The `CNI_COMMAND` value of `command`.
pub fn command_name(command: Command) -> &'static str {
    match command {
        Command::Add => "ADD",
        Command::Del => "DEL",
        Command::Check => "CHECK",
        Command::Version => "VERSION",
        Command::Gc => "GC",
        Command::Status => "STATUS",
    }
}

/// Finds the executable `plugin_type` in `cni_path` (first match wins). Names that are empty,
/// `.`/`..` or contain `/` or NUL are rejected (code 7); not found is code 103.
pub fn find_plugin(plugin_type: &str, cni_path: &[PathBuf]) -> Result<PathBuf> {
    if plugin_type.is_empty()
        || plugin_type == "."
        || plugin_type == ".."
        || plugin_type.contains(['/', '\0'])
    {
        return Err(Error::invalid_config(format!(
            "ipam.type: {plugin_type:?} is not a plugin name (a file name in CNI_PATH, no '/')"
        )));
    }
    for dir in cni_path {
        let candidate = dir.join(plugin_type);
        if let Ok(meta) = std::fs::metadata(&candidate)
            && meta.is_file()
            && meta.permissions().mode() & 0o111 != 0
        {
            return Ok(candidate);
        }
    }
    let dirs: Vec<String> = cni_path.iter().map(|d| d.display().to_string()).collect();
    Err(Error::new(
        code::IPAM_DELEGATE,
        format!(
            "IPAM plugin {plugin_type:?} not found in CNI_PATH ({})",
            if dirs.is_empty() {
                "empty".to_string()
            } else {
                dirs.join(":")
            }
        ),
    ))
}

/// Runs IPAM plugin `plugin_type` for `command` and returns its stdout on success.
pub fn run<P: Serialize>(
    plugin_type: &str,
    command: Command,
    args: &CmdArgs,
    conf: &NetConf<P>,
) -> Result<Vec<u8>> {
    let binary = find_plugin(plugin_type, &args.path)?;
    let stdin = serde_json::to_vec(conf).map_err(|e| {
        Error::new(code::IPAM_DELEGATE, "cannot serialize the network config").with_details(e)
    })?;
    let cni_path = std::env::join_paths(&args.path)
        .map_err(|e| Error::invalid_env("CNI_PATH: cannot join").with_details(e))?;

    let mut proc = Process::new(&binary);
    proc.env("CNI_COMMAND", command_name(command))
        .env("CNI_ARGS", &args.args)
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    set_or_remove(&mut proc, "CNI_CONTAINERID", &args.container_id);
    set_or_remove(&mut proc, "CNI_IFNAME", &args.ifname);
    match &args.netns {
        Some(ns) => proc.env("CNI_NETNS", ns),
        None => proc.env_remove("CNI_NETNS"),
    };

    let delegate_err = |what: &str, e: std::io::Error| {
        Error::new(
            code::IPAM_DELEGATE,
            format!("IPAM plugin {}: {what}", binary.display()),
        )
        .with_details(e)
    };
    let mut child = proc
        .spawn()
        .map_err(|e| delegate_err("cannot execute", e))?;
    if let Some(mut pipe) = child.stdin.take() {
        // A plugin may exit without reading stdin; its exit status tells what happened.
        let _ = pipe.write_all(&stdin);
    }
    let output = child
        .wait_with_output()
        .map_err(|e| delegate_err("cannot wait", e))?;
    if output.status.success() {
        return Ok(output.stdout);
    }
    Err(plugin_error(
        plugin_type,
        &binary,
        &output.stdout,
        &output.stderr,
        output.status,
    ))
}

fn set_or_remove(proc: &mut Process, key: &str, value: &str) {
    if value.is_empty() {
        proc.env_remove(key);
    } else {
        proc.env(key, value);
    }
}

/// The error a failed plugin reported on stdout (its code kept), else code 103 with stderr.
fn plugin_error(
    plugin_type: &str,
    binary: &Path,
    stdout: &[u8],
    stderr: &[u8],
    status: std::process::ExitStatus,
) -> Error {
    if let Ok(v) = serde_json::from_slice::<Value>(stdout)
        && let Some(c) = v.get("code").and_then(Value::as_u64)
        && let Ok(c) = u32::try_from(c)
    {
        let msg = v
            .get("msg")
            .and_then(Value::as_str)
            .unwrap_or("(no message)");
        let details = v.get("details").and_then(Value::as_str).unwrap_or("");
        return Error::new(c, format!("IPAM plugin {plugin_type}: {msg}")).with_details(details);
    }
    let stderr = String::from_utf8_lossy(stderr);
    let stdout = String::from_utf8_lossy(stdout);
    let mut details = format!("stderr: {}", stderr.trim());
    if !stdout.trim().is_empty() {
        details.push_str(&format!("; stdout: {}", stdout.trim()));
    }
    Error::new(
        code::IPAM_DELEGATE,
        format!("IPAM plugin {} failed ({status})", binary.display()),
    )
    .with_details(details)
}

/// ADD through the plugin: its result, parsed in the config's CNI version.
pub fn add<P: Serialize>(
    plugin_type: &str,
    args: &CmdArgs,
    conf: &NetConf<P>,
) -> Result<CniResult> {
    let stdout = run(plugin_type, Command::Add, args, conf)?;
    let value: Value = serde_json::from_slice(&stdout).map_err(|e| {
        Error::new(
            code::IPAM_DELEGATE,
            format!("IPAM plugin {plugin_type}: ADD printed no JSON result"),
        )
        .with_details(format!("{e}: {}", String::from_utf8_lossy(&stdout).trim()))
    })?;
    version::parse_result(&value, &conf.cni_version)
        .map_err(|e| e.context(format!("IPAM plugin {plugin_type}: bad ADD result")))
}

/// DEL, CHECK, GC or STATUS through the plugin (stdout ignored).
pub fn simple<P: Serialize>(
    plugin_type: &str,
    command: Command,
    args: &CmdArgs,
    conf: &NetConf<P>,
) -> Result<()> {
    run(plugin_type, command, args, conf).map(|_| ())
}
