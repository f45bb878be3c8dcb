//! azure-vnet-ipam under another main plugin: the real cnitool drives Debian's `ptp` with
//! `"ipam": {"type": "azure-vnet-ipam"}` inside a simulated node whose eth0 has the MAC that
//! interfaces.json lists.

mod common;
use common::*;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

fn secondary_of_node_a(ip: &str) -> bool {
    let a: Ipv4Addr = ip.parse().unwrap();
    let [x, y, z, w] = a.octets();
    (x, y, z) == (10, 224, 0) && (5..=34).contains(&w)
}

#[test]
fn ptp_three_pods_get_distinct_secondary_ips_and_del_releases() {
    let tb = Testbed::up(30);
    let node = tb.node("a");
    let netconf = netconf_dir(&tb.dir, "ptp-azure-ipam.conflist");
    let env = tb.env("a");

    let mut pods = Vec::new();
    for name in ["p1", "p2", "p3"] {
        let (ns, path) = tb.pod(name);
        let res = cnitool_run(&node, &netconf, "add", "azure-ptp", &path, &env).succeeded();
        let addr = res["ips"][0]["address"].as_str().unwrap().to_string();
        assert!(addr.ends_with("/16"), "pool prefix kept: {addr}");
        let ip = addr.trim_end_matches("/16").to_string();
        assert!(
            secondary_of_node_a(&ip),
            "{ip} is not one of node-a's secondaries"
        );
        assert_ne!(ip, NODE_A_IP, "never the node's primary IP");
        assert_eq!(res["dns"]["nameservers"][0], "168.63.129.16");
        // The address is really on the pod's eth0.
        let shown = ns_sh(&ns, &["ip", "-4", "-o", "addr", "show", "eth0"]);
        assert!(shown.contains(&addr), "{shown}");
        pods.push((ns, path, ip));
    }
    let distinct: BTreeSet<&String> = pods.iter().map(|p| &p.2).collect();
    assert_eq!(distinct.len(), 3, "three distinct addresses: {pods:?}");

    // The state file records each owner by its full container ID.
    let state = tb.ipam_state("a");
    let used = ips_in_use(&state);
    assert_eq!(used.len(), 3, "{state}");
    for (_, path, ip) in &pods {
        assert_eq!(used[ip], cnitool_container_id(path));
    }
    assert!(
        !state.to_string().contains("\"10.224.0.4\""),
        "primary IP never in the pool"
    );

    // ptp gives pods a working datapath through the node: p1 reaches p2.
    ns_sh(&pods[0].0, &["ping", "-c1", "-W2", &pods[1].2]);

    // DEL releases p1's address; a second DEL succeeds and changes nothing.
    let (_, p1_path, p1_ip) = &pods[0];
    cnitool_run(&node, &netconf, "del", "azure-ptp", p1_path, &env).succeeded();
    let after = ips_in_use(&tb.ipam_state("a"));
    assert!(
        !after.contains_key(p1_ip),
        "{p1_ip} still in use: {after:?}"
    );
    assert_eq!(after.len(), 2);
    let before = std::fs::read(tb.run_dir("a").join("azure-vnet-ipam.json")).unwrap();
    cnitool_run(&node, &netconf, "del", "azure-ptp", p1_path, &env).succeeded();
    let again = std::fs::read(tb.run_dir("a").join("azure-vnet-ipam.json")).unwrap();
    assert_eq!(before, again, "a repeated DEL writes nothing");

    for (_, path, _) in &pods[1..] {
        cnitool_run(&node, &netconf, "del", "azure-ptp", path, &env).succeeded();
    }
    assert!(ips_in_use(&tb.ipam_state("a")).is_empty());
}
