//! The benchmark: azure-vnet + azure-vnet-ipam against the CNI project's own reference
//! plugins (Debian's `ptp` + `host-local`), in one run, in a throwaway testbed.
//!
//!   sudo scripts/bench.sh [--pods 250] [--bursts 3] [--floor 100] [--out FILE]
//!
//! Ours runs on node-a (file source, 10.224.0.x), the reference on node-b (host-local over the
//! same /16, 10.224.1.x), same pod count. Each system has a worker thread that entered its
//! node's namespace and execs the plugins from there, as a runtime would; the harness asks the
//! two workers in turn, so machine noise lands on both. State (ours) and leases (host-local)
//! live on a tmpfs, as /var/run does on a node, inside a private mount namespace (nothing of it
//! is visible outside, and it vanishes with the process).
//!
//! Ours is measured three ways, each against the reference in the same phase: installed as a
//! node has it (one executable under two names: the IPAM runs in-process) with the state on a
//! tmpfs; the same with the two names as two files (the IPAM exec'd); and in-process with the
//! state, and host-local's leases, on disk (fsyncs cost there).
//!
//! Measured: ADD and DEL latency (median, p99) over pods 1..N added one after the other, and
//! the median at pods 1-10 against the last 10; a burst of N ADDs at once, then N DELs
//! (makespan, failures); process start-up (VERSION); peak RSS; installed and stripped sizes; a
//! floor (the same kernel work in-process, through our datapath code, without exec, IPAM or
//! state); and where the time goes inside one ADD (from the phases our plugins log).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use azure_vnet_cni::internals::datapath::{self, Plan};
use azure_vnet_cni::internals::netlink::Netlink;
use azure_vnet_cni::internals::netns::Netns;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use serde_json::{json, Value};

type Env = Vec<(String, String)>;

struct Opts {
    pods: usize,
    bursts: usize,
    floor: usize,
    out: PathBuf,
    /// Where our two binaries are (scripts/bench.sh passes dist/, the static release build);
    /// default: the ones cargo built for this bench.
    bin_dir: Option<PathBuf>,
}

fn opts() -> Opts {
    let mut o = Opts {
        pods: 250,
        bursts: 3,
        floor: 100,
        out: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench/results.json"),
        bin_dir: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let val = || args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--pods" => o.pods = val().parse().expect("--pods N"),
            "--bursts" => o.bursts = val().parse().expect("--bursts N"),
            "--floor" => o.floor = val().parse().expect("--floor N"),
            "--out" => o.out = PathBuf::from(val()),
            "--bin-dir" => o.bin_dir = Some(PathBuf::from(val())),
            "--bench" => {
                i += 1;
                continue;
            }
            other => panic!("unknown argument {other:?} (--pods N --bursts N --floor N --out FILE --bin-dir DIR)"),
        }
        i += 2;
    }
    assert!((10..=250).contains(&o.pods), "--pods must be 10..=250");
    o
}

// ---- processes ------------------------------------------------------------------------------

#[derive(Clone)]
struct Call {
    bin: PathBuf,
    env: Env,
    stdin: Vec<u8>,
    /// Measure the plugin's peak RSS through GNU time (its `ms` then includes time's fork).
    rss: bool,
}

impl Call {
    fn measuring_rss(mut self) -> Call {
        self.rss = true;
        self
    }
}

#[derive(Clone, Debug)]
struct Sample {
    ms: f64,
    ok: bool,
    /// Only for a `Call::measuring_rss`; 0 otherwise.
    rss_kb: i64,
    out: String,
}

/// The peak RSS of a process spawned from this harness cannot be taken from `wait4`: the
/// child is vfork'd (posix_spawn), and at its exec the kernel records the high-water mark of
/// the memory it leaves, this harness's, as the child's own (`ru_maxrss` is then at least
/// ours). GNU time is small and forks the plugin from itself: its `%M` is the plugin's.
const TIME: &str = "/usr/bin/time";
const RSS_TAG: &str = "azv-bench-maxrss-kib";

fn spawn(c: &Call) -> std::process::Child {
    let mut cmd = if c.rss {
        let mut t = Command::new(TIME);
        t.args(["-f", &format!("{RSS_TAG} %M")]).arg(&c.bin);
        t.stderr(Stdio::piped());
        t
    } else {
        let mut t = Command::new(&c.bin);
        t.stderr(Stdio::null());
        t
    };
    let mut child = cmd
        .env_clear()
        .envs(c.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", c.bin.display()));
    if let Some(mut si) = child.stdin.take() {
        let _ = si.write_all(&c.stdin);
    }
    child
}

/// waitpid: whether the child exited 0.
fn wait_ok(pid: u32) -> bool {
    let mut status = 0;
    // SAFETY: plain syscall on our own child.
    let r = unsafe { nix::libc::waitpid(pid as i32, &mut status, 0) };
    assert_eq!(r, pid as i32, "waitpid");
    nix::libc::WIFEXITED(status) && nix::libc::WEXITSTATUS(status) == 0
}

// Reaped by wait_ok above, which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn exec(c: &Call) -> Sample {
    let t = Instant::now();
    let mut child = spawn(c);
    let ok = wait_ok(child.id());
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let mut out = String::new();
    if let Some(mut so) = child.stdout.take() {
        let _ = so.read_to_string(&mut out);
    }
    let mut rss_kb = 0;
    if let Some(mut se) = child.stderr.take() {
        let mut err = String::new();
        let _ = se.read_to_string(&mut err);
        rss_kb = err
            .lines()
            .find_map(|l| l.strip_prefix(RSS_TAG))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no peak RSS from {TIME}: {err}"));
    }
    Sample {
        ms,
        ok,
        rss_kb,
        out,
    }
}

