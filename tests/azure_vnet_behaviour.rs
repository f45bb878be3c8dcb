//! azure-vnet's deliberate improvements over upstream (spec A.3), each shown on the testbed.

mod common;
use common::*;

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::Value;

fn p(path: &std::path::Path) -> String {
    path.display().to_string()
}

#[test]
fn works_without_pod_identity_like_ctr_and_del_with_empty_netns() {
    let tb = Testbed::up(5);
    let (ns, path) = tb.pod("ctr");
    // containerd's `ctr run --cni`: no K8S_POD_* args, container ID `<namespace>-<id>`.
    let r = vnet_call(&tb, "a", "ADD", "default-web1", &p(&path), None, VNET_CONF).succeeded();
    let hv = host_veth("default-web1.eth0");
    assert_eq!(r["interfaces"][0]["name"], hv.as_str());
    ping(&ns, NODE_A_IP);
    let eps = endpoints(&vnet_state(&tb, "a"), "azure");
    let ep = &eps["default--eth0"];
    assert_eq!(ep["ContainerID"], "default-web1");
    assert!(
        ep.get("PODName").is_none() && ep.get("PODNameSpace").is_none(),
        "omitted like upstream's omitempty"
    );
    // containerd sends DEL with CNI_NETNS="".
    vnet_call(&tb, "a", "DEL", "default-web1", "", None, VNET_CONF).succeeded();
    assert!(endpoints(&vnet_state(&tb, "a"), "azure").is_empty());
    assert!(ips_in_use(&tb.ipam_state("a")).is_empty());
}

#[test]
fn repeated_add_returns_the_same_result_and_leaves_the_pod_alone() {
    let tb = Testbed::up(5);
    let (ns, path) = tb.pod("again");
    let first = vnet_call(
        &tb,
        "a",
        "ADD",
        "cid-again",
        &p(&path),
        Some("again"),
        VNET_CONF,
    )
    .succeeded();
    let before = snapshot(&tb, "a", &ns);
    let pod_before = ns_sh(&ns, &["ip", "-d", "-o", "link", "show", "eth0"]);
    let second = vnet_call(
        &tb,
        "a",
        "ADD",
        "cid-again",
        &p(&path),
        Some("again"),
        VNET_CONF,
    )
    .succeeded();
    assert_eq!(first, second, "the same result");
    assert_eq!(
        before,
        snapshot(&tb, "a", &ns),
        "nothing changed: links, routes, records, IPs"
    );
    assert_eq!(
        pod_before,
        ns_sh(&ns, &["ip", "-d", "-o", "link", "show", "eth0"]),
        "same interface (ifindex, MAC)"
    );
    ping(&ns, NODE_A_IP);
    // Also at another version: the cached result converts like a fresh one.
    let legacy = VNET_CONF.replace("1.1.0", "0.2.0");
    let r = vnet_call(
        &tb,
        "a",
        "ADD",
        "cid-again",
        &p(&path),
        Some("again"),
        &legacy,
    )
    .succeeded();
    assert_eq!(r["ip4"]["ip"], first["ips"][0]["address"]);
}

