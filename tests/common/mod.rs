//! Shared fixtures for the integration tests: the simulated Azure node (scripts/testbed.sh),
//! pod namespaces, running plugins and cnitool inside a namespace, the fake wireserver.
//! Everything is created inside namespaces the test makes, and removed on Drop, so a failing
//! assertion leaves nothing behind.
#![allow(dead_code)]

pub mod cgroups;
pub mod cri;
pub mod podman;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const NODE_A_MAC: &str = "00:0d:3a:4b:1c:2d";
pub const NODE_A_IP: &str = "10.224.0.4";
pub const NODE_B_IP: &str = "10.224.1.4";
pub const API_IP: &str = "10.226.0.4";

/// Root-only tests must run in CI: fail loudly, never skip.
pub fn require_root() {
    let euid = nix::unistd::geteuid();
    assert!(
        euid.is_root(),
        "this test needs root (network namespaces); run it through `sudo scripts/test.sh`"
    );
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Our plugins as a node has them installed: the one executable under both names (hard
/// links), in a directory of this test process's own (`target/<profile>/cni-bin-<pid>`).
pub fn bin_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let built = PathBuf::from(env!("CARGO_BIN_EXE_azure-vnet"));
        let parent = built.parent().unwrap();
        // Directories of earlier test processes that are gone.
        for e in std::fs::read_dir(parent).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name
                .strip_prefix("cni-bin-")
                .map(|p| p.trim_end_matches(".copies"))
            {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = parent.join(format!("cni-bin-{}", std::process::id()));
        install_plugins(&dir);
        dir
    })
    .clone()
}

/// Install our plugins into `dir` as a node's installer does: one file, two names.
pub fn install_plugins(dir: &Path) {
    let built = PathBuf::from(env!("CARGO_BIN_EXE_azure-vnet"));
    std::fs::create_dir_all(dir).unwrap();
    for name in ["azure-vnet", "azure-vnet-ipam"] {
        let _ = std::fs::remove_file(dir.join(name));
    }
    if std::fs::hard_link(&built, dir.join("azure-vnet")).is_err() {
        copy_executable(&built, &dir.join("azure-vnet"));
    }
    std::fs::hard_link(dir.join("azure-vnet"), dir.join("azure-vnet-ipam")).unwrap();
}

/// Our plugins installed as two separate files (copies): azure-vnet then execs
/// azure-vnet-ipam, as it does for any IPAM plugin that is not its very own executable.
pub fn exec_bin_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = bin_dir().with_extension("copies");
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["azure-vnet", "azure-vnet-ipam"] {
            copy_executable(Path::new(env!("CARGO_BIN_EXE_azure-vnet")), &dir.join(name));
        }
        dir
    })
    .clone()
}

pub fn ipam_bin() -> PathBuf {
    bin_dir().join("azure-vnet-ipam")
}

/// Our binaries first, then Debian's reference plugins.
pub fn cni_path() -> String {
    format!("{}:/usr/lib/cni", bin_dir().display())
}

