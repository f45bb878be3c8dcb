//! containerd 1.6 (Debian's) end to end: a throw-away containerd started inside the simulated
//! node's network namespace, `ctr run --cni --rm` with the seed conflist
//! (`conflist/10-azure.conflist`: azure-vnet transparent + azure-vnet-ipam from the wireserver,
//! then Debian's real `portmap`). Two containers at once: each gets one of node-a's secondary
//! IPs, its own endpoint record (ctr's container IDs `default-c1` and `default-c2` share their
//! first 8 characters), answers HTTP from the node, and on exit ctr's DEL releases its IP,
//! removes its record and its host route, and leaves the other container alone.
//!
//! What ctr does (Debian 12, containerd 1.6.20, verified):
//! * the plugins run in the ctr *client* process (go-cni), with ctr's environment: so ctr runs
//!   in the node namespace (`ip netns exec`, which also remounts /sys for the plugins) with the
//!   AZURE_VNET_* overrides; the daemon runs there too, under `nsenter --net` (`ip netns exec`
//!   would hide /sys/fs/cgroup from runc);
//! * the CNI directories are hard-wired (/etc/cni/net.d, plugins in /opt/cni/bin:/usr/lib/cni,
//!   libcni's cache in /var/lib/cni): ctr runs in a private mount namespace where overlays on
//!   /etc, /opt and /var/lib make the mount points and the test's directories are bind-mounted
//!   there, so the machine's own directories are never touched, nor created;
//! * CNI_CONTAINERID is `<ctr namespace>-<id>`, CNI_ARGS carries no pod identity, CNI_NETNS is
//!   `/proc/<pid>/ns/net` on ADD and "" on DEL;
//! * DEL is sent only by a foreground `ctr run --rm` when the task exits (`ctr run -d` never
//!   sends one): the containers here are stopped with `ctr task kill` (SIGTERM, which their
//!   shell traps and exits 0) and their `ctr run` then sends DEL.
//!
//! Everything (tasks, shims, containerd, mounts, cgroups) is removed on Drop, so a failed
//! assertion leaves nothing behind.

mod common;
use common::cri::procs;
use common::*;

use std::collections::BTreeSet;
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const IMAGE: &str = "localhost/rcbusybox:latest";
/// ctr's namespace: CNI_CONTAINERID is `<namespace>-<container id>`.
const CTR_NS: &str = "default";
const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
/// The conflist's network name (libcni's result cache: `<net>-<container id>-<ifname>`).
const NET: &str = "azure";
/// Serve HTTP, stay up until SIGTERM (bounded), exit 0 on it.
const CONTAINER_CMD: &str =
    "trap 'exit 0' TERM; ip -4 -o addr show eth0; httpd -p 80 -h /var/www; sleep 120 & wait";

fn secondary_of_node_a(ip: &str) -> bool {
    let a: Ipv4Addr = ip
        .parse()
        .unwrap_or_else(|e| panic!("{ip:?} is not an IPv4 address: {e}"));
    let [x, y, z, w] = a.octets();
    (x, y, z) == (10, 224, 0) && (5..=34).contains(&w)
}

/// Fail loudly (never skip) when a tool the test needs is missing.
fn need_cmd(name: &str) -> PathBuf {
    PATH.split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is missing: run scripts/install-deps.sh (scripts/test.sh does)")
        })
}

fn need_file(p: &Path) {
    assert!(
        p.is_file(),
        "{} is missing: run scripts/install-deps.sh (scripts/test.sh does)",
        p.display()
    );
}

fn preflight() {
    for c in [
        "containerd",
        "ctr",
        "runc",
        "nsenter",
        "unshare",
        "mount",
        "umount",
        "timeout",
        "curl",
        "python3",
        "ip",
    ] {
        need_cmd(c);
    }
    need_file(Path::new("/bin/busybox"));
    need_file(Path::new("/usr/lib/cni/portmap"));
    need_file(&repo().join("scripts/mk-busybox-oci.py"));
    need_file(&repo().join("conflist/10-azure.conflist"));
    for b in ["azure-vnet", "azure-vnet-ipam"] {
        need_file(&bin_dir().join(b));
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t.elapsed() < timeout, "timed out after {timeout:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill_pid(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

/// Processes whose command line mentions `needle` (our containerd, its shims, ctr clients).
fn pids_mentioning(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmd).contains(needle) {
                out.push(pid);
            }
        }
    }
    out
}