#[test]
fn del_is_idempotent_and_succeeds_after_state_loss() {
    let tb = Testbed::up(10);
    let run = tb.run_dir("a");
    let node = tb.node("a");
    let gone = |hv: &str| !links(&node).iter().any(|l| l == hv);

    // Plain repeat.
    let (_, p1) = tb.pod("rep");
    vnet_call(&tb, "a", "ADD", "cid-rep", &p(&p1), Some("rep"), VNET_CONF).succeeded();
    vnet_call(&tb, "a", "DEL", "cid-rep", &p(&p1), Some("rep"), VNET_CONF).succeeded();
    vnet_call(&tb, "a", "DEL", "cid-rep", &p(&p1), Some("rep"), VNET_CONF).succeeded();
    // The second DEL found no record and removed the veth the first left to the pod's netns.
    assert!(gone(&host_veth("default.rep")));

    // Both state files lost (say /var/run wiped): DEL still succeeds, and cleans the veth.
    let (_, p2) = tb.pod("lost");
    vnet_call(
        &tb,
        "a",
        "ADD",
        "cid-lost",
        &p(&p2),
        Some("lost"),
        VNET_CONF,
    )
    .succeeded();
    std::fs::remove_file(run.join("azure-vnet.json")).unwrap();
    std::fs::remove_file(run.join("azure-vnet-ipam.json")).unwrap();
    vnet_call(
        &tb,
        "a",
        "DEL",
        "cid-lost",
        &p(&p2),
        Some("lost"),
        VNET_CONF,
    )
    .succeeded();
    assert!(gone(&host_veth("default.lost")));

    // Empty (0-byte) state files: the same.
    let (_, p3) = tb.pod("empty");
    vnet_call(
        &tb,
        "a",
        "ADD",
        "cid-empty",
        &p(&p3),
        Some("empty"),
        VNET_CONF,
    )
    .succeeded();
    std::fs::write(run.join("azure-vnet.json"), "").unwrap();
    std::fs::write(run.join("azure-vnet-ipam.json"), "").unwrap();
    vnet_call(
        &tb,
        "a",
        "DEL",
        "cid-empty",
        &p(&p3),
        Some("empty"),
        VNET_CONF,
    )
    .succeeded();

    // The pod's namespace already gone: DEL releases the IP and the record.
    let (ns4, p4) = tb.pod("nsgone");
    let r = vnet_call(
        &tb,
        "a",
        "ADD",
        "cid-nsgone",
        &p(&p4),
        Some("nsgone"),
        VNET_CONF,
    )
    .succeeded();
    let ip4 = r["ips"][0]["address"]
        .as_str()
        .unwrap()
        .trim_end_matches("/16")
        .to_string();
    tb.del_pod(&ns4);
    eventually("the pod's veth goes with its namespace", || {
        gone(&host_veth("default.nsgone"))
    });
    vnet_call(
        &tb,
        "a",
        "DEL",
        "cid-nsgone",
        &p(&p4),
        Some("nsgone"),
        VNET_CONF,
    )
    .succeeded();
    assert!(!ips_in_use(&tb.ipam_state("a")).contains_key(&ip4));
    assert!(!endpoints(&vnet_state(&tb, "a"), "azure")
        .values()
        .any(|e| e["ContainerID"] == "cid-nsgone"));

    // Empty CNI_NETNS.
    let (_, p5) = tb.pod("nonetns");
    vnet_call(
        &tb,
        "a",
        "ADD",
        "cid-nonetns",
        &p(&p5),
        Some("nonetns"),
        VNET_CONF,
    )
    .succeeded();
    vnet_call(
        &tb,
        "a",
        "DEL",
        "cid-nonetns",
        "",
        Some("nonetns"),
        VNET_CONF,
    )
    .succeeded();

    // An ADD interrupted after IPAM and the veth, before the peer reached the pod and before
    // the record: DEL deletes the veth and releases the IP by container ID.
    let hv = host_veth("default.broken");
    let env = with(
        tb.env("a"),
        &cni_env("ADD", "cid-broken", "/var/run/netns/x", "eth0"),
    );
    run_plugin(Some(&node), &ipam_bin(), &env, VNET_CONF.as_bytes()).succeeded();
    add_host_veth_pair(&node, &hv, &format!("{hv}2"));
    vnet_call(
        &tb,
        "a",
        "DEL",
        "cid-broken",
        "/var/run/netns/never",
        Some("broken"),
        VNET_CONF,
    )
    .succeeded();
    assert!(gone(&hv) && gone(&format!("{hv}2")));

    assert!(
        ips_in_use(&tb.ipam_state("a")).is_empty(),
        "{:?}",
        ips_in_use(&tb.ipam_state("a"))
    );
    assert!(endpoints(&vnet_state(&tb, "a"), "azure").is_empty());
    assert!(!routes(&node).contains("dev azv"), "{}", routes(&node));
}

