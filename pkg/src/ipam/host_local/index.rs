//! The owner index: twill's private, self-validating hint that turns "which reservations does
//! (container ID, ifname) hold?" from one open and read per reservation file into one read of
//! one file, without changing the on-disk format shared with the reference plugin.
//!
//! # Where and what
//!
//! One file per network directory, outside the data directory (so the reference and anyone
//! comparing data directories never see it): `<index dir>/<dev>-<ino>`, named after the network
//! directory's device and inode. The index directory is [`DEFAULT_INDEX_DIR`]
//! (`/run/twill/host-local`: tmpfs on most nodes, cleared on reboot), or the directory in the
//! environment variable [`INDEX_DIR_ENV`] (empty: no index). Contents, in text:
//!
//! ```text
//! twill-host-local-index 1 <dev> <ino> <stamp seconds> <stamp nanoseconds> <network dir path>
//! <owner key, 16 hex digits> <reservation file name>
//! ...
//! end
//! ```
//!
//! One line per reservation file of the directory; the key is a 64-bit FNV-1a hash of the
//! owner ([`exact_key`] for `<id>\r\n<ifname>` files, [`legacy_key`] for container-ID-only
//! files). A hash is enough because every entry is verified before it is acted on (below).
//!
//! # Why it can be trusted: the directory stamp
//!
//! Anything that creates, removes or renames a reservation (the reference plugin, an older
//! twill, an administrator) changes the directory's modification time to the current time.
//! twill, after each operation that changed the directory and after updating the index, sets
//! the directory's mtime back to the index's *stamp*: a time chosen when the index was built,
//! one minute in the past (read back after setting it, so filesystems with coarse timestamps
//! store exactly the recorded value). So:
//!
//! - directory mtime == stamp (and same device and inode): every change since the index was
//!   written was made by twill, which kept the index exact; the index lists every reservation;
//!   an owner absent from it holds nothing.
//! - otherwise (someone else changed the directory, an operation crashed between its change and
//!   the stamp, the directory was recreated, the index file is missing, torn or unparsable): the
//!   index is not used; the operation reads every reservation file as before (the full scan),
//!   and writes a fresh index with a fresh stamp, so the next operation is fast again.
//!
//! The order of writes makes every crash land in the second case: the directory changes first,
//! then the index file, then the stamp. A later foreign change cannot reproduce the stamp,
//! because kernel-set times are "now" and the stamp lies in the past (a wall clock stepped back
//! by exactly the right amount, to the nanosecond, is the only way).
//!
//! # Self-validation and fallbacks
//!
//! - Hits are verified: an entry is used only after its reservation file was read and holds
//!   exactly the owner (a re-ADD returns it, DEL removes it). A failed verification means the
//!   index is wrong: the operation falls back to the full scan and rebuilds the index.
//! - A reservation attempt that finds the address taken although the index does not list it
//!   also proves the index wrong: it is deleted (the next operation scans and rebuilds).
//! - An index is only written when the scan could read every reservation file (an unreadable
//!   one has an unknown owner, which an index cannot answer for).
//! - No index directory, or it cannot be written: every operation scans (the behaviour without
//!   an index). A reservation made by the reference is found by the scan that follows its
//!   directory change; DEL of it works the same way.
//!
//! Index files of network directories that no longer exist are removed whenever a new index
//! file is created.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where index files live unless [`INDEX_DIR_ENV`] says otherwise.
pub const DEFAULT_INDEX_DIR: &str = "/run/twill/host-local";
/// Environment variable naming the index directory; set and empty disables the index.
pub const INDEX_DIR_ENV: &str = "TWILL_HOST_LOCAL_INDEX_DIR";

/// First word and format version of an index file.
const MAGIC: &str = "twill-host-local-index 1";
/// Last line of a complete index file.
const END: &[u8] = b"end\n";
/// How far in the past a fresh stamp is set.
const STAMP_AGE: Duration = Duration::from_secs(60);
/// Initial read size; indexes of a few hundred reservations fit in one read.
const READ_CHUNK: usize = 32 * 1024;

/// The index directory from the environment: [`INDEX_DIR_ENV`] when set (empty: `None`), else
/// [`DEFAULT_INDEX_DIR`].
pub fn index_dir_from_env() -> Option<PathBuf> {
    match std::env::var_os(INDEX_DIR_ENV) {
        Some(v) if v.is_empty() => None,
        Some(v) => Some(PathBuf::from(v)),
        None => Some(PathBuf::from(DEFAULT_INDEX_DIR)),
    }
}

