//! Reading the node files a config points at (the flannel subnet file, the cluster view) as
//! input that may be hostile: only regular files, never a blocking open, never past a size cap.
//! A symlink to `/dev/zero`, a FIFO or a directory is refused instead of hanging the plugin.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The whole content of the regular file at `path`, at most `cap` bytes.
///
/// Opens without blocking (a FIFO answers at once), then refuses anything that is not a
/// regular file and anything longer than `cap` bytes, with an `InvalidData` error saying why.
/// A file that fits costs one positioned read and the one that sees its end: no `fstat`. A
/// FIFO, socket or directory fails the positioned read (ESPIPE, EISDIR); a device reads empty
/// or past the cap. Those outcomes, and only they, ask `fstat` whether the file is regular.
pub fn read_capped(path: &Path, cap: usize) -> io::Result<Vec<u8>> {
    let file = crate::file::open(path, nix::libc::O_RDONLY | nix::libc::O_NONBLOCK, 0)?;
    match read_to_cap(&file, cap) {
        Ok(bytes) if !bytes.is_empty() => Ok(bytes),
        res => {
            if !file.metadata()?.is_file() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "is not a regular file",
                ));
            }
            res
        }
    }
}

/// Like [`read_capped`], as UTF-8 text.
pub fn read_capped_text(path: &Path, cap: usize) -> io::Result<String> {
    String::from_utf8(read_capped(path, cap)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "is not UTF-8 text"))
}

/// The first buffer: a node file fits in one read.
const FIRST_READ: usize = 4096;

/// Positioned reads from offset 0 until end of file, at most `cap + 1` bytes (one more tells
/// "too large"); the buffer grows by doubling only for files larger than [`FIRST_READ`].
fn read_to_cap(file: &File, cap: usize) -> io::Result<Vec<u8>> {
    let limit = cap.saturating_add(1);
    let mut buf = vec![0u8; limit.min(FIRST_READ)];
    let mut len = 0;
    loop {
        if len == buf.len() {
            if len >= limit {
                break;
            }
            buf.resize(len.saturating_mul(2).min(limit), 0);
        }
        match file.read_at(&mut buf[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if len > cap {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("is larger than {cap} bytes"),
        ));
    }
    buf.truncate(len);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_a_fifo_a_directory_and_an_oversized_file_are_refused_and_files_read_whole() {
        let dir = std::env::temp_dir().join(format!("twill-input-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let big = dir.join("big");
        std::fs::write(&big, vec![b'x'; 100]).unwrap();
        assert_eq!(read_capped(&big, 100).unwrap().len(), 100);
        let grown = dir.join("grown");
        let text: Vec<u8> = (0..3 * FIRST_READ + 7)
            .map(|i| b'a' + (i % 26) as u8)
            .collect();
        std::fs::write(&grown, &text).unwrap();
        assert_eq!(read_capped(&grown, text.len()).unwrap(), text);
        let e = read_capped(&big, 99).unwrap_err();
        assert!(e.to_string().contains("larger than 99"), "{e}");
        let e = read_capped(Path::new("/dev/zero"), 10).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let e = read_capped(&dir, 10).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let empty = dir.join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(read_capped(&empty, 10).unwrap(), b"");
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = read_capped(&fifo, 10).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
