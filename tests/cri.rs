//! End to end through containerd 1.6's CRI plugin, driven over its gRPC socket exactly as kubelet
//! drives it (RunPodSandbox, PodSandboxStatus, CreateContainer, StartContainer, StopPodSandbox,
//! RemovePodSandbox through `tools/criclient`), on the simulated node, with the seed conflist
//! unchanged (azure-vnet transparent + azure-vnet-ipam on the wireserver source, then Debian's
//! portmap) and the fake wireserver on node-a's loopback.
//!
//! What containerd's CRI plugin does that cnitool and ctr do not (containerd 1.6.20, verified):
//! * CNI_ARGS carry kubelet's pod identity: `K8S_POD_NAMESPACE`, `K8S_POD_NAME`,
//!   `K8S_POD_INFRA_CONTAINER_ID` (the sandbox ID, also CNI_CONTAINERID) and `K8S_POD_UID`;
//! * port mappings arrive as the `portMappings` capability (portmap reads them);
//! * the results are cached by libcni in /var/lib/cni/results (private here);
//! * StopPodSandbox runs DEL, and RemovePodSandbox runs a second DEL;
//! * a RunPodSandbox whose ADD fails runs DEL at once, and the caller gets the plugin's error;
//! * the `loopback` plugin runs on every sandbox too.
//!
//! Every case runs on its own throw-away node and containerd (tests/common/cri.rs), one at a
//! time; everything is removed on Drop, even when an assertion fails.

mod common;
use common::cri::*;
use common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Instant;

const HELLO: &str = "hello from rcbusybox\n";

/// A node with the fake wireserver and containerd's CRI plugin on the seed conflist.
struct Node {
    cri: CriNode,
    _ws: Wireserver,
    tb: Testbed,
}

fn node(secondaries: u32) -> Node {
    node_with(secondaries, |s| s)
}

fn node_with(secondaries: u32, setup: impl FnOnce(CniSetup) -> CniSetup) -> Node {
    let tb = Testbed::up(secondaries);
    let ws = Wireserver::start(&tb.node("a"), &tb.nmagent_xml("a"), "ok");
    let cri = CriNode::start(&tb, "a", setup(CniSetup::seed(&tb, "a", &ws)));
    Node { cri, _ws: ws, tb }
}

impl Node {
    fn view(&self) -> NodeView {
        NodeView::of(&self.tb, "a")
    }
    fn node_b(&self) -> String {
        self.tb.node("b")
    }
    fn log_dir(&self) -> PathBuf {
        self.tb.log_dir("a")
    }
    /// The plugin's log lines for one sandbox and command, that ended with `msg`.
    fn logged(&self, cmd: &str, id: &str, msg: &str) -> usize {
        logged(&self.log_dir(), "azure-vnet.log", cmd, id)
            .iter()
            .filter(|l| l["msg"] == msg)
            .count()
    }
}

/// The sandbox ID in containerd's error for a failed RunPodSandbox:
/// `failed to setup network for sandbox "<id>": ...`.
fn failed_sandbox_id(err: &str) -> String {
    let tail = err
        .split("sandbox \"")
        .nth(1)
        .unwrap_or_else(|| panic!("no sandbox ID in {err:?}"));
    tail.split('"').next().unwrap_or_default().to_string()
}

