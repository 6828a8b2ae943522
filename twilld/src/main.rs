//! twilld: the twill node daemon. It keeps every twill network's cross-node state (the data
//! plane's peer objects, the masquerade table, the forward rules) true to the network configs
//! of a CNI conf dir and their cluster views, with the same library code and locks as the
//! plugins' ADD.
//!
//! `twilld sync` reconciles once; `twilld check` reports the drift and changes nothing;
//! `twilld run` is the daemon (see `daemon`).

mod confdir;
mod daemon;
mod etcd;
mod events;
mod feed;
mod log;
mod network;
mod round;
mod store;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use round::{Options, Round};

const USAGE: &str = "usage: twilld sync|check|run [--cni-conf-dir DIR] [--run-dir DIR] \
                     [--debounce-ms MS]
  sync   reconcile every twill network of the conf dir once; exit 1 if anything failed
  check  report the drift between the configs and the kernel, change nothing; exit 1 on drift,
         2 when it could not tell
  run    the daemon: reconcile now and on every change of the configs, views or kernel state
  --cni-conf-dir  the CNI conf dir (default /etc/cni/net.d)
  --run-dir       where twilld records the networks it keeps (default /run/twill)
  --debounce-ms   how long changes are gathered before a reconcile (default 100)";

/// Why the command line is not run: help asked for (exit 0) or a usage error (exit 2).
#[derive(Debug, PartialEq, Eq)]
enum NotRun {
    Help,
    Usage(String),
}

fn parse(args: &[String]) -> Result<(String, Options), NotRun> {
    let mut it = args.iter();
    let cmd = it.next().ok_or(NotRun::Usage(USAGE.into()))?.clone();
    if matches!(cmd.as_str(), "-h" | "--help" | "help") {
        return Err(NotRun::Help);
    }
    if !matches!(cmd.as_str(), "sync" | "check" | "run") {
        return Err(NotRun::Usage(format!("unknown command {cmd:?}\n{USAGE}")));
    }
    let mut opts = Options {
        conf_dir: PathBuf::from("/etc/cni/net.d"),
        run_dir: PathBuf::from(twill::node::peers::DEFAULT_RUN_DIR),
        debounce: Duration::from_millis(100),
    };
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or(NotRun::Usage(format!("{flag} needs a value\n{USAGE}")))
        };
        match flag.as_str() {
            "--cni-conf-dir" => opts.conf_dir = PathBuf::from(value()?),
            "--run-dir" => opts.run_dir = PathBuf::from(value()?),
            "--debounce-ms" => {
                let v = value()?;
                let ms: u64 = v.parse().ok().filter(|ms| *ms <= 10_000).ok_or_else(|| {
                    NotRun::Usage(format!(
                        "--debounce-ms: {v:?} is not a number of ms (0-10000)"
                    ))
                })?;
                opts.debounce = Duration::from_millis(ms);
            }
            "-h" | "--help" => return Err(NotRun::Help),
            other => return Err(NotRun::Usage(format!("unknown option {other:?}\n{USAGE}"))),
        }
    }
    Ok((cmd, opts))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, opts) = match parse(&args) {
        Ok(p) => p,
        Err(NotRun::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(NotRun::Usage(e)) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match cmd.as_str() {
        "run" => match daemon::run(&opts) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("twilld: {e}");
                ExitCode::FAILURE
            }
        },
        "sync" => {
            let mut log = log::Log::every_line();
            match Round::load(&opts, &mut log) {
                Ok(round) => round.sync(&mut log),
                Err(e) => log.error(&format!("cannot reconcile: {e}")),
            }
            if log.errors == 0 {
                ExitCode::SUCCESS
            } else {
                eprintln!("twilld: sync failed: {} error(s), see above", log.errors);
                ExitCode::FAILURE
            }
        }
        _ => {
            let mut log = log::Log::every_line();
            let differ = match Round::load(&opts, &mut log) {
                Ok(round) => round.check(&mut log),
                Err(e) => {
                    log.error(&format!("cannot check: {e}"));
                    0
                }
            };
            if differ > 0 {
                ExitCode::FAILURE
            } else if log.errors > 0 {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn options_are_parsed_and_bad_ones_name_the_problem() {
        let (cmd, o) = parse(&args(&[
            "run",
            "--cni-conf-dir",
            "/c",
            "--debounce-ms",
            "5",
        ]))
        .unwrap();
        assert_eq!(cmd, "run");
        assert_eq!(o.conf_dir, PathBuf::from("/c"));
        assert_eq!(o.run_dir, PathBuf::from("/run/twill"));
        assert_eq!(o.debounce, Duration::from_millis(5));
        assert_eq!(parse(&args(&["--help"])).unwrap_err(), NotRun::Help);
        for (bad, says) in [
            (&["stop"][..], "unknown command \"stop\""),
            (&["sync", "--run-dir"][..], "--run-dir needs a value"),
            (&["sync", "--debounce-ms", "x"][..], "\"x\" is not a number"),
            (&["check", "--verbose"][..], "unknown option \"--verbose\""),
        ] {
            match parse(&args(bad)) {
                Err(NotRun::Usage(m)) => assert!(m.contains(says), "{bad:?}: {m}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
