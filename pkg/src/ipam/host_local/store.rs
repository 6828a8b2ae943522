//! The on-disk reservation store, byte-compatible with the reference host-local plugin.
//!
//! Layout of `<dataDir>/<network>/`:
//! - `<ip>` (IPv6 in its canonical text form): one file per reserved address, containing the
//!   owner as `<containerID>\r\n<ifname>` (no trailing newline); files of old reference
//!   versions contain only the container ID and are still recognised ("legacy").
//! - `last_reserved_ip.<range set index>`: the round-robin cursor, the address as text.
//! - `lock`: empty file locked with `flock(LOCK_EX)` around every operation, by this store and
//!   by the reference plugin alike, so both binaries exclude each other (see [`super::lock`]:
//!   the wait is bounded).
//! - `.twill-boot-id`: the boot in which twill last released earlier boots' reservations (see
//!   [`super::reboot`]).
//! - `.twill-tmp-<pid>`: a temporary file of the fallback path below, present only while an
//!   operation holds the lock; a left-over one (crash) is removed by GC and never taken for a
//!   reservation.
//!
//! A reservation is made by writing the owner to an unnamed file (`O_TMPFILE`) and `linkat()`ing
//! it to `<ip>`, or where `O_TMPFILE` is unavailable, by writing a named temporary file and
//! `link()`ing it: either way the name appears atomically with its full contents (a reservation
//! file is never half-written), and `EEXIST` means taken.
//!
//! Hostile directories: every file is opened with `O_NOFOLLOW`, so a symlink planted under a
//! reservation, cursor, lock or boot file name is never followed (a symlinked reservation
//! counts as taken, by an unknown owner; a symlinked cursor is replaced by a regular file).
//! Directories twill creates get mode 0700 and files 0600 (the reference uses 0755 and 0644;
//! both run as root, so each still reads and removes the other's files).
//!
//! Which reservations an owner holds is answered by twill's owner index ([`super::index`]) when
//! it is valid and its verified answer is complete, without reading every reservation file;
//! otherwise by reading them all (a scan), after which the index is rebuilt if it was wrong.
//! The store keeps the index up to date with every change it makes and commits it when
//! dropped, still holding the lock.

use super::index::{self, Entry, Index};
use super::lock::lock_exclusive;
use super::reboot::{BOOT_FILE, Boot};
use crate::error::{Error, Result};
use nix::fcntl::{AT_FDCWD, AtFlags};
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Mode of the directories twill creates.
const DIR_MODE: u32 = 0o700;
/// Mode of the files twill creates.
const FILE_MODE: u32 = 0o600;

/// Name of the lock file inside the network directory (the reference's name).
pub const LOCK_FILE: &str = "lock";
/// Prefix of the round-robin cursor files, followed by the range set index.
pub const CURSOR_PREFIX: &str = "last_reserved_ip.";
/// Prefix of twill's temporary files in the network directory.
pub const TEMP_PREFIX: &str = ".twill-tmp-";

/// Separator between container ID and ifname in a reservation file.
const LINE_BREAK: &str = "\r\n";

/// Who holds a reservation: a container's interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner<'a> {
    /// Container ID (`CNI_CONTAINERID`); surrounding whitespace is ignored, as by the reference.
    pub id: &'a str,
    /// Interface name (`CNI_IFNAME`).
    pub ifname: &'a str,
}

impl Owner<'_> {
    /// The exact file contents the reference writes for this owner.
    pub fn file_contents(&self) -> String {
        format!("{}{LINE_BREAK}{}", self.id.trim(), self.ifname)
    }

    /// The owner index key of this owner ([`index::exact_key`]).
    pub fn key(&self) -> u64 {
        index::exact_key(self.id, self.ifname)
    }

    /// How the stored owner `stored` relates to this owner.
    pub fn matches(&self, stored: &StoredOwner) -> Match {
        match &stored.ifname {
            Some(ifname) if stored.id == self.id.trim() && *ifname == self.ifname => Match::Exact,
            None if stored.id == self.id.trim() => Match::Legacy,
            _ => Match::No,
        }
    }
}

/// Result of comparing a reservation's owner with an [`Owner`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// Same container ID and ifname.
    Exact,
    /// A legacy (container ID only) reservation of the same container.
    Legacy,
    /// Someone else.
    No,
}

