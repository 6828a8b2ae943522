//! The skeleton every plugin's `main` calls: reads the CNI environment and stdin, validates them,
//! dispatches the command to a [`Plugin`], and prints the result or the error object.
//!
//! Validation order and codes (SPEC "Parameters", "Error"; reference `pkg/skel`):
//!
//! | failure                                                   | code |
//! |-----------------------------------------------------------|------|
//! | `CNI_COMMAND` unset and `about` empty; unknown command     | 4    |
//! | required variable missing (all missing ones are listed)   | 4    |
//! | `CNI_CONTAINERID` / `CNI_IFNAME` invalid                   | 4    |
//! | stdin unreadable                                          | 5    |
//! | stdin larger than [`MAX_STDIN_BYTES`]                     | 7    |
//! | stdin not JSON (empty, syntax, truncated)                 | 6    |
//! | stdin JSON but not a config (not an object, `cniVersion` or `name` not a string) | 7 |
//! | `cniVersion` unsupported                                  | 1    |
//! | CHECK below 0.4.0, GC or STATUS below 1.1.0               | 1    |
//! | `name` missing or invalid ([`validate_network_name`])     | 7    |
//! | `CNI_NETNS` is the plugin's own network namespace (ADD, CHECK) | 4 |
//!
//! Container ID and ifname failures are code 4 because they arrive as environment variables and
//! the reference (`pkg/utils.ValidateContainerID`/`ValidateInterfaceName`) reports them as
//! `ErrInvalidEnvironmentVariables`; the network name comes from the config, so 7, as in
//! `ValidateNetworkName`. The own-netns guard is the reference's `ErrInvalidNetNS` (8), which is
//! not a SPEC code; twill reports it as 4 (the variable `CNI_NETNS` is invalid). DEL is never
//! refused over it: DEL must clean up whatever `CNI_NETNS` says, and a plugin's DEL does not
//! configure the namespace.

use crate::cni::types::{CniResult, is_cni_identifier, validate_network_name};
use crate::cni::version::{self, IMPLICIT, LATEST, SUPPORTED, Version};
use crate::error::{Error, Result};
use serde::Serialize;
use serde_json::Value;
use std::cell::RefCell;
use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::OnceLock;

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

impl Command {
    /// Parses a `CNI_COMMAND` value (exact, upper case as the SPEC spells it); code 4 otherwise.
    pub fn parse(s: &str) -> Result<Command> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            _ => {
                return Err(Error::invalid_env(format!(
                    "unknown CNI_COMMAND \"{}\": expected ADD, DEL, CHECK, GC, STATUS or VERSION",
                    s.escape_debug()
                )));
            }
        })
    }

    /// The `CNI_COMMAND` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Gc => "GC",
            Command::Status => "STATUS",
        }
    }

    /// The first CNI version that has this command (CHECK 0.4.0, GC and STATUS 1.1.0).
    pub fn min_version(self) -> Option<Version> {
        match self {
            Command::Check => Some(Version::new(0, 4, 0)),
            Command::Gc | Command::Status => Some(Version::new(1, 1, 0)),
            _ => None,
        }
    }

    /// True when the command concerns one attachment (needs container ID and ifname).
    fn is_attachment(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }
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
    /// `CNI_ARGS`, raw (parse with [`crate::cni::args::CniArgs`]).
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

/// Largest network config accepted on stdin (1 MiB); larger is code 7 (invalid config: no sane
/// config is that big, and the bound keeps a runaway writer from exhausting memory).
pub const MAX_STDIN_BYTES: usize = 1 << 20;

/// Linux `IFNAMSIZ`: interface names are at most 15 bytes.
pub const IFNAMSIZ: usize = 16;

/// Validates `CNI_CONTAINERID`: non-empty, `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$` (SPEC "Parameters").
/// Code 4, as the reference reports it.
pub fn validate_container_id(id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::invalid_env("CNI_CONTAINERID is empty"));
    }
    if !is_cni_identifier(id) {
        return Err(Error::invalid_env(format!(
            "invalid CNI_CONTAINERID \"{}\": must start with a letter or digit and contain \
             only letters, digits, '_', '.' and '-'",
            id.escape_debug()
        )));
    }
    Ok(())
}

/// Validates `CNI_IFNAME`: non-empty, shorter than `IFNAMSIZ` (16) bytes, not `.` or `..`, no
/// `/`, `:` or whitespace (SPEC "Parameters", kernel `dev_valid_name`). Code 4, as the reference.
pub fn validate_ifname(name: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::invalid_env(format!(
            "invalid CNI_IFNAME \"{}\": {why}",
            name.escape_debug()
        )))
    };
    if name.is_empty() {
        return Err(Error::invalid_env("CNI_IFNAME is empty"));
    }
    if name.len() >= IFNAMSIZ {
        return bad("longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return bad("must not be \".\" or \"..\"");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return bad("must not contain '/', ':' or whitespace");
    }
    Ok(())
}

/// Process start-up for a plugin binary that defines its own C `main` (see [`plugin_main!`]):
/// opens `/dev/null` on whichever of the descriptors 0, 1 and 2 was closed at exec (so no file the
/// plugin opens can become its stdout), and ignores `SIGPIPE` (a runtime that stopped reading
/// gets an exit code, not a killed plugin). Everything else of the Rust runtime's start-up (the
/// stack-overflow handler's alternate stack, reading `/proc/self/maps`) is skipped: a plugin
/// lives for about a millisecond.
pub fn start_process() {
    use nix::libc;
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: `fds` is a valid array of three pollfd for the duration of the call.
    if unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) } >= 0 {
        for pfd in fds {
            if pfd.revents & libc::POLLNVAL != 0 {
                // The lowest free descriptor is the closed one; it stays open for the process.
                // SAFETY: a NUL-terminated path and plain flags.
                unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
            }
        }
    }
    // SAFETY: setting a signal's disposition to "ignore" has no memory-safety requirements.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// Defines a plugin binary's entry point: `twill::plugin_main!(MyPlugin, "about text");` in a