#[test]
fn cri_two_pods_with_kubelets_metadata_get_records_routes_and_traffic_including_a_host_port() {
    let n = node(30);
    let t0 = Instant::now();

    // kubelet's two pods; the hostPort one alone first (Debian's portmap can lose an iptables
    // race when a fresh node's first hostPort pods are added in parallel).
    let web = Pod::new("web", "default").host_port(8080, 80);
    let db = Pod::new("db", "kube-system");
    let sb_web = n.cri.runp(&web);
    let sb_db = n.cri.runp(&db);
    n.cri.start_httpd(&sb_web, &web);
    eprintln!("two sandboxes and httpd in {:?}", t0.elapsed());
    assert_ne!(sb_web.ip, sb_db.ip);

    // containerd passed kubelet's identity and the port mapping (libcni's cache keeps what it
    // sent the plugins).
    let cached = n.cri.cached(&sb_web.id);
    let args: BTreeMap<String, String> = cached["cniArgs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|kv| {
            (
                kv[0].as_str().unwrap_or_default().to_string(),
                kv[1].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(args.get("K8S_POD_NAME").map(String::as_str), Some("web"));
    assert_eq!(
        args.get("K8S_POD_NAMESPACE").map(String::as_str),
        Some("default")
    );
    assert_eq!(args.get("K8S_POD_UID"), Some(&web.uid));
    assert_eq!(args.get("K8S_POD_INFRA_CONTAINER_ID"), Some(&sb_web.id));
    let pm = &cached["capabilityArgs"]["portMappings"][0];
    assert_eq!(
        (&pm["HostPort"], &pm["ContainerPort"], &pm["Protocol"]),
        (&8080.into(), &80.into(), &"tcp".into()),
        "{cached}"
    );

    // The records carry the pods' names and namespaces; IPAM knows the sandboxes as owners.
    let v = n.view();
    assert_eq!(
        v.records.get(&sb_web.ip),
        Some(&(
            sb_web.id.clone(),
            "web".into(),
            "default".into(),
            host_veth("default.web")
        )),
        "{v:?}"
    );
    assert_eq!(
        v.records.get(&sb_db.ip),
        Some(&(
            sb_db.id.clone(),
            "db".into(),
            "kube-system".into(),
            host_veth("kube-system.db")
        )),
        "{v:?}"
    );
    assert_eq!(v.records.len(), 2);
    assert_eq!(v.ipam.get(&sb_web.ip), Some(&sb_web.id));
    assert_eq!(v.ipam.get(&sb_db.ip), Some(&sb_db.id));
    assert_eq!(v.ipam.len(), 2);
    assert_eq!(
        v.host_routes.get(&sb_web.ip),
        Some(&host_veth("default.web"))
    );
    assert!(
        v.portmap
            .iter()
            .any(|r| r.contains(&format!("DNAT --to-destination {}:80", sb_web.ip))),
        "no DNAT to the web pod: {:?}",
        v.portmap
    );

    // The pod's datapath is the transparent mode's.
    let routes = in_pod(&sb_web, &["ip", "-4", "route"]);
    assert!(
        routes.contains("default via 169.254.1.1 dev eth0"),
        "{routes}"
    );
    assert!(
        in_pod(&sb_web, &["ip", "-4", "addr", "show", "eth0"])
            .contains(&format!("inet {}/16", sb_web.ip)),
        "pool prefix"
    );

    // Traffic: another VM to the hostPort and to the pod, pod to pod, pod to the API server.
    assert_eq!(
        http_from(&n.node_b(), &format!("http://{NODE_A_IP}:8080/")),
        HELLO
    );
    assert_eq!(
        http_from(&n.node_b(), &format!("http://{}/", sb_web.ip)),
        HELLO
    );
    in_pod(&sb_db, &["ping", "-c1", "-W2", &sb_web.ip]);
    assert_eq!(
        in_pod(
            &sb_db,
            &[
                "curl",
                "-sS",
                "--max-time",
                "5",
                &format!("http://{}/", sb_web.ip)
            ]
        ),
        HELLO
    );
    let _api = http_server(&n.tb.api(), 443, "api server\n", &n.tb.dir);
    assert_eq!(
        in_pod(
            &sb_web,
            &[
                "curl",
                "-sS",
                "--max-time",
                "5",
                &format!("http://{API_IP}:443/")
            ]
        ),
        "api server\n"
    );
    in_pod(&sb_db, &["ping", "-c1", "-W2", API_IP]);
    eprintln!("done in {:?}", t0.elapsed());
}

#[test]
fn cri_stop_then_remove_both_dels_succeed_and_leave_nothing() {
    let n = node(30);
    let web = Pod::new("web", "default").host_port(8080, 80);
    let other = Pod::new("other", "default");
    let sb = n.cri.runp(&web);
    let sb_other = n.cri.runp(&other);
    n.cri.start_httpd(&sb, &web);
    assert_eq!(
        http_from(&n.node_b(), &format!("http://{NODE_A_IP}:8080/")),
        HELLO
    );
    assert!(n
        .cri
        .cache_entries()
        .contains(&format!("azure-{}-eth0", sb.id)));

    // StopPodSandbox: the first DEL. Everything of the pod goes: address, record, route,
    // portmap's chain and DNAT, libcni's cache entry.
    let out = n.cri.stopp(&sb.id);
    assert!(out.ok, "StopPodSandbox: {}\n{}", out.stderr, n.cri.diag());
    assert_eq!(n.logged("DEL", &sb.id, "done"), 1, "{}", n.cri.diag());
    let v = n.view();
    assert!(!v.ipam.contains_key(&sb.ip), "{:?}", v.ipam);
    assert!(!v.records.contains_key(&sb.ip), "{:?}", v.records);
    assert!(!v.host_routes.contains_key(&sb.ip), "{:?}", v.host_routes);
    assert!(v.portmap.is_empty(), "{:?}", v.portmap);
    assert!(
        !n.cri.cache_entries().iter().any(|e| e.contains(&sb.id)),
        "{:?}",
        n.cri.cache_entries()
    );

    // RemovePodSandbox: a second DEL, which succeeds with nothing to do.
    let out = n.cri.rmp(&sb.id);
    assert!(out.ok, "RemovePodSandbox: {}\n{}", out.stderr, n.cri.diag());
    assert_eq!(
        n.logged("DEL", &sb.id, "done"),
        2,
        "two DELs, both successful\n{}",
        n.cri.diag()
    );
    assert_eq!(n.logged("DEL", &sb.id, "failed"), 0);
    assert!(!n.cri.sandbox_ids().contains(&sb.id));

    // Nothing of it is left; the other pod is untouched.
    let v = n.view();
    assert_eq!(v.ipam.keys().collect::<Vec<_>>(), vec![&sb_other.ip]);
    assert_eq!(v.records.keys().collect::<Vec<_>>(), vec![&sb_other.ip]);
    assert_eq!(v.host_routes.keys().collect::<Vec<_>>(), vec![&sb_other.ip]);
    azv_links_become(&n.tb, "a", &[host_veth("default.other")].into());
    assert_eq!(n.cri.netns_pins().len(), 1, "{:?}", n.cri.netns_pins());
    in_pod(&sb_other, &["ping", "-c1", "-W2", API_IP]);

    n.cri.stop_remove(&sb_other.id);
    n.view().assert_empty("after both pods");
    azv_links_become(&n.tb, "a", &BTreeSet::new());
    assert!(
        n.cri.cache_entries().is_empty(),
        "{:?}",
        n.cri.cache_entries()
    );
    assert!(n.cri.netns_pins().is_empty(), "{:?}", n.cri.netns_pins());
}

/// After a failed RunPodSandbox and containerd's clean-up DEL, nothing of the failed sandbox is
/// on the node: no address, record, host route, `azv` link or cached result; the live pods'
/// state is theirs alone.
fn assert_nothing_of(n: &Node, id: &str, live: &[&Sandbox], live_veths: &[String]) {
    let v = n.view();
    let live_ips: BTreeSet<&String> = live.iter().map(|s| &s.ip).collect();
    assert_eq!(v.ipam.keys().collect::<BTreeSet<_>>(), live_ips, "{v:?}");
    assert_eq!(v.records.keys().collect::<BTreeSet<_>>(), live_ips, "{v:?}");
    assert_eq!(
        v.host_routes.keys().collect::<BTreeSet<_>>(),
        live_ips,
        "{v:?}"
    );
    assert!(v.portmap.is_empty(), "{:?}", v.portmap);
    azv_links_become(&n.tb, "a", &live_veths.iter().cloned().collect());
    assert!(
        !n.cri.cache_entries().iter().any(|e| e.contains(id)),
        "{:?}",
        n.cri.cache_entries()
    );
}

#[test]
fn cri_pool_exhausted_the_caller_gets_our_error_and_the_cleanup_del_leaves_nothing() {
    let n = node(2);
    let a = n.cri.runp(&Pod::new("a", "default"));
    let b = n.cri.runp(&Pod::new("b", "default"));

    let third = Pod::new("c", "default");
    let err = n
        .cri
        .try_runp(&third)
        .expect_err("a third pod on a node with two secondary IPs");
    assert!(
        err.contains("No available addresses") && err.contains("azure-vnet"),
        "our message reaches the CRI caller: {err}"
    );
    let id = failed_sandbox_id(&err);
    assert_eq!(n.logged("ADD", &id, "failed"), 1, "{}", n.cri.diag());

    // containerd's clean-up DEL succeeds and nothing of the sandbox is left, in our state or
    // in containerd's.
    assert_eq!(n.logged("DEL", &id, "done"), 1, "{}", n.cri.diag());
    assert_nothing_of(
        &n,
        &id,
        &[&a, &b],
        &[host_veth("default.a"), host_veth("default.b")],
    );
    assert!(!n.cri.sandbox_ids().contains(&id), "{}", n.cri.diag());
    assert_eq!(n.cri.netns_pins().len(), 2, "{:?}", n.cri.netns_pins());

    // kubelet retries; once an address is free the pod starts.
    n.cri.stop_remove(&a.id);
    let c = n.cri.runp(&third.next_attempt());
    assert_eq!(c.ip, a.ip, "the freed address");
    in_pod(&c, &["ping", "-c1", "-W2", API_IP]);
}

#[test]
fn cri_ipam_binary_missing_the_caller_gets_our_error_and_nothing_is_left_once_it_is_back() {
    let n = node_with(30, |s| s.without_bin("azure-vnet-ipam"));
    let web = Pod::new("web", "default");
    let err = n
        .cri
        .try_runp(&web)
        .expect_err("no IPAM plugin in the bin dir");
    assert!(
        err.contains(r#"failed to find plugin "azure-vnet-ipam""#),
        "our message reaches the CRI caller: {err}"
    );
    let id = failed_sandbox_id(&err);
    assert_eq!(n.logged("ADD", &id, "failed"), 1, "{}", n.cri.diag());
    assert_nothing_of(&n, &id, &[], &[]);

    // containerd's clean-up DEL cannot release through a missing IPAM plugin: it says so with
    // a retriable error (11), as upstream azure-vnet, ptp and libcni itself do for a missing
    // plugin, and containerd keeps the sandbox (not ready) for kubelet to stop later.
    let dels = logged(&n.log_dir(), "azure-vnet.log", "DEL", &id);
    assert!(
        dels.iter().any(|l| l["msg"] == "failed"
            && l["code"] == 11
            && l["error"]
                .as_str()
                .is_some_and(|e| e.contains("failed to find plugin"))),
        "{dels:?}"
    );
    assert!(n.cri.sandbox_ids().contains(&id), "{}", n.cri.diag());
    assert!(!n.cri.ready(&id));

    // The binary is back: kubelet's StopPodSandbox and RemovePodSandbox succeed, nothing is left.
    n.cri.install_bin(&bin_dir().join("azure-vnet-ipam"));
    n.cri.stop_remove(&id);
    assert!(n.logged("DEL", &id, "done") >= 1, "{}", n.cri.diag());
    n.view().assert_empty("after the sandbox is removed");
    assert!(n.cri.sandbox_ids().is_empty());
    assert!(
        n.cri.cache_entries().is_empty(),
        "{:?}",
        n.cri.cache_entries()
    );
    assert!(n.cri.netns_pins().is_empty(), "{:?}", n.cri.netns_pins());

    // And the pod's next sandbox starts.
    let sb = n.cri.runp(&web.next_attempt());
    in_pod(&sb, &["ping", "-c1", "-W2", API_IP]);
}

#[test]
fn cri_a_second_sandbox_of_the_same_pod_works_and_removing_the_first_leaves_it_alone() {
    let n = node(30);
    let web = Pod::new("web", "default");
    let first = n.cri.runp(&web);
    n.cri.start_httpd(&first, &web);
    assert_eq!(
        http_from(&n.node_b(), &format!("http://{}/", first.ip)),
        HELLO
    );

    // kubelet's next sandbox for the pod (same name, namespace, UID; attempt 1) while the first
    // still exists: it takes over the pod's host veth name.
    let web1 = web.next_attempt();
    let second = n.cri.runp(&web1);
    n.cri.start_httpd(&second, &web1);
    assert_ne!(first.ip, second.ip);
    let veth = host_veth("default.web");
    let ifindex = || sh(&["ip", "-n", &n.cri.node, "-o", "link", "show", "dev", &veth]);
    let link_before = ifindex();
    let v = n.view();
    assert_eq!(v.records.get(&second.ip).map(|r| &r.0), Some(&second.id));
    assert_eq!(v.host_routes.get(&second.ip), Some(&veth));
    assert_eq!(
        http_from(&n.node_b(), &format!("http://{}/", second.ip)),
        HELLO
    );

    // The first sandbox is stopped and removed: its address and record go, the new one keeps
    // its veth, route, record and traffic.
    n.cri.stop_remove(&first.id);
    let v = n.view();
    assert!(!v.ipam.contains_key(&first.ip), "{:?}", v.ipam);
    assert!(!v.records.contains_key(&first.ip), "{:?}", v.records);
    assert!(
        !v.host_routes.contains_key(&first.ip),
        "{:?}",
        v.host_routes
    );
    assert_eq!(v.ipam.get(&second.ip), Some(&second.id));
    assert_eq!(
        v.records.get(&second.ip),
        Some(&(
            second.id.clone(),
            "web".into(),
            "default".into(),
            veth.clone()
        ))
    );
    assert_eq!(v.host_routes.get(&second.ip), Some(&veth));
    assert_eq!(
        ifindex(),
        link_before,
        "the new sandbox's host veth is the same link"
    );
    assert_eq!(
        http_from(&n.node_b(), &format!("http://{}/", second.ip)),
        HELLO
    );
    in_pod(&second, &["ping", "-c1", "-W2", API_IP]);

    n.cri.stop_remove(&second.id);
    n.view().assert_empty("after both sandboxes");
    azv_links_become(&n.tb, "a", &BTreeSet::new());
    assert!(
        n.cri.cache_entries().is_empty(),
        "{:?}",
        n.cri.cache_entries()
    );
}

#[test]
fn cri_containerd_killed_and_restarted_pods_keep_traffic_and_clean_up_fully() {
    let n = node(30);
    let web = Pod::new("web", "default").host_port(8080, 80);
    let db = Pod::new("db", "default");
    let sb_web = n.cri.runp(&web);
    let sb_db = n.cri.runp(&db);
    n.cri.start_httpd(&sb_web, &web);
    assert_eq!(
        http_from(&n.node_b(), &format!("http://{NODE_A_IP}:8080/")),
        HELLO
    );

    // containerd SIGKILLed and started again (its /run outlives it: the holder owns it).
    let before = n.cri.containerd_pid();
    n.cri.restart_containerd();
    assert_ne!(n.cri.containerd_pid(), before);
    for sb in [&sb_web, &sb_db] {
        assert!(n.cri.ready(&sb.id), "{} is ready after the restart", sb.id);
    }
    assert_eq!(
        http_from(&n.node_b(), &format!("http://{NODE_A_IP}:8080/")),
        HELLO
    );
    in_pod(&sb_db, &["ping", "-c1", "-W2", &sb_web.ip]);
    in_pod(&sb_db, &["ping", "-c1", "-W2", API_IP]);

    // A new pod after the restart, then every pod stopped and removed: nothing is left.
    let sb_new = n.cri.runp(&Pod::new("new", "default"));
    in_pod(&sb_new, &["ping", "-c1", "-W2", &sb_web.ip]);
    for sb in [&sb_web, &sb_db, &sb_new] {
        n.cri.stop_remove(&sb.id);
        assert_eq!(n.logged("DEL", &sb.id, "failed"), 0, "{}", n.cri.diag());
    }
    n.view().assert_empty("after the restart and the removals");
    azv_links_become(&n.tb, "a", &BTreeSet::new());
    assert!(
        n.cri.cache_entries().is_empty(),
        "{:?}",
        n.cri.cache_entries()
    );
    assert!(n.cri.netns_pins().is_empty(), "{:?}", n.cri.netns_pins());
}

#[test]
fn cri_churn_110_sandboxes_10_at_a_time_no_failure_no_leak_state_matches_the_live_sandboxes() {
    const ROUNDS: usize = 11;
    const BATCH: usize = 10;
    let n = node(30);
    let t0 = Instant::now();
    let mut live: Vec<Sandbox> = Vec::new();
    for round in 0..ROUNDS {
        // This round's ten pods start while the previous round's ten are stopped and removed.
        let (new, errs) = std::thread::scope(|s| {
            let cri = &n.cri;
            let adds: Vec<_> = (0..BATCH)
                .map(|i| {
                    s.spawn(move || {
                        let pod = Pod::new(&format!("churn-{round}-{i}"), "churn");
                        cri.try_runp(&pod)
                    })
                })
                .collect();
            let dels: Vec<_> = live
                .iter()
                .map(|sb| {
                    let id = sb.id.clone();
                    s.spawn(move || {
                        for (what, out) in [("stopp", cri.stopp(&id)), ("rmp", cri.rmp(&id))] {
                            if !out.ok {
                                return Err(format!("{what} {id}: {}", out.stderr));
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            let mut new = Vec::new();
            let mut errs = Vec::new();
            for h in adds {
                match h.join().expect("runp thread") {
                    Ok(id) => new.push(id),
                    Err(e) => errs.push(format!("runp: {e}")),
                }
            }
            for h in dels {
                if let Err(e) = h.join().expect("stop/remove thread") {
                    errs.push(e);
                }
            }
            (new, errs)
        });
        assert!(
            errs.is_empty(),
            "round {round}: {errs:#?}\n{}",
            n.cri.diag()
        );
        live = new.iter().map(|id| n.cri.sandbox(id)).collect();

        // The plugins' state is exactly the live sandboxes: same addresses, same owners.
        let v = n.view();
        let want: BTreeMap<String, String> =
            live.iter().map(|s| (s.ip.clone(), s.id.clone())).collect();
        let records: BTreeMap<String, String> = v
            .records
            .iter()
            .map(|(ip, r)| (ip.clone(), r.0.clone()))
            .collect();
        assert_eq!(v.ipam, want, "round {round}: IPAM in use vs live sandboxes");
        assert_eq!(records, want, "round {round}: records vs live sandboxes");
        let routes: BTreeSet<&String> = v.host_routes.keys().collect();
        assert_eq!(routes, want.keys().collect(), "round {round}: host routes");
        assert!(v.portmap.is_empty(), "{:?}", v.portmap);
        assert_eq!(
            n.cri.sandbox_ids(),
            live.iter().map(|s| s.id.clone()).collect(),
            "round {round}: containerd's sandboxes"
        );
        let veths: BTreeSet<String> = v.records.values().map(|r| r.3.clone()).collect();
        azv_links_become(&n.tb, "a", &veths);
        eprintln!("round {round}: {} live, {:?}", live.len(), t0.elapsed());
    }
    for sb in &live {
        n.cri.stop_remove(&sb.id);
    }
    n.view().assert_empty("after the churn");
    azv_links_become(&n.tb, "a", &BTreeSet::new());
    assert!(
        n.cri.cache_entries().is_empty(),
        "{:?}",
        n.cri.cache_entries()
    );
    assert!(n.cri.netns_pins().is_empty(), "{:?}", n.cri.netns_pins());
    eprintln!(
        "{} sandboxes created and removed in {:?}",
        ROUNDS * BATCH,
        t0.elapsed()
    );
}
