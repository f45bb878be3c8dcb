//! One executable, two names; the IPAM in-process exactly when it is provably this executable.
//! The in-process and exec'd paths give the same results, state files and log lines.

mod common;
use common::*;

use std::path::{Path, PathBuf};

use serde_json::Value;

fn p(path: &Path) -> String {
    path.display().to_string()
}

#[test]
fn each_name_keeps_its_behaviour() {
    for (bin, log) in [
        (vnet_bin(), "azure-vnet.log"),
        (ipam_bin(), "azure-vnet-ipam.log"),
    ] {
        for flag in ["-v", "--version"] {
            let out = std::process::Command::new(&bin).arg(flag).output().unwrap();
            assert!(out.status.success());
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.starts_with("Azure CNI Version v"), "{text}");
        }
        // An error in the shape each plugin answers, logged in its own file.
        let dir = TempDir::new("names");
        let env = vec![
            ("CNI_COMMAND".to_string(), "ADD".to_string()),
            ("AZURE_VNET_LOG_DIR".to_string(), p(dir.path())),
        ];
        let e = run_plugin(None, &bin, &env, b"{}").err(4);
        assert!(
            e["msg"].as_str().unwrap().contains("CNI_CONTAINERID"),
            "{e}"
        );
        let line = std::fs::read_to_string(dir.join(log)).unwrap();
        let name = log.trim_end_matches(".log");
        assert!(line.contains(&format!("\"plugin\":\"{name}\"")), "{line}");
    }
}

/// What a node shows after the same operations: results, both state files and every log
/// line, with what differs by nature (times, durations, pids, random MACs, the CNI_PATH)
/// blanked.
fn normalize(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                match k.as_str() {
                    "time" | "TimeStamp" | "LastRefresh" | "durationMs" | "phasesMs" | "pid"
                    | "mac" | "MacAddress" => *x = Value::Null,
                    _ => normalize(x),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(normalize),
        _ => {}
    }
}

fn run_scenario(tb: &Testbed, bins: &Path, tag: &str) -> (Vec<Value>, Value) {
    let node = tb.node("a");
    let run = tb.dir.join(&format!("run-{tag}"));
    let log = tb.dir.join(&format!("log-{tag}"));
    let base = vec![
        ("AZURE_VNET_RUN_DIR".to_string(), p(&run)),
        ("AZURE_VNET_LOG_DIR".to_string(), p(&log)),
        (
            "AZURE_VNET_INTERFACES_FILE".to_string(),
            p(&tb.interfaces_file("a")),
        ),
        (
            "CNI_PATH".to_string(),
            format!("{}:/usr/lib/cni", bins.display()),
        ),
    ];
    let bin = bins.join("azure-vnet");
    let mut outs = Vec::new();
    let mut call = |cmd: &str, cid: &str, netns: &str, conf: &str| {
        let env = with(base.clone(), &cni_env(cmd, cid, netns, "eth0"));
        let env = with(env, &[base[3].clone(), kubelet_args("default", cid, cid)]);
        let out = run_plugin(Some(&node), &bin, &env, conf.as_bytes());
        let mut v = serde_json::json!({"cmd": cmd, "cid": cid, "code": out.code});
        if !out.stdout.trim().is_empty() {
            v["out"] = out.json();
        }
        outs.push(v);
    };
    let pods: Vec<String> = ["one", "two", "three"]
        .iter()
        .map(|n| p(&PathBuf::from("/var/run/netns").join(format!("{}-pod-{n}", tb.tag))))
        .collect();
    for (i, pod) in pods.iter().enumerate() {
        call("ADD", &format!("same{i}"), pod, VNET_CONF);
    }
    call("ADD", "same0", &pods[0], VNET_CONF); // repeated: the same answer
    call("CHECK", "same1", &pods[1], VNET_CONF);
    call("CHECK", "never", &pods[2], VNET_CONF); // an error from the IPAM's side too
    let gc = VNET_CONF.replacen(
        '{',
        r#"{"cni.dev/valid-attachments":[{"containerID":"same0","ifname":"eth0"},{"containerID":"same2","ifname":"eth0"}],"#,
        1,
    );
    call("GC", "", "", &gc);
    call("STATUS", "", "", VNET_CONF);
    call("DEL", "same0", &pods[0], VNET_CONF);
    call("DEL", "same0", &pods[0], VNET_CONF);
    // Exhaust the pool (5 addresses): the error is the same whichever way the IPAM runs.
    let extra: Vec<String> = (0..4).map(|i| format!("x{i}")).collect();
    for cid in &extra {
        call("ADD", cid, &pods[0], VNET_CONF);
        call("DEL", cid, &pods[0], VNET_CONF);
    }
    let mut node_view = serde_json::json!({
        "azure-vnet.json": read_json(&run.join("azure-vnet.json")),
        "azure-vnet-ipam.json": read_json(&run.join("azure-vnet-ipam.json")),
    });
    for f in ["azure-vnet.log", "azure-vnet-ipam.log"] {
        let lines: Vec<Value> = std::fs::read_to_string(log.join(f))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        node_view[f] = Value::Array(lines);
    }
    call("DEL", "same2", &pods[2], VNET_CONF);
    outs.iter_mut().for_each(normalize);
    normalize(&mut node_view);
    (outs, node_view)
}

