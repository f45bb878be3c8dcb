//! Failure injection without mocks: each ADD fails with the right CNI error JSON and leaves
//! nothing behind: no link, no route, no record, no IP in use (spec A.3.4).

mod common;
use common::*;

/// One ADD attempt: which netns path, container ID, pod name and config.
struct Attempt<'a> {
    netns: &'a str,
    cid: &'a str,
    pod: &'a str,
    conf: &'a str,
}

/// Run a failing ADD and check the node and the pod (`pod_ns`) are exactly as before.
fn fails_cleanly(tb: &Testbed, pod_ns: &str, a: Attempt, code: u64, words: &str) {
    let before = snapshot(tb, "a", pod_ns);
    let out = vnet_call(tb, "a", "ADD", a.cid, a.netns, Some(a.pod), a.conf);
    let e = out.err(code);
    assert!(
        e["msg"].as_str().unwrap().contains(words),
        "want {words:?} in {e}"
    );
    let after = snapshot(tb, "a", pod_ns);
    assert_eq!(before, after, "the failed ADD left something behind: {e}");
}

#[test]
fn ifname_already_taken_in_the_pod_fails_the_first_kernel_step_and_leaves_nothing() {
    let tb = Testbed::up(30);
    let (ns, path) = tb.pod("taken");
    // A veth pair inside the pod holds the name (this kernel has no dummy driver).
    sh(&[
        "ip", "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", "other0",
    ]);
    // The container end is born as eth0 in the pod, so the very first kernel step fails, while
    // the IPAM plugin runs beside it: its address is waited for and released.
    fails_cleanly(
        &tb,
        &ns,
        Attempt {
            netns: &path.display().to_string(),
            cid: "cid-taken",
            pod: "taken",
            conf: VNET_CONF,
        },
        999,
        "the pod already has an interface named eth0",
    );
}

#[test]
fn a_failure_in_the_pods_routes_rolls_back_veth_and_ip() {
    let tb = Testbed::up(30);
    let (ns, path) = tb.pod("routed");
    // The pod already has a default route (through another interface), so adding ours fails:
    // the last step in the pod, after the IPAM plugin and the veth pair, before the host route.
    for cmd in [
        "link add other0 type veth peer name other1",
        "link set other0 up",
        "addr add 192.0.2.1/24 dev other0",
        "route add default via 192.0.2.254 dev other0",
    ] {
        let mut args = vec!["ip", "-n", &ns];
        args.extend(cmd.split(' '));
        sh(&args);
    }
    fails_cleanly(
        &tb,
        &ns,
        Attempt {
            netns: &path.display().to_string(),
            cid: "cid-routed",
            pod: "routed",
            conf: VNET_CONF,
        },
        999,
        "add route 0.0.0.0/0",
    );
    let log = std::fs::read_to_string(tb.log_dir("a").join("azure-vnet.log")).unwrap();
    for step in ["release the IP", "delete the veth pair"] {
        assert!(log.contains(step), "rolled back: {step}: {log}");
    }
}

#[test]
fn a_failure_at_the_record_after_the_host_route_rolls_back_everything() {
    let tb = Testbed::up(30);
    let (ns, path) = tb.pod("unrecorded");
    // Another writer holds azure-vnet.json's lock past the timeout: the record, the step after
    // the host route, fails; the veth pair (with its route) and the address are undone.
    let _held = hold_lock(&tb.run_dir("a").join("azure-vnet/azure-vnet.lock"));
    let before = snapshot(&tb, "a", &ns);
    let mut env = with(
        tb.env("a"),
        &cni_env("ADD", "cid-unrecorded", &path.display().to_string(), "eth0"),
    );
    env.push(kubelet_args("default", "unrecorded", "cid-unrecorded"));
    env.push(("AZURE_VNET_LOCK_TIMEOUT_MS".into(), "300".into()));
    let out = run_plugin(Some(&tb.node("a")), &vnet_bin(), &env, VNET_CONF.as_bytes());
    let e = out.err(11);
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains("timed out locking store"),
        "{e}"
    );
    assert_eq!(before, snapshot(&tb, "a", &ns), "left behind: {e}");
    let log = std::fs::read_to_string(tb.log_dir("a").join("azure-vnet.log")).unwrap();
    for step in ["release the IP", "delete the veth pair"] {
        assert!(log.contains(step), "rolled back: {step}: {log}");
    }
}

