//! The JSON state files (`azure-vnet.json`, `azure-vnet-ipam.json`): one reader and one
//! writer for each, a kernel lock around read-modify-write, and crash-safe replacement.
//!
//! Writes go to a temp file, are fsync'd, renamed over the target, and the directory is
//! fsync'd, so after a crash the file is the old or the new version, never empty or torn
//! (upstream skips the fsyncs; AKS users saw empty state files after crashes, spec A.3.8).
//! The lock is held only for the read-modify-write, never across netlink or exec work.
//!
//! A state file older than the last boot describes pods that died with the boot: it is read
//! as if every pod had been deleted (upstream's IPAM does the same, `ipam/manager.go`
//! `restore`), and the next write records that.

pub(crate) mod lock;
pub(crate) mod schema;
pub(crate) mod shared;

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::fcntl::OFlag;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::encoding::{has_raw_token, rfc3339_nano, SERDE_RAW_TOKEN};
use crate::error::{Code, Context, Error, Result};
use crate::logging::Logger;

pub(crate) use lock::LockGuard;
use shared::Bytes;
pub(crate) use shared::RawJson;

/// No real state file comes near this (250 endpoints are ~600 KB); a bigger one is refused
/// rather than read into memory.
pub const MAX_STATE_BYTES: u64 = 64 << 20;

/// The `Version` we write into state files (upstream writes its build version there).
/// A build may set its own (`AZURE_VNET_VERSION=v1.2.3 scripts/build-release.sh`).
pub fn plugin_version() -> String {
    match option_env!("AZURE_VNET_VERSION") {
        Some(v) if !v.is_empty() => v.to_string(),
        _ => format!("v{}", env!("CARGO_PKG_VERSION")),
    }
}

/// A state file's top-level document.
pub trait StateFile: Serialize + DeserializeOwned + Default {
    /// Called before each write: upstream refreshes `Version` and `TimeStamp` on every save.
    fn stamp(&mut self, version: &str, timestamp: &str);
    /// The file predates the last boot, so every pod it names is gone: forget them, and say
    /// what was forgotten (for the log).
    fn forget_pods(&mut self) -> Vec<String>;
}

pub(crate) struct Store<'a> {
    path: PathBuf,
    lock_path: PathBuf,
    timeout: Duration,
    log: &'a Logger,
}

/// A state document, the version of the file it came from, and whether it must be written
/// back even if unchanged (the file predated the boot and pods were forgotten).
#[derive(Debug)]
pub(crate) struct Loaded<T> {
    pub value: T,
    stamp: Option<Stamp>,
    rewrite: bool,
}

impl<'a> Store<'a> {
    pub fn new(path: PathBuf, lock_path: PathBuf, timeout: Duration, log: &'a Logger) -> Self {
        Store {
            path,
            lock_path,
            timeout,
            log,
        }
    }

    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn lock(&self) -> Result<LockGuard> {
        lock::acquire(&self.lock_path, self.timeout)
    }

    /// Read without the lock: safe because writers replace the file atomically.
    pub fn load<T: StateFile>(&self) -> Result<Loaded<T>> {
        let (bytes, stamp) = read_bytes(&self.path)?;
        let mut value: T = parse_shared(&self.path, bytes)?;
        let mut rewrite = false;
        if stamp.is_some_and(|s| s.predates_boot()) {
            let forgotten = value.forget_pods();
            if !forgotten.is_empty() {
                rewrite = true;
                self.log.warn(
                    "the state file is older than the last boot: its pods died with the boot",
                    &[
                        ("stateFile", Value::from(self.path.display().to_string())),
                        ("forgotten", Value::from(forgotten)),
                    ],
                );
            }
        }
        Ok(Loaded {
            value,
            stamp,
            rewrite,
        })
    }

