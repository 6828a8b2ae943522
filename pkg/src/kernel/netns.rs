//! Network namespaces: open by path, enter and return (scoped, per thread), identify.
//!
//! setns(2) changes the namespace of the calling *thread* only; [`Netns::run`] enters a
//! namespace on the current thread, runs a closure and always returns to the namespace the
//! thread was in before. Sockets opened inside stay in that namespace afterwards, which is how
//! [`crate::kernel::netlink::Netlink::new_in`] works.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::libc;
use nix::sched::{CloneFlags, setns};
use nix::sys::stat::fstat;
use nix::sys::statfs::{NSFS_MAGIC, fstatfs};

use crate::error::{Error, Result, code};

/// The calling thread's own network namespace file.
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// An open network namespace (an fd on its nsfs file) and its identity.
#[derive(Debug)]
pub struct Netns {
    file: File,
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Netns {
    /// Opens the network namespace at `path` (e.g. `/var/run/netns/x`, `/proc/PID/ns/net`).
    /// Code 5 (I/O) when it cannot be opened, code 7 (invalid config) when it is not a
    /// network namespace file.
    pub fn open(path: &Path) -> Result<Netns> {
        let file = crate::file::open_read(path)
            .map_err(|e| Error::io(format!("open network namespace {}", path.display()), e))?;
        Self::from_file(file, path)
    }

    /// Like [`Netns::open`], but Ok(None) when nothing is at `path` (one open, no stat first).
    pub fn open_present(path: &Path) -> Result<Option<Netns>> {
        match crate::file::open_read(path) {
            Ok(file) => Self::from_file(file, path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(
                format!("open network namespace {}", path.display()),
                e,
            )),
        }
    }

    /// Like [`Netns::open`], but Ok(None) when the path is gone or no longer a namespace
    /// (what an idempotent DEL tolerates).
    pub fn open_if_exists(path: &Path) -> Result<Option<Netns>> {
        match crate::file::open_read(path) {
            Ok(file) => match Self::from_file(file, path) {
                Ok(ns) => Ok(Some(ns)),
                Err(e) if e.code == code::INVALID_CONFIG => Ok(None),
                Err(e) => Err(e),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(
                format!("open network namespace {}", path.display()),
                e,
            )),
        }
    }

    /// The calling thread's current network namespace (an open and a stat: the kernel's own
    /// file needs no check that it is a network namespace).
    pub fn current() -> Result<Netns> {
        let path = Path::new(THREAD_NETNS);
        let file = crate::file::open_read(path)
            .map_err(|e| Error::io(format!("open network namespace {THREAD_NETNS}"), e))?;
        let st = fstat(&file).map_err(|e| Error::io(format!("stat {THREAD_NETNS}"), e.into()))?;
        Ok(Netns {
            file,
            path: path.to_path_buf(),
            dev: st.st_dev,
            ino: st.st_ino,
        })
    }

    fn from_file(file: File, path: &Path) -> Result<Netns> {
        let what = || format!("network namespace {}", path.display());
        let fs = fstatfs(&file).map_err(|e| Error::io(format!("statfs {}", what()), e.into()))?;
        if fs.filesystem_type() != NSFS_MAGIC {
            return Err(Error::invalid_config(format!(
                "{} is not a namespace file",
                path.display()
            )));
        }
        // NS_GET_NSTYPE (kernel >= 4.11): refuse mount/pid/... namespaces.
        const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
        let ty = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
        if ty >= 0 && ty != libc::CLONE_NEWNET {
            return Err(Error::invalid_config(format!(
                "{} is a namespace file, but not a network namespace",
                path.display()
            )));
        }
        let st = fstat(&file).map_err(|e| Error::io(format!("stat {}", what()), e.into()))?;
        Ok(Netns {
            file,
            path: path.to_path_buf(),
            dev: st.st_dev,
            ino: st.st_ino,
        })
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The nsfs fd (e.g. for IFLA_NET_NS_FD).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Identity of the namespace: (device, inode) of its nsfs file; equal ids = same namespace.
    pub fn id(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }

    /// Whether this is the calling thread's current network namespace.
    pub fn is_current(&self) -> Result<bool> {
        let st = nix::sys::stat::stat(THREAD_NETNS)
            .map_err(|e| Error::io(format!("stat {THREAD_NETNS}"), e.into()))?;
        Ok((st.st_dev, st.st_ino) == self.id())
    }

    /// Enters this namespace on the calling thread, runs `f`, and returns to the thread's
    /// previous namespace (directly, without setns, when this already is the current one).
    ///
    /// Failing to enter is an error (code 5) and `f` does not run. Failing to return is also
    /// returned as an error (code 5) after `f` ran: the thread is then in an unknown state and
    /// the caller must treat it as fatal (a plugin exits with the error). If `f` panics, the
    /// return is attempted while unwinding and the process aborts if it fails.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> Result<T> {
        let home = Netns::current()?;
        if home.id() == self.id() {
            return Ok(f());
        }
        setns(self.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| {
            Error::io(
                format!("enter network namespace {}", self.path.display()),
                e.into(),
            )
        })?;
        let guard = ReturnGuard { home: &home };
        let out = f();
        std::mem::forget(guard);
        return_home(&home).map_err(|e| {
            Error::io(
                format!(
                    "return to network namespace {} after {} (fatal: thread left in the wrong namespace)",
                    home.path.display(),
                    self.path.display()
                ),
                e.into(),
            )
        })?;
        Ok(out)
    }

    /// The namespace cookie (SO_NETNS_COOKIE of a socket made inside it): a 64-bit id the
    /// kernel never reuses within a boot, unlike inode numbers. Kernel >= 5.14.
    pub fn cookie(&self) -> Result<u64> {
        self.socket_inside()
            .and_then(|s| socket_netns_cookie(s.as_raw_fd()))
            .map_err(|e| {
                Error::io(
                    format!(
                        "SO_NETNS_COOKIE of network namespace {}",
                        self.path.display()
                    ),
                    e,
                )
            })
    }

    /// The key naming this namespace in state files: its cookie, or on kernels without
    /// SO_NETNS_COOKIE its nsfs identity ([`Netns::id`]). Equal to
    /// [`crate::kernel::netlink::Netlink::netns_key`] of a socket in the same namespace.
    pub fn key(&self) -> Result<NetnsKey> {
        let cookie = self
            .socket_inside()
            .and_then(|s| socket_netns_cookie(s.as_raw_fd()));
        key_or_fallback(cookie, || Ok(self.id())).map_err(|e| {
            Error::io(
                format!("identify network namespace {}", self.path.display()),
                e,
            )
        })
    }

    /// A datagram socket created inside this namespace (to ask the kernel about it).
    fn socket_inside(&self) -> std::io::Result<OwnedFd> {
        self.run(|| {
            let fd =
                unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(unsafe { OwnedFd::from_raw_fd(fd) })
            }
        })
        .map_err(|e| std::io::Error::other(e.to_string()))?
    }
}

