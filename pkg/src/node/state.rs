//! Run-state files of the node reconcile: per network and node namespace, what was last applied
//! (the fingerprint of its inputs and every object installed), a lock per node namespace, the
//! claims other networks hold there, and the pruning of files whose namespace is gone.
//!
//! Layout under `runDir`: `<network>.peers.<netns key>` (one per network and namespace) and
//! `.lock.<netns key>` (one per namespace, taken by every network's reconcile there, so a
//! network never deletes what another is about to claim). The netns key is the namespace's
//! cookie or, on kernels without one, its nsfs identity ([`NetnsKey`]).
//!
//! Format (text, written as temp file + rename): a version line, `fingerprint <hex>` or
//! `fingerprint pending`, `netns <dev> <ino>`, optionally `view <dev> <ino> <size> <ctime ns>
//! <mtime ns> <context hex>` (the view file's stamp), optionally `digest <scope> <count> <sum
//! hex>` (of the installed objects, [`Digest`]), then one installed object per line
//! ([`Object::to_line`]). The header lines come first, so the fast path reads only them
//! ([`StateFile::read_head`]).

use crate::error::{Error, Result};
use crate::kernel::netns::NetnsKey;
use crate::node::peers::ViewStamp;
use crate::node::reconcile::{Digest, Key, Object};
use ipnetwork::IpNetwork;
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

const HEADER: &str = "twill-node-state 1";
const STATE_INFIX: &str = ".peers.";

/// What a state file records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeState {
    /// Fingerprint of the inputs of the last complete apply (`None`: none yet, an apply in
    /// progress, or one that left conflicts or failures behind).
    pub fingerprint: Option<u64>,
    /// The objects this network installed (its claims; deletion candidates when unwanted).
    pub installed: Vec<Object>,
    /// The view file's stamp when the fingerprint was taken, with a hash of the other inputs
    /// ([`crate::node::reconcile::context`]): while both match, the view need not be read
    /// again to know the fingerprint holds. None: read it.
    pub view: Option<(ViewStamp, u64)>,
}

/// The header of a state file: what the reconcile's fast path needs, read without the
/// installed objects ([`StateFile::read_head`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateHead {
    /// As [`NodeState::fingerprint`].
    pub fingerprint: Option<u64>,
    /// As [`NodeState::view`].
    pub view: Option<(ViewStamp, u64)>,
    /// The count and hash of the installed objects ([`Digest::of_installed`]), recorded with
    /// the fingerprint; None when there is none (the installed objects are then read).
    pub digest: Option<Digest>,
}

/// How much of a state file [`StateFile::read_head`] reads: the header lines only.
const HEAD_BYTES: usize = 512;

/// The state file of one network in one node namespace.
#[derive(Debug, Clone)]
pub struct StateFile {
    dir: PathBuf,
    key: NetnsKey,
    // The namespace's nsfs identity, recorded in a written state for pruning; None until
    // known ([`StateFile::resolve_inode`]).
    inode: Cell<Option<(u64, u64)>>,
    path: PathBuf,
    legacy: Option<PathBuf>,
}

/// The namespace-wide reconcile lock; released on drop.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

impl StateFile {
    /// The state of `network` in the namespace named by `key` whose nsfs identity is `inode`
    /// (recorded for pruning). The network name becomes part of a file name: letters, digits,
    /// `_`, `.`, `-`, not starting with `.` (code 7 otherwise).
    pub fn new(run_dir: &Path, network: &str, key: NetnsKey, inode: (u64, u64)) -> Result<Self> {
        let st = StateFile::of_key(run_dir, network, key)?;
        st.inode.set(Some(inode));
        Ok(st)
    }