    /// Lock, read (or reuse `loaded` if the file is still that version), let `f` change the
    /// state, write it back if `f` says it changed, unlock. If `f` fails nothing is written.
    pub fn update<T: StateFile, R>(
        &self,
        loaded: Option<Loaded<T>>,
        f: impl FnOnce(&mut T) -> Result<(R, bool)>,
    ) -> Result<R> {
        let _guard = self.lock()?;
        let now = current_stamp(&self.path);
        let mut doc = match loaded {
            Some(l) if l.stamp == now => l,
            _ => self.load()?,
        };
        let (out, changed) = f(&mut doc.value)?;
        if changed || doc.rewrite {
            doc.value
                .stamp(&plugin_version(), &rfc3339_nano(SystemTime::now()));
            // Serialized straight into the temp file through a fixed buffer: no second copy of
            // a file that grows with the pods (in a process this short, fresh memory is paid
            // page by page).
            write_atomic_with(&self.path, |w| write_go_json(&doc.value, w))
                .with_context(|| format!("write state file {}", self.path.display()))?;
        }
        Ok(out)
    }
}

/// Identity of one version of a state file. Writers never modify a state file in place, they
/// replace it (a new inode), so the same identity means the same content. `None`: no file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    /// Whether the file was last written before this boot (what upstream compares).
    fn predates_boot(&self) -> bool {
        boot_time().is_some_and(|boot| self.mtime < boot)
    }
}

/// When this boot began, on the wall clock: now minus the time since boot, as the kernel
/// computes `btime` in /proc/stat (but to the nanosecond).
fn boot_time() -> Option<(i64, i64)> {
    use nix::time::{clock_gettime, ClockId};
    let now = clock_gettime(ClockId::CLOCK_REALTIME).ok()?;
    let up = clock_gettime(ClockId::CLOCK_BOOTTIME).ok()?;
    let boot = now - up;
    Some((boot.tv_sec(), boot.tv_nsec()))
}

fn stamp_of(m: &std::fs::Metadata) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    Stamp {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    }
}

fn current_stamp(path: &Path) -> Option<Stamp> {
    std::fs::symlink_metadata(path).ok().map(|m| stamp_of(&m))
}

/// `s` as a JSON string, quoted and escaped as serde_json writes it: what to search a
/// record's text for (container IDs and veth names, the only needles, are spelled the same by
/// every JSON writer).
pub(crate) fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// Missing or 0-byte file: empty state (upstream treats both as "no state"). Anything that
/// does not parse is an error naming the file; we never guess, and never overwrite it.
pub fn parse_state<T: StateFile>(path: &Path, bytes: &[u8]) -> Result<T> {
    if bytes.is_empty() {
        return Ok(T::default());
    }
    // Checked as UTF-8 once, so the searches below and the parser work on a `str`.
    let text = std::str::from_utf8(bytes).map_err(|e| corrupt(path, format!("not UTF-8: {e}")))?;
    let state = serde_json::from_str(text).map_err(|e| corrupt(path, e.to_string()))?;
    // serde_json's reserved key (see `encoding::has_raw_token`): our rewrite of such a file
    // would not read back. Spelling it needs "RawValue" or a \u escape, so most files skip this.
    if (text.contains("RawValue") || text.contains("\\u"))
        && serde_json::from_str(text).map_or(true, |v| has_raw_token(&v))
    {
        return Err(corrupt(
            path,
            format!("it holds the reserved key {SERDE_RAW_TOKEN:?}"),
        ));
    }
    Ok(state)
}

/// [`parse_state`] as [`Store::load`] does it: raw values in the document (endpoint records)
/// are views of `bytes`, which they keep alive.
fn parse_shared<T: StateFile>(path: &Path, bytes: Bytes) -> Result<T> {
    let bytes = std::sync::Arc::new(bytes);
    shared::parsing(&bytes, |b| parse_state(path, b))
}