/// crate marked `#![cfg_attr(not(test), no_main)]`. It runs [`start_process`] then [`run`],
/// without the Rust runtime's start-up. Test builds keep the test harness's `main`.
#[macro_export]
macro_rules! plugin_main {
    ($plugin:expr, $about:expr) => {
        /// A plugin call is short-lived: small allocations from a never-freed arena
        /// ([`twill::alloc::Arena`]) instead of musl's map-and-unmap per free.
        #[cfg(not(test))]
        #[global_allocator]
        static TWILL_ALLOC: $crate::alloc::Arena = $crate::alloc::Arena::new();
        /// The process entry point: [`twill::cni::skeleton::start_process`], then the skeleton.
        #[cfg(not(test))]
        #[unsafe(no_mangle)]
        extern "C" fn main(
            _argc: ::std::ffi::c_int,
            _argv: *const *const ::std::ffi::c_char,
        ) -> ::std::ffi::c_int {
            $crate::cni::skeleton::start_process();
            $crate::cni::skeleton::run(&$plugin, $about)
        }
        /// In test builds the entry point is the harness's; this keeps the plugin referenced.
        #[cfg(test)]
        #[allow(dead_code)]
        fn plugin_entry() -> ! {
            $crate::cni::skeleton::run(&$plugin, $about)
        }
    };
}

/// Runs `plugin` as the current process's CNI command and exits with the right code.
/// `about` is printed to stderr when the binary is run without `CNI_COMMAND`.
///
/// Stdout is reserved for the answer: it is kept on a private (close-on-exec) descriptor and
/// file descriptor 1 is pointed at stderr, so stray prints and the output of child tools cannot
/// corrupt the JSON the runtime parses. A panic still yields a CNI error object (code
/// [`crate::code::INTERNAL`]) before the process dies.
pub fn run(plugin: &dyn Plugin, about: &str) -> ! {
    let env = |key: &str| std::env::var_os(key).map(|v| v.to_string_lossy().into_owned());
    let mut stderr = io::stderr();
    let answer = answer_channel();
    install_panic_hook();
    // VERSION may come without stdin; never block on a terminal waiting for one.
    let is_version = env("CNI_COMMAND").as_deref() == Some("VERSION");
    let mut stdin: Box<dyn Read> = if is_version && io::stdin().is_terminal() {
        Box::new(io::empty())
    } else {
        Box::new(io::stdin().lock())
    };
    let code = match answer {
        Some(mut file) => run_with(plugin, about, &env, &mut stdin, &mut file, &mut stderr),
        None => run_with(
            plugin,
            about,
            &env,
            &mut stdin,
            &mut io::stdout(),
            &mut stderr,
        ),
    };
    let _ = io::stdout().flush();
    std::process::exit(code)
}

/// The runtime's stdout, kept for the answer only (see [`run`]).
static ANSWER: OnceLock<File> = OnceLock::new();

thread_local! {
    /// The version the current invocation answers errors in (read by the panic hook).
    static REPLY_VERSION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Moves the runtime's stdout to a close-on-exec descriptor and points fd 1 at stderr. `None`
/// (answer on plain stdout) if stdout cannot be duplicated.
fn answer_channel() -> Option<&'static File> {
    let saved = crate::file::dup_cloexec(io::stdout().as_fd()).ok()?;
    let file = ANSWER.get_or_init(|| File::from(saved));
    // If this fails, stray output keeps going to the real stdout; the answer is unaffected.
    let _ = nix::unistd::dup2_stdout(io::stderr());
    Some(file)
}

/// Prints a CNI error object for a panic (then runs the default hook, which reports on stderr).
fn install_panic_hook() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let version = REPLY_VERSION
            .try_with(|v| v.borrow().clone())
            .ok()
            .flatten()
            .unwrap_or_else(|| LATEST.to_owned());
        let err = Error::new(crate::code::INTERNAL, "the plugin crashed (bug)").with_details(info);
        let reply = ErrorReply::new(&version, &err);
        let _ = match ANSWER.get() {
            Some(mut file) => write_json(&mut file, &reply),
            None => write_json(&mut io::stdout(), &reply),
        };
        default_hook(info);
    }));
}

