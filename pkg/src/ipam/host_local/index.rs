//! The owner index: twill's private hint that turns "which reservations does (container ID,
//! ifname) hold?" from one open and read per reservation file into one read of one file,
//! without changing the on-disk format shared with the reference plugin. It is never trusted
//! into a leak: the reservation files are the truth, the index only proposes where to look.
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
//! twill-host-local-index 3 <dev> <ino> <mtime s> <mtime ns> <ctime s> <ctime ns> <boot> <dir path>
//! <owner key, 16 hex digits> <reservation file name, padded with spaces to 46 bytes>
//! ...
//! end<padded with spaces to 63 bytes>
//! ```
//!
//! The times are zero-padded (20 and 9 digits), so the header keeps its length. `<boot>` is
//! 16 hex digits: the hash of the boot ID under which the directory's boot file
//! ([`super::reboot::BOOT_FILE`]) was last found or made to name the current boot (so no
//! reservation of an earlier boot was left), zero when none. It is believed only with the rest
//! of the header (the directory unchanged since): an ADD then skips reading the boot file. One
//! fixed-width line (a 64-byte record) per reservation file of the directory, in no particular
//! order; bytes after the `end` record are ignored (left over when the index shrank). The key
//! is a 64-bit FNV-1a hash of the owner ([`exact_key`] for `<id>\r\n<ifname>` files,
//! [`legacy_key`] for container-ID-only files). A hash is enough because every entry is
//! verified before it is acted on (below). Fixed-width records make loading, looking up,
//! adding and removing entries plain byte-slice work, without parsing or allocating per entry.
//!
//! # When it is used: the directory's stamp and ctime
//!
//! The header records the state of the network directory the index was written for: device,
//! inode, mtime and ctime. The index is used only while the directory still has exactly that
//! state; anything else (someone changed the directory, an operation died half-way, the
//! directory was recreated or restored, the index file is missing, torn, unparsable, of format
//! 1, or an older copy of itself) makes the operation read every reservation file as the
//! reference does (the full scan) and write a fresh index.
//!
//! - The mtime is the *stamp*: after each operation that changed the directory, twill sets the
//!   directory's mtime back to it, a time one minute in the past chosen when the index was
//!   built (read back after setting, so filesystems with coarse timestamps store exactly the
//!   recorded value). Anything else that creates, removes or renames a file there (the
//!   reference, an older twill, an administrator) sets the mtime to "now", which is not the
//!   stamp, even within the same coarse kernel tick as twill's last change.
//! - The ctime cannot be set at all: every change of the directory, including twill's own
//!   `utimensat` of the stamp and any restore that puts an older mtime back (`cp -a`,
//!   `rsync -a`, `tar`), sets it to "now". Setting the stamp is the last change of an
//!   operation, so the ctime read right after it identifies the directory state the index
//!   describes. An older copy of the index, or a directory restored with its times kept, has a
//!   ctime no index records.
//!
//! Order of writes in an operation: the directory's files; the stamp (a new ctime that no index
//! file records yet); the changed records; the header, last, in one small write at offset 0.
//! An operation killed anywhere in between leaves a header that does not match the directory.
//!
//! # What is believed, and what makes it scan anyway
//!
//! - Only positive answers are believed, and only after their reservation file was read and
//!   holds exactly the owner (a re-ADD returns it, DEL removes it). A failed verification
//!   proves the index wrong: the operation falls back to the full scan and rebuilds it.
//! - An owner's entries are the whole answer only when they are complete: the caller says
//!   what complete is (`Store::owned`). DEL and CHECK need a verified address in every range
//!   set; ADD accepts a full set, or nothing at all (a fresh attachment, the common case).
//!   Anything in between (part of a dual-stack pair, a legacy reservation only) scans. This
//!   is what catches a reservation file edited in place to name another owner, which changes
//!   neither the directory's mtime nor its ctime: its new owner is unknown to the index (DEL
//!   of it scans and releases it), its old owner's entry fails verification.
//! - A reservation attempt that finds the address taken although the index does not list it
//!   also proves the index wrong: it is deleted (the next operation scans and rebuilds).
//! - An index is only written when the scan could read every reservation file (an unreadable
//!   one has an unknown owner, which an index cannot answer for). A scan that only confirms a
//!   valid index does not rewrite it.
//! - No index directory, or it cannot be written: every operation scans (the behaviour without
//!   an index).
//!
//! What remains outside any O(1) answer: a file edited in place to name an owner that the
//! index already lists with a full set (that owner then holds one more address than the index
//! shows; its DEL leaves the extra one, which GC releases), or a fresh attachment's ADD after
//! such an edit named it (it gets a second address). Both need a hand edit of a file's contents
//! without the directory's lock; the reference plugin scans on every operation and has neither.
//!
//! Index files of network directories that no longer exist are removed whenever a new index
//! file is created.