/// How often returning to the thread's own namespace is tried before giving up: a failure
/// there (a transient ENOMEM) would leave the thread, and every rollback after it, in the
/// pod's namespace.
const RETURN_ATTEMPTS: usize = 3;

/// setns back to `home`, retried up to [`RETURN_ATTEMPTS`] times; the last error otherwise.
fn return_home(home: &Netns) -> nix::Result<()> {
    let mut last = Ok(());
    for _ in 0..RETURN_ATTEMPTS {
        last = setns(home.as_fd(), CloneFlags::CLONE_NEWNET);
        if last.is_ok() {
            break;
        }
    }
    last
}

/// Returns the thread to its namespace if the closure in [`Netns::run`] unwinds.
struct ReturnGuard<'a> {
    home: &'a Netns,
}

impl Drop for ReturnGuard<'_> {
    fn drop(&mut self) {
        if return_home(self.home).is_err() {
            // Unwinding with the thread in a foreign namespace: nothing safe is left to do.
            std::process::abort();
        }
    }
}

/// What names a network namespace in run-state file names: its cookie where the kernel has
/// SO_NETNS_COOKIE (5.14+; never reused within a boot), else the (device, inode) of its nsfs
/// file (reused only after the namespace is gone; stale state is pruned by inode liveness).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NetnsKey {
    /// SO_NETNS_COOKIE.
    Cookie(u64),
    /// The nsfs (st_dev, st_ino) of the namespace.
    Inode {
        /// st_dev of the nsfs file.
        dev: u64,
        /// st_ino of the nsfs file.
        ino: u64,
    },
}

impl std::fmt::Display for NetnsKey {
    /// `c<cookie hex>` or `i<dev hex>-<ino hex>`: file-name safe, and the two never collide.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetnsKey::Cookie(c) => write!(f, "c{c:016x}"),
            NetnsKey::Inode { dev, ino } => write!(f, "i{dev:x}-{ino:x}"),
        }
    }
}

impl std::str::FromStr for NetnsKey {
    type Err = ();
    /// Parses what [`NetnsKey`]'s `Display` writes.
    fn from_str(s: &str) -> std::result::Result<NetnsKey, ()> {
        let hex = |t: &str| u64::from_str_radix(t, 16).map_err(|_| ());
        if let Some(c) = s.strip_prefix('c') {
            return Ok(NetnsKey::Cookie(hex(c)?));
        }
        let (dev, ino) = s
            .strip_prefix('i')
            .and_then(|r| r.split_once('-'))
            .ok_or(())?;
        Ok(NetnsKey::Inode {
            dev: hex(dev)?,
            ino: hex(ino)?,
        })
    }
}

