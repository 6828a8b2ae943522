//! Where the networks' cluster views come from. The source is pluggable: the view is a file
//! (`peersFile`, else `<runDir>/cluster.json`) written by whoever manages the cluster, with
//! flannel's subnet file next to it; in etcd mode the lease feed (`crate::lease::feed`)
//! writes the same files and adds its own descriptor to the daemon's poll.

use serde_json::Value;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;
use twill::flannel::subnet_file;
use twill::node::peers::DEFAULT_RUN_DIR;

/// The node-wide view's file name in a run dir (`/run/twill/cluster.json`).
pub const DEFAULT_VIEW_NAME: &str = "cluster.json";

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
    /// How long the daemon's first pass may wait for this feed's first files (a fresh node's
    /// lease not yet written: a pass now would only report a missing subnet file); None: now.
    fn first_files_within(&self) -> Option<Duration> {
        None
    }
}

/// The views are the files the configs name: `peersFile` (for a config with neither
/// `peersFile` nor `peers`, the node-wide view `<runDir>/cluster.json` that plugins read when it
/// exists) and `subnetFile` (default flannel's `/run/flannel/subnet.env`).
#[derive(Debug, Default)]
pub struct FileFeed;

impl ViewFeed for FileFeed {
    fn watched_files(&self, configs: &[&Value]) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for c in configs {
            if let Some(p) = c.get("peersFile").and_then(Value::as_str) {
                out.push(PathBuf::from(p));
            } else if c.get("peers").is_none_or(Value::is_null) {
                let run_dir = c
                    .get("runDir")
                    .and_then(Value::as_str)
                    .unwrap_or(DEFAULT_RUN_DIR);
                out.push(Path::new(run_dir).join(DEFAULT_VIEW_NAME));
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_config_without_peers_watches_the_node_wide_view_of_its_run_dir() {
        let plain = json!({"type": "vxlan"});
        let run_dir = json!({"type": "vxlan", "runDir": "/var/run/t", "subnetFile": "/s/env"});
        let file = json!({"type": "vxlan", "peersFile": "/v/peers.json"});
        let inline = json!({"type": "vxlan", "peers": []});
        let got = FileFeed.watched_files(&[&plain, &run_dir, &file, &inline]);
        let want: Vec<PathBuf> = [
            "/run/flannel/subnet.env",
            "/run/twill/cluster.json",
            "/s/env",
            "/v/peers.json",
            "/var/run/t/cluster.json",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(got, want);
    }
}