pub fn cnitool() -> PathBuf {
    let p = PathBuf::from("/usr/local/bin/cnitool");
    assert!(
        p.exists(),
        "cnitool is missing: run scripts/install-deps.sh (scripts/test.sh does)"
    );
    p
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this process and call (namespace names, container IDs).
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{:x}{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(unique(&format!("azvt-{tag}-")));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The simulated VNet: `<tag>-vnet`, `<tag>-node-a`, `<tag>-node-b`, `<tag>-api`, plus any
/// `<tag>-pod-*` namespaces the test adds. All removed on Drop.
pub struct Testbed {
    pub tag: String,
    pub dir: TempDir,
}

impl Testbed {
    pub fn up(secondaries: u32) -> Testbed {
        require_root();
        let tag = unique("azt");
        let dir = TempDir::new("tb");
        let tb = Testbed { tag, dir };
        let st = Command::new(repo().join("scripts/testbed.sh"))
            .args(["up", &tb.tag])
            .arg(tb.dir.path())
            .arg(secondaries.to_string())
            .status()
            .unwrap();
        assert!(st.success(), "testbed up failed");
        tb
    }

    pub fn node(&self, n: &str) -> String {
        format!("{}-node-{n}", self.tag)
    }
    pub fn vnet(&self) -> String {
        format!("{}-vnet", self.tag)
    }
    pub fn api(&self) -> String {
        format!("{}-api", self.tag)
    }
    pub fn interfaces_file(&self, n: &str) -> PathBuf {
        self.dir.join(&format!("node-{n}/interfaces.json"))
    }
    pub fn nmagent_xml(&self, n: &str) -> PathBuf {
        self.dir.join(&format!("node-{n}/nmagent.xml"))
    }
    /// A per-node run directory (state files, locks) inside the test's temp dir.
    pub fn run_dir(&self, n: &str) -> PathBuf {
        let p = self.dir.join(&format!("node-{n}/run"));
        std::fs::create_dir_all(&p).unwrap();
        p
    }
    pub fn log_dir(&self, n: &str) -> PathBuf {
        let p = self.dir.join(&format!("node-{n}/log"));
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// A pod namespace `<tag>-pod-<name>` (lo up, as runtimes do); its path for CNI_NETNS.
    pub fn pod(&self, name: &str) -> (String, PathBuf) {
        let ns = format!("{}-pod-{name}", self.tag);
        sh(&["ip", "netns", "add", &ns]);
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        let path = PathBuf::from("/var/run/netns").join(&ns);
        (ns, path)
    }

    pub fn del_pod(&self, ns: &str) {
        sh(&["ip", "netns", "del", ns]);
    }

    /// The environment every plugin call from node `n` gets: overrides to the test's paths.
    pub fn env(&self, n: &str) -> Vec<(String, String)> {
        vec![
            (
                "AZURE_VNET_RUN_DIR".into(),
                self.run_dir(n).display().to_string(),
            ),
            (
                "AZURE_VNET_LOG_DIR".into(),
                self.log_dir(n).display().to_string(),
            ),
            (
                "AZURE_VNET_INTERFACES_FILE".into(),
                self.interfaces_file(n).display().to_string(),
            ),
            // Never the real wireserver: a closed loopback port unless a test starts a fake.
            (
                "AZURE_VNET_WIRESERVER_URL".into(),
                "http://127.0.0.1:9/machine/plugins?comp=nmagent&type=getinterfaceinfov1".into(),
            ),
        ]
    }

    pub fn ipam_state(&self, n: &str) -> Value {
        read_json(&self.run_dir(n).join("azure-vnet-ipam.json"))
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("scripts/testbed.sh"))
            .args(["down", &self.tag])
            .status();
    }
}

pub fn read_json(p: &Path) -> Value {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}\n{text}", p.display()))
}

/// Run a command, panic with its output if it fails.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ip netns exec <ns> <args>`: output, success or not.
pub fn ns_exec(ns: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .unwrap()
}

pub fn ns_sh(ns: &str, args: &[&str]) -> String {
    let out = ns_exec(ns, args);
    assert!(
        out.status.success(),
        "in {ns}: {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a plugin printed and how it exited.
#[derive(Debug)]
pub struct PluginOut {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl PluginOut {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {:?} / stderr {:?}",
                self.stdout, self.stderr
            )
        })
    }
    /// Assert success and return the JSON result (Null for empty stdout).
    pub fn succeeded(&self) -> Value {
        assert_eq!(
            self.code, 0,
            "plugin failed: {} {}",
            self.stdout, self.stderr
        );
        if self.stdout.trim().is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }
    /// Assert a CNI error with `code`, exit status 1, and return the error document.
    pub fn err(&self, code: u64) -> Value {
        assert_eq!(
            self.code, 1,
            "expected failure, got: {} {}",
            self.stdout, self.stderr
        );
        let v = self.json();
        assert_eq!(v["code"], code, "wrong CNI code: {v}");
        assert!(
            v["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "no msg: {v}"
        );
        v
    }
}

/// Run a prepared command with `stdin`, as a runtime runs a plugin: its output and status.
pub fn run_with_stdin(mut cmd: Command, stdin: &[u8]) -> PluginOut {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut si = child.stdin.take().unwrap();
        // The plugin may exit early (bad env) and close stdin: ignore EPIPE.
        let _ = si.write_all(stdin);
    }
    // A plugin that never answers fails the test (killed), rather than hanging it.
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            // (A grandchild still holding the pipes must not hang the test either.)
            let stderr = rx
                .recv_timeout(Duration::from_secs(10))
                .ok()
                .and_then(Result::ok)
                .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                .unwrap_or_default();
            panic!("pid {pid} did not answer within 120 s (killed); stderr: {stderr}");
        }
    };
    PluginOut {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A veth pair `name`/`peer` in namespace `ns`, both ends there: what an ADD interrupted
/// before the pod end left the host would leave.
pub fn add_host_veth_pair(ns: &str, name: &str, peer: &str) {
    sh(&[
        "ip", "-n", ns, "link", "add", name, "type", "veth", "peer", "name", peer,
    ]);
}

/// Exec a CNI plugin in namespace `ns` (None: the test's own namespace) with a clean
/// environment: PATH, the given variables, nothing inherited.
pub fn run_plugin(
    ns: Option<&str>,
    plugin: &Path,
    env: &[(String, String)],
    stdin: &[u8],
) -> PluginOut {
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(plugin);
            c
        }
        None => Command::new(plugin),
    };
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    run_with_stdin(cmd, stdin)
}

