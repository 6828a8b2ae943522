//! Locating the plugin binaries under test: twill's own and the reference Go plugins.
//!
//! twill binaries: `$TWILL_BIN_DIR` if set, else `<workspace>/target/release`, then
//! `<workspace>/target/debug` (workspace = this crate's parent directory). A missing binary is
//! a hard failure telling the user to build; the suite never silently skips.
//!
//! Reference plugins: `$REF_CNI_DIR` if set, else `/usr/lib/cni`.

use std::path::{Path, PathBuf};

/// The workspace root (parent of this crate's manifest directory).
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The directories searched for twill binaries, in order.
pub fn twill_bin_dirs() -> Vec<PathBuf> {
    if let Some(dir) = std::env::var_os("TWILL_BIN_DIR") {
        return vec![PathBuf::from(dir)];
    }
    let ws = workspace_dir();
    vec![ws.join("target/release"), ws.join("target/debug")]
}

/// Path of the twill binary `name` (e.g. `"host-local"`).
///
/// Panics with an actionable message (run `make build`) when it does not exist.
pub fn twill_bin(name: &str) -> PathBuf {
    let dirs = twill_bin_dirs();
    for dir in &dirs {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    panic!(
        "twill binary `{name}` not found (searched: {}). Run `make build` in the workspace \
         (or `cargo build --release -p {name}`), or point TWILL_BIN_DIR at the directory \
         holding the binaries.",
        searched.join(", ")
    );
}

/// The directory holding the reference CNI plugins.
pub fn ref_dir() -> PathBuf {
    std::env::var_os("REF_CNI_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/cni"))
}

/// Path of the reference plugin `name`; panics with a clear message when missing.
pub fn ref_bin(name: &str) -> PathBuf {
    let p = ref_dir().join(name);
    assert!(
        p.is_file(),
        "reference CNI plugin `{}` not found: install containernetworking-plugins or set \
         REF_CNI_DIR",
        p.display()
    );
    p
}
