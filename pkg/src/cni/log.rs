//! The operation log a cluster operator reads: one JSON line per CNI operation, appended to a
//! file named by the config, never written to stdout (which carries only the CNI answer).
//!
//! Settings, read by the skeleton from the raw network config (any plugin, any version):
//!
//! | key | values | default |
//! |-----|--------|---------|
//! | `logFile` | an absolute path, or `stderr` | none: no log |
//! | `logLevel` | `off`, `error` (failed operations only), `info` (every operation), `debug` (every operation with the full answer) | `info` |
//!
//! The environment overrides the config: [`ENV_FILE`] (`TWILL_LOG_FILE`) and [`ENV_LEVEL`]
//! (`TWILL_LOG_LEVEL`), e.g. to turn logging on for one node without touching the conflist.
//!
//! A line looks like this (one line in the file; `ips` on a successful ADD, `code` and `msg` on
//! a failure, `answer` at `debug`):
//!
//! ```text
//! {"time":"2026-12-01T10:33:41.123456Z","level":"info","plugin":"bridge-host-gw",
//!  "network":"pods","containerID":"4f2c...","ifname":"eth0","command":"ADD","result":"ok",
//!  "ips":["10.244.1.5/24"],"durationUs":1043,"pid":4711}
//! ```
//!
//! Cost when off: a look-up in the environment block and in the already parsed config; no
//! system call, no clock read, no allocation. When on: one clock read at the start, one at the
//! end, and one `open(O_APPEND)` + one `write` of the whole line (atomic with respect to other
//! plugins appending to the same file). A log that cannot be written never fails the operation:
//! the reason goes to stderr.

use crate::error::{Error, Result};
use serde_json::{Map, Value, json};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Environment variable overriding `logFile`.
pub const ENV_FILE: &str = "TWILL_LOG_FILE";
/// Environment variable overriding `logLevel`.
pub const ENV_LEVEL: &str = "TWILL_LOG_LEVEL";

/// How much is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Nothing.
    Off,
    /// Failed operations only.
    Error,
    /// Every operation.
    Info,
    /// Every operation, with the full answer (result or error object).
    Debug,
}

impl Level {
    /// Parses a level name (`off`, `error`, `info`, `debug`; case-insensitive).
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s.to_ascii_lowercase().as_str() {
            "off" | "none" => Level::Off,
            "error" => Level::Error,
            "info" => Level::Info,
            "debug" => Level::Debug,
            _ => return None,
        })
    }

    /// The level's name as it appears in a line.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Off => "off",
            Level::Error => "error",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// Appended to this file (created with mode 0640 if missing).
    File(PathBuf),
    /// The plugin's stderr (which runtimes capture).
    Stderr,
}

/// The resolved log settings of one invocation; absent when logging is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logger {
    /// Where lines go.
    pub sink: Sink,
    /// How much is logged (never [`Level::Off`]).
    pub level: Level,
}

impl Logger {
    /// Resolves the settings from the environment (`env`, which wins) and the raw config
    /// (`config`, if it parsed). `Ok(None)` when logging is off. An invalid value is an error:
    /// code 4 when it came from the environment, 7 when from the config.
    pub fn resolve(
        env: &dyn Fn(&str) -> Option<String>,
        config: Option<&Value>,
    ) -> Result<Option<Logger>> {
        let env_file = env(ENV_FILE);
        let env_level = env(ENV_LEVEL);
        let obj = config.and_then(Value::as_object);
        let conf_file = obj.and_then(|o| o.get("logFile"));
        let conf_level = obj.and_then(|o| o.get("logLevel"));
        if env_file.is_none() && conf_file.is_none_or(Value::is_null) {
            // The fast path: logging is off unless a file is named somewhere.
            return Ok(None);
        }
        let level = match (env_level, conf_level) {
            (Some(v), _) => Level::parse(&v).ok_or_else(|| {
                Error::invalid_env(format!(
                    "{ENV_LEVEL}=\"{}\" is not a log level: use off, error, info or debug",
                    v.escape_debug()
                ))
            })?,
            (None, None | Some(Value::Null)) => Level::Info,
            (None, Some(Value::String(v))) => Level::parse(v).ok_or_else(|| {
                Error::invalid_config(format!(
                    "\"logLevel\": \"{}\" is not a log level: use off, error, info or debug",
                    v.escape_debug()
                ))
            })?,
            (None, Some(_)) => {
                return Err(Error::invalid_config(
                    "\"logLevel\" must be a string: off, error, info or debug",
                ));
            }
        };
        let sink = match (env_file, conf_file) {
            (Some(f), _) => sink(&f).ok_or_else(|| {
                Error::invalid_env(format!(
                    "{ENV_FILE}=\"{}\" must be an absolute path or \"stderr\"",
                    f.escape_debug()
                ))
            })?,
            (None, Some(Value::String(f))) => sink(f).ok_or_else(|| {
                Error::invalid_config(format!(
                    "\"logFile\": \"{}\" must be an absolute path or \"stderr\"",
                    f.escape_debug()
                ))
            })?,
            (None, _) => {
                return Err(Error::invalid_config(
                    "\"logFile\" must be a string: an absolute path or \"stderr\"",
                ));
            }
        };
        Ok((level != Level::Off).then_some(Logger { sink, level }))
    }