/// The owner as read from a reservation file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOwner {
    /// Container ID.
    pub id: String,
    /// Interface name; `None` for legacy files holding only the container ID.
    pub ifname: Option<String>,
}

impl StoredOwner {
    /// The owner index key of this stored owner (exact or legacy).
    pub fn key(&self) -> u64 {
        match &self.ifname {
            Some(ifname) => index::exact_key(&self.id, ifname),
            None => index::legacy_key(&self.id),
        }
    }

    /// Parses reservation file contents (whitespace around them is ignored, as by the reference).
    pub fn parse(contents: &str) -> StoredOwner {
        let t = contents.trim();
        match t.split_once(LINE_BREAK) {
            Some((id, ifname)) => StoredOwner {
                id: id.to_string(),
                ifname: Some(ifname.to_string()),
            },
            None => StoredOwner {
                id: t.to_string(),
                ifname: None,
            },
        }
    }
}

/// One reservation file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// File name in the network directory.
    pub name: String,
    /// Its owner, if read (and readable).
    pub owner: Option<StoredOwner>,
}

/// The contents of the network directory, from one directory read.
#[derive(Debug, Default)]
pub struct Listing {
    /// Reservation files by address.
    pub reservations: HashMap<IpAddr, Reservation>,
    /// Left-over temporary files.
    pub temps: Vec<String>,
}

/// The reservations of one owner, and what else is known to be taken.
#[derive(Debug, Default)]
pub struct Owned {
    /// Reservations of exactly this (container ID, ifname): address and file name.
    pub exact: Vec<(IpAddr, String)>,
    /// Legacy (container ID only) reservations of its container.
    pub legacy: Vec<(IpAddr, String)>,
    /// Addresses known to be reserved by anyone: every one after a scan, none when the answer
    /// came from the index (reservation attempts then find out, with `EEXIST`).
    pub taken: BTreeSet<IpAddr>,
}

impl Owned {
    /// True when the owner holds nothing, exact or legacy.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.legacy.is_empty()
    }

    fn from_listing(listing: &Listing, owner: &Owner) -> Owned {
        let mut owned = Owned {
            taken: listing.reservations.keys().copied().collect(),
            ..Owned::default()
        };
        for (ip, r) in &listing.reservations {
            match r.owner.as_ref().map(|o| owner.matches(o)) {
                Some(Match::Exact) => owned.exact.push((*ip, r.name.clone())),
                Some(Match::Legacy) => owned.legacy.push((*ip, r.name.clone())),
                _ => {}
            }
        }
        owned
    }
}

/// A cursor file opened for reading, kept to write the new cursor through the same descriptor.
#[derive(Debug)]
struct OpenCursor {
    set: usize,
    file: File,
    /// Length of the contents read.
    len: u64,
}

/// An open, locked network directory. The lock is released when the store is dropped, after
/// the owner index was brought up to date.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    index: RefCell<Index>,
    cursors: RefCell<Vec<OpenCursor>>,
    /// The last unnamed reservation file and its contents (see [`Store::link_unnamed`]).
    unnamed: RefCell<Option<(File, Vec<u8>)>>,
    _lock: File,
}

impl Drop for Store {
    fn drop(&mut self) {
        self.index.get_mut().commit(&self.dir);
    }
}

