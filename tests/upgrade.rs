//! Upgrades that drop no pod (issue 12), through containerd's CRI plugin on the simulated node,
//! with the plugin installed as the DaemonSet's init container installs it (`azure-vnet
//! install` into containerd's bin and conf dirs):
//!
//! * version N (this build) is installed, ten workers create and remove sandboxes without a
//!   pause, and version N+1 (the same source built again with another version string) is
//!   installed over it mid-churn, then N again over N+1 (a roll back): not one RunPodSandbox,
//!   StopPodSandbox or RemovePodSandbox fails, no "text file busy" anywhere, pods created by
//!   one version are deleted cleanly by the other, and nothing is left;
//! * our install over a node that upstream's installer set up (its file layout: separate
//!   binaries, `.old` files, a 0755 conflist; its state files' shape): the old pods keep
//!   their traffic, new pods coexist with them, the old pods' DELs work and release their
//!   addresses, and upstream's leftovers are not touched.

mod common;
use common::cri::*;
use common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Version N+1's version string.
const NEXT_VERSION: &str = "v0.1.1-next";

/// Version N+1: this source built again with `AZURE_VNET_VERSION` (in a target dir of its own,
/// so the tests' build is not invalidated; the first build there compiles the dependencies,
/// later ones only this crate).
fn next_build() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let target = repo().join("target/upgrade-next");
            let t = Instant::now();
            let out = Command::new(env!("CARGO"))
                .args(["build", "--quiet", "--bins", "--target-dir"])
                .arg(&target)
                .current_dir(repo())
                .env("AZURE_VNET_VERSION", NEXT_VERSION)
                .stdout(Stdio::null())
                .output()
                .expect("run cargo build");
            assert!(
                out.status.success(),
                "cargo build of version N+1: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            eprintln!("version N+1 built in {:?}", t.elapsed());
            target.join("debug/azure-vnet")
        })
        .clone()
}

/// `exe install` into the node's CNI dirs, as the DaemonSet's init container runs it: its
/// output, and when it ran.
fn install(exe: &Path, cri: &CriNode) -> (String, Instant, Instant) {
    let t0 = Instant::now();
    let out = Command::new(exe)
        .arg("install")
        .arg("--bin-dir")
        .arg(cri.cni_bin_dir())
        .arg("--conf-dir")
        .arg(cri.cni_conf_dir())
        .arg("--conflist")
        .arg(repo().join("conflist/10-azure.conflist"))
        .env_clear()
        .env("PATH", PATH)
        .output()
        .unwrap();
    let t1 = Instant::now();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{} install: {text}", exe.display());
    (text, t0, t1)
}

/// The plugin now in the bin dir: its version under both names, which must be one file.
fn installed_version(cri: &CriNode) -> String {
    let (v, i) = (
        cri.cni_bin_dir().join("azure-vnet"),
        cri.cni_bin_dir().join("azure-vnet-ipam"),
    );
    let (mv, mi) = (
        std::fs::metadata(&v).unwrap(),
        std::fs::metadata(&i).unwrap(),
    );
    assert_eq!((mv.dev(), mv.ino()), (mi.dev(), mi.ino()), "one file");
    let (a, b) = (version_of(&v), version_of(&i));
    assert_eq!(a, b);
    a
}