/// Reap the shims reparented to us (we are their subreaper, see `Containerd::start`), waiting
/// a little for those still shutting down, killing them after that.
fn reap_shims() {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let me = std::process::id() as i32;
    let t = Instant::now();
    loop {
        let shims: Vec<i32> = procs()
            .into_iter()
            .filter(|(_, comm, _, ppid)| *ppid == me && comm.starts_with("containerd-shim"))
            .map(|(pid, ..)| pid)
            .collect();
        if shims.is_empty() {
            return;
        }
        let late = t.elapsed() > Duration::from_secs(5);
        for pid in shims {
            let pid = nix::unistd::Pid::from_raw(pid);
            if late {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = waitpid(pid, None);
            } else if let Ok(WaitStatus::StillAlive) = waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                continue;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `<hierarchy>/default` cgroups (runc puts ctr's containers in `/<namespace>/<id>`).
fn ctr_cgroup_parents() -> BTreeSet<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut hierarchies = vec![root.to_path_buf()];
    hierarchies.extend(
        std::fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir()),
    );
    hierarchies
        .into_iter()
        .map(|h| h.join(CTR_NS))
        .filter(|p| p.is_dir())
        .collect()
}

/// rmdir a cgroup and its (empty) children; control files are not removable and need not be.
fn rmdir_cgroup(p: &Path) {
    for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            rmdir_cgroup(&e.path());
        }
    }
    let _ = std::fs::remove_dir(p);
}

/// A containerd of our own: config, root, state, sockets under a temp dir; daemon in the node
/// namespace; ctr clients in the node namespace and a private mount namespace.
struct Containerd {
    node: String,
    dir: TempDir,
    sock: PathBuf,
    daemon: Option<Child>,
    /// Foreground `ctr run --cni --rm` clients, by container name.
    runs: Vec<(String, Child)>,
    /// Plugin log directory (diagnostics).
    plugin_logs: Option<PathBuf>,
    cgroups_before: BTreeSet<PathBuf>,
}

impl Containerd {
    fn start(node: &str) -> Containerd {
        let dir = TempDir::new("ctrd");
        let sock = dir.join("containerd.sock");
        let mut c = Containerd {
            node: node.to_string(),
            sock,
            daemon: None,
            runs: Vec::new(),
            plugin_logs: None,
            cgroups_before: ctr_cgroup_parents(),
            dir,
        };
        for d in ["net.d", "bin", "fifo", "runc", "cni-cache"] {
            std::fs::create_dir_all(c.dir.join(d)).unwrap();
        }
        let d = c.dir.path().display().to_string();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{d}/opt"
"#
        );
        std::fs::write(c.dir.join("config.toml"), config).unwrap();
        // containerd's shims daemonize: with the test as their subreaper they become its
        // children and are reaped on Drop, instead of lingering as zombies of PID 1.
        nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
        let log = File::create(c.dir.join("containerd.log")).unwrap();
        // nsenter, not `ip netns exec`: that remounts /sys and runc then finds no cgroup mount.
        // containerd 1.6's shims put their sockets in /run/containerd whatever the config
        // says: in a private mount namespace an overlay on /run (the node's namespace is
        // entered first, its pin being a mount under /run) keeps them in the test's directory.
        let script = r#"set -e
mkdir -p "$1/upper" "$1/work"
mount -t overlay azvt-run -o "lowerdir=/run,upperdir=$1/upper,workdir=$1/work" /run
shift
exec "$@""#;
        let child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{node}"))
            .args([
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
            ])
            .arg(c.dir.join("run-overlay"))
            .arg("containerd")
            .arg("--config")
            .arg(c.dir.join("config.toml"))
            .env_clear()
            .env("PATH", PATH)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        c.daemon = Some(child);
        poll(
            "containerd answers on its socket",
            Duration::from_secs(20),
            || {
                if let Some(st) = c.daemon.as_mut().unwrap().try_wait().unwrap() {
                    panic!("containerd exited ({st}):\n{}", c.log_tail());
                }
                (c.sock.exists() && c.ctr(&["version"]).status.success()).then_some(())
            },
        );
        c
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn diag(&self, name: &str) -> String {
        let mut s = format!(
            "--- ctr run {name}:\n{}\n--- containerd.log (tail):\n{}\n",
            self.output(name),
            self.log_tail()
        );
        if let Some(d) = &self.plugin_logs {
            for f in ["azure-vnet.log", "azure-vnet-ipam.log"] {
                let t = std::fs::read_to_string(d.join(f)).unwrap_or_default();
                s.push_str(&format!("--- {f}:\n{t}"));
            }
        }
        s
    }