    /// Starts timing an operation.
    pub fn start(self) -> Operation {
        Operation {
            logger: self,
            started: Instant::now(),
        }
    }
}

/// The skeleton's hook: resolves the settings for one invocation of `command` and starts timing
/// it. Returns whether the settings are valid (an invalid one fails the operation, after the
/// environment checks) and, when logging is on, the pending line to finish with the outcome.
pub fn begin(
    env: &dyn Fn(&str) -> Option<String>,
    config: Option<&Value>,
    command: &'static str,
) -> (Result<()>, Option<Pending>) {
    let logger = match Logger::resolve(env, config) {
        Ok(Some(l)) => l,
        Ok(None) => return (Ok(()), None),
        Err(e) => return (Err(e), None),
    };
    let text = |key: &str| {
        config
            .and_then(|c| c.get(key))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let pending = Pending {
        command,
        plugin: text("type"),
        network: text("name"),
        container_id: env("CNI_CONTAINERID").unwrap_or_default(),
        ifname: env("CNI_IFNAME").unwrap_or_default(),
        operation: logger.start(),
    };
    (Ok(()), Some(pending))
}

/// An operation being logged, with who it is for (see [`begin`]).
#[derive(Debug)]
pub struct Pending {
    command: &'static str,
    plugin: String,
    network: String,
    container_id: String,
    ifname: String,
    operation: Operation,
}

impl Pending {
    /// Writes the operation's line for `outcome` (the answer printed, if any, or the error).
    pub fn finish(self, outcome: std::result::Result<Option<&Value>, &Error>) {
        let subject = Subject {
            command: self.command,
            plugin: &self.plugin,
            network: &self.network,
            container_id: &self.container_id,
            ifname: &self.ifname,
        };
        self.operation.finish(&subject, outcome);
    }
}

fn sink(s: &str) -> Option<Sink> {
    if s == "stderr" {
        Some(Sink::Stderr)
    } else if s.starts_with('/') {
        Some(Sink::File(PathBuf::from(s)))
    } else {
        None
    }
}

/// An operation being timed; [`Operation::finish`] writes its line.
#[derive(Debug)]
pub struct Operation {
    logger: Logger,
    started: Instant,
}

/// Who an operation was for, as the runtime named it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Subject<'a> {
    /// `CNI_COMMAND`.
    pub command: &'a str,
    /// The config's `type`.
    pub plugin: &'a str,
    /// The config's `name`.
    pub network: &'a str,
    /// `CNI_CONTAINERID`.
    pub container_id: &'a str,
    /// `CNI_IFNAME`.
    pub ifname: &'a str,
}

impl Operation {
    /// Writes the line for an operation that ended with `outcome` (the answer printed, if any,
    /// or the error); nothing when the level excludes it. Failures to write go to stderr.
    pub fn finish(
        self,
        subject: &Subject<'_>,
        outcome: std::result::Result<Option<&Value>, &Error>,
    ) {
        let line = self.line(subject, outcome, SystemTime::now());
        let Some(line) = line else { return };
        let written = match &self.logger.sink {
            Sink::Stderr => std::io::stderr().lock().write_all(line.as_bytes()),
            Sink::File(path) => append(path, line.as_bytes()),
        };
        if let Err(e) = written {
            let path = match &self.logger.sink {
                Sink::File(p) => p.display().to_string(),
                Sink::Stderr => "stderr".to_owned(),
            };
            let _ = writeln!(
                std::io::stderr(),
                "twill: cannot write the log to {path}: {e}"
            );
        }
    }

