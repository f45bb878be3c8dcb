//! JSON-lines logs, one file per plugin (`azure-vnet.log`, `azure-vnet-ipam.log`), like
//! upstream's zap loggers. Never on stdout (that is the CNI result channel), and a log that
//! cannot be written never fails the plugin.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use serde_json::{Map, Value};

use crate::encoding::rfc3339_nano;

/// Upstream rotates with lumberjack at 5 MB and keeps 8 backups (spec B.6.2): the defaults.
pub const DEFAULT_MAX_BYTES: u64 = 5 * 1024 * 1024;
pub const DEFAULT_BACKUPS: u32 = 8;

/// How much to log: lines below the level are dropped (an operation's outcome line never is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    /// `debug`, `info`, `warn`/`warning`, `error`, any case; anything else is `info` (a log
    /// setting never fails a pod).
    pub fn parse(s: &str) -> Level {
        match s.to_ascii_lowercase().as_str() {
            "debug" => Level::Debug,
            "warn" | "warning" => Level::Warn,
            "error" => Level::Error,
            _ => Level::Info,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// Where and how much a plugin logs (see `Settings`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub dir: PathBuf,
    pub level: Level,
    /// Rotate when the file reaches this size; keep this many rotated files.
    pub max_bytes: u64,
    pub backups: u32,
}

pub struct Logger {
    file: Option<Mutex<File>>,
    base: Map<String, Value>,
    level: Level,
}

impl Logger {
    /// A logger that drops everything (the command-line tool, tests, fuzzing).
    pub fn discard() -> Logger {
        Logger {
            file: None,
            base: Map::new(),
            level: Level::Error,
        }
    }

    /// Open `<dir>/<plugin>.log` for appending (0644), rotating it first if it is too big.
    /// Any failure gives a logger that drops lines.
    pub fn open(cfg: &LogConfig, plugin: &str) -> Logger {
        let path = cfg.dir.join(format!("{plugin}.log"));
        let file = open_rotated(&path, cfg.max_bytes, cfg.backups).ok();
        let mut base = Map::new();
        base.insert("pid".into(), Value::from(std::process::id()));
        base.insert("plugin".into(), Value::from(plugin));
        Logger {
            file: file.map(Mutex::new),
            base,
            level: cfg.level,
        }
    }

    pub fn debug(&self, msg: &str, fields: &[(&str, Value)]) {
        self.write(Level::Debug, msg, fields);
    }

    /// An operation's outcome (`done`, `failed`): written at any level (it is what `azure-vnet
    /// metrics` counts).
    pub fn outcome(&self, level: Level, msg: &str, fields: &[(&str, Value)]) {
        self.line(level, msg, fields);
    }

    /// Fields every later line carries (command, container ID).
    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.base.insert(key.into(), value.into());
    }

    pub fn info(&self, msg: &str, fields: &[(&str, Value)]) {
        self.write(Level::Info, msg, fields);
    }

    pub fn warn(&self, msg: &str, fields: &[(&str, Value)]) {
        self.write(Level::Warn, msg, fields);
    }

    pub fn error(&self, msg: &str, fields: &[(&str, Value)]) {
        self.write(Level::Error, msg, fields);
    }

    /// Whether lines at `level` are written (to skip building costly fields).
    pub fn enabled(&self, level: Level) -> bool {
        self.file.is_some() && level >= self.level
    }

    fn write(&self, level: Level, msg: &str, fields: &[(&str, Value)]) {
        if level >= self.level {
            self.line(level, msg, fields);
        }
    }

    fn line(&self, level: Level, msg: &str, fields: &[(&str, Value)]) {
        let Some(file) = &self.file else { return };
        let level = level.as_str();
        let mut line = Map::new();
        line.insert("time".into(), Value::from(rfc3339_nano(SystemTime::now())));
        line.insert("level".into(), Value::from(level));
        line.insert("msg".into(), Value::from(msg));
        for (k, v) in &self.base {
            line.insert(k.clone(), v.clone());
        }
        for (k, v) in fields {
            line.insert((*k).to_string(), v.clone());
        }
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        // One write(2) per line on an O_APPEND file: lines from concurrent plugins never
        // interleave. Errors are deliberately ignored (a full /var/log must not fail a pod).
        if let Ok(mut f) = file.lock() {
            let _ = f.write_all(text.as_bytes());
        }
    }
}

/// Where an operation's time went: named laps, logged as `{"phasesMs": {...}}`.
pub struct Stopwatch {
    last: Instant,
    laps: Map<String, Value>,
}

impl Stopwatch {
    pub fn start() -> Stopwatch {
        Stopwatch {
            last: Instant::now(),
            laps: Map::new(),
        }
    }