/// All at once: spawn every call, then wait for all. (makespan ms, failures)
#[allow(clippy::zombie_processes)] // reaped by wait_ok
fn burst(calls: &[Call]) -> (f64, usize) {
    let t = Instant::now();
    let children: Vec<_> = calls.iter().map(spawn).collect();
    let failures = children.iter().filter(|c| !wait_ok(c.id())).count();
    (t.elapsed().as_secs_f64() * 1e3, failures)
}

// ---- workers: one thread per node namespace -------------------------------------------------

enum Job {
    Exec(Call),
    Burst(Vec<Call>),
    Floor { pods: Vec<PathBuf>, first_ip: u8 },
}

enum Reply {
    Sample(Sample),
    Burst(f64, usize),
    Floor(Vec<f64>),
}

struct Worker {
    tx: mpsc::Sender<Job>,
    rx: mpsc::Receiver<Reply>,
}

impl Worker {
    fn new(netns: PathBuf) -> Worker {
        let (tx, jobs) = mpsc::channel::<Job>();
        let (done, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Everything this thread execs is born in the node's namespace.
            let ns = File::open(&netns).expect("open node netns");
            setns(&ns, CloneFlags::CLONE_NEWNET).expect("setns");
            for job in jobs {
                let reply = match job {
                    Job::Exec(c) => Reply::Sample(exec(&c)),
                    Job::Burst(calls) => {
                        let (ms, f) = burst(&calls);
                        Reply::Burst(ms, f)
                    }
                    Job::Floor { pods, first_ip } => Reply::Floor(floor(&pods, first_ip)),
                };
                if done.send(reply).is_err() {
                    break;
                }
            }
        });
        Worker { tx, rx }
    }

    fn exec(&self, c: Call) -> Sample {
        self.tx.send(Job::Exec(c)).unwrap();
        match self.rx.recv().unwrap() {
            Reply::Sample(s) => s,
            _ => unreachable!(),
        }
    }

    fn burst(&self, calls: Vec<Call>) -> (f64, usize) {
        self.tx.send(Job::Burst(calls)).unwrap();
        match self.rx.recv().unwrap() {
            Reply::Burst(ms, f) => (ms, f),
            _ => unreachable!(),
        }
    }

    fn floor(&self, pods: Vec<PathBuf>, first_ip: u8) -> Vec<f64> {
        self.tx.send(Job::Floor { pods, first_ip }).unwrap();
        match self.rx.recv().unwrap() {
            Reply::Floor(v) => v,
            _ => unreachable!(),
        }
    }
}

/// The kernel work of one ADD, in-process through our datapath code: the veth pair into the
/// pod, host sysctls and route, the pod's address, routes and neighbour. No exec, no IPAM, no
/// state, one netlink handle for the whole run.
fn floor(pods: &[PathBuf], first_ip: u8) -> Vec<f64> {
    let host = Netlink::connect().expect("netlink");
    let mut times = Vec::new();
    let mut made = Vec::new();
    for (i, p) in pods.iter().enumerate() {
        let name = format!("azf{i:011}");
        let ip = format!("10.224.2.{}", first_ip as usize + i);
        let t = Instant::now();
        let ns = Netns::open(p).expect("pod netns");
        let plan = Plan {
            host_veth: &name,
            ifname: "eth0",
            pod_mac: datapath::random_mac().expect("mac"),
        };
        let address = format!("{ip}/16").parse().unwrap();
        let veth = datapath::create_veth(&host, &ns, &plan).expect("veth");
        let (host_done, pod, ()) = datapath::prepare_while(&ns, &plan, || ());
        host_done.expect("host sysctls");
        let pod = pod.expect("pod");
        datapath::configure_pod(&host, pod, &plan, &veth, address, 1500).expect("pod");
        datapath::configure_host(&host, &veth, address, 1500).expect("host");
        let idx = veth.index;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        made.push(idx);
    }
    for idx in made {
        let _ = host.delete_link(idx);
    }
    times
}

// ---- namespaces and files -------------------------------------------------------------------

