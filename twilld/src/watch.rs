//! inotify on the directories of the files twilld reads: the conf dir (every name) and the
//! directories of the views and subnet files (their names only, so twill's own state files next
//! to a view do not wake the daemon). A directory that does not exist yet is waited for through
//! its nearest existing ancestor. A view or subnet file that is a symlink is followed: the
//! directories of the links on the way and of the file it leads to are watched too.

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

/// Which names of a watched directory matter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Names {
    All,
    Only(BTreeSet<OsString>),
}

/// The directories watched and what of them matters.
pub struct Watches {
    ino: Inotify,
    wanted: BTreeMap<PathBuf, Names>,
    by_wd: BTreeMap<i32, Names>,
}

fn flags() -> AddWatchFlags {
    AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_ONLYDIR
}

impl Watches {
    /// An inotify instance with nothing watched yet.
    pub fn new() -> nix::Result<Watches> {
        Ok(Watches {
            ino: Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?,
            wanted: BTreeMap::new(),
            by_wd: BTreeMap::new(),
        })
    }

    /// Watches `conf_dir` and the directories of `files`, replacing the previous set when it
    /// differs (a fresh inotify instance, so no stale watch lingers). Returns whether the set
    /// changed (a file written before its directory was watched may have been missed) and the
    /// directories that could not be watched, with why.
    pub fn set(&mut self, conf_dir: &Path, files: &[PathBuf]) -> (bool, Vec<String>) {
        let mut wanted: BTreeMap<PathBuf, Names> = BTreeMap::new();
        let mut add = |dir: PathBuf, name: Option<OsString>| match name {
            None => {
                wanted.insert(dir, Names::All);
            }
            Some(n) => match wanted.entry(dir).or_insert(Names::Only(BTreeSet::new())) {
                Names::All => {}
                Names::Only(set) => {
                    set.insert(n);
                }
            },
        };
        let (d, n) = existing(conf_dir, None);
        add(d, n);
        for f in files.iter().flat_map(|f| resolution(f)) {
            let (dir, name) = match (f.parent(), f.file_name()) {
                (Some(p), Some(n)) => (p, n.to_os_string()),
                _ => continue,
            };
            let (d, n) = existing(dir, Some(name));
            add(d, n);
        }
        if wanted == self.wanted {
            return (false, Vec::new());
        }
        let ino = match Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC) {
            Ok(i) => i,
            Err(e) => {
                return (
                    false,
                    vec![format!("cannot create an inotify instance: {e}")],
                );
            }
        };
        let mut problems = Vec::new();
        let mut by_wd = BTreeMap::new();
        for (dir, names) in &wanted {
            match ino.add_watch(dir.as_path(), flags()) {
                Ok(wd) => {
                    by_wd.insert(wd.as_raw(), names.clone());
                }
                Err(e) => problems.push(format!("cannot watch {}: {e}", dir.display())),
            }
        }
        self.ino = ino;
        self.by_wd = by_wd;
        self.wanted = wanted;
        (true, problems)
    }

    /// The inotify descriptor, for poll.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.ino.as_fd()
    }

    /// Reads every pending event; true when one concerns a watched name (or events were
    /// lost, or a watched directory went away).
    pub fn drain(&mut self) -> bool {
        let mut relevant = false;
        while let Ok(events) = self.ino.read_events() {
            if events.is_empty() {
                break;
            }
            for ev in events {
                if ev.mask.intersects(
                    AddWatchFlags::IN_Q_OVERFLOW
                        | AddWatchFlags::IN_IGNORED
                        | AddWatchFlags::IN_DELETE_SELF
                        | AddWatchFlags::IN_MOVE_SELF,
                ) {
                    relevant = true;
                    continue;
                }
                relevant |= match (self.by_wd.get(&ev.wd.as_raw()), &ev.name) {
                    (Some(Names::All), _) => true,
                    (Some(Names::Only(set)), Some(n)) => set.contains(n),
                    _ => false,
                };
            }
        }
        relevant
    }
}

/// How many symlinks are followed when working out what a watched file resolves to (the
/// kernel gives up at 40; a loop ends here, and reading the file then fails with ELOOP).
const MAX_HOPS: usize = 8;

/// Every path whose change changes what `file` reads: `file` itself and, when it is a symlink
/// (or sits under a symlinked directory, as a ConfigMap volume's `..data`), each link on the
/// way and the file it leads to, so a view written through a symlink to a file elsewhere is
/// noticed like one written in place.
fn resolution(file: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut p = file.to_path_buf();
    for _ in 0..MAX_HOPS {
        if let Some(dir) = p.parent() {
            let mut prefix = PathBuf::new();
            for c in dir.components() {
                prefix.push(c);
                if prefix.symlink_metadata().is_ok_and(|m| m.is_symlink()) {
                    out.push(prefix.clone());
                }
            }
        }
        out.push(p.clone());
        match std::fs::read_link(&p) {
            Ok(target) => p = p.parent().map_or(target.clone(), |d| d.join(&target)),
            Err(_) => break,
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The directory to watch for `dir` (and the name in it that matters, `name` when `dir`
/// exists): `dir` itself, else its nearest existing ancestor and the child leading to `dir`.
fn existing(dir: &Path, name: Option<OsString>) -> (PathBuf, Option<OsString>) {
    let mut d = dir.to_path_buf();
    let mut n = name;
    loop {
        if d.is_dir() {
            return (d, n);
        }
        match (d.parent(), d.file_name()) {
            (Some(p), Some(child)) => {
                n = Some(child.to_os_string());
                d = p.to_path_buf();
            }
            _ => return (PathBuf::from("/"), n),
        }
    }
}
