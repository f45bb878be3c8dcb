//! containerd's CRI plugin on a simulated node, driven as kubelet drives it: the fixture of
//! tests/cri.rs (and the node namespace holder of tests/podman.rs).
//!
//! `CriNode` runs `scripts/cri-node.py containerd` (the same harness the shell scripts use): a
//! holder process in the node's network namespace owning a private mount namespace (tmpfs on
//! /run, a private /var/lib/cni), containerd started and restarted inside it with its root,
//! state, sockets and CNI directories under a temp dir, the pause and busybox images built
//! offline. The CRI calls go through `tools/criclient` (kubelet's calls over gRPC), so the
//! plugins run exactly as on a node: exec'd by containerd's go-cni with kubelet's CNI_ARGS, the
//! `portMappings` capability, libcni's result cache, a DEL on StopPodSandbox and another on
//! RemovePodSandbox. Everything goes on Drop (the holder stops and removes the sandboxes, then
//! kills what is left; the fixture sweeps after it if it died), so a failing assertion leaves
//! no process, mount or namespace behind.

use super::cgroups::CgroupSweep;
use super::*;

use std::collections::BTreeSet;
use std::fs::File;
use std::sync::{Mutex, MutexGuard, OnceLock};

pub const BUSYBOX_IMAGE: &str = "localhost/rcbusybox:latest";

/// One containerd at a time: two CPUs, and runc's shared `k8s.io` cgroup parents.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

pub fn cri_node_py() -> PathBuf {
    repo().join("scripts/cri-node.py")
}

/// The CRI client, built once per test process by scripts/build-criclient.sh (scripts/test.sh
/// builds it first, so this is normally a no-op).
pub fn criclient() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = Command::new(repo().join("scripts/build-criclient.sh"))
                .stderr(Stdio::inherit())
                .output()
                .expect("run scripts/build-criclient.sh");
            assert!(
                out.status.success(),
                "scripts/build-criclient.sh failed (protoc missing? run scripts/install-deps.sh)"
            );
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        })
        .clone()
}

pub const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// Fail loudly (never skip) when a tool a root-only test needs is missing.
pub fn need_cmd(name: &str) -> PathBuf {
    PATH.split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is missing: run scripts/install-deps.sh (scripts/test.sh does)")
        })
}

pub fn need_file(p: &Path) {
    assert!(
        p.is_file(),
        "{} is missing: run scripts/install-deps.sh (scripts/test.sh does)",
        p.display()
    );
}

fn preflight() {
    for c in [
        "containerd",
        "containerd-shim-runc-v2",
        "ctr",
        "runc",
        "nsenter",
        "unshare",
        "mount",
        "gcc",
        "curl",
        "python3",
        "iptables-save",
        "ip",
    ] {
        need_cmd(c);
    }
    for f in [
        "/bin/busybox",
        "/usr/lib/cni/portmap",
        "/usr/lib/cni/loopback",
        // gcc -static needs the static libc of libc6-dev
        "/usr/lib/x86_64-linux-gnu/libc.a",
    ] {
        need_file(Path::new(f));
    }
    for b in ["azure-vnet", "azure-vnet-ipam"] {
        need_file(&bin_dir().join(b));
    }
}

/// A pod as kubelet describes it to RunPodSandbox.
#[derive(Clone, Debug)]
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub attempt: u32,
    /// (hostPort, containerPort), TCP
    pub ports: Vec<(u16, u16)>,
    /// hostNetwork: the node's network namespace, no CNI.
    pub host_network: bool,
}