/// The testable core of [`run`]: reads the environment through `env` and the config from
/// `stdin`, writes the answer to `stdout` (exactly one JSON document, or nothing) and the `about`
/// banner to `stderr`; returns the process exit code (0 success, 1 error).
///
/// Without `CNI_COMMAND`, prints `about` and the supported versions to stderr and returns 0 when
/// `about` is non-empty (reference skel behaviour), else reports code 4.
pub fn run_with(
    plugin: &dyn Plugin,
    about: &str,
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> i32 {
    let env = |key: &str| env(key).filter(|v| !v.is_empty());
    let Some(raw_command) = env("CNI_COMMAND") else {
        if about.is_empty() {
            let err = Error::invalid_env(
                "CNI_COMMAND is not set: this is a CNI plugin, run by a container runtime",
            );
            return report(stdout, stderr, LATEST, &err);
        }
        let _ = writeln!(stderr, "{about}");
        let _ = writeln!(
            stderr,
            "CNI protocol versions supported: {}",
            SUPPORTED.join(", ")
        );
        return 0;
    };
    let command = match Command::parse(&raw_command) {
        Ok(c) => c,
        Err(e) => return report(stdout, stderr, LATEST, &e),
    };
    if command == Command::Version {
        return version_command(stdin, stdout, stderr);
    }
    let input = read_stdin(stdin);
    let reply_version = input
        .as_ref()
        .map_or(LATEST, |i| i.reply_version())
        .to_owned();
    let config = input.as_ref().ok().and_then(|i| i.json.as_ref().ok());
    let (log_settings, log) = crate::cni::log::begin(&env, config, command.as_str());
    let outcome = prepare(command, &env, input).and_then(|args| {
        log_settings?;
        dispatch(plugin, &args)
    });
    if let Some(log) = log {
        log.finish(outcome.as_ref().map(Option::as_ref));
    }
    match outcome {
        Ok(None) => 0,
        Ok(Some(json)) => match write_json(stdout, &json) {
            Ok(()) => 0,
            Err(e) => {
                let _ = writeln!(stderr, "cannot write the CNI result to stdout: {e}");
                1
            }
        },
        Err(e) => report(stdout, stderr, &reply_version, &e),
    }
}

/// Stdin as read: the bytes, and the JSON they hold if they parse.
struct Input {
    bytes: Vec<u8>,
    json: std::result::Result<Value, serde_json::Error>,
}

impl Input {
    /// The version error objects are answered in: the config's, when it names a well-formed
    /// one; 0.1.0 when it names none; else the latest.
    fn reply_version(&self) -> &str {
        let Ok(Value::Object(obj)) = &self.json else {
            return LATEST;
        };
        match obj.get("cniVersion") {
            None | Some(Value::Null) => IMPLICIT,
            Some(Value::String(v)) if v.is_empty() => IMPLICIT,
            Some(Value::String(v)) if Version::parse(v).is_ok() => v,
            Some(_) => LATEST,
        }
    }
}

/// Reads at most [`MAX_STDIN_BYTES`]; code 5 on a read error, 7 when larger.
fn read_stdin(stdin: &mut dyn Read) -> Result<Input> {
    let mut bytes = Vec::with_capacity(4096);
    stdin
        .take(MAX_STDIN_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("reading the network config from stdin", e))?;
    if bytes.len() > MAX_STDIN_BYTES {
        return Err(Error::invalid_config(format!(
            "network config on stdin is larger than {MAX_STDIN_BYTES} bytes"
        )));
    }
    let json = serde_json::from_slice(&bytes);
    Ok(Input { bytes, json })
}

/// Validates the environment and the config for `command` and builds the [`CmdArgs`].
fn prepare(
    command: Command,
    env: &dyn Fn(&str) -> Option<String>,
    input: Result<Input>,
) -> Result<CmdArgs> {
    let attachment = command.is_attachment();
    let container_id = if attachment {
        env("CNI_CONTAINERID")
    } else {
        None
    };
    let netns = if attachment { env("CNI_NETNS") } else { None };
    let ifname = if attachment { env("CNI_IFNAME") } else { None };
    let path = env("CNI_PATH");

    let mut missing = Vec::new();
    if attachment && container_id.is_none() {
        missing.push("CNI_CONTAINERID");
    }
    if matches!(command, Command::Add | Command::Check) && netns.is_none() {
        missing.push("CNI_NETNS");
    }
    if attachment && ifname.is_none() {
        missing.push("CNI_IFNAME");
    }
    let path: Vec<PathBuf> = (path.as_deref().unwrap_or(""))
        .split(':')
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect();
    if path.is_empty() {
        missing.push("CNI_PATH");
    }
    if !missing.is_empty() {
        return Err(Error::invalid_env(format!(
            "required environment variables missing for {}: {}",
            command.as_str(),
            missing.join(", ")
        )));
    }
    let container_id = container_id.unwrap_or_default();
    let ifname = ifname.unwrap_or_default();
    if attachment {
        validate_container_id(&container_id)?;
        validate_ifname(&ifname)?;
    }

    let input = input?;
    let json = input
        .json
        .map_err(|e| crate::cni::types::json_error("network config on stdin", &e))?;
    let obj = json
        .as_object()
        .ok_or_else(|| Error::invalid_config("network config on stdin must be a JSON object"))?;
    let cni_version = match obj.get("cniVersion") {
        None | Some(Value::Null) => IMPLICIT,
        Some(Value::String(v)) if v.is_empty() => IMPLICIT,
        Some(Value::String(v)) => v.as_str(),
        Some(_) => return Err(Error::invalid_config("\"cniVersion\" must be a string")),
    };
    version::check_supported(cni_version)?;
    if let Some(min) = command.min_version()
        && Version::parse(cni_version)? < min
    {
        return Err(Error::incompatible_version(format!(
            "config version {cni_version} does not allow {} (needs {min} or later)",
            command.as_str()
        )));
    }
    match obj.get("name") {
        Some(Value::String(name)) => validate_network_name(name)?,
        None | Some(Value::Null) => validate_network_name("")?,
        Some(_) => return Err(Error::invalid_config("\"name\" must be a string")),
    }
    let cni_version = cni_version.to_owned();

    let netns = netns.map(PathBuf::from);
    if let Some(ns) = netns.as_ref().filter(|_| command != Command::Del) {
        let overridden =
            env("CNI_NETNS_OVERRIDE").is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        if !overridden && is_own_netns(ns) {
            return Err(Error::invalid_env(format!(
                "CNI_NETNS {} is the plugin's own network namespace; refusing to configure it \
                 as a container (set CNI_NETNS_OVERRIDE=1 if this is intended)",
                ns.display()
            )));
        }
    }

    Ok(CmdArgs {
        command,
        container_id,
        netns,
        ifname,
        args: env("CNI_ARGS").unwrap_or_default(),
        path,
        stdin: input.bytes,
        cni_version,
    })
}

/// True when `path` names the network namespace this process runs in. A path that cannot be
/// inspected (gone, no permission) is not ours: DEL must still succeed when the netns is gone.
fn is_own_netns(path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        std::fs::metadata(path),
        std::fs::metadata("/proc/self/ns/net"),
    ) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Calls the plugin; `Some(json)` is the answer to print.
fn dispatch(plugin: &dyn Plugin, args: &CmdArgs) -> Result<Option<Value>> {
    match args.command {
        Command::Add => {
            let result = plugin.add(args)?;
            version::result_to_json(&result, &args.cni_version).map(Some)
        }
        Command::Del => plugin.del(args).map(|()| None),
        Command::Check => plugin.check(args).map(|()| None),
        Command::Gc => plugin.gc(args).map(|()| None),
        Command::Status => plugin.status(args).map(|()| None),
        // Handled before stdin is validated; unreachable by construction.
        Command::Version => Ok(None),
    }
}

/// VERSION: `{"cniVersion", "supportedVersions"}`, answering in the config's version when stdin
/// names a supported one, else the latest. Never fails on stdin content.
fn version_command(stdin: &mut dyn Read, stdout: &mut dyn Write, stderr: &mut dyn Write) -> i32 {
    #[derive(Serialize)]
    struct VersionInfo<'a> {
        #[serde(rename = "cniVersion")]
        cni_version: &'a str,
        #[serde(rename = "supportedVersions")]
        supported_versions: &'a [&'a str],
    }
    let input = read_stdin(stdin).ok();
    let asked = input.as_ref().and_then(|i| match &i.json {
        Ok(Value::Object(obj)) => obj.get("cniVersion").and_then(Value::as_str),
        _ => None,
    });
    let cni_version = asked.filter(|v| SUPPORTED.contains(v)).unwrap_or(LATEST);
    let info = VersionInfo {
        cni_version,
        supported_versions: SUPPORTED,
    };
    match write_json(stdout, &info) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(stderr, "cannot write the version info to stdout: {e}");
            1
        }
    }
}

