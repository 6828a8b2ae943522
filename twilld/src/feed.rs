//! Where the networks' cluster views come from. The source is pluggable: today the view is a
//! file (`peersFile`) written by whoever manages the cluster, with flannel's subnet file next
//! to it; a source of subnet leases in etcd (flannel-compatible) will write the same files and
//! add its own descriptor to the daemon's poll.

use serde_json::Value;
use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use twill::flannel::subnet_file;

/// A source of cluster views.
pub trait ViewFeed {
    /// The files whose change means a network's inputs changed, for the twill plugin entries
    /// `configs` (watched through their directories, since writers replace them by rename).
    fn watched_files(&self, configs: &[&Value]) -> Vec<PathBuf>;
    /// A descriptor the daemon polls besides the files (a watch stream of a remote store);
    /// readable means: reconcile. None for a source that is only files.
    fn fd(&self) -> Option<BorrowedFd<'_>>;
    /// Consumes what made [`ViewFeed::fd`] readable; true when the views may have changed.
    fn drain(&mut self) -> bool;
}

/// The views are the files the configs name: `peersFile` and `subnetFile` (default
/// flannel's `/run/flannel/subnet.env`).
#[derive(Debug, Default)]
pub struct FileFeed;

impl ViewFeed for FileFeed {
    fn watched_files(&self, configs: &[&Value]) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for c in configs {
            if let Some(p) = c.get("peersFile").and_then(Value::as_str) {
                out.push(PathBuf::from(p));
            }
            let subnet = c
                .get("subnetFile")
                .and_then(Value::as_str)
                .unwrap_or(subnet_file::DEFAULT_PATH);
            out.push(PathBuf::from(subnet));
        }
        out.sort();
        out.dedup();
        out
    }

    fn fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    fn drain(&mut self) -> bool {
        false
    }
}