use std::collections::BTreeSet;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where index files live unless [`INDEX_DIR_ENV`] says otherwise.
pub const DEFAULT_INDEX_DIR: &str = "/run/twill/host-local";
/// Environment variable naming the index directory; set and empty disables the index.
pub const INDEX_DIR_ENV: &str = "TWILL_HOST_LOCAL_INDEX_DIR";

/// First word and format version of an index file.
const MAGIC: &str = "twill-host-local-index 3";
/// Last record of a complete index file.
const END_RECORD: &[u8; 64] = b"end                                                            \n";
/// Bytes left after the `end` record above which a shrinking index is truncated.
const SHRINK_AT: u64 = 64 * 1024;
/// How far in the past a fresh stamp is set.
const STAMP_AGE: Duration = Duration::from_secs(60);
/// Initial read size: an index of up to 250 reservations is read with one `read`.
const READ_CHUNK: usize = 16 * 1024;

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
    let mut h = crate::hash::Fnv1a64::default();
    for p in parts {
        h.write(p);
    }
    h.finish()
}

/// One reservation file and its owner's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// [`exact_key`] or [`legacy_key`] of the file's owner.
    pub key: u64,
    /// The file name (the address as text).
    pub name: String,
}

/// Size of one record: key, space, name field, newline.
const RECORD: usize = 64;
/// Width of the name field: the longest text an address can be written as (45, an IPv6 address
/// with an embedded IPv4 one) plus one.
const NAME_WIDTH: usize = RECORD - 18;

/// The index file's contents as they are to be written: the header line, the records, the
/// `end` record. Changes are made in place, and only the changed bytes are written back.
#[derive(Debug, Clone)]
struct Records {
    buf: Vec<u8>,
    /// Offset of the first record (the header's length).
    start: usize,
    /// Offset from which `buf` differs from the file, if it does.
    changed_from: Option<usize>,
    /// The names, once a membership question was asked (kept in step with `buf` after that).
    names: Option<BTreeSet<Box<[u8]>>>,
}

impl Default for Records {
    fn default() -> Records {
        Records {
            buf: END_RECORD.to_vec(),
            start: 0,
            changed_from: Some(0),
            names: None,
        }
    }
}

impl Records {
    /// Records from entries, with an empty header (see [`Records::set_header`]); `None` when a
    /// name cannot be stored (too long, or not plain text).
    fn from_entries(entries: &[Entry]) -> Option<Records> {
        let mut r = Records::default();
        r.buf.reserve(entries.len() * RECORD);
        for e in entries {
            if !r.push(e.key, &e.name) {
                return None;
            }
        }
        Some(r)
    }

    /// Takes an index file's bytes; `None` unless the header line is followed by well-formed
    /// records and an `end` record (anything after it is dropped).
    fn parse(mut buf: Vec<u8>) -> Option<((DirState, u64), Records)> {
        let nl = buf.iter().position(|b| *b == b'\n')?;
        let header = parse_header(std::str::from_utf8(&buf[..nl]).ok()?)?;
        let start = nl + 1;
        let mut end = start;
        loop {
            let rec = buf.get(end..end + RECORD)?;
            if rec[RECORD - 1] != b'\n' {
                return None;
            }
            if rec.starts_with(b"end ") {
                break;
            }
            // (keys are checked when they match a lookup; a damaged one matches nothing)
            if rec[16] != b' ' {
                return None;
            }
            end += RECORD;
        }
        buf.truncate(end + RECORD);
        let records = Records {
            buf,
            start,
            changed_from: None,
            names: None,
        };
        Some((header, records))
    }

