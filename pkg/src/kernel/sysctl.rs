//! sysctl through /proc/sys of the calling thread's network namespace.
//!
//! /proc/sys/net resolves to the namespace of the thread that opens the file, so inside
//! [`crate::kernel::netns::Netns::run`] these act on that namespace. Keys are either dotted
//! (`net.ipv4.ip_forward`) or, for names containing dots such as `eth0.5`, in path form
//! (`net/ipv4/conf/eth0.5/arp_notify`).

use std::io::{Read, Write};
use std::path::PathBuf;

use crate::error::{Error, Result};

/// The /proc/sys file of `key`; code 7 for an empty key or one with empty, `.` or `..`
/// components (no escaping /proc/sys).
pub fn path(key: &str) -> Result<PathBuf> {
    let rel: String = if key.contains('/') {
        key.to_string()
    } else {
        key.replace('.', "/")
    };
    let bad = rel.is_empty()
        || rel.starts_with('/')
        || rel.contains('\0')
        || rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(Error::invalid_config(format!(
            "invalid sysctl key {key:?}: want a.b.c or a/b/c without empty, '.' or '..' parts"
        )));
    }
    Ok(PathBuf::from("/proc/sys").join(rel))
}

/// Writes `value` to the sysctl `key` (code 5 naming the key on failure).
pub fn set(key: &str, value: &str) -> Result<()> {
    let p = path(key)?;
    let mut f = crate::file::open(&p, nix::libc::O_WRONLY, 0)
        .map_err(|e| Error::io(format!("open sysctl {key} ({})", p.display()), e))?;
    f.write_all(value.as_bytes())
        .map_err(|e| Error::io(format!("set sysctl {key}={value}"), e))
}

/// Reads the sysctl `key`, without the trailing newline (code 5 naming the key on failure).
/// One open and, for a value of up to 64 bytes (every per-device and forwarding setting), one
/// read.
pub fn get(key: &str) -> Result<String> {
    let p = path(key)?;
    let fail = |e| Error::io(format!("read sysctl {key} ({})", p.display()), e);
    let mut f = crate::file::open_read(&p).map_err(fail)?;
    let mut buf = Vec::with_capacity(64);
    let mut chunk = [0u8; 64];
    loop {
        match f.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                // procfs answers a short value in one read: no second read for its end.
                if n < chunk.len() && buf.ends_with(b"\n") {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(fail(e)),
        }
    }
    let mut s = String::from_utf8(buf).map_err(|_| {
        Error::io(
            format!("read sysctl {key} ({})", p.display()),
            std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"),
        )
    })?;
    while s.ends_with('\n') {
        s.pop();
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::code;

    #[test]
    fn key_forms() {
        assert_eq!(
            path("net.ipv4.ip_forward").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(
            path("net/ipv4/conf/eth0.5/arp_notify").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0.5/arp_notify")
        );
        for bad in [
            "",
            ".",
            "net..ipv4",
            "/etc/passwd",
            "net/../../etc/passwd",
            "net/ipv4/",
            "a/./b",
        ] {
            assert_eq!(path(bad).unwrap_err().code, code::INVALID_CONFIG, "{bad}");
        }
    }

    #[test]
    fn missing_key_is_io_error_naming_it() {
        let e = get("net.ipv4.tw_no_such_key").unwrap_err();
        assert_eq!(e.code, code::IO);
        assert!(e.msg.contains("net.ipv4.tw_no_such_key"), "{e}");
    }
}