/// A network namespace pinned by a bind mount on a file in our tmpfs (no `ip netns`, no trace
/// outside our private mount namespace).
fn make_netns(path: &Path) {
    File::create(path).unwrap();
    let p = path.to_path_buf();
    std::thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare net");
        mount(
            Some("/proc/thread-self/ns/net"),
            &p,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind netns");
    })
    .join()
    .unwrap();
}

fn drop_netns(path: &Path) {
    let _ = umount2(path, MntFlags::MNT_DETACH);
    let _ = std::fs::remove_file(path);
}

fn count_links(node: &str, prefix: &str) -> usize {
    let out = Command::new("ip")
        .args(["-n", node, "-o", "link", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.split(": ").nth(1).is_some_and(|n| n.starts_with(prefix)))
        .count()
}

/// Fresh pod namespaces: every previous one (and any veth left in it) is destroyed first and the
/// kernel's asynchronous cleanup is waited for, so it does not disturb the next phase.
fn fresh_pods(dir: &Path, sets: &[(&str, usize)], nodes: &[(&str, &str)]) -> Vec<Vec<PathBuf>> {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        drop_netns(&e.path());
    }
    let t = Instant::now();
    while nodes.iter().any(|(node, pfx)| count_links(node, pfx) > 0) {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "veths did not go away"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The links leave the nodes' view before the kernel has finished tearing the namespaces
    // down (its cleanup worker holds the RTNL lock for a while): let it finish.
    std::thread::sleep(Duration::from_secs(2));
    sets.iter()
        .map(|(prefix, n)| {
            (0..*n)
                .map(|i| {
                    let p = dir.join(format!("{prefix}{i}"));
                    make_netns(&p);
                    p
                })
                .collect()
        })
        .collect()
}

struct Cleanup {
    tag: String,
    base: PathBuf,
    disk: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("scripts/testbed.sh"))
            .args(["down", &self.tag])
            .status();
        if let Ok(rd) = std::fs::read_dir(self.base.join("netns")) {
            for e in rd.flatten() {
                drop_netns(&e.path());
            }
        }
        let _ = umount2(&self.base, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(&self.base);
        let _ = std::fs::remove_dir_all(&self.disk);
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---- statistics -----------------------------------------------------------------------------

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

fn stripped_size(bin: &Path, tmp: &Path) -> u64 {
    let out = tmp.join("stripped");
    let st = Command::new("strip")
        .arg("-o")
        .arg(&out)
        .arg(bin)
        .status()
        .unwrap();
    assert!(st.success(), "strip {}", bin.display());
    let n = std::fs::metadata(&out).unwrap().len();
    let _ = std::fs::remove_file(out);
    n
}

/// Median of each `phasesMs` entry over log lines with `msg` whose containerID starts with
/// `cid_prefix`.
fn phases(log: &Path, msg: &str, cid_prefix: &str) -> BTreeMap<String, f64> {
    phases_where(log, msg, |c| c.starts_with(cid_prefix))
}

/// The same for sequential pods `range` (container IDs `seq-<i>`).
fn phases_of(log: &Path, msg: &str, range: std::ops::Range<usize>) -> BTreeMap<String, f64> {
    phases_where(log, msg, |c| {
        c.strip_prefix("seq-")
            .and_then(|i| i.parse::<usize>().ok())
            .is_some_and(|i| range.contains(&i))
    })
}

fn phases_where(log: &Path, msg: &str, keep: impl Fn(&str) -> bool) -> BTreeMap<String, f64> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut acc: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if v["msg"] != msg || !v["containerID"].as_str().is_some_and(&keep) {
            continue;
        }
        if let Some(p) = v["phasesMs"].as_object() {
            for (k, ms) in p {
                acc.entry(k.clone())
                    .or_default()
                    .push(ms.as_f64().unwrap_or(0.0));
            }
        }
        if let Some(d) = v["durationMs"].as_f64() {
            acc.entry("inProcessTotal".into()).or_default().push(d);
        }
    }
    acc.into_iter().map(|(k, v)| (k, median(&v))).collect()
}

fn done_durations(log: &Path, command: &str, cid_prefix: &str) -> Vec<f64> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["msg"] == "done"
                && v["command"] == command
                && v["containerID"]
                    .as_str()
                    .is_some_and(|c| c.starts_with(cid_prefix))
        })
        .filter_map(|v| v["durationMs"].as_f64())
        .collect()
}

// ---- the run --------------------------------------------------------------------------------

/// One way of running ours against the reference, over the same pods.
struct Variant {
    name: &'static str,
    /// Container IDs are `<prefix><i>`, so the logs tell the variants apart.
    prefix: &'static str,
    ours: Env,
    reference: Env,
    bin: PathBuf,
}

