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
mod lease;
mod log;
mod network;
mod round;
mod store;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use feed::{FileFeed, ViewFeed};
use round::{Options, Round};

const USAGE: &str = "usage: twilld sync|check|run [--cni-conf-dir DIR] [--run-dir DIR] \
                     [--debounce-ms MS]
       twilld run --etcd-endpoints URL[,URL...] [etcd mode options]
  sync   reconcile every twill network of the conf dir once; exit 1 if anything failed
  check  report the drift between the configs and the kernel, change nothing; exit 1 on drift,
         2 when it could not tell
  run    the daemon: reconcile now and on every change of the configs, views or kernel state
  --cni-conf-dir  the CNI conf dir (default /etc/cni/net.d)
  --run-dir       where twilld records the networks it keeps (default /run/twill)
  --debounce-ms   how long changes are gathered before a reconcile (default 100)
etcd mode (run): lease this node's pod subnet in etcd as flanneld does, write flannel's subnet
file and twill's cluster view from everyone's leases, keep them current
  --etcd-endpoints    etcd client URLs, comma-separated
  --etcd-prefix       flannel's key prefix (default /coreos.com/network)
  --public-ip         the IPv4 address published (default: first global address of --iface, else
                      of the interface holding the default route)
  --iface             the interface to take the address and MTU from
  --subnet-file       flannel's subnet file written (default /run/flannel/subnet.env)
  --view-file         twill's cluster view written (default /run/twill/cluster.json)
  --etcd-cafile, --etcd-certfile, --etcd-keyfile   TLS to etcd (client certificate)
  --subnet-lease-ttl  the lease's TTL in seconds (default 86400), renewed every third of it
  --ip-masq           write FLANNEL_IPMASQ=true";

/// The etcd client's request timeout.
const ETCD_TIMEOUT: Duration = Duration::from_secs(5);

/// What the etcd client is opened with (the fields of `crate::etcd::ClientConfig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTarget {
    /// Client URLs.
    pub endpoints: Vec<String>,
    /// CA bundle.
    pub ca_file: Option<PathBuf>,
    /// Client certificate.
    pub cert_file: Option<PathBuf>,
    /// Client key.
    pub key_file: Option<PathBuf>,
    /// Request timeout.
    pub timeout: Duration,
}

/// A factory of etcd clients for `t` (each call a fresh client: the lease thread opens a new
/// one after the store failed).
fn etcd_factory(t: &EtcdTarget) -> Result<lease::feed::StoreFactory, String> {
    let cfg = etcd::ClientConfig {
        endpoints: t.endpoints.clone(),
        ca_file: t.ca_file.clone(),
        cert_file: t.cert_file.clone(),
        key_file: t.key_file.clone(),
        timeout: t.timeout,
    };
    etcd::Client::new(&cfg).map_err(|e| e.to_string())?;
    Ok(Box::new(move || {
        etcd::Client::new(&cfg).map(|c| Box::new(c) as Box<dyn store::Store>)
    }))
}

/// Why the command line is not run: help asked for (exit 0) or a usage error (exit 2).
#[derive(Debug, PartialEq, Eq)]
enum NotRun {
    Help,
    Usage(String),
}

/// The command, its options, and the etcd mode flags when `--etcd-endpoints` is given.
type Parsed = (String, Options, Option<lease::Flags>);

fn parse(args: &[String]) -> Result<Parsed, NotRun> {
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
    let mut etcd = lease::Flags::new(Vec::new());
    let mut etcd_flags: Vec<String> = Vec::new();
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
            f if f.starts_with("--etcd-")
                || matches!(
                    f,
                    "--public-ip"
                        | "--iface"
                        | "--subnet-file"
                        | "--view-file"
                        | "--subnet-lease-ttl"
                        | "--ip-masq"
                ) =>
            {
                etcd_flags.push(f.to_string());
                etcd_flag(&mut etcd, f, &mut value)?;
            }
            other => return Err(NotRun::Usage(format!("unknown option {other:?}\n{USAGE}"))),
        }
    }
    if etcd_flags.is_empty() {
        return Ok((cmd, opts, None));
    }
    if cmd != "run" {
        return Err(NotRun::Usage(format!(
            "{} is for etcd mode, which only `twilld run` has\n{USAGE}",
            etcd_flags[0]
        )));
    }
    if etcd.endpoints.is_empty() {
        return Err(NotRun::Usage(format!(
            "{} needs --etcd-endpoints (etcd mode)\n{USAGE}",
            etcd_flags[0]
        )));
    }
    if etcd.cert_file.is_some() != etcd.key_file.is_some() {
        return Err(NotRun::Usage(
            "--etcd-certfile and --etcd-keyfile go together (a client certificate and its key)"
                .into(),
        ));
    }
    Ok((cmd, opts, Some(etcd)))
}