#[test]
fn in_process_and_exec_give_the_same_results_state_and_log_lines() {
    let tb = Testbed::up(5);
    // The same pods (namespace paths) for both runs, fresh each time.
    let pods = |fresh: bool| {
        for n in ["one", "two", "three"] {
            if fresh {
                tb.del_pod(&format!("{}-pod-{n}", tb.tag));
            }
            tb.pod(n);
        }
    };
    pods(false);
    let (a_out, a_node) = run_scenario(&tb, &bin_dir(), "inproc");
    pods(true);
    // DEL leaves a pod's veth to go with its namespace, and the kernel destroys a deleted
    // namespace asynchronously: without this wait the second run's ADD can meet the first
    // run's veth of the same name (and log that it deletes it).
    let node = tb.node("a");
    eventually("the first run's veths to go with their namespaces", || {
        !links(&node).iter().any(|l| l.starts_with("azv"))
    });
    let (b_out, b_node) = run_scenario(&tb, &exec_bin_dir(), "exec");
    assert_eq!(a_out.len(), b_out.len());
    for (a, b) in a_out.iter().zip(&b_out) {
        assert_eq!(a, b, "in-process vs exec'd");
    }
    for k in [
        "azure-vnet.json",
        "azure-vnet-ipam.json",
        "azure-vnet.log",
        "azure-vnet-ipam.log",
    ] {
        assert_eq!(a_node[k], b_node[k], "{k}");
    }
    // The scenario did what it says: the GC removed same1, the pool ran dry once.
    assert!(a_out.iter().any(|o| o["cmd"] == "ADD" && o["code"] == 1));
    assert!(!a_node["azure-vnet-ipam.log"].as_array().unwrap().is_empty());
}

/// Which way the IPAM ran, from the pids in the two logs of one ADD.
fn ipam_ran_in_process(log_dir: &Path, cid: &str) -> bool {
    let pid_of = |f: &str| -> Vec<u64> {
        std::fs::read_to_string(log_dir.join(f))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|v| v["containerID"] == cid && v["command"] == "ADD")
            .map(|v| v["pid"].as_u64().unwrap())
            .collect()
    };
    let (vnet, ipam) = (pid_of("azure-vnet.log"), pid_of("azure-vnet-ipam.log"));
    assert!(!vnet.is_empty() && !ipam.is_empty(), "{vnet:?} {ipam:?}");
    ipam.iter().all(|p| vnet.contains(p))
}

#[test]
fn only_this_very_executable_runs_in_process() {
    let tb = Testbed::up(10);
    let node = tb.node("a");
    let log = tb.log_dir("a");
    let other = TempDir::new("other");
    // A different file at the front of CNI_PATH (another build, or a copy mid-upgrade): exec'd.
    copy_executable(&ipam_bin(), &other.join("azure-vnet-ipam"));
    // (CNI_PATH, expected in-process?)
    let cases = [
        (format!("{}:/usr/lib/cni", bin_dir().display()), true),
        (
            format!("{}:{}", other.path().display(), bin_dir().display()),
            false,
        ),
        (format!("{}:/usr/lib/cni", exec_bin_dir().display()), false),
    ];
    for (i, (cni_path, in_process)) in cases.iter().enumerate() {
        let (_, netns) = tb.pod(&format!("w{i}"));
        let cid = format!("which{i}");
        let mut env = with(tb.env("a"), &cni_env("ADD", &cid, &p(&netns), "eth0"));
        env = with(env, &[("CNI_PATH".into(), cni_path.clone())]);
        run_plugin(Some(&node), &vnet_bin(), &env, VNET_CONF.as_bytes()).succeeded();
        assert_eq!(ipam_ran_in_process(&log, &cid), *in_process, "{cni_path}");
    }
    // Another IPAM plugin altogether (host-local): exec'd, and works.
    let (_, netns) = tb.pod("hl");
    let conf = format!(
        r#"{{"cniVersion":"1.0.0","name":"hl","type":"azure-vnet","mode":"transparent","ipam":{{"type":"host-local","dataDir":"{}","ranges":[[{{"subnet":"10.224.0.0/16","rangeStart":"10.224.0.100","rangeEnd":"10.224.0.110"}}]]}}}}"#,
        p(&tb.dir.join("hl"))
    );
    let env = with(tb.env("a"), &cni_env("ADD", "hl1", &p(&netns), "eth0"));
    let r = run_plugin(Some(&node), &vnet_bin(), &env, conf.as_bytes()).succeeded();
    assert_eq!(r["ips"][0]["address"], "10.224.0.100/16");
}