/// The key of the namespace a socket lives in: its cookie, or on kernels without
/// SO_NETNS_COOKIE (ENOPROTOOPT) the nsfs identity from [`socket_netns_inode`].
pub(crate) fn socket_netns_key(fd: i32) -> std::io::Result<NetnsKey> {
    key_or_fallback(socket_netns_cookie(fd), || socket_netns_inode(fd))
}

/// The cookie as key, or the nsfs identity when the kernel has no SO_NETNS_COOKIE
/// (ENOPROTOOPT, before 5.14); other errors are errors.
fn key_or_fallback(
    cookie: std::io::Result<u64>,
    inode: impl FnOnce() -> std::io::Result<(u64, u64)>,
) -> std::io::Result<NetnsKey> {
    match cookie {
        Ok(c) => Ok(NetnsKey::Cookie(c)),
        Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => {
            let (dev, ino) = inode()?;
            Ok(NetnsKey::Inode { dev, ino })
        }
        Err(e) => Err(e),
    }
}

/// The (st_dev, st_ino) of the namespace a socket lives in: SIOCGSKNS (kernel 4.9+) gives an
/// nsfs fd of it, which is stat'ed and closed.
pub(crate) fn socket_netns_inode(fd: i32) -> std::io::Result<(u64, u64)> {
    const SIOCGSKNS: libc::c_ulong = 0x894C;
    let ns = unsafe { libc::ioctl(fd, SIOCGSKNS as _) };
    if ns < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let ns = unsafe { OwnedFd::from_raw_fd(ns) };
    let st = fstat(&ns).map_err(std::io::Error::from)?;
    Ok((st.st_dev, st.st_ino))
}

/// SO_NETNS_COOKIE of a socket: the cookie of the namespace the socket was created in.
pub(crate) fn socket_netns_cookie(fd: i32) -> std::io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cookie)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_is_current_and_run_is_direct() {
        let ns = Netns::current().unwrap();
        assert!(ns.is_current().unwrap());
        assert_eq!(ns.run(|| 7).unwrap(), 7);
        assert!(ns.cookie().unwrap() > 0);
    }

    #[test]
    fn socket_inode_is_the_namespace_identity_and_keys_round_trip() {
        let ns = Netns::current().unwrap();
        let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0);
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        assert_eq!(socket_netns_inode(sock.as_raw_fd()).unwrap(), ns.id());
        assert_eq!(
            socket_netns_key(sock.as_raw_fd()).unwrap(),
            NetnsKey::Cookie(ns.cookie().unwrap())
        );
        assert_eq!(ns.key().unwrap(), NetnsKey::Cookie(ns.cookie().unwrap()));
    }

    #[test]
    fn without_so_netns_cookie_the_key_is_the_nsfs_identity() {
        // What a kernel before 5.14 answers to SO_NETNS_COOKIE.
        let old_kernel = || Err(std::io::Error::from_raw_os_error(libc::ENOPROTOOPT));
        let ns = Netns::current().unwrap();
        let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0);
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let key = key_or_fallback(old_kernel(), || socket_netns_inode(sock.as_raw_fd())).unwrap();
        let (dev, ino) = ns.id();
        assert_eq!(key, NetnsKey::Inode { dev, ino });
        let e = key_or_fallback(Err(std::io::Error::from_raw_os_error(libc::EBADF)), || {
            unreachable!("only ENOPROTOOPT falls back")
        });
        assert!(e.is_err());
        for k in [
            NetnsKey::Cookie(0xabc),
            NetnsKey::Inode {
                dev: 4,
                ino: 0xf0000000,
            },
        ] {
            assert_eq!(k.to_string().parse::<NetnsKey>(), Ok(k));
        }
        assert_eq!(NetnsKey::Inode { dev: 4, ino: 255 }.to_string(), "i4-ff");
        for bad in ["", "x1", "c", "i4", "i-1", "czz"] {
            assert!(bad.parse::<NetnsKey>().is_err(), "{bad}");
        }
    }

    #[test]
    fn open_rejects_non_namespace_and_missing() {
        let e = Netns::open(Path::new("/proc/self/status")).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(
            Netns::open_if_exists(Path::new("/proc/self/status"))
                .unwrap()
                .is_none()
        );
        assert!(
            Netns::open_if_exists(Path::new("/run/netns/tw-does-not-exist"))
                .unwrap()
                .is_none()
        );
        assert_eq!(
            Netns::open(Path::new("/run/netns/tw-does-not-exist"))
                .unwrap_err()
                .code,
            code::IO
        );
        // A namespace file of another type is refused too.
        let e = Netns::open(Path::new("/proc/self/ns/mnt")).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG, "{e}");
    }
}