    /// Like [`StateFile::new`], with the nsfs identity asked only when a state is written
    /// ([`StateFile::resolve_inode`]): the unchanged-view fast path reads the header and never
    /// needs it.
    pub fn of_key(run_dir: &Path, network: &str, key: NetnsKey) -> Result<Self> {
        check_network_name(network)?;
        Ok(StateFile {
            dir: run_dir.to_path_buf(),
            key,
            inode: Cell::new(None),
            path: run_dir.join(format!("{network}{STATE_INFIX}{key}")),
            legacy: match key {
                NetnsKey::Cookie(c) => {
                    Some(run_dir.join(format!("{network}{STATE_INFIX}{c:016x}")))
                }
                NetnsKey::Inode { .. } => None,
            },
        })
    }

    /// Learns the namespace's nsfs identity from `ask` when it is not known yet (call it
    /// before [`StateFile::write`]; a state written without it is never pruned by another
    /// namespace's reconcile).
    pub fn resolve_inode(&self, ask: impl FnOnce() -> Result<Option<(u64, u64)>>) -> Result<()> {
        if self.inode.get().is_none() {
            self.inode.set(ask()?);
        }
        Ok(())
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the state; missing, unreadable or of another format is the empty state (worst
    /// case: one reconcile that was not needed), and a line that does not parse is skipped.
    pub fn read(&self) -> NodeState {
        read_state(&self.path).map(|(s, _)| s).unwrap_or_default()
    }

    /// The header only: one read of its first [`HEAD_BYTES`] bytes, whatever the number of
    /// objects. Missing or of another format is the empty header; a header longer than that
    /// (never written) is read as far as it goes.
    pub fn read_head(&self) -> StateHead {
        use std::io::Read;
        let mut buf = [0u8; HEAD_BYTES];
        let Ok(mut f) = crate::file::open_read(&self.path) else {
            return StateHead::default();
        };
        let mut len = 0;
        while len < buf.len() {
            match f.read(&mut buf[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return StateHead::default(),
            }
        }
        // Complete lines only: a cut one is not read as something else.
        let end = if len < buf.len() {
            len
        } else {
            buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
        };
        let Ok(text) = std::str::from_utf8(&buf[..end]) else {
            return StateHead::default();
        };
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return StateHead::default();
        }
        let mut head = StateHead::default();
        for line in lines {
            if !parse_header_line(line, &mut head, &mut None) {
                break;
            }
        }
        head
    }

    /// Atomically replaces the state (temp file in the same directory + rename), creating
    /// the run directory when needed.
    pub fn write(&self, state: &NodeState) -> Result<()> {
        let mut text = format!("{HEADER}\n");
        match state.fingerprint {
            Some(fp) => text.push_str(&format!("fingerprint {fp:016x}\n")),
            None => text.push_str("fingerprint pending\n"),
        }
        if let Some((dev, ino)) = self.inode.get() {
            text.push_str(&format!("netns {dev} {ino}\n"));
        }
        if let (Some((stamp, context)), Some(_)) = (&state.view, state.fingerprint) {
            text.push_str(&format!("view {} {context:016x}\n", stamp.to_fields()));
        }
        if state.fingerprint.is_some()
            && let Some(d) = Digest::of_installed(&state.installed)
        {
            text.push_str(&format!("digest {}\n", d.to_fields()));
        }
        for o in &state.installed {
            text.push_str(&o.to_line());
            text.push('\n');
        }
        self.make_dir()?;
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(format!(".tmp{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let res = File::create(&tmp)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        res.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(format!("write twill state file {}", self.path.display()), e)
        })
    }

    /// Removes the state file (the next reconcile then compares with the kernel). Absent is Ok.
    pub fn remove(&self) -> Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(format!("remove {}", self.path.display()), e))
            }
            _ => Ok(()),
        }
    }

    /// The destinations recorded by the previous state format (`<network>.peers.<cookie as 16
    /// hex digits>`: a fingerprint line, then one destination per line), when this network
    /// has such a file in this namespace: its claims, to be taken over on upgrade.
    pub fn legacy_destinations(&self) -> Option<BTreeSet<IpNetwork>> {
        let text = std::fs::read_to_string(self.legacy.as_ref()?).ok()?;
        Some(
            text.lines()
                .skip(1)
                .filter_map(|l| l.parse().ok())
                .collect(),
        )
    }

    /// Removes the previous format's state file and its per-network lock (claims taken over).
    pub fn remove_legacy(&self) {
        if let Some(l) = &self.legacy {
            let _ = std::fs::remove_file(l);
            if let Some(name) = l.file_name().and_then(|n| n.to_str())
                && let Some((network, _)) = name.rsplit_once(STATE_INFIX)
            {
                let _ = std::fs::remove_file(self.dir.join(format!("{network}.peers.lock")));
            }
        }
    }

    /// Removes the temp files a writer of this state killed between writing and renaming left
    /// behind. Call it under [`StateFile::lock`]: every writer holds it, so any temp file of
    /// this state seen then is a dead writer's. Returns the files removed.
    pub fn remove_stale_temps(&self) -> Vec<PathBuf> {
        let Some(prefix) = self.path.file_name().map(|n| {
            let mut p = n.to_os_string();
            p.push(".tmp");
            p
        }) else {
            return Vec::new();
        };
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        for e in rd.flatten() {
            if e.file_name()
                .as_encoded_bytes()
                .starts_with(prefix.as_encoded_bytes())
                && std::fs::remove_file(e.path()).is_ok()
            {
                removed.push(e.path());
            }
        }
        removed
    }

    /// Takes the exclusive reconcile lock of this namespace (all networks sharing the run dir),
    /// creating the run dir; blocks while another reconcile holds it.
    pub fn lock(&self) -> Result<StateLock> {
        self.make_dir()?;
        let path = self.dir.join(format!(".lock.{}", self.key));
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        f.lock()
            .map_err(|e| Error::io(format!("lock {}", path.display()), e))?;
        Ok(StateLock { _file: f })
    }

    /// The claim keys ([`Object::claim`]) of every other network's state in this namespace and
    /// run dir: what this network must not delete even when it no longer wants it.
    pub fn other_claims(&self) -> BTreeSet<Key> {
        let mut out = BTreeSet::new();
        for (path, key) in state_files(&self.dir) {
            if key == self.key
                && path != self.path
                && let Some((s, _)) = read_state(&path)
            {
                out.extend(s.installed.iter().map(Object::claim));
            }
        }
        out
    }

    /// Removes the state files (and locks) of namespaces other than this one that no longer
    /// exist: no process is in them and no nsfs mount holds them. Costs one directory read when
    /// only this namespace has files; the /proc scan runs only when others are present.
    /// Returns the files removed.
    pub fn prune_dead(&self) -> Vec<PathBuf> {
        let others: Vec<(PathBuf, NetnsKey)> = state_files(&self.dir)
            .into_iter()
            .filter(|(_, k)| *k != self.key)
            .collect();
        if others.is_empty() {
            return Vec::new();
        }
        let live = live_netns_inodes();
        let mut removed = Vec::new();
        let mut dead_keys = BTreeSet::new();
        for (path, key) in others {
            let ino = match key {
                NetnsKey::Inode { ino, .. } => Some(ino),
                NetnsKey::Cookie(_) => read_state(&path).and_then(|(_, i)| i).map(|i| i.1),
            };
            // A file that does not say its namespace is left alone.
            let Some(ino) = ino else { continue };
            let dead = match (live.get(&ino), key) {
                (None, _) => true,
                // The inode was reused by a younger namespace: cookies are never reused.
                (Some(p), NetnsKey::Cookie(c)) => cookie_at(p).is_some_and(|now| now != c),
                (Some(_), NetnsKey::Inode { .. }) => false,
            };
            if dead && std::fs::remove_file(&path).is_ok() {
                removed.push(path);
                dead_keys.insert(key);
            }
        }
        for key in dead_keys {
            if state_files(&self.dir).iter().all(|(_, k)| *k != key) {
                let _ = std::fs::remove_file(self.dir.join(format!(".lock.{key}")));
            }
        }
        removed
    }

    fn make_dir(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::io(format!("create run dir {}", self.dir.display()), e))
    }
}