/// Sets one etcd mode flag (`value` takes the flag's argument).
fn etcd_flag<'a>(
    etcd: &mut lease::Flags,
    flag: &str,
    value: &mut dyn FnMut() -> Result<&'a String, NotRun>,
) -> Result<(), NotRun> {
    let bad = |v: &str, what: &str| NotRun::Usage(format!("{flag}: {v:?} is not {what}"));
    match flag {
        "--etcd-endpoints" => {
            let v = value()?;
            etcd.endpoints = v
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(String::from)
                .collect();
            if etcd.endpoints.is_empty()
                || !etcd
                    .endpoints
                    .iter()
                    .all(|e| e.starts_with("http://") || e.starts_with("https://"))
            {
                return Err(bad(v, "a comma-separated list of http:// or https:// URLs"));
            }
        }
        "--etcd-prefix" => {
            let v = value()?;
            let p = v.trim_end_matches('/');
            if !p.starts_with('/') {
                return Err(bad(v, "a key prefix starting with /"));
            }
            etcd.prefix = p.to_string();
        }
        "--etcd-cafile" => etcd.ca_file = Some(PathBuf::from(value()?)),
        "--etcd-certfile" => etcd.cert_file = Some(PathBuf::from(value()?)),
        "--etcd-keyfile" => etcd.key_file = Some(PathBuf::from(value()?)),
        "--public-ip" => {
            let v = value()?;
            etcd.public_ip = Some(v.parse().map_err(|_| bad(v, "an IP address"))?);
        }
        "--iface" => etcd.iface = Some(value()?.clone()),
        "--subnet-file" => etcd.subnet_file = PathBuf::from(value()?),
        "--view-file" => etcd.view_file = PathBuf::from(value()?),
        "--subnet-lease-ttl" => {
            let v = value()?;
            let secs: u64 = v
                .parse()
                .ok()
                .filter(|s| (1..=10 * 365 * 86400).contains(s))
                .ok_or_else(|| bad(v, "a number of seconds (1 to 10 years)"))?;
            etcd.ttl = Duration::from_secs(secs);
        }
        "--ip-masq" => etcd.ip_masq = true,
        other => return Err(NotRun::Usage(format!("unknown option {other:?}\n{USAGE}"))),
    }
    Ok(())
}