impl Pod {
    pub fn new(name: &str, namespace: &str) -> Pod {
        // A UID shaped as the API server makes them, unique per call.
        static N: AtomicU32 = AtomicU32::new(0);
        let uid = format!(
            "{:08x}-aaaa-4bbb-8ccc-{:012x}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        Pod {
            name: name.into(),
            namespace: namespace.into(),
            uid,
            attempt: 0,
            ports: Vec::new(),
            host_network: false,
        }
    }
    /// A hostNetwork pod (a DaemonSet's, as a CNI plugin's installer is).
    pub fn host_network(mut self) -> Pod {
        self.host_network = true;
        self
    }
    pub fn host_port(mut self, host: u16, container: u16) -> Pod {
        self.ports.push((host, container));
        self
    }
    /// kubelet's next sandbox for the same pod (same name, namespace and UID).
    pub fn next_attempt(&self) -> Pod {
        Pod {
            attempt: self.attempt + 1,
            ..self.clone()
        }
    }
    fn args(&self, log_root: &Path) -> Vec<String> {
        let mut a = vec![
            "--name".into(),
            self.name.clone(),
            "--namespace".into(),
            self.namespace.clone(),
            "--uid".into(),
            self.uid.clone(),
            "--attempt".into(),
            self.attempt.to_string(),
            "--log-dir".into(),
            log_root
                .join(format!("{}_{}_{}", self.namespace, self.name, self.uid))
                .display()
                .to_string(),
        ];
        for (h, c) in &self.ports {
            a.push("--port".into());
            a.push(format!("{h}:{c}"));
        }
        if self.host_network {
            a.push("--host-network".into());
        }
        a
    }
    /// Where the runtime writes a container's log (kubelet's layout under the pod's log dir).
    fn log_path(&self, log_root: &Path, container: &str, attempt: u32) -> PathBuf {
        log_root
            .join(format!("{}_{}_{}", self.namespace, self.name, self.uid))
            .join(container)
            .join(format!("{attempt}.log"))
    }
}

/// A running sandbox: its ID, its address (PodSandboxStatus) and its pause process.
#[derive(Clone, Debug)]
pub struct Sandbox {
    pub id: String,
    pub ip: String,
    pub pid: u32,
}

impl Sandbox {
    /// The pod's network namespace, as a path usable from the test.
    pub fn netns(&self) -> String {
        format!("/proc/{}/ns/net", self.pid)
    }
}

/// What a criclient call printed and how it exited.
#[derive(Debug)]
pub struct CriOut {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl CriOut {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("criclient printed no JSON ({e}): {self:?}"))
    }
}

/// The plugins' side of a node: binaries in the CNI bin dir, the conflist (none: the conf dir
/// starts empty), the environment containerd passes on to them.
pub struct CniSetup {
    pub bins: Vec<PathBuf>,
    pub conflist: Option<PathBuf>,
    pub env: Vec<(String, String)>,
}

impl CniSetup {
    /// Our two plugins, the seed conflist unchanged, the test's paths and the fake wireserver.
    pub fn seed(tb: &Testbed, n: &str, ws: &Wireserver) -> CniSetup {
        CniSetup {
            bins: vec![
                bin_dir().join("azure-vnet"),
                bin_dir().join("azure-vnet-ipam"),
            ],
            conflist: Some(repo().join("conflist/10-azure.conflist")),
            env: with(
                tb.env(n),
                &[("AZURE_VNET_WIRESERVER_URL".into(), ws.url.clone())],
            ),
        }
    }
    /// A node before its CNI plugin is installed: none of our binaries (the node image's
    /// loopback and portmap only), no conflist; the plugins' environment as `seed`'s.
    pub fn not_installed(tb: &Testbed, n: &str, ws: &Wireserver) -> CniSetup {
        CniSetup {
            bins: Vec::new(),
            conflist: None,
            ..CniSetup::seed(tb, n, ws)
        }
    }
    pub fn without_bin(mut self, name: &str) -> CniSetup {
        self.bins
            .retain(|b| b.file_name().is_none_or(|f| f != name));
        self
    }
}

pub struct CriNode {
    pub node: String,
    pub dir: TempDir,
    pub sock: PathBuf,
    /// The plugins' log directory (AZURE_VNET_LOG_DIR), for diagnostics.
    pub plugin_logs: Option<PathBuf>,
    holder: Option<Child>,
    cgroups: CgroupSweep,
    _one: MutexGuard<'static, ()>,
}

