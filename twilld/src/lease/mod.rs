//! etcd mode of `twilld run`: this node's pod subnet leased in a shared store in flannel's exact
//! data model, flannel's `subnet.env` and twill's cluster view written from everyone's leases,
//! and the daemon woken at once when they change.
//!
//! One file per concept: `config` (flannel's network config), `subnet` (keys and subnet
//! arithmetic), `record` (the lease's JSON value), `claim` (choosing and claiming a subnet),
//! `files` (subnet.env and the view), `public_ip` (this node's address and MTU), `feed` (the
//! lease thread and the daemon's [`crate::feed::ViewFeed`]).

pub mod claim;
pub mod config;
pub mod feed;
pub mod files;
#[cfg(test)]
pub mod memstore;
pub mod public_ip;
pub mod record;
pub mod subnet;

use std::path::PathBuf;
use std::time::Duration;

/// flannel's default etcd prefix.
pub const DEFAULT_PREFIX: &str = "/coreos.com/network";
/// flannel's default subnet lease TTL (24 h).
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

/// What the command line says about etcd mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flags {
    /// etcd client URLs (`--etcd-endpoints`, comma-separated).
    pub endpoints: Vec<String>,
    /// The key prefix of flannel's data (`--etcd-prefix`), without a trailing `/`.
    pub prefix: String,
    /// This node's address published in the lease (`--public-ip`).
    pub public_ip: Option<std::net::IpAddr>,
    /// The interface whose address and MTU are used (`--iface`).
    pub iface: Option<String>,
    /// flannel's subnet file written (`--subnet-file`).
    pub subnet_file: PathBuf,
    /// twill's cluster view written (`--view-file`).
    pub view_file: PathBuf,
    /// CA bundle checking etcd's certificate (`--etcd-cafile`).
    pub ca_file: Option<PathBuf>,
    /// Client certificate (`--etcd-certfile`).
    pub cert_file: Option<PathBuf>,
    /// Client key (`--etcd-keyfile`).
    pub key_file: Option<PathBuf>,
    /// The lease TTL (`--subnet-lease-ttl`, whole seconds).
    pub ttl: Duration,
    /// `FLANNEL_IPMASQ` written (`--ip-masq`).
    pub ip_masq: bool,
}

impl Flags {
    /// The flags with every default and the given endpoints.
    pub fn new(endpoints: Vec<String>) -> Flags {
        Flags {
            endpoints,
            prefix: DEFAULT_PREFIX.into(),
            public_ip: None,
            iface: None,
            subnet_file: PathBuf::from(twill::flannel::subnet_file::DEFAULT_PATH),
            view_file: PathBuf::from(twill::node::peers::DEFAULT_RUN_DIR).join("cluster.json"),
            ca_file: None,
            cert_file: None,
            key_file: None,
            ttl: DEFAULT_TTL,
            ip_masq: false,
        }
    }
}

/// Says one lease event or problem on stderr, as the daemon's log does.
pub fn say(line: &str) {
    eprintln!("twilld: {line}");
}