    /// Replaces the header line. One of another length moves every record, which are then all
    /// to be written; the header itself is always written (last, see [`Index::write`]).
    fn set_header(&mut self, header: &[u8]) {
        if header.len() == self.start {
            self.buf[..self.start].copy_from_slice(header);
            return;
        }
        self.buf.splice(..self.start, header.iter().copied());
        self.start = header.len();
        self.changed_from = Some(0);
    }

    /// The (key, name) pairs of the records, sorted.
    fn sorted_entries(&self) -> Vec<(&[u8], &[u8])> {
        let mut v: Vec<(&[u8], &[u8])> =
            self.iter().map(|r| (&r[..16], Records::name(r))).collect();
        v.sort_unstable();
        v
    }

    /// Offset of the `end` record.
    fn end(&self) -> usize {
        self.buf.len() - RECORD
    }

    fn changed(&mut self, at: usize) {
        self.changed_from = Some(self.changed_from.map_or(at, |c| c.min(at)));
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.buf[self.start..self.end()].chunks_exact(RECORD)
    }

    fn name(rec: &[u8]) -> &[u8] {
        rec[17..RECORD - 1].trim_ascii_end()
    }

    fn key(rec: &[u8]) -> Option<u64> {
        std::str::from_utf8(&rec[..16])
            .ok()
            .and_then(|k| u64::from_str_radix(k, 16).ok())
    }

    /// Appends an entry; false when the name does not fit a record.
    fn push(&mut self, key: u64, name: &str) -> bool {
        if name.is_empty() || name.len() > NAME_WIDTH || !name.bytes().all(|b| b.is_ascii_graphic())
        {
            return false;
        }
        let at = self.end();
        self.buf.truncate(at);
        self.buf.extend_from_slice(&hex16(key));
        self.buf.push(b' ');
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.resize(at + RECORD - 1, b' ');
        self.buf.push(b'\n');
        self.buf.extend_from_slice(END_RECORD);
        self.changed(at);
        if let Some(names) = &mut self.names {
            names.insert(name.as_bytes().into());
        }
        true
    }

    /// Removes the entries named `name` (the last record moves into the gap).
    fn remove(&mut self, name: &str) {
        let mut i = self.start;
        while i < self.end() {
            if Records::name(&self.buf[i..i + RECORD]) == name.as_bytes() {
                let last = self.end() - RECORD;
                self.buf.copy_within(last..last + RECORD, i);
                self.buf.truncate(last);
                self.buf.extend_from_slice(END_RECORD);
                self.changed(i);
            } else {
                i += RECORD;
            }
        }
        if let Some(names) = &mut self.names {
            names.remove(name.as_bytes());
        }
    }

    /// True when an entry is named `name` (the first call builds a name set, so a run of
    /// questions costs one pass over the records).
    fn contains(&mut self, name: &str) -> bool {
        if self.names.is_none() {
            self.names = Some(self.iter().map(|r| Records::name(r).into()).collect());
        }
        self.names
            .as_ref()
            .is_some_and(|n| n.contains(name.as_bytes()))
    }

    /// Entries whose key is one of `keys`.
    fn matching(&self, keys: &[u64]) -> Vec<Entry> {
        let wanted: Vec<[u8; 16]> = keys.iter().map(|k| hex16(*k)).collect();
        self.iter()
            .filter(|r| wanted.iter().any(|w| r[..16] == w[..]))
            .filter_map(|r| {
                Some(Entry {
                    key: Records::key(r)?,
                    name: String::from_utf8(Records::name(r).to_vec()).ok()?,
                })
            })
            .collect()
    }

    /// Number of entries.
    #[cfg(test)]
    fn len(&self) -> usize {
        (self.end() - self.start) / RECORD
    }
}