impl CriNode {
    pub fn start(tb: &Testbed, n: &str, cni: CniSetup) -> CriNode {
        require_root();
        preflight();
        let client = criclient();
        let one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        // Shims and containers are reparented to the holder; if it dies, to us: we reap them.
        nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
        let dir = TempDir::new("cri");
        let mut cmd = Command::new("python3");
        cmd.arg(cri_node_py())
            .arg("containerd")
            .arg(dir.path())
            .arg(tb.node(n))
            .arg("--criclient")
            .arg(&client);
        match &cni.conflist {
            Some(c) => cmd.arg("--conflist").arg(c),
            None => cmd.arg("--no-conflist"),
        };
        for b in &cni.bins {
            cmd.arg("--bin").arg(b);
        }
        for (k, v) in &cni.env {
            cmd.arg("--env").arg(format!("{k}={v}"));
        }
        let out = File::create(dir.join("cri-node.out")).unwrap();
        let holder = cmd
            .env_clear()
            .env("PATH", PATH)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn scripts/cri-node.py");
        let node = CriNode {
            node: tb.node(n),
            sock: dir.join("containerd.sock"),
            plugin_logs: cni
                .env
                .iter()
                .find(|(k, _)| k == "AZURE_VNET_LOG_DIR")
                .map(|(_, v)| PathBuf::from(v)),
            dir,
            holder: Some(holder),
            cgroups: CgroupSweep::new("k8s.io"),
            _one: one,
        };
        let ready = Command::new("python3")
            .arg(cri_node_py())
            .arg("ready")
            .arg(node.dir.path())
            .output()
            .unwrap();
        assert!(
            ready.status.success(),
            "containerd did not come up: {}\n{}",
            String::from_utf8_lossy(&ready.stderr),
            node.diag()
        );
        node
    }