/// The standard CNI variables for one call.
pub fn cni_env(cmd: &str, cid: &str, netns: &str, ifname: &str) -> Vec<(String, String)> {
    vec![
        ("CNI_COMMAND".into(), cmd.into()),
        ("CNI_CONTAINERID".into(), cid.into()),
        ("CNI_NETNS".into(), netns.into()),
        ("CNI_IFNAME".into(), ifname.into()),
        ("CNI_PATH".into(), cni_path()),
    ]
}

pub fn with(mut base: Vec<(String, String)>, more: &[(String, String)]) -> Vec<(String, String)> {
    for (k, v) in more {
        base.retain(|(bk, _)| bk != k);
        base.push((k.clone(), v.clone()));
    }
    base
}

/// A directory holding one conflist, for cnitool's NETCONFPATH.
pub fn netconf_dir(dir: &TempDir, conflist: &str) -> PathBuf {
    let d = dir.join(&unique("netconf"));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::copy(repo().join("conflist").join(conflist), d.join(conflist)).unwrap();
    d
}

/// The start of an `unshare --mount --propagation private sh -c` script: libcni's result
/// cache, hard-wired to /var/lib/cni (and host-local's default dataDir under it), is `$1`,
/// never the machine's. An overlay on /var/lib (upper and work directories under `$2`, one
/// per call) makes the mount point without creating it on the machine.
pub const PRIVATE_CNI_CACHE: &str = r#"set -e
mkdir -p "$1" "$2/upper" "$2/work"
mount -t overlay azvt-varlib -o "lowerdir=/var/lib,upperdir=$2/upper,workdir=$2/work" /var/lib
mkdir -p /var/lib/cni
mount --bind "$1" /var/lib/cni
shift 2
"#;

