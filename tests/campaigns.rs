//! Reliability campaigns: load, faults (SIGKILL at random moments), a full filesystem and a
//! read-only state directory. CI runs the short versions (`cargo test`); the full ones are
//! `sudo scripts/campaigns.sh` (AZURE_VNET_CAMPAIGN=full): 10 rounds of 250 concurrent ADDs and
//! DELs, and 500+ SIGKILLs.

mod common;
use common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sched::{setns, unshare, CloneFlags};
use serde_json::Value;

fn full() -> bool {
    std::env::var("AZURE_VNET_CAMPAIGN").as_deref() == Ok("full")
}

/// Many pod namespaces at once, pinned under /var/run/netns like `ip netns add` does (so the
/// testbed's teardown removes them), without an `ip` process per pod.
fn make_pods(tb: &Testbed, prefix: &str, n: usize) -> Vec<(String, PathBuf)> {
    (0..n)
        .map(|i| {
            let name = format!("{}-pod-{prefix}{i}", tb.tag);
            let path = PathBuf::from("/var/run/netns").join(&name);
            File::create(&path).unwrap();
            let p = path.clone();
            std::thread::spawn(move || {
                unshare(CloneFlags::CLONE_NEWNET).unwrap();
                nix::mount::mount(
                    Some("/proc/thread-self/ns/net"),
                    &p,
                    None::<&str>,
                    nix::mount::MsFlags::MS_BIND,
                    None::<&str>,
                )
                .unwrap();
            })
            .join()
            .unwrap();
            (name, path)
        })
        .collect()
}

fn drop_pods(pods: &[(String, PathBuf)]) {
    for (_, p) in pods {
        let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(p);
    }
}