/// Every state file in `dir` with the namespace key of its name.
fn state_files(dir: &Path) -> Vec<(PathBuf, NetnsKey)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(|e| {
        let e = e.ok()?;
        let name = e.file_name().into_string().ok()?;
        let (_, key) = name.rsplit_once(STATE_INFIX)?;
        let key: NetnsKey = key.parse().ok()?;
        Some((e.path(), key))
    })
    .collect()
}

/// Parses a state file: the state and the namespace identity it records.
fn read_state(path: &Path) -> Option<(NodeState, Option<(u64, u64)>)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    if lines.next()? != HEADER {
        return None;
    }
    let mut state = NodeState::default();
    // One object per line: sized once rather than grown by doubling.
    state
        .installed
        .reserve(text.bytes().filter(|&b| b == b'\n').count());
    let mut inode = None;
    let mut head = StateHead::default();
    for line in lines {
        if parse_header_line(line, &mut head, &mut inode) {
            continue;
        }
        if let Some(o) = Object::from_line(line) {
            state.installed.push(o);
        }
    }
    state.fingerprint = head.fingerprint;
    state.view = head.view;
    Some((state, inode))
}

/// Reads `line` into `head` (and the namespace identity into `inode`) when it is a header
/// line (`fingerprint`, `netns`, `view`, `digest`); false for anything else.
fn parse_header_line(line: &str, head: &mut StateHead, inode: &mut Option<(u64, u64)>) -> bool {
    if let Some(fp) = line.strip_prefix("fingerprint ") {
        head.fingerprint = u64::from_str_radix(fp, 16).ok();
    } else if let Some(ns) = line.strip_prefix("netns ") {
        let mut it = ns.split(' ').map(str::parse::<u64>);
        if let (Some(Ok(d)), Some(Ok(i))) = (it.next(), it.next()) {
            *inode = Some((d, i));
        }
    } else if let Some(v) = line.strip_prefix("view ") {
        let mut f = [""; 6];
        let mut n = 0;
        for part in v.split(' ') {
            match f.get_mut(n) {
                Some(slot) => *slot = part,
                None => return true,
            }
            n += 1;
        }
        if let [stamp @ .., context] = &f[..n] {
            head.view = ViewStamp::from_fields(stamp).zip(u64::from_str_radix(context, 16).ok());
        }
    } else if let Some(d) = line.strip_prefix("digest ") {
        let f: Vec<&str> = d.split(' ').collect();
        head.digest = Digest::from_fields(&f);
    } else {
        return false;
    }
    true
}