/// Run the real cnitool inside namespace `ns`: `cnitool <cmd> <net> <netns>`. cnitool names the
/// container `cnitool-<hash of the netns path>` and caches results in libcni's cache: here
/// `cni-cache` beside the `netconf` directory (the testbed's), kept from an ADD to its DEL.
pub fn cnitool_run(
    ns: &str,
    netconf: &Path,
    cmd: &str,
    net: &str,
    netns: &Path,
    env: &[(String, String)],
) -> PluginOut {
    let beside = netconf.parent().unwrap();
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(r#"{PRIVATE_CNI_CACHE}exec ip netns exec "$@""#))
        .arg("sh")
        .arg(beside.join("cni-cache"))
        .arg(beside.join(unique("varlib")))
        .arg(ns)
        .arg(cnitool())
        .args([cmd, net])
        .arg(netns)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("NETCONFPATH", netconf)
        .env("CNI_PATH", cni_path())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    PluginOut {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The container ID cnitool derives from a netns path (cnitool.go: sha512 of the absolute
/// path, first 10 bytes in hex).
pub fn cnitool_container_id(netns: &Path) -> String {
    use std::process::Command;
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf %s '{}' | sha512sum | cut -c1-20",
            netns.display()
        ))
        .output()
        .unwrap();
    format!("cnitool-{}", String::from_utf8_lossy(&out.stdout).trim())
}

/// The fake wireserver (scripts/fake-wireserver.py) on the loopback of namespace `ns`.
pub struct Wireserver {
    child: Child,
    pub url: String,
    _dir: TempDir,
}

impl Wireserver {
    pub fn start(ns: &str, xml: &Path, mode: &str) -> Wireserver {
        let dir = TempDir::new("ws");
        let port_file = dir.join("port");
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "python3"])
            .arg(repo().join("scripts/fake-wireserver.py"))
            .arg("--xml")
            .arg(xml)
            .args(["--mode", mode, "--port", "0", "--port-file"])
            .arg(&port_file)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let t = Instant::now();
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(&port_file) {
                break p;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "fake wireserver did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Wireserver {
            child,
            url: format!(
                "http://127.0.0.1:{port}/machine/plugins?comp=nmagent&type=getinterfaceinfov1"
            ),
            _dir: dir,
        }
    }
}

impl Drop for Wireserver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The version a binary reports (`Azure CNI Version v…`).
pub fn version_of(bin: &Path) -> String {
    let out = Command::new(bin).arg("-v").output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .strip_prefix("Azure CNI Version ")
        .unwrap_or_else(|| panic!("{} -v: {out:?}", bin.display()))
        .to_string()
}

/// A file's identity and content (inode, mtime, mode, bytes), to tell an untouched file from a
/// rewritten one.
pub fn file_identity(p: &Path) -> (u64, i64, i64, u32, Vec<u8>) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(p).unwrap();
    (
        m.ino(),
        m.mtime(),
        m.mtime_nsec(),
        m.mode(),
        std::fs::read(p).unwrap(),
    )
}

/// The first IP of a CNI result, without its prefix length.
pub fn result_ip(result: &Value) -> String {
    let cidr = result["ips"][0]["address"].as_str().unwrap();
    cidr.split('/').next().unwrap().to_string()
}

/// IPs in use in an IPAM state document, as `ip -> container ID`.
pub fn ips_in_use(state: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(spaces) = state["IPAM"]["AddressSpaces"].as_object() {
        for space in spaces.values() {
            for pool in space["Pools"]
                .as_object()
                .into_iter()
                .flat_map(|p| p.values())
            {
                for (ip, rec) in pool["Addresses"].as_object().into_iter().flatten() {
                    if rec["InUse"] == true {
                        let owner = rec["ID"].as_str().unwrap_or("").to_string();
                        // Pools may overlap: the same IP in use in two pools is two owners.
                        if let Some(other) = out.insert(ip.clone(), owner.clone()) {
                            panic!("{ip} is in use twice: by {other} and by {owner}");
                        }
                    }
                }
            }
        }
    }
    out
}

/// The IPAM config a test feeds azure-vnet-ipam directly.
pub fn ipam_conf(version: &str, ipam_extra: &str) -> String {
    format!(
        r#"{{"cniVersion":"{version}","name":"azure","type":"azure-vnet","ipam":{{"type":"azure-vnet-ipam"{ipam_extra}}}}}"#
    )
}

