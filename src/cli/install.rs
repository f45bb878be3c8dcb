//! `azure-vnet install` and `uninstall`: the plugin (one file under both names) and its
//! conflist on a node, as a DaemonSet's init container runs it, and as upstream's installer
//! (`dropgz deploy`) does not: every file staged under a temporary name in its directory and
//! fsync'd before any is renamed into place, binaries before the conflist (a runtime never sees
//! a conflist whose plugin is missing or older), directories fsync'd, identical files left
//! alone, the result read back before success is claimed. A read-only or full destination
//! fails while staging, before anything is renamed: the node stays exactly as it was.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

use crate::cli::{Options, Usage};
use crate::error::{Context, Error, Result};

const VNET: &str = "azure-vnet";
const IPAM: &str = crate::ipam::plugin::PLUGIN_NAME;
const CONFLIST: &str = "10-azure.conflist";
/// The seed's conflist (AKS): the default.
const DEFAULT_CONFLIST: &[u8] = include_bytes!("../../conflist/10-azure.conflist");

const INSTALL_HELP: &str = "\
usage: azure-vnet install [--bin-dir DIR] [--conf-dir DIR] [--conflist FILE] [--host-root DIR]

Puts this executable into the bin directory as azure-vnet and azure-vnet-ipam (one file, two
names: a hard link where the directory allows, else a copy), then the conflist into the conf
directory as 10-azure.conflist. Every file is written under a temporary name, fsync'd and
renamed over the old one; identical files are left untouched; what is on disk is read back
before success. Other files in those directories are never touched (but for temporary files
of an install killed mid-way, more than 10 minutes old).

  --bin-dir DIR     default /opt/cni/bin
  --conf-dir DIR    default /etc/cni/net.d
  --conflist FILE   default: the seed's conflist, built in
  --host-root DIR   a prefix for both directories (the host's / mounted in a container)
";

const UNINSTALL_HELP: &str = "\
usage: azure-vnet uninstall [--bin-dir DIR] [--conf-dir DIR] [--host-root DIR]

Removes 10-azure.conflist from the conf directory first (runtimes stop using the network),
then azure-vnet and azure-vnet-ipam from the bin directory. State files and logs stay.
";

/// The two directories, with the host root applied.
fn dirs(o: &Options) -> (PathBuf, PathBuf) {
    let root = o.path("host-root").cloned().unwrap_or_else(|| "/".into());
    let under = |p: PathBuf| root.join(p.strip_prefix("/").unwrap_or(&p));
    let bin = o
        .path("bin-dir")
        .cloned()
        .unwrap_or_else(|| "/opt/cni/bin".into());
    let conf = o
        .path("conf-dir")
        .cloned()
        .unwrap_or_else(|| "/etc/cni/net.d".into());
    (under(bin), under(conf))
}

pub(crate) fn install_cmd(p: &mut lexopt::Parser) -> std::result::Result<i32, Usage> {
    let o = Options::parse(p, &["bin-dir", "conf-dir", "conflist", "host-root"], &[])?;
    if o.help {
        print!("{INSTALL_HELP}");
        return Ok(0);
    }
    let (bin_dir, conf_dir) = dirs(&o);
    let run = || -> Result<Vec<(PathBuf, &'static str)>> {
        let conflist = match o.path("conflist") {
            Some(f) => crate::files::read_regular(f, crate::cni::config::MAX_STDIN as u64)
                .with_context(|| format!("read {}", f.display()))?,
            None => DEFAULT_CONFLIST.to_vec(),
        };
        check_conflist(&conflist).with_context(|| {
            o.path("conflist")
                .map_or("the built-in conflist".into(), |f| f.display().to_string())
        })?;
        let exe = std::fs::read("/proc/self/exe").context("read this executable")?;
        install(&bin_dir, &conf_dir, &exe, &conflist)
    };
    Ok(report("install", run()))
}

pub(crate) fn uninstall_cmd(p: &mut lexopt::Parser) -> std::result::Result<i32, Usage> {
    let o = Options::parse(p, &["bin-dir", "conf-dir", "host-root"], &[])?;
    if o.help {
        print!("{UNINSTALL_HELP}");
        return Ok(0);
    }
    let (bin_dir, conf_dir) = dirs(&o);
    Ok(report("uninstall", uninstall(&bin_dir, &conf_dir)))
}

/// Print what happened to each file (aligned), or the error; the exit status.
fn report(cmd: &str, r: Result<Vec<(PathBuf, &'static str)>>) -> i32 {
    match r {
        Ok(lines) => {
            let width = lines
                .iter()
                .map(|(p, _)| p.as_os_str().len())
                .max()
                .unwrap_or(0);
            for (path, what) in lines {
                println!("{:width$}  {what}", path.display());
            }
            0
        }
        Err(e) => {
            eprintln!("azure-vnet {cmd}: {}", e.msg());
            1
        }
    }
}

/// A conflist a runtime will load: a JSON object with a name and a list of plugins, each with
/// a type.
fn check_conflist(bytes: &[u8]) -> Result<()> {
    let bad = |why: String| Error::new(crate::error::Code::InvalidConfig, why);
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    if v["name"].as_str().is_none_or(|n| n.is_empty()) {
        return Err(bad("not a conflist: no \"name\"".into()));
    }
    let plugins = v["plugins"]
        .as_array()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| bad("not a conflist: no \"plugins\" list".into()))?;
    if plugins.iter().any(|p| !p["type"].is_string()) {
        return Err(bad("not a conflist: a plugin without \"type\"".into()));
    }
    Ok(())
}

/// A file written under a temporary name in its destination's directory, fsync'd, waiting to
/// be renamed into place.
struct Staged {
    tmp: PathBuf,
    dst: PathBuf,
}

/// Temporary files of a failed install are removed on the way out.
struct Stage(Vec<Staged>);

impl Drop for Stage {
    fn drop(&mut self) {
        for s in &self.0 {
            let _ = std::fs::remove_file(&s.tmp);
        }
    }
}

/// `.<name>.<unique>.tmp` beside `dst`. Unique per run, not per PID: in a container the
/// installer is always PID 1, and a run killed mid-install leaves its temporary files behind.
fn tmp_name(dst: &Path) -> PathBuf {
    use std::hash::{BuildHasher, Hasher};
    let name = dst.file_name().unwrap_or_default().to_string_lossy();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // std's hasher keys are random per process: 64 bits no other run shares.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(nanos);
    h.write_u32(std::process::id());
    dst.with_file_name(format!(".{name}.{:016x}.tmp", h.finish()))
}

/// Whether `file` is one of our temporary names for `name` (`.<name>.<16 hex>.tmp`).
fn is_tmp_of(file: &str, name: &str) -> bool {
    file.strip_prefix(&format!(".{name}."))
        .and_then(|r| r.strip_suffix(".tmp"))
        .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Temporary files that an install killed mid-way left (older than `STALE`: a running
/// install's are seconds old).
const STALE: std::time::Duration = std::time::Duration::from_secs(600);

fn remove_stale_tmps(dir: &Path, names: &[&str]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(file) = file.to_str() else { continue };
        let old = e
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE);
        if old && names.iter().any(|n| is_tmp_of(file, n)) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Write `content` with `mode` (owned by root when we are root) under a temporary name.
fn stage_file(dst: &Path, content: &[u8], mode: u32) -> Result<Staged> {
    let tmp = tmp_name(dst);
    let mut created = false;
    let mut write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
            .open(&tmp)?;
        created = true;
        f.write_all(content)?;
        // The mode exactly, whatever the umask; root's, as a runtime's plugins are.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::fchown(&f, Some(0), Some(0))?;
        }
        f.sync_all()
    };
    if let Err(e) = write() {
        // Only what this run created: a file already there under the name is not ours.
        if created {
            let _ = std::fs::remove_file(&tmp);
        }
        return Err(Error::from(e).context(format!("write {}", tmp.display())));
    }
    Ok(Staged {
        tmp,
        dst: dst.to_path_buf(),
    })
}

/// The second name of the binary: a hard link to `src` (so azure-vnet runs its IPAM
/// in-process), else, where the filesystem has no hard links, a copy.
fn stage_link(src: &Path, dst: &Path, content: &[u8]) -> Result<(Staged, bool)> {
    let tmp = tmp_name(dst);
    match std::fs::hard_link(src, &tmp) {
        Ok(()) => Ok((
            Staged {
                tmp,
                dst: dst.to_path_buf(),
            },
            true,
        )),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            Err(Error::from(e).context(format!("link {}", tmp.display())))
        }
        Err(_) => stage_file(dst, content, 0o755).map(|s| (s, false)),
    }
}

