//! Operating a node: `azure-vnet status`, `reconcile` and `metrics` on the simulated node with
//! real pods made through containerd's CRI, and every problem and leak made on purpose.

mod common;
use common::cri::*;
use common::*;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

use serde_json::Value;

struct Node {
    cri: CriNode,
    _ws: Wireserver,
    tb: Testbed,
}

fn node(secondaries: u32) -> Node {
    let tb = Testbed::up(secondaries);
    let ws = Wireserver::start(&tb.node("a"), &tb.nmagent_xml("a"), "ok");
    let cri = CriNode::start(&tb, "a", CniSetup::seed(&tb, "a", &ws));
    Node { cri, _ws: ws, tb }
}

impl Node {
    /// `azure-vnet <args>` as an operator runs it on the node (its network and mount
    /// namespace; the paths the plugins use, from the environment).
    /// (`--setpriv-no-caps` first: run it as uid 0 with no capability.)
    fn tool(&self, args: &[&str]) -> Output {
        let mut cmd: Vec<String> = vec!["env".into()];
        let args = match args.split_first() {
            Some((&"--setpriv-no-caps", rest)) => {
                cmd = [
                    "setpriv",
                    "--inh-caps=-all",
                    "--bounding-set=-all",
                    "--",
                    "env",
                ]
                .map(String::from)
                .to_vec();
                rest
            }
            _ => args,
        };
        for (k, v) in self.tb.env("a") {
            cmd.push(format!("{k}={v}"));
        }
        cmd.push(vnet_bin().display().to_string());
        cmd.extend(args.iter().map(|s| s.to_string()));
        cmd.push("--conflist".into());
        cmd.push(
            repo()
                .join("conflist/10-azure.conflist")
                .display()
                .to_string(),
        );
        let refs: Vec<&str> = cmd.iter().map(String::as_str).collect();
        self.cri.exec_out(&refs)
    }

    /// `tool`, with the run and log directories read-only (as the DaemonSet's metrics
    /// container, or a debug pod, sees them).
    fn tool_read_only(&self, args: &[&str]) -> Output {
        let dirs = [self.tb.run_dir("a"), self.tb.log_dir("a")];
        let mut cmd: Vec<String> = vec![
            "unshare".into(),
            "-m".into(),
            "--propagation".into(),
            "private".into(),
            "sh".into(),
            "-c".into(),
            r#"mount --bind -o ro "$1" "$1" && mount --bind -o ro "$2" "$2" && shift 2 && exec "$@""#
                .into(),
            "sh".into(),
        ];
        cmd.extend(dirs.iter().map(|d| d.display().to_string()));
        cmd.push("env".into());
        for (k, v) in self.tb.env("a") {
            cmd.push(format!("{k}={v}"));
        }
        cmd.push(vnet_bin().display().to_string());
        cmd.extend(args.iter().map(|s| s.to_string()));
        let conflist = repo().join("conflist/10-azure.conflist");
        cmd.extend(["--conflist".into(), conflist.display().to_string()]);
        let refs: Vec<&str> = cmd.iter().map(String::as_str).collect();
        self.cri.exec_out(&refs)
    }

    fn status(&self) -> (i32, Value) {
        let out = self.tool(&["status", "--json"]);
        let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "status printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap_or(-1), v)
    }