impl Store {
    /// Opens the network directory `dir` and takes the exclusive lock on `dir/lock`, waiting
    /// at most `lock_wait` while another twill or reference host-local holds it (code 11
    /// after). With `create`, missing directories are created (mode 0700); without, a missing
    /// directory gives `Ok(None)`. `index_dir` is where the owner index lives (`None`: no
    /// index, always scan).
    pub fn open(
        dir: &Path,
        create: bool,
        index_dir: Option<&Path>,
        lock_wait: Duration,
    ) -> Result<Option<Store>> {
        let lock_path = dir.join(LOCK_FILE);
        let open_lock = || {
            crate::file::open(
                &lock_path,
                nix::libc::O_RDWR | nix::libc::O_CREAT | nix::libc::O_NOFOLLOW,
                FILE_MODE as nix::libc::mode_t,
            )
        };
        let lock = match open_lock() {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound && create => {
                DirBuilder::new()
                    .recursive(true)
                    .mode(DIR_MODE)
                    .create(dir)
                    .map_err(|e| {
                        Error::io(format!("create IPAM data directory {}", dir.display()), e)
                    })?;
                open_lock()
                    .map_err(|e| Error::io(format!("open lock file {}", lock_path.display()), e))?
            }
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::io(
                    format!("open lock file {}", lock_path.display()),
                    e,
                ));
            }
        };
        lock_exclusive(&lock, &lock_path, lock_wait)?;
        let index = match index_dir {
            Some(d) => Index::load(d, dir),
            None => Index::disabled(),
        };
        Ok(Some(Store {
            dir: dir.to_path_buf(),
            index: RefCell::new(index),
            cursors: RefCell::new(Vec::new()),
            unnamed: RefCell::new(None),
            _lock: lock,
        }))
    }

    /// The reservations of `owner` (exact and legacy). The owner index only proposes: its
    /// answer is used when the index is valid, every entry it names was verified by reading
    /// its file, and `complete` accepts the verified answer as the whole truth (a caller that
    /// knows the owner must hold one address per range set says so there). Otherwise (or when
    /// an entry fails verification) the answer comes from a full scan, which also rebuilds the
    /// index if it proved wrong.
    pub fn owned(&self, owner: &Owner, complete: impl Fn(&Owned) -> bool) -> Result<Owned> {
        if let Some(owned) = self.owned_from_index(owner)
            && complete(&owned)
        {
            return Ok(owned);
        }
        Ok(Owned::from_listing(&self.list(true)?, owner))
    }

    /// [`Store::owned`] from the index, verified; `None` when it is not valid or proves wrong.
    fn owned_from_index(&self, owner: &Owner) -> Option<Owned> {
        let (exact_key, legacy_key) = (owner.key(), index::legacy_key(owner.id));
        let hits = self.index.borrow().lookup(&[exact_key, legacy_key])?;
        let mut owned = Owned::default();
        for e in hits {
            let want = if e.key == exact_key {
                Match::Exact
            } else {
                Match::Legacy
            };
            let stored = read_owner(&self.dir.join(&e.name));
            match (e.name.parse::<IpAddr>(), stored.map(|s| owner.matches(&s))) {
                (Ok(ip), Some(m)) if m == want => {
                    let list = if m == Match::Exact {
                        &mut owned.exact
                    } else {
                        &mut owned.legacy
                    };
                    list.push((ip.to_canonical(), e.name));
                }
                _ => {
                    self.index.borrow_mut().contradicted();
                    return None;
                }
            }
        }
        Some(owned)
    }

    /// Every reserved address, from the owner index when it is known complete (no directory
    /// read); `None` when it is not.
    pub fn indexed_addresses(&self) -> Option<Vec<IpAddr>> {
        self.index.borrow().reserved_addresses()
    }

    /// The owner of reservation `ip`, read from its file (`None`: not reserved or unreadable).
    pub fn holder(&self, ip: IpAddr) -> Option<StoredOwner> {
        read_owner(&self.dir.join(ip.to_string()))
    }

    /// The network directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the directory once: reservation files (address-named) and left-over temporaries.
    /// With `owners`, each reservation file is read too (unreadable ones get `owner: None`), and
    /// the owner index is rebuilt from what was read when the store is dropped.
    pub fn list(&self, owners: bool) -> Result<Listing> {
        let mut listing = Listing::default();
        let entries = fs::read_dir(&self.dir)
            .map_err(|e| Error::io(format!("read IPAM directory {}", self.dir.display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(format!("read {}", self.dir.display()), e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.starts_with(TEMP_PREFIX) {
                listing.temps.push(name);
                continue;
            }
            let Ok(ip) = name.parse::<IpAddr>() else {
                continue;
            };
            let owner = if owners {
                read_owner(&entry.path())
            } else {
                None
            };
            listing
                .reservations
                .insert(ip.to_canonical(), Reservation { name, owner });
        }
        if owners {
            let entries: Option<Vec<Entry>> = listing
                .reservations
                .values()
                .map(|r| {
                    r.owner.as_ref().map(|o| Entry {
                        key: o.key(),
                        name: r.name.clone(),
                    })
                })
                .collect();
            self.index.borrow_mut().scanned(entries);
        }
        Ok(listing)
    }

    fn temp_path(&self) -> PathBuf {
        self.dir
            .join(format!("{TEMP_PREFIX}{}", std::process::id()))
    }

    /// Writes `contents` to this process's temporary file (mode 0644), returning its path.
    fn write_temp(&self, contents: &[u8]) -> Result<PathBuf> {
        let tmp = self.temp_path();
        self.index.borrow_mut().touched();
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(FILE_MODE)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&tmp)?;
            f.write_all(contents)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::io(format!("write {}", tmp.display()), e)
        })?;
        Ok(tmp)
    }

    /// Reserves `ip` for `owner`: `Ok(true)` when the reservation file was created, `Ok(false)`
    /// when the address is already reserved. The file appears atomically with its contents.
    pub fn reserve(&self, ip: IpAddr, owner: &Owner) -> Result<bool> {
        let contents = owner.file_contents();
        let name = ip.to_string();
        let target = self.dir.join(&name);
        let linked = match self.link_unnamed(contents.as_bytes(), &target) {
            Some(linked) => linked,
            None => self.reserve_named(contents.as_bytes(), &target)?,
        };
        let mut index = self.index.borrow_mut();
        if linked {
            index.reserved(&name, owner.key());
        } else {
            index.exists(&name);
        }
        Ok(linked)
    }

    /// The fallback of [`Store::reserve`]: a named temporary file, linked to `target`.
    fn reserve_named(&self, contents: &[u8], target: &Path) -> Result<bool> {
        let tmp = self.write_temp(contents)?;
        let linked = fs::hard_link(&tmp, target);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(Error::io(format!("reserve {}", target.display()), e)),
        }
    }

    /// Writes `contents` to an unnamed file in the directory and links it to `target`.
    /// `Some(true)`: linked; `Some(false)`: `target` exists; `None`: this path did not work here
    /// (no `O_TMPFILE` support, no `/proc`, or another failure), so the caller falls back to a
    /// named temporary file, which reports the failure if it is real.
    ///
    /// The unnamed file is kept for the next reservation of this operation: when its contents
    /// are the same (the next candidate after a taken address, or the same owner's address in
    /// another range set) it is linked again, so a dual-stack ADD makes one inode with two
    /// names (hard links with the same contents, which both plugins only ever read and remove)
    /// and a run of taken candidates costs no file creation each.
    fn link_unnamed(&self, contents: &[u8], target: &Path) -> Option<bool> {
        let mut cached = self.unnamed.borrow_mut();
        let reused = cached.as_ref().is_some_and(|(_, c)| c == contents);
        if !reused {
            *cached = Some((self.unnamed_file(contents)?, contents.to_vec()));
        }
        let link = |file: &File| {
            // The descriptor itself first (AT_EMPTY_PATH: no walk through /proc, which costs a
            // proc inode per call); without CAP_DAC_READ_SEARCH that is ENOENT, and then the
            // /proc/self/fd link says the same as before.
            match link_fd(file, target) {
                Err(nix::errno::Errno::ENOENT | nix::errno::Errno::EPERM) => {}
                done => return done,
            }
            let magic = format!("/proc/self/fd/{}", file.as_raw_fd());
            nix::unistd::linkat(
                AT_FDCWD,
                magic.as_str(),
                AT_FDCWD,
                target,
                AtFlags::AT_SYMLINK_FOLLOW,
            )
        };
        let mut result = link(&cached.as_ref()?.0);
        if reused && result == Err(nix::errno::Errno::ENOENT) {
            // its names were all removed again (a rollback): an unlinked inode cannot get one
            let file = self.unnamed_file(contents)?;
            result = link(&file);
            *cached = Some((file, contents.to_vec()));
        }
        match result {
            Ok(()) => Some(true),
            Err(nix::errno::Errno::EEXIST) => Some(false),
            Err(_) => {
                *cached = None;
                None
            }
        }
    }

    /// A new unnamed file in the directory holding `contents`.
    fn unnamed_file(&self, contents: &[u8]) -> Option<File> {
        let mut file = crate::file::open(
            &self.dir,
            nix::libc::O_WRONLY | nix::libc::O_TMPFILE,
            FILE_MODE as nix::libc::mode_t,
        )
        .ok()?;
        file.write_all(contents).ok()?;
        Some(file)
    }

    /// Releases the reservations of earlier boots, once per boot: when [`BOOT_FILE`] does not
    /// name `boot`, removes every reservation file (and left-over temporary file) last
    /// modified before `boot` began, narrows the directory to mode 0700, and records `boot`.
    /// Returns the number of reservations released.
    ///
    /// The owner index remembers the boot under which it last found or made the boot file
    /// right ([`Index::boot_checked_under`]): while the directory is unchanged since, the
    /// boot file is not read (no earlier boot's reservation can have appeared without
    /// changing the directory, which invalidates the index).
    pub fn release_earlier_boots(&self, boot: &Boot) -> Result<usize> {
        let hash = index::boot_hash(&boot.id);
        if self.index.borrow().boot_checked_under(hash) {
            return Ok(0);
        }
        let path = self.dir.join(BOOT_FILE);
        let contents = boot.file_contents();
        if read_small(&path).is_some_and(|b| b == contents.as_bytes()) {
            self.index.borrow_mut().boot_checked(hash);
            return Ok(0);
        }
        // without the boot time nothing is known to be older: the boot is still recorded
        let began = boot.began().unwrap_or(std::time::UNIX_EPOCH);
        let listing = self.list(false)?;
        let older = |name: &str| {
            fs::symlink_metadata(self.dir.join(name))
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < began)
        };
        let mut released = 0;
        for r in listing.reservations.values() {
            if older(&r.name) {
                self.remove(&r.name)?;
                released += 1;
            }
        }
        for t in &listing.temps {
            if older(t) {
                self.remove(t)?;
            }
        }
        let narrow = || -> std::io::Result<()> {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&self.dir)?.permissions().mode();
            if mode & 0o077 != 0 {
                fs::set_permissions(&self.dir, fs::Permissions::from_mode(mode & !0o077))?;
            }
            Ok(())
        };
        narrow()
            .map_err(|e| Error::io(format!("restrict {} to mode 0700", self.dir.display()), e))?;
        // a new file changes the directory; rewriting one in place does not
        self.index.borrow_mut().touched();
        let write = || -> std::io::Result<()> {
            let file = open_replacing_symlink(&path)?;
            file.write_all_at(contents.as_bytes(), 0)?;
            file.set_len(contents.len() as u64)
        };
        write().map_err(|e| Error::io(format!("write {}", path.display()), e))?;
        self.index.borrow_mut().boot_checked(hash);
        Ok(released)
    }

    /// Removes the file `name` of the network directory; a missing file is fine.
    pub fn remove(&self, name: &str) -> Result<()> {
        let path = self.dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("remove {}", path.display()), e)),
        }
        self.index.borrow_mut().removed(name);
        Ok(())
    }

    /// The round-robin cursor of range set `set`, if present and an address. The file stays
    /// open for [`Store::set_cursor`].
    pub fn cursor(&self, set: usize) -> Option<IpAddr> {
        let path = self.dir.join(format!("{CURSOR_PREFIX}{set}"));
        let mut file =
            crate::file::open(&path, nix::libc::O_RDWR | nix::libc::O_NOFOLLOW, 0).ok()?;
        let bytes = read_some(&mut file)?;
        self.cursors.borrow_mut().push(OpenCursor {
            set,
            file,
            len: bytes.len() as u64,
        });
        let text = std::str::from_utf8(&bytes).ok()?;
        text.trim()
            .parse::<IpAddr>()
            .ok()
            .map(|ip| ip.to_canonical())
    }

    /// Stores `ip` as the cursor of range set `set`: the same bytes the reference writes, but
    /// overwritten in place and shortened only when the old text was longer, because truncating
    /// to zero and rewriting makes ext4 flush the file on close (`auto_da_alloc`), which costs
    /// milliseconds. A torn cursor only costs one round-robin step (it is then ignored).
    pub fn set_cursor(&self, set: usize, ip: IpAddr) -> Result<()> {
        let path = self.dir.join(format!("{CURSOR_PREFIX}{set}"));
        let text = ip.to_string();
        let new_len = text.len() as u64;
        let opened = {
            let mut cursors = self.cursors.borrow_mut();
            cursors
                .iter()
                .position(|c| c.set == set)
                .map(|i| cursors.swap_remove(i))
        };
        if opened.is_none() {
            // the file may be created
            self.index.borrow_mut().touched();
        }
        let write = || -> std::io::Result<()> {
            let (file, old_len) = match opened {
                Some(c) => (c.file, Some(c.len)),
                None => (open_replacing_symlink(&path)?, None),
            };
            file.write_all_at(text.as_bytes(), 0)?;
            let old_len = match old_len {
                Some(n) => n,
                None => file.metadata()?.len(),
            };
            if old_len > new_len {
                file.set_len(new_len)?;
            }
            Ok(())
        };
        write().map_err(|e| Error::io(format!("write {}", path.display()), e))
    }
}