fn wait_network_ready(cri: &CriNode) {
    let t = Instant::now();
    while !cri.network_ready().0 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "NetworkReady still false: {:?}\n{}",
            cri.network_ready().1,
            cri.diag()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One CRI call of the churn.
#[derive(Debug, Clone)]
struct Op {
    call: &'static str,
    sandbox: String,
    start: Instant,
    end: Instant,
    err: Option<String>,
}

impl Op {
    fn within(&self, from: Instant, to: Instant) -> bool {
        self.start >= from && self.end <= to
    }
    fn overlaps(&self, from: Instant, to: Instant) -> bool {
        self.start < to && self.end > from
    }
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Instant, Instant) {
    let s = Instant::now();
    let r = f();
    (r, s, Instant::now())
}

/// The worker's check of a new sandbox: an address, and traffic to the API server from it.
fn check_pod(cri: &CriNode, id: &str) -> Result<(), String> {
    let st = cri.call(&["statusp", id, "--verbose"]);
    if !st.ok {
        return Err(format!("PodSandboxStatus {id}: {}", st.stderr));
    }
    let v = st.json();
    let ip = v["status"]["network"]["ip"].as_str().unwrap_or_default();
    let pid = v["info"]["info"]["pid"].as_u64().unwrap_or(0);
    if ip.is_empty() || pid == 0 {
        return Err(format!("sandbox {id}: no address or pause pid: {v}"));
    }
    let out = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["--", "ping", "-c1", "-W2", API_IP])
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(format!(
            "sandbox {id} ({ip}): no traffic to the API server: {}",
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    Ok(())
}

/// Stop and remove a sandbox, each call timed.
fn remove_sandbox(cri: &CriNode, id: &str, ops: &mut Vec<Op>) {
    for (call, verb) in [("StopPodSandbox", "stopp"), ("RemovePodSandbox", "rmp")] {
        let (out, start, end) = timed(|| cri.call(&[verb, id]));
        ops.push(Op {
            call,
            sandbox: id.to_string(),
            start,
            end,
            err: (!out.ok).then_some(out.stderr),
        });
    }
}

/// Create a sandbox, timed; its ID (from the error too, when the runtime gave one).
fn run_sandbox(cri: &CriNode, name: &str, ops: &mut Vec<Op>) -> Result<String, String> {
    let pod = Pod::new(name, "churn");
    let (r, start, end) = timed(|| cri.try_runp(&pod));
    let sandbox = match &r {
        Ok(id) => id.clone(),
        Err(e) => e
            .split("sandbox \"")
            .nth(1)
            .and_then(|t| t.split('"').next())
            .unwrap_or_default()
            .to_string(),
    };
    ops.push(Op {
        call: "RunPodSandbox",
        sandbox,
        start,
        end,
        err: r.as_ref().err().cloned(),
    });
    r
}

const WORKERS: usize = 10;
/// Each worker's cycles (create a sandbox, check it, stop and remove its previous one) in
/// each of the three phases: N, N+1, N again.
const CYCLES_PER_PHASE: usize = 5;

#[test]
fn cri_upgrade_and_downgrade_under_churn_of_10_sandboxes_drop_no_pod() {
    let next = next_build();
    let this = vnet_bin();
    let (v_n, v_next) = (version_of(&this), version_of(&next));
    assert_eq!(v_next, NEXT_VERSION);
    assert_ne!(v_n, v_next);

    let tb = Testbed::up(40);
    let ws = Wireserver::start(&tb.node("a"), &tb.nmagent_xml("a"), "ok");
    let cri = CriNode::start(&tb, "a", CniSetup::not_installed(&tb, "a", &ws));

    // Version N, as the init container installs it.
    let (out, ..) = install(&this, &cri);
    assert_eq!(out.matches(" installed").count(), 3, "{out}");
    assert_eq!(installed_version(&cri), v_n);
    wait_network_ready(&cri);

    let stop = AtomicBool::new(false);
    let cycles: Vec<AtomicUsize> = (0..WORKERS).map(|_| AtomicUsize::new(0)).collect();
    let t_start = Instant::now();
    let mut marks = Vec::new();
    let wait_cycles = |n: usize| {
        let base: Vec<usize> = cycles.iter().map(|c| c.load(Ordering::SeqCst)).collect();
        let t = Instant::now();
        while cycles
            .iter()
            .zip(&base)
            .any(|(c, b)| c.load(Ordering::SeqCst) < b + n)
        {
            assert!(
                t.elapsed() < Duration::from_secs(180),
                "the churn does not progress\n{}",
                cri.diag()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let (ops, check_errors) = std::thread::scope(|s| {
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let (cri, stop, cycles) = (&cri, &stop, &cycles);
                s.spawn(move || {
                    let mut ops = Vec::new();
                    let mut errs = Vec::new();
                    let mut prev: Option<String> = None;
                    let mut i = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let r = run_sandbox(cri, &format!("up-{w}-{i}"), &mut ops);
                        i += 1;
                        if let Ok(sandbox) = r {
                            if let Err(e) = check_pod(cri, &sandbox) {
                                errs.push(e);
                            }
                            if let Some(p) = prev.replace(sandbox) {
                                remove_sandbox(cri, &p, &mut ops);
                            }
                        }
                        cycles[w].fetch_add(1, Ordering::SeqCst);
                    }
                    if let Some(p) = prev {
                        remove_sandbox(cri, &p, &mut ops);
                    }
                    (ops, errs)
                })
            })
            .collect();

        // A failed assertion below must still end the workers, or the scope waits forever.
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let _stop_on_panic = StopOnDrop(&stop);

        // Phase N, then N+1 installed over it, then N again (the roll back). Besides the
        // churn, whose pods straddle an install only as timing allows, one pod made before
        // each install is removed after it: by the other version, whatever the timing.
        let mut ops = Vec::new();
        let mut errs = Vec::new();
        let mut straddler = |name: &str, ops: &mut Vec<Op>| match run_sandbox(&cri, name, ops) {
            Ok(id) => {
                if let Err(e) = check_pod(&cri, &id) {
                    errs.push(e);
                }
                id
            }
            Err(e) => panic!("{name}: {e}\n{}", cri.diag()),
        };
        wait_cycles(CYCLES_PER_PHASE);
        let up = straddler("straddle-up", &mut ops);
        let (out, t0, t1) = install(&next, &cri);
        marks.push((t0, t1));
        assert_eq!(installed_version(&cri), v_next);
        assert!(out.contains("10-azure.conflist  unchanged"), "{out}");
        remove_sandbox(&cri, &up, &mut ops);
        let down = straddler("straddle-down", &mut ops);
        wait_cycles(CYCLES_PER_PHASE);
        // N+1 has been writing the state files.
        for f in ["azure-vnet-ipam.json", "azure-vnet.json"] {
            let doc = read_json(&tb.run_dir("a").join(f));
            let version = doc["IPAM"]["Version"]
                .as_str()
                .or(doc["Network"]["Version"].as_str());
            assert_eq!(version, Some(NEXT_VERSION), "{f}");
        }
        let (_, t2, t3) = install(&this, &cri);
        marks.push((t2, t3));
        assert_eq!(installed_version(&cri), v_n);
        remove_sandbox(&cri, &down, &mut ops);
        wait_cycles(CYCLES_PER_PHASE);
        stop.store(true, Ordering::SeqCst);
        for w in workers {
            let (o, e) = w.join().expect("a churn worker panicked");
            ops.extend(o);
            errs.extend(e);
        }
        (ops, errs)
    });
    let t_end = Instant::now();

    // Not one failed call, not one pod without its network.
    let failed: Vec<&Op> = ops.iter().filter(|o| o.err.is_some()).collect();
    assert!(
        failed.is_empty(),
        "failed CRI calls: {failed:#?}\n{}",
        cri.diag()
    );
    assert!(check_errors.is_empty(), "{check_errors:#?}\n{}", cri.diag());
    let containerd_log =
        std::fs::read_to_string(cri.dir.join("containerd.log")).unwrap_or_default();
    assert!(!containerd_log.contains("text file busy"));
    for f in ["azure-vnet.log", "azure-vnet-ipam.log"] {
        let log = std::fs::read_to_string(tb.log_dir("a").join(f)).unwrap_or_default();
        assert!(!log.contains("text file busy"), "{f}");
        let failed: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("\"msg\":\"failed\""))
            .collect();
        assert!(failed.is_empty(), "{f}: {failed:#?}");
    }

    // Which version ran each call: the one installed for the whole of it.
    let [(t0, t1), (t2, t3)] = [marks[0], marks[1]];
    let phases = [(t_start, t0), (t1, t2), (t3, t_end)];
    let created_in = |phase: usize| -> BTreeSet<&str> {
        ops.iter()
            .filter(|o| o.call == "RunPodSandbox" && o.within(phases[phase].0, phases[phase].1))
            .map(|o| o.sandbox.as_str())
            .collect()
    };
    let deleted_in = |phase: usize| -> BTreeSet<&str> {
        ops.iter()
            .filter(|o| o.call == "StopPodSandbox" && o.within(phases[phase].0, phases[phase].1))
            .map(|o| o.sandbox.as_str())
            .collect()
    };
    let n_to_next = created_in(0).intersection(&deleted_in(1)).count();
    let next_to_n = created_in(1).intersection(&deleted_in(2)).count();
    assert!(
        n_to_next > 0 && next_to_n > 0,
        "pods created by one version and deleted by the other: N->N+1 {n_to_next}, N+1->N {next_to_n}"
    );
    let in_flight =
        |from: Instant, to: Instant| ops.iter().filter(|o| o.overlaps(from, to)).count();
    let in_phase = |(from, to): (Instant, Instant)| {
        ops.iter()
            .filter(|o| o.start >= from && o.start < to)
            .count()
    };
    let sandboxes = ops.iter().filter(|o| o.call == "RunPodSandbox").count();
    eprintln!(
        "upgrade figures: {} CRI calls ({sandboxes} sandboxes created, checked and removed by {WORKERS} \
         workers) in {:.1} s, 0 failed; phase N {} calls, N+1 {} calls, N again {} calls; \
         install of N+1 took {:.0} ms with {} calls in flight; the roll back to N took {:.0} ms \
         with {} calls in flight; pods created by N and deleted by N+1: {n_to_next}, created by \
         N+1 and deleted by N: {next_to_n}",
        ops.len(),
        (t_end - t_start).as_secs_f64(),
        in_phase(phases[0]),
        in_phase((t0, t2)),
        in_phase((t2, t_end)),
        (t1 - t0).as_secs_f64() * 1e3,
        in_flight(t0, t1),
        (t3 - t2).as_secs_f64() * 1e3,
        in_flight(t2, t3),
    );

    // Nothing is left: no address, record, route, link, cached result or netns pin.
    NodeView::of(&tb, "a").assert_empty("after the churn");
    azv_links_become(&tb, "a", &BTreeSet::new());
    assert!(cri.sandbox_ids().is_empty(), "{:?}", cri.sandbox_ids());
    assert!(cri.cache_entries().is_empty(), "{:?}", cri.cache_entries());
    assert!(cri.netns_pins().is_empty(), "{:?}", cri.netns_pins());
    // N wrote the state last.
    assert_eq!(
        tb.ipam_state("a")["IPAM"]["Version"].as_str(),
        Some(v_n.as_str())
    );
}

/// The seed's endpoint record (AKS, Aug 2024), as upstream wrote it: the old pod's record is
/// this one with the old pod's values.
const SEED_ENDPOINT: &str = r#"{
        "Id": "ee86fb8b-eth0",
        "SandboxKey": "",
        "IfName": "azvc440f4556932",
        "HostIfName": "azvc440f455693",
        "MacAddress": "umCZaqGD",
        "InfraVnetIP": {"IP": "", "Mask": null},
        "LocalIP": "",
        "IPAddresses": [{"IP": "10.224.0.24", "Mask": "//8AAA=="}],
        "Gateways": ["0.0.0.0"],
        "DNS": {"Suffix": "", "Servers": ["168.63.129.16"], "Options": null},
        "Routes": [{"Dst": {"IP": "0.0.0.0", "Mask": "AAAAAA=="}, "Src": "", "Gw": "10.224.0.1",
                    "Protocol": 0, "DevName": "", "Scope": 0, "Priority": 0, "Table": 0}],
        "VlanID": 0,
        "EnableSnatOnHost": false,
        "EnableInfraVnet": false,
        "EnableMultitenancy": false,
        "AllowInboundFromHostToNC": false,
        "AllowInboundFromNCToHost": false,
        "NetworkContainerID": "",
        "NetworkNameSpace": "/var/run/netns/cni-1770aa7f-262a-c2ad-1c19-0a376d016a78",
        "ContainerID": "ee86fb8be61987b83e1da1338b09fc0a83dcd12f9754455e668b16dc98f20f48",
        "PODName": "nginx",
        "PODNameSpace": "default"
}"#;