    /// Close the current phase under `name` (time since the previous lap); the same name twice
    /// adds up.
    pub fn lap(&mut self, name: &str) {
        let now = Instant::now();
        let ms = (now - self.last).as_secs_f64() * 1e3;
        self.last = now;
        let prev = self.laps.get(name).and_then(Value::as_f64).unwrap_or(0.0);
        self.laps.insert(name.to_string(), Value::from(prev + ms));
    }

    pub fn field(&self) -> (&'static str, Value) {
        ("phasesMs", Value::Object(self.laps.clone()))
    }
}

/// The log and its size, if it is a regular file (O_NONBLOCK: a FIFO in its place is skipped,
/// never waited on; see `files`).
fn open_append(path: &Path) -> std::io::Result<(File, u64)> {
    use nix::fcntl::OFlag;
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(path)?;
    let size = crate::files::regular_size(&file)?;
    Ok((file, size))
}

fn open_rotated(path: &Path, max_bytes: u64, backups: u32) -> std::io::Result<File> {
    let (file, size) = match open_append(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            open_append(path)?
        }
        other => other?,
    };
    if size < max_bytes {
        return Ok(file);
    }
    // Only one process rotates: the one that gets the flock. Others keep appending to the
    // file they opened; the next invocation opens the fresh one.
    if fs2::FileExt::try_lock_exclusive(&file).is_err() {
        return Ok(file);
    }
    // Someone may have rotated between our open and our lock: only rotate the file that is
    // still at `path`.
    let same = std::fs::symlink_metadata(path)
        .map(|m| m.ino() == file.metadata().map(|f| f.ino()).unwrap_or(0))
        .unwrap_or(false);
    if same {
        let backup = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
        for n in (1..backups.max(1)).rev() {
            let _ = std::fs::rename(backup(n), backup(n + 1));
        }
        let _ = std::fs::rename(path, backup(1));
    }
    let _ = fs2::FileExt::unlock(&file);
    open_append(path).map(|(f, _)| f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_json_with_base_fields() {
        let dir = tempdir();
        let mut log = Logger::open(&cfg(&dir), "azure-vnet-ipam");
        log.set("command", "ADD");
        log.info("allocated", &[("ip", Value::from("10.224.0.5"))]);
        log.warn("second", &[]);
        let text = std::fs::read_to_string(dir.join("azure-vnet-ipam.log")).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["msg"], "allocated");
        assert_eq!(lines[0]["command"], "ADD");
        assert_eq!(lines[0]["ip"], "10.224.0.5");
        assert_eq!(lines[0]["pid"], std::process::id());
        assert_eq!(lines[1]["level"], "warn");
        let mode = std::fs::metadata(dir.join("azure-vnet-ipam.log"))
            .unwrap()
            .mode()
            & 0o777;
        assert_eq!(mode & 0o022, 0, "not group/world writable");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unwritable_log_dir_is_silently_ignored() {
        let log = Logger::open(&cfg(Path::new("/proc/definitely/not/here")), "x");
        log.info("dropped", &[]);
    }

    #[test]
    fn rotates_when_big() {
        let dir = tempdir();
        let path = dir.join("p.log");
        std::fs::write(&path, vec![b'x'; DEFAULT_MAX_BYTES as usize]).unwrap();
        let log = Logger::open(&cfg(&dir), "p");
        log.info("fresh", &[]);
        assert!(std::fs::metadata(dir.join("p.log.1")).unwrap().len() >= DEFAULT_MAX_BYTES);
        assert!(std::fs::metadata(&path).unwrap().len() < 1000);
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn cfg(dir: &Path) -> LogConfig {
        LogConfig {
            dir: dir.to_path_buf(),
            level: Level::Info,
            max_bytes: DEFAULT_MAX_BYTES,
            backups: DEFAULT_BACKUPS,
        }
    }

    #[test]
    fn levels_filter_lines_but_never_an_outcome() {
        let dir = tempdir();
        let log = Logger::open(
            &LogConfig {
                level: Level::parse("WARN"),
                max_bytes: 100,
                backups: 2,
                ..cfg(&dir)
            },
            "lv",
        );
        log.debug("d", &[]);
        log.info("i", &[]);
        log.warn("w", &[]);
        log.outcome(Level::Info, "done", &[]);
        let text = std::fs::read_to_string(dir.join("lv.log")).unwrap();
        let msgs: Vec<String> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["msg"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(msgs, ["w", "done"]);
        assert_eq!(Level::parse("bogus"), Level::Info);
        // Rotation at the configured size, with the configured number of backups.
        let small = LogConfig {
            max_bytes: 100,
            backups: 2,
            ..cfg(&dir)
        };
        for i in 0..4 {
            drop(Logger::open(&small, "lv"));
            if i < 3 {
                std::fs::write(dir.join("lv.log"), vec![b'x'; 150]).unwrap();
            }
        }
        assert!(dir.join("lv.log.1").exists() && dir.join("lv.log.2").exists());
        assert!(!dir.join("lv.log.3").exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "azv-log-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