/// Reads a reservation file's owner; `None` when it cannot be read.
/// `linkat(fd, "", AT_FDCWD, target, AT_EMPTY_PATH)`: gives the open unnamed file `file` the
/// name `target`.
fn link_fd(file: &File, target: &Path) -> nix::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let target = std::ffi::CString::new(target.as_os_str().as_bytes())
        .map_err(|_| nix::errno::Errno::EINVAL)?;
    // SAFETY: both strings are NUL-terminated and live for the call.
    let r = unsafe {
        nix::libc::linkat(
            file.as_raw_fd(),
            c"".as_ptr(),
            nix::libc::AT_FDCWD,
            target.as_ptr(),
            nix::libc::AT_EMPTY_PATH,
        )
    };
    nix::errno::Errno::result(r).map(drop)
}

fn read_owner(path: &Path) -> Option<StoredOwner> {
    read_small(path).map(|b| StoredOwner::parse(&String::from_utf8_lossy(&b)))
}

/// Reads a file that is normally tiny (an owner, a cursor); `None` when it cannot be read or
/// is a symlink (never followed).
fn read_small(path: &Path) -> Option<Vec<u8>> {
    let mut file = crate::file::open(path, nix::libc::O_RDONLY | nix::libc::O_NOFOLLOW, 0).ok()?;
    read_some(&mut file)
}