    /// The line (with its newline) for `outcome` at time `now`; `None` when the level excludes it.
    fn line(
        &self,
        subject: &Subject<'_>,
        outcome: std::result::Result<Option<&Value>, &Error>,
        now: SystemTime,
    ) -> Option<String> {
        let level = if outcome.is_ok() {
            Level::Info
        } else {
            Level::Error
        };
        if self.logger.level < level {
            return None;
        }
        let micros = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mut rec = Map::new();
        rec.insert("time".into(), Value::String(rfc3339(now)));
        rec.insert("level".into(), Value::String(level.as_str().into()));
        rec.insert("plugin".into(), Value::String(subject.plugin.into()));
        rec.insert("network".into(), Value::String(subject.network.into()));
        rec.insert(
            "containerID".into(),
            Value::String(subject.container_id.into()),
        );
        rec.insert("ifname".into(), Value::String(subject.ifname.into()));
        rec.insert("command".into(), Value::String(subject.command.into()));
        match outcome {
            Ok(answer) => {
                rec.insert("result".into(), Value::String("ok".into()));
                let ips: Vec<Value> = answer
                    .and_then(|a| a.get("ips"))
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|ip| ip.get("address").cloned())
                    .collect();
                if !ips.is_empty() {
                    rec.insert("ips".into(), Value::Array(ips));
                }
                if let (Level::Debug, Some(a)) = (self.logger.level, answer) {
                    rec.insert("answer".into(), a.clone());
                }
            }
            Err(err) => {
                rec.insert("result".into(), Value::String("error".into()));
                rec.insert("code".into(), json!(err.code));
                rec.insert("msg".into(), Value::String(err.to_string()));
            }
        }
        rec.insert("durationUs".into(), json!(micros));
        rec.insert("pid".into(), json!(std::process::id()));
        let mut line = Value::Object(rec).to_string();
        line.push('\n');
        Some(line)
    }
}

/// Appends `bytes` to `path` in one write (`O_APPEND`, created 0640 if missing).
fn append(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(nix::libc::O_CLOEXEC)
        .open(path)?;
    f.write_all(bytes)
}