/// `key` as 16 lower-case hex digits.
fn hex16(key: u64) -> [u8; 16] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = DIGITS[((key >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
}

/// Identity and modification time of the network directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DirState {
    dev: u64,
    ino: u64,
    mtime: Stamp,
    /// The inode change time: set by the kernel on every change, never settable.
    ctime: Stamp,
}

/// A file time: seconds and nanoseconds since the epoch.
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
            ctime: Stamp {
                sec: m.ctime(),
                nsec: m.ctime_nsec(),
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
    Indexed(Records),
    /// A full scan in this operation listed every reservation (kept up to date likewise); the
    /// index is rebuilt from it on commit.
    Scanned(Records),
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
    /// The boot hash of the loaded header, when it matched the directory.
    boot: u64,
    /// The boot hash this operation checked the boot file against (see the module doc).
    boot_checked: Option<u64>,
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
            boot: 0,
            boot_checked: None,
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
        if let Ok(mut file) = crate::file::open(&path, nix::libc::O_RDWR | nix::libc::O_NOFOLLOW, 0)
            && let Some(bytes) = read_all(&mut file)
        {
            let len = bytes.len() as u64;
            if let Some(((written_for, boot), records)) = Records::parse(bytes)
                && written_for == state
            {
                index.stamp = Some(state.mtime);
                index.known = Known::Indexed(records);
                index.boot = boot;
            }
            index.file = Some((file, len));
        }
        index.path = Some(path);
        index
    }

    /// True when the index matched the directory and records that its boot file was checked
    /// under the boot whose ID hashes to `boot` ([`boot_hash`]): no earlier boot's reservation
    /// can be there (the directory has not changed since), so the boot file need not be read.
    pub fn boot_checked_under(&self, boot: u64) -> bool {
        boot != 0 && self.is_indexed() && self.boot == boot
    }

    /// Records that this operation found or made the boot file naming the boot `boot`, for
    /// the header this operation writes.
    pub fn boot_checked(&mut self, boot: u64) {
        self.boot_checked = Some(boot);
    }

    /// True when the index file matched the directory (owner questions need no scan).
    pub fn is_indexed(&self) -> bool {
        matches!(self.known, Known::Indexed(_))
    }

    /// The entries whose key is one of `keys`, when the index is valid (`None`: scan).
    pub fn lookup(&self, keys: &[u64]) -> Option<Vec<Entry>> {
        match &self.known {
            Known::Indexed(r) => Some(r.matching(keys)),
            _ => None,
        }
    }

    /// Every reservation the index lists (as addresses), when it is known to list them all:
    /// valid, or rebuilt by a scan in this operation, and not contradicted. `None`: unknown.
    pub fn reserved_addresses(&self) -> Option<Vec<IpAddr>> {
        if self.broken {
            return None;
        }
        match &self.known {
            Known::Indexed(r) | Known::Scanned(r) => Some(
                r.iter()
                    .filter_map(|rec| std::str::from_utf8(Records::name(rec)).ok())
                    .filter_map(|name| name.parse::<IpAddr>().ok())
                    .map(|ip| ip.to_canonical())
                    .collect(),
            ),
            Known::Nothing => None,
        }
    }

    /// Records the result of a full scan: `Some(entries)` when every reservation's owner could
    /// be read, `None` when not (then no index is written). A scan that only confirms a valid
    /// index leaves it as it is (nothing to rewrite).
    pub fn scanned(&mut self, entries: Option<Vec<Entry>>) {
        self.broken = false;
        let Some(scanned) = entries.as_deref().and_then(Records::from_entries) else {
            self.known = Known::Nothing;
            return;
        };
        if let Known::Indexed(r) = &self.known
            && r.sorted_entries() == scanned.sorted_entries()
        {
            return;
        }
        self.known = Known::Scanned(scanned);
    }

    /// This operation created reservation `name` for the owner with `key`.
    pub fn reserved(&mut self, name: &str, key: u64) {
        self.dirty = true;
        if let Known::Indexed(r) | Known::Scanned(r) = &mut self.known
            && !r.push(key, name)
        {
            self.known = Known::Nothing;
        }
    }

    /// This operation removed reservation `name` (or found it gone).
    pub fn removed(&mut self, name: &str) {
        self.dirty = true;
        if let Known::Indexed(r) | Known::Scanned(r) = &mut self.known {
            r.remove(name);
        }
    }

    /// This operation created or removed some other file in the directory.
    pub fn touched(&mut self) {
        self.dirty = true;
    }

    /// Reservation `name` exists: when the entries claim to be complete and do not list it,
    /// the index is wrong and is dropped on commit.
    pub fn exists(&mut self, name: &str) {
        if let Known::Indexed(r) | Known::Scanned(r) = &mut self.known
            && !r.contains(name)
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
        // An indexed directory changed only by this operation (under the lock, in this boot)
        // keeps the boot its header recorded; a scanned one only what this operation checked.
        let mut boot = self.boot_checked.unwrap_or(0);
        let (mut records, stamp) = match std::mem::replace(&mut self.known, Known::Nothing) {
            Known::Indexed(records) => match self.stamp.filter(|_| self.dirty) {
                Some(stamp) => {
                    boot = self.boot_checked.unwrap_or(self.boot);
                    (records, stamp)
                }
                None => return,
            },
            Known::Scanned(records) => {
                // A fresh stamp, in the past.
                let Ok(ago) = (SystemTime::now() - STAMP_AGE).duration_since(UNIX_EPOCH) else {
                    return;
                };
                let stamp = Stamp {
                    sec: ago.as_secs() as i64,
                    nsec: i64::from(ago.subsec_nanos()),
                };
                (records, stamp)
            }
            Known::Nothing => return,
        };
        let Some(dir_text) = net_dir.to_str().filter(|s| !s.contains('\n')) else {
            return;
        };
        // The stamp first: it gives the directory a ctime no index file records yet, so that
        // until the header below is written, whatever the index file holds is not trusted.
        if set_mtime(net_dir, stamp).is_err() {
            return;
        }
        // What the filesystem stored (coarse filesystems round the stamp) and the new ctime.
        let Some(now) = DirState::of(net_dir) else {
            return;
        };
        if now.dev != state.dev || now.ino != state.ino {
            return;
        }
        records.set_header(header_line(&now, boot, dir_text).as_bytes());
        self.write(&path, &records);
    }

    /// Writes what changed in the index file (creating it when needed): the records first, the
    /// header last, in one small write at offset 0, so an operation killed in between leaves a
    /// header that does not match the directory. A shorter index leaves bytes after its `end`
    /// record unless they amount to more than [`SHRINK_AT`] (truncating every time would cost a
    /// truncate per DEL). True when written completely.
    fn write(&mut self, path: &Path, records: &Records) -> bool {
        let new_len = records.buf.len() as u64;
        let header = &records.buf[..records.start];
        let body_from = records.changed_from.map(|c| c.max(records.start));
        if let Some((file, old_len)) = &self.file {
            return body_from
                .is_none_or(|from| file.write_all_at(&records.buf[from..], from as u64).is_ok())
                && (*old_len <= new_len + SHRINK_AT || file.set_len(new_len).is_ok())
                && file.write_all_at(header, 0).is_ok();
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
                .custom_flags(nix::libc::O_NOFOLLOW)
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
        let start = records.start;
        let ok = file
            .write_all_at(&records.buf[start..], start as u64)
            .is_ok()
            && file.set_len(new_len).is_ok()
            && file.write_all_at(header, 0).is_ok();
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

/// Reads a whole regular file, normally with one `read`: a short read is its end (a file
/// that were still longer would fail to parse, which only costs a scan).
fn read_all(file: &mut File) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut len = 0;
    loop {
        let n = file.read(&mut buf[len..]).ok()?;
        len += n;
        if len < buf.len() {
            buf.truncate(len);
            return Some(buf);
        }
        buf.resize(len * 2, 0);
    }
}

/// Number of space-separated fields after the magic, the directory path being the last.
const HEADER_FIELDS: usize = 8;

/// The hash of a boot ID recorded in the header (never 0, which means "none").
pub fn boot_hash(id: &str) -> u64 {
    fnv1a(&[b"boot\0", id.as_bytes()]).max(1)
}

/// The first line of an index file for a directory in `state` at path `dir_text`. The numbers
/// are zero-padded so that the line keeps its length from one operation to the next (it is
/// rewritten by every operation that changes the directory; the records then stay in place).
fn header_line(state: &DirState, boot: u64, dir_text: &str) -> String {
    format!(
        "{MAGIC} {} {} {:020} {:09} {:020} {:09} {boot:016x} {dir_text}\n",
        state.dev, state.ino, state.mtime.sec, state.mtime.nsec, state.ctime.sec, state.ctime.nsec
    )
}

/// Parses the first line: the state of the directory the index was written for (the path at
/// its end is not needed to validate).
fn parse_header(line: &str) -> Option<(DirState, u64)> {
    let rest = line.strip_prefix(MAGIC)?.strip_prefix(' ')?;
    let mut f = rest.splitn(HEADER_FIELDS, ' ');
    let dev = f.next()?.parse().ok()?;
    let ino = f.next()?.parse().ok()?;
    let mut num = || f.next()?.parse::<i64>().ok();
    let mtime = Stamp {
        sec: num()?,
        nsec: num()?,
    };
    let ctime = Stamp {
        sec: num()?,
        nsec: num()?,
    };
    let boot = u64::from_str_radix(f.next()?, 16).ok()?;
    Some((
        DirState {
            dev,
            ino,
            mtime,
            ctime,
        },
        boot,
    ))
}

/// Format 2's magic (no boot in its header); its files are only pruned (or replaced).
const MAGIC_2: &str = "twill-host-local-index 2";
/// Fields after format 2's magic, the directory path being the last.
const HEADER_FIELDS_2: usize = 7;
/// Format 1's magic (no ctime in its header); its files are only pruned.
const MAGIC_1: &str = "twill-host-local-index 1";
/// Fields after format 1's magic, the directory path being the last.
const HEADER_FIELDS_1: usize = 5;

/// The network directory path recorded in an index file's first line (format 2 or 1).
fn header_dir(line: &str) -> Option<&str> {
    let (rest, fields) = if let Some(rest) = line.strip_prefix(MAGIC) {
        (rest, HEADER_FIELDS)
    } else if let Some(rest) = line.strip_prefix(MAGIC_2) {
        (rest, HEADER_FIELDS_2)
    } else {
        (line.strip_prefix(MAGIC_1)?, HEADER_FIELDS_1)
    };
    rest.strip_prefix(' ')?.splitn(fields, ' ').nth(fields - 1)
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

    fn parse(bytes: &[u8]) -> Option<((DirState, u64), Records)> {
        Records::parse(bytes.to_vec())
    }

    fn record(key: u64, name: &str) -> String {
        format!("{key:016x} {name:<46}\n")
    }

    #[test]
    fn parse_round_trip_and_rejects_torn_files() {
        let end = std::str::from_utf8(END_RECORD).unwrap();
        let state = DirState {
            dev: 2049,
            ino: 77,
            mtime: Stamp {
                sec: 1_700_000_000,
                nsec: 123,
            },
            ctime: Stamp {
                sec: 1_700_000_060,
                nsec: 999_999_999,
            },
        };
        let header = header_line(&state, 0xabc, "/var/lib/cni/networks/a b");
        // fixed width: the records do not move when the times change
        let later = DirState {
            ctime: Stamp {
                sec: 1_800_000_000,
                nsec: 5,
            },
            ..state
        };
        assert_eq!(
            header.len(),
            header_line(&later, u64::MAX, "/var/lib/cni/networks/a b").len()
        );
        let text = format!(
            "{header}{}{}{end}",
            record(0xff, "10.0.0.2"),
            record(0x0123_4567_89ab_cdef, "fd00::2"),
        );
        let (h, mut r) = parse(text.as_bytes()).unwrap();
        assert_eq!(h, (state, 0xabc));
        assert_eq!(
            r.matching(&[0x0123_4567_89ab_cdef, 7]),
            [Entry {
                key: 0x0123_4567_89ab_cdef,
                name: "fd00::2".into()
            }]
        );
        assert!(r.contains("10.0.0.2") && !r.contains("10.0.0.20"));
        // a damaged key matches nothing
        let damaged = text.replacen("00000000000000ff", "00000000000000fg", 1);
        let (_, r) = parse(damaged.as_bytes()).unwrap();
        assert!(r.matching(&[0xff]).is_empty());
        assert_eq!(
            header_dir(text.lines().next().unwrap()),
            Some("/var/lib/cni/networks/a b")
        );
        assert_eq!(
            header_dir("twill-host-local-index 1 2049 77 1700000000 123 /var/lib/x y"),
            Some("/var/lib/x y")
        );
        // bytes after the end record are left-overs of a longer index
        assert!(parse(format!("{text}{}", record(1, "10.0.0.9")).as_bytes()).is_some());
        // torn (no end record), garbage record, record without its separator, wrong magic
        assert!(parse(&text.as_bytes()[..text.len() - 64]).is_none());
        assert!(parse(&text.as_bytes()[..text.len() - 1]).is_none());
        assert!(parse(text.replacen("10.0.0.2", "10.0.0.2\n", 1).as_bytes()).is_none());
        assert!(
            parse(
                text.replacen("00000000000000ff ", "00000000000000ff=", 1)
                    .as_bytes()
            )
            .is_none()
        );
        assert!(parse(text.replace("index 3", "index 1").as_bytes()).is_none());
        assert!(parse(text.replace("index 3", "index 2").as_bytes()).is_none());
        assert_eq!(
            header_dir("twill-host-local-index 2 2049 77 1 0 1 0 /var/lib/x y"),
            Some("/var/lib/x y")
        );
        // a version 1 header (no ctime) is not read as version 2
        let v1 = format!("twill-host-local-index 1 2049 77 1700000000 123 /x\n{end}");
        assert!(parse(v1.as_bytes()).is_none());
    }

    #[test]
    fn records_push_remove_and_limits() {
        let mut r = Records::default();
        assert!(r.push(1, "10.0.0.1"));
        assert!(r.push(2, "10.0.0.2"));
        assert!(r.push(3, "0000:0000:0000:0000:0000:ffff:255.255.255.255"));
        assert!(!r.push(4, "0000:0000:0000:0000:0000:0000:ffff:255.255.255.255"));
        assert!(!r.push(4, "10.0.0.4 x"));
        assert!(!r.push(4, ""));
        assert_eq!(r.len(), 3);
        assert!(r.contains("10.0.0.1"));
        r.remove("10.0.0.1");
        assert_eq!(r.len(), 2);
        assert!(!r.contains("10.0.0.1"));
        assert!(r.push(5, "10.0.0.5") && r.contains("10.0.0.5"));
        r.remove("10.0.0.5");
        assert_eq!(
            r.matching(&[3])[0].name,
            "0000:0000:0000:0000:0000:ffff:255.255.255.255"
        );
        assert_eq!(r.matching(&[2])[0].name, "10.0.0.2");
        r.remove("nothing");
        assert_eq!(r.len(), 2);
        assert_eq!(hex16(0x0123_4567_89ab_cdef), *b"0123456789abcdef");
        // removing from the middle keeps every other entry, whole
        let mut r = Records::default();
        for (k, n) in [
            (1, "10.0.0.1"),
            (2, "10.0.0.2"),
            (3, "10.0.0.3"),
            (4, "10.0.0.4"),
        ] {
            assert!(r.push(k, n));
        }
        r.remove("10.0.0.2");
        let mut left: Vec<(u64, String)> = r
            .matching(&[1, 2, 3, 4])
            .into_iter()
            .map(|e| (e.key, e.name))
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                (1, "10.0.0.1".into()),
                (3, "10.0.0.3".into()),
                (4, "10.0.0.4".into())
            ]
        );
        assert!(r.buf.ends_with(END_RECORD));
        assert_eq!(r.buf.len(), 4 * RECORD);
    }
}