/// Sequential ADD over pods 0..n, then DEL, the two systems taking turns: latencies (ms) of
/// ours and the reference.
#[allow(clippy::too_many_arguments)] // the two systems' pieces, side by side
fn sequential(
    a: &Worker,
    b: &Worker,
    v: &Variant,
    ptp: &Path,
    ours_conf: &[u8],
    ref_conf: &[u8],
    pods: &[Vec<PathBuf>],
    n: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mut add_o, mut add_r, mut del_o, mut del_r) = (vec![], vec![], vec![], vec![]);
    for cmd in ["ADD", "DEL"] {
        for (i, (op, rp)) in pods[0].iter().zip(&pods[1]).enumerate().take(n) {
            let cid = format!("{}{i}", v.prefix);
            let pod = format!("p{i}");
            let oc = call(&v.bin, &v.ours, cmd, &cid, op, &pod, ours_conf);
            let rc = call(ptp, &v.reference, cmd, &cid, rp, &pod, ref_conf);
            let (so, sr) = if i % 2 == 0 {
                let so = a.exec(oc);
                (so, b.exec(rc))
            } else {
                let sr = b.exec(rc);
                (a.exec(oc), sr)
            };
            assert!(so.ok, "{}: ours {cmd} pod {i} failed: {}", v.name, so.out);
            assert!(
                sr.ok,
                "{}: reference {cmd} pod {i} failed: {}",
                v.name, sr.out
            );
            let (vo, vr) = if cmd == "ADD" {
                (&mut add_o, &mut add_r)
            } else {
                (&mut del_o, &mut del_r)
            };
            vo.push(so.ms);
            vr.push(sr.ms);
        }
        eprintln!("{}: sequential {cmd} done", v.name);
    }
    (add_o, add_r, del_o, del_r)
}

fn call(
    bin: &Path,
    base: &Env,
    cmd: &str,
    cid: &str,
    netns: &Path,
    pod: &str,
    stdin: &[u8],
) -> Call {
    let mut env = base.clone();
    env.push(("CNI_COMMAND".into(), cmd.into()));
    env.push(("CNI_CONTAINERID".into(), cid.into()));
    env.push(("CNI_NETNS".into(), netns.display().to_string()));
    env.push((
        "CNI_ARGS".into(),
        format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={pod}"),
    ));
    Call {
        bin: bin.to_path_buf(),
        env,
        stdin: stdin.to_vec(),
        rss: false,
    }
}