/// Whether `path` is a regular file with exactly `content` and `mode`, owned by root (when we
/// are root): then it is left untouched.
fn identical(path: &Path, content: &[u8], mode: u32) -> bool {
    let Ok(m) = std::fs::symlink_metadata(path) else {
        return false;
    };
    let owner_ok = !nix::unistd::geteuid().is_root() || (m.uid() == 0 && m.gid() == 0);
    m.is_file()
        && m.mode() & 0o7777 == mode
        && owner_ok
        && m.len() == content.len() as u64
        && std::fs::read(path).is_ok_and(|b| b == content)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::symlink_metadata(a), std::fs::symlink_metadata(b)) {
        (Ok(a), Ok(b)) => a.is_file() && (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsync {}", dir.display()))
}

/// Install `exe` as both plugin names in `bin_dir` and `conflist` in `conf_dir`. Returns what
/// happened to each file.
pub(crate) fn install(
    bin_dir: &Path,
    conf_dir: &Path,
    exe: &[u8],
    conflist: &[u8],
) -> Result<Vec<(PathBuf, &'static str)>> {
    for d in [bin_dir, conf_dir] {
        if !d.is_dir() {
            return Err(Error::new(
                crate::error::Code::Io,
                format!("{}: no such directory", d.display()),
            ));
        }
    }
    let (vnet, ipam, conf) = (
        bin_dir.join(VNET),
        bin_dir.join(IPAM),
        conf_dir.join(CONFLIST),
    );

    remove_stale_tmps(bin_dir, &[VNET, IPAM]);
    remove_stale_tmps(conf_dir, &[CONFLIST]);

    // Stage every change first: a destination that cannot take it fails here, with nothing
    // renamed yet. In commit order: the binaries, then the conflist.
    let mut stage = Stage(Vec::new());
    let mut done = Vec::new();
    let vnet_same = identical(&vnet, exe, 0o755);
    if vnet_same {
        done.push((vnet.clone(), "unchanged"));
    } else {
        stage.0.push(stage_file(&vnet, exe, 0o755)?);
        done.push((vnet.clone(), "installed"));
    }
    if vnet_same && same_file(&vnet, &ipam) {
        done.push((ipam.clone(), "unchanged"));
    } else {
        let src = stage.0.first().map_or(vnet.clone(), |s| s.tmp.clone());
        let (s, linked) = stage_link(&src, &ipam, exe)?;
        stage.0.push(s);
        done.push((
            ipam.clone(),
            if linked {
                "installed (the same file as azure-vnet)"
            } else {
                "installed (a copy: no hard links here)"
            },
        ));
    }
    if identical(&conf, conflist, 0o644) {
        done.push((conf.clone(), "unchanged"));
    } else {
        stage.0.push(stage_file(&conf, conflist, 0o644)?);
        done.push((conf.clone(), "installed"));
    }

    // Commit: renames in order (a running plugin keeps its old inode: no "text file busy"),
    // then the directories, so the renames survive a crash.
    // (A failed rename leaves the staged files not yet renamed to `stage`'s Drop.)
    while !stage.0.is_empty() {
        let s = stage.0.remove(0);
        if let Err(e) = std::fs::rename(&s.tmp, &s.dst) {
            let _ = std::fs::remove_file(&s.tmp);
            return Err(Error::from(e).context(format!("rename into {}", s.dst.display())));
        }
    }
    sync_dir(bin_dir)?;
    sync_dir(conf_dir)?;

    // Read back what is there before saying it is.
    let mismatch = |p: &Path| {
        Error::new(
            crate::error::Code::Io,
            format!("{}: what is on disk is not what was written", p.display()),
        )
    };
    if !identical(&vnet, exe, 0o755) {
        return Err(mismatch(&vnet));
    }
    if !same_file(&vnet, &ipam) && !identical(&ipam, exe, 0o755) {
        return Err(mismatch(&ipam));
    }
    if !identical(&conf, conflist, 0o644) {
        return Err(mismatch(&conf));
    }
    Ok(done)
}

/// Remove the conflist, then the two binaries. Missing files are fine.
pub(crate) fn uninstall(bin_dir: &Path, conf_dir: &Path) -> Result<Vec<(PathBuf, &'static str)>> {
    let mut done = Vec::new();
    for (dir, name) in [(conf_dir, CONFLIST), (bin_dir, IPAM), (bin_dir, VNET)] {
        let p = dir.join(name);
        match std::fs::remove_file(&p) {
            Ok(()) => {
                sync_dir(dir)?;
                done.push((p, "removed"));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => done.push((p, "not there")),
            Err(e) => return Err(Error::from(e).context(format!("remove {}", p.display()))),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_ours_and_unique() {
        let dst = Path::new("/x/azure-vnet");
        let a = tmp_name(dst);
        let b = tmp_name(dst);
        assert_ne!(a, b, "two runs (or two stages) never share a name");
        for t in [&a, &b] {
            let f = t.file_name().unwrap().to_str().unwrap();
            assert!(is_tmp_of(f, "azure-vnet"), "{f}");
            assert!(!is_tmp_of(f, "azure-vnet-ipam"), "{f}");
        }
        // (file, name, ours?)
        let cases = [
            (".azure-vnet.0123456789abcdef.tmp", "azure-vnet", true),
            (".azure-vnet.1.tmp", "azure-vnet", false),
            (".azure-vnet.0123456789abcdeg.tmp", "azure-vnet", false),
            ("azure-vnet.0123456789abcdef.tmp", "azure-vnet", false),
            (".azure-vnet-ipam.0123456789abcdef.tmp", "azure-vnet", false),
            (
                ".azure-vnet-ipam.0123456789abcdef.tmp",
                "azure-vnet-ipam",
                true,
            ),
            (
                ".10-azure.conflist.0123456789abcdef.tmp",
                "10-azure.conflist",
                true,
            ),
            (
                ".10-azure.conflist.0123456789abcdef",
                "10-azure.conflist",
                false,
            ),
        ];
        for (file, name, ours) in cases {
            assert_eq!(is_tmp_of(file, name), ours, "{file} / {name}");
        }
    }
}
