//! Byte-exact snapshots of a directory tree, to assert "the data dir is untouched" or
//! "these two data dirs are identical".

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Every entry under a root: relative path → `Some(bytes)` for files, `None` for directories
/// (symlinks are recorded by their target, as bytes, prefixed with `-> `).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirSnapshot {
    entries: BTreeMap<PathBuf, Option<Vec<u8>>>,
}

impl DirSnapshot {
    /// Walks `root` recursively. A missing root gives an empty snapshot.
    pub fn take(root: impl AsRef<Path>) -> DirSnapshot {
        let mut entries = BTreeMap::new();
        let root = root.as_ref();
        if root.exists() {
            walk(root, root, &mut entries);
        }
        DirSnapshot { entries }
    }

    /// The (relative path, bytes) list of regular files, sorted by path.
    pub fn files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        self.entries
            .iter()
            .filter_map(|(p, b)| b.as_ref().map(|b| (p.clone(), b.clone())))
            .collect()
    }

    /// Relative paths of the regular files, sorted.
    pub fn file_names(&self) -> Vec<String> {
        self.files()
            .into_iter()
            .map(|(p, _)| p.display().to_string())
            .collect()
    }

    /// The bytes of the file at relative path `rel`, if it exists.
    pub fn get(&self, rel: impl AsRef<Path>) -> Option<&[u8]> {
        self.entries.get(rel.as_ref()).and_then(|b| b.as_deref())
    }

    /// Makes the tree under `root` exactly this snapshot again (contents, not modes): removes
    /// `root` and rewrites every directory and file (a symlink comes back as a regular file).
    /// For isolating test cases that share one tree.
    pub fn restore(&self, root: impl AsRef<Path>) {
        let root = root.as_ref();
        if let Err(e) = std::fs::remove_dir_all(root)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            panic!("remove {}: {e}", root.display());
        }
        std::fs::create_dir_all(root).unwrap_or_else(|e| panic!("create {}: {e}", root.display()));
        for (rel, bytes) in &self.entries {
            let path = root.join(rel);
            match bytes {
                None => std::fs::create_dir_all(&path),
                Some(b) => std::fs::write(&path, b),
            }
            .unwrap_or_else(|e| panic!("restore {}: {e}", path.display()));
        }
    }

    /// Human-readable differences from `self` (before) to `after`; empty when identical.
    pub fn diff(&self, after: &DirSnapshot) -> Vec<String> {
        let mut out = Vec::new();
        for (p, b) in &self.entries {
            match after.entries.get(p) {
                None => out.push(format!("removed: {}", p.display())),
                Some(a) if a != b => out.push(format!(
                    "changed: {} ({} -> {})",
                    p.display(),
                    show(b.as_deref()),
                    show(a.as_deref())
                )),
                _ => {}
            }
        }
        for (p, a) in &after.entries {
            if !self.entries.contains_key(p) {
                out.push(format!("added: {} = {}", p.display(), show(a.as_deref())));
            }
        }
        out
    }

    /// Panics with the differences unless `after` is identical to `self`.
    pub fn assert_same(&self, after: &DirSnapshot, context: impl fmt::Display) {
        let d = self.diff(after);
        assert!(
            d.is_empty(),
            "{context}: directory changed:\n  {}",
            d.join("\n  ")
        );
    }
}

fn show(b: Option<&[u8]>) -> String {
    match b {
        None => "<dir>".to_string(),
        Some(b) => format!("{:?}", String::from_utf8_lossy(b)),
    }
}

fn walk(root: &Path, dir: &Path, entries: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
    let rd = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read dir {}: {e}", dir.display()));
    for ent in rd {
        let ent = ent.unwrap_or_else(|e| panic!("read dir {}: {e}", dir.display()));
        let path = ent.path();
        let rel = path
            .strip_prefix(root)
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| path.clone());
        let ft = ent
            .file_type()
            .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
        if ft.is_symlink() {
            let target = std::fs::read_link(&path).unwrap_or_default();
            let bytes = format!("-> {}", target.display()).into_bytes();
            entries.insert(rel, Some(bytes));
        } else if ft.is_dir() {
            entries.insert(rel, None);
            walk(root, &path, entries);
        } else {
            let bytes =
                std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            entries.insert(rel, Some(bytes));
        }
    }
}
