//! The CRI benchmark: a pod sandbox's start and removal as the runtime sees them, through
//! containerd's CRI plugin driven as kubelet drives it, with our plugins and with the CNI
//! project's reference plugins, and without a network, in one run.
//!
//!   sudo scripts/bench.sh [--cri-sandboxes 50] [--cri-batch 10] [--cri-source wireserver|file]
//!                         [--cri-out FILE] [--cri-only]
//!   (cargo bench --bench cri -- [--sandboxes N] [--batch N] [--source S] [--out FILE]
//!                               [--bin-dir DIR] [--criclient PATH])
//!
//! Three containerds set up alike by scripts/cri-node.py (the CRI tests' harness: containerd in
//! a simulated node's network namespace and a private mount namespace with a tmpfs on /run, its
//! root, state and CNI directories under a throw-away directory on disk):
//! * ours, on node-a: the seed conflist unchanged (azure-vnet in transparent mode +
//!   azure-vnet-ipam on the wireserver source, the fake wireserver on node-a's loopback, then
//!   portmap), our plugins installed as one file under two names; `--source file`: the same
//!   conflist with `ipam.environment: file` (node-a's interfaces.json). Our state on the private
//!   /run (a tmpfs, as /var/run on a node), our logs on disk;
//! * the reference, on node-b: Debian's ptp + host-local over the same /16 (its leases on the
//!   private /run too), then the same portmap: only the main and IPAM plugins differ;
//! * no network, on node-a: hostNetwork sandboxes (no network namespace, no CNI call), to show
//!   how much of a sandbox's start and removal is networking.
//!
//! Times are the CRI client's `elapsed_ms` (the gRPC call alone, without the client's process
//! start or connection set-up). Measured: RunPodSandbox, and StopPodSandbox + RemovePodSandbox
//! (each runs a CNI DEL), for N sandboxes one after the other (they accumulate, then are removed
//! one after the other), then N more in batches of B concurrent calls (each removal: Stop then
//! Remove, B pods at a time). The systems take turns call by call (sequential) or batch by batch
//! (concurrent) in a rotating order, so machine noise lands on all of them. One warm-up sandbox
//! per system is started and removed first, unmeasured.
//!
//! Prints a markdown table, writes every sample as JSON (default target/bench/results.cri.json),
//! checks that nothing is left (sandboxes, addresses, records, leases, host routes, veths), and
//! exits 1 if any call failed or anything was left. Everything is removed on exit, also on
//! SIGINT/SIGTERM/SIGHUP and on a panic.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};
use serde_json::{json, Value};

#[path = "../tests/common/cgroups.rs"]
mod cgroups;
use cgroups::CgroupSweep;

const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Opts {
    sandboxes: usize,
    batch: usize,
    /// ours' address source: `wireserver` (the seed conflist unchanged) or `file`
    source: String,
    out: PathBuf,
    /// Where our executable is (scripts/bench.sh passes dist/, the static release build);
    /// default: the one cargo built for this bench.
    bin_dir: Option<PathBuf>,
    criclient: PathBuf,
}

fn opts() -> Opts {
    let mut o = Opts {
        sandboxes: 50,
        batch: 10,
        source: "wireserver".into(),
        out: repo().join("target/bench/results.cri.json"),
        bin_dir: None,
        criclient: repo().join("target/criclient/release/criclient"),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let val = || args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--sandboxes" => o.sandboxes = val().parse().expect("--sandboxes N"),
            "--batch" => o.batch = val().parse().expect("--batch N"),
            "--source" => o.source = val(),
            "--out" => o.out = PathBuf::from(val()),
            "--bin-dir" => o.bin_dir = Some(PathBuf::from(val())),
            "--criclient" => o.criclient = PathBuf::from(val()),
            "--bench" => {
                i += 1;
                continue;
            }
            other => panic!(
                "unknown argument {other:?} (--sandboxes N --batch N --source wireserver|file \
                 --out FILE --bin-dir DIR --criclient PATH)"
            ),
        }
        i += 2;
    }
    assert!(
        (2..=250).contains(&o.sandboxes),
        "--sandboxes must be 2..=250 (the testbed's secondary IPs per node)"
    );
    assert!(
        (1..=o.sandboxes).contains(&o.batch),
        "--batch must be 1..=--sandboxes"
    );
    assert!(
        ["wireserver", "file"].contains(&o.source.as_str()),
        "--source wireserver|file"
    );
    o
}

// ---- the three systems ----------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    Ours,
    Reference,
    NoNetwork,
}

impl Kind {
    fn key(self) -> &'static str {
        match self {
            Kind::Ours => "ours",
            Kind::Reference => "reference",
            Kind::NoNetwork => "noNetwork",
        }
    }
}