#[test]
fn twenty_parallel_adds_and_dels() {
    let tb = Arc::new(Testbed::up(30));
    let pods: Vec<(String, std::path::PathBuf)> =
        (0..20).map(|i| tb.pod(&format!("par{i}"))).collect();
    let run_all = |cmd: &'static str| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, (_, path))| {
                let tb = Arc::clone(&tb);
                let path = p(path);
                std::thread::spawn(move || {
                    vnet_call(
                        &tb,
                        "a",
                        cmd,
                        &format!("cid-par-{i}"),
                        &path,
                        Some(&format!("par{i}")),
                        VNET_CONF,
                    )
                    .succeeded()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<Value>>()
    };
    let results = run_all("ADD");
    let ips: BTreeSet<String> = results
        .iter()
        .map(|r| r["ips"][0]["address"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ips.len(), 20);
    assert_eq!(endpoints(&vnet_state(&tb, "a"), "azure").len(), 20);
    for (i, (ns, path)) in pods.iter().enumerate() {
        vnet_call(
            &tb,
            "a",
            "CHECK",
            &format!("cid-par-{i}"),
            &p(path),
            Some(&format!("par{i}")),
            VNET_CONF,
        )
        .succeeded();
        ping(ns, NODE_A_IP);
    }
    run_all("DEL");
    assert!(endpoints(&vnet_state(&tb, "a"), "azure").is_empty());
    assert!(ips_in_use(&tb.ipam_state("a")).is_empty());
    assert!(!routes(&tb.node("a")).contains("dev azv"));
}

#[test]
fn two_adds_racing_for_one_host_veth_name_do_not_corrupt_each_other() {
    // Two sandboxes of pod default/same (new container ID, same name) start at once.
    let tb = Arc::new(Testbed::up(10));
    let (ns1, p1) = tb.pod("same1");
    let (ns2, p2) = tb.pod("same2");
    let hv = host_veth("default.same");
    for round in 0..3 {
        let handles: Vec<_> = [("cid-s1", p(&p1)), ("cid-s2", p(&p2))]
            .into_iter()
            .map(|(cid, path)| {
                let tb = Arc::clone(&tb);
                std::thread::spawn(move || {
                    vnet_call(&tb, "a", "ADD", cid, &path, Some("same"), VNET_CONF)
                })
            })
            .collect();
        let outs: Vec<PluginOut> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for o in &outs {
            o.succeeded();
        }
        // Serialised on the veth name: the later one replaced the earlier one's veth, as
        // upstream does for a new sandbox of the same pod. Exactly one pod is wired.
        let wired: Vec<&str> = [(&ns1, "cid-s1"), (&ns2, "cid-s2")]
            .into_iter()
            .filter(|(ns, _)| links(ns).iter().any(|l| l == "eth0"))
            .map(|(_, c)| c)
            .collect();
        assert_eq!(wired.len(), 1, "round {round}: {wired:?}");
        let (winner, winner_path, loser, loser_path) = if wired[0] == "cid-s1" {
            ("cid-s1", p(&p1), "cid-s2", p(&p2))
        } else {
            ("cid-s2", p(&p2), "cid-s1", p(&p1))
        };
        assert_eq!(links(&tb.node("a")).iter().filter(|l| **l == hv).count(), 1);
        vnet_call(
            &tb,
            "a",
            "CHECK",
            winner,
            &winner_path,
            Some("same"),
            VNET_CONF,
        )
        .succeeded();
        assert_eq!(
            ips_in_use(&tb.ipam_state("a")).len(),
            2,
            "both hold their IP until their DEL"
        );
        // The old sandbox's DEL does not disturb the new one.
        vnet_call(&tb, "a", "DEL", loser, &loser_path, Some("same"), VNET_CONF).succeeded();
        vnet_call(
            &tb,
            "a",
            "CHECK",
            winner,
            &winner_path,
            Some("same"),
            VNET_CONF,
        )
        .succeeded();
        vnet_call(
            &tb,
            "a",
            "DEL",
            winner,
            &winner_path,
            Some("same"),
            VNET_CONF,
        )
        .succeeded();
        assert!(ips_in_use(&tb.ipam_state("a")).is_empty());
        assert!(endpoints(&vnet_state(&tb, "a"), "azure").is_empty());
        // Next round starts from clean pods.
        for ns in [&ns1, &ns2] {
            if links(ns).iter().any(|l| l == "eth0") {
                sh(&["ip", "-n", ns, "link", "del", "eth0"]);
            }
        }
        eventually("no azv left", || {
            !links(&tb.node("a")).iter().any(|l| l.starts_with("azv"))
        });
    }
}

#[test]
fn ip_forward_is_checked_and_enabled() {
    let tb = Testbed::up(5);
    let node = tb.node("a");
    sh(&[
        "ip",
        "netns",
        "exec",
        &node,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=0",
    ]);
    let (ns, path) = tb.pod("fwd");
    vnet_call(
        &tb,
        "a",
        "ADD",
        "cid-fwd",
        &p(&path),
        Some("fwd"),
        VNET_CONF,
    )
    .succeeded();
    assert_eq!(
        ns_sh(&node, &["cat", "/proc/sys/net/ipv4/ip_forward"]).trim(),
        "1"
    );
    ping(&ns, "10.224.1.4"); // forwarded through the node to node-b
    let log = std::fs::read_to_string(tb.log_dir("a").join("azure-vnet.log")).unwrap();
    assert!(log.contains("ip_forward was 0"), "{log}");
}

#[test]
fn gc_removes_attachments_that_are_not_valid() {
    let tb = Testbed::up(10);
    let node = tb.node("a");
    let pods: Vec<_> = ["g1", "g2", "g3"]
        .iter()
        .map(|n| (n.to_string(), tb.pod(n)))
        .collect();
    for (name, (_, path)) in &pods {
        vnet_call(
            &tb,
            "a",
            "ADD",
            &format!("cid-{name}"),
            &p(path),
            Some(name),
            VNET_CONF,
        )
        .succeeded();
    }
    // A leftover of an ADD killed before its record.
    let orphan = "azvdeadbeef000";
    add_host_veth_pair(&node, orphan, "azvdeadbeef0002");

    let gc = |valid: &str| {
        let conf = VNET_CONF.replacen(
            '{',
            &format!(r#"{{"cni.dev/valid-attachments":{valid},"#),
            1,
        );
        let env = with(
            tb.env("a"),
            &[
                ("CNI_COMMAND".into(), "GC".into()),
                ("CNI_PATH".into(), cni_path()),
            ],
        );
        run_plugin(Some(&node), &vnet_bin(), &env, conf.as_bytes()).succeeded();
    };
    gc(r#"[{"containerID":"cid-g1","ifname":"eth0"}]"#);
    let eps = endpoints(&vnet_state(&tb, "a"), "azure");
    assert_eq!(eps.len(), 1);
    assert_eq!(eps.values().next().unwrap()["ContainerID"], "cid-g1");
    let names = links(&node);
    assert!(names.contains(&host_veth("default.g1")));
    for gone in [
        host_veth("default.g2"),
        host_veth("default.g3"),
        orphan.to_string(),
    ] {
        assert!(!names.contains(&gone), "{gone} should be gone: {names:?}");
    }
    let used = ips_in_use(&tb.ipam_state("a"));
    assert_eq!(used.values().collect::<Vec<_>>(), vec!["cid-g1"]);
    vnet_call(
        &tb,
        "a",
        "CHECK",
        "cid-g1",
        &p(&pods[0].1 .1),
        Some("g1"),
        VNET_CONF,
    )
    .succeeded();
    ping(&pods[0].1 .0, NODE_A_IP);

    gc("[]");
    assert!(endpoints(&vnet_state(&tb, "a"), "azure").is_empty());
    assert!(ips_in_use(&tb.ipam_state("a")).is_empty());
    assert!(!links(&node).iter().any(|l| l.starts_with("azv")));
    assert!(!routes(&node).contains("dev azv"));
}

#[test]
fn status_delegates_to_ipam() {
    let tb = Testbed::up(1);
    let env = |cmd: &str| {
        with(
            tb.env("a"),
            &[
                ("CNI_COMMAND".into(), cmd.into()),
                ("CNI_PATH".into(), cni_path()),
            ],
        )
    };
    run_plugin(
        Some(&tb.node("a")),
        &vnet_bin(),
        &env("STATUS"),
        VNET_CONF.as_bytes(),
    )
    .succeeded();
    // A mode every ADD refuses: STATUS refuses it too (it cannot serve an ADD).
    let bridge = VNET_CONF.replace(r#""mode":"transparent""#, r#""mode":"bridge""#);
    assert_ne!(bridge, VNET_CONF);
    let e = run_plugin(
        Some(&tb.node("a")),
        &vnet_bin(),
        &env("STATUS"),
        bridge.as_bytes(),
    )
    .err(2);
    assert!(e["msg"].as_str().unwrap().contains("not supported"), "{e}");
    let (_, path) = tb.pod("only");
    vnet_call(
        &tb,
        "a",
        "ADD",
        "cid-only",
        &p(&path),
        Some("only"),
        VNET_CONF,
    )
    .succeeded();
    let e = run_plugin(
        Some(&tb.node("a")),
        &vnet_bin(),
        &env("STATUS"),
        VNET_CONF.as_bytes(),
    )
    .err(50);
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains("No available addresses"),
        "{e}"
    );
}

#[test]
fn log_lines_carry_pid_command_container_and_duration() {
    let tb = Testbed::up(5);
    let (_, path) = tb.pod("log");
    let out = vnet_call(
        &tb,
        "a",
        "ADD",
        "cid-log",
        &p(&path),
        Some("log"),
        VNET_CONF,
    );
    out.succeeded();
    assert!(out.stderr.is_empty(), "nothing on stderr: {}", out.stderr);
    let text = std::fs::read_to_string(tb.log_dir("a").join("azure-vnet.log")).unwrap();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["msg"], "done");
    assert_eq!(last["command"], "ADD");
    assert_eq!(last["containerID"], "cid-log");
    assert!(last["pid"].as_u64().unwrap() > 0);
    assert!(last["durationMs"].as_f64().unwrap() > 0.0);
    assert!(
        text.lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok()),
        "every line is JSON"
    );
    let ipam_log = std::fs::read_to_string(tb.log_dir("a").join("azure-vnet-ipam.log")).unwrap();
    assert!(ipam_log.contains("\"containerID\":\"cid-log\""));
    // Every line about the pod names it, in both logs.
    for t in [&text, &ipam_log] {
        assert!(
            t.lines().all(|l| l.contains("\"pod\":\"default/log\"")),
            "{t}"
        );
    }
    // logLevel debug: the request is logged too; error: only the outcome line.
    let debug = VNET_CONF.replacen('{', r#"{"logLevel":"debug","#, 1);
    vnet_call(&tb, "a", "DEL", "cid-log", &p(&path), Some("log"), &debug).succeeded();
    let text = std::fs::read_to_string(tb.log_dir("a").join("azure-vnet.log")).unwrap();
    let request = text
        .lines()
        .find(|l| l.contains("\"msg\":\"request\""))
        .unwrap();
    assert!(
        request.contains("\"K8S_POD_NAME=log") || request.contains("K8S_POD_NAME=log"),
        "{request}"
    );
    let before = text.lines().count();
    let quiet = VNET_CONF.replacen('{', r#"{"logLevel":"error","#, 1);
    vnet_call(&tb, "a", "DEL", "cid-log", &p(&path), Some("log"), &quiet).succeeded();
    let text = std::fs::read_to_string(tb.log_dir("a").join("azure-vnet.log")).unwrap();
    let new: Vec<&str> = text.lines().skip(before).collect();
    assert_eq!(new.len(), 1, "{new:?}");
    assert!(new[0].contains("\"msg\":\"done\""));
}

#[test]
fn eight_character_ids_do_not_take_over_each_others_records() {
    // ctr in namespace `k8s`: `k8s-pod1x` has short ID `k8s-pod1-eth0`; `k8s-pod1` is 8
    // characters, so its short ID is the same and its long ID must not be.
    let tb = Testbed::up(5);
    let (zns, zp) = tb.pod("z");
    let (yns, yp) = tb.pod("y");
    vnet_call(&tb, "a", "ADD", "k8s-pod1x", &p(&zp), None, VNET_CONF).succeeded();
    vnet_call(&tb, "a", "ADD", "k8s-pod1", &p(&yp), None, VNET_CONF).succeeded();
    let eps = endpoints(&vnet_state(&tb, "a"), "azure");
    let owners: BTreeSet<&str> = eps
        .values()
        .map(|e| e["ContainerID"].as_str().unwrap())
        .collect();
    assert_eq!(
        owners,
        ["k8s-pod1", "k8s-pod1x"].into_iter().collect(),
        "{:?}",
        eps.keys()
    );
    for (cid, path, ns) in [("k8s-pod1x", &zp, &zns), ("k8s-pod1", &yp, &yns)] {
        vnet_call(&tb, "a", "CHECK", cid, &p(path), None, VNET_CONF).succeeded();
        ping(ns, NODE_A_IP);
    }
    // GC with both valid keeps both pods wired.
    let conf = VNET_CONF.replacen(
        '{',
        r#"{"cni.dev/valid-attachments":[{"containerID":"k8s-pod1x","ifname":"eth0"},{"containerID":"k8s-pod1","ifname":"eth0"}],"#,
        1,
    );
    let env = with(
        tb.env("a"),
        &[
            ("CNI_COMMAND".into(), "GC".into()),
            ("CNI_PATH".into(), cni_path()),
        ],
    );
    run_plugin(Some(&tb.node("a")), &vnet_bin(), &env, conf.as_bytes()).succeeded();
    ping(&zns, NODE_A_IP);
    ping(&yns, NODE_A_IP);
    assert_eq!(ips_in_use(&tb.ipam_state("a")).len(), 2);
    vnet_call(&tb, "a", "DEL", "k8s-pod1", &p(&yp), None, VNET_CONF).succeeded();
    vnet_call(&tb, "a", "CHECK", "k8s-pod1x", &p(&zp), None, VNET_CONF).succeeded();
    vnet_call(&tb, "a", "DEL", "k8s-pod1x", &p(&zp), None, VNET_CONF).succeeded();
    assert!(ips_in_use(&tb.ipam_state("a")).is_empty());
}

#[test]
fn a_second_interface_of_an_attached_container_touches_nothing() {
    let tb = Testbed::up(5);
    let (ns, path) = tb.pod("multi");
    vnet_call(
        &tb,
        "a",
        "ADD",
        "cid-multi",
        &p(&path),
        Some("multi"),
        VNET_CONF,
    )
    .succeeded();
    let before = snapshot(&tb, "a", &ns);
    let with_if = |cmd: &str, ifname: &str| {
        let env = with(
            with(tb.env("a"), &cni_env(cmd, "cid-multi", &p(&path), ifname)),
            &[kubelet_args("default", "multi", "cid-multi")],
        );
        run_plugin(Some(&tb.node("a")), &vnet_bin(), &env, VNET_CONF.as_bytes())
    };
    // A DEL for an interface this container never had: success, and eth0 keeps its address.
    with_if("DEL", "net1").succeeded();
    assert_eq!(before, snapshot(&tb, "a", &ns));
    // A second ADD would share eth0's address and veth: refused, nothing changed.
    let e = with_if("ADD", "net1").err(100);
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains("one attachment per container"),
        "{e}"
    );
    assert_eq!(before, snapshot(&tb, "a", &ns));
    vnet_call(
        &tb,
        "a",
        "CHECK",
        "cid-multi",
        &p(&path),
        Some("multi"),
        VNET_CONF,
    )
    .succeeded();
    ping(&ns, NODE_A_IP);
}

#[test]
fn an_ipam_result_without_ipv4_is_rolled_back_too() {
    let tb = Testbed::up(5);
    let data = tb.dir.join("hl6");
    let conf = format!(
        r#"{{"cniVersion":"1.0.0","name":"azure","type":"azure-vnet","mode":"transparent","ipam":{{"type":"host-local","dataDir":"{}","ranges":[[{{"subnet":"fd00:1::/64"}}]]}}}}"#,
        data.display()
    );
    let (ns, path) = tb.pod("v6");
    let before = snapshot(&tb, "a", &ns);
    let e = vnet_call(&tb, "a", "ADD", "cid-v6", &p(&path), Some("v6"), &conf).err(100);
    assert!(
        e["msg"].as_str().unwrap().contains("no IPv4 address"),
        "{e}"
    );
    assert_eq!(before, snapshot(&tb, "a", &ns));
    let leases: Vec<String> = std::fs::read_dir(data.join("azure"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        leases
            .iter()
            .all(|l| l.starts_with("last_reserved_ip") || l == "lock"),
        "host-local lease left: {leases:?}"
    );
}

#[test]
fn status_and_gc_with_an_ipam_plugin_older_than_cni_1_1() {
    // Debian's host-local speaks up to 1.0.0: azure-vnet must not relay its refusal.
    let tb = Testbed::up(5);
    let conf = format!(
        r#"{{"cniVersion":"1.1.0","name":"azure","type":"azure-vnet","mode":"transparent","cni.dev/valid-attachments":[],"ipam":{{"type":"host-local","dataDir":"{}","ranges":[[{{"subnet":"10.224.0.0/16","rangeStart":"10.224.0.200","rangeEnd":"10.224.0.209"}}]]}}}}"#,
        tb.dir.join("hl").display()
    );
    for cmd in ["STATUS", "GC"] {
        let env = with(
            tb.env("a"),
            &[
                ("CNI_COMMAND".into(), cmd.into()),
                ("CNI_PATH".into(), cni_path()),
            ],
        );
        run_plugin(Some(&tb.node("a")), &vnet_bin(), &env, conf.as_bytes()).succeeded();
    }
}

#[test]
fn del_after_state_loss_spares_a_newer_sandbox_of_the_same_pod() {
    // Sandbox 1 of pod default/web is gone from the records (state lost); sandbox 2 of the
    // same pod holds the pod's veth name. Sandbox 1's DEL must not cut sandbox 2 off.
    let tb = Testbed::up(5);
    let (_, p1) = tb.pod("sb1");
    let (ns2, p2) = tb.pod("sb2");
    vnet_call(&tb, "a", "ADD", "cid-sb2", &p(&p2), Some("web"), VNET_CONF).succeeded();
    std::fs::remove_file(tb.run_dir("a").join("azure-vnet.json")).unwrap();
    vnet_call(&tb, "a", "DEL", "cid-sb1", &p(&p1), Some("web"), VNET_CONF).succeeded();
    assert!(links(&tb.node("a")).contains(&host_veth("default.web")));
    ping(&ns2, NODE_A_IP);
    assert_eq!(
        ips_in_use(&tb.ipam_state("a")).values().collect::<Vec<_>>(),
        vec!["cid-sb2"]
    );
}

#[test]
fn a_state_file_rewritten_by_another_writer_is_read_as_it_is() {
    let tb = Testbed::up(10);
    let run = tb.run_dir("a");
    let pods: Vec<_> = (0..6).map(|i| tb.pod(&format!("ix{i}"))).collect();
    let add = |i: usize| {
        vnet_call(
            &tb,
            "a",
            "ADD",
            &format!("cid-ix{i}"),
            &p(&pods[i].1),
            Some(&format!("ix{i}")),
            VNET_CONF,
        )
        .succeeded()
    };
    add(0);
    add(1);
    add(2);
    // The state rewritten by someone else (compact, another inode, as an editor or another
    // tool would leave it): read as it is; the records still land correctly.
    let state: Value = read_json(&run.join("azure-vnet.json"));
    std::fs::write(
        run.join("azure-vnet.json"),
        serde_json::to_vec(&state).unwrap(),
    )
    .unwrap();
    add(3);
    add(4);
    let eps = endpoints(&vnet_state(&tb, "a"), "azure");
    let owners: BTreeSet<&str> = eps
        .values()
        .map(|e| e["ContainerID"].as_str().unwrap())
        .collect();
    assert_eq!(
        owners,
        (0..5)
            .map(|i| format!("cid-ix{i}"))
            .collect::<BTreeSet<_>>()
            .iter()
            .map(String::as_str)
            .collect()
    );
    for (i, (_, path)) in pods.iter().enumerate().take(5) {
        vnet_call(
            &tb,
            "a",
            "CHECK",
            &format!("cid-ix{i}"),
            &p(path),
            Some(&format!("ix{i}")),
            VNET_CONF,
        )
        .succeeded();
    }
    add(5);
    for (i, (_, path)) in pods.iter().enumerate() {
        vnet_call(
            &tb,
            "a",
            "DEL",
            &format!("cid-ix{i}"),
            &p(path),
            Some(&format!("ix{i}")),
            VNET_CONF,
        )
        .succeeded();
    }
    assert!(endpoints(&vnet_state(&tb, "a"), "azure").is_empty());
    assert!(ips_in_use(&tb.ipam_state("a")).is_empty());
}

#[test]
fn both_veth_ends_take_the_masters_mtu_when_it_is_not_the_default() {
    // The veth pair is built while the IPAM plugin runs, before the master is known, so it is
    // born with the kernel's default MTU and corrected once the address picks the master.
    let tb = Testbed::up(5);
    sh(&[
        "ip",
        "-n",
        &tb.node("a"),
        "link",
        "set",
        "eth0",
        "mtu",
        "1400",
    ]);
    let (ns, path) = tb.pod("mtu");
    vnet_call(
        &tb,
        "a",
        "ADD",
        "cid-mtu",
        &p(&path),
        Some("mtu"),
        VNET_CONF,
    )
    .succeeded();
    let hv = host_veth("default.mtu");
    let host = ns_sh(&tb.node("a"), &["ip", "-o", "link", "show", &hv]);
    assert!(host.contains("mtu 1400 "), "host veth: {host}");
    let pod = ns_sh(&ns, &["ip", "-o", "link", "show", "eth0"]);
    assert!(pod.contains("mtu 1400 "), "pod eth0: {pod}");
    ping(&ns, NODE_A_IP);
    vnet_call(
        &tb,
        "a",
        "DEL",
        "cid-mtu",
        &p(&path),
        Some("mtu"),
        VNET_CONF,
    )
    .succeeded();
    assert!(ips_in_use(&tb.ipam_state("a")).is_empty());
}