/// Key of the owner `<id>\r\n<ifname>` (`id` trimmed, as in the file).
pub fn exact_key(id: &str, ifname: &str) -> u64 {
    fnv1a(&[b"E", id.trim().as_bytes(), b"\0", ifname.as_bytes()])
}

/// Key of a legacy owner: a file holding only the container ID.
pub fn legacy_key(id: &str) -> u64 {
    fnv1a(&[b"L", id.trim().as_bytes()])
}

/// 64-bit FNV-1a over the concatenation of `parts` (a fixed, documented function: index files
/// must mean the same to every twill version that reads them).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.iter().flat_map(|p| p.iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// One reservation file and its owner's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// [`exact_key`] or [`legacy_key`] of the file's owner.
    pub key: u64,
    /// The file name (the address as text).
    pub name: String,
}

/// Identity and modification time of the network directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DirState {
    dev: u64,
    ino: u64,
    mtime: Stamp,
}

/// A modification time: seconds and nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    sec: i64,
    nsec: i64,
}

impl DirState {
    fn of(dir: &Path) -> Option<DirState> {
        let m = fs::metadata(dir).ok()?;
        Some(DirState {
            dev: m.dev(),
            ino: m.ino(),
            mtime: Stamp {
                sec: m.mtime(),
                nsec: m.mtime_nsec(),
            },
        })
    }
}

/// What the index knows about the owners of the directory's reservations.
#[derive(Debug)]
enum Known {
    /// Nothing trustworthy yet: owner questions need a full scan.
    Nothing,
    /// The index file matched the directory: every reservation, as of the start of the
    /// operation, kept up to date with this operation's changes.
    Indexed(Vec<Entry>),
    /// A full scan in this operation listed every reservation (kept up to date likewise); the
    /// index is rebuilt from it on commit.
    Scanned(Vec<Entry>),
}

/// The index of one network directory for the duration of one locked operation.
#[derive(Debug)]
pub struct Index {
    /// The index file's path; `None` when indexing is off.
    path: Option<PathBuf>,
    /// The index file as opened (read-write) at load time, and its length then.
    file: Option<(File, u64)>,
    /// The loaded file's stamp (meaningful with `Known::Indexed`).
    stamp: Option<Stamp>,
    /// The directory's identity, from load time.
    dir_state: Option<DirState>,
    known: Known,
    /// This operation changed the directory's entries (created or removed a file).
    dirty: bool,
    /// Something contradicted the index: it must not be written back (it is deleted).
    broken: bool,
}

impl Index {
    /// No index: every owner question is answered by a scan, nothing is written.
    pub fn disabled() -> Index {
        Index {
            path: None,
            file: None,
            stamp: None,
            dir_state: None,
            known: Known::Nothing,
            dirty: false,
            broken: false,
        }
    }

    /// Loads the index of `net_dir` from `index_dir` (call with the network lock held). A
    /// missing, stale or unreadable index loads as "nothing known", never as an error.
    pub fn load(index_dir: &Path, net_dir: &Path) -> Index {
        let mut index = Index::disabled();
        let Some(state) = DirState::of(net_dir) else {
            return index;
        };
        let path = index_dir.join(format!("{}-{}", state.dev, state.ino));
        index.dir_state = Some(state);
        if let Ok(mut file) = OpenOptions::new().read(true).write(true).open(&path)
            && let Some(bytes) = read_all(&mut file)
        {
            if let Some((header, entries)) = parse(&bytes)
                && header.dev == state.dev
                && header.ino == state.ino
                && header.mtime == state.mtime
            {
                index.stamp = Some(header.mtime);
                index.known = Known::Indexed(entries);
            }
            index.file = Some((file, bytes.len() as u64));
        }
        index.path = Some(path);
        index
    }

    /// The entries when they are known to list every reservation (from a valid index or a scan
    /// in this operation).
    pub fn entries(&self) -> Option<&[Entry]> {
        match &self.known {
            Known::Indexed(e) | Known::Scanned(e) => Some(e),
            Known::Nothing => None,
        }
    }

    /// True when the entries come from the index file (not from a scan in this operation).
    pub fn is_indexed(&self) -> bool {
        matches!(self.known, Known::Indexed(_))
    }

    /// Records the result of a full scan: `Some(entries)` when every reservation's owner could
    /// be read, `None` when not (then no index is written).
    pub fn scanned(&mut self, entries: Option<Vec<Entry>>) {
        self.broken = false;
        self.known = match entries {
            Some(e) => Known::Scanned(e),
            None => Known::Nothing,
        };
    }

    /// This operation created reservation `name` for the owner with `key`.
    pub fn reserved(&mut self, name: &str, key: u64) {
        self.dirty = true;
        if let Known::Indexed(e) | Known::Scanned(e) = &mut self.known {
            e.push(Entry {
                key,
                name: name.to_owned(),
            });
        }
    }

