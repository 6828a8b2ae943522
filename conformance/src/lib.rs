//! Black-box conformance harness for the twill CNI plugins.
//!
//! The suite runs the *built* binaries exactly as a container runtime does (environment +
//! stdin, reading stdout and the exit code) and inspects the result through kernel state
//! (`ip -j -n NS ...`) and files. It never links against the `twill` crate.
//!
//! Everything a test creates (network namespaces, temporary directories, fabrics) is owned
//! by a guard that removes it on drop, also when the test panics. Nothing is ever created in
//! the root network namespace: veth pairs are created inside a namespace with their peer
//! moved straight into another one.
//!
//! Modules:
//! - [`bins`]: where the twill and the reference plugin binaries are.
//! - [`netns`]: the [`Netns`] guard and the [`TempDir`] guard.
//! - [`plugin`]: [`Invocation`] (a CNI call) and its [`Outcome`].
//! - [`kernel`]: typed readers of links, addresses, routes, neighbours, FDB and sysctls.
//! - [`snapshot`]: byte-exact snapshots of a directory tree.
//! - [`hostgw`]: the bridge-host-gw test cluster and readers of node state, shared by suites.
//! - [`fabric`]: multi-node test fabrics (one L2 segment, IPv4 or dual-stack, with optional
//!   extra hosts on it; or two segments joined by a router).
//! - [`process`]: running helper commands with a bounded wall time.
//! - [`routed`]: the routed-veth test cluster and readers of its node state.
//! - [`twilld`]: the node daemon under test (conf dirs, a daemon guard, bounded waits).
//! - [`vxlan`]: the vxlan plugin's cluster, a dual-stack routed fabric, overlay readers.
//! - [`etcd`]: real etcd clusters on a fabric (plain and TLS) and flannel's lease data model.

#![deny(missing_docs)]

pub mod bins;
pub mod containerd;
pub mod etcd;
pub mod fabric;
pub mod hostgw;
pub mod kernel;
pub mod netns;
pub mod plugin;
pub mod podman;
pub mod process;
pub mod routed;
pub mod runtimes;
pub mod snapshot;
pub mod strace;
pub mod twilld;
pub mod vxlan;

pub use bins::{ref_bin, twill_bin};
pub use fabric::{Fabric, Node, Pod, no_reply, ping, result_ips};
pub use kernel::{Addr, FdbEntry, Link, Neighbour, RouteEntry};
pub use netns::{Netns, TempDir};
pub use plugin::{Invocation, Outcome};
pub use snapshot::DirSnapshot;

use std::sync::atomic::{AtomicU32, Ordering};

/// Every CNI version the twill plugins speak, oldest first.
pub const CNI_VERSIONS: &[&str] = &[
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call: `twc-<pid>-<n>` (`tag` is appended when non-empty).
///
/// Short enough (for realistic pids) to also serve as a container ID or netns name.
pub fn unique_name(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    if tag.is_empty() {
        format!("twc-{}-{n}", std::process::id())
    } else {
        format!("twc-{}-{n}-{tag}", std::process::id())
    }
}

/// Defines one `#[test]` per CNI version (`version_0_1_0` ... `version_1_1_0`), each calling
/// `$f("<version>")`: `conformance::per_cni_version!(version_matrix);` in a suite.
#[macro_export]
macro_rules! per_cni_version {
    ($f:ident) => {
        #[test]
        fn version_0_1_0() {
            $f("0.1.0");
        }
        #[test]
        fn version_0_2_0() {
            $f("0.2.0");
        }
        #[test]
        fn version_0_3_0() {
            $f("0.3.0");
        }
        #[test]
        fn version_0_3_1() {
            $f("0.3.1");
        }
        #[test]
        fn version_0_4_0() {
            $f("0.4.0");
        }
        #[test]
        fn version_1_0_0() {
            $f("1.0.0");
        }
        #[test]
        fn version_1_1_0() {
            $f("1.1.0");
        }
    };
}

/// The environment variable naming host-local's owner-index directory (the plugins default to
/// `/run/twill/host-local`, node-wide state a test must not leave behind).
pub const INDEX_DIR_ENV: &str = "TWILL_HOST_LOCAL_INDEX_DIR";

/// This test process's private owner-index directory, `<tmp>/twc-<pid>-index`: every plugin
/// call the harness makes (and every runtime it starts) gets it as [`INDEX_DIR_ENV`], so no
/// test writes under `/run/twill`. Created on first use, removed when the process exits.
pub fn private_index_dir() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("twc-{}-index", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        extern "C" fn remove_index_dir() {
            let dir = std::env::temp_dir().join(format!("twc-{}-index", std::process::id()));
            let _ = std::fs::remove_dir_all(dir);
        }
        // SAFETY: registers a plain function to run at exit; it only removes a directory.
        unsafe {
            nix::libc::atexit(remove_index_dir);
        }
        dir
    })
}

/// Removes the owner-index file host-local kept in its node-wide default dir
/// (`/run/twill/host-local/<dev>-<ino>` of `ipam_dir`, i.e. `<dataDir>/<network>`) for a client
/// that runs the plugins with an environment of its own (podman), then that dir and
/// `/run/twill` if they are left empty. Call it while `ipam_dir` still exists.
pub fn remove_default_index_of(ipam_dir: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    let base = std::path::Path::new("/run/twill/host-local");
    if let Ok(m) = std::fs::metadata(ipam_dir) {
        let _ = std::fs::remove_file(base.join(format!("{}-{}", m.dev(), m.ino())));
    }
    let _ = std::fs::remove_dir(base);
    let _ = std::fs::remove_dir("/run/twill");
}