struct System {
    kind: Kind,
    /// the node's network namespace (ip netns name)
    node: String,
    /// scripts/cri-node.py's directory
    dir: PathBuf,
    sock: PathBuf,
}

// ---- clean-up: on exit, on a panic, on a signal ---------------------------------------------

struct Teardown {
    tag: String,
    base: PathBuf,
    holders: Vec<(PathBuf, Child)>,
    wireserver: Option<Child>,
    cgroups: CgroupSweep,
}

static STATE: Mutex<Option<Teardown>> = Mutex::new(None);

fn state() -> std::sync::MutexGuard<'static, Option<Teardown>> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Everything the run made goes, once; the lock is held throughout, so a second caller (the
/// main thread after a signal) waits until it is done.
fn teardown() {
    let mut g = state();
    let Some(mut t) = g.take() else { return };
    // Each holder stops and removes the sandboxes left (their CNI DELs run), stops containerd,
    // deletes what runc still runs, kills what is left under it.
    std::thread::scope(|s| {
        for (dir, child) in &mut t.holders {
            s.spawn(move || {
                let _ = Command::new("python3")
                    .arg(repo().join("scripts/cri-node.py"))
                    .args(["stop", "--timeout", "120"])
                    .arg(&*dir)
                    .stdout(Stdio::null())
                    .status();
                let _ = child.kill();
                let _ = child.wait();
            });
        }
    });
    if let Some(mut ws) = t.wireserver.take() {
        let _ = ws.kill();
        let _ = ws.wait();
    }
    sweep(&t.base.display().to_string());
    t.cgroups.remove_new();
    let _ = Command::new(repo().join("scripts/testbed.sh"))
        .args(["down", &t.tag])
        .status();
    let _ = std::fs::remove_dir_all(&t.base);
}

struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        teardown();
    }
}

/// SIGINT, SIGTERM, SIGHUP: clean up, then exit 130. Blocked before any other thread starts (so
/// every thread inherits the mask) and taken by one thread with sigwait. Children start with an
/// empty mask (std's Command resets it).
fn on_signals_clean_up() {
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set.thread_block().expect("block signals");
    std::thread::spawn(move || {
        if let Ok(sig) = set.wait() {
            eprintln!("cri bench: {sig:?}: removing everything");
            teardown();
            std::process::exit(130);
        }
    });
}

/// Processes whose command line names our directory (a dead holder's containerd and shims):
/// SIGKILL, then reap what was reparented to us (we are a subreaper).
fn sweep(needle: &str) {
    use nix::sys::signal::kill;
    use nix::sys::wait::{waitpid, WaitPidFlag};
    use nix::unistd::Pid;
    let me = std::process::id();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid != me
            && std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(nix::sys::wait::WaitStatus::StillAlive) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Ok(_) => {}
            Err(_) => break, // no child left
        }
    }
}

// ---- helpers ----------------------------------------------------------------------------------

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn tail(path: &Path, n: usize) -> String {
    let t = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = t.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One CRI call through the client: its JSON answer, or the runtime's error.
fn cri(o: &Opts, s: &System, args: &[&str]) -> Result<Value, String> {
    let out = Command::new(&o.criclient)
        .arg(&s.sock)
        .args(args)
        .env_clear()
        .env("PATH", PATH)
        .output()
        .map_err(|e| format!("{}: {e}", o.criclient.display()))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("criclient printed no JSON: {e}"))
}

fn elapsed(v: &Value) -> f64 {
    v["elapsed_ms"].as_f64().unwrap_or(f64::NAN)
}