    /// One criclient call against this node's containerd.
    pub fn call(&self, args: &[&str]) -> CriOut {
        let out = Command::new(criclient())
            .arg(&self.sock)
            .args(args)
            .env_clear()
            .env("PATH", PATH)
            .output()
            .unwrap();
        CriOut {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn call_ok(&self, args: &[&str]) -> Value {
        let out = self.call(args);
        assert!(
            out.ok,
            "criclient {args:?} failed: {}\n{}",
            out.stderr,
            self.diag()
        );
        out.json()
    }

    /// RunPodSandbox: the sandbox ID, or the runtime's error as the caller sees it.
    pub fn try_runp(&self, pod: &Pod) -> Result<String, String> {
        let args = pod.args(&self.dir.join("pods"));
        let mut a: Vec<&str> = vec!["runp"];
        a.extend(args.iter().map(String::as_str));
        let out = self.call(&a);
        if out.ok {
            Ok(out.json()["id"].as_str().unwrap_or_default().to_string())
        } else {
            Err(out.stderr)
        }
    }

    /// RunPodSandbox that must succeed, then PodSandboxStatus: its address and pause process.
    pub fn runp(&self, pod: &Pod) -> Sandbox {
        let id = self
            .try_runp(pod)
            .unwrap_or_else(|e| panic!("RunPodSandbox {pod:?}: {e}\n{}", self.diag()));
        self.sandbox(&id)
    }

    pub fn sandbox(&self, id: &str) -> Sandbox {
        let st = self.call_ok(&["statusp", id, "--verbose"]);
        let ip = st["status"]["network"]["ip"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let pid = st["info"]["info"]["pid"].as_u64().unwrap_or(0) as u32;
        assert!(pid > 0, "no pause pid in PodSandboxStatus: {st}");
        Sandbox {
            id: id.to_string(),
            ip,
            pid,
        }
    }

    /// PodSandboxStatus's state: SANDBOX_READY (0) or SANDBOX_NOTREADY (1).
    pub fn ready(&self, id: &str) -> bool {
        self.call_ok(&["statusp", id])["status"]["state"] == 0
    }

    pub fn stopp(&self, id: &str) -> CriOut {
        self.call(&["stopp", id])
    }
    pub fn rmp(&self, id: &str) -> CriOut {
        self.call(&["rmp", id])
    }
    /// StopPodSandbox then RemovePodSandbox, both of which must succeed (kubelet's order).
    pub fn stop_remove(&self, id: &str) {
        for (what, out) in [
            ("StopPodSandbox", self.stopp(id)),
            ("RemovePodSandbox", self.rmp(id)),
        ] {
            assert!(out.ok, "{what} {id}: {}\n{}", out.stderr, self.diag());
        }
    }

    /// ListPodSandbox: the IDs of the sandboxes containerd knows.
    pub fn sandbox_ids(&self) -> BTreeSet<String> {
        self.call_ok(&["lsp"])["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["id"].as_str().map(String::from))
            .collect()
    }

    /// CreateContainer + StartContainer: busybox httpd on port 80 in the sandbox.
    pub fn start_httpd(&self, sb: &Sandbox, pod: &Pod) -> String {
        let args = pod.args(&self.dir.join("pods"));
        // kubelet's container of a new sandbox of the pod is the container's next attempt.
        let attempt = pod.attempt.to_string();
        let mut a: Vec<&str> = vec!["create", &sb.id];
        a.extend(args.iter().map(String::as_str));
        a.extend([
            "--image",
            BUSYBOX_IMAGE,
            "--container",
            "web",
            "--container-attempt",
            &attempt,
            "--",
            "/bin/httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/var/www",
        ]);
        let id = self.call_ok(&a)["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.call_ok(&["start", &id]);
        // It listens once the container runs.
        let t = Instant::now();
        while !in_pod(sb, &["ss", "-ltnH"]).contains(":80 ") {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "httpd in {} does not listen\n{}",
                sb.id,
                self.diag()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        id
    }

    /// The CNI directories containerd uses (its `bin_dir` and `conf_dir`): a node's
    /// /opt/cni/bin and /etc/cni/net.d.
    pub fn cni_bin_dir(&self) -> PathBuf {
        self.dir.join("cni/bin")
    }
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.dir.join("cni/net.d")
    }

    /// `ctr images import` of an OCI image archive into CRI's namespace (k8s.io).
    pub fn import_image(&self, archive: &Path) -> String {
        let sock = self.sock.display().to_string();
        let tar = archive.display().to_string();
        self.exec(&["ctr", "-n", "k8s.io", "-a", &sock, "images", "import", &tar])
    }

    /// CRI's Status: whether the NetworkReady condition holds (a conflist containerd could load
    /// is in its conf_dir), and the condition as the runtime states it.
    pub fn network_ready(&self) -> (bool, Value) {
        let st = self.call_ok(&["runtime-status"]);
        let cond = st["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "NetworkReady")
            .cloned()
            .unwrap_or(Value::Null);
        (cond["status"] == true, cond)
    }

    /// CreateContainer + StartContainer of `image` in `sb` (`extra`: criclient's CONTAINER
    /// options: mounts, security context, limits), its command the image's entrypoint.
    pub fn start_container(
        &self,
        sb: &Sandbox,
        pod: &Pod,
        name: &str,
        image: &str,
        extra: &[String],
    ) -> String {
        let args = pod.args(&self.dir.join("pods"));
        let mut a: Vec<&str> = vec!["create", &sb.id];
        a.extend(args.iter().map(String::as_str));
        a.extend(["--image", image, "--container", name]);
        a.extend(extra.iter().map(String::as_str));
        let id = self.call_ok(&a)["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.call_ok(&["start", &id]);
        id
    }

    /// Wait for a container to exit: its exit code.
    pub fn wait_exit(&self, id: &str, limit: Duration) -> i64 {
        let t = Instant::now();
        loop {
            let st = self.call_ok(&["status", id]);
            // CONTAINER_EXITED
            if st["status"]["state"] == 2 {
                return st["status"]["exitCode"]
                    .as_i64()
                    .or_else(|| st["status"]["exit_code"].as_i64())
                    .unwrap_or(-1);
            }
            assert!(
                t.elapsed() < limit,
                "container {id} still runs after {limit:?}: {st}\n{}",
                self.diag()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A container's log as the runtime wrote it (CRI's format: `<time> stdout F <line>`),
    /// reduced to its lines of output.
    pub fn container_log(&self, pod: &Pod, container: &str) -> String {
        let p = pod.log_path(&self.dir.join("pods"), container, 0);
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .lines()
            .map(|l| l.splitn(4, ' ').nth(3).unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The OCI runtime spec containerd made for a container (`ctr containers info`): what the
    /// process really runs with (user, capabilities, no_new_privs, read-only root, mounts).
    pub fn oci_spec(&self, id: &str) -> Value {
        let sock = self.sock.display().to_string();
        let info: Value = serde_json::from_str(&self.exec(&[
            "ctr",
            "-n",
            "k8s.io",
            "-a",
            &sock,
            "containers",
            "info",
            id,
        ]))
        .expect("ctr containers info prints JSON");
        info["Spec"].clone()
    }

    /// Put a plugin binary (back) into the CNI bin dir containerd uses.
    pub fn install_bin(&self, bin: &Path) {
        let name = bin.file_name().expect("a file");
        copy_executable(bin, &self.dir.join("cni/bin").join(name));
    }

    /// containerd SIGKILLed (a crash) and started again in the same mount namespace.
    pub fn restart_containerd(&self) {
        let out = Command::new("python3")
            .arg(cri_node_py())
            .arg("restart")
            .arg(self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "containerd restart: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.diag()
        );
    }

    pub fn containerd_pid(&self) -> u32 {
        std::fs::read_to_string(self.dir.join("containerd.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// A command in the node's network namespace and the holder's private mount namespace
    /// (what containerd and the plugins see: /run/netns, /var/lib/cni).
    pub fn exec(&self, args: &[&str]) -> String {
        let out = self.exec_out(args);
        assert!(
            out.status.success(),
            "{args:?} in the node's mount namespace: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Like `exec`, whatever the command's exit status.
    pub fn exec_out(&self, args: &[&str]) -> Output {
        Command::new("python3")
            .arg(cri_node_py())
            .arg("exec")
            .arg(self.dir.path())
            .arg("--")
            .args(args)
            .output()
            .unwrap()
    }

    /// The pod netns pins CRI made (/run/netns/cni-* in the private /run).
    pub fn netns_pins(&self) -> BTreeSet<String> {
        self.exec(&["ls", "-1", "/run/netns"])
            .lines()
            .map(String::from)
            .collect()
    }

    /// libcni's result cache (`<network>-<sandbox id>-<ifname>`, `cni-loopback-...`).
    pub fn cache_entries(&self) -> BTreeSet<String> {
        std::fs::read_dir(self.dir.join("cni-cache/results"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// The cached ADD of `sandbox` on the azure network: what go-cni passed (cniArgs,
    /// capabilityArgs) and the result.
    pub fn cached(&self, sandbox: &str) -> Value {
        read_json(
            &self
                .dir
                .join(&format!("cni-cache/results/azure-{sandbox}-eth0")),
        )
    }

    fn tail(&self, name: &str, n: usize) -> String {
        let t = std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// containerd's and the holder's logs, the plugins' logs: for assertion messages.
    pub fn diag(&self) -> String {
        let mut s = format!(
            "--- cri-node.py:\n{}\n--- holder.log:\n{}\n--- containerd.log (tail):\n{}\n",
            self.tail("cri-node.out", 20),
            self.tail("holder.log", 20),
            self.tail("containerd.log", 40)
        );
        if let Some(d) = &self.plugin_logs {
            for f in ["azure-vnet.log", "azure-vnet-ipam.log"] {
                let t = std::fs::read_to_string(d.join(f)).unwrap_or_default();
                let lines: Vec<&str> = t.lines().collect();
                s.push_str(&format!(
                    "--- {f} (tail):\n{}\n",
                    lines[lines.len().saturating_sub(30)..].join("\n")
                ));
            }
        }
        s
    }
}

impl Drop for CriNode {
    fn drop(&mut self) {
        // The holder stops and removes every sandbox through CRI, stops containerd, deletes what
        // runc still runs and kills what is left under it.
        let _ = Command::new("python3")
            .arg(cri_node_py())
            .args(["stop", "--timeout", "120"])
            .arg(self.dir.path())
            .status();
        if let Some(mut h) = self.holder.take() {
            let t = Instant::now();
            while h.try_wait().ok().flatten().is_none() && t.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(25));
            }
            let _ = h.kill();
            let _ = h.wait();
        }
        // If the holder died, its orphans are ours: shims (their command line names our socket)
        // and the containers under them.
        sweep(&self.dir.path().display().to_string());
        // runc's cgroups of containers it could not delete (the holder died): empty once their
        // processes are gone.
        self.cgroups.remove_new();
    }
}

/// `nsenter --net=<pod> <args>` from the test's mount namespace: stdout, or panic.
pub fn in_pod(sb: &Sandbox, args: &[&str]) -> String {
    let out = in_pod_out(sb, args);
    assert!(
        out.status.success(),
        "in pod {} ({}): {args:?}: {}{}",
        sb.id,
        sb.ip,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn in_pod_out(sb: &Sandbox, args: &[&str]) -> Output {
    Command::new("nsenter")
        .arg(format!("--net={}", sb.netns()))
        .arg("--")
        .args(args)
        .output()
        .unwrap()
}

/// HTTP GET from namespace `ns`, retried briefly (a server just started, a DNAT just added).
pub fn http_from(ns: &str, url: &str) -> String {
    let t = Instant::now();
    loop {
        let out = ns_exec(ns, &["curl", "-sS", "--max-time", "2", url]);
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no HTTP answer from {url} in {ns}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One line of /proc/<pid>/stat: (pid, comm, state, ppid).
pub fn procs() -> Vec<(i32, String, char, i32)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // "<pid> (<comm>) <state> <ppid> ...": comm may contain spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let mut rest = stat[close + 1..].split_whitespace();
        let state = rest.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = rest.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        out.push((pid, comm, state, ppid));
    }
    out
}

/// Processes whose command line mentions `needle`.
pub fn pids_mentioning(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    procs()
        .into_iter()
        .filter(|(pid, ..)| *pid != me)
        .filter(|(pid, ..)| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .map(|(pid, ..)| pid)
        .collect()
}

/// Kill what still mentions `needle` (a dead holder's shims, conmons...), then reap the
/// runtime processes reparented to us (we are a subreaper) and nothing else of ours.
pub fn sweep(needle: &str) {
    use nix::sys::signal::{kill, Signal};
    use nix::sys::wait::waitpid;
    use nix::unistd::Pid;
    for pid in pids_mentioning(needle) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let me = std::process::id() as i32;
    let ours = |comm: &str| {
        comm.starts_with("containerd") || ["pause", "httpd", "runc", "conmon"].contains(&comm)
    };
    let t = Instant::now();
    loop {
        let orphans: Vec<(i32, char)> = procs()
            .into_iter()
            .filter(|(_, comm, _, ppid)| *ppid == me && ours(comm))
            .map(|(pid, _, state, _)| (pid, state))
            .collect();
        if orphans.is_empty() || t.elapsed() > Duration::from_secs(10) {
            return;
        }
        for (pid, state) in orphans {
            if state != 'Z' {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = waitpid(
                Pid::from_raw(pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// What our plugins and portmap hold on a node, to compare with the sandboxes that live.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NodeView {
    /// IPAM: address -> owner (container ID)
    pub ipam: BTreeMap<String, String>,
    /// azure-vnet.json: address -> (container ID, pod name, pod namespace, host veth)
    pub records: BTreeMap<String, (String, String, String, String)>,
    /// host routes `<ip> dev azv…`: address -> device
    pub host_routes: BTreeMap<String, String>,
    pub azv_links: BTreeSet<String>,
    /// portmap's per-sandbox chains (CNI-DN-…) and DNAT rules
    pub portmap: BTreeSet<String>,
}

impl NodeView {
    pub fn of(tb: &Testbed, n: &str) -> NodeView {
        let node = tb.node(n);
        let ipam_file = tb.run_dir(n).join("azure-vnet-ipam.json");
        let ipam = if ipam_file.exists() {
            ips_in_use(&read_json(&ipam_file))
        } else {
            BTreeMap::new()
        };
        let mut records = BTreeMap::new();
        for ep in endpoints(&vnet_state(tb, n), "azure").values() {
            let s = |k: &str| ep[k].as_str().unwrap_or_default().to_string();
            let ip = ep["IPAddresses"][0]["IP"].as_str().unwrap_or_default();
            let prev = records.insert(
                ip.to_string(),
                (
                    s("ContainerID"),
                    s("PODName"),
                    s("PODNameSpace"),
                    s("HostIfName"),
                ),
            );
            assert!(prev.is_none(), "two endpoint records for {ip}");
        }
        let host_routes = sh(&["ip", "-n", &node, "-4", "route", "show", "table", "all"])
            .lines()
            .filter_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                let dev = w
                    .iter()
                    .position(|x| *x == "dev")
                    .and_then(|i| w.get(i + 1))?;
                dev.starts_with("azv")
                    .then(|| (w[0].trim_end_matches("/32").to_string(), dev.to_string()))
            })
            .collect();
        let azv_links = links(&node)
            .into_iter()
            .filter(|l| l.starts_with("azv"))
            .collect();
        let portmap = ns_sh(&node, &["iptables-save", "-t", "nat"])
            .lines()
            .filter(|l| l.contains("CNI-DN-") || l.contains("DNAT --to-destination"))
            .map(String::from)
            .collect();
        NodeView {
            ipam,
            records,
            host_routes,
            azv_links,
            portmap,
        }
    }

    /// Nothing of any pod left: no address in use, no record, no host route, no portmap rule.
    /// (`azv` links go with their pod's namespace, asynchronously: see `no_azv_links`.)
    pub fn assert_empty(&self, what: &str) {
        assert!(
            self.ipam.is_empty(),
            "{what}: addresses in use: {:?}",
            self.ipam
        );
        assert!(
            self.records.is_empty(),
            "{what}: records: {:?}",
            self.records
        );
        assert!(
            self.host_routes.is_empty(),
            "{what}: host routes: {:?}",
            self.host_routes
        );
        assert!(
            self.portmap.is_empty(),
            "{what}: portmap: {:?}",
            self.portmap
        );
    }
}

/// The plugin log lines `{"command": cmd, "containerID": cid, "msg": "done"}` in `file`.
pub fn logged(log_dir: &Path, file: &str, cmd: &str, cid: &str) -> Vec<Value> {
    std::fs::read_to_string(log_dir.join(file))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["command"] == cmd && v["containerID"] == cid)
        .collect()
}

/// Wait for the kernel to delete the `azv` links of removed pods (they go with the pod's
/// network namespace), until exactly `want` are left.
pub fn azv_links_become(tb: &Testbed, n: &str, want: &BTreeSet<String>) {
    let t = Instant::now();
    loop {
        let now = NodeView::of(tb, n).azv_links;
        if &now == want {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "azv links on node-{n}: {now:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
