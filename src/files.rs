//! Reading files that must be regular files (configs, the runtime's cache entries, logs, the
//! metrics cursor): anything else in their place is an error, never a wait. They are opened
//! with O_NONBLOCK, because opening a FIFO for reading otherwise blocks until a writer comes
//! (for ever, in a plugin the runtime is waiting on); the flag changes nothing for a regular
//! file. The type is then checked on the open file, and a read is bounded.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::fcntl::OFlag;

/// `path` opened for reading, if it is a regular file (symlinks followed).
pub fn open_regular(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).bits())
        .open(path)?;
    regular_size(&file)?;
    Ok(file)
}

/// The size of a file opened O_NONBLOCK, if it is a regular one; anything else is an error.
pub fn regular_size(file: &File) -> io::Result<u64> {
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(meta.len())
}

/// The whole of `path`, a regular file of at most `limit` bytes.
pub fn read_regular(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let file = open_regular(path)?;
    let size = file.metadata().map_or(0, |m| m.len().min(limit));
    let mut bytes = Vec::with_capacity(size as usize + 1);
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes"),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_limit_are_read_and_nothing_waits() {
        let d = crate::store::tests::tempdir("files");
        let file = d.join("file");
        std::fs::write(&file, b"12345").unwrap();
        let fifo = d.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRUSR).unwrap();
        let link = d.join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        // (path, limit, Ok(bytes) or the error's kind)
        type Want = Result<&'static [u8], io::ErrorKind>;
        let cases: [(&Path, u64, Want); 6] = [
            (&file, 5, Ok(b"12345")),
            (&file, 4, Err(io::ErrorKind::InvalidData)),
            (&link, 5, Ok(b"12345")),
            (&fifo, 5, Err(io::ErrorKind::InvalidInput)),
            (&d, 5, Err(io::ErrorKind::InvalidInput)),
            (Path::new("/dev/zero"), 5, Err(io::ErrorKind::InvalidInput)),
        ];
        for (path, limit, want) in cases {
            let got = read_regular(path, limit);
            match want {
                Ok(b) => assert_eq!(got.unwrap(), b, "{}", path.display()),
                Err(kind) => assert_eq!(got.unwrap_err().kind(), kind, "{}", path.display()),
            }
        }
        assert_eq!(
            read_regular(&d.join("missing"), 5).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
