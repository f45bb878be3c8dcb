//! podman 4.3 (Debian 12) with `network_backend = "cni"` on the simulated node: a container on
//! a conflist using our plugins, with a published port, gets its address and routes, serves on
//! the host port from another VM, and its DEL, which podman runs from conmon, releases
//! everything.
//!
//! What podman does that a kubelet runtime does not (podman 4.3.1, verified):
//! * it validates every network at start-up by calling VERSION through libcni, which sets
//!   CNI_NETNS=dummy, CNI_IFNAME=dummy, CNI_PATH=dummy (a plugin that validates them before
//!   VERSION is dropped from podman's networks);
//! * CNI_ARGS are `IgnoreUnknown=1;K8S_POD_NAME=<container name>`: no namespace, so azure-vnet
//!   names the host veth after `<container id>.<ifname>`;
//! * the `portMappings` capability carries `-p`; libcni caches results in /var/lib/cni;
//! * the DEL of a container that exits comes from `podman container cleanup`, which conmon runs
//!   with conmon's environment: PATH, HOME, CONTAINERS_CONF and podman's flags, nothing else of
//!   podman's environment. So the paths our plugins use must come from the conflist (`runDir`,
//!   `logDir`, `ipam.environment`, `ipam.interfacesFile`), not from AZURE_VNET_* variables.
//!
//! Everything is private to the test (storage, run root, config, plugins, mount namespace) and
//! removed on Drop.

mod common;
use common::cri::{azv_links_become, logged, NodeView};
use common::podman::{Podman, IMAGE};
use common::*;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The seed conflist, unchanged but for what podman's DEL cannot get from the environment: the
/// state and log directories, and the address source (the file source: no wireserver needed).
fn podman_conflist(tb: &Testbed, n: &str) -> Value {
    let mut c = read_json(&repo().join("conflist/10-azure.conflist"));
    let vnet = &mut c["plugins"][0];
    assert_eq!(vnet["type"], "azure-vnet");
    vnet["runDir"] = json!(tb.run_dir(n));
    vnet["logDir"] = json!(tb.log_dir(n));
    vnet["ipam"]["environment"] = json!("file");
    vnet["ipam"]["interfacesFile"] = json!(tb.interfaces_file(n));
    c
}