/// A command in a system's node network namespace and private mount namespace: its output
/// ("" if it failed).
fn in_node(s: &System, args: &[&str]) -> String {
    Command::new("python3")
        .arg(repo().join("scripts/cri-node.py"))
        .arg("exec")
        .arg(&s.dir)
        .arg("--")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn links_with_prefix(node: &str, prefix: &str) -> usize {
    run(Command::new("ip").args(["-n", node, "-o", "link", "show"]))
        .lines()
        .filter(|l| l.split(": ").nth(1).is_some_and(|n| n.starts_with(prefix)))
        .count()
}

fn routes_via(node: &str, prefix: &str) -> usize {
    run(Command::new("ip").args(["-n", node, "-4", "route", "show", "table", "all"]))
        .lines()
        .filter(|l| l.contains(&format!(" dev {prefix}")))
        .count()
}

/// The host veths of removed pods go with their network namespaces, asynchronously: wait, so
/// the kernel's cleanup (it holds the RTNL lock) does not disturb the next phase.
fn wait_links_gone(nodes: &[(&str, &str)]) -> usize {
    let t = Instant::now();
    loop {
        let left: usize = nodes.iter().map(|(n, p)| links_with_prefix(n, p)).sum();
        if left == 0 || t.elapsed() > Duration::from_secs(120) {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    s[i.min(s.len() - 1)]
}

fn median(v: &[f64]) -> f64 {
    percentile(v, 50.0)
}

/// The systems in a rotating order: iteration i starts with system i mod 3.
fn rotated(systems: &[System], i: usize) -> Vec<&System> {
    let n = systems.len();
    (0..n).map(|k| &systems[(i + k) % n]).collect()
}

// ---- one sandbox ------------------------------------------------------------------------------

#[derive(Clone, Debug, Default)]
struct Sample {
    pod: String,
    id: String,
    ip: String,
    run_ms: Option<f64>,
    stop_ms: Option<f64>,
    remove_ms: Option<f64>,
    errors: Vec<String>,
}

impl Sample {
    fn stop_remove_ms(&self) -> Option<f64> {
        Some(self.stop_ms? + self.remove_ms?)
    }
    fn json(&self) -> Value {
        json!({"pod": self.pod, "id": self.id, "ip": self.ip, "runMs": self.run_ms,
               "stopMs": self.stop_ms, "removeMs": self.remove_ms,
               "stopRemoveMs": self.stop_remove_ms(), "errors": self.errors})
    }
}

/// One figure of a sample: RunPodSandbox's time, or Stop + Remove's.
type Metric = fn(&Sample) -> Option<f64>;

static UIDS: AtomicU32 = AtomicU32::new(0);

/// RunPodSandbox with kubelet's metadata (hostNetwork for the no-network system).
fn run_pod(o: &Opts, s: &System, pod: &str) -> Sample {
    let uid = format!(
        "{:08x}-bbbb-4ccc-8ddd-{:012x}",
        std::process::id(),
        UIDS.fetch_add(1, Ordering::SeqCst)
    );
    let mut args = vec!["runp", "--name", pod, "--namespace", "bench", "--uid", &uid];
    if s.kind == Kind::NoNetwork {
        args.push("--host-network");
    }
    let mut sm = Sample {
        pod: pod.to_string(),
        ..Default::default()
    };
    match cri(o, s, &args) {
        Ok(v) => {
            sm.id = v["id"].as_str().unwrap_or_default().to_string();
            sm.run_ms = Some(elapsed(&v));
        }
        Err(e) => sm.errors.push(format!("RunPodSandbox: {e}")),
    }
    sm
}

/// StopPodSandbox then RemovePodSandbox, kubelet's order.
fn stop_remove(o: &Opts, s: &System, sm: &mut Sample) {
    if sm.id.is_empty() {
        return;
    }
    match cri(o, s, &["stopp", &sm.id]) {
        Ok(v) => sm.stop_ms = Some(elapsed(&v)),
        Err(e) => sm.errors.push(format!("StopPodSandbox: {e}")),
    }
    match cri(o, s, &["rmp", &sm.id]) {
        Ok(v) => sm.remove_ms = Some(elapsed(&v)),
        Err(e) => sm.errors.push(format!("RemovePodSandbox: {e}")),
    }
}

/// The sandbox's address (PodSandboxStatus), unmeasured.
fn note_ip(o: &Opts, s: &System, sm: &mut Sample) {
    if sm.id.is_empty() {
        return;
    }
    match cri(o, s, &["statusp", &sm.id]) {
        Ok(v) => {
            sm.ip = v["status"]["network"]["ip"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        }
        Err(e) => sm.errors.push(format!("PodSandboxStatus: {e}")),
    }
}

/// Each network system's sandboxes have distinct addresses in its node's range; hostNetwork
/// sandboxes have none of their own.
fn check_ips(kind: Kind, samples: &mut [Sample]) {
    let want = match kind {
        Kind::Ours => Some("10.224.0."),
        Kind::Reference => Some("10.224.1."),
        Kind::NoNetwork => None,
    };
    let mut seen = BTreeSet::new();
    for sm in samples.iter_mut().filter(|s| !s.id.is_empty()) {
        if let Some(prefix) = want {
            if !sm.ip.starts_with(prefix) || !seen.insert(sm.ip.clone()) {
                sm.errors
                    .push(format!("address {:?}: not a distinct {prefix}x", sm.ip));
            }
        }
    }
}

// ---- the run ----------------------------------------------------------------------------------

fn main() {
    let o = opts();
    assert!(
        nix::unistd::geteuid().is_root(),
        "the benchmark needs root (network namespaces); run sudo scripts/bench.sh"
    );
    assert!(
        o.criclient.is_file(),
        "{} is missing: scripts/build-criclient.sh (scripts/bench.sh builds it)",
        o.criclient.display()
    );
    on_signals_clean_up();
    // A holder that dies leaves its containerd and shims to us, not to PID 1.
    nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");

    let n = o.sandboxes;
    let tag = format!("azc{:x}", std::process::id());
    let base = std::env::temp_dir().join(format!("azure-vnet-cri-bench.{}", std::process::id()));
    std::fs::create_dir_all(&base).unwrap();
    *state() = Some(Teardown {
        tag: tag.clone(),
        base: base.clone(),
        holders: Vec::new(),
        wireserver: None,
        cgroups: CgroupSweep::new("k8s.io"),
    });
    let _guard = Guard;
    let node_a = format!("{tag}-node-a");
    let node_b = format!("{tag}-node-b");

    run(Command::new(repo().join("scripts/testbed.sh"))
        .args(["up", &tag])
        .arg(base.join("tb"))
        .arg(n.to_string()));

    // The wireserver stand-in on node-a's loopback.
    let port_file = base.join("ws.port");
    let ws = Command::new("ip")
        .args(["netns", "exec", &node_a, "python3"])
        .arg(repo().join("scripts/fake-wireserver.py"))
        .arg("--xml")
        .arg(base.join("tb/node-a/nmagent.xml"))
        .args(["--port", "0", "--port-file"])
        .arg(&port_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start the fake wireserver");
    state().as_mut().unwrap().wireserver = Some(ws);
    let t = Instant::now();
    while !port_file.exists() {
        assert!(t.elapsed() < Duration::from_secs(10), "no fake wireserver");
        std::thread::sleep(Duration::from_millis(20));
    }
    let ws_url = format!(
        "http://127.0.0.1:{}/machine/plugins?comp=nmagent&type=getinterfaceinfov1",
        std::fs::read_to_string(&port_file).unwrap().trim()
    );

    // Ours as a node's installer puts it: one file under two names.
    let bin = base.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let built = match &o.bin_dir {
        Some(d) => d.join("azure-vnet"),
        None => PathBuf::from(env!("CARGO_BIN_EXE_azure-vnet")),
    };
    std::fs::copy(&built, bin.join("azure-vnet"))
        .unwrap_or_else(|e| panic!("{}: {e}", built.display()));
    std::fs::hard_link(bin.join("azure-vnet"), bin.join("azure-vnet-ipam")).unwrap();

    let seed = repo().join("conflist/10-azure.conflist");
    let ours_conflist = if o.source == "file" {
        let mut c: Value = serde_json::from_slice(&std::fs::read(&seed).unwrap()).unwrap();
        c["plugins"][0]["ipam"]["environment"] = json!("file");
        let p = base.join("10-azure.conflist");
        std::fs::write(&p, serde_json::to_vec_pretty(&c).unwrap()).unwrap();
        p
    } else {
        seed.clone()
    };
    let ours_conf: Value = serde_json::from_slice(&std::fs::read(&ours_conflist).unwrap()).unwrap();
    // The reference: the same chain with ptp + host-local in azure-vnet's place.
    let ref_conf = json!({
        "cniVersion": "0.3.0", "name": "ref",
        "plugins": [
            {"type": "ptp", "ipMasq": false,
             "ipam": {"type": "host-local", "dataDir": "/run/cni-networks",
                      "ranges": [[{"subnet": "10.224.0.0/16", "rangeStart": "10.224.1.5",
                                   "rangeEnd": format!("10.224.1.{}", 4 + n)}]]}},
            ours_conf["plugins"][1].clone(),
        ]
    });
    assert_eq!(
        ours_conf["plugins"][1]["type"], "portmap",
        "the seed chains portmap"
    );
    let ref_conflist = base.join("10-ref.conflist");
    std::fs::write(&ref_conflist, serde_json::to_vec_pretty(&ref_conf).unwrap()).unwrap();
    // Never used (hostNetwork sandboxes run no CNI), but containerd's CRI wants a network config.
    let none_conflist = base.join("10-none.conflist");
    std::fs::write(
        &none_conflist,
        r#"{"cniVersion":"0.3.0","name":"none","plugins":[{"type":"loopback"}]}"#,
    )
    .unwrap();

    let ours_log = base.join("ours-log");
    std::fs::create_dir_all(&ours_log).unwrap();
    let mut ours_env = vec![
        // the private tmpfs scripts/cri-node.py mounts on /run: /var/run on a node
        "AZURE_VNET_RUN_DIR=/run".to_string(),
        format!("AZURE_VNET_LOG_DIR={}", ours_log.display()),
    ];
    if o.source == "file" {
        ours_env.push(format!(
            "AZURE_VNET_INTERFACES_FILE={}",
            base.join("tb/node-a/interfaces.json").display()
        ));
    } else {
        ours_env.push(format!("AZURE_VNET_WIRESERVER_URL={ws_url}"));
    }

    // (system, node, conflist, plugins for the CNI bin dir, containerd's environment)
    type Spec<'a> = (Kind, &'a str, PathBuf, Vec<PathBuf>, Vec<String>);
    let specs: Vec<Spec> = vec![
        (
            Kind::Ours,
            &node_a,
            ours_conflist.clone(),
            vec![bin.join("azure-vnet"), bin.join("azure-vnet-ipam")],
            ours_env,
        ),
        (
            Kind::Reference,
            &node_b,
            ref_conflist.clone(),
            vec!["/usr/lib/cni/ptp".into(), "/usr/lib/cni/host-local".into()],
            vec![],
        ),
        (Kind::NoNetwork, &node_a, none_conflist, vec![], vec![]),
    ];
    let mut systems = Vec::new();
    for (kind, node, conflist, bins, env) in specs {
        let dir = base.join(kind.key());
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = Command::new("python3");
        cmd.arg(repo().join("scripts/cri-node.py"))
            .arg("containerd")
            .arg(&dir)
            .arg(node)
            .arg("--conflist")
            .arg(&conflist)
            .arg("--criclient")
            .arg(&o.criclient);
        for b in &bins {
            cmd.arg("--bin").arg(b);
        }
        for e in &env {
            cmd.arg("--env").arg(e);
        }
        let out = File::create(base.join(format!("{}.out", kind.key()))).unwrap();
        let child = cmd
            .env_clear()
            .env("PATH", PATH)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            // a terminal's ^C reaches this process only: it stops the holders in order
            .process_group(0)
            .spawn()
            .expect("spawn scripts/cri-node.py");
        state().as_mut().unwrap().holders.push((dir.clone(), child));
        systems.push(System {
            kind,
            node: node.to_string(),
            sock: dir.join("containerd.sock"),
            dir,
        });
    }
    for s in &systems {
        let out = Command::new("python3")
            .arg(repo().join("scripts/cri-node.py"))
            .arg("ready")
            .arg(&s.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "containerd for {} did not come up: {}\n{}\n{}",
            s.kind.key(),
            String::from_utf8_lossy(&out.stderr),
            tail(&s.dir.join("holder.log"), 20),
            tail(&s.dir.join("containerd.log"), 30)
        );
    }
    let containerd = cri(&o, &systems[0], &["version"])
        .map(|v| v["runtime_version"].as_str().unwrap_or("?").to_string())
        .unwrap_or_else(|e| panic!("CRI Version: {e}"));
    eprintln!(
        "cri bench: {n} sandboxes per system, sequential then in batches of {}; containerd {containerd}; testbed {tag}",
        o.batch
    );

    // Warm-up: one sandbox per system, unmeasured (the first one unpacks the pause image's
    // snapshot, loads the plugins' pages, creates portmap's chains).
    for s in &systems {
        let mut sm = run_pod(&o, s, "warm-up");
        stop_remove(&o, s, &mut sm);
        assert!(
            sm.errors.is_empty(),
            "warm-up on {}: {:?}\n{}",
            s.kind.key(),
            sm.errors,
            tail(&s.dir.join("containerd.log"), 30)
        );
    }
    let veths = [(node_a.as_str(), "azv"), (node_b.as_str(), "veth")];
    wait_links_gone(&veths);

    let mut samples: BTreeMap<(Kind, &str), Vec<Sample>> = BTreeMap::new();
    let mut walls: BTreeMap<(Kind, &str), Vec<f64>> = BTreeMap::new();

    // 1. Sequential: N RunPodSandbox one after the other (the systems take turns), then N
    //    Stop+Remove one after the other.
    let mut seq: BTreeMap<Kind, Vec<Sample>> = BTreeMap::new();
    for i in 0..n {
        for s in rotated(&systems, i) {
            let sm = run_pod(&o, s, &format!("seq-{i}"));
            seq.entry(s.kind).or_default().push(sm);
        }
    }
    for s in &systems {
        let v = seq.get_mut(&s.kind).unwrap();
        for sm in v.iter_mut() {
            note_ip(&o, s, sm);
        }
        check_ips(s.kind, v);
    }
    eprintln!("sequential RunPodSandbox: done");
    for i in 0..n {
        for s in rotated(&systems, i) {
            stop_remove(&o, s, &mut seq.get_mut(&s.kind).unwrap()[i]);
        }
    }
    eprintln!("sequential Stop+Remove: done");
    for (k, v) in seq {
        samples.insert((k, "sequential"), v);
    }
    wait_links_gone(&veths);
    // The links leave the nodes' view before the kernel has finished tearing the namespaces
    // down: let it finish.
    std::thread::sleep(Duration::from_secs(2));

    // 2. Concurrent: batches of B RunPodSandbox at once (the systems take turns batch by batch),
    //    then batches of B pods stopped and removed at once.
    let idx: Vec<usize> = (0..n).collect();
    let mut par: BTreeMap<Kind, Vec<Sample>> = BTreeMap::new();
    for (b, chunk) in idx.chunks(o.batch).enumerate() {
        for s in rotated(&systems, b) {
            let t = Instant::now();
            let got: Vec<Sample> = std::thread::scope(|sc| {
                let hs: Vec<_> = chunk
                    .iter()
                    .map(|i| {
                        let o = &o;
                        sc.spawn(move || run_pod(o, s, &format!("par-{i}")))
                    })
                    .collect();
                hs.into_iter()
                    .map(|h| h.join().expect("runp thread"))
                    .collect()
            });
            walls
                .entry((s.kind, "concurrentRun"))
                .or_default()
                .push(t.elapsed().as_secs_f64() * 1e3);
            par.entry(s.kind).or_default().extend(got);
        }
    }
    for s in &systems {
        let v = par.get_mut(&s.kind).unwrap();
        for sm in v.iter_mut() {
            note_ip(&o, s, sm);
        }
        check_ips(s.kind, v);
    }
    eprintln!("concurrent RunPodSandbox: done");
    for (b, chunk) in idx.chunks(o.batch).enumerate() {
        for s in rotated(&systems, b) {
            let v = par.get_mut(&s.kind).unwrap();
            let t = Instant::now();
            std::thread::scope(|sc| {
                for sm in v[chunk[0]..chunk[0] + chunk.len()].iter_mut() {
                    let o = &o;
                    sc.spawn(move || stop_remove(o, s, sm));
                }
            });
            walls
                .entry((s.kind, "concurrentStopRemove"))
                .or_default()
                .push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    eprintln!("concurrent Stop+Remove: done");
    for (k, v) in par {
        samples.insert((k, "concurrent"), v);
    }

    // 3. Nothing left: no sandbox; ours: no address in use, no record; the reference: no lease;
    //    no host route, no veth.
    let links_left = wait_links_gone(&veths);
    let mut left = BTreeMap::new();
    for s in &systems {
        let sandboxes = cri(&o, s, &["lsp"])
            .ok()
            .and_then(|v| v["items"].as_array().map(|a| a.len()).or(Some(0)));
        let mut l = json!({"sandboxes": sandboxes});
        match s.kind {
            Kind::Ours => {
                let ipam: Value =
                    serde_json::from_str(&in_node(s, &["cat", "/run/azure-vnet-ipam.json"]))
                        .unwrap_or(Value::Null);
                let ipam_read = ipam.is_object();
                let in_use = ipam["IPAM"]["AddressSpaces"]
                    .as_object()
                    .into_iter()
                    .flat_map(|m| m.values())
                    .flat_map(|sp| sp["Pools"].as_object().into_iter().flat_map(|m| m.values()))
                    .flat_map(|p| {
                        p["Addresses"]
                            .as_object()
                            .into_iter()
                            .flat_map(|m| m.values())
                    })
                    .filter(|a| a["InUse"] == true)
                    .count();
                let vnet: Value =
                    serde_json::from_str(&in_node(s, &["cat", "/run/azure-vnet.json"]))
                        .unwrap_or(Value::Null);
                let records = vnet["Network"]["ExternalInterfaces"]
                    .as_object()
                    .into_iter()
                    .flat_map(|m| m.values())
                    .flat_map(|i| {
                        i["Networks"]
                            .as_object()
                            .into_iter()
                            .flat_map(|m| m.values())
                    })
                    .map(|net| net["Endpoints"].as_object().map_or(0, |e| e.len()))
                    .sum::<usize>();
                // null: a state file that could not be read
                l["addressesInUse"] = json!(ipam_read.then_some(in_use));
                l["records"] = json!(vnet.is_object().then_some(records));
                l["hostRoutes"] = json!(routes_via(&s.node, "azv"));
                l["links"] = json!(links_with_prefix(&s.node, "azv"));
            }
            Kind::Reference => {
                let leases = in_node(s, &["ls", "-1", "/run/cni-networks/ref"])
                    .lines()
                    .filter(|f| f.parse::<std::net::Ipv4Addr>().is_ok())
                    .count();
                l["leases"] = json!(leases);
                l["hostRoutes"] = json!(routes_via(&s.node, "veth"));
                l["links"] = json!(links_with_prefix(&s.node, "veth"));
            }
            Kind::NoNetwork => {}
        }
        left.insert(s.kind.key(), l);
    }
    // (a count that could not be read is an unknown, and counts as something left)
    let leftovers = left
        .values()
        .flat_map(|l| l.as_object().unwrap().values())
        .filter(|v| v.as_u64() != Some(0))
        .count()
        + links_left;

    // Our plugin's own time inside the measured calls, from its log (IPAM in-process included).
    let ids: BTreeSet<String> = samples
        .iter()
        .filter(|((k, _), _)| *k == Kind::Ours)
        .flat_map(|(_, v)| v.iter().map(|s| s.id.clone()))
        .collect();
    let own = |command: &str| -> Vec<f64> {
        std::fs::read_to_string(ours_log.join("azure-vnet.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| {
                v["msg"] == "done"
                    && v["command"] == command
                    && v["containerID"].as_str().is_some_and(|c| ids.contains(c))
            })
            .filter_map(|v| v["durationMs"].as_f64())
            .collect()
    };
    let (own_add, own_del) = (own("ADD"), own("DEL"));
    // ... and its phases (medians), ADD's and the IPAM's
    let phases = |file: &str, msg: &str| -> BTreeMap<String, f64> {
        let mut acc: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for v in std::fs::read_to_string(ours_log.join(file))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| {
                v["msg"] == msg && v["containerID"].as_str().is_some_and(|c| ids.contains(c))
            })
        {
            for (k, ms) in v["phasesMs"].as_object().into_iter().flatten() {
                acc.entry(k.clone())
                    .or_default()
                    .push(ms.as_f64().unwrap_or(f64::NAN));
            }
        }
        acc.into_iter().map(|(k, v)| (k, median(&v))).collect()
    };
    let add_phases = phases("azure-vnet.log", "endpoint created");
    let ipam_phases = phases("azure-vnet-ipam.log", "address allocated");

    // ---- report -------------------------------------------------------------------------------
    let get = |k: Kind, phase: &str, f: Metric| -> Vec<f64> {
        samples[&(k, phase)].iter().filter_map(f).collect()
    };
    let run_ms: Metric = |s| s.run_ms;
    let sr_ms: Metric = Sample::stop_remove_ms;
    let failures = |k: Kind| -> (usize, usize) {
        let all = samples.iter().filter(|((kk, _), _)| *kk == k);
        let v: Vec<&Sample> = all.flat_map(|(_, v)| v.iter()).collect();
        (
            v.iter().filter(|s| s.run_ms.is_none()).count(),
            v.iter()
                .filter(|s| s.run_ms.is_some() && s.stop_remove_ms().is_none())
                .count(),
        )
    };
    let date = run(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
        .trim()
        .to_string();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!(
        "\nazure-vnet-cni CRI benchmark, {date}, kernel {}, {cpus} CPUs, containerd {containerd}",
        kernel.trim()
    );
    println!(
        "{n} sandboxes per system one after the other, then {n} in batches of {} concurrent calls; \
         times: the CRI call as the client sees it (elapsed_ms)",
        o.batch
    );
    println!(
        "ours: the seed conflist (azure-vnet + azure-vnet-ipam, {} source, portmap), one file under two names; \
         reference: ptp + host-local (same /16) + portmap; no network: hostNetwork sandboxes (no netns, no CNI)\n",
        o.source
    );
    println!("| measure | ours | reference | ratio | no network |");
    println!("|---|---:|---:|---:|---:|");
    let mut summary = serde_json::Map::new();
    let rows: [(&str, &str, Metric, &str); 4] = [
        ("sequential", "RunPodSandbox", run_ms, "run"),
        (
            "sequential",
            "StopPodSandbox + RemovePodSandbox",
            sr_ms,
            "stopRemove",
        ),
        ("concurrent", "RunPodSandbox", run_ms, "run"),
        (
            "concurrent",
            "StopPodSandbox + RemovePodSandbox",
            sr_ms,
            "stopRemove",
        ),
    ];
    for (phase, what, f, key) in rows {
        let how = if phase == "sequential" {
            "one at a time".to_string()
        } else {
            format!("{} at a time", o.batch)
        };
        for (stat, p) in [("median", 50.0), ("p99", 99.0)] {
            let [ours, refr, none] = [Kind::Ours, Kind::Reference, Kind::NoNetwork]
                .map(|k| percentile(&get(k, phase, f), p));
            println!(
                "| {what}, {stat}, {how} (ms) | {ours:.1} | {refr:.1} | {:.2} | {none:.1} |",
                ours / refr
            );
            summary.insert(
                format!("{phase}.{key}.{stat}"),
                json!({"ours": ours, "reference": refr, "noNetwork": none}),
            );
        }
    }
    let fo = failures(Kind::Ours);
    let fr = failures(Kind::Reference);
    let fnn = failures(Kind::NoNetwork);
    println!(
        "| failed calls (Run / Stop+Remove) | {}/{} | {}/{} | | {}/{} |",
        fo.0, fo.1, fr.0, fr.1, fnn.0, fnn.1
    );
    let med = |k: Kind, phase: &str, f: Metric| median(&get(k, phase, f));
    let share = |k: Kind, f: Metric| {
        let (with, without) = (
            med(k, "sequential", f),
            med(Kind::NoNetwork, "sequential", f),
        );
        (with - without, 100.0 * (with - without) / with)
    };
    let (so_r, so_rp) = share(Kind::Ours, run_ms);
    let (sr_r, sr_rp) = share(Kind::Reference, run_ms);
    let (so_s, so_sp) = share(Kind::Ours, sr_ms);
    let (sr_s, sr_sp) = share(Kind::Reference, sr_ms);
    println!(
        "\nnetworking's share (sequential medians, minus the no-network sandbox's): RunPodSandbox \
         ours {so_r:.1} ms ({so_rp:.0}%), reference {sr_r:.1} ms ({sr_rp:.0}%); Stop+Remove ours \
         {so_s:.1} ms ({so_sp:.0}%), reference {sr_s:.1} ms ({sr_sp:.0}%)"
    );
    println!(
        "of which azure-vnet's own time (its log, IPAM in-process included, medians): ADD {:.2} ms, \
         DEL {:.2} ms (Stop and Remove run one DEL each)",
        median(&own_add),
        median(&own_del)
    );
    let fmt = |m: &BTreeMap<String, f64>| {
        m.iter()
            .map(|(k, v)| format!("{k} {v:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "  ADD phases: {}; IPAM phases: {}",
        fmt(&add_phases),
        fmt(&ipam_phases)
    );
    let wall = |k: Kind, w: &str| median(walls.get(&(k, w)).map_or(&[][..], |v| &v[..]));
    println!(
        "batches of {} (wall time, median): RunPodSandbox ours {:.1} ms, reference {:.1} ms, no network {:.1} ms; \
         Stop+Remove ours {:.1} ms, reference {:.1} ms, no network {:.1} ms",
        o.batch,
        wall(Kind::Ours, "concurrentRun"),
        wall(Kind::Reference, "concurrentRun"),
        wall(Kind::NoNetwork, "concurrentRun"),
        wall(Kind::Ours, "concurrentStopRemove"),
        wall(Kind::Reference, "concurrentStopRemove"),
        wall(Kind::NoNetwork, "concurrentStopRemove"),
    );
    println!(
        "left after the run: {}",
        left.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let errors: Vec<String> = samples
        .iter()
        .flat_map(|((k, phase), v)| {
            v.iter().flat_map(move |s| {
                s.errors
                    .iter()
                    .map(move |e| format!("{} {phase} {}: {e}", k.key(), s.pod))
            })
        })
        .collect();
    for e in errors.iter().take(20) {
        println!("error: {e}");
    }

    let doc = json!({
        "date": date, "kernel": kernel.trim(), "cpus": cpus, "containerd": containerd,
        "sandboxes": n, "batch": o.batch, "oursSource": o.source,
        "timing": "criclient elapsed_ms: the gRPC call alone",
        "systems": {
            "ours": {"node": node_a, "conflist": ours_conf, "plugins": "azure-vnet, azure-vnet-ipam: one file, two names"},
            "reference": {"node": node_b, "conflist": ref_conf},
            "noNetwork": {"node": node_a, "sandboxes": "hostNetwork: no network namespace, no CNI call"},
        },
        "samples": samples.iter().map(|((k, phase), v)| {
            (format!("{}.{phase}", k.key()), json!(v.iter().map(Sample::json).collect::<Vec<_>>()))
        }).collect::<serde_json::Map<_, _>>(),
        "batchWallMs": walls.iter().map(|((k, w), v)| (format!("{}.{w}", k.key()), json!(v)))
            .collect::<serde_json::Map<_, _>>(),
        "summary": summary,
        "azureVnetOwnMs": {"add": own_add, "del": own_del,
                           "addPhasesMedian": add_phases, "ipamPhasesMedian": ipam_phases},
        "leftovers": left,
        "failedCalls": {"ours": [fo.0, fo.1], "reference": [fr.0, fr.1], "noNetwork": [fnn.0, fnn.1]},
        "errors": errors,
    });
    if let Some(d) = o.out.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(&o.out, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    println!("\nfigures written to {}", o.out.display());

    drop(_guard);
    if !errors.is_empty() || leftovers > 0 {
        eprintln!(
            "cri bench: {} errors, {leftovers} things left: see above",
            errors.len()
        );
        std::process::exit(1);
    }
}