/// The cookie of the namespace at `path` (None when it cannot be told: then it counts as live).
fn cookie_at(path: &Path) -> Option<u64> {
    crate::kernel::netns::Netns::open(path).ok()?.cookie().ok()
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape_mount_path(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], oct) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from(
        String::from_utf8_lossy(&out).into_owned(),
    ))
}

/// Every network namespace that exists for this mount namespace's view, by inode, with a
/// path that opens it: those of processes (`/proc/<pid>/ns/net`) and those held by nsfs
/// mounts (`ip netns add`, runtimes' pinned namespaces).
fn live_netns_inodes() -> BTreeMap<u64, PathBuf> {
    let inode_of = |s: &str| {
        s.strip_prefix("net:[")
            .and_then(|r| r.strip_suffix(']'))
            .and_then(|n| n.parse::<u64>().ok())
    };
    let mut live = BTreeMap::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let name = e.file_name();
            if !name.as_encoded_bytes().iter().all(u8::is_ascii_digit) {
                continue;
            }
            let path = e.path().join("ns/net");
            if let Ok(link) = std::fs::read_link(&path)
                && let Some(i) = link.to_str().and_then(inode_of)
            {
                live.entry(i).or_insert(path);
            }
        }
    }
    if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
        for line in mounts.lines() {
            // "id parent maj:min root mountpoint opts [optional...] - fstype source super"
            let mut f = line.split(' ');
            let root = f.nth(3);
            let point = f.next();
            if line.contains(" - nsfs ")
                && let (Some(i), Some(p)) = (root.and_then(inode_of), point)
            {
                live.insert(i, unescape_mount_path(p));
            }
        }
    }
    live
}