/// Start a plugin inside `node`'s namespace, as a runtime there would (no `ip netns exec`: the
/// pid we get is the plugin's, so it can be killed).
fn spawn_in(node: &str, bin: &Path, env: &[(String, String)], stdin: &[u8]) -> Child {
    let ns = File::open(format!("/var/run/netns/{node}")).unwrap();
    let fd = ns.as_raw_fd();
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: setns is a plain syscall, safe between fork and exec; `ns` outlives the spawn.
    unsafe {
        cmd.pre_exec(move || {
            let f = std::os::fd::BorrowedFd::borrow_raw(fd);
            setns(f, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(ns);
    if let Some(mut si) = child.stdin.take() {
        let _ = si.write_all(stdin);
    }
    child
}

fn env_for(tb: &Testbed, cmd: &str, cid: &str, netns: &Path, pod: &str) -> Vec<(String, String)> {
    env_in(tb, &bin_dir(), cmd, cid, netns, pod)
}

/// The variables of a call whose CNI_PATH starts at `bins` (in-process IPAM with `bin_dir()`,
/// exec'd with `exec_bin_dir()`).
fn env_in(
    tb: &Testbed,
    bins: &Path,
    cmd: &str,
    cid: &str,
    netns: &Path,
    pod: &str,
) -> Vec<(String, String)> {
    with(
        tb.env("a"),
        &[
            ("CNI_COMMAND".into(), cmd.into()),
            ("CNI_CONTAINERID".into(), cid.into()),
            ("CNI_NETNS".into(), netns.display().to_string()),
            ("CNI_IFNAME".into(), "eth0".into()),
            (
                "CNI_PATH".into(),
                format!("{}:/usr/lib/cni", bins.display()),
            ),
            kubelet_args("default", pod, cid),
        ],
    )
}

/// Both state files parse, and they agree: every endpoint's IP is in use in IPAM by the same
/// container; no IP has two owners; no container holds two IPs.
fn check_invariants(tb: &Testbed, when: &str) {
    let run = tb.run_dir("a");
    for f in ["azure-vnet.json", "azure-vnet-ipam.json"] {
        let p = run.join(f);
        if p.exists() {
            let text = std::fs::read_to_string(&p).unwrap();
            if !text.is_empty() {
                serde_json::from_str::<Value>(&text)
                    .unwrap_or_else(|e| panic!("{when}: {f} does not parse: {e}"));
            }
        }
    }
    let used = if run.join("azure-vnet-ipam.json").exists() {
        ips_in_use(&tb.ipam_state("a"))
    } else {
        BTreeMap::new()
    };
    let mut owners: BTreeMap<&String, usize> = BTreeMap::new();
    for cid in used.values() {
        *owners.entry(cid).or_default() += 1;
    }
    assert!(
        owners.values().all(|n| *n == 1),
        "{when}: a container holds two IPs: {used:?}"
    );
    for (k, e) in endpoints(&vnet_state(tb, "a"), "azure") {
        let ip = e["IPAddresses"][0]["IP"].as_str().unwrap().to_string();
        assert_eq!(
            used.get(&ip),
            Some(&e["ContainerID"].as_str().unwrap().to_string()),
            "{when}: record {k} and IPAM disagree on {ip}"
        );
    }
}

/// No address in use, no record, no host route, and (once the pods' namespaces are gone) no
/// `azv` link. With `pods_hold_routes`, a host route may remain until its pod goes: the veth of
/// an ADD killed before its record, whose peer is in a live pod, is not GC's to delete (it
/// cannot tell it from another run directory's pod); the route goes with the namespace.
fn assert_clean(tb: &Testbed, pods: &[(String, PathBuf)], when: &str, pods_hold_routes: bool) {
    let node = tb.node("a");
    assert!(
        ips_in_use(&tb.ipam_state("a")).is_empty(),
        "{when}: IPs in use: {:?}",
        ips_in_use(&tb.ipam_state("a"))
    );
    assert!(
        endpoints(&vnet_state(tb, "a"), "azure").is_empty(),
        "{when}: records left"
    );
    let no_routes = || !routes(&node).contains("dev azv");
    if !pods_hold_routes {
        assert!(no_routes(), "{when}: host routes left:\n{}", routes(&node));
    }
    drop_pods(pods);
    eventually(&format!("{when}: no azv link"), || {
        !links(&node).iter().any(|l| l.starts_with("azv"))
    });
    assert!(no_routes(), "{when}: host routes left:\n{}", routes(&node));
}

fn wait_all(children: Vec<Child>) -> Vec<(bool, String)> {
    children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        })
        .collect()
}

#[test]
fn load_concurrent_adds_then_dels() {
    let (rounds, n) = if full() { (10, 250) } else { (2, 60) };
    let tb = Testbed::up(n as u32);
    for round in 0..rounds {
        let pods = make_pods(&tb, &format!("l{round}-"), n);
        // Every pod's `cmd` at once; each result once all have exited.
        let all_at_once = |cmd: &str| -> Vec<(bool, String)> {
            let children: Vec<Child> = pods
                .iter()
                .enumerate()
                .map(|(i, (_, p))| {
                    let cid = format!("load{round}-{i}");
                    spawn_in(
                        &tb.node("a"),
                        &vnet_bin(),
                        &env_for(&tb, cmd, &cid, p, &format!("l{round}-{i}")),
                        VNET_CONF.as_bytes(),
                    )
                })
                .collect();
            wait_all(children)
        };
        let t = Instant::now();
        let results = all_at_once("ADD");
        let add_ms = t.elapsed().as_secs_f64() * 1e3;
        let failures: Vec<&String> = results.iter().filter(|r| !r.0).map(|r| &r.1).collect();
        assert!(
            failures.is_empty(),
            "round {round}: {} ADDs failed: {:?}",
            failures.len(),
            &failures[..failures.len().min(3)]
        );
        let ips: BTreeSet<String> = results
            .iter()
            .map(|r| {
                serde_json::from_str::<Value>(&r.1).unwrap()["ips"][0]["address"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(ips.len(), n, "round {round}: duplicate IPs");
        assert_eq!(ips_in_use(&tb.ipam_state("a")).len(), n);
        assert_eq!(endpoints(&vnet_state(&tb, "a"), "azure").len(), n);
        check_invariants(&tb, &format!("round {round} after ADDs"));

        let t = Instant::now();
        let results = all_at_once("DEL");
        let del_ms = t.elapsed().as_secs_f64() * 1e3;
        assert!(results.iter().all(|r| r.0), "round {round}: DEL failures");
        assert_clean(&tb, &pods, &format!("round {round}"), false);
        println!("load round {round}: {n} concurrent ADDs in {add_ms:.0} ms, {n} concurrent DELs in {del_ms:.0} ms, 0 failures, {n} distinct IPs, nothing left");
    }
}

/// The pids of `pid`'s children (the IPAM plugin azure-vnet is running, if any).
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// A tiny deterministic PRNG (xorshift), so a failing campaign can be replayed by its seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Default)]
struct KillStats {
    delivered: usize,
    missed: usize,
    by_target: BTreeMap<&'static str, usize>,
    by_decile: [usize; 10],
    /// How late each delivered kill was against its plan (printed: the plan's precision).
    late: Vec<Duration>,
}

/// Whether `pid` (our child, not yet reaped) is still running rather than a zombie.
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(") ").next().map(|rest| !rest.starts_with('Z')))
        .unwrap_or(false)
}

/// Run `calls` concurrently and SIGKILL some of them (with probability `p` percent) at a random
/// moment in [0, span) after each one started: the main plugin, or the IPAM plugin it is
/// running. Each victim has its own killer thread, started right after the spawn, so the very
/// start of an operation is hit as often as its end. Children are reaped only after every
/// killer is done, so a pid cannot be reused under a killer's feet.
fn storm(
    tb: &Testbed,
    bin: &Path,
    calls: Vec<Vec<(String, String)>>,
    p: u64,
    span: Duration,
    rng: &mut Rng,
    stats: &mut KillStats,
) {
    let mut children = Vec::new();
    let mut killers = Vec::new();
    for env in &calls {
        let plan = (rng.below(100) < p).then(|| {
            (
                span.mul_f64(rng.below(1000) as f64 / 1000.0),
                rng.below(2) == 0,
            )
        });
        let child = spawn_in(&tb.node("a"), bin, env, VNET_CONF.as_bytes());
        // spawn returns once the plugin has been exec'd: moments count from there.
        let started = Instant::now();
        let pid = child.id();
        children.push(child);
        if let Some((at, ipam)) = plan {
            let in_process = bin.starts_with(bin_dir());
            killers.push(std::thread::spawn(move || {
                if let Some(wait) = (started + at).checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let victim = match ipam && !in_process {
                    true => children_of(pid).first().copied(),
                    false => Some(pid),
                };
                // With the IPAM in-process there is no child: azure-vnet is killed.
                let target = match (victim == Some(pid), in_process) {
                    (false, _) => "azure-vnet-ipam",
                    (true, true) => "azure-vnet, IPAM in-process",
                    (true, false) => "azure-vnet, IPAM exec'd",
                };
                match victim.filter(|v| running(*v) && running(pid)) {
                    Some(v) => {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(v as i32),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                        // The planned moment, not the measured one: a killer thread can start
                        // a fraction of a millisecond late on a busy machine, and the window's
                        // first tenth would never count.
                        let tenth = (at.as_secs_f64() / span.as_secs_f64() * 10.0) as usize;
                        Some((target, tenth.min(9), started.elapsed().saturating_sub(at)))
                    }
                    None => None,
                }
            }));
        }
    }
    for k in killers {
        match k.join().unwrap() {
            Some((target, tenth, late)) => {
                stats.delivered += 1;
                *stats.by_target.entry(target).or_default() += 1;
                stats.by_decile[tenth] += 1;
                stats.late.push(late);
            }
            None => stats.missed += 1,
        }
    }
    for mut c in children {
        let _ = c.wait();
    }
}

#[test]
fn faults_sigkill_at_random_moments() {
    let (target_kills, conc) = if full() { (500, 10) } else { (40, 6) };
    let tb = Testbed::up(250);
    let mut rng = Rng(0x5eed_2026_1121 ^ std::process::id() as u64);
    println!("fault campaign seed {:#x}", rng.0);

    // Calibrate: how long an ADD and a DEL take here, so kill moments cover all of them.
    let cal = make_pods(&tb, "cal", 5);
    let mut span = Duration::ZERO;
    for (i, (_, p)) in cal.iter().enumerate() {
        for cmd in ["ADD", "DEL"] {
            let t = Instant::now();
            let c = spawn_in(
                &tb.node("a"),
                &vnet_bin(),
                &env_for(&tb, cmd, &format!("cal-{i}"), p, &format!("cal{i}")),
                VNET_CONF.as_bytes(),
            );
            assert!(c.wait_with_output().unwrap().status.success());
            span = span.max(t.elapsed());
        }
    }
    assert_clean(&tb, &cal, "calibration", false);
    let span = span.mul_f64(1.2);
    println!(
        "kill window: 0..{:.1} ms after each plugin starts",
        span.as_secs_f64() * 1e3
    );

    let mut stats = KillStats::default();
    let mut round = 0;
    // Until enough kills, each of the three kinds of victim has been hit, and kills have
    // landed over the window (bounded).
    let spread = |s: &KillStats| s.by_decile.iter().filter(|n| **n > 0).count();
    while (stats.delivered < target_kills || stats.by_target.len() < 3 || spread(&stats) < 8)
        && round < 400
    {
        let pods = make_pods(&tb, &format!("f{round}-"), conc);
        // Rounds alternate: the IPAM in-process (one executable under two names), exec'd
        // (two files); and within each, cleanup by DEL or by GC.
        let bins = if (round / 2) % 2 == 0 {
            bin_dir()
        } else {
            exec_bin_dir()
        };
        let bin = bins.join("azure-vnet");
        let call = |cmd: &str, i: usize, p: &Path| {
            env_in(
                &tb,
                &bins,
                cmd,
                &format!("fault{round}-{i}"),
                p,
                &format!("f{round}-{i}"),
            )
        };
        // Concurrent ADDs, most of them killed somewhere along the way.
        let adds = pods
            .iter()
            .enumerate()
            .map(|(i, (_, p))| call("ADD", i, p))
            .collect();
        storm(&tb, &bin, adds, 80, span, &mut rng, &mut stats);
        check_invariants(&tb, &format!("round {round} after killed ADDs"));
        // The runtime's DELs for them, some killed too.
        let dels = pods
            .iter()
            .enumerate()
            .map(|(i, (_, p))| call("DEL", i, p))
            .collect();
        storm(&tb, &bin, dels, 40, span, &mut rng, &mut stats);
        check_invariants(&tb, &format!("round {round} after killed DELs"));
        // Then the cleanup a runtime converges to: DEL of every container, or GC with an
        // empty list of valid attachments.
        if round % 2 == 0 {
            for (i, (_, p)) in pods.iter().enumerate() {
                let out = run_plugin(
                    Some(&tb.node("a")),
                    &bin,
                    &call("DEL", i, p),
                    VNET_CONF.as_bytes(),
                );
                assert_eq!(
                    out.code, 0,
                    "round {round}: final DEL failed: {}",
                    out.stdout
                );
            }
        } else {
            let conf = VNET_CONF.replacen('{', r#"{"cni.dev/valid-attachments":[],"#, 1);
            let env = with(
                tb.env("a"),
                &[
                    ("CNI_COMMAND".into(), "GC".into()),
                    (
                        "CNI_PATH".into(),
                        format!("{}:/usr/lib/cni", bins.display()),
                    ),
                ],
            );
            run_plugin(Some(&tb.node("a")), &bin, &env, conf.as_bytes()).succeeded();
        }
        assert_clean(&tb, &pods, &format!("round {round}"), round % 2 == 1);
        round += 1;
    }
    stats.late.sort();
    let late_ms = |q: f64| {
        let i = ((stats.late.len() as f64 * q) as usize).min(stats.late.len().saturating_sub(1));
        stats.late.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "fault campaign: {round} rounds of {conc} concurrent ADDs and DELs, {} SIGKILLs delivered {:?}, {} aimed at processes already done; delivered kills by the tenth of the window they were planned in: {:?} (later than planned by {:.2} ms at the median, {:.2} ms at p90); after each round both state files parsed, no IP had two owners, and nothing was left",
        stats.delivered, stats.by_target, stats.missed, stats.by_decile, late_ms(0.5), late_ms(0.9)
    );
    assert!(
        stats.by_target.len() == 3,
        "azure-vnet with the IPAM in-process and exec'd, and the exec'd IPAM, were killed: {:?}",
        stats.by_target
    );
    assert!(
        spread(&stats) >= 8,
        "kills spread over the window: {:?}",
        stats.by_decile
    );
}

/// Run `f` on a thread with a private mount namespace holding a small tmpfs at `dir`; the
/// plugins it starts see that tmpfs, nothing outside does.
fn with_small_tmpfs<T: Send>(dir: &Path, size: &str, f: impl FnOnce() -> T + Send) -> T {
    in_private_mounts(|| {
        mount_tmpfs(dir, size);
        f()
    })
}

fn state_bytes(run: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(run)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn full_filesystem_gives_clear_errors_and_corrupts_nothing() {
    let tb = Testbed::up(5);
    let run = tb.run_dir("a");
    with_small_tmpfs(&run, "64k", || {
        let (_, p1) = tb.pod("full1");
        let (ns2, p2) = tb.pod("full2");
        vnet_call(
            &tb,
            "a",
            "ADD",
            "cid-full1",
            &p1.display().to_string(),
            Some("full1"),
            VNET_CONF,
        )
        .succeeded();
        // Fill the filesystem.
        let mut filler = File::create(run.join("filler")).unwrap();
        let chunk = vec![0u8; 4096];
        while filler
            .write_all(&chunk)
            .and_then(|_| filler.sync_all())
            .is_ok()
        {}
        while filler
            .write_all(&chunk[..64])
            .and_then(|_| filler.sync_all())
            .is_ok()
        {}
        let before = state_bytes(&run);
        let snap = snapshot(&tb, "a", &ns2);

        let e = vnet_call(
            &tb,
            "a",
            "ADD",
            "cid-full2",
            &p2.display().to_string(),
            Some("full2"),
            VNET_CONF,
        )
        .err(5);
        assert!(
            e["msg"]
                .as_str()
                .unwrap()
                .contains("No space left on device"),
            "{e}"
        );
        assert_eq!(
            state_bytes(&run),
            before,
            "state files untouched, no temp file left"
        );
        assert_eq!(snapshot(&tb, "a", &ns2), snap, "network untouched");
        let e = vnet_call(
            &tb,
            "a",
            "DEL",
            "cid-full1",
            &p1.display().to_string(),
            Some("full1"),
            VNET_CONF,
        )
        .err(5);
        assert!(
            e["msg"]
                .as_str()
                .unwrap()
                .contains("No space left on device"),
            "{e}"
        );
        assert_eq!(state_bytes(&run), before);

        // Space again: everything goes through, and the state is consistent.
        drop(filler);
        std::fs::remove_file(run.join("filler")).unwrap();
        vnet_call(
            &tb,
            "a",
            "DEL",
            "cid-full1",
            &p1.display().to_string(),
            Some("full1"),
            VNET_CONF,
        )
        .succeeded();
        vnet_call(
            &tb,
            "a",
            "ADD",
            "cid-full2",
            &p2.display().to_string(),
            Some("full2"),
            VNET_CONF,
        )
        .succeeded();
        check_invariants(&tb, "after the filesystem had space again");
        assert_eq!(
            ips_in_use(&tb.ipam_state("a")).values().collect::<Vec<_>>(),
            vec!["cid-full2"]
        );
        vnet_call(
            &tb,
            "a",
            "DEL",
            "cid-full2",
            &p2.display().to_string(),
            Some("full2"),
            VNET_CONF,
        )
        .succeeded();
    });
}

#[test]
fn read_only_state_directory_gives_clear_errors_and_corrupts_nothing() {
    let tb = Testbed::up(5);
    let run = tb.run_dir("a");
    with_small_tmpfs(&run, "1m", || {
        let (_, p1) = tb.pod("ro1");
        let (ns2, p2) = tb.pod("ro2");
        vnet_call(
            &tb,
            "a",
            "ADD",
            "cid-ro1",
            &p1.display().to_string(),
            Some("ro1"),
            VNET_CONF,
        )
        .succeeded();
        nix::mount::mount(
            None::<&str>,
            &run,
            None::<&str>,
            nix::mount::MsFlags::MS_REMOUNT | nix::mount::MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .unwrap();
        let before = state_bytes(&run);
        let snap = snapshot(&tb, "a", &ns2);
        let e = vnet_call(
            &tb,
            "a",
            "ADD",
            "cid-ro2",
            &p2.display().to_string(),
            Some("ro2"),
            VNET_CONF,
        )
        .err(5);
        assert!(
            e["msg"].as_str().unwrap().contains("Read-only file system"),
            "{e}"
        );
        assert_eq!(snapshot(&tb, "a", &ns2), snap);
        let out = vnet_call(
            &tb,
            "a",
            "DEL",
            "cid-ro1",
            &p1.display().to_string(),
            Some("ro1"),
            VNET_CONF,
        );
        assert_eq!(out.code, 1);
        assert!(
            out.json()["msg"]
                .as_str()
                .unwrap()
                .contains("Read-only file system"),
            "{}",
            out.stdout
        );
        assert_eq!(state_bytes(&run), before);
        nix::mount::mount(
            None::<&str>,
            &run,
            None::<&str>,
            nix::mount::MsFlags::MS_REMOUNT,
            None::<&str>,
        )
        .unwrap();
        vnet_call(
            &tb,
            "a",
            "DEL",
            "cid-ro1",
            &p1.display().to_string(),
            Some("ro1"),
            VNET_CONF,
        )
        .succeeded();
        check_invariants(&tb, "after remounting read-write");
        assert!(ips_in_use(&tb.ipam_state("a")).is_empty());
    });
}
