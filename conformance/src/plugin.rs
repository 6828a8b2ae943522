//! One CNI plugin call, made exactly as a runtime makes it, and what came back.
//!
//! The child gets a clean environment (only `PATH` plus the `CNI_*` variables set on the
//! [`Invocation`]), the config on stdin, and optionally runs "on" a node: inside that node's
//! network namespace via `nsenter --net=NODE BINARY`.

use crate::process::{DEFAULT_TIMEOUT, run_bounded};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const CHILD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A CNI call being built: binary, `CNI_*` environment, stdin and where it runs.
#[derive(Debug, Clone)]
pub struct Invocation {
    program: PathBuf,
    env: BTreeMap<String, String>,
    stdin: Vec<u8>,
    node: Option<PathBuf>,
    wrapper: Option<PathBuf>,
    timeout: Duration,
}

impl Invocation {
    /// A call of `program` with an empty stdin, `PATH` set, and `CNI_PATH` = the program's
    /// directory (override with [`Invocation::cni_path`] or remove with [`Invocation::unset`]).
    pub fn new(program: impl Into<PathBuf>) -> Invocation {
        let program = program.into();
        let mut env = BTreeMap::new();
        env.insert("PATH".to_string(), CHILD_PATH.to_string());
        env.insert(
            crate::INDEX_DIR_ENV.to_string(),
            crate::private_index_dir().display().to_string(),
        );
        if let Some(dir) = program.parent() {
            env.insert("CNI_PATH".to_string(), dir.display().to_string());
        }
        Invocation {
            program,
            env,
            stdin: Vec::new(),
            node: None,
            wrapper: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Sets `CNI_COMMAND`.
    pub fn command(self, cmd: &str) -> Self {
        self.env("CNI_COMMAND", cmd)
    }

    /// Sets `CNI_CONTAINERID`.
    pub fn container_id(self, id: &str) -> Self {
        self.env("CNI_CONTAINERID", id)
    }

    /// Sets `CNI_NETNS`.
    pub fn netns(self, path: impl AsRef<Path>) -> Self {
        let p = path.as_ref().display().to_string();
        self.env("CNI_NETNS", &p)
    }

    /// Sets `CNI_IFNAME`.
    pub fn ifname(self, name: &str) -> Self {
        self.env("CNI_IFNAME", name)
    }

    /// Sets `CNI_ARGS`.
    pub fn cni_args(self, args: &str) -> Self {
        self.env("CNI_ARGS", args)
    }

    /// Sets `CNI_PATH`.
    pub fn cni_path(self, path: &str) -> Self {
        self.env("CNI_PATH", path)
    }

    /// Sets any environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.insert(key.to_string(), value.to_string());
        self
    }

    /// Removes an environment variable (e.g. to test a missing `CNI_IFNAME`).
    pub fn unset(mut self, key: &str) -> Self {
        self.env.remove(key);
        self
    }

    /// Uses `conf` (serialized compactly) as stdin.
    pub fn stdin_json(mut self, conf: &Value) -> Self {
        self.stdin = conf.to_string().into_bytes();
        self
    }

    /// Uses raw bytes as stdin (for malformed input).
    pub fn stdin_raw(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = bytes.into();
        self
    }

    /// Runs the binary inside the node namespace at `node` (`nsenter --net=NODE BINARY`).
    pub fn on(mut self, node: impl AsRef<Path>) -> Self {
        self.node = Some(node.as_ref().to_path_buf());
        self
    }

    /// Runs the binary through `wrapper` (`WRAPPER BINARY`, e.g. twill-spawn for its peak RSS).
    pub fn under(mut self, wrapper: impl Into<PathBuf>) -> Self {
        self.wrapper = Some(wrapper.into());
        self
    }

    /// Overrides the wall-time bound (default 20 s; exceeding it fails the test).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Runs the call and collects its outcome. Panics only if the binary cannot be started
    /// or exceeds the time bound.
    pub fn run(&self) -> Outcome {
        let mut argv: Vec<&Path> = self.wrapper.iter().map(PathBuf::as_path).collect();
        argv.push(&self.program);
        let mut cmd = match &self.node {
            Some(node) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", node.display())).args(&argv);
                c
            }
            None => {
                let mut c = Command::new(argv[0]);
                c.args(&argv[1..]);
                c
            }
        };
        cmd.env_clear().envs(&self.env);
        let out = run_bounded(&mut cmd, &self.stdin, self.timeout);
        let exit_code = match out.status.code() {
            Some(c) => c,
            None => {
                use std::os::unix::process::ExitStatusExt;
                128 + out.status.signal().unwrap_or(0)
            }
        };
        let stdout_raw = String::from_utf8_lossy(&out.stdout).into_owned();
        let stdout_json = serde_json::from_str(&stdout_raw).ok();
        Outcome {
            exit_code,
            stdout_json,
            stdout_raw,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            call: self.describe(),
        }
    }

