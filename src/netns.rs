//! Network namespaces: open and validate one, and run work inside it.
//!
//! Switching happens on a short-lived thread, never on the caller's thread: `setns` affects
//! only the calling thread, the thread ends with the work, and so nothing ever has to be
//! switched back (a failed switch-back is how plugins end up doing host work in a pod).

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};

use crate::error::{Code, Error, Result};

/// `ioctl(fd, NS_GET_NSTYPE)` (linux/nsfs.h: `_IO(0xb7, 0x3)`), Linux 4.11+.
const NS_GET_NSTYPE: u64 = 0xb703;

#[derive(Debug)]
pub struct Netns {
    file: File,
    path: PathBuf,
}

impl Netns {
    /// Open `path` and make sure it is a network namespace (not a plain file, not another
    /// kind of namespace), before anything is changed anywhere.
    pub fn open(path: &Path) -> Result<Netns> {
        // O_NONBLOCK: a FIFO given as the namespace fails below instead of blocking the open.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(path)
            .map_err(|e| {
                let code = if e.kind() == std::io::ErrorKind::NotFound {
                    Code::UnknownContainer
                } else {
                    Code::Internal
                };
                Error::os(code, &e).context(format!("open netns {}", path.display()))
            })?;
        // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd's namespace type;
        // on a non-nsfs fd it fails with ENOTTY, which we report.
        let kind = unsafe { nix::libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
        if kind != CloneFlags::CLONE_NEWNET.bits() {
            return Err(Error::new(
                Code::Internal,
                format!("{} is not a network namespace", path.display()),
            ));
        }
        Ok(Netns {
            file,
            path: path.to_path_buf(),
        })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Run `f` on a fresh thread that has entered this namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        self.run_while(|| Ok(()), f, || ()).1
    }

    /// On a fresh thread, run `here` in the caller's namespace, then enter this one and run
    /// `f`, while the calling thread, which stays where it is, runs `meanwhile`; the three
    /// results are returned.
    pub fn run_while<H: Send, T: Send, R>(
        &self,
        here: impl FnOnce() -> Result<H> + Send,
        f: impl FnOnce() -> Result<T> + Send,
        meanwhile: impl FnOnce() -> R,
    ) -> (Result<H>, Result<T>, R) {
        let fd = self.fd();
        std::thread::scope(|s| {
            let handle = s.spawn(move || {
                let h = here();
                let t = setns(fd, CloneFlags::CLONE_NEWNET)
                    .map_err(|e| {
                        Error::os(Code::Internal, &std::io::Error::from(e))
                            .context(format!("enter netns {}", self.path.display()))
                    })
                    .and_then(|()| f());
                (h, t)
            });
            let r = meanwhile();
            let (h, t) = handle.join().unwrap_or_else(|_| {
                let panicked = || Error::new(Code::Internal, "netns worker thread panicked");
                (Err(panicked()), Err(panicked()))
            });
            (h, t, r)
        })
    }
}