/// A process started inside a namespace (an HTTP server in a pod), killed on Drop.
pub struct Bg(pub Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// busybox httpd on `port` in namespace `ns`, serving `body` at /index.html.
pub fn http_server(ns: &str, port: u16, body: &str, dir: &TempDir) -> Bg {
    let root = dir.join(&unique("www"));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("index.html"), body).unwrap();
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "busybox",
            "httpd",
            "-f",
            "-p",
            &port.to_string(),
            "-h",
        ])
        .arg(&root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let bg = Bg(child);
    eventually(&format!("httpd to listen on port {port} in {ns}"), || {
        let out = ns_exec(ns, &["ss", "-ltnH"]);
        String::from_utf8_lossy(&out.stdout).contains(&format!(":{port} "))
    });
    bg
}

/// HTTP GET from inside `ns` with curl; the body, or panic.
pub fn http_get(ns: &str, url: &str) -> String {
    ns_sh(ns, &["curl", "-sS", "--max-time", "5", url])
}

pub fn ping(ns: &str, ip: &str) {
    ns_sh(ns, &["ping", "-c1", "-W2", ip]);
}

/// kubelet's CNI_ARGS for pod `<namespace>/<name>`.
pub fn kubelet_args(namespace: &str, name: &str, cid: &str) -> (String, String) {
    (
        "CNI_ARGS".into(),
        format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID={cid}"),
    )
}

pub fn vnet_bin() -> PathBuf {
    bin_dir().join("azure-vnet")
}

/// azure-vnet's host veth name for a key (`<ns>.<pod>`, or `<cid>.<ifname>`): `azv` + the
/// first 11 hex digits of SHA-1(key) (spec B.3.1).
pub fn host_veth(key: &str) -> String {
    let hex = sha1_smol::Sha1::from(key).digest().to_string();
    format!("azv{}", &hex[..11])
}

/// Hold the kernel lock the plugins take on `path` (as they do: flock on the file), until
/// the returned file is dropped.
pub fn hold_lock(path: &Path) -> std::fs::File {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap();
    fs2::FileExt::lock_exclusive(&f).unwrap();
    f
}

/// Wait until `cond` holds (kernel work that finishes asynchronously, e.g. netns teardown).
/// The limit is generous: the kernel destroys deleted namespaces one after another on one
/// worker for the whole machine, so other tests' teardowns queue ahead of this one's.
pub fn eventually(what: &str, cond: impl Fn() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "timed out waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Copy a file that will be executed, with `cp`: the new file's only writer is then `cp`, never
/// this process, whose descriptors a child forked by another test thread holds until it
/// execs; an exec of the file meanwhile would fail with ETXTBSY ("text file busy").
pub fn copy_executable(src: &Path, dst: &Path) {
    // A new inode: a process may be running the file being replaced.
    let _ = std::fs::remove_file(dst);
    let out = Command::new("cp").arg(src).arg(dst).output().unwrap();
    assert!(
        out.status.success(),
        "cp {} {}: {}",
        src.display(),
        dst.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Write a file that will be executed (mode 0755), the same way as [`copy_executable`].
pub fn write_executable(dst: &Path, content: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    let staged = PathBuf::from(format!("{}.staged", dst.display()));
    std::fs::write(&staged, content).unwrap();
    copy_executable(&staged, dst);
    std::fs::remove_file(&staged).unwrap();
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// How many waiters the kernel has queued for a `flock` on `path`.
pub fn flock_waiters(path: &Path) -> usize {
    flock_waiter_pids(path).len()
}

/// The processes the kernel has queued for a `flock` on `path`: the `->` lines of
/// `/proc/locks` naming its device and inode (`MAJ:MIN:INODE`, the first two in hex), whose
/// field before that is the waiter's process ID.
pub fn flock_waiter_pids(path: &Path) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt;
    let Ok(md) = std::fs::metadata(path) else {
        return Vec::new();
    };
    let dev = md.dev();
    let id = format!(
        "{:02x}:{:02x}:{}",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev),
        md.ino()
    );
    std::fs::read_to_string("/proc/locks")
        .unwrap()
        .lines()
        .filter(|l| l.contains(" -> "))
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let at = fields.iter().position(|f| *f == id)?;
            fields.get(at.checked_sub(1)?)?.parse().ok()
        })
        .collect()
}

