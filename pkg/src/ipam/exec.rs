//! Delegation to an IPAM plugin binary found in `CNI_PATH` (any `ipam.type` but host-local).
//!
//! The plugin runs with the caller's `CNI_*` values (the command being the one delegated), the
//! network config serialized as JSON on stdin, and its stdout and stderr captured. A failure is
//! returned with the plugin's own error code; output that is not a CNI error object becomes
//! code 103 with the plugin's stderr in the details.

use crate::cni::skeleton::{CmdArgs, Command};
use crate::cni::types::{CniResult, NetConf};
use crate::cni::version;
use crate::error::{Error, Result, code};
use serde::Serialize;
use serde_json::Value;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};

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
    proc.env("CNI_COMMAND", command.as_str())
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
    let mut child = spawn(&mut proc).map_err(|e| delegate_err("cannot execute", e))?;
    let output = match child.stdin.take() {
        // A write that fits the pipe (64 KiB by default) cannot block, whatever the plugin does.
        Some(mut pipe) if stdin.len() <= PIPE_CAPACITY => {
            // A plugin may exit without reading stdin; its exit status tells what happened.
            let _ = pipe.write_all(&stdin);
            drop(pipe);
            child.wait_with_output()
        }
        // A larger config is fed from a thread while the plugin's output is drained, so a plugin
        // that writes before it reads cannot deadlock against us.
        Some(mut pipe) => std::thread::scope(|s| {
            s.spawn(move || {
                let _ = pipe.write_all(&stdin);
            });
            child.wait_with_output()
        }),
        None => child.wait_with_output(),
    }
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

/// Bytes a pipe takes without a reader (Linux default capacity).
const PIPE_CAPACITY: usize = 64 * 1024;

/// Spawns `proc`, retrying a few times on `ETXTBSY`: a binary that was just written can be
/// briefly "busy" while another thread's fork still holds its write descriptor.
fn spawn(proc: &mut Process) -> std::io::Result<std::process::Child> {
    let mut attempts = 0;
    loop {
        match proc.spawn() {
            Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) && attempts < 5 => {
                attempts += 1;
                std::thread::yield_now();
            }
            other => return other,
        }
    }
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
    let mut details = format!("stderr: {}", excerpt(stderr));
    let stdout = excerpt(stdout);
    if !stdout.is_empty() {
        details.push_str(&format!("; stdout: {stdout}"));
    }
    Error::new(
        code::IPAM_DELEGATE,
        format!("IPAM plugin {} failed ({status})", binary.display()),
    )
    .with_details(details)
}

/// At most [`EXCERPT_BYTES`] of a plugin's output, trimmed, for error details.
fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(EXCERPT_BYTES)]);
    let text = text.trim();
    if bytes.len() > EXCERPT_BYTES {
        format!("{text}... ({} bytes in all)", bytes.len())
    } else {
        text.to_string()
    }
}