#[test]
fn podman_cni_container_with_a_published_port_serves_and_conmons_del_releases_everything() {
    let tb = Testbed::up(30);
    let t0 = Instant::now();
    let pm = Podman::start(
        &tb,
        "a",
        &podman_conflist(&tb, "a"),
        &[
            bin_dir().join("azure-vnet"),
            bin_dir().join("azure-vnet-ipam"),
        ],
    );
    assert_eq!(
        pm.ok(&["info", "--format", "{{.Host.NetworkBackend}}"]),
        "cni"
    );
    // podman validated the network (VERSION through libcni) and kept it.
    let nets = pm.ok(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"]);
    assert!(nets.lines().any(|l| l == "azure azure-vnet"), "{nets}");

    // The container, with -p 8080:80. podman's own environment points AZURE_VNET_* elsewhere:
    // the conflist's fields win.
    let decoy = TempDir::new("decoy");
    let out = pm.run_env(
        &[
            "run",
            "-d",
            "--name",
            "web",
            "--network",
            "azure",
            "-p",
            "8080:80",
            IMAGE,
            "/bin/httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/var/www",
        ],
        &[
            (
                "AZURE_VNET_RUN_DIR".into(),
                decoy.path().display().to_string(),
            ),
            (
                "AZURE_VNET_LOG_DIR".into(),
                decoy.path().display().to_string(),
            ),
        ],
    );
    assert!(
        out.status.success(),
        "podman run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    eprintln!("podman run in {:?}", t0.elapsed());
    let ip = pm.inspect("web", "{{.NetworkSettings.Networks.azure.IPAddress}}");
    let pid = pm.inspect("web", "{{.State.Pid}}");
    assert!(
        std::fs::read_dir(decoy.path()).unwrap().next().is_none(),
        "nothing in the environment's directories"
    );

    // Its address (the pool's prefix) and the transparent mode's routes.
    let netns = format!("--net=/proc/{pid}/ns/net");
    let in_ctr = |args: &[&str]| sh(&[&["nsenter", netns.as_str(), "--"][..], args].concat());
    assert!(
        in_ctr(&["ip", "-4", "addr", "show", "eth0"]).contains(&format!("inet {ip}/16")),
        "{ip}/16 on eth0"
    );
    let routes = in_ctr(&["ip", "-4", "route"]);
    assert!(
        routes.contains("default via 169.254.1.1 dev eth0"),
        "{routes}"
    );
    assert!(
        routes
            .lines()
            .any(|l| l.starts_with("169.254.1.1 dev eth0 ") && l.contains("scope link")),
        "{routes}"
    );

    // The node: one record (podman's container ID and name; the host veth is named after
    // `<id>.eth0`: podman sends no pod namespace), IPAM's owner, the host route, the DNAT.
    let veth = host_veth(&format!("{id}.eth0"));
    let v = NodeView::of(&tb, "a");
    assert_eq!(v.ipam.get(&ip), Some(&id), "{v:?}");
    assert_eq!(v.ipam.len(), 1);
    let rec = v
        .records
        .get(&ip)
        .unwrap_or_else(|| panic!("no record: {v:?}"));
    assert_eq!((&rec.0, rec.1.as_str(), &rec.3), (&id, "web", &veth));
    assert_eq!(v.host_routes.get(&ip), Some(&veth));
    assert!(
        v.portmap
            .iter()
            .any(|r| r.contains(&format!("DNAT --to-destination {ip}:80"))),
        "{:?}",
        v.portmap
    );
    let cached = pm.cached("azure", &id);
    assert_eq!(
        cached["capabilityArgs"]["portMappings"][0]["hostPort"], 8080,
        "{cached}"
    );

    // Traffic from the other VM: the published port on node-a, and the container directly.
    let node_b = tb.node("b");
    let get = |url: &str| {
        let t = Instant::now();
        loop {
            let out = ns_exec(&node_b, &["curl", "-sS", "--max-time", "2", url]);
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{url}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    assert_eq!(
        get(&format!("http://{NODE_A_IP}:8080/")),
        "hello from rcbusybox\n"
    );
    assert_eq!(get(&format!("http://{ip}/")), "hello from rcbusybox\n");

    // The container dies (SIGKILL from outside): conmon runs `podman container cleanup`, whose
    // environment has none of podman's AZURE_VNET_* variables; its DEL releases everything.
    let conmon: Vec<String> = common::cri::pids_mentioning(&id)
        .into_iter()
        .filter_map(|p| std::fs::read(format!("/proc/{p}/environ")).ok())
        .map(|e| String::from_utf8_lossy(&e).replace('\0', " "))
        .collect();
    assert!(!conmon.is_empty(), "conmon of {id}");
    assert!(
        conmon.iter().all(|e| !e.contains("AZURE_VNET_")),
        "conmon's environment: {conmon:?}"
    );
    sh(&["kill", "-KILL", &pid]);
    let log_dir = tb.log_dir("a");
    let t = Instant::now();
    // Until its last line: DEL logs "endpoint deleted" before "done".
    while !logged(&log_dir, "azure-vnet.log", "DEL", &id)
        .iter()
        .any(|l| l["msg"] == "done" || l["msg"] == "failed")
    {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no DEL from conmon's cleanup for {id}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let dels = logged(&log_dir, "azure-vnet.log", "DEL", &id);
    assert!(
        dels.iter().any(|l| l["msg"] == "done") && dels.iter().all(|l| l["msg"] != "failed"),
        "{dels:?}"
    );
    assert!(
        pm.inspect("web", "{{.State.Status}}").contains("exited"),
        "podman saw the container exit"
    );
    let v = NodeView::of(&tb, "a");
    v.assert_empty("after conmon's DEL");
    azv_links_become(&tb, "a", &BTreeSet::new());
    // libcni drops its cache entry, and podman the netns pin, once the whole DEL is done.
    eventually("libcni's cache entry removed", || {
        pm.cache_entries().is_empty()
    });
    eventually("the netns pin removed", || pm.netns_pins().is_empty());

    // Removing the exited container runs no further DEL that could fail.
    pm.ok(&["rm", "web"]);
    let dels = logged(&log_dir, "azure-vnet.log", "DEL", &id);
    assert!(dels.iter().all(|l| l["msg"] != "failed"), "{dels:?}");
    NodeView::of(&tb, "a").assert_empty("after podman rm");
    eprintln!("done in {:?}", t0.elapsed());
}