/// Prints the CNI error object for `err` on stdout; returns the exit code (1).
fn report(stdout: &mut dyn Write, stderr: &mut dyn Write, cni_version: &str, err: &Error) -> i32 {
    if let Err(e) = write_json(stdout, &ErrorReply::new(cni_version, err)) {
        let _ = writeln!(
            stderr,
            "cannot write the CNI error to stdout: {e}; the error was: {err}"
        );
    }
    1
}

/// The CNI error object (SPEC "Error"): `details` omitted when empty.
#[derive(Debug, Serialize)]
pub struct ErrorReply<'a> {
    /// The version of the config (or the latest when unknown).
    #[serde(rename = "cniVersion")]
    pub cni_version: &'a str,
    /// Error code.
    pub code: u32,
    /// Short message.
    pub msg: &'a str,
    /// Details, omitted when empty.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub details: &'a str,
}

impl<'a> ErrorReply<'a> {
    /// The error object for `err`, answered in `cni_version`.
    pub fn new(cni_version: &'a str, err: &'a Error) -> Self {
        ErrorReply {
            cni_version,
            code: err.code,
            msg: &err.msg,
            details: &err.details,
        }
    }
}

/// Writes one pretty-printed JSON document and a newline.
fn write_json(out: &mut dyn Write, value: &impl Serialize) -> io::Result<()> {
    let mut buf = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    buf.push(b'\n');
    out.write_all(&buf)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::types::{Interface, IpConfig, Route};
    use crate::error::code;
    use serde_json::json;
    use std::cell::RefCell;

    /// Records every call; answers with `result` or fails with `fail`.
    struct Fake {
        calls: RefCell<Vec<CmdArgs>>,
        result: CniResult,
        fail: Option<Error>,
    }

    impl Fake {
        fn new() -> Self {
            Fake {
                calls: RefCell::new(Vec::new()),
                result: sample_result(),
                fail: None,
            }
        }
        fn failing(err: Error) -> Self {
            Fake {
                fail: Some(err),
                ..Fake::new()
            }
        }
        fn answer(&self, args: &CmdArgs) -> Result<()> {
            self.calls.borrow_mut().push(args.clone());
            self.fail.clone().map_or(Ok(()), Err)
        }
        fn called(&self) -> usize {
            self.calls.borrow().len()
        }
        fn last(&self) -> CmdArgs {
            self.calls
                .borrow()
                .last()
                .cloned()
                .expect("plugin was called")
        }
    }

    impl Plugin for Fake {
        fn add(&self, args: &CmdArgs) -> Result<CniResult> {
            self.answer(args).map(|()| self.result.clone())
        }
        fn del(&self, args: &CmdArgs) -> Result<()> {
            self.answer(args)
        }
        fn check(&self, args: &CmdArgs) -> Result<()> {
            self.answer(args)
        }
        fn gc(&self, args: &CmdArgs) -> Result<()> {
            self.answer(args)
        }
        fn status(&self, args: &CmdArgs) -> Result<()> {
            self.answer(args)
        }
    }

    fn sample_result() -> CniResult {
        CniResult {
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: Some("0a:58:0a:01:00:05".into()),
                mtu: Some(1450),
                sandbox: Some("/run/netns/pod".into()),
                ..Interface::default()
            }],
            ips: vec![IpConfig {
                address: "10.1.0.5/24".parse().unwrap(),
                gateway: Some("10.1.0.1".parse().unwrap()),
                interface: Some(0),
            }],
            routes: vec![Route {
                priority: Some(5),
                ..Route::new("0.0.0.0/0".parse().unwrap(), None)
            }],
            dns: Default::default(),
        }
    }

    struct Outcome {
        code: i32,
        stdout: String,
        stderr: String,
    }

    impl Outcome {
        /// The one JSON document on stdout.
        fn json(&self) -> Value {
            serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
                panic!("stdout is not one JSON document ({e}): {:?}", self.stdout)
            })
        }
        /// Asserts a CNI error object with `code` and returns it.
        fn error(&self, want: u32) -> Value {
            assert_eq!(self.code, 1, "exit code; stdout {}", self.stdout);
            let v = self.json();
            assert_eq!(v["code"], want, "{v:#}");
            v
        }
    }

    fn conf(version: &str) -> Vec<u8> {
        format!(r#"{{"cniVersion":"{version}","name":"pods","type":"fake","bridge":"cni0"}}"#)
            .into_bytes()
    }

    const ATTACH_ENV: &[(&str, &str)] = &[
        ("CNI_CONTAINERID", "0123abcd-x_y.z"),
        (
            "CNI_NETNS",
            "/var/run/netns/twill-skeleton-test-nonexistent",
        ),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=p"),
        ("CNI_PATH", "/opt/cni/bin::/usr/lib/cni:"),
    ];

    fn exec_with(
        plugin: &Fake,
        about: &str,
        env: &[(&str, &str)],
        stdin: &mut dyn Read,
    ) -> Outcome {
        let lookup = |k: &str| {
            env.iter()
                .rev()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run_with(plugin, about, &lookup, stdin, &mut out, &mut err);
        Outcome {
            code,
            stdout: String::from_utf8(out).unwrap(),
            stderr: String::from_utf8(err).unwrap(),
        }
    }

    /// Runs `command` with the full attachment environment plus `extra` (later entries win).
    fn exec(plugin: &Fake, command: &str, extra: &[(&str, &str)], stdin: &[u8]) -> Outcome {
        let mut env = vec![("CNI_COMMAND", command)];
        env.extend_from_slice(ATTACH_ENV);
        env.extend_from_slice(extra);
        exec_with(plugin, "twill test plugin v0", &env, &mut &stdin[..])
    }

    #[test]
    fn add_fills_cmd_args_and_prints_result() {
        let p = Fake::new();
        let input = conf("1.0.0");
        let out = exec(&p, "ADD", &[], &input);
        assert_eq!(out.code, 0, "{}", out.stdout);
        assert_eq!(out.stderr, "");
        assert_eq!(
            out.json(),
            version::result_to_json(&sample_result(), "1.0.0").unwrap()
        );
        let args = p.last();
        assert_eq!(args.command, Command::Add);
        assert_eq!(args.container_id, "0123abcd-x_y.z");
        assert_eq!(
            args.netns,
            Some(PathBuf::from(
                "/var/run/netns/twill-skeleton-test-nonexistent"
            ))
        );
        assert_eq!(args.ifname, "eth0");
        assert_eq!(args.args, "IgnoreUnknown=1;K8S_POD_NAME=p");
        assert_eq!(
            args.path,
            [PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
        assert_eq!(args.stdin, input);
        assert_eq!(args.cni_version, "1.0.0");
    }

    #[test]
    fn add_result_is_converted_to_the_config_version() {
        for v in SUPPORTED {
            let p = Fake::new();
            let out = exec(&p, "ADD", &[], &conf(v));
            assert_eq!(out.code, 0, "{v}: {}", out.stdout);
            let json = out.json();
            assert_eq!(json["cniVersion"], *v);
            assert_eq!(
                json,
                version::result_to_json(&sample_result(), v).unwrap(),
                "{v}"
            );
            match *v {
                "0.1.0" | "0.2.0" => assert_eq!(json["ip4"]["ip"], "10.1.0.5/24"),
                "1.1.0" => {
                    assert_eq!(json["interfaces"][0]["mtu"], 1450);
                    assert_eq!(json["routes"][0]["priority"], 5);
                }
                _ => {
                    assert!(json["interfaces"][0].get("mtu").is_none(), "{v}");
                    assert!(json["routes"][0].get("priority").is_none(), "{v}");
                }
            }
            assert_eq!(
                json["ips"][0].get("version").is_some(),
                v.starts_with("0.3") || *v == "0.4.0"
            );
        }
    }

    #[test]
    fn add_result_not_expressible_is_an_error_object() {
        let p = Fake {
            result: CniResult {
                interfaces: sample_result().interfaces,
                ..CniResult::default()
            },
            ..Fake::new()
        };
        let out = exec(&p, "ADD", &[], &conf("0.2.0"));
        let v = out.error(code::INCOMPATIBLE_VERSION);
        assert_eq!(v["cniVersion"], "0.2.0");
    }

    #[test]
    fn missing_cni_version_means_0_1_0() {
        let p = Fake::new();
        let out = exec(&p, "ADD", &[], br#"{"name":"pods","type":"fake"}"#);
        assert_eq!(out.code, 0, "{}", out.stdout);
        assert_eq!(out.json()["cniVersion"], "0.1.0");
        assert!(out.json().get("ip4").is_some());
        assert_eq!(p.last().cni_version, "0.1.0");
        let out = exec(&p, "CHECK", &[], br#"{"name":"pods","cniVersion":""}"#);
        assert_eq!(out.error(code::INCOMPATIBLE_VERSION)["cniVersion"], "0.1.0");
    }

    /// (command, variables it requires)
    const REQUIRED: &[(&str, &[&str])] = &[
        (
            "ADD",
            &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"],
        ),
        (
            "CHECK",
            &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"],
        ),
        ("DEL", &["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"]),
        ("GC", &["CNI_PATH"]),
        ("STATUS", &["CNI_PATH"]),
    ];
    const ALL_VARS: &[&str] = &[
        "CNI_CONTAINERID",
        "CNI_NETNS",
        "CNI_IFNAME",
        "CNI_ARGS",
        "CNI_PATH",
    ];

    #[test]
    fn each_command_requires_its_variables() {
        for (command, required) in REQUIRED {
            for var in ALL_VARS {
                for absent in ["unset", "empty"] {
                    let p = Fake::new();
                    let mut env: Vec<(&str, &str)> = vec![("CNI_COMMAND", command)];
                    env.extend(ATTACH_ENV.iter().filter(|(n, _)| n != var));
                    if absent == "empty" {
                        env.push((var, ""));
                    }
                    let out = exec_with(&p, "", &env, &mut &conf("1.1.0")[..]);
                    if required.contains(var) {
                        let v = out.error(code::INVALID_ENV);
                        let msg = v["msg"].as_str().unwrap();
                        assert!(msg.contains(var), "{command} without {var}: {msg}");
                        assert_eq!(p.called(), 0, "{command} without {var}");
                    } else {
                        assert_eq!(
                            out.code, 0,
                            "{command} without {var} ({absent}): {}",
                            out.stdout
                        );
                        assert_eq!(p.called(), 1);
                    }
                }
            }
        }
    }

    #[test]
    fn all_missing_variables_are_named() {
        let p = Fake::new();
        let out = exec_with(&p, "", &[("CNI_COMMAND", "ADD")], &mut &conf("1.0.0")[..]);
        let v = out.error(code::INVALID_ENV);
        assert_eq!(
            v["msg"],
            "required environment variables missing for ADD: CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_PATH"
        );
        // CNI_PATH made only of separators is missing too.
        let out = exec(&p, "DEL", &[("CNI_PATH", ":::")], &conf("1.0.0"));
        assert!(
            out.error(code::INVALID_ENV)["msg"]
                .as_str()
                .unwrap()
                .contains("CNI_PATH")
        );
    }

    #[test]
    fn gc_and_status_get_no_attachment_fields() {
        for command in ["GC", "STATUS"] {
            let p = Fake::new();
            let out = exec(&p, command, &[], &conf("1.1.0"));
            assert_eq!(out.code, 0, "{}", out.stdout);
            assert_eq!(out.stdout, "", "{command} prints nothing on success");
            let args = p.last();
            assert_eq!(args.container_id, "");
            assert_eq!(args.ifname, "");
            assert_eq!(args.netns, None);
            assert_eq!(args.path.len(), 2);
            // Invalid attachment variables are not looked at for these commands.
            let out = exec(
                &p,
                command,
                &[("CNI_CONTAINERID", "../x"), ("CNI_IFNAME", "a/b")],
                &conf("1.1.0"),
            );
            assert_eq!(out.code, 0, "{}", out.stdout);
        }
    }

    #[test]
    fn del_without_netns_is_none() {
        let p = Fake::new();
        let out = exec(&p, "DEL", &[("CNI_NETNS", "")], &conf("0.4.0"));
        assert_eq!(out.code, 0, "{}", out.stdout);
        assert_eq!(out.stdout, "");
        assert_eq!(p.last().netns, None);
        assert_eq!(p.last().command, Command::Del);
    }

    #[test]
    fn container_id_validation() {
        let good = ["a", "0", "abc123", "a-b_c.d", "A1", &"f".repeat(64), "x..y"];
        let bad = [
            "-a", "_a", ".a", "..", "a/b", "../etc", "a b", "a\tb", "a:b", "a\u{e9}", "a;b", "a$b",
        ];
        for (id, ok) in good
            .iter()
            .map(|g| (*g, true))
            .chain(bad.iter().map(|b| (*b, false)))
        {
            assert_eq!(validate_container_id(id).is_ok(), ok, "{id:?}");
            for command in ["ADD", "DEL", "CHECK"] {
                let p = Fake::new();
                let out = exec(&p, command, &[("CNI_CONTAINERID", id)], &conf("1.0.0"));
                if ok {
                    assert_eq!(out.code, 0, "{command} {id:?}: {}", out.stdout);
                } else {
                    let v = out.error(code::INVALID_ENV);
                    assert!(
                        v["msg"].as_str().unwrap().contains("CNI_CONTAINERID"),
                        "{v}"
                    );
                    assert_eq!(p.called(), 0);
                }
            }
        }
    }

    #[test]
    fn ifname_validation() {
        let good = [
            "eth0",
            "a",
            "net1",
            "veth.5",
            "e-x_1@2",
            "123456789012345",
            "caf\u{e9}",
        ];
        let bad = [
            "",
            ".",
            "..",
            "1234567890123456",
            "a/b",
            "eth0:1",
            "a b",
            "a\tb",
            "a\nb",
            "\u{a0}x",
        ];
        for name in good {
            assert!(validate_ifname(name).is_ok(), "{name:?}");
        }
        for name in bad {
            let err = validate_ifname(name).unwrap_err();
            assert_eq!(err.code, code::INVALID_ENV, "{name:?}");
        }
        // Byte length counts, not characters: 8 two-byte characters are 16 bytes.
        assert!(validate_ifname(&"\u{e9}".repeat(8)).is_err());
        assert!(validate_ifname(&"\u{e9}".repeat(7)).is_ok());
        for command in ["ADD", "DEL", "CHECK"] {
            for (name, ok) in [
                ("eth0", true),
                ("..", false),
                ("a/b", false),
                ("x:1", false),
                ("1234567890123456", false),
            ] {
                let p = Fake::new();
                let out = exec(&p, command, &[("CNI_IFNAME", name)], &conf("0.4.0"));
                if ok {
                    assert_eq!(out.code, 0, "{}", out.stdout);
                } else {
                    assert!(
                        out.error(code::INVALID_ENV)["msg"]
                            .as_str()
                            .unwrap()
                            .contains("CNI_IFNAME")
                    );
                    assert_eq!(p.called(), 0);
                }
            }
        }
    }

    #[test]
    fn unsupported_versions_are_code_1() {
        for v in ["0.5.0", "1.2.0", "2.0.0", "1.0", "banana"] {
            let p = Fake::new();
            let out = exec(&p, "ADD", &[], &conf(v));
            let err = out.error(code::INCOMPATIBLE_VERSION);
            assert!(err["msg"].as_str().unwrap().contains("1.1.0"), "{err}");
            assert_eq!(p.called(), 0);
            // Echoes a well-formed version, else answers in the latest.
            let want = if Version::parse(v).is_ok() { v } else { LATEST };
            assert_eq!(err["cniVersion"], want);
        }
    }

    #[test]
    fn command_version_floors() {
        let cases = [
            ("CHECK", "0.3.1", false),
            ("CHECK", "0.3.0", false),
            ("CHECK", "0.2.0", false),
            ("CHECK", "0.4.0", true),
            ("CHECK", "1.0.0", true),
            ("GC", "1.0.0", false),
            ("GC", "0.4.0", false),
            ("GC", "1.1.0", true),
            ("STATUS", "1.0.0", false),
            ("STATUS", "1.1.0", true),
            ("ADD", "0.1.0", true),
            ("DEL", "0.1.0", true),
        ];
        for (command, v, ok) in cases {
            let p = Fake::new();
            let out = exec(&p, command, &[], &conf(v));
            if ok {
                assert_eq!(out.code, 0, "{command} {v}: {}", out.stdout);
                assert_eq!(p.called(), 1);
            } else {
                let err = out.error(code::INCOMPATIBLE_VERSION);
                assert_eq!(
                    err["msg"].as_str().unwrap(),
                    format!(
                        "config version {v} does not allow {command} (needs {} or later)",
                        if command == "CHECK" { "0.4.0" } else { "1.1.0" }
                    )
                );
                assert_eq!(err["cniVersion"], v);
                assert_eq!(p.called(), 0);
            }
        }
    }

    #[test]
    fn version_command() {
        let p = Fake::new();
        let env = [("CNI_COMMAND", "VERSION")];
        for (stdin, want) in [
            (&b""[..], LATEST),
            (br#"{"cniVersion":"0.4.0"}"#, "0.4.0"),
            (br#"{"cniVersion":"0.3.1","name":"x"}"#, "0.3.1"),
            (br#"{"cniVersion":"9.9.9"}"#, LATEST),
            (br#"{"cniVersion":4}"#, LATEST),
            (b"garbage", LATEST),
        ] {
            let out = exec_with(&p, "", &env, &mut &stdin[..]);
            assert_eq!(out.code, 0);
            assert_eq!(
                out.json(),
                json!({"cniVersion": want, "supportedVersions": SUPPORTED})
            );
        }
        assert_eq!(p.called(), 0);
    }

    #[test]
    fn error_object_shape() {
        let p = Fake::failing(Error::new(code::TRY_AGAIN, "lock busy").with_details("EAGAIN"));
        let out = exec(&p, "DEL", &[], &conf("0.4.0"));
        let v = out.error(code::TRY_AGAIN);
        assert_eq!(
            v,
            json!({"cniVersion": "0.4.0", "code": 11, "msg": "lock busy", "details": "EAGAIN"})
        );
        // Keys in the SPEC's order; details omitted when empty.
        let p = Fake::failing(Error::new(code::NOT_AVAILABLE, "daemon down"));
        let out = exec(&p, "STATUS", &[], &conf("1.1.0"));
        assert_eq!(
            out.error(code::NOT_AVAILABLE),
            json!({"cniVersion": "1.1.0", "code": 50, "msg": "daemon down"})
        );
        let (c, m) = (
            out.stdout.find("\"code\"").unwrap(),
            out.stdout.find("\"msg\"").unwrap(),
        );
        assert!(
            out.stdout.find("\"cniVersion\"").unwrap() < c && c < m,
            "{}",
            out.stdout
        );
        assert!(out.stdout.ends_with("}\n"));
        for command in ["ADD", "CHECK", "GC"] {
            let p = Fake::failing(Error::new(code::CHECK_FAILED, "nope"));
            let out = exec(&p, command, &[], &conf("1.1.0"));
            out.error(code::CHECK_FAILED);
            assert_eq!(p.called(), 1);
        }
    }

    #[test]
    fn stdin_size_bound() {
        let p = Fake::new();
        let mut input = conf("1.0.0");
        input.resize(MAX_STDIN_BYTES, b' ');
        assert_eq!(
            exec(&p, "ADD", &[], &input).code,
            0,
            "exactly the bound is accepted"
        );
        input.push(b' ');
        let out = exec(&p, "ADD", &[], &input);
        let err = out.error(code::INVALID_CONFIG);
        assert!(
            err["msg"].as_str().unwrap().contains("larger than"),
            "{err}"
        );
        assert_eq!(p.called(), 1);
        // An endless stdin is cut at the bound, not read forever.
        let mut endless = io::repeat(b' ');
        let mut env = vec![("CNI_COMMAND", "ADD")];
        env.extend_from_slice(ATTACH_ENV);
        exec_with(&p, "", &env, &mut endless).error(code::INVALID_CONFIG);
    }

    #[test]
    fn stdin_read_error_is_code_5() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("EIO"))
            }
        }
        let p = Fake::new();
        let mut env = vec![("CNI_COMMAND", "ADD")];
        env.extend_from_slice(ATTACH_ENV);
        let v = exec_with(&p, "", &env, &mut Broken).error(code::IO);
        assert_eq!(v["details"], "EIO");
    }

    #[test]
    fn config_decode_and_name_errors() {
        let cases: &[(&[u8], u32)] = &[
            (b"", code::DECODE),
            (b"{", code::DECODE),
            (b"{\"name\": }", code::DECODE),
            (b"{} {}", code::DECODE),
            (b"[]", code::INVALID_CONFIG),
            (b"\"pods\"", code::INVALID_CONFIG),
            (br#"{"cniVersion":1,"name":"pods"}"#, code::INVALID_CONFIG),
            (br#"{"cniVersion":"1.0.0"}"#, code::INVALID_CONFIG),
            (br#"{"cniVersion":"1.0.0","name":""}"#, code::INVALID_CONFIG),
            (br#"{"cniVersion":"1.0.0","name":5}"#, code::INVALID_CONFIG),
            (
                br#"{"cniVersion":"1.0.0","name":"../../etc"}"#,
                code::INVALID_CONFIG,
            ),
            (
                br#"{"cniVersion":"1.0.0","name":"a/b"}"#,
                code::INVALID_CONFIG,
            ),
            (
                br#"{"cniVersion":"1.0.0","name":".."}"#,
                code::INVALID_CONFIG,
            ),
        ];
        for command in ["ADD", "DEL", "CHECK", "GC", "STATUS"] {
            for (input, want) in cases {
                let p = Fake::new();
                let version = if command == "CHECK" { "0.4.0" } else { "1.1.0" };
                let input = String::from_utf8_lossy(input).replace("1.0.0", version);
                let out = exec(&p, command, &[], input.as_bytes());
                out.error(*want);
                assert_eq!(p.called(), 0, "{command} {input}");
            }
        }
    }

    #[test]
    fn env_errors_come_before_config_errors() {
        let p = Fake::new();
        let out = exec(&p, "ADD", &[("CNI_IFNAME", "")], b"not json");
        assert!(
            out.error(code::INVALID_ENV)["msg"]
                .as_str()
                .unwrap()
                .contains("CNI_IFNAME")
        );
        // The error is answered in the config's version when it is known.
        let out = exec(&p, "ADD", &[("CNI_IFNAME", "")], &conf("0.3.1"));
        assert_eq!(out.error(code::INVALID_ENV)["cniVersion"], "0.3.1");
    }

    #[test]
    fn no_command_prints_about() {
        let p = Fake::new();
        let out = exec_with(
            &p,
            "twill bridge v1.2.3",
            &[("CNI_IFNAME", "eth0")],
            &mut &b""[..],
        );
        assert_eq!(out.code, 0);
        assert_eq!(out.stdout, "");
        assert_eq!(
            out.stderr,
            "twill bridge v1.2.3\nCNI protocol versions supported: 0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0\n"
        );
        // Without an about string it is an error object.
        let out = exec_with(&p, "", &[("CNI_COMMAND", "")], &mut &b""[..]);
        assert!(
            out.error(code::INVALID_ENV)["msg"]
                .as_str()
                .unwrap()
                .contains("CNI_COMMAND")
        );
        assert_eq!(p.called(), 0);
    }

    #[test]
    fn unknown_command_is_code_4() {
        for command in ["add", "GET", "DELETE", "VERSION ", "x"] {
            let p = Fake::new();
            let out = exec(&p, command, &[], &conf("1.0.0"));
            let v = out.error(code::INVALID_ENV);
            assert!(
                v["msg"].as_str().unwrap().contains("unknown CNI_COMMAND"),
                "{v}"
            );
            assert_eq!(p.called(), 0);
        }
    }

    #[test]
    fn own_netns_is_refused_unless_overridden() {
        // DEL is never refused over it.
        let p = Fake::new();
        let out = exec(
            &p,
            "DEL",
            &[("CNI_NETNS", "/proc/self/ns/net")],
            &conf("1.0.0"),
        );
        assert_eq!(out.code, 0, "{}", out.stdout);
        assert_eq!(p.called(), 1);
        for command in ["ADD", "CHECK"] {
            let p = Fake::new();
            let out = exec(
                &p,
                command,
                &[("CNI_NETNS", "/proc/self/ns/net")],
                &conf("1.0.0"),
            );
            assert!(
                out.error(code::INVALID_ENV)["msg"]
                    .as_str()
                    .unwrap()
                    .contains("own network namespace")
            );
            assert_eq!(p.called(), 0);
            for yes in ["1", "true", "TRUE"] {
                let out = exec(
                    &p,
                    command,
                    &[
                        ("CNI_NETNS", "/proc/self/ns/net"),
                        ("CNI_NETNS_OVERRIDE", yes),
                    ],
                    &conf("1.0.0"),
                );
                assert_eq!(out.code, 0, "{}", out.stdout);
            }
            let out = exec(
                &p,
                command,
                &[
                    ("CNI_NETNS", "/proc/self/ns/net"),
                    ("CNI_NETNS_OVERRIDE", "0"),
                ],
                &conf("1.0.0"),
            );
            out.error(code::INVALID_ENV);
        }
        // The same namespace through another path is still ours.
        let p = Fake::new();
        let pid = std::process::id().to_string();
        let path = format!("/proc/{pid}/ns/net");
        exec(&p, "ADD", &[("CNI_NETNS", &path)], &conf("1.0.0")).error(code::INVALID_ENV);
        // Another namespace file (a different inode) is not ours.
        assert_eq!(
            exec(
                &p,
                "ADD",
                &[("CNI_NETNS", "/proc/self/ns/uts")],
                &conf("1.0.0")
            )
            .code,
            0
        );
    }

    /// The environment variable that turns [`run_child`] into a plugin process.
    const CHILD_MODE: &str = "TWILL_SKELETON_CHILD_MODE";

    /// A plugin that misbehaves the way real code can: prints to stdout, runs a child tool that
    /// writes to its inherited stdout, or panics.
    struct Rowdy(String);

    impl Plugin for Rowdy {
        fn add(&self, _args: &CmdArgs) -> Result<CniResult> {
            match self.0.as_str() {
                "noisy" => {
                    println!("stray println");
                    let status = std::process::Command::new("sh")
                        .args(["-c", "echo stray child output"])
                        .status()
                        .map_err(|e| Error::io("spawn sh", e))?;
                    assert!(status.success());
                    Ok(sample_result())
                }
                "panic" => panic!("deliberate test panic"),
                "fail" => Err(Error::invalid_config("bad bridge").with_details("no such device")),
                _ => Ok(sample_result()),
            }
        }
        fn del(&self, _args: &CmdArgs) -> Result<()> {
            Ok(())
        }
        fn check(&self, _args: &CmdArgs) -> Result<()> {
            Ok(())
        }
    }

    /// Not a test by itself: the body of the plugin process [`run_end_to_end`] starts (this
    /// test binary re-executed with [`CHILD_MODE`] set). Without it, returns at once.
    #[test]
    fn run_child() {
        if let Ok(mode) = std::env::var(CHILD_MODE) {
            run(&Rowdy(mode), "twill skeleton test child");
        }
    }

    /// Runs the real [`run`] in a child process; returns (exit status, the stdout the child wrote
    /// after the test harness's banner, stderr).
    fn spawn_child(
        mode: &str,
        command: &str,
        stdin: &[u8],
    ) -> (std::process::ExitStatus, String, String) {
        use std::process::{Command as Proc, Stdio};
        let exe = std::env::current_exe().unwrap();
        let mut child = Proc::new(exe)
            .args([
                "cni::skeleton::tests::run_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ])
            .env(CHILD_MODE, mode)
            .env("CNI_COMMAND", command)
            .envs(ATTACH_ENV.iter().copied())
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        // The harness prints "running 1 test" before the test body runs; the rest is ours.
        let banner = "running 1 test\n";
        let at = stdout
            .find(banner)
            .unwrap_or_else(|| panic!("no harness banner in {stdout:?}"));
        let ours = stdout[at + banner.len()..].to_owned();
        (
            out.status,
            ours,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    #[test]
    fn run_end_to_end() {
        // Success: exactly the result on stdout, exit 0.
        let (status, stdout, _) = spawn_child("ok", "ADD", &conf("0.4.0"));
        assert_eq!(status.code(), Some(0), "{stdout}");
        let json: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(
            json,
            version::result_to_json(&sample_result(), "0.4.0").unwrap()
        );

        // Stray output from the plugin and from a child tool goes to stderr, not stdout.
        let (status, stdout, stderr) = spawn_child("noisy", "ADD", &conf("1.0.0"));
        assert_eq!(status.code(), Some(0), "{stdout} {stderr}");
        let json: Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout:?}"));
        assert_eq!(json["cniVersion"], "1.0.0");
        assert!(stderr.contains("stray println"), "{stderr}");
        assert!(stderr.contains("stray child output"), "{stderr}");

        // A plugin error: one error object, exit 1.
        let (status, stdout, _) = spawn_child("fail", "ADD", &conf("0.3.1"));
        assert_eq!(status.code(), Some(1));
        let json: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(
            json,
            json!({"cniVersion": "0.3.1", "code": 7, "msg": "bad bridge", "details": "no such device"})
        );

        // A panic: an error object with the internal code, non-zero exit.
        let (status, stdout, stderr) = spawn_child("panic", "ADD", &conf("1.1.0"));
        assert!(!status.success());
        let json: Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout:?}"));
        assert_eq!(json["code"], code::INTERNAL);
        assert_eq!(json["cniVersion"], "1.1.0");
        assert!(
            json["details"]
                .as_str()
                .unwrap()
                .contains("deliberate test panic"),
            "{json}"
        );
        assert!(stderr.contains("deliberate test panic"), "{stderr}");

        // VERSION and DEL print what they should through the real process too.
        let (status, stdout, _) = spawn_child("ok", "VERSION", b"");
        assert_eq!(status.code(), Some(0));
        let json: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(
            json,
            json!({"cniVersion": LATEST, "supportedVersions": SUPPORTED})
        );
        let (status, stdout, _) = spawn_child("ok", "DEL", &conf("1.0.0"));
        assert_eq!((status.code(), stdout.as_str()), (Some(0), ""));
    }
}