    /// A ctr management command (no CNI) against our daemon, bounded in time.
    fn ctr(&self, args: &[&str]) -> Output {
        let mut cmd = if Path::new("/var/run/netns").join(&self.node).exists() {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &self.node]);
            c
        } else {
            Command::new("env")
        };
        cmd.args(["timeout", "30", "ctr", "-n", CTR_NS, "-a"])
            .arg(&self.sock)
            .args(args)
            .env_clear()
            .env("PATH", PATH)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?} failed: {}\n--- containerd.log (tail):\n{}",
            text(&out),
            self.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn import_image(&self) {
        let tar = self.dir.join("rcbusybox.tar");
        let out = Command::new("python3")
            .arg(repo().join("scripts/mk-busybox-oci.py"))
            .arg(&tar)
            .arg(IMAGE)
            .output()
            .unwrap();
        assert!(out.status.success(), "mk-busybox-oci.py: {}", text(&out));
        self.ctr_ok(&["images", "import", &tar.display().to_string()]);
        let images = self.ctr_ok(&["images", "ls", "-q"]);
        assert!(images.lines().any(|l| l == IMAGE), "not imported: {images}");
    }

    /// The seed conflist, unchanged, and our plugins: what ctr will find in its hard-wired
    /// directories (portmap comes from /usr/lib/cni, the second directory of ctr's CNI path).
    fn install_cni(&self) {
        std::fs::copy(
            repo().join("conflist/10-azure.conflist"),
            self.dir.join("net.d/10-azure.conflist"),
        )
        .unwrap();
        install_plugins(&self.dir.join("bin"));
    }

    fn output(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(&format!("{name}.out"))).unwrap_or_default()
    }

    /// `ctr run --cni --rm <image> <name> sh -c ...` in the foreground (so it sends DEL on exit),
    /// in the background of the test: a private mount namespace with our CNI directories
    /// bind-mounted over ctr's, then the node namespace.
    fn run_cni(&mut self, name: &str, env: &[(String, String)]) {
        self.plugin_logs = env
            .iter()
            .find(|(k, _)| k == "AZURE_VNET_LOG_DIR")
            .map(|(_, v)| PathBuf::from(v));
        let out = File::create(self.dir.join(&format!("{name}.out"))).unwrap();
        // ($1: the test's directory; $2: this run's overlay directories.)
        let script = r#"set -e
for d in etc opt varlib; do mkdir -p "$2/$d/upper" "$2/$d/work"; done
mount -t overlay azvt-etc -o "lowerdir=/etc,upperdir=$2/etc/upper,workdir=$2/etc/work" /etc
mount -t overlay azvt-opt -o "lowerdir=/opt,upperdir=$2/opt/upper,workdir=$2/opt/work" /opt
mount -t overlay azvt-varlib -o "lowerdir=/var/lib,upperdir=$2/varlib/upper,workdir=$2/varlib/work" /var/lib
mkdir -p /etc/cni/net.d /opt/cni/bin /var/lib/cni
mount --bind "$1/net.d" /etc/cni/net.d
mount --bind "$1/bin" /opt/cni/bin
mount --bind "$1/cni-cache" /var/lib/cni
shift 2
exec ip netns exec "$@""#;
        let child = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
            ])
            .arg(self.dir.path())
            .arg(self.dir.join(&format!("overlay-{name}")))
            .arg(&self.node)
            .args(["ctr", "-n", CTR_NS, "-a"])
            .arg(&self.sock)
            .args(["run", "--cni", "--rm", "--fifo-dir"])
            .arg(self.dir.join("fifo"))
            .arg("--runc-root")
            .arg(self.dir.join("runc"))
            .args([IMAGE, name, "/bin/sh", "-c", CONTAINER_CMD])
            .env_clear()
            .env("PATH", PATH)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn ctr run");
        self.runs.push((name.to_string(), child));
    }

    fn run_child(&mut self, name: &str) -> &mut Child {
        &mut self
            .runs
            .iter_mut()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no ctr run {name}"))
            .1
    }

    /// The address the container printed (`ip -4 -o addr show eth0`).
    fn wait_for_address(&mut self, name: &str) -> String {
        let t = Instant::now();
        loop {
            let out = self.output(name);
            if let Some(line) = out.lines().find(|l| l.contains(" inet ")) {
                let mut words = line.split_whitespace();
                words.find(|w| *w == "inet");
                let cidr = words.next().unwrap_or_default();
                assert!(cidr.ends_with("/16"), "pool prefix kept: {line}");
                return cidr.trim_end_matches("/16").to_string();
            }
            if let Some(st) = self.run_child(name).try_wait().unwrap() {
                panic!(
                    "ctr run {name} exited ({st}) before the container showed an address\n{}",
                    self.diag(name)
                );
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "no address from {name} after 30 s\n{}",
                self.diag(name)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM to the task; the container's shell exits 0 and `ctr run` sends DEL, removes the
    /// task and the container, and exits with the task's status.
    fn stop(&mut self, name: &str) -> ExitStatus {
        self.ctr_ok(&["task", "kill", name]);
        let t = Instant::now();
        loop {
            if let Some(st) = self.run_child(name).try_wait().unwrap() {
                return st;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "ctr run {name} still running 30 s after SIGTERM\n{}",
                self.diag(name)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn lines(&self, args: &[&str]) -> Vec<String> {
        String::from_utf8_lossy(&self.ctr(args).stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let daemon_alive = self
            .daemon
            .as_mut()
            .is_some_and(|d| d.try_wait().ok().flatten().is_none());
        if daemon_alive {
            // Kill what still runs; foreground `ctr run --rm` clients then send DEL and clean up.
            for t in self.lines(&["task", "ls", "-q"]) {
                self.ctr(&["task", "kill", "-s", "SIGKILL", &t]);
            }
        }
        for (_, child) in &mut self.runs {
            let t = Instant::now();
            while child.try_wait().ok().flatten().is_none() && t.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if daemon_alive {
            for t in self.lines(&["task", "ls", "-q"]) {
                self.ctr(&["task", "rm", "-f", &t]);
            }
            for c in self.lines(&["containers", "ls", "-q"]) {
                self.ctr(&["containers", "rm", &c]);
            }
        }
        if let Some(d) = self.daemon.as_mut() {
            kill_pid(d.id() as i32, nix::sys::signal::Signal::SIGTERM);
            let t = Instant::now();
            while d.try_wait().ok().flatten().is_none() && t.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = d.kill();
            let _ = d.wait();
        }
        // Leftovers of a failure: containers runc still knows (our runc root), then shims and
        // clients (their command lines name our socket).
        for ns in std::fs::read_dir(self.dir.join("runc"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let root = ns.path();
            let out = Command::new("runc")
                .arg("--root")
                .arg(&root)
                .args(["list", "-q"])
                .output();
            for id in out
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
                .lines()
                .filter(|l| !l.trim().is_empty())
            {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(&root)
                    .args(["delete", "--force", id.trim()])
                    .status();
            }
        }
        let needle = self.dir.path().display().to_string();
        for pid in pids_mentioning(&needle) {
            kill_pid(pid, nix::sys::signal::Signal::SIGKILL);
        }
        reap_shims();
        // Snapshot (overlay) mounts and anything else under the temp dir, deepest first.
        let prefix = format!("{needle}/");
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/mounts")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1).map(String::from))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").args(["-l", &m]).status();
        }
        // runc's cgroup parents `<hierarchy>/default` it created.
        for cg in ctr_cgroup_parents().difference(&self.cgroups_before) {
            rmdir_cgroup(cg);
        }
    }
}

/// libcni's cached results of our network (`azure-<container id>-<ifname>`), in the test's
/// private cache.
fn cache_entries(ctrd: &Containerd) -> BTreeSet<String> {
    std::fs::read_dir(ctrd.dir.join("cni-cache/results"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("{NET}-{CTR_NS}-")))
        .collect()
}

/// Endpoint records in `<runDir>/azure-vnet.json` as (key, record).
fn endpoints(run_dir: &Path) -> Vec<(String, Value)> {
    let p = run_dir.join("azure-vnet.json");
    if !p.exists() {
        return Vec::new();
    }
    let v = read_json(&p);
    let mut out = Vec::new();
    for ext in v["Network"]["ExternalInterfaces"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
    {
        for net in ext["Networks"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.values())
        {
            for (k, ep) in net["Endpoints"].as_object().into_iter().flatten() {
                out.push((k.clone(), ep.clone()));
            }
        }
    }
    out
}

/// The one endpoint record of container `cid`: (key, host veth).
fn endpoint_of(run_dir: &Path, cid: &str, ip: &str) -> (String, String) {
    let all = endpoints(run_dir);
    let mine: Vec<&(String, Value)> = all
        .iter()
        .filter(|(_, e)| e["ContainerID"] == cid)
        .collect();
    assert_eq!(mine.len(), 1, "one endpoint record for {cid}: {all:?}");
    let (key, ep) = mine[0];
    assert_eq!(ep["IPAddresses"][0]["IP"], ip, "{cid}'s record: {ep}");
    let host = ep["HostIfName"].as_str().unwrap_or_default().to_string();
    assert!(
        host.starts_with("azv") && host.len() == 14,
        "{cid}'s host veth: {ep}"
    );
    (key.clone(), host)
}

/// Every route in every table of the node, as lines.
fn node_routes(node: &str) -> Vec<String> {
    sh(&["ip", "-n", node, "-4", "route", "show", "table", "all"])
        .lines()
        .map(String::from)
        .collect()
}

fn routes_to(node: &str, ip: &str) -> Vec<String> {
    let slash = format!("{ip}/32");
    node_routes(node)
        .into_iter()
        .filter(|l| l.split_whitespace().any(|w| w == ip || w == slash))
        .collect()
}

fn link_exists(node: &str, name: &str) -> bool {
    Command::new("ip")
        .args(["-n", node, "link", "show", "dev", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// GET http://<ip>/index.html from the node (httpd starts just after the address is printed).
fn http_from_node(node: &str, ip: &str) -> String {
    let url = format!("http://{ip}/index.html");
    let t = Instant::now();
    loop {
        let out = ns_exec(node, &["curl", "-sS", "--max-time", "2", &url]);
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no HTTP answer from {ip} in 10 s: {}",
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Plugin log lines for (plugin log file, command, container ID).
fn logged(log_dir: &Path, file: &str, command: &str, cid: &str) -> usize {
    std::fs::read_to_string(log_dir.join(file))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["command"] == command && v["containerID"] == cid && v["msg"] == "done")
        .count()
}

#[test]
fn ctr_run_cni_two_containers_get_secondary_ips_serve_http_and_del_releases() {
    require_root();
    preflight();
    let tb = Testbed::up(30);
    let node = tb.node("a");
    let ws = Wireserver::start(&node, &tb.nmagent_xml("a"), "ok");
    let env = with(
        tb.env("a"),
        &[("AZURE_VNET_WIRESERVER_URL".into(), ws.url.clone())],
    );
    let run_dir = tb.run_dir("a");
    let log_dir = tb.log_dir("a");

    let t0 = Instant::now();
    let mut ctrd = Containerd::start(&node);
    eprintln!("containerd up in {:?}", t0.elapsed());
    ctrd.import_image();
    ctrd.install_cni();

    // Two containers at once: parallel ADDs through ctr.
    ctrd.run_cni("c1", &env);
    ctrd.run_cni("c2", &env);
    let ip1 = ctrd.wait_for_address("c1");
    let ip2 = ctrd.wait_for_address("c2");
    eprintln!(
        "c1 {ip1}, c2 {ip2} ({:?} since containerd start)",
        t0.elapsed()
    );
    for ip in [&ip1, &ip2] {
        assert!(secondary_of_node_a(ip), "{ip} is not a secondary of node-a");
    }
    assert_ne!(ip1, ip2, "two containers, two addresses");

    let used = ips_in_use(&tb.ipam_state("a"));
    assert_eq!(used.len(), 2, "{used:?}");
    assert_eq!(used.get(&ip1).map(String::as_str), Some("default-c1"));
    assert_eq!(used.get(&ip2).map(String::as_str), Some("default-c2"));

    // Distinct records and host veths although the IDs share their first 8 characters.
    let (key1, veth1) = endpoint_of(&run_dir, "default-c1", &ip1);
    let (key2, veth2) = endpoint_of(&run_dir, "default-c2", &ip2);
    assert_ne!(key1, key2);
    assert_ne!(veth1, veth2);
    assert_eq!(endpoints(&run_dir).len(), 2);
    for (ip, veth) in [(&ip1, &veth1), (&ip2, &veth2)] {
        assert!(link_exists(&node, veth), "host veth {veth} missing");
        let r = routes_to(&node, ip);
        assert!(
            r.iter().any(|l| l.starts_with(&format!("{ip} dev {veth}"))),
            "host route {ip} dev {veth} missing: {r:?}"
        );
    }

    // libcni cached both results, in the private cache.
    let cache = cache_entries(&ctrd);
    assert!(
        cache.contains("azure-default-c1-eth0") && cache.contains("azure-default-c2-eth0"),
        "{cache:?}"
    );

    // The datapath: the node reaches both containers' HTTP servers.
    for ip in [&ip1, &ip2] {
        assert_eq!(http_from_node(&node, ip), "hello from rcbusybox\n");
    }

    // c1 exits: ctr's DEL releases its address, record and route; c2 is untouched.
    let st = ctrd.stop("c1");
    assert!(st.success(), "ctr run c1: {st}\n{}", ctrd.diag("c1"));
    assert_eq!(
        logged(&log_dir, "azure-vnet.log", "DEL", "default-c1"),
        1,
        "ctr sent one DEL for c1\n{}",
        ctrd.diag("c1")
    );
    let used = ips_in_use(&tb.ipam_state("a"));
    assert!(!used.contains_key(&ip1), "{ip1} still in use: {used:?}");
    assert_eq!(used.get(&ip2).map(String::as_str), Some("default-c2"));
    assert_eq!(used.len(), 1, "{used:?}");
    let left = endpoints(&run_dir);
    assert!(
        left.iter().all(|(_, e)| e["ContainerID"] != "default-c1"),
        "c1's record is still there: {left:?}"
    );
    assert_eq!(
        endpoint_of(&run_dir, "default-c2", &ip2),
        (key2, veth2.clone())
    );
    assert!(
        routes_to(&node, &ip1).is_empty(),
        "{:?}",
        routes_to(&node, &ip1)
    );
    poll(
        &format!("c1's host veth {veth1} gone with its namespace"),
        Duration::from_secs(10),
        || (!link_exists(&node, &veth1)).then_some(()),
    );
    assert!(!cache_entries(&ctrd).contains("azure-default-c1-eth0"));
    assert_eq!(http_from_node(&node, &ip2), "hello from rcbusybox\n");

    // c2 exits: nothing is left in use.
    let st = ctrd.stop("c2");
    assert!(st.success(), "ctr run c2: {st}\n{}", ctrd.diag("c2"));
    assert_eq!(logged(&log_dir, "azure-vnet.log", "DEL", "default-c2"), 1);
    let used = ips_in_use(&tb.ipam_state("a"));
    assert!(used.is_empty(), "addresses still in use: {used:?}");
    assert!(endpoints(&run_dir).is_empty(), "{:?}", endpoints(&run_dir));
    assert!(
        routes_to(&node, &ip2).is_empty(),
        "{:?}",
        routes_to(&node, &ip2)
    );
    poll(
        &format!("c2's host veth {veth2} gone with its namespace"),
        Duration::from_secs(10),
        || (!link_exists(&node, &veth2)).then_some(()),
    );
    let cache = cache_entries(&ctrd);
    assert!(
        !cache.contains("azure-default-c1-eth0") && !cache.contains("azure-default-c2-eth0"),
        "libcni's cached results not removed by DEL: {cache:?}"
    );
    // --rm removed the containers; exactly one ADD each.
    assert!(ctrd.lines(&["containers", "ls", "-q"]).is_empty());
    for cid in ["default-c1", "default-c2"] {
        assert_eq!(logged(&log_dir, "azure-vnet.log", "ADD", cid), 1, "{cid}");
        assert_eq!(
            logged(&log_dir, "azure-vnet-ipam.log", "DEL", cid),
            1,
            "{cid}"
        );
    }
    eprintln!("done in {:?}", t0.elapsed());
}