/// The view feed of `twilld run`: the files, or in etcd mode the lease thread.
fn open_feed(etcd: Option<&lease::Flags>) -> Result<Box<dyn ViewFeed>, String> {
    let Some(f) = etcd else {
        return Ok(Box::new(FileFeed));
    };
    let factory = etcd_factory(&EtcdTarget {
        endpoints: f.endpoints.clone(),
        ca_file: f.ca_file.clone(),
        cert_file: f.cert_file.clone(),
        key_file: f.key_file.clone(),
        timeout: ETCD_TIMEOUT,
    })?;
    let mut nl = twill::kernel::netlink::Netlink::new()
        .map_err(|e| format!("cannot open a netlink socket: {e}"))?;
    let public = lease::public_ip::find(&mut nl, f.public_ip, f.iface.as_deref())?;
    lease::say(&format!(
        "etcd mode: leasing from {} under {}, public IP {} on {} (MTU {}), writing {} and {}",
        f.endpoints.join(","),
        f.prefix,
        public.v4,
        public.iface,
        public.mtu,
        f.subnet_file.display(),
        f.view_file.display()
    ));
    let settings = lease::feed::Settings {
        prefix: f.prefix.clone(),
        me: lease::claim::Me {
            ip: public.v4,
            ipv6: public.v6,
        },
        iface_mtu: public.mtu,
        subnet_file: f.subnet_file.clone(),
        view_file: f.view_file.clone(),
        ttl: f.ttl,
        ip_masq: f.ip_masq,
    };
    let feed = lease::feed::LeaseFeed::start(settings, factory)
        .map_err(|e| format!("cannot start the lease thread: {e}"))?;
    Ok(Box::new(feed))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, opts, etcd) = match parse(&args) {
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
        "run" => match daemon::run(&opts, || open_feed(etcd.as_ref())) {
            Ok(()) => {
                if etcd.is_some() {
                    eprintln!("twilld: {} requests sent to etcd", etcd::requests_sent());
                }
                ExitCode::SUCCESS
            }
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
        let (cmd, o, etcd) = parse(&args(&[
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
        assert_eq!(etcd, None);
        assert_eq!(parse(&args(&["--help"])).unwrap_err(), NotRun::Help);
        for (bad, says) in [
            (&["stop"][..], "unknown command \"stop\""),
            (&["sync", "--run-dir"][..], "--run-dir needs a value"),
            (&["sync", "--debounce-ms", "x"][..], "\"x\" is not a number"),
            (&["check", "--verbose"][..], "unknown option \"--verbose\""),
            (
                &["sync", "--etcd-endpoints", "http://a:2379"][..],
                "only `twilld run`",
            ),
            (
                &["run", "--public-ip", "10.0.0.1"][..],
                "--public-ip needs --etcd-endpoints",
            ),
            (
                &["run", "--etcd-endpoints", "a:2379"][..],
                "http:// or https:// URLs",
            ),
            (
                &["run", "--etcd-endpoints", ""][..],
                "http:// or https:// URLs",
            ),
            (
                &["run", "--etcd-endpoints", "http://a", "--public-ip", "x"][..],
                "\"x\" is not an IP address",
            ),
            (
                &[
                    "run",
                    "--etcd-endpoints",
                    "http://a",
                    "--subnet-lease-ttl",
                    "0",
                ][..],
                "not a number of seconds",
            ),
            (
                &[
                    "run",
                    "--etcd-endpoints",
                    "http://a",
                    "--etcd-prefix",
                    "net",
                ][..],
                "starting with /",
            ),
            (
                &[
                    "run",
                    "--etcd-endpoints",
                    "https://a",
                    "--etcd-certfile",
                    "/c",
                ][..],
                "go together",
            ),
        ] {
            match parse(&args(bad)) {
                Err(NotRun::Usage(m)) => assert!(m.contains(says), "{bad:?}: {m}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn etcd_mode_flags_have_flannels_defaults_and_are_read() {
        let (_, _, etcd) =
            parse(&args(&["run", "--etcd-endpoints", "http://10.0.0.5:2379"])).unwrap();
        let f = etcd.unwrap();
        assert_eq!(f.endpoints, vec!["http://10.0.0.5:2379".to_string()]);
        assert_eq!(f.prefix, "/coreos.com/network");
        assert_eq!(f.subnet_file, PathBuf::from("/run/flannel/subnet.env"));
        assert_eq!(f.view_file, PathBuf::from("/run/twill/cluster.json"));
        assert_eq!(f.ttl, Duration::from_secs(86400));
        assert!(!f.ip_masq);
        let (_, _, etcd) = parse(&args(&[
            "run",
            "--etcd-endpoints",
            "https://a:2379, https://b:2379",
            "--etcd-prefix",
            "/x/net/",
            "--public-ip",
            "10.0.0.9",
            "--iface",
            "eth1",
            "--subnet-file",
            "/s.env",
            "--view-file",
            "/v.json",
            "--etcd-cafile",
            "/ca",
            "--etcd-certfile",
            "/c",
            "--etcd-keyfile",
            "/k",
            "--subnet-lease-ttl",
            "6",
            "--ip-masq",
        ]))
        .unwrap();
        let f = etcd.unwrap();
        assert_eq!(f.endpoints.len(), 2);
        assert_eq!(f.prefix, "/x/net");
        assert_eq!(f.public_ip, Some("10.0.0.9".parse().unwrap()));
        assert_eq!(f.iface.as_deref(), Some("eth1"));
        assert_eq!((f.ttl, f.ip_masq), (Duration::from_secs(6), true));
        assert_eq!(f.key_file, Some(PathBuf::from("/k")));
    }
}