/// Names of links in namespace `ns`.
pub fn links(ns: &str) -> Vec<String> {
    ns_sh(ns, &["ip", "-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

pub fn routes(ns: &str) -> String {
    ns_sh(ns, &["ip", "-4", "route", "show"])
}

pub fn vnet_state(tb: &Testbed, n: &str) -> Value {
    let p = tb.run_dir(n).join("azure-vnet.json");
    if p.exists() {
        read_json(&p)
    } else {
        Value::Null
    }
}

/// All endpoint records of network `net` in an azure-vnet.json document.
pub fn endpoints(state: &Value, net: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    if let Some(exts) = state["Network"]["ExternalInterfaces"].as_object() {
        for ext in exts.values() {
            if let Some(eps) = ext["Networks"][net]["Endpoints"].as_object() {
                for (k, v) in eps {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
    }
    out
}

/// The seed's azure-vnet entry at 1.1.0 (so GC/STATUS are allowed), on the file source.
pub const VNET_CONF: &str = r#"{"cniVersion":"1.1.0","name":"azure","type":"azure-vnet","mode":"transparent","ipsToRouteViaHost":["169.254.20.10"],"ipam":{"type":"azure-vnet-ipam","environment":"file"}}"#;

/// Run azure-vnet in node `n` for container `cid` in `netns`, with optional pod identity.
pub fn vnet_call(
    tb: &Testbed,
    n: &str,
    cmd: &str,
    cid: &str,
    netns: &str,
    pod: Option<&str>,
    conf: &str,
) -> PluginOut {
    let mut env = with(tb.env(n), &cni_env(cmd, cid, netns, "eth0"));
    if let Some(pod) = pod {
        env.push(kubelet_args("default", pod, cid));
    }
    run_plugin(Some(&tb.node(n)), &vnet_bin(), &env, conf.as_bytes())
}

/// Everything a failed or repeated operation must leave as it was on a node and in a pod.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub node_links: Vec<String>,
    pub node_routes: String,
    pub vnet_state: Option<Vec<u8>>,
    pub ips_in_use: BTreeMap<String, String>,
    pub pod_links: Vec<String>,
}

pub fn snapshot(tb: &Testbed, n: &str, pod_ns: &str) -> Snapshot {
    let mut node_links = links(&tb.node(n));
    node_links.sort();
    let mut pod_links = links(pod_ns);
    pod_links.sort();
    let ipam = tb.run_dir(n).join("azure-vnet-ipam.json");
    Snapshot {
        node_links,
        node_routes: routes(&tb.node(n)),
        vnet_state: std::fs::read(tb.run_dir(n).join("azure-vnet.json")).ok(),
        ips_in_use: if ipam.exists() {
            ips_in_use(&read_json(&ipam))
        } else {
            BTreeMap::new()
        },
        pod_links,
    }
}

impl Testbed {
    /// Attach a second NIC to node-a (eth1, 10.225.0.4/16, `secondaries` addresses from
    /// 10.225.0.5), listed by node-a's sources after the primary NIC (IsPrimary=false).
    pub fn second_nic(&self, secondaries: u32) {
        let st = Command::new(repo().join("scripts/testbed.sh"))
            .args(["nic", &self.tag])
            .arg(self.dir.path())
            .arg(secondaries.to_string())
            .status()
            .unwrap();
        assert!(st.success(), "testbed nic failed");
    }
}

/// Run `f` on a thread in a private mount namespace (what it mounts, and the processes it
/// starts, see; nothing outside does), and return what it returned.
pub fn in_private_mounts<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
            nix::mount::mount(
                None::<&str>,
                "/",
                None::<&str>,
                nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .unwrap();
            f()
        })
        .join()
        .unwrap()
    })
}

/// A tmpfs of `size` (e.g. "64k") on `dir`; call inside `in_private_mounts`.
pub fn mount_tmpfs(dir: &Path, size: &str) {
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some(format!("size={size},mode=0755").as_str()),
    )
    .unwrap();
}