/// The seed's pod, its container ID.
const SEED_CID: &str = "ee86fb8be61987b83e1da1338b09fc0a83dcd12f9754455e668b16dc98f20f48";

/// Upstream's version in the state files (tests/ipam_state_compat.rs's fixture).
const UPSTREAM_VERSION: &str = "v1.6.21";

/// The state files as upstream's plugins would have written them for the same pods: upstream's
/// version and timestamp, no field of ours (`LastRefresh`, `LastSource`, `LastAllocated`,
/// `Unlisted`), fields we do not model (as in tests/ipam_state_compat.rs), and each endpoint
/// record the seed's record with the pod's values.
fn upstream_shape(run: &Path, old_cid: &str) {
    let ipam_path = run.join("azure-vnet-ipam.json");
    let mut ipam = read_json(&ipam_path);
    ipam["IPAM"]["Version"] = UPSTREAM_VERSION.into();
    ipam["IPAM"]["TimeStamp"] = "2026-08-20T19:46:13.987654321Z".into();
    ipam["IPAM"]["FutureManagerField"] = json!({"a": 1});
    ipam["FutureTopLevel"] = "kept".into();
    for space in ipam["IPAM"]["AddressSpaces"]
        .as_object_mut()
        .unwrap()
        .values_mut()
    {
        let space = space.as_object_mut().unwrap();
        space.remove("LastRefresh");
        space.remove("LastSource");
        for pool in space["Pools"].as_object_mut().unwrap().values_mut() {
            let pool = pool.as_object_mut().unwrap();
            pool.remove("LastAllocated");
            pool.insert("FuturePoolField".into(), json!([1, 2]));
            for rec in pool["Addresses"].as_object_mut().unwrap().values_mut() {
                let rec = rec.as_object_mut().unwrap();
                rec.remove("Unlisted");
                if rec["InUse"] == true {
                    rec.insert("Epoch".into(), json!(3));
                }
            }
        }
    }
    write_go_json(&ipam_path, &ipam);

    let net_path = run.join("azure-vnet.json");
    let mut net = read_json(&net_path);
    net["Network"]["Version"] = UPSTREAM_VERSION.into();
    net["Network"]["TimeStamp"] = "2026-08-20T19:46:13.987654321Z".into();
    let seed: Value = serde_json::from_str(SEED_ENDPOINT).unwrap();
    let eps = net["Network"]["ExternalInterfaces"]["eth0"]["Networks"]["azure"]["Endpoints"]
        .as_object_mut()
        .unwrap();
    for (id, ep) in eps.iter_mut() {
        let ours = ep.as_object().unwrap();
        assert_eq!(
            ours.keys().collect::<BTreeSet<_>>(),
            seed.as_object().unwrap().keys().collect::<BTreeSet<_>>(),
            "record {id} has the seed's fields"
        );
        let mut rec = seed.clone();
        for k in [
            "Id",
            "IfName",
            "HostIfName",
            "MacAddress",
            "IPAddresses",
            "Routes",
            "NetworkNameSpace",
            "ContainerID",
            "PODName",
            "PODNameSpace",
        ] {
            rec[k] = ours[k].clone();
        }
        *ep = rec;
    }
    assert!(eps.values().any(|e| e["ContainerID"] == old_cid), "{eps:?}");
    write_go_json(&net_path, &net);
}

