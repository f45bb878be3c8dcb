//! Exec delegation to another CNI plugin (the IPAM plugin) through CNI_PATH, as libcni's
//! `invoke.DelegateAdd/Del` do: same environment with CNI_COMMAND overridden, the network
//! config on stdin, the result or a CNI error on stdout.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};

use serde::Deserialize;

use crate::cni::env::Command;
use crate::cni::skel::{self, Outcome, Plugin};
use crate::cpu;
use crate::error::{Code, Error, Result};

/// Set by a plugin on the delegates it execs: the exec'ing process's pid.
pub const PARENT_PID_ENV: &str = "AZURE_VNET_PARENT_PID";

/// In a delegate: die (SIGKILL) when the plugin that exec'd us dies. Its state writes are
/// atomic, so dying mid-way is safe; living on after the parent is gone is not (see `exec`).
pub fn die_with_parent(vars: &HashMap<String, String>) {
    let Some(parent) = vars.get(PARENT_PID_ENV).and_then(|p| p.parse::<i32>().ok()) else {
        return;
    };
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    // The parent may have died before the prctl: then nobody waits for our answer.
    if nix::unistd::getppid().as_raw() != parent {
        std::process::exit(1);
    }
}

/// Find `plugin` in the CNI_PATH directories.
pub fn find_plugin(plugin: &str, path: &[PathBuf]) -> Result<PathBuf> {
    if plugin.is_empty() || plugin.contains('/') || plugin == "." || plugin == ".." {
        return Err(Error::new(
            Code::InvalidConfig,
            format!("invalid plugin type {plugin:?}"),
        ));
    }
    path.iter()
        .map(|d| d.join(plugin))
        .find(|p| is_executable(p))
        .ok_or_else(|| {
            Error::new(
                Code::Runtime,
                format!("failed to find plugin {plugin:?} in path {path:?}"),
            )
        })
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[derive(Deserialize)]
struct PluginError {
    #[serde(default)]
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

/// A delegate that is running, or ready to run in this process: its answer is collected by
/// [`Pending::wait`], so the caller can do other work (ADD builds the veth pair) meanwhile.
/// Dropped without being waited for, it still waits for a running delegate: whatever the
/// delegate commits happens before the caller's clean-up (a release of its address).
pub struct Pending {
    how: How,
    what: String,
}

enum How {
    Child(std::process::Child, PathBuf),
    /// The file delegation would execute is this very executable: its plugin runs here, with
    /// the same stdin and CNI_* view the exec'd process would get, when waited for...
    InProcess(Box<dyn FnOnce() -> Outcome + Send>),
    /// ... or, once [`Pending::start`]ed, on a thread of its own.
    Thread(std::thread::JoinHandle<Outcome>),
    Done,
}

/// Whether `bin` is the executable this process runs (same device and inode as
/// `/proc/self/exe`): a copy, another build or a newer version installed meanwhile is not.
fn is_this_executable(bin: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(bin), std::fs::metadata("/proc/self/exe")) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Start `plugin` for `command`, with `stdin` written to it: exec'd through CNI_PATH, as
/// libcni does, unless the file it resolves to is this very executable and `local` is its
/// plugin, which then runs in this process instead (one process start less per operation).
/// Must be called on a thread that outlives an exec'd delegate (the main thread): the kernel's
/// parent-death signal follows the thread that spawned the child, not the process.
pub fn spawn(
    plugin: &str,
    command: Command,
    stdin: &[u8],
    vars: &HashMap<String, String>,
    cni_path: &[PathBuf],
    local: Option<&'static (dyn Plugin + Sync)>,
) -> Result<Pending> {
    let bin = find_plugin(plugin, cni_path)?;
    let what = format!("{plugin} {}", command.as_str());
    if let Some(local) = local.filter(|_| is_this_executable(&bin)) {
        let mut vars = vars.clone();
        vars.insert("CNI_COMMAND".into(), command.as_str().into());
        let stdin = stdin.to_vec();
        let run = move || skel::dispatch(local, &vars, &stdin);
        return Ok(Pending {
            how: How::InProcess(Box::new(run)),
            what,
        });
    }
    let mut cmd = Process::new(&bin);
    cmd.env_clear()
        .envs(vars)
        .env("CNI_COMMAND", command.as_str())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // If we are killed (runtime timeout, OOM), the delegate must not live on and commit an
    // allocation after the runtime's DEL for this container has already run: that address
    // would leak. Our own plugins see this variable and ask the kernel to kill them with us
    // (see `die_with_parent`); doing it in the child keeps the posix_spawn path (a pre_exec
    // hook would force a full fork of this process).
    cmd.env(PARENT_PID_ENV, std::process::id().to_string());
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::os(Code::Runtime, &e).context(format!("exec {}", bin.display())))?;
    if let Some(mut si) = child.stdin.take() {
        // A plugin that exits before reading stdin closes the pipe: its own error explains.
        // A config larger than the pipe buffer waits here until the delegate reads it.
        let _ = si.write_all(stdin);
    }
    Ok(Pending {
        how: How::Child(child, bin),
        what,
    })
}

impl Pending {
    /// Run the delegate now, beside the caller, on another CPU than the caller's: an
    /// in-process plugin on a thread of its own, an exec'd one where it is. (A new thread or
    /// child starts on its parent's CPU and would wait there until the parent blocks.)
    pub fn start(mut self) -> Result<Pending> {
        self.how = match std::mem::replace(&mut self.how, How::Done) {
            How::InProcess(run) => How::Thread(
                cpu::spawn_elsewhere(run)
                    .map_err(|e| Error::os(Code::Runtime, &e).context("start a thread"))?,
            ),
            How::Child(child, bin) => {
                cpu::move_child_elsewhere(child.id());
                How::Child(child, bin)
            }
            other => other,
        };
        Ok(self)
    }

    /// The delegate's stdout on success. A failure keeps the delegate's CNI code (so a lock
    /// timeout stays "try again", exhaustion stays 100) and its message.
    pub fn wait(mut self) -> Result<Vec<u8>> {
        let what = std::mem::take(&mut self.what);
        let (ok, stdout, status) = match std::mem::replace(&mut self.how, How::Done) {
            How::InProcess(run) => {
                let out = run();
                let status = format!("exit status: {}", out.exit_code);
                (out.exit_code == 0, out.stdout, status)
            }
            How::Thread(handle) => {
                // The plugin code turns its errors into an outcome; a panic is reported, not
                // propagated.
                let out = handle
                    .join()
                    .map_err(|_| Error::new(Code::Runtime, format!("{what} panicked")))?;
                let status = format!("exit status: {}", out.exit_code);
                (out.exit_code == 0, out.stdout, status)
            }
            How::Child(mut child, bin) => {
                // The child is reaped whatever happens to its output, so that nothing it
                // commits can come after the caller's clean-up.
                let mut stdout = Vec::new();
                let read = child.stdout.take().map(|mut o| o.read_to_end(&mut stdout));
                let waited = child.wait();
                let failed = |e: std::io::Error| {
                    Error::os(Code::Runtime, &e).context(format!("wait for {}", bin.display()))
                };
                let status = waited.map_err(failed)?;
                read.transpose().map_err(failed)?;
                (status.success(), stdout, status.to_string())
            }
            How::Done => return Err(Error::new(Code::Internal, format!("{what}: waited twice"))),
        };
        if ok {
            return Ok(stdout);
        }
        match serde_json::from_slice::<PluginError>(&stdout) {
            Ok(e) if !e.msg.is_empty() => {
                let mut err = Error::new(Code::from_cni(e.code), format!("{what}: {}", e.msg));
                if !e.details.is_empty() {
                    err = err.with_details(e.details);
                }
                Err(err)
            }
            _ => Err(Error::new(
                Code::Runtime,
                format!(
                    "{what} failed ({status}) without a CNI error: {:?}",
                    String::from_utf8_lossy(&stdout)
                        .chars()
                        .take(200)
                        .collect::<String>()
                ),
            )),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        match std::mem::replace(&mut self.how, How::Done) {
            How::Thread(handle) => {
                let _ = handle.join();
            }
            How::Child(mut child, _) => {
                // Its answer is not wanted: with the pipe closed it cannot block writing it.
                drop(child.stdout.take());
                let _ = child.wait();
            }
            How::InProcess(_) | How::Done => {}
        }
    }
}

/// Run `plugin` for `command` and wait for its answer (see [`spawn`] and [`Pending::wait`]).
pub fn exec(
    plugin: &str,
    command: Command,
    stdin: &[u8],
    vars: &HashMap<String, String>,
    cni_path: &[PathBuf],
    local: Option<&'static (dyn Plugin + Sync)>,
) -> Result<Vec<u8>> {
    spawn(plugin, command, stdin, vars, cni_path, local)?.wait()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_lookup_refuses_paths() {
        for bad in ["", "../bin/sh", "/bin/sh", ".", ".."] {
            assert_eq!(
                find_plugin(bad, &[PathBuf::from("/bin")])
                    .unwrap_err()
                    .code(),
                Code::InvalidConfig
            );
        }
        let e = find_plugin("no-such-plugin-here", &[PathBuf::from("/nonexistent")]).unwrap_err();
        assert_eq!(e.code(), Code::Runtime);
        assert!(e.msg().contains("failed to find plugin"));
        assert_eq!(
            find_plugin(
                "sh",
                &[PathBuf::from("/nonexistent"), PathBuf::from("/bin")]
            )
            .unwrap(),
            PathBuf::from("/bin/sh")
        );
    }

    #[test]
    fn delegate_errors_keep_their_code() {
        let dir = std::env::temp_dir().join(format!("azv-deleg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("fake-ipam");
        std::fs::write(&script, "#!/bin/sh\ncat >/dev/null\necho '{\"code\":11,\"msg\":\"timed out locking store\"}'\nexit 1\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let garbage = dir.join("garbage-ipam");
        std::fs::write(&garbage, "#!/bin/sh\necho not json\nexit 3\n").unwrap();
        std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o755)).unwrap();
        let ok = dir.join("ok-ipam");
        std::fs::write(&ok, "#!/bin/sh\n[ \"$CNI_COMMAND\" = DEL ] && cat\n").unwrap();
        std::fs::set_permissions(&ok, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = vec![dir.clone()];
        let vars = HashMap::new();

        let e = exec("fake-ipam", Command::Add, b"{}", &vars, &path, None).unwrap_err();
        assert_eq!(e.code(), Code::TryAgainLater);
        assert_eq!(e.msg(), "fake-ipam ADD: timed out locking store");
        let e = exec("garbage-ipam", Command::Add, b"{}", &vars, &path, None).unwrap_err();
        assert_eq!(e.code(), Code::Runtime);
        assert!(e.msg().contains("without a CNI error"), "{e}");
        assert_eq!(
            exec("ok-ipam", Command::Del, b"{\"x\":1}", &vars, &path, None).unwrap(),
            b"{\"x\":1}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
