//! Reading the node files a config points at (the flannel subnet file, the cluster view) as
//! input that may be hostile: only regular files, never a blocking open, never past a size cap.
//! A symlink to `/dev/zero`, a FIFO or a directory is refused instead of hanging the plugin.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The whole content of the regular file at `path`, at most `cap` bytes.
///
/// Opens without blocking (a FIFO answers at once), then refuses anything that is not a
/// regular file and anything longer than `cap` bytes, with an `InvalidData` error saying why.
pub fn read_capped(path: &Path, cap: usize) -> io::Result<Vec<u8>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "is not a regular file",
        ));
    }
    read_to_cap(file, cap)
}

/// Like [`read_capped`], as UTF-8 text.
pub fn read_capped_text(path: &Path, cap: usize) -> io::Result<String> {
    String::from_utf8(read_capped(path, cap)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "is not UTF-8 text"))
}

fn read_to_cap(file: File, cap: usize) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    file.take(cap as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > cap {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("is larger than {cap} bytes"),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_a_directory_and_an_oversized_file_are_refused() {
        let dir = std::env::temp_dir().join(format!("twill-input-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let big = dir.join("big");
        std::fs::write(&big, vec![b'x'; 100]).unwrap();
        assert_eq!(read_capped(&big, 100).unwrap().len(), 100);
        let e = read_capped(&big, 99).unwrap_err();
        assert!(e.to_string().contains("larger than 99"), "{e}");
        let e = read_capped(Path::new("/dev/zero"), 10).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let e = read_capped(&dir, 10).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
