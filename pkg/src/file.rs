//! Opening files with one system call: `openat(AT_FDCWD, path, flags | O_CLOEXEC, mode)`.
//! std's `File::open` goes through libc's `open`, which musl follows with
//! `fcntl(F_SETFD, FD_CLOEXEC)` on every call (for kernels that ignored `O_CLOEXEC`, older
//! than 2.6.23); its `openat` does not. Every open on the ADD path goes through here.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::libc;

/// Opens `path` with `flags` (`O_RDONLY`, `O_WRONLY | O_CREAT | O_NOFOLLOW`, ...; `O_CLOEXEC`
/// is always added) and, when it creates a file, `mode`: one `openat` system call.
pub fn open(path: &Path, flags: libc::c_int, mode: libc::mode_t) -> io::Result<File> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    loop {
        // SAFETY: `c` is a NUL-terminated path that outlives the call.
        let fd = unsafe {
            libc::openat(
                libc::AT_FDCWD,
                c.as_ptr(),
                flags | libc::O_CLOEXEC,
                libc::c_uint::from(mode),
            )
        };
        if fd >= 0 {
            // SAFETY: a fresh descriptor that nothing else owns.
            return Ok(unsafe { File::from_raw_fd(fd) });
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// [`open`] read-only.
pub fn open_read(path: &Path) -> io::Result<File> {
    open(path, libc::O_RDONLY, 0)
}

/// A close-on-exec duplicate of `fd` (numbered 3 or above): one `fcntl(F_DUPFD_CLOEXEC)`
/// system call, where musl's `fcntl` (and so std's `try_clone`) adds an `F_SETFD` after it.
pub fn dup_cloexec(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::AsRawFd;
    // SAFETY: F_DUPFD_CLOEXEC on a borrowed, open descriptor; the result is a fresh one.
    let new = unsafe {
        libc::syscall(
            libc::SYS_fcntl,
            fd.as_raw_fd(),
            libc::F_DUPFD_CLOEXEC,
            3 as libc::c_int,
        )
    };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    let new = libc::c_int::try_from(new)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "fcntl answered no fd"))?;
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(new) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn opens_close_on_exec_creates_with_the_mode_and_keeps_o_nofollow() {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("twill-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f");
        let mut f = open(&p, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o600).unwrap();
        f.write_all(b"abc").unwrap();
        let fd_flags = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(fd_flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let mut s = String::new();
        open_read(&p).unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "abc");
        let link = dir.join("l");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        let e = open(&link, libc::O_RDONLY | libc::O_NOFOLLOW, 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
        assert_eq!(
            open_read(&dir.join("missing")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_duplicate_is_close_on_exec_and_refers_to_the_same_file() {
        use std::os::fd::{AsFd, AsRawFd};
        let f = open_read(Path::new("/proc/self/stat")).unwrap();
        let d = dup_cloexec(f.as_fd()).unwrap();
        assert!(d.as_raw_fd() >= 3 && d.as_raw_fd() != f.as_raw_fd());
        let fd_flags = unsafe { libc::fcntl(d.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(fd_flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        let (a, b) = (
            nix::sys::stat::fstat(&f).unwrap(),
            nix::sys::stat::fstat(&d).unwrap(),
        );
        assert_eq!((a.st_dev, a.st_ino), (b.st_dev, b.st_ino));
    }
}