fn main() {
    let o = opts();
    assert!(
        nix::unistd::geteuid().is_root(),
        "the benchmark needs root (network namespaces); run sudo scripts/bench.sh"
    );
    // Private mounts: our tmpfs and the pods' netns pins exist only in here.
    unshare(CloneFlags::CLONE_NEWNS).expect("unshare mount namespace");
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .expect("make / private");
    let tag = format!("azb{:x}", std::process::id());
    let base = std::env::temp_dir().join(format!("azure-vnet-bench.{}", std::process::id()));
    std::fs::create_dir_all(&base).unwrap();
    mount(
        Some("tmpfs"),
        &base,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=512m,mode=0755"),
    )
    .expect("mount tmpfs");
    // The on-disk variant's state: under target/ (the repository's disk), removed at the end.
    let disk = repo().join(format!("target/bench/disk.{}", std::process::id()));
    let _cleanup = Cleanup {
        tag: tag.clone(),
        base: base.clone(),
        disk: disk.clone(),
    };
    for d in [
        "run", "run-exec", "log", "hl", "bin", "bin-exec", "netns", "tb",
    ] {
        std::fs::create_dir_all(base.join(d)).unwrap();
    }
    for d in ["run", "hl"] {
        std::fs::create_dir_all(disk.join(d)).unwrap();
    }
    let st = Command::new(repo().join("scripts/testbed.sh"))
        .args(["up", &tag])
        .arg(base.join("tb"))
        .arg(o.pods.to_string())
        .status()
        .unwrap();
    assert!(st.success(), "testbed");
    let node_a = format!("{tag}-node-a");
    let node_b = format!("{tag}-node-b");

    // Ours: the static release build (scripts/bench.sh), else cargo's; installed as a node has
    // it (one file, two names) and as two files.
    let built = match &o.bin_dir {
        Some(d) => d.join("azure-vnet"),
        None => PathBuf::from(env!("CARGO_BIN_EXE_azure-vnet")),
    };
    let ours_vnet = base.join("bin/azure-vnet");
    let ours_ipam = base.join("bin/azure-vnet-ipam");
    std::fs::copy(&built, &ours_vnet).unwrap_or_else(|e| panic!("{}: {e}", built.display()));
    std::fs::hard_link(&ours_vnet, &ours_ipam).unwrap();
    for name in ["azure-vnet", "azure-vnet-ipam"] {
        std::fs::copy(&built, base.join("bin-exec").join(name)).unwrap();
    }
    let ptp = PathBuf::from("/usr/lib/cni/ptp");
    let host_local = PathBuf::from("/usr/lib/cni/host-local");
    assert!(
        ptp.exists() && host_local.exists(),
        "Debian's CNI plugins are missing: scripts/install-deps.sh"
    );

    let ours_conf = br#"{"cniVersion":"0.3.0","name":"azure","type":"azure-vnet","mode":"transparent","ipsToRouteViaHost":["169.254.20.10"],"ipam":{"type":"azure-vnet-ipam","environment":"file"}}"#.to_vec();
    // host-local's leases live in CNI_ARGS-independent dataDir: one per variant (env below).
    let ref_conf = |dir: &Path| {
        format!(
            r#"{{"cniVersion":"0.3.0","name":"ref","type":"ptp","ipMasq":false,"ipam":{{"type":"host-local","dataDir":"{}","ranges":[[{{"subnet":"10.224.0.0/16","rangeStart":"10.224.1.5","rangeEnd":"10.224.1.{}"}}]]}}}}"#,
            dir.display(),
            4 + o.pods
        )
        .into_bytes()
    };
    let ours_env = |bins: &str, run: &Path| -> Env {
        vec![
            ("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin".into()),
            (
                "CNI_PATH".into(),
                format!("{}:/usr/lib/cni", base.join(bins).display()),
            ),
            ("CNI_IFNAME".into(), "eth0".into()),
            ("AZURE_VNET_RUN_DIR".into(), run.display().to_string()),
            (
                "AZURE_VNET_LOG_DIR".into(),
                base.join("log").display().to_string(),
            ),
            (
                "AZURE_VNET_INTERFACES_FILE".into(),
                base.join("tb/node-a/interfaces.json").display().to_string(),
            ),
        ]
    };
    let ref_env: Env = vec![
        ("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin".into()),
        ("CNI_PATH".into(), "/usr/lib/cni".into()),
        ("CNI_IFNAME".into(), "eth0".into()),
    ];
    let variants = [
        (
            Variant {
                name: "tmpfs, IPAM in-process",
                prefix: "seq-",
                ours: ours_env("bin", &base.join("run")),
                reference: ref_env.clone(),
                bin: ours_vnet.clone(),
            },
            base.join("hl"),
        ),
        (
            Variant {
                name: "tmpfs, IPAM exec'd",
                prefix: "exec-",
                ours: ours_env("bin-exec", &base.join("run-exec")),
                reference: ref_env.clone(),
                bin: base.join("bin-exec/azure-vnet"),
            },
            base.join("hl"),
        ),
        (
            Variant {
                name: "disk, IPAM in-process",
                prefix: "disk-",
                ours: ours_env("bin", &disk.join("run")),
                reference: ref_env.clone(),
                bin: ours_vnet.clone(),
            },
            disk.join("hl"),
        ),
    ];
    let a = Worker::new(PathBuf::from(format!("/var/run/netns/{node_a}")));
    let b = Worker::new(PathBuf::from(format!("/var/run/netns/{node_b}")));
    let netns_dir = base.join("netns");
    let nodes = [(node_a.as_str(), "azv"), (node_b.as_str(), "veth")];
    let n = o.pods;
    eprintln!(
        "benchmark: {n} pods per system, {} burst rounds; testbed {tag}",
        o.bursts
    );

    // 1. Process start-up: VERSION, no state, no network.
    let mut startup: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let version = |bin: &Path| Call {
        bin: bin.to_path_buf(),
        env: vec![("CNI_COMMAND".into(), "VERSION".into())],
        stdin: br#"{"cniVersion":"0.3.0"}"#.to_vec(),
        rss: false,
    };
    for _ in 0..50 {
        for (name, bin) in [
            ("azure-vnet", &ours_vnet),
            ("ptp", &ptp),
            ("azure-vnet-ipam", &ours_ipam),
            ("host-local", &host_local),
        ] {
            let s = a.exec(version(bin));
            assert!(s.ok, "{name} VERSION failed");
            startup.entry(name).or_default().push(s.ms);
        }
    }

    // 2. Sequential ADD then DEL over pods 1..n, each variant against the reference.
    let mut seq = Vec::new();
    for (v, hl) in &variants {
        let pods = fresh_pods(&netns_dir, &[("o", n), ("r", n)], &nodes);
        let rc = ref_conf(hl);
        seq.push(sequential(&a, &b, v, &ptp, &ours_conf, &rc, &pods, n));
    }
    let (add_o, add_r, del_o, del_r) = seq[0].clone();
    let main_variant = &variants[0].0;
    let main_ref_conf = ref_conf(&variants[0].1);

    // 3. Bursts (as a node has it): all ADDs at once, then all DELs; fresh pods each round.
    let mut bursts: BTreeMap<&str, Vec<(f64, usize)>> = BTreeMap::new();
    for round in 0..o.bursts {
        let pods = fresh_pods(&netns_dir, &[("o", n), ("r", n)], &nodes);
        let (op, rp) = (&pods[0], &pods[1]);
        for (cmd, key_o, key_r) in [
            ("ADD", "ours ADD", "reference ADD"),
            ("DEL", "ours DEL", "reference DEL"),
        ] {
            let cid = |i: usize| format!("burst{round}-{i}");
            let oc: Vec<Call> = (0..n)
                .map(|i| {
                    let (v, pod) = (main_variant, format!("p{i}"));
                    call(&v.bin, &v.ours, cmd, &cid(i), &op[i], &pod, &ours_conf)
                })
                .collect();
            let rc: Vec<Call> = (0..n)
                .map(|i| {
                    let pod = format!("p{i}");
                    call(&ptp, &ref_env, cmd, &cid(i), &rp[i], &pod, &main_ref_conf)
                })
                .collect();
            if round % 2 == 0 {
                bursts.entry(key_o).or_default().push(a.burst(oc));
                bursts.entry(key_r).or_default().push(b.burst(rc));
            } else {
                bursts.entry(key_r).or_default().push(b.burst(rc));
                bursts.entry(key_o).or_default().push(a.burst(oc));
            }
        }
        eprintln!("burst round {}: done", round + 1);
    }

    // 4. The floor: the same kernel work in-process.
    let fp = fresh_pods(&netns_dir, &[("f", o.floor)], &nodes).remove(0);
    let floor_ms = a.floor(fp, 5);

    // 5. Peak RSS, with the state at its largest: n pods added one after the other (the first
    //    and the last measured), the first one's DEL measured, then each IPAM plugin on its own
    //    (ADD and DEL of one more container, as another main plugin would run it), then the
    //    other DELs. Measured through GNU time: see `spawn`.
    let pods = fresh_pods(&netns_dir, &[("o", n), ("r", n)], &nodes);
    let (mut rss_vnet, mut rss_ptp, mut rss_ipam, mut rss_hl) = (0i64, 0i64, 0i64, 0i64);
    let v = main_variant;
    let mut pair = |cmd: &str, i: usize, measured: bool| {
        let (cid, pod) = (format!("rss-{i}"), format!("p{i}"));
        let mut oc = call(&v.bin, &v.ours, cmd, &cid, &pods[0][i], &pod, &ours_conf);
        let mut rc = call(&ptp, &ref_env, cmd, &cid, &pods[1][i], &pod, &main_ref_conf);
        if measured {
            (oc, rc) = (oc.measuring_rss(), rc.measuring_rss());
        }
        let (so, sr) = (a.exec(oc), b.exec(rc));
        assert!(
            so.ok && sr.ok,
            "rss pass {cmd} {i}: {} / {}",
            so.out,
            sr.out
        );
        if measured {
            rss_vnet = rss_vnet.max(so.rss_kb);
            rss_ptp = rss_ptp.max(sr.rss_kb);
        }
    };
    for i in 0..n {
        pair("ADD", i, i == 0 || i == n - 1);
    }
    pair("DEL", 0, true);
    for cmd in ["ADD", "DEL"] {
        let s = a.exec(
            call(
                &ours_ipam,
                &v.ours,
                cmd,
                "rss-ipam",
                Path::new("/x"),
                "x",
                &ours_conf,
            )
            .measuring_rss(),
        );
        assert!(s.ok, "azure-vnet-ipam {cmd}: {}", s.out);
        rss_ipam = rss_ipam.max(s.rss_kb);
        let s = b.exec(
            call(
                &host_local,
                &ref_env,
                cmd,
                "rss-ipam",
                Path::new("/x"),
                "x",
                &main_ref_conf,
            )
            .measuring_rss(),
        );
        assert!(s.ok, "host-local {cmd}: {}", s.out);
        rss_hl = rss_hl.max(s.rss_kb);
    }
    for i in 1..n {
        pair("DEL", i, false);
    }
    eprintln!("peak RSS pass: done");

    // ---- report ---------------------------------------------------------------------------
    let vlog = base.join("log/azure-vnet.log");
    let ilog = base.join("log/azure-vnet-ipam.log");
    let add_phases = phases(&vlog, "endpoint created", "seq-");
    let del_phases = phases(&vlog, "endpoint deleted", "seq-");
    let ipam_phases = phases(&ilog, "address allocated", "seq-");
    let add_inproc = median(&done_durations(&vlog, "ADD", "seq-"));
    let ipam_inproc = median(&done_durations(&ilog, "ADD", "seq-"));
    let start_vnet = median(&startup["azure-vnet"]);
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    let installed_ours = size(&ours_vnet); // two names, one file
    let installed_ref = size(&ptp) + size(&host_local);
    let stripped: BTreeMap<&str, u64> = [
        ("azure-vnet", &ours_vnet),
        ("ptp", &ptp),
        ("host-local", &host_local),
    ]
    .into_iter()
    .map(|(k, p)| (k, stripped_size(p, &base)))
    .collect();

    let first10 = |v: &[f64]| median(&v[..10]);
    let last10 = |v: &[f64]| median(&v[v.len() - 10..]);
    let burst_med = |k: &str| {
        let v = &bursts[k];
        (
            median(&v.iter().map(|x| x.0).collect::<Vec<_>>()),
            v.iter().map(|x| x.1).sum::<usize>(),
        )
    };
    let (bao, bao_f) = burst_med("ours ADD");
    let (bar, bar_f) = burst_med("reference ADD");
    let (bdo, bdo_f) = burst_med("ours DEL");
    let (bdr, bdr_f) = burst_med("reference DEL");
    let floor_med = median(&floor_ms);
    let bound = floor_med + start_vnet;
    let mib = |kib: i64| kib as f64 / 1024.0;

    let targets = vec![
        (
            "ADD median <= 0.33x reference",
            median(&add_o) / median(&add_r),
            0.33,
        ),
        (
            "ADD p99 <= 0.4x reference",
            percentile(&add_o, 99.0) / percentile(&add_r, 99.0),
            0.4,
        ),
        (
            "DEL median <= 0.1x reference",
            median(&del_o) / median(&del_r),
            0.1,
        ),
        (
            "ADD median <= 1.5x (floor + one process start)",
            median(&add_o) / bound,
            1.5,
        ),
        (
            "burst ADD+DEL makespan <= 0.35x reference",
            (bao + bdo) / (bar + bdr),
            0.35,
        ),
        (
            "ADD pods last 10 / first 10 <= 1.1",
            last10(&add_o) / first10(&add_o),
            1.1,
        ),
        (
            "peak RSS azure-vnet (IPAM in-process) <= 4 MiB",
            mib(rss_vnet),
            4.0,
        ),
        ("peak RSS azure-vnet-ipam <= 4 MiB", mib(rss_ipam), 4.0),
        (
            "installed size <= ptp + host-local",
            installed_ours as f64 / installed_ref as f64,
            1.0,
        ),
    ];
    let failures = bao_f + bdo_f;

    let date = Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .unwrap();
    let date = String::from_utf8_lossy(&date.stdout).trim().to_string();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "\nazure-vnet-cni benchmark, {date}, kernel {}, {} CPUs, {n} pods per system",
        kernel.trim(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!("ours: azure-vnet + azure-vnet-ipam (file source) installed as one file under two names (IPAM in-process); reference: Debian ptp + host-local; state on tmpfs\n");
    println!("| measure | ours | reference | ratio |");
    println!("|---|---:|---:|---:|");
    let row = |name: &str, o: f64, r: f64| println!("| {name} | {o:.2} | {r:.2} | {:.2} |", o / r);
    row("ADD median (ms)", median(&add_o), median(&add_r));
    row(
        "ADD p99 (ms)",
        percentile(&add_o, 99.0),
        percentile(&add_r, 99.0),
    );
    row(
        "ADD median, pods 1-10 (ms)",
        first10(&add_o),
        first10(&add_r),
    );
    row(
        &format!("ADD median, pods {}-{n} (ms)", n - 9),
        last10(&add_o),
        last10(&add_r),
    );
    row("DEL median (ms)", median(&del_o), median(&del_r));
    row(
        "DEL p99 (ms)",
        percentile(&del_o, 99.0),
        percentile(&del_r, 99.0),
    );
    row(
        "DEL median, pods 1-10 (ms)",
        first10(&del_o),
        first10(&del_r),
    );
    row(
        &format!("DEL median, pods {}-{n} (ms)", n - 9),
        last10(&del_o),
        last10(&del_r),
    );
    for (i, (v, _)) in variants.iter().enumerate().skip(1) {
        let (ao, ar, del_o_v, dr) = &seq[i];
        row(
            &format!("ADD median, {} (ms)", v.name),
            median(ao),
            median(ar),
        );
        row(
            &format!("DEL median, {} (ms)", v.name),
            median(del_o_v),
            median(dr),
        );
    }
    row(&format!("burst of {n} ADDs, makespan (ms)"), bao, bar);
    row(&format!("burst of {n} DELs, makespan (ms)"), bdo, bdr);
    println!("| burst failures (ADD/DEL, all rounds) | {bao_f}/{bdo_f} | {bar_f}/{bdr_f} | |");
    row(
        "process start-up, main plugin VERSION (ms)",
        start_vnet,
        median(&startup["ptp"]),
    );
    row(
        "process start-up, IPAM plugin VERSION (ms)",
        median(&startup["azure-vnet-ipam"]),
        median(&startup["host-local"]),
    );
    row("peak RSS, main plugin (MiB)", mib(rss_vnet), mib(rss_ptp));
    row(
        "peak RSS, IPAM plugin on its own (MiB)",
        mib(rss_ipam),
        mib(rss_hl),
    );
    row(
        "installed size: azure-vnet (one file, two names) vs ptp + host-local (MiB)",
        installed_ours as f64 / 1048576.0,
        installed_ref as f64 / 1048576.0,
    );
    row(
        "stripped size: azure-vnet vs ptp + host-local (MiB)",
        stripped["azure-vnet"] as f64 / 1048576.0,
        (stripped["ptp"] + stripped["host-local"]) as f64 / 1048576.0,
    );
    println!("\nfloor (the kernel work of one ADD in-process, {} pods): median {floor_med:.2} ms, p99 {:.2} ms; floor + one process start = {bound:.2} ms", o.floor, percentile(&floor_ms, 99.0));
    println!("\nwhere one ADD's time goes (medians, ms): process start {start_vnet:.2}; in-process total {add_inproc:.2}:");
    for (k, v) in &add_phases {
        println!("  azure-vnet {k}: {v:.3}");
    }
    println!("  (the IPAM starts before `vethCreate` and runs beside it on the other CPU; `ipam` is the wait for what is left of it, while a thread sets the host sysctls and opens the pod's handles. The IPAM in all {ipam_inproc:.2}: {})", ipam_phases.iter().map(|(k, v)| format!("{k} {v:.3}")).collect::<Vec<_>>().join(", "));
    let fmt = |m: &BTreeMap<String, f64>| {
        m.iter()
            .map(|(k, v)| format!("{k} {v:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("DEL phases (medians, ms): {}", fmt(&del_phases));
    let (early, late) = (0..10, n - 10..n);
    let growth = [
        (
            "ADD phases, pods 1-10",
            phases_of(&vlog, "endpoint created", early.clone()),
        ),
        (
            "ADD phases, last 10",
            phases_of(&vlog, "endpoint created", late.clone()),
        ),
        (
            "DEL phases, pods 1-10",
            phases_of(&vlog, "endpoint deleted", early.clone()),
        ),
        (
            "DEL phases, last 10",
            phases_of(&vlog, "endpoint deleted", late.clone()),
        ),
        (
            "IPAM phases, pods 1-10",
            phases_of(&ilog, "address allocated", early),
        ),
        (
            "IPAM phases, last 10",
            phases_of(&ilog, "address allocated", late),
        ),
    ];
    for (what, m) in &growth {
        println!("{what}: {}", fmt(m));
    }
    println!("\ntargets:");
    let mut all_ok = failures == 0;
    for (name, got, limit) in &targets {
        let ok = got <= limit;
        all_ok &= ok;
        println!("  [{}] {name}: {got:.2}", if ok { "met" } else { "MISSED" });
    }
    println!(
        "  [{}] burst failures: {failures}",
        if failures == 0 { "met" } else { "MISSED" }
    );

    let variants_json: Vec<Value> = variants
        .iter()
        .zip(&seq)
        .map(|((v, _), (ao, ar, del_o_v, dr))| {
            json!({
                "variant": v.name,
                "ms": {"ours": {"add": ao, "del": del_o_v}, "reference": {"add": ar, "del": dr}},
                "addMedian": {"ours": median(ao), "reference": median(ar)},
                "delMedian": {"ours": median(del_o_v), "reference": median(dr)},
            })
        })
        .collect();
    let doc = json!({
        "date": date, "kernel": kernel.trim(), "pods": n, "burstRounds": o.bursts,
        "variants": variants_json,
        "summary": {
            "addMedian": {"ours": median(&add_o), "reference": median(&add_r)},
            "addP99": {"ours": percentile(&add_o, 99.0), "reference": percentile(&add_r, 99.0)},
            "delMedian": {"ours": median(&del_o), "reference": median(&del_r)},
            "delP99": {"ours": percentile(&del_o, 99.0), "reference": percentile(&del_r, 99.0)},
            "addFirst10": {"ours": first10(&add_o), "reference": first10(&add_r)},
            "addLast10": {"ours": last10(&add_o), "reference": last10(&add_r)},
            "delFirst10": {"ours": first10(&del_o), "reference": first10(&del_r)},
            "delLast10": {"ours": last10(&del_o), "reference": last10(&del_r)},
            "burstAddMakespan": {"ours": bao, "reference": bar, "oursFailures": bao_f, "referenceFailures": bar_f},
            "burstDelMakespan": {"ours": bdo, "reference": bdr, "oursFailures": bdo_f, "referenceFailures": bdr_f},
            "startupMs": startup.iter().map(|(k, v)| (k.to_string(), json!(median(v)))).collect::<serde_json::Map<_, _>>(),
            "peakRssKiB": {"azure-vnet": rss_vnet, "azure-vnet-ipam": rss_ipam, "ptp": rss_ptp, "host-local": rss_hl},
            "installedBytes": {"ours": installed_ours, "reference": installed_ref},
            "strippedBytes": stripped,
            "floor": {"median": floor_med, "p99": percentile(&floor_ms, 99.0), "pods": o.floor, "plusOneStart": bound},
            "addPhasesMs": add_phases, "delPhasesMs": del_phases, "ipamPhasesMs": ipam_phases,
            "addInProcessMs": add_inproc, "ipamInProcessMs": ipam_inproc,
        },
        "targets": targets.iter().map(|(k, got, lim)| json!({"target": k, "value": got, "limit": lim, "met": got <= lim})).collect::<Vec<_>>(),
        "allTargetsMet": all_ok,
    });
    if let Some(d) = o.out.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(&o.out, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    println!("\nfigures written to {}", o.out.display());
}
