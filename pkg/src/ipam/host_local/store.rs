//! The on-disk reservation store, byte-compatible with the reference host-local plugin.
//!
//! Layout of `<dataDir>/<network>/`:
//! - `<ip>` (IPv6 in its canonical text form): one file per reserved address, containing the
//!   owner as `<containerID>\r\n<ifname>` (no trailing newline); files of old reference
//!   versions contain only the container ID and are still recognised ("legacy").
//! - `last_reserved_ip.<range set index>`: the round-robin cursor, the address as text.
//! - `lock`: empty file locked with `flock(LOCK_EX)` around every operation, by this store and
//!   by the reference plugin alike, so both binaries exclude each other.
//! - `.twill-tmp-<pid>`: a temporary file, present only while an operation holds the lock; a
//!   left-over one (crash) is removed by GC and never taken for a reservation.
//!
//! A reservation is made by writing the owner to the temporary file and `link()`ing it to
//! `<ip>`: the name appears atomically with its full contents, and `EEXIST` means taken.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

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

/// An open, locked network directory. The lock is released when the store is dropped.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    _lock: File,
}

impl Store {
    /// Opens the network directory `dir` and takes the exclusive lock on `dir/lock` (blocking
    /// while another twill or reference host-local holds it). With `create`, missing
    /// directories are created (mode 0755); without, a missing directory gives `Ok(None)`.
    pub fn open(dir: &Path, create: bool) -> Result<Option<Store>> {
        if create {
            DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(|e| {
                    Error::io(format!("create IPAM data directory {}", dir.display()), e)
                })?;
        } else {
            match fs::metadata(dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(Error::new(
                        crate::error::code::IO,
                        format!("IPAM data path {} is not a directory", dir.display()),
                    ));
                }
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(Error::io(format!("stat {}", dir.display()), e)),
            }
        }
        let lock_path = dir.join(LOCK_FILE);
        // The reference creates the lock file with mode 0750 (before umask); keep it identical.
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o750)
            .open(&lock_path)
            .map_err(|e| Error::io(format!("open lock file {}", lock_path.display()), e))?;
        lock.lock()
            .map_err(|e| Error::io(format!("lock {}", lock_path.display()), e))?;
        Ok(Some(Store {
            dir: dir.to_path_buf(),
            _lock: lock,
        }))
    }

    /// The network directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the directory once: reservation files (address-named) and left-over temporaries.
    /// With `owners`, each reservation file is read too (unreadable ones get `owner: None`).
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
                fs::read(entry.path())
                    .ok()
                    .map(|b| StoredOwner::parse(&String::from_utf8_lossy(&b)))
            } else {
                None
            };
            listing
                .reservations
                .insert(ip.to_canonical(), Reservation { name, owner });
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
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o644)
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
        let tmp = self.write_temp(owner.file_contents().as_bytes())?;
        let target = self.dir.join(ip.to_string());
        let linked = fs::hard_link(&tmp, &target);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(Error::io(format!("reserve {}", target.display()), e)),
        }
    }

    /// Removes the file `name` of the network directory; a missing file is fine.
    pub fn remove(&self, name: &str) -> Result<()> {
        let path = self.dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("remove {}", path.display()), e)),
        }
    }

    /// The round-robin cursor of range set `set`, if present and an address.
    pub fn cursor(&self, set: usize) -> Option<IpAddr> {
        let text = fs::read_to_string(self.dir.join(format!("{CURSOR_PREFIX}{set}"))).ok()?;
        text.trim()
            .parse::<IpAddr>()
            .ok()
            .map(|ip| ip.to_canonical())
    }

    /// Stores `ip` as the cursor of range set `set` (written aside and renamed into place).
    pub fn set_cursor(&self, set: usize, ip: IpAddr) -> Result<()> {
        let tmp = self.write_temp(ip.to_string().as_bytes())?;
        let path = self.dir.join(format!("{CURSOR_PREFIX}{set}"));
        fs::rename(&tmp, &path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::io(format!("write {}", path.display()), e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