/// For the fuzz targets: [`parse_shared`] of bytes in memory.
#[cfg(feature = "internals")]
pub fn parse_state_shared<T: StateFile>(path: &Path, bytes: Vec<u8>) -> Result<T> {
    parse_shared(path, Bytes::from_vec(bytes))
}

/// The file's bytes (empty when it does not exist) and its identity. Refuses symlinks and
/// non-regular files (opened O_NONBLOCK, so a FIFO is refused rather than waited on: see
/// `files`).
fn read_bytes(path: &Path) -> Result<(Bytes, Option<Stamp>)> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).bits())
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Ok((Bytes::from_vec(Vec::new()), None))
        }
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Err(Error::new(
                Code::Io,
                format!(
                    "state file {} is a symlink; refusing to follow it",
                    path.display()
                ),
            ))
        }
        Err(e) => return Err(Error::from(e).context(format!("read state file {}", path.display()))),
    };
    let meta = file
        .metadata()
        .with_context(|| format!("stat state file {}", path.display()))?;
    if !meta.is_file() {
        return Err(Error::new(
            Code::Io,
            format!("state file {} is not a regular file", path.display()),
        ));
    }
    if meta.len() > MAX_STATE_BYTES {
        return Err(corrupt(
            path,
            format!("it is larger than {MAX_STATE_BYTES} bytes"),
        ));
    }
    let bytes = Bytes::read(&file, meta.len() as usize, MAX_STATE_BYTES + 1)
        .with_context(|| format!("read state file {}", path.display()))?;
    Ok((bytes, Some(stamp_of(&meta))))
}

fn corrupt(path: &Path, why: String) -> Error {
    // Upstream answers an unloadable store with code 11 (spec B.1.2, B.6.1).
    Error::new(
        Code::TryAgainLater,
        format!(
            "state file {} is corrupt ({why}); it was left untouched: repair it or move it aside",
            path.display()
        ),
    )
}

/// Go's `json.MarshalIndent(v, "", "\t")`: tab-indented, no trailing newline (serde_json's
/// pretty formatter with a tab indent writes the same bytes).
pub fn to_go_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(4096);
    write_go_json(value, &mut out)?;
    Ok(out)
}

fn write_go_json<T: Serialize>(value: &T, w: &mut dyn Write) -> Result<()> {
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    value
        .serialize(&mut serde_json::Serializer::with_formatter(w, fmt))
        .map_err(|e| match e.io_error_kind() {
            // The file system's error (full, read-only) as it was, not ours.
            Some(_) => Error::from(std::io::Error::from(e)),
            None => Error::new(Code::Internal, format!("serialize state: {e}")),
        })
}

/// Temp file (0600) in the same directory, fsync, rename over `path`, fsync the directory.
/// The temp name is fixed: callers hold the store lock, so there is one writer at a time, and
/// a temp file left by a writer killed mid-way is simply replaced by the next one.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes).map_err(Error::from))
}