    fn kinds(&self) -> BTreeSet<String> {
        let (_, v) = self.status();
        v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["kind"].as_str().unwrap().to_string())
            .collect()
    }

    /// The IPAM plugin's ADD for a container no runtime knows: what an ADD killed after IPAM
    /// answered leaves (an address without a record).
    fn ipam_add(&self, cid: &str) -> String {
        let env = with(
            self.tb.env("a"),
            &[
                ("CNI_COMMAND".into(), "ADD".into()),
                ("CNI_CONTAINERID".into(), cid.into()),
                ("CNI_NETNS".into(), "/var/run/netns/gone".into()),
                ("CNI_IFNAME".into(), "eth0".into()),
                ("CNI_PATH".into(), cni_path()),
                ("AZURE_VNET_WIRESERVER_URL".into(), self._ws.url.clone()),
            ],
        );
        let conf = r#"{"cniVersion":"0.3.0","name":"azure","type":"azure-vnet","ipam":{"type":"azure-vnet-ipam"}}"#;
        let r =
            run_plugin(Some(&self.tb.node("a")), &ipam_bin(), &env, conf.as_bytes()).succeeded();
        result_ip(&r)
    }

    /// Change azure-vnet.json as another writer would, under its lock.
    fn edit_records(&self, f: impl FnOnce(&mut Value)) {
        let run = self.tb.run_dir("a");
        let _lock = hold_lock(&run.join("azure-vnet/azure-vnet.lock"));
        let path = run.join("azure-vnet.json");
        let mut v = read_json(&path);
        f(&mut v);
        std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    }

    fn record_of(&self, sandbox: &str) -> (String, Value) {
        endpoints(&vnet_state(&self.tb, "a"), "azure")
            .into_iter()
            .find(|(_, e)| e["ContainerID"] == sandbox)
            .unwrap_or_else(|| panic!("no record of {sandbox}"))
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn status_names_every_kind_of_problem() {
    let n = node(30);
    let pods: Vec<Sandbox> = (0..5)
        .map(|i| n.cri.runp(&Pod::new(&format!("st{i}"), "default")))
        .collect();
    // A healthy node: exit 0, every endpoint ok, the pool's counts.
    let (code, v) = n.status();
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["endpoints"].as_array().unwrap().len(), 5);
    assert_eq!(v["pools"][0]["size"], 30);
    assert_eq!(v["pools"][0]["inUse"], 5);
    let text = stdout(&n.tool(&["status"]));
    assert!(
        text.contains("ENDPOINTS (5)")
            && text.contains("default/st0")
            && text.contains("PROBLEMS (0)"),
        "{text}"
    );

    let node = n.tb.node("a");
    let veth = |i: usize| {
        n.record_of(&pods[i].id).1["HostIfName"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // allocation-without-record: an ADD killed after IPAM answered.
    let ghost = n.ipam_add("killed-add");
    // record-without-allocation: st0's address released behind its back.
    let ip0 = pods[0].ip.clone();
    let rel = with(n.tb.env("a"), &cni_env("DEL", &pods[0].id, "", "eth0"));
    let conf = format!(
        r#"{{"cniVersion":"0.3.0","name":"azure","ipam":{{"type":"azure-vnet-ipam","environment":"file","ipAddress":"{ip0}"}}}}"#
    );
    run_plugin(Some(&node), &ipam_bin(), &rel, conf.as_bytes()).succeeded();
    // veth-missing (its namespace lives on: CRI's pin), veth-down, route-missing.
    sh(&["ip", "-n", &node, "link", "del", &veth(1)]);
    sh(&["ip", "-n", &node, "link", "set", &veth(2), "down"]);
    sh(&[
        "ip",
        "-n",
        &node,
        "route",
        "del",
        &pods[3].ip,
        "dev",
        &veth(3),
    ]);
    // orphan-veth (peer never left the host) and orphan-route (on a recorded veth).
    add_host_veth_pair(&node, "azvdeadbeef000", "azvdeadbeef0002");
    sh(&[
        "ip",
        "-n",
        &node,
        "route",
        "add",
        "10.224.0.250/32",
        "dev",
        &veth(4),
    ]);
    // namespace-gone: st4's pin unmounted and its pause process killed, without a DEL.
    let (key4, ep4) = n.record_of(&pods[4].id);
    let pin = ep4["NetworkNameSpace"].as_str().unwrap().to_string();
    n.cri.exec(&["umount", &pin]);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pods[4].pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually("st4's namespace to go", || !links(&node).contains(&veth(4)));

    let (code, v) = n.status();
    assert_eq!(code, 1, "{v}");
    let kinds = n.kinds();
    let want: BTreeSet<String> = [
        "allocation-without-record",
        "record-without-allocation",
        "namespace-gone",
        "veth-missing",
        "veth-down",
        "route-missing",
        "orphan-veth",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert!(want.is_subset(&kinds), "{kinds:?}\n{v}");
    let problems = v["problems"].as_array().unwrap();
    let about = |kind: &str| -> Vec<String> {
        problems
            .iter()
            .filter(|p| p["kind"] == kind)
            .map(|p| p["subject"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(about("allocation-without-record"), [ghost]);
    assert_eq!(about("namespace-gone"), [key4]);
    assert_eq!(about("orphan-veth"), ["azvdeadbeef000"]);
    // For people: aligned, the problems named; exit 1.
    let out = n.tool(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    eprintln!("azure-vnet status:\n{text}");
    for k in &want {
        assert!(text.contains(k.as_str()), "{k}: {text}");
    }
    // The orphan route went with st4's namespace (its veth): make another on st2's veth.
    sh(&["ip", "-n", &node, "link", "set", &veth(2), "up"]);
    sh(&[
        "ip",
        "-n",
        &node,
        "route",
        "add",
        "10.224.0.251/32",
        "dev",
        &veth(2),
    ]);
    assert!(n.kinds().contains("orphan-route"), "{:?}", n.kinds());
    // A state file it cannot read: it cannot tell (2).
    let ipam = n.tb.run_dir("a").join("azure-vnet-ipam.json");
    let keep = std::fs::read(&ipam).unwrap();
    std::fs::write(&ipam, b"{garbage").unwrap();
    let out = n.tool(&["status"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    eprintln!(
        "azure-vnet status, a state file unreadable:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("azure-vnet-ipam.json"));
    std::fs::write(&ipam, keep).unwrap();
}

#[test]
fn reconcile_releases_what_no_live_pod_holds_and_only_that() {
    let n = node(30);
    let node = n.tb.node("a");
    let live = n.cri.runp(&Pod::new("live", "default"));
    let no_record = n.cri.runp(&Pod::new("norecord", "default"));
    let ns_gone = n.cri.runp(&Pod::new("nsgone", "default"));
    let no_cache = n.cri.runp(&Pod::new("nocache", "default"));
    // Leak 1: the state of an ADD SIGKILLed after IPAM answered.
    let killed = n.ipam_add("killed-add");
    // 2: a deleted record (the pod lives on: what it holds stays).
    let (key, _) = n.record_of(&no_record.id);
    n.edit_records(|v| {
        for ext in v["Network"]["ExternalInterfaces"]
            .as_object_mut()
            .unwrap()
            .values_mut()
        {
            ext["Networks"]["azure"]["Endpoints"]
                .as_object_mut()
                .unwrap()
                .remove(&key);
        }
    });
    // 3: a namespace removed without DEL (the runtime still has its cache entry).
    let (_, ep) = n.record_of(&ns_gone.id);
    let pin = ep["NetworkNameSpace"].as_str().unwrap().to_string();
    let ns_gone_veth = ep["HostIfName"].as_str().unwrap().to_string();
    n.cri.exec(&["umount", &pin]);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(ns_gone.pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually("the namespace to go", || {
        !links(&node).contains(&ns_gone_veth)
    });
    // 4: a cache entry removed (the runtime no longer knows the attachment).
    let cache = n
        .cri
        .dir
        .join(&format!("cni-cache/results/azure-{}-eth0", no_cache.id));
    std::fs::remove_file(&cache).unwrap();
    // 5: a veth of an interrupted ADD that never reached a pod.
    add_host_veth_pair(&node, "azvdeadbeef000", "azvdeadbeef0002");
    let before = NodeView::of(&n.tb, "a");

    // Dry run: it says what, changes nothing, exit 1.
    let out = n.tool(&["reconcile", "--grace", "0.2"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let plan = stdout(&out);
    eprintln!("azure-vnet reconcile (dry run):\n{plan}");
    assert!(
        plan.contains("dry run") && plan.contains("release address") && plan.contains(&killed),
        "{plan}"
    );
    assert_eq!(NodeView::of(&n.tb, "a"), before);
    let json: Value =
        serde_json::from_slice(&n.tool(&["reconcile", "--json", "--grace", "0.2"]).stdout).unwrap();
    let subjects: BTreeSet<String> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["subject"].as_str().unwrap().to_string())
        .collect();
    assert!(
        subjects.contains(&killed) && subjects.contains("azvdeadbeef000"),
        "{json}"
    );
    assert_eq!(
        subjects.len(),
        4,
        "killed ADD's address, two records, the stray veth: {json}"
    );

    // Without CAP_SYS_PTRACE (a `kubectl debug node` pod: the host's PID namespace, default
    // capabilities) it cannot read the plugins' environments, so it cannot see an ADD in
    // flight: --apply refuses, and nothing changes.
    let out = n.tool(&[
        "--setpriv-no-caps",
        "reconcile",
        "--apply",
        "--grace",
        "0.2",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("CAP_SYS_PTRACE"));
    assert_eq!(NodeView::of(&n.tb, "a"), before);

    // Apply: every leak goes; the live pods keep everything.
    let out = n.tool(&["reconcile", "--apply", "--grace", "0.2"]);
    eprintln!("azure-vnet reconcile --apply:\n{}", stdout(&out));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    let after = NodeView::of(&n.tb, "a");
    let held: BTreeSet<&String> = after.ipam.keys().collect();
    assert_eq!(
        held,
        [&live.ip, &no_record.ip].into_iter().collect(),
        "{after:?}"
    );
    assert_eq!(after.records.keys().collect::<Vec<_>>(), [&live.ip]);
    assert!(!after.azv_links.contains("azvdeadbeef000"));
    let live_veth = n.record_of(&live.id).1["HostIfName"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        links(&node).contains(&live_veth),
        "the live pod keeps its veth"
    );
    ns_sh(&n.tb.node("b"), &["ping", "-c1", "-W2", &live.ip]);
    // Nothing left to do; the runtime's own DELs still work afterwards.
    let out = n.tool(&["reconcile", "--grace", "0"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    for sb in [&live, &no_record, &no_cache] {
        n.cri.stop_remove(&sb.id);
    }
    let _ = n.cri.stopp(&ns_gone.id);
    let _ = n.cri.rmp(&ns_gone.id);
    NodeView::of(&n.tb, "a").assert_empty("after the runtime removed every sandbox");
}

#[test]
fn reconcile_during_concurrent_adds_loses_nothing() {
    let n = node(40);
    let leak = n.ipam_add("killed-add");
    std::thread::scope(|s| {
        let adds = s.spawn(|| {
            let mut made = Vec::new();
            for round in 0..3 {
                let batch: Vec<_> = (0..10)
                    .map(|i| {
                        let cri = &n.cri;
                        s.spawn(move || cri.runp(&Pod::new(&format!("c{round}-{i}"), "default")))
                    })
                    .collect();
                made.extend(batch.into_iter().map(|h| h.join().unwrap()));
            }
            made
        });
        let mut runs = 0;
        while !adds.is_finished() {
            // (A grace well above containerd's step from the chain's end to its cache entry,
            // which no process scan can see.)
            let out = n.tool(&["reconcile", "--apply", "--grace", "0.5"]);
            assert!(
                out.status.code().is_some_and(|c| c <= 1),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            runs += 1;
        }
        let made = adds.join().unwrap();
        assert!(runs > 1, "reconcile ran during the ADDs ({runs} times)");
        // Every pod is whole: recorded, holding its address, with traffic.
        let view = NodeView::of(&n.tb, "a");
        for sb in &made {
            assert_eq!(view.ipam.get(&sb.ip), Some(&sb.id), "{sb:?}: {view:?}");
            assert!(view.records.contains_key(&sb.ip), "{sb:?}");
            in_pod(sb, &["ping", "-c1", "-W2", NODE_A_IP]);
        }
        assert!(!view.ipam.contains_key(&leak), "the leak went");
        let (code, v) = n.status();
        assert_eq!(code, 0, "{v}");
    });
}

/// A process stopped with SIGSTOP, continued when dropped (a failed assertion included).
struct Stopped(i32);

impl Stopped {
    /// Stopped, every thread: kill(2) returns before they are, and a thread still waiting for a
    /// lock could be granted it in between.
    fn new(pid: i32) -> Stopped {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .unwrap();
        let stopped = Stopped(pid);
        eventually(&format!("every thread of {pid} to stop"), || {
            std::fs::read_dir(format!("/proc/{pid}/task"))
                .unwrap()
                .flatten()
                .all(|t| {
                    let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
                    // The state follows the command's closing parenthesis.
                    stat.rsplit_once(") ")
                        .is_some_and(|(_, rest)| rest.starts_with('T'))
                })
        });
        stopped
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGCONT,
        );
    }
}

/// The moment the concurrent test above can only hope to hit, made to happen: an ADD that
/// holds its address but has no record yet, frozen there while reconcile --apply runs (with
/// a grace shorter than the freeze). Reconcile sees the CNI operation in the node's processes
/// and leaves the address alone; the ADD then finishes and its pod is whole.
#[test]
fn reconcile_leaves_alone_a_container_whose_add_is_running() {
    let n = node(10);
    let lock_path = n.tb.run_dir("a").join("azure-vnet/azure-vnet.lock");
    let lock = hold_lock(&lock_path);
    std::thread::scope(|s| {
        let add = s.spawn(|| n.cri.runp(&Pod::new("frozen", "default")));
        // The ADD waits for the state lock to write its record: its address is taken.
        eventually("the ADD to wait for the state lock", || {
            flock_waiters(&lock_path) > 0
        });
        let pids = flock_waiter_pids(&lock_path);
        assert_eq!(pids.len(), 1, "one ADD waits: {pids:?}");
        let environ = std::fs::read(format!("/proc/{}/environ", pids[0])).unwrap();
        assert!(
            environ.split(|b| *b == 0).any(|v| v == b"CNI_COMMAND=ADD"),
            "the waiter is the ADD"
        );
        let frozen = Stopped::new(pids[0]);
        drop(lock);
        let held_before = ips_in_use(&n.tb.ipam_state("a"));
        assert_eq!(held_before.len(), 1, "{held_before:?}");

        let out = n.tool(&["reconcile", "--apply", "--grace", "0.05"]);
        assert!(
            out.status.code().is_some_and(|c| c <= 1),
            "{}{}",
            stdout(&out),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            ips_in_use(&n.tb.ipam_state("a")),
            held_before,
            "reconcile took the address of a running ADD: {}",
            stdout(&out)
        );

        drop(frozen);
        let sb = add.join().unwrap();
        let view = NodeView::of(&n.tb, "a");
        assert_eq!(view.ipam.get(&sb.ip), Some(&sb.id), "{view:?}");
        assert!(view.records.contains_key(&sb.ip), "{view:?}");
        in_pod(&sb, &["ping", "-c1", "-W2", NODE_A_IP]);
        n.cri.stop_remove(&sb.id);
    });
    NodeView::of(&n.tb, "a").assert_empty("after the runtime removed the sandbox");
}

fn promtool() -> &'static str {
    assert!(
        Path::new("/usr/local/bin/promtool").exists(),
        "promtool is missing: scripts/install-deps.sh takes it from Debian's prometheus package"
    );
    "/usr/local/bin/promtool"
}

#[test]
fn metrics_are_valid_prometheus_and_count_what_happened() {
    let n = node(30);
    // The first run starts the cursor (operations count from here).
    let first = n.tool(&["metrics"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let pods: Vec<Sandbox> = (0..3)
        .map(|i| n.cri.runp(&Pod::new(&format!("m{i}"), "default")))
        .collect();
    n.cri.stop_remove(&pods[2].id);
    n.ipam_add("killed-add");
    let out = n.tool(&["metrics"]);
    let text = stdout(&out);
    // promtool's own check of the format and naming.
    let check = std::process::Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(text.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(
        check.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let value = |line_start: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {line_start} in:\n{text}"))
    };
    assert_eq!(
        value("azure_vnet_pool_addresses{subnet=\"10.224.0.0/16\"}"),
        30.0
    );
    assert_eq!(
        value("azure_vnet_pool_addresses_in_use{subnet=\"10.224.0.0/16\"}"),
        3.0
    );
    assert_eq!(value("azure_vnet_endpoints "), 2.0);
    assert_eq!(
        value("azure_vnet_problems{kind=\"allocation-without-record\"}"),
        1.0
    );
    assert_eq!(
        value("azure_vnet_operations_total{plugin=\"azure-vnet\",command=\"ADD\",code=\"0\"}"),
        3.0
    );
    // CRI sends two DELs for the removed sandbox.
    assert_eq!(
        value("azure_vnet_operations_total{plugin=\"azure-vnet\",command=\"DEL\",code=\"0\"}"),
        2.0
    );
    assert!(
        value("azure_vnet_operation_duration_seconds_count{plugin=\"azure-vnet\",command=\"ADD\"}")
            >= 3.0
    );
    // Counts go on across runs (the cursor), and a failure shows as the last error.
    let env = with(
        n.tb.env("a"),
        &cni_env("ADD", "bad", "/var/run/netns/nope", "eth0"),
    );
    run_plugin(
        Some(&n.tb.node("a")),
        &vnet_bin(),
        &env,
        VNET_CONF.as_bytes(),
    );
    let text = stdout(&n.tool(&["metrics"]));
    assert!(
        text.contains(
            "azure_vnet_operations_total{plugin=\"azure-vnet\",command=\"ADD\",code=\"0\"} 3"
        ),
        "{text}"
    );
    assert!(
        text.contains("azure_vnet_last_error_timestamp_seconds{plugin=\"azure-vnet\",command=\"ADD\",code=\"3\""),
        "{text}"
    );

    // Read-only state and logs (the DaemonSet's metrics container): the same node gauges,
    // the locks taken through read-only descriptors.
    let cursor = n.cri.dir.join("ro-cursor.json");
    let out = n.tool_read_only(&["metrics", "--cursor", cursor.to_str().unwrap()]);
    let ro = stdout(&out);
    assert!(
        ro.contains("azure_vnet_state_readable 1")
            && ro.contains("azure_vnet_pool_addresses_in_use{subnet=\"10.224.0.0/16\"} 3"),
        "{ro}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Served: scrape it from inside the node, as Prometheus would.
    let port = 19091;
    let mut args = vec!["env".to_string()];
    for (k, v) in n.tb.env("a") {
        args.push(format!("{k}={v}"));
    }
    args.extend([
        vnet_bin().display().to_string(),
        "metrics".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--conflist".into(),
        repo()
            .join("conflist/10-azure.conflist")
            .display()
            .to_string(),
    ]);
    let server = std::process::Command::new("python3")
        .arg(cri_node_py())
        .arg("exec")
        .arg(n.cri.dir.path())
        .arg("--")
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _server = Bg(server);
    // The server itself is a grandchild (through cri-node.py's exec): killed by its argv.
    let listen = format!("127.0.0.1:{port}");
    struct Sweep(String);
    impl Drop for Sweep {
        fn drop(&mut self) {
            for pid in pids_mentioning(&self.0) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    let _sweep = Sweep(listen);
    let url = format!("http://127.0.0.1:{port}/metrics");
    let scraped = std::cell::RefCell::new(String::new());
    eventually("the metrics server to answer", || {
        let out = ns_exec(&n.tb.node("a"), &["curl", "-sf", "--max-time", "2", &url]);
        *scraped.borrow_mut() = String::from_utf8_lossy(&out.stdout).into_owned();
        out.status.success()
    });
    let scraped = scraped.into_inner();
    assert!(
        scraped.contains("azure_vnet_pool_addresses{subnet=\"10.224.0.0/16\"} 30"),
        "{scraped}"
    );
    n.cri.runp(&Pod::new("m9", "default"));
    let out = ns_exec(&n.tb.node("a"), &["curl", "-sf", &url]);
    let scraped = String::from_utf8_lossy(&out.stdout);
    assert!(
        scraped.contains(
            "azure_vnet_operations_total{plugin=\"azure-vnet\",command=\"ADD\",code=\"0\"} 1"
        ),
        "the server counts from its start: {scraped}"
    );
}