/// How much of a failed plugin's stdout and stderr goes into the error details.
const EXCERPT_BYTES: usize = 4096;

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
        .with_details(format!("{e}: {}", excerpt(&stdout)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::fs;

    /// A directory of fake plugins, removed when dropped.
    struct PluginDir(PathBuf);

    impl PluginDir {
        fn new(test: &str) -> PluginDir {
            let p = std::env::temp_dir().join(format!("twill-exec-{}-{test}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            PluginDir(p)
        }
        fn script(&self, name: &str, body: &str) {
            let path = self.0.join(name);
            fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    impl Drop for PluginDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn args(dir: &PluginDir, container_id: &str) -> CmdArgs {
        CmdArgs {
            command: Command::Add,
            container_id: container_id.into(),
            netns: Some(PathBuf::from("/var/run/netns/x")),
            ifname: if container_id.is_empty() {
                String::new()
            } else {
                "eth0".into()
            },
            args: "IgnoreUnknown=1;K8S_POD_NAME=p".into(),
            path: vec![PathBuf::from("/nonexistent-dir"), dir.0.clone()],
            stdin: Vec::new(),
            cni_version: "1.0.0".into(),
        }
    }

    fn conf(ipam_type: &str) -> NetConf {
        serde_json::from_value(json!({
            "cniVersion": "1.0.0", "name": "n", "type": "bridge", "bridge": "cni0",
            "ipam": {"type": ipam_type, "custom": [1, 2]}
        }))
        .unwrap()
    }

    #[test]
    fn plugin_names_are_file_names() {
        for bad in [
            "",
            ".",
            "..",
            "../host-local",
            "/usr/lib/cni/host-local",
            "a\0b",
        ] {
            let e = find_plugin(bad, &[PathBuf::from("/usr/lib/cni")]).unwrap_err();
            assert_eq!(e.code, code::INVALID_CONFIG, "{bad:?}");
        }
    }

    #[test]
    fn not_found_and_not_executable() {
        let d = PluginDir::new("notfound");
        fs::write(d.0.join("plain"), "#!/bin/sh\n").unwrap();
        let e = find_plugin("plain", std::slice::from_ref(&d.0)).unwrap_err();
        assert_eq!(e.code, code::IPAM_DELEGATE);
        assert!(e.msg.contains(&d.0.display().to_string()), "{e}");
        d.script("ok", "exit 0");
        assert_eq!(
            find_plugin("ok", &args(&d, "c").path).unwrap(),
            d.0.join("ok")
        );
    }

    #[test]
    fn plugin_error_object_keeps_its_code() {
        let d = PluginDir::new("errobj");
        d.script(
            "myipam",
            r#"cat >/dev/null; echo '{"cniVersion":"1.0.0","code":11,"msg":"busy","details":"retry"}'; exit 1"#,
        );
        let e = crate::ipam::del(&args(&d, "c"), &conf("myipam")).unwrap_err();
        assert_eq!(e.code, code::TRY_AGAIN);
        assert!(e.msg.contains("busy") && e.msg.contains("myipam"), "{e}");
        assert_eq!(e.details, "retry");
    }

    #[test]
    fn unparseable_failure_is_103_with_stderr() {
        let d = PluginDir::new("garbage");
        d.script("myipam", "echo 'not json'; echo 'it broke' >&2; exit 3");
        let e = crate::ipam::check(&args(&d, "c"), &conf("myipam")).unwrap_err();
        assert_eq!(e.code, code::IPAM_DELEGATE);
        assert!(
            e.details.contains("it broke") && e.details.contains("not json"),
            "{e}"
        );
    }

    #[test]
    fn env_and_stdin_passed_with_the_delegated_command() {
        let d = PluginDir::new("env");
        let out = d.0.join("seen");
        d.script(
            "myipam",
            &format!(
                "env | grep '^CNI_' | sort > {o}.env; cat > {o}.stdin",
                o = out.display()
            ),
        );
        let c = conf("myipam");
        crate::ipam::del(&args(&d, "ctr1"), &c).unwrap();
        let env = fs::read_to_string(out.with_extension("env")).unwrap();
        let want = format!(
            "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAME=p\nCNI_COMMAND=DEL\nCNI_CONTAINERID=ctr1\n\
             CNI_IFNAME=eth0\nCNI_NETNS=/var/run/netns/x\nCNI_PATH=/nonexistent-dir:{}\n",
            d.0.display()
        );
        assert_eq!(env, want);
        let stdin: Value =
            serde_json::from_slice(&fs::read(out.with_extension("stdin")).unwrap()).unwrap();
        assert_eq!(stdin, serde_json::to_value(&c).unwrap());
        assert_eq!(stdin["ipam"]["custom"], json!([1, 2]));
        assert_eq!(stdin["bridge"], "cni0");

        // GC and STATUS carry no container ID / ifname
        crate::ipam::gc(&args(&d, ""), &c).unwrap();
        let env = fs::read_to_string(out.with_extension("env")).unwrap();
        assert!(env.contains("CNI_COMMAND=GC\n"), "{env}");
        assert!(
            !env.contains("CNI_CONTAINERID") && !env.contains("CNI_IFNAME"),
            "{env}"
        );
        crate::ipam::status(&args(&d, ""), &c).unwrap();
        let env = fs::read_to_string(out.with_extension("env")).unwrap();
        assert!(env.contains("CNI_COMMAND=STATUS\n"), "{env}");
    }

    #[test]
    fn add_result_parsed_in_config_version() {
        let d = PluginDir::new("addok");
        d.script(
            "myipam",
            r#"cat >/dev/null; echo '{"cniVersion":"1.0.0","ips":[{"address":"10.1.0.5/24","gateway":"10.1.0.1"}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{"nameservers":["10.1.0.53"]}}'"#,
        );
        let r = crate::ipam::add(&args(&d, "c"), &conf("myipam")).unwrap();
        assert_eq!(r.ips.len(), 1);
        assert_eq!(r.ips[0].address.to_string(), "10.1.0.5/24");
        assert_eq!(r.ips[0].gateway, Some("10.1.0.1".parse().unwrap()));
        assert_eq!(r.routes[0].dst.to_string(), "0.0.0.0/0");
        assert_eq!(r.dns.nameservers, ["10.1.0.53"]);
    }

    #[test]
    fn large_config_and_chatty_plugin_do_not_deadlock() {
        let d = PluginDir::new("big");
        let seen = d.0.join("stdin-bytes");
        // writes 256 KiB before reading its 100 KiB stdin: both pipes fill up unless fed apart
        d.script(
            "myipam",
            &format!(
                "head -c 262144 /dev/zero; wc -c > {}; exit 1",
                seen.display()
            ),
        );
        let mut c = conf("myipam");
        c.plugin
            .insert("padding".into(), json!("p".repeat(100 * 1024)));
        let e = crate::ipam::del(&args(&d, "c"), &c).unwrap_err();
        assert_eq!(e.code, code::IPAM_DELEGATE);
        assert!(
            e.details.len() < 5000,
            "details not capped: {} bytes",
            e.details.len()
        );
        assert!(
            e.details.ends_with("(262144 bytes in all)"),
            "{}",
            &e.details[e.details.len() - 40..]
        );
        let n: usize = fs::read_to_string(&seen).unwrap().trim().parse().unwrap();
        assert_eq!(n, serde_json::to_vec(&c).unwrap().len());
    }

    #[test]
    fn add_without_json_is_103() {
        let d = PluginDir::new("addjunk");
        d.script("myipam", "cat >/dev/null; echo hello");
        let e = crate::ipam::add(&args(&d, "c"), &conf("myipam")).unwrap_err();
        assert_eq!(e.code, code::IPAM_DELEGATE);
        assert!(e.details.contains("hello"), "{e}");
    }

    #[test]
    fn missing_ipam_type() {
        let d = PluginDir::new("notype");
        let mut c = conf("x");
        c.ipam = Some(json!({"subnet": "10.0.0.0/24"}));
        assert_eq!(
            crate::ipam::add(&args(&d, "c"), &c).unwrap_err().code,
            code::INVALID_CONFIG
        );
        c.ipam = None;
        assert_eq!(
            crate::ipam::del(&args(&d, "c"), &c).unwrap_err().code,
            code::INVALID_CONFIG
        );
    }
}