    /// This operation removed reservation `name` (or found it gone).
    pub fn removed(&mut self, name: &str) {
        self.dirty = true;
        if let Known::Indexed(e) | Known::Scanned(e) = &mut self.known {
            e.retain(|x| x.name != name);
        }
    }

    /// This operation created or removed some other file in the directory.
    pub fn touched(&mut self) {
        self.dirty = true;
    }

    /// Reservation `name` exists: when the entries claim to be complete and do not list it,
    /// the index is wrong and is dropped on commit.
    pub fn exists(&mut self, name: &str) {
        if let Some(entries) = self.entries()
            && !entries.iter().any(|e| e.name == name)
        {
            self.broken = true;
        }
    }

    /// The index contradicted the directory: stop trusting it in this operation, and delete it
    /// on commit unless a scan replaces it first.
    pub fn contradicted(&mut self) {
        self.known = Known::Nothing;
        self.broken = true;
    }

    /// Brings the index file and the directory stamp up to date (see the module doc); called
    /// once, at the end of the locked operation. Failures only cost the next operation a scan.
    pub fn commit(&mut self, net_dir: &Path) {
        let Some(path) = self.path.clone() else {
            return;
        };
        let Some(state) = self.dir_state else {
            return;
        };
        if self.broken {
            let _ = fs::remove_file(&path);
            return;
        }
        match std::mem::replace(&mut self.known, Known::Nothing) {
            Known::Indexed(entries) => {
                let Some(stamp) = self.stamp.filter(|_| self.dirty) else {
                    return;
                };
                if self.write(&path, &state, stamp, net_dir, &entries) {
                    let _ = set_mtime(net_dir, stamp);
                }
            }
            Known::Scanned(entries) => {
                // A fresh stamp, in the past; read back what the filesystem stored.
                let Ok(ago) = (SystemTime::now() - STAMP_AGE).duration_since(UNIX_EPOCH) else {
                    return;
                };
                let wanted = Stamp {
                    sec: ago.as_secs() as i64,
                    nsec: i64::from(ago.subsec_nanos()),
                };
                if set_mtime(net_dir, wanted).is_err() {
                    return;
                }
                let Some(now) = DirState::of(net_dir) else {
                    return;
                };
                if now.dev != state.dev || now.ino != state.ino {
                    return;
                }
                self.write(&path, &now, now.mtime, net_dir, &entries);
            }
            Known::Nothing => {}
        }
    }

    /// Writes the index file (in place when it exists: no truncation to zero, which would make
    /// some filesystems flush it); true when it was written completely.
    fn write(
        &mut self,
        path: &Path,
        state: &DirState,
        stamp: Stamp,
        net_dir: &Path,
        entries: &[Entry],
    ) -> bool {
        let Some(dir_text) = net_dir.to_str().filter(|s| !s.contains('\n')) else {
            return false;
        };
        let mut text = format!(
            "{MAGIC} {} {} {} {} {dir_text}\n",
            state.dev, state.ino, stamp.sec, stamp.nsec
        )
        .into_bytes();
        text.reserve(entries.len() * 32 + END.len());
        for e in entries {
            text.extend_from_slice(format!("{:016x} {}\n", e.key, e.name).as_bytes());
        }
        text.extend_from_slice(END);
        let new_len = text.len() as u64;
        if let Some((file, old_len)) = &self.file {
            return file.write_all_at(&text, 0).is_ok()
                && (*old_len <= new_len || file.set_len(new_len).is_ok());
        }
        let Some(dir) = path.parent() else {
            return false;
        };
        let create = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
        };
        let file = match create() {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                if DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .is_err()
                {
                    return false;
                }
                match create() {
                    Ok(f) => f,
                    Err(_) => return false,
                }
            }
            Err(_) => return false,
        };
        prune(dir, path);
        let ok = file.write_all_at(&text, 0).is_ok() && file.set_len(new_len).is_ok();
        self.file = Some((file, new_len));
        ok
    }
}

/// Sets the modification time of `dir` (the access time is left alone).
fn set_mtime(dir: &Path, stamp: Stamp) -> nix::Result<()> {
    use nix::sys::stat::{UtimensatFlags, utimensat};
    use nix::sys::time::TimeSpec;
    utimensat(
        nix::fcntl::AT_FDCWD,
        dir,
        &TimeSpec::UTIME_OMIT,
        &TimeSpec::new(stamp.sec, stamp.nsec),
        UtimensatFlags::FollowSymlink,
    )
}