/// `write_atomic` of what `fill` writes (through a 64 KiB buffer).
fn write_atomic_with(path: &Path, fill: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| Error::new(Code::Io, "state path has no file name"))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(Error::from(e).context(format!("remove stale {}", tmp.display()))),
    }
    let result = (|| -> Result<()> {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
            .open(&tmp)?;
        let mut w = std::io::BufWriter::with_capacity(64 << 10, f);
        fill(&mut w)?;
        let f = w.into_inner().map_err(|e| Error::from(e.into_error()))?;
        f.sync_data()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // Make the rename durable. The new file is already in place and complete: a failure here
    // is not reported, or the caller would roll back an operation whose record is committed.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::{Map, Value};
    use std::os::unix::fs::PermissionsExt;

    pub fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "azv-store-{tag}-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn rand_suffix() -> u64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    }

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    struct Doc {
        #[serde(rename = "Counter", default)]
        counter: u64,
        #[serde(rename = "TimeStamp", default)]
        timestamp: String,
        #[serde(flatten)]
        extra: Map<String, Value>,
    }
    impl StateFile for Doc {
        fn stamp(&mut self, _v: &str, ts: &str) {
            self.timestamp = ts.to_string();
        }
        fn forget_pods(&mut self) -> Vec<String> {
            let n = std::mem::take(&mut self.counter);
            (n > 0)
                .then(|| format!("counter {n}"))
                .into_iter()
                .collect()
        }
    }

    static LOG: std::sync::LazyLock<Logger> = std::sync::LazyLock::new(Logger::discard);

    fn store(dir: &Path) -> Store<'static> {
        Store::new(
            dir.join("s.json"),
            dir.join("azure-vnet/s.lock"),
            Duration::from_secs(5),
            &LOG,
        )
    }

    #[test]
    fn missing_and_empty_files_are_empty_state() {
        let dir = tempdir("empty");
        let s = store(&dir);
        assert_eq!(s.load::<Doc>().unwrap().value, Doc::default());
        std::fs::write(s.path(), b"").unwrap();
        assert_eq!(s.load::<Doc>().unwrap().value, Doc::default());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn corrupt_files_are_errors_and_left_untouched() {
        let dir = tempdir("corrupt");
        let s = store(&dir);
        for bad in [
            &b"{\"Counter\": 1"[..],
            b"   \n",
            b"garbage",
            b"{\"Counter\":\"x\"}",
            b"\0\0\0",
            // Found by fuzzing: serde_json's reserved key, which our rewrite would sort first.
            br#"{"Counter":1,"X":{"a":1,"$serde_json::private::RawValue":"1"}}"#,
            br#"{"Counter":1,"X":[{"a":1,"\u0024serde_json::private::RawValue":"1"}]}"#,
        ] {
            std::fs::write(s.path(), bad).unwrap();
            let e = s.update(None, |d: &mut Doc| {
                d.counter += 1;
                Ok(((), true))
            });
            let e = e.unwrap_err();
            assert_eq!(e.code(), Code::TryAgainLater, "{e}");
            assert!(e.msg().contains("corrupt"), "{e}");
            assert_eq!(std::fs::read(s.path()).unwrap(), bad);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn escapes_and_the_word_rawvalue_still_load() {
        let dir = tempdir("rawword");
        let s = store(&dir);
        for ok in [
            &br#"{"Counter":1,"X":"\u003cRawValue\u003e"}"#[..],
            br#"{"Counter":1,"RawValue":{"$serde_json::private::RawValue":"[2]"}}"#,
        ] {
            std::fs::write(s.path(), ok).unwrap();
            assert_eq!(s.load::<Doc>().unwrap().value.counter, 1);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn update_round_trips_unknown_fields_and_writes_go_format() {
        let dir = tempdir("rt");
        let s = store(&dir);
        std::fs::write(
            s.path(),
            br#"{"Counter":1,"FutureField":{"x":[1,2]},"Other":"kept"}"#,
        )
        .unwrap();
        s.update(None, |d: &mut Doc| {
            d.counter += 1;
            Ok(((), true))
        })
        .unwrap();
        let text = std::fs::read_to_string(s.path()).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["Counter"], 2);
        assert_eq!(v["FutureField"]["x"][1], 2);
        assert_eq!(v["Other"], "kept");
        assert!(text.contains("\n\t\"Counter\": 2"), "tab-indented: {text}");
        assert!(
            !text.ends_with('\n'),
            "no trailing newline, like MarshalIndent"
        );
        let mode = std::fs::metadata(s.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unchanged_state_is_not_rewritten_and_failed_update_writes_nothing() {
        let dir = tempdir("nowrite");
        let s = store(&dir);
        s.update(None, |_: &mut Doc| Ok(((), false))).unwrap();
        assert!(!s.path().exists());
        let e = s.update(None, |d: &mut Doc| -> Result<((), bool)> {
            d.counter = 9;
            Err(Error::new(Code::Runtime, "nope"))
        });
        assert!(e.is_err());
        assert!(!s.path().exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn symlinked_state_file_is_refused() {
        let dir = tempdir("symlink");
        let s = store(&dir);
        let target = dir.join("elsewhere.json");
        std::fs::write(&target, br#"{"Counter":5}"#).unwrap();
        std::os::unix::fs::symlink(&target, s.path()).unwrap();
        let e = s.load::<Doc>().unwrap_err();
        assert!(e.msg().contains("symlink"), "{e}");
        let e = s.update(None, |d: &mut Doc| {
            d.counter = 0;
            Ok(((), true))
        });
        assert!(e.is_err());
        assert_eq!(std::fs::read(&target).unwrap(), br#"{"Counter":5}"#);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn stale_temp_file_from_a_killed_writer_is_replaced() {
        let dir = tempdir("stale");
        let s = store(&dir);
        let tmp = dir.join(".s.json.tmp");
        std::fs::write(&tmp, b"half a docu").unwrap();
        s.update(None, |d: &mut Doc| {
            d.counter = 3;
            Ok(((), true))
        })
        .unwrap();
        assert!(!tmp.exists());
        assert_eq!(s.load::<Doc>().unwrap().value.counter, 3);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn update_loaded_reuses_the_document_only_if_the_file_did_not_change() {
        let dir = tempdir("loaded");
        let s = store(&dir);
        s.update(None, |d: &mut Doc| {
            d.counter = 1;
            Ok(((), true))
        })
        .unwrap();
        // Unchanged file: the loaded document is used (we can tell: we altered it in memory).
        let mut l = s.load::<Doc>().unwrap();
        l.value
            .extra
            .insert("InMemoryOnly".into(), Value::from(true));
        s.update(Some(l), |d: &mut Doc| {
            assert!(d.extra.contains_key("InMemoryOnly"), "reused");
            Ok(((), false))
        })
        .unwrap();
        // Someone wrote in between: the file is read again.
        let l = s.load::<Doc>().unwrap();
        s.update(None, |d: &mut Doc| {
            d.counter = 5;
            Ok(((), true))
        })
        .unwrap();
        s.update(Some(l), |d: &mut Doc| {
            assert_eq!(d.counter, 5, "re-read after a concurrent write");
            Ok(((), false))
        })
        .unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_file_from_before_the_boot_forgets_its_pods_and_says_so_once_written() {
        let dir = tempdir("boot");
        let s = store(&dir);
        std::fs::write(s.path(), br#"{"Counter":7,"Other":"kept"}"#).unwrap();
        assert_eq!(
            s.load::<Doc>().unwrap().value.counter,
            7,
            "written in this boot"
        );
        let (boot, _) = boot_time().unwrap();
        let before = std::time::UNIX_EPOCH + Duration::from_secs((boot - 60) as u64);
        File::options()
            .write(true)
            .open(s.path())
            .unwrap()
            .set_modified(before)
            .unwrap();
        let l = s.load::<Doc>().unwrap();
        assert_eq!(l.value.counter, 0, "forgotten");
        assert_eq!(l.value.extra["Other"], "kept");
        // An update that changes nothing still writes the forgetting down, once.
        s.update(None, |_: &mut Doc| Ok(((), false))).unwrap();
        let text = std::fs::read_to_string(s.path()).unwrap();
        assert!(text.contains("\"Counter\": 0"), "{text}");
        assert!(
            !s.load::<Doc>().unwrap().rewrite,
            "the rewritten file is from this boot"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn concurrent_updates_lose_nothing() {
        let dir = tempdir("conc");
        let s = store(&dir);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    let s = store(&dir);
                    for _ in 0..25 {
                        s.update(None, |d: &mut Doc| {
                            d.counter += 1;
                            Ok(((), true))
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(s.load::<Doc>().unwrap().value.counter, 200);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
