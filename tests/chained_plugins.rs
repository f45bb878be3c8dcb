//! azure-vnet with other plugins around it: Debian's host-local as its IPAM, Debian's bandwidth
//! chained after it (it finds the host veth in our result's `interfaces`), and ten cnitool pods
//! whose container IDs share their first 8 characters.

mod common;
use common::*;

use std::collections::BTreeSet;

#[test]
fn host_local_ipam_and_chained_bandwidth() {
    let tb = Testbed::up(5);
    let node = tb.node("a");
    // host-local keeps leases under dataDir: point it into the test's temp dir.
    let data = tb.dir.join("host-local");
    let mut conf: serde_json::Value =
        read_json(&repo().join("conflist/azure-host-local-bandwidth.conflist"));
    conf["plugins"][0]["ipam"]["dataDir"] = serde_json::Value::from(data.display().to_string());
    let netconf = tb.dir.join("netconf-hl");
    std::fs::create_dir_all(&netconf).unwrap();
    std::fs::write(netconf.join("azure-hl.conflist"), conf.to_string()).unwrap();

    let (ns, path) = tb.pod("hl");
    let cid = cnitool_container_id(&path);
    let env = with(
        tb.env("a"),
        &[
            kubelet_args("default", "hl", &cid),
            (
                "CAP_ARGS".into(),
                r#"{"bandwidth":{"ingressRate":8000000,"ingressBurst":800000,"egressRate":8000000,"egressBurst":800000}}"#.into(),
            ),
        ],
    );
    let r = cnitool_run(&node, &netconf, "add", "azure-hl", &path, &env).succeeded();
    let ip = r["ips"][0]["address"]
        .as_str()
        .unwrap()
        .trim_end_matches("/16")
        .to_string();
    let last: u8 = ip.rsplit('.').next().unwrap().parse().unwrap();
    assert!(
        ip.starts_with("10.224.0.") && (200..=209).contains(&last),
        "host-local's range: {ip}"
    );
    assert!(
        data.join("azure-hl").join(&ip).exists(),
        "host-local's lease file"
    );
    ping(&ns, NODE_A_IP);
    ping(&node, &ip);

    // bandwidth shaped the host veth (ingress: tbf) and redirected its egress through an ifb.
    let hv = host_veth("default.hl");
    let qd = ns_sh(&node, &["tc", "qdisc", "show", "dev", &hv]);
    assert!(qd.contains("tbf"), "bandwidth's tbf on {hv}:\n{qd}");
    assert!(
        qd.contains("ingress"),
        "bandwidth's ingress qdisc on {hv}:\n{qd}"
    );
    assert!(
        links(&node).iter().any(|l| l.starts_with("bwp")),
        "bandwidth's ifb device: {:?}",
        links(&node)
    );

    cnitool_run(&node, &netconf, "del", "azure-hl", &path, &env).succeeded();
    assert!(
        !data.join("azure-hl").join(&ip).exists(),
        "host-local released the lease"
    );
    assert!(
        !links(&node).iter().any(|l| l.starts_with("bwp")),
        "bandwidth removed its ifb"
    );
    assert!(endpoints(&vnet_state(&tb, "a"), "azure-hl").is_empty());
    assert!(!routes(&node).contains(&format!("{ip} dev")));
}

#[test]
fn ten_cnitool_pods_sharing_an_id_prefix_get_distinct_endpoints() {
    let tb = Testbed::up(30);
    let node = tb.node("a");
    let ws = Wireserver::start(&node, &tb.nmagent_xml("a"), "ok");
    let netconf = netconf_dir(&tb.dir, "10-azure.conflist");
    // cnitool passes no pod identity unless told: like ctr, each pod is named by its ID.
    let env = with(
        tb.env("a"),
        &[("AZURE_VNET_WIRESERVER_URL".into(), ws.url.clone())],
    );
    let mut pods = Vec::new();
    for i in 0..10 {
        let (ns, path) = tb.pod(&format!("ten{i}"));
        let r = cnitool_run(&node, &netconf, "add", "azure", &path, &env).succeeded();
        pods.push((
            ns,
            path,
            r["ips"][0]["address"].as_str().unwrap().to_string(),
        ));
    }
    let eps = endpoints(&vnet_state(&tb, "a"), "azure");
    assert_eq!(eps.len(), 10, "{:?}", eps.keys());
    let cids: BTreeSet<&str> = eps
        .values()
        .map(|e| e["ContainerID"].as_str().unwrap())
        .collect();
    assert_eq!(cids.len(), 10);
    assert!(cids.iter().all(|c| c.starts_with("cnitool-")));
    assert_eq!(
        eps.keys().filter(|k| k.as_str() == "cnitool--eth0").count(),
        1,
        "one short ID, nine long"
    );
    let hosts: BTreeSet<&str> = eps
        .values()
        .map(|e| e["HostIfName"].as_str().unwrap())
        .collect();
    assert_eq!(hosts.len(), 10, "ten host veths");
    let ips: BTreeSet<&String> = pods.iter().map(|p| &p.2).collect();
    assert_eq!(ips.len(), 10);
    for (ns, _, _) in &pods {
        ping(ns, NODE_A_IP);
    }
    for (_, path, _) in &pods {
        cnitool_run(&node, &netconf, "del", "azure", path, &env).succeeded();
    }
    assert!(endpoints(&vnet_state(&tb, "a"), "azure").is_empty());
    assert!(ips_in_use(&tb.ipam_state("a")).is_empty());
}