/// Tab-indented, as Go's MarshalIndent writes upstream's files; 0600 as upstream's are.
fn write_go_json(path: &Path, v: &Value) {
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(
        &mut buf,
        serde_json::ser::PrettyFormatter::with_indent(b"\t"),
    );
    serde::Serialize::serialize(v, &mut ser).unwrap();
    std::fs::write(path, buf).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn cri_our_install_over_an_upstream_shaped_node_keeps_its_pods_and_their_dels_work() {
    let tb = Testbed::up(30);
    let ws = Wireserver::start(&tb.node("a"), &tb.nmagent_xml("a"), "ok");
    let setup = CniSetup::not_installed(&tb, "a", &ws);
    let env = setup.env.clone();
    let cri = CriNode::start(&tb, "a", setup);
    let (bin, conf) = (cri.cni_bin_dir(), cri.cni_conf_dir());

    // Upstream's layout, as `dropgz deploy` leaves it after an update: each destination
    // renamed to <dest>.old and rewritten in place, mode 0755 (the conflist too); azure-vnet
    // and azure-vnet-ipam two separate files (stand-ins: copies of another build of ours,
    // N+1's), telemetry files beside them.
    let stand_in = std::fs::read(next_build()).unwrap();
    let mut files: Vec<(PathBuf, Vec<u8>)> = vec![
        (bin.join("azure-vnet"), stand_in.clone()),
        (bin.join("azure-vnet-ipam"), stand_in.clone()),
        (bin.join("azure-vnet.old"), stand_in.clone()),
        (bin.join("azure-vnet-ipam.old"), stand_in.clone()),
        (
            bin.join("azure-vnet-telemetry"),
            b"#!/bin/sh\nexit 0\n".to_vec(),
        ),
        (bin.join("azure-vnet-telemetry.config"), b"{}\n".to_vec()),
    ];
    let seed_conflist = std::fs::read(repo().join("conflist/10-azure.conflist")).unwrap();
    files.push((conf.join("10-azure.conflist.old"), seed_conflist.clone()));
    files.push((conf.join("10-azure.conflist"), seed_conflist.clone()));
    for (p, content) in &files {
        write_executable(p, content);
    }
    wait_network_ready(&cri);

    // Old pods, made by upstream's install before ours: one through CRI (containerd ran the
    // stand-ins, azure-vnet exec'ing the separate azure-vnet-ipam), serving HTTP; and the
    // seed's default/nginx, its sandbox's ADD sent as containerd sends it.
    let old_cri_pod = Pod::new("old-web", "default");
    let old_cri = cri.runp(&old_cri_pod);
    cri.start_httpd(&old_cri, &old_cri_pod);
    let (nginx_ns, nginx_netns) = tb.pod("nginx");
    let conf_entry = r#"{"cniVersion":"0.3.0","name":"azure","type":"azure-vnet","mode":"transparent","ipsToRouteViaHost":["169.254.20.10"],"ipam":{"type":"azure-vnet-ipam"}}"#;
    let nginx_env = |cmd: &str| {
        let mut e = with(
            env.clone(),
            &cni_env(cmd, SEED_CID, nginx_netns.to_str().unwrap(), "eth0"),
        );
        e = with(e, &[("CNI_PATH".into(), bin.display().to_string())]);
        e.push((
            "CNI_ARGS".into(),
            format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=nginx;\
                 K8S_POD_INFRA_CONTAINER_ID={SEED_CID};K8S_POD_UID=51a5ca8e-4e46-451b-bbac-525543a80861"
            ),
        ));
        e
    };
    let added = run_plugin(
        Some(&tb.node("a")),
        &bin.join("azure-vnet"),
        &nginx_env("ADD"),
        conf_entry.as_bytes(),
    )
    .succeeded();
    let nginx_ip = result_ip(&added);
    let nginx_http = http_server(&nginx_ns, 80, "old nginx\n", &tb.dir);
    let old_ips: BTreeSet<String> = [old_cri.ip.clone(), nginx_ip.clone()].into();

    // The state files in upstream's shape.
    let run = tb.run_dir("a");
    upstream_shape(&run, SEED_CID);
    let state_before: Vec<Vec<u8>> = ["azure-vnet.json", "azure-vnet-ipam.json"]
        .iter()
        .map(|f| std::fs::read(run.join(f)).unwrap())
        .collect();
    let leftovers: Vec<PathBuf> = files
        .iter()
        .map(|(p, _)| p.clone())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.ends_with(".old") || n.contains("telemetry")
        })
        .collect();
    let leftovers_before: Vec<_> = leftovers.iter().map(|p| file_identity(p)).collect();

    // Our install, as our DaemonSet's init container runs it.
    let (out, ..) = install(&vnet_bin(), &cri);
    for line in [
        "/azure-vnet           installed",
        "/azure-vnet-ipam      installed (the same file as azure-vnet)",
        "/10-azure.conflist  installed",
    ] {
        assert!(out.contains(line), "{line:?} in {out}");
    }
    assert_eq!(installed_version(&cri), version_of(&vnet_bin()));
    let c = std::fs::metadata(conf.join("10-azure.conflist")).unwrap();
    assert_eq!(
        c.mode() & 0o7777,
        0o644,
        "the conflist is no longer executable"
    );
    let leftovers_after: Vec<_> = leftovers.iter().map(|p| file_identity(p)).collect();
    assert!(
        leftovers_before == leftovers_after,
        "upstream's .old and telemetry files untouched"
    );
    let state_after: Vec<Vec<u8>> = ["azure-vnet.json", "azure-vnet-ipam.json"]
        .iter()
        .map(|f| std::fs::read(run.join(f)).unwrap())
        .collect();
    assert!(
        state_before == state_after,
        "the install leaves the state alone"
    );
    wait_network_ready(&cri);

    // The old pods keep their traffic.
    assert_eq!(
        http_from(&tb.node("b"), &format!("http://{}/", old_cri.ip)),
        "hello from rcbusybox\n"
    );
    assert_eq!(
        http_from(&tb.node("b"), &format!("http://{nginx_ip}/")),
        "old nginx\n"
    );

    // New pods coexist: other addresses, traffic to and from the old pods.
    let new_pods: Vec<(Pod, Sandbox)> = (0..3)
        .map(|i| {
            let p = Pod::new(&format!("new-{i}"), "default");
            let sb = cri.runp(&p);
            (p, sb)
        })
        .collect();
    for (_, sb) in &new_pods {
        assert!(
            !old_ips.contains(&sb.ip),
            "{} reused an old pod's address",
            sb.ip
        );
        in_pod(sb, &["ping", "-c1", "-W2", &nginx_ip]);
        in_pod(sb, &["ping", "-c1", "-W2", &old_cri.ip]);
        assert_eq!(
            in_pod(
                sb,
                &[
                    "curl",
                    "-sS",
                    "--max-time",
                    "5",
                    &format!("http://{nginx_ip}/")
                ]
            ),
            "old nginx\n"
        );
    }
    // Our IPAM rewrote upstream's file: the old pods keep their addresses, upstream's fields
    // are kept.
    let ipam = tb.ipam_state("a");
    let in_use = ips_in_use(&ipam);
    assert_eq!(in_use.get(&nginx_ip).map(String::as_str), Some(SEED_CID));
    assert_eq!(in_use.get(&old_cri.ip), Some(&old_cri.id));
    assert_eq!(in_use.len(), 2 + new_pods.len(), "{in_use:?}");
    assert_eq!(ipam["FutureTopLevel"], "kept");
    assert_eq!(ipam["IPAM"]["FutureManagerField"], json!({"a": 1}));
    assert_eq!(
        ipam["IPAM"]["Version"].as_str(),
        Some(version_of(&vnet_bin()).as_str())
    );

    // The seed pod's DEL, as the runtime sends it, through our plugin: its address, record and
    // host route go; a second DEL has nothing to do and succeeds.
    for _ in 0..2 {
        run_plugin(
            Some(&tb.node("a")),
            &bin.join("azure-vnet"),
            &nginx_env("DEL"),
            conf_entry.as_bytes(),
        )
        .succeeded();
        let v = NodeView::of(&tb, "a");
        assert!(!v.ipam.contains_key(&nginx_ip), "{:?}", v.ipam);
        assert!(!v.records.contains_key(&nginx_ip), "{:?}", v.records);
        assert!(
            !v.host_routes.contains_key(&nginx_ip),
            "{:?}",
            v.host_routes
        );
    }
    // The pod's namespace goes (its server first), and its host veth with it.
    drop(nginx_http);
    tb.del_pod(&nginx_ns);
    // The CRI pod upstream's plugin made: containerd's two DELs go through ours.
    cri.stop_remove(&old_cri.id);
    let v = NodeView::of(&tb, "a");
    assert!(!v.ipam.contains_key(&old_cri.ip), "{:?}", v.ipam);
    assert!(!v.records.contains_key(&old_cri.ip), "{:?}", v.records);
    assert_eq!(v.records.len(), new_pods.len());
    for (_, sb) in &new_pods {
        in_pod(sb, &["ping", "-c1", "-W2", API_IP]);
        cri.stop_remove(&sb.id);
    }
    let logged_failures = std::fs::read_to_string(tb.log_dir("a").join("azure-vnet.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"msg\":\"failed\""))
        .count();
    assert_eq!(logged_failures, 0);
    NodeView::of(&tb, "a").assert_empty("after every pod");
    azv_links_become(&tb, "a", &BTreeSet::new());
    let ipam_after: BTreeMap<String, String> = ips_in_use(&tb.ipam_state("a"));
    assert!(ipam_after.is_empty());
    assert!(
        leftovers_before
            == leftovers
                .iter()
                .map(|p| file_identity(p))
                .collect::<Vec<_>>(),
        "upstream's leftovers untouched to the end"
    );
}