#[test]
fn pool_exhausted() {
    let tb = Testbed::up(1);
    let (_, p1) = tb.pod("first");
    vnet_call(
        &tb,
        "a",
        "ADD",
        "cid-first",
        &p1.display().to_string(),
        Some("first"),
        VNET_CONF,
    )
    .succeeded();
    let (ns, p2) = tb.pod("second");
    fails_cleanly(
        &tb,
        &ns,
        Attempt {
            netns: &p2.display().to_string(),
            cid: "cid-second",
            pod: "second",
            conf: VNET_CONF,
        },
        100,
        "No available addresses",
    );
}

#[test]
fn ipam_binary_missing() {
    let tb = Testbed::up(5);
    let (ns, path) = tb.pod("noipam");
    let conf = VNET_CONF.replace("\"azure-vnet-ipam\"", "\"azure-vnet-ipam-missing\"");
    fails_cleanly(
        &tb,
        &ns,
        Attempt {
            netns: &path.display().to_string(),
            cid: "cid-noipam",
            pod: "noipam",
            conf: &conf,
        },
        100,
        "failed to find plugin",
    );
}

#[test]
fn netns_that_is_not_a_namespace() {
    let tb = Testbed::up(5);
    let (ns, _) = tb.pod("bystander");
    let file = tb.dir.join("not-a-netns");
    std::fs::write(&file, "").unwrap();
    fails_cleanly(
        &tb,
        &ns,
        Attempt {
            netns: &file.display().to_string(),
            cid: "cid-file",
            pod: "nsfile",
            conf: VNET_CONF,
        },
        999,
        "is not a network namespace",
    );
    fails_cleanly(
        &tb,
        &ns,
        Attempt {
            netns: "/proc/self/ns/mnt",
            cid: "cid-mnt",
            pod: "nsmnt",
            conf: VNET_CONF,
        },
        999,
        "is not a network namespace",
    );
    fails_cleanly(
        &tb,
        &ns,
        Attempt {
            netns: "/var/run/netns/does-not-exist-azv",
            cid: "cid-gone",
            pod: "nsgone",
            conf: VNET_CONF,
        },
        3,
        "does-not-exist-azv",
    );
}

#[test]
fn host_veth_name_held_by_something_that_is_not_a_veth() {
    let tb = Testbed::up(5);
    let (ns, path) = tb.pod("busy");
    let hv = host_veth("default.busy");
    sh(&[
        "ip",
        "-n",
        &tb.node("a"),
        "link",
        "add",
        &hv,
        "type",
        "bridge",
    ]);
    fails_cleanly(
        &tb,
        &ns,
        Attempt {
            netns: &path.display().to_string(),
            cid: "cid-busy",
            pod: "busy",
            conf: VNET_CONF,
        },
        100,
        "is not a veth",
    );
    assert!(
        links(&tb.node("a")).contains(&hv),
        "someone else's interface is never deleted"
    );
}

#[test]
fn unsupported_mode_is_refused_before_anything_happens() {
    let tb = Testbed::up(5);
    let (ns, path) = tb.pod("bridge");
    let conf = VNET_CONF.replace("\"transparent\"", "\"bridge\"");
    fails_cleanly(
        &tb,
        &ns,
        Attempt {
            netns: &path.display().to_string(),
            cid: "cid-bridge",
            pod: "bridge",
            conf: &conf,
        },
        2,
        "transparent",
    );
}
