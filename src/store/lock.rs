//! A kernel `flock` on a lock file, with a bounded wait.
//!
//! The lock dies with the process (no stale locks after a crash, unlike a pid file). Waiting is
//! a blocking `flock` on a helper thread, so waiters are woken by the kernel the moment the
//! holder closes, with no polling; if the deadline passes first we give up, and the helper
//! releases the lock itself if it ever gets it (its send fails and the file is dropped).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use fs2::FileExt;
use nix::fcntl::OFlag;

use crate::error::{Code, Context, Error, Result};

/// Held while alive; dropping it closes the file and so releases the lock.
#[derive(Debug)]
pub struct LockGuard {
    _file: File,
}

/// Create the lock directory (0755: never world-writable) if needed.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .with_context(|| format!("create lock directory {}", dir.display()))
}

pub fn open_lock_file(path: &Path) -> Result<File> {
    let open = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
            .open(path)
    };
    // The directory exists but on a node's first operation.
    match open() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                ensure_dir(dir)?;
            }
            open()
        }
        // A reader given the state read-only (the DaemonSet's metrics container, a debug pod)
        // can still lock an existing lock file: flock(2) does not care how the file was
        // opened. A writer there fails anyway, at its first write, with the same cause.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(nix::libc::EROFS | nix::libc::EACCES | nix::libc::EPERM)
            ) =>
        {
            // (O_NONBLOCK: a FIFO in its place must not block a read-only open; see `files`.)
            OpenOptions::new()
                .read(true)
                .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).bits())
                .open(path)
                .map_err(|_| e)
        }
        other => other,
    }
    .with_context(|| format!("open lock file {}", path.display()))
}

/// Take the exclusive lock on `path`, waiting at most `timeout`. A timeout is CNI error 11,
/// with upstream's wording so operators' alerts keep matching.
pub fn acquire(path: &Path, timeout: Duration) -> Result<LockGuard> {
    let file = open_lock_file(path)?;
    if file.try_lock_exclusive().is_ok() {
        return Ok(LockGuard { _file: file });
    }
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("flock-wait".into())
        .spawn(move || {
            let res = file.lock_exclusive().map(|_| file);
            // If nobody listens any more, dropping the file here releases the lock.
            let _ = tx.send(res);
        })
        .context("spawn lock waiter")?;
    match rx.recv_timeout(timeout) {
        Ok(Ok(file)) => Ok(LockGuard { _file: file }),
        Ok(Err(e)) => Err(Error::from(e).context(format!("lock {}", path.display()))),
        Err(_) => Err(Error::new(
            Code::TryAgainLater,
            format!(
                "error Acquiring store lock: timed out locking store {} after {} ms",
                path.display(),
                timeout.as_millis()
            ),
        )),
    }
}

/// Take the lock only if it is free right now (GC skips what an ADD is working on).
pub fn try_acquire(path: &Path) -> Result<Option<LockGuard>> {
    let file = open_lock_file(path)?;
    Ok(file
        .try_lock_exclusive()
        .ok()
        .map(|_| LockGuard { _file: file }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn second_locker_waits_then_times_out_with_code_11() {
        let dir = crate::store::tests::tempdir("lock");
        let path = dir.join("azure-vnet").join("x.lock");
        let held = acquire(&path, Duration::from_secs(1)).unwrap();
        let t = Instant::now();
        let e = acquire(&path, Duration::from_millis(150)).unwrap_err();
        assert!(t.elapsed() >= Duration::from_millis(150));
        assert_eq!(e.code(), Code::TryAgainLater);
        assert!(e.msg().contains("timed out locking store"), "{e}");
        drop(held);
        // The abandoned waiter must have released it (or never taken it).
        acquire(&path, Duration::from_secs(2)).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn waiter_gets_the_lock_when_the_holder_lets_go() {
        let dir = crate::store::tests::tempdir("lock2");
        let path = dir.join("y.lock");
        let held = acquire(&path, Duration::from_secs(1)).unwrap();
        let p2 = path.clone();
        let h = std::thread::spawn(move || acquire(&p2, Duration::from_secs(5)).map(|_| ()));
        std::thread::sleep(Duration::from_millis(50));
        drop(held);
        h.join().unwrap().unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }
}