/// Network names become file names: letters, digits, `_`, `.`, `-`, not starting with `.`.
pub(crate) fn check_network_name(network: &str) -> Result<()> {
    let ok = !network.is_empty()
        && network.len() <= 200
        && !network.starts_with('.')
        && network
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_config(format!(
            "invalid network name {network:?}: use letters, digits, '_', '.', '-'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::reconcile::PeerRoute;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!("twill-state-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn route(dst: &str, gw: &str) -> Object {
        Object::Route(PeerRoute::via(dst.parse().unwrap(), gw.parse().unwrap()))
    }

    #[test]
    fn round_trip_claims_and_name_validation() {
        let dir = TempDir::new("rt");
        let own_ns = crate::kernel::netns::Netns::current().unwrap().id();
        let st = StateFile::new(&dir.0, "net1", NetnsKey::Cookie(0xabc), own_ns).unwrap();
        assert!(st.path().ends_with("net1.peers.c0000000000000abc"));
        assert_eq!(st.read(), NodeState::default());
        let s = NodeState {
            fingerprint: Some(7),
            installed: vec![
                route("10.244.2.0/24", "10.0.0.2"),
                route("fd10:2::/64", "fd00::2"),
            ],
            view: Some((
                ViewStamp {
                    dev: 2049,
                    ino: 77,
                    size: 120,
                    ctime_ns: 1_700_000_000_123_456_789,
                    mtime_ns: -5,
                },
                0xfeed,
            )),
        };
        st.write(&s).unwrap();
        assert_eq!(st.read(), s);
        let head = st.read_head();
        assert_eq!((head.fingerprint, head.view), (s.fingerprint, s.view));
        assert_eq!(head.digest, Digest::of_installed(&s.installed));
        // The header is read alone: thousands of objects later in the file are not.
        let many = NodeState {
            installed: (0..4000u32)
                .map(|i| {
                    let dst = format!("10.{}.{}.0/24", 100 + i / 250, i % 250);
                    route(&dst, "10.0.0.2")
                })
                .collect(),
            ..s.clone()
        };
        st.write(&many).unwrap();
        assert!(std::fs::metadata(st.path()).unwrap().len() > 100 * HEAD_BYTES as u64);
        let head = st.read_head();
        assert_eq!(head.digest.map(|d| d.count), Some(4000));
        assert_eq!(head.view, s.view);
        st.write(&NodeState::default()).unwrap();
        assert_eq!(st.read_head(), StateHead::default());
        assert_eq!(st.read().fingerprint, None);

        // Another network in the same namespace claims its routes; another namespace does not.
        let b = StateFile::new(&dir.0, "net2", NetnsKey::Cookie(0xabc), own_ns).unwrap();
        b.write(&s).unwrap();
        let other_ns = StateFile::new(&dir.0, "net3", NetnsKey::Cookie(0xdef), own_ns).unwrap();
        other_ns
            .write(&NodeState {
                fingerprint: None,
                installed: vec![route("10.244.9.0/24", "10.0.0.9")],
                view: None,
            })
            .unwrap();
        let claims = st.other_claims();
        assert_eq!(claims.len(), 2, "{claims:?}");
        assert!(
            !claims.contains(&Key::Route("10.244.9.0/24".parse().unwrap(), 0)),
            "{claims:?}"
        );
        let _l = st.lock().unwrap();

        st.remove().unwrap();
        st.remove().unwrap();
        for bad in ["", "..", "../x", "a/b", ".hidden", "a\0b"] {
            assert_eq!(
                StateFile::new(&dir.0, bad, NetnsKey::Cookie(1), own_ns)
                    .unwrap_err()
                    .code,
                7,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn temp_files_of_a_killed_writer_are_removed_and_the_state_kept() {
        let dir = TempDir::new("tmp");
        let own_ns = crate::kernel::netns::Netns::current().unwrap().id();
        let st = StateFile::new(&dir.0, "n", NetnsKey::Cookie(5), own_ns).unwrap();
        let other = StateFile::new(&dir.0, "n2", NetnsKey::Cookie(5), own_ns).unwrap();
        let s = NodeState {
            fingerprint: Some(3),
            installed: vec![route("10.244.2.0/24", "10.0.0.2")],
            view: None,
        };
        st.write(&s).unwrap();
        other.write(&s).unwrap();
        let stale = dir.0.join("n.peers.c0000000000000005.tmp4242");
        let theirs = dir.0.join("n2.peers.c0000000000000005.tmp4242");
        std::fs::write(&stale, "twill-node-state 1\nfingerprint pen").unwrap();
        std::fs::write(&theirs, "x").unwrap();
        assert_eq!(st.remove_stale_temps(), vec![stale.clone()]);
        assert!(!stale.exists() && theirs.exists());
        assert_eq!(st.read(), s);
    }

    #[test]
    fn prune_removes_only_files_of_namespaces_that_are_gone() {
        let dir = TempDir::new("prune");
        let own_ns = crate::kernel::netns::Netns::current().unwrap().id();
        let me = StateFile::new(&dir.0, "n", NetnsKey::Cookie(u64::MAX), own_ns).unwrap();
        me.write(&NodeState::default()).unwrap();
        assert!(me.prune_dead().is_empty());
        // This process's namespace lives, under either key kind; inode 1 is no namespace; a
        // cookie that is not the one of the namespace now at the recorded inode is gone too.
        let cookie = crate::kernel::netns::Netns::current()
            .unwrap()
            .cookie()
            .unwrap();
        let alive = StateFile::new(&dir.0, "n", NetnsKey::Cookie(cookie), own_ns).unwrap();
        alive.write(&NodeState::default()).unwrap();
        let reused = StateFile::new(&dir.0, "r", NetnsKey::Cookie(cookie + 1), own_ns).unwrap();
        reused.write(&NodeState::default()).unwrap();
        let by_inode = NetnsKey::Inode {
            dev: own_ns.0,
            ino: own_ns.1,
        };
        let alive2 = StateFile::new(&dir.0, "m", by_inode, own_ns).unwrap();
        alive2.write(&NodeState::default()).unwrap();
        let dead_key = NetnsKey::Cookie(cookie + 7);
        let dead = StateFile::new(&dir.0, "d", dead_key, (own_ns.0, 1)).unwrap();
        dead.write(&NodeState::default()).unwrap();
        let _l = dead.lock().unwrap();
        let dead2 =
            StateFile::new(&dir.0, "m", NetnsKey::Inode { dev: 9, ino: 1 }, (9, 1)).unwrap();
        dead2.write(&NodeState::default()).unwrap();
        let mut removed = me.prune_dead();
        removed.sort();
        let mut want = vec![
            dead.path().to_path_buf(),
            dead2.path().to_path_buf(),
            reused.path().to_path_buf(),
        ];
        want.sort();
        assert_eq!(removed, want);
        for kept in [&me, &alive, &alive2] {
            assert!(kept.path().exists(), "{}", kept.path().display());
        }
        assert!(!dir.0.join(format!(".lock.{dead_key}")).exists());
    }
}