/// Reads a whole (regular) file, normally with one `read`: a short read that ends in the last
/// line of an index is taken as the end of the file (anything else reads on until EOF).
fn read_all(file: &mut File) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(len * 2, 0);
        }
        let n = file.read(&mut buf[len..]).ok()?;
        len += n;
        if n == 0 || (len < buf.len() && buf[..len].ends_with(END)) {
            buf.truncate(len);
            return Some(buf);
        }
    }
}

/// The header of an index file.
struct Header {
    dev: u64,
    ino: u64,
    mtime: Stamp,
}

/// Parses a complete index file; `None` when it is not one (wrong magic, torn, bad line).
fn parse(bytes: &[u8]) -> Option<(Header, Vec<Entry>)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let body = text.strip_suffix("end\n")?;
    let mut lines = body.split_terminator('\n');
    let header = parse_header(lines.next()?)?;
    let mut entries = Vec::new();
    for line in lines {
        let (key, name) = line.split_once(' ')?;
        if key.len() != 16 || name.is_empty() {
            return None;
        }
        entries.push(Entry {
            key: u64::from_str_radix(key, 16).ok()?,
            name: name.to_owned(),
        });
    }
    Some((header, entries))
}

/// Parses the first line; the directory path at its end is not needed to validate.
fn parse_header(line: &str) -> Option<Header> {
    let rest = line.strip_prefix(MAGIC)?.strip_prefix(' ')?;
    let mut f = rest.splitn(5, ' ');
    let dev = f.next()?.parse().ok()?;
    let ino = f.next()?.parse().ok()?;
    let sec = f.next()?.parse().ok()?;
    let nsec = f.next()?.parse().ok()?;
    Some(Header {
        dev,
        ino,
        mtime: Stamp { sec, nsec },
    })
}

/// The network directory path recorded in an index file's first line.
fn header_dir(line: &str) -> Option<&str> {
    line.strip_prefix(MAGIC)?
        .strip_prefix(' ')?
        .splitn(5, ' ')
        .nth(4)
}

/// Removes the index files in `dir` (except `keep`) whose network directory no longer exists or
/// is another directory now. Files it cannot make sense of are left alone.
fn prune(dir: &Path, keep: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path == keep {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Some((dev, ino)) = name
            .split_once('-')
            .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
        else {
            continue;
        };
        let mut first = [0u8; 4096];
        let Ok(n) = File::open(&path).and_then(|mut f| f.read(&mut first)) else {
            continue;
        };
        let Some(line) = std::str::from_utf8(&first[..n])
            .ok()
            .and_then(|t| t.split_once('\n'))
            .map(|(l, _)| l)
        else {
            continue;
        };
        let Some(net_dir) = header_dir(line) else {
            continue;
        };
        let stale = match fs::metadata(net_dir) {
            Ok(m) => m.dev() != dev || m.ino() != ino,
            Err(e) => e.kind() == ErrorKind::NotFound,
        };
        if stale {
            let _ = fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fixed_and_distinct() {
        // FNV-1a 64 of "" is the offset basis; the function must never change.
        assert_eq!(fnv1a(&[]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(exact_key(" c1 ", "eth0"), exact_key("c1", "eth0"));
        assert_ne!(exact_key("c1", "eth0"), exact_key("c1", "eth1"));
        assert_ne!(exact_key("c1", "eth0"), legacy_key("c1"));
        assert_ne!(exact_key("c", "1eth0"), exact_key("c1", "eth0"));
    }

    #[test]
    fn parse_round_trip_and_rejects_torn_files() {
        let text = format!(
            "{MAGIC} 2049 77 1700000000 123 /var/lib/cni/networks/a b\n\
             00000000000000ff 10.0.0.2\n0123456789abcdef fd00::2\nend\n"
        );
        let (h, e) = parse(text.as_bytes()).unwrap();
        assert_eq!((h.dev, h.ino), (2049, 77));
        assert_eq!(
            h.mtime,
            Stamp {
                sec: 1_700_000_000,
                nsec: 123
            }
        );
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].key, 0x0123_4567_89ab_cdef);
        assert_eq!(e[1].name, "fd00::2");
        assert_eq!(
            header_dir(text.lines().next().unwrap()),
            Some("/var/lib/cni/networks/a b")
        );
        // torn (no end line), garbage line, bad key, wrong magic
        assert!(parse(&text.as_bytes()[..text.len() - 2]).is_none());
        assert!(parse(text.replace("fd00::2\n", "fd00::2\nxx\n").as_bytes()).is_none());
        assert!(parse(text.replace("00000000000000ff", "ff").as_bytes()).is_none());
        assert!(parse(text.replace("index 1", "index 2").as_bytes()).is_none());
    }
}