    /// A human-readable description: binary, node, CNI_* env and (truncated) stdin.
    pub fn describe(&self) -> String {
        let env: Vec<String> = self
            .env
            .iter()
            .filter(|(k, _)| k.as_str() != "PATH")
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        let stdin = String::from_utf8_lossy(&self.stdin);
        let stdin = if stdin.len() > 600 {
            let head: String = stdin.chars().take(600).collect();
            format!("{head}... ({} bytes)", stdin.len())
        } else {
            stdin.into_owned()
        };
        let on = match &self.node {
            Some(n) => format!(" on {}", n.display()),
            None => String::new(),
        };
        format!(
            "{}{on} [{}] stdin: {stdin}",
            self.program.display(),
            env.join(" ")
        )
    }
}

/// What a plugin call returned.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Exit code (128 + signal number when killed by a signal).
    pub exit_code: i32,
    /// stdout parsed as one JSON value, if it is exactly that (surrounding whitespace allowed).
    pub stdout_json: Option<Value>,
    /// stdout as text.
    pub stdout_raw: String,
    /// stderr as text.
    pub stderr: String,
    /// Description of the call (for failure messages).
    pub call: String,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "call: {}\nexit: {}\nstdout: {}\nstderr: {}",
            self.call,
            self.exit_code,
            self.stdout_raw.trim(),
            self.stderr.trim()
        )
    }
}

impl Outcome {
    /// True when the plugin exited 0.
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }

    /// The `code` of the error object on stdout, if there is one.
    pub fn error_code(&self) -> Option<u64> {
        self.stdout_json.as_ref()?.get("code")?.as_u64()
    }

    /// Asserts exit 0 and returns stdout as JSON (`Value::Null` when stdout is empty, as for
    /// DEL); panics if stdout is neither empty nor exactly one JSON value.
    pub fn assert_ok(&self) -> Value {
        assert!(self.exit_code == 0, "expected success, got failure\n{self}");
        if self.stdout_raw.trim().is_empty() {
            return Value::Null;
        }
        match &self.stdout_json {
            Some(v) => v.clone(),
            None => panic!("success but stdout is not one JSON value\n{self}"),
        }
    }

    /// Asserts exit 0 and an empty stdout (DEL, CHECK, GC, STATUS).
    pub fn assert_ok_empty(&self) {
        assert!(self.exit_code == 0, "expected success, got failure\n{self}");
        assert!(
            self.stdout_raw.trim().is_empty(),
            "expected empty stdout on success\n{self}"
        );
    }

    /// Asserts a CNI error with `code` (see [`Outcome::check_error`]); returns the error object.
    pub fn assert_error(&self, code: u64) -> Value {
        match self.check_error(&[code]) {
            Ok(v) => v,
            Err(e) => panic!("{e}\n{self}"),
        }
    }

    /// Checks that this is a well-formed CNI error whose code is one of `codes`: non-zero
    /// exit, stdout is exactly one JSON object with a non-empty string `cniVersion`, an integer
    /// `code`, a non-empty string `msg`, and `details` (if present) a string.
    pub fn check_error(&self, codes: &[u64]) -> Result<Value, String> {
        let obj = self.check_error_shape()?;
        let code = obj.get("code").and_then(Value::as_u64).unwrap_or(0);
        if !codes.contains(&code) {
            let msg = obj.get("msg").and_then(Value::as_str).unwrap_or("");
            return Err(format!(
                "expected error code {codes:?}, got {code} ({msg:?})"
            ));
        }
        Ok(obj)
    }

    /// Checks the error-object shape only (any code); returns the object.
    pub fn check_error_shape(&self) -> Result<Value, String> {
        if self.exit_code == 0 {
            return Err("expected a CNI error, but the plugin exited 0".to_string());
        }
        let Some(obj) = self.stdout_json.clone() else {
            return Err("error: stdout is not exactly one JSON value".to_string());
        };
        let Some(map) = obj.as_object() else {
            return Err("error: stdout JSON is not an object".to_string());
        };
        match map.get("cniVersion").and_then(Value::as_str) {
            Some(v) if !v.is_empty() => {}
            _ => return Err("error object lacks a non-empty string cniVersion".to_string()),
        }
        if map.get("code").and_then(Value::as_u64).is_none() {
            return Err("error object lacks an integer code".to_string());
        }
        match map.get("msg").and_then(Value::as_str) {
            Some(m) if !m.trim().is_empty() => {}
            _ => return Err("error object lacks a non-empty msg".to_string()),
        }
        if let Some(d) = map.get("details")
            && !d.is_string()
        {
            return Err("error object: details is not a string".to_string());
        }
        Ok(obj)
    }
}