/// `t` as RFC 3339 UTC with microseconds (`2026-12-01T10:33:41.123456Z`).
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::code;
    use std::time::Duration;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn logging_is_off_without_a_file() {
        let none = env_of(&[]);
        assert_eq!(Logger::resolve(&none, None), Ok(None));
        let conf = json!({"name": "pods", "logLevel": "debug"});
        assert_eq!(Logger::resolve(&none, Some(&conf)), Ok(None));
        let conf = json!({"name": "pods", "logFile": "/var/log/twill.log", "logLevel": "off"});
        assert_eq!(Logger::resolve(&none, Some(&conf)), Ok(None));
    }

    #[test]
    fn config_keys_give_file_and_level_and_info_is_the_default() {
        let none = env_of(&[]);
        let conf = json!({"logFile": "/var/log/twill.log"});
        assert_eq!(
            Logger::resolve(&none, Some(&conf)),
            Ok(Some(Logger {
                sink: Sink::File("/var/log/twill.log".into()),
                level: Level::Info
            }))
        );
        let conf = json!({"logFile": "stderr", "logLevel": "ERROR"});
        assert_eq!(
            Logger::resolve(&none, Some(&conf)),
            Ok(Some(Logger {
                sink: Sink::Stderr,
                level: Level::Error
            }))
        );
    }

    #[test]
    fn environment_overrides_the_config() {
        let env = env_of(&[(ENV_FILE, "/tmp/x.log"), (ENV_LEVEL, "debug")]);
        let conf = json!({"logFile": "/var/log/twill.log", "logLevel": "error"});
        assert_eq!(
            Logger::resolve(&env, Some(&conf)),
            Ok(Some(Logger {
                sink: Sink::File("/tmp/x.log".into()),
                level: Level::Debug
            }))
        );
        // The environment alone turns logging on, also without a parsable config.
        let env = env_of(&[(ENV_FILE, "stderr")]);
        assert_eq!(
            Logger::resolve(&env, None),
            Ok(Some(Logger {
                sink: Sink::Stderr,
                level: Level::Info
            }))
        );
        // And off.
        let env = env_of(&[(ENV_LEVEL, "off")]);
        assert_eq!(Logger::resolve(&env, Some(&conf)), Ok(None));
    }

    #[test]
    fn bad_values_name_the_key_with_the_right_code() {
        let none = env_of(&[]);
        for (conf, key) in [
            (json!({"logFile": "twill.log"}), "logFile"),
            (json!({"logFile": 5}), "logFile"),
            (json!({"logFile": "/l", "logLevel": "loud"}), "logLevel"),
            (json!({"logFile": "/l", "logLevel": 3}), "logLevel"),
        ] {
            let err = Logger::resolve(&none, Some(&conf)).unwrap_err();
            assert_eq!(err.code, code::INVALID_CONFIG, "{conf}");
            assert!(err.msg.contains(key), "{}", err.msg);
        }
        let env = env_of(&[(ENV_FILE, "relative.log")]);
        let err = Logger::resolve(&env, None).unwrap_err();
        assert_eq!(err.code, code::INVALID_ENV);
        assert!(err.msg.contains(ENV_FILE), "{}", err.msg);
        let env = env_of(&[(ENV_FILE, "/l"), (ENV_LEVEL, "verbose")]);
        let err = Logger::resolve(&env, None).unwrap_err();
        assert_eq!(err.code, code::INVALID_ENV);
        assert!(err.msg.contains(ENV_LEVEL), "{}", err.msg);
    }

    fn subject() -> Subject<'static> {
        Subject {
            command: "ADD",
            plugin: "bridge-host-gw",
            network: "pods",
            container_id: "c1",
            ifname: "eth0",
        }
    }

    fn op(level: Level) -> Operation {
        Logger {
            sink: Sink::Stderr,
            level,
        }
        .start()
    }

    #[test]
    fn a_success_line_names_the_attachment_result_and_duration() {
        let answer = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.5/24"}]});
        let now = UNIX_EPOCH + Duration::from_micros(1_764_585_221_123_456);
        let line = op(Level::Info)
            .line(&subject(), Ok(Some(&answer)), now)
            .unwrap();
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["time"], "2025-12-01T10:33:41.123456Z");
        assert_eq!(v["level"], "info");
        assert_eq!(v["plugin"], "bridge-host-gw");
        assert_eq!(v["network"], "pods");
        assert_eq!(v["containerID"], "c1");
        assert_eq!(v["ifname"], "eth0");
        assert_eq!(v["command"], "ADD");
        assert_eq!(v["result"], "ok");
        assert_eq!(v["ips"], json!(["10.1.0.5/24"]));
        assert!(v["durationUs"].is_u64());
        assert!(v.get("answer").is_none());
        // debug adds the whole answer.
        let line = op(Level::Debug)
            .line(&subject(), Ok(Some(&answer)), now)
            .unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["answer"], answer);
    }

    #[test]
    fn a_failure_line_carries_code_and_message_and_error_level_skips_successes() {
        let err = Error::new(code::IPAM_EXHAUSTED, "no free address in 10.1.0.0/24");
        let line = op(Level::Error)
            .line(&subject(), Err(&err), SystemTime::now())
            .unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "error");
        assert_eq!(v["result"], "error");
        assert_eq!(v["code"], code::IPAM_EXHAUSTED);
        assert_eq!(v["msg"], "no free address in 10.1.0.0/24");
        assert!(
            op(Level::Error)
                .line(&subject(), Ok(None), SystemTime::now())
                .is_none()
        );
    }

    #[test]
    fn rfc3339_dates() {
        let at = |s: u64| rfc3339(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00.000000Z");
        assert_eq!(at(4_102_444_799), "2099-12-31T23:59:59.000000Z");
    }

    #[test]
    fn lines_are_appended_to_the_file() {
        let dir = std::env::temp_dir().join(format!("twill-log-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ops.log");
        let logger = Logger {
            sink: Sink::File(path.clone()),
            level: Level::Info,
        };
        logger.clone().start().finish(&subject(), Ok(None));
        let err = Error::invalid_config("bad");
        logger.start().finish(&subject(), Err(&err));
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["result"], "ok");
        assert_eq!(lines[1]["code"], code::INVALID_CONFIG);
    }
}