/// Opens twill's own file `path` for writing (created with mode 0600 when missing), never
/// through a symlink: a symlink found there is removed and a regular file made in its place.
fn open_replacing_symlink(path: &Path) -> std::io::Result<File> {
    let open = || {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)
    };
    match open() {
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            fs::remove_file(path)?;
            open()
        }
        other => other,
    }
}

/// Reads an open, normally tiny file with a single `read` (more only when it is longer than
/// anything twill or the reference writes).
fn read_some(file: &mut File) -> Option<Vec<u8>> {
    let mut buf = [0u8; 512];
    let n = file.read(&mut buf).ok()?;
    let mut all = buf[..n].to_vec();
    if n == buf.len() {
        file.read_to_end(&mut all).ok()?;
    }
    Some(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_reservation_paths_write_whole_files() {
        let dir = std::env::temp_dir().join(format!("twill-store-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let store = Store::open(&dir, true, None, Duration::from_secs(5))
            .unwrap()
            .unwrap();
        let owner = Owner {
            id: "c1",
            ifname: "eth0",
        };
        let a: IpAddr = "10.0.0.2".parse().unwrap();
        let b: IpAddr = "fd00::2".parse().unwrap();
        assert!(store.reserve(a, &owner).unwrap());
        assert!(
            !store
                .reserve(
                    a,
                    &Owner {
                        id: "c2",
                        ifname: "eth0"
                    }
                )
                .unwrap()
        );
        assert!(
            store
                .reserve_named(b"c1\r\neth0", &dir.join(b.to_string()))
                .unwrap()
        );
        assert!(
            !store
                .reserve_named(b"c2\r\neth0", &dir.join(b.to_string()))
                .unwrap()
        );
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let read = |n: &str| fs::read(dir.join(n)).unwrap();
        let (ra, rb) = (read("10.0.0.2"), read("fd00::2"));
        let listing = store.list(true).unwrap();
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            names,
            ["10.0.0.2", "fd00::2", "lock"],
            "temporary file left behind"
        );
        assert_eq!(ra, b"c1\r\neth0");
        assert_eq!(rb, b"c1\r\neth0");
        assert_eq!(listing.reservations.len(), 2);
        assert!(listing.temps.is_empty());
        let o = listing.reservations[&b].owner.clone().unwrap();
        assert_eq!((o.id.as_str(), o.ifname.as_deref()), ("c1", Some("eth0")));
    }

    #[test]
    fn one_owner_shares_an_inode_and_rollback_is_safe() {
        use std::os::unix::fs::MetadataExt;
        let dir = std::env::temp_dir().join(format!("twill-share-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let store = Store::open(&dir, true, None, Duration::from_secs(5))
            .unwrap()
            .unwrap();
        let a = Owner {
            id: "a",
            ifname: "eth0",
        };
        let b = Owner {
            id: "b",
            ifname: "eth0",
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(store.reserve(ip("10.0.0.2"), &a).unwrap());
        assert!(!store.reserve(ip("10.0.0.2"), &a).unwrap());
        assert!(store.reserve(ip("fd00::2"), &a).unwrap());
        assert!(store.reserve(ip("10.0.0.3"), &b).unwrap());
        let meta = |n: &str| fs::metadata(dir.join(n)).unwrap();
        let (m4, m6, mb) = (meta("10.0.0.2"), meta("fd00::2"), meta("10.0.0.3"));
        // a rollback removes both names of a's inode; a's next reservation still works
        store.remove("10.0.0.3").unwrap();
        assert!(store.reserve(ip("10.0.0.4"), &b).unwrap());
        store.remove("10.0.0.4").unwrap();
        assert!(store.reserve(ip("10.0.0.4"), &b).unwrap());
        let read = |n: &str| fs::read(dir.join(n)).unwrap();
        let contents = [read("10.0.0.2"), read("fd00::2"), read("10.0.0.4")];
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!((m4.ino(), m4.nlink()), (m6.ino(), 2));
        assert_ne!(m4.ino(), mb.ino());
        assert_eq!(mb.nlink(), 1);
        assert_eq!(contents[0], b"a\r\neth0");
        assert_eq!(contents[1], b"a\r\neth0");
        assert_eq!(contents[2], b"b\r\neth0");
    }

    #[test]
    fn cursor_rewrite_is_exact() {
        let dir = std::env::temp_dir().join(format!("twill-cursor-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let store = Store::open(&dir, true, None, Duration::from_secs(5))
            .unwrap()
            .unwrap();
        let mut seen = Vec::new();
        for ip in [
            "10.88.0.100",
            "10.88.0.99",
            "fd00::1234",
            "10.88.1.1",
            "10.88.1.10",
        ] {
            store.set_cursor(3, ip.parse().unwrap()).unwrap();
            seen.push((
                fs::read(dir.join("last_reserved_ip.3")).unwrap(),
                store.cursor(3),
            ));
        }
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
        for ((bytes, parsed), want) in seen.into_iter().zip([
            "10.88.0.100",
            "10.88.0.99",
            "fd00::1234",
            "10.88.1.1",
            "10.88.1.10",
        ]) {
            assert_eq!(bytes, want.as_bytes());
            assert_eq!(parsed, Some(want.parse().unwrap()));
        }
    }

    #[test]
    fn owner_contents_and_matching() {
        let o = Owner {
            id: " abc ",
            ifname: "eth0",
        };
        assert_eq!(o.file_contents(), "abc\r\neth0");
        assert_eq!(o.matches(&StoredOwner::parse("abc\r\neth0")), Match::Exact);
        assert_eq!(
            o.matches(&StoredOwner::parse("abc\r\neth0\n")),
            Match::Exact
        );
        assert_eq!(o.matches(&StoredOwner::parse("abc\r\neth1")), Match::No);
        assert_eq!(o.matches(&StoredOwner::parse("abc")), Match::Legacy);
        assert_eq!(o.matches(&StoredOwner::parse("abc\n")), Match::Legacy);
        assert_eq!(o.matches(&StoredOwner::parse("abcd")), Match::No);
        assert_eq!(o.matches(&StoredOwner::parse("")), Match::No);
    }
}
