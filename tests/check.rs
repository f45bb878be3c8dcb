//! CHECK verifies the real datapath (spec A.3.6): through cnitool with a 1.0.0 copy of the seed
//! conflist, it passes on a good pod and fails, naming the cause, once something is broken.

mod common;
use common::*;

fn check(
    tb: &Testbed,
    netconf: &std::path::Path,
    path: &std::path::Path,
    env: &[(String, String)],
) -> PluginOut {
    cnitool_run(&tb.node("a"), netconf, "check", "azure", path, env)
}

#[test]
fn check_passes_on_a_good_pod_and_names_what_broke() {
    let tb = Testbed::up(30);
    let ws = Wireserver::start(&tb.node("a"), &tb.nmagent_xml("a"), "ok");
    let netconf = netconf_dir(&tb.dir, "azure-1.0.0.conflist");
    let (ns, path) = tb.pod("chk");
    let cid = cnitool_container_id(&path);
    let env = with(
        tb.env("a"),
        &[
            ("AZURE_VNET_WIRESERVER_URL".into(), ws.url.clone()),
            kubelet_args("default", "chk", &cid),
        ],
    );
    let res = cnitool_run(&tb.node("a"), &netconf, "add", "azure", &path, &env).succeeded();
    assert_eq!(res["cniVersion"], "1.0.0");
    let ip = res["ips"][0]["address"]
        .as_str()
        .unwrap()
        .trim_end_matches("/16")
        .to_string();
    let hv = host_veth("default.chk");

    let ok = check(&tb, &netconf, &path, &env);
    assert_eq!(
        ok.code, 0,
        "CHECK on a good pod: {} {}",
        ok.stdout, ok.stderr
    );

    // Each breakage, done by hand, and the words CHECK must use; then repaired.
    let node = tb.node("a");
    let pa_off = format!("net.ipv4.conf.{hv}.proxy_arp=0");
    let pa_on = format!("net.ipv4.conf.{hv}.proxy_arp=1");
    let addr = format!("{ip}/16");
    let cases: Vec<(Vec<&str>, &str, Vec<&str>)> = vec![
        (
            vec!["ip", "netns", "exec", &ns, "ip", "route", "del", "default"],
            "route default via 169.254.1.1 dev eth0 is missing in the pod",
            vec![
                "ip",
                "netns",
                "exec",
                &ns,
                "ip",
                "route",
                "add",
                "default",
                "via",
                "169.254.1.1",
                "dev",
                "eth0",
                "proto",
                "static",
            ],
        ),
        (
            vec!["ip", "-n", &node, "route", "del", &ip, "dev", &hv],
            "host route",
            vec![
                "ip", "-n", &node, "route", "add", &ip, "dev", &hv, "proto", "static",
            ],
        ),
        (
            vec!["ip", "netns", "exec", &node, "sysctl", "-qw", &pa_off],
            "proxy_arp",
            vec!["ip", "netns", "exec", &node, "sysctl", "-qw", &pa_on],
        ),
        (
            vec![
                "ip",
                "netns",
                "exec",
                &ns,
                "ip",
                "route",
                "add",
                "10.224.0.0/16",
                "dev",
                "eth0",
            ],
            "subnet route 10.224.0.0/16 dev eth0 is back",
            vec![
                "ip",
                "netns",
                "exec",
                &ns,
                "ip",
                "route",
                "del",
                "10.224.0.0/16",
                "dev",
                "eth0",
            ],
        ),
        (
            vec![
                "ip",
                "netns",
                "exec",
                &ns,
                "ip",
                "neigh",
                "replace",
                "169.254.1.1",
                "lladdr",
                "02:00:00:00:00:01",
                "dev",
                "eth0",
                "nud",
                "permanent",
            ],
            "neighbour 169.254.1.1 is 02:00:00:00:00:01",
            vec![
                "ip",
                "netns",
                "exec",
                &ns,
                "ip",
                "neigh",
                "replace",
                "169.254.1.1",
                "lladdr",
                "aa:aa:aa:aa:aa:aa",
                "dev",
                "eth0",
                "nud",
                "probe",
            ],
        ),
        (
            vec![
                "ip", "netns", "exec", &ns, "ip", "addr", "del", &addr, "dev", "eth0",
            ],
            "address",
            vec!["true"],
        ),
    ];
    for (breakit, words, repair) in &cases {
        sh(breakit);
        let out = check(&tb, &netconf, &path, &env);
        assert_ne!(out.code, 0, "CHECK must fail after {breakit:?}");
        let text = format!("{}{}", out.stdout, out.stderr);
        assert!(
            text.contains(words),
            "after {breakit:?}, CHECK said: {text}"
        );
        sh(repair);
        if *repair != vec!["true"] {
            let again = check(&tb, &netconf, &path, &env);
            assert_eq!(
                again.code, 0,
                "repaired {breakit:?}, CHECK still fails: {} {}",
                again.stdout, again.stderr
            );
        }
    }

    cnitool_run(&tb.node("a"), &netconf, "del", "azure", &path, &env).succeeded();
    assert!(ips_in_use(&tb.ipam_state("a")).is_empty());
}

#[test]
fn check_of_an_unknown_container_fails() {
    let tb = Testbed::up(5);
    let (_, path) = tb.pod("none");
    let env = with(
        tb.env("a"),
        &cni_env("CHECK", "never-added", &path.display().to_string(), "eth0"),
    );
    let conf = r#"{"cniVersion":"1.0.0","name":"azure","type":"azure-vnet","mode":"transparent","ipam":{"type":"azure-vnet-ipam"}}"#;
    let e = run_plugin(Some(&tb.node("a")), &vnet_bin(), &env, conf.as_bytes()).err(100);
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains("no endpoint for container never-added"),
        "{e}"
    );
}

/// What the kernel and a chained plugin do legitimately never fails CHECK: the kernel drops an
/// idle neighbour entry (proxy ARP on the host veth answers the next lookup), and a chained
/// `tuning` changes the pod's MAC (the runtime's prevResult says so). A wrong entry still does.
#[test]
fn check_accepts_a_dropped_neighbour_entry_and_a_mac_set_by_a_chained_plugin() {
    let tb = Testbed::up(5);
    let node = tb.node("a");
    let netconf = netconf_dir(&tb.dir, "azure-tuning.conflist");
    let (ns, path) = tb.pod("tun");
    let env = with(
        tb.env("a"),
        &[kubelet_args("default", "tun", &cnitool_container_id(&path))],
    );
    // The file source (node-a's interfaces.json, from the environment); tuning keeps the
    // settings it changed in the test's directory, not the machine's /run/cni/tuning.
    let f = netconf.join("azure-tuning.conflist");
    let text = std::fs::read_to_string(&f)
        .unwrap()
        .replace(
            r#""type":"azure-vnet-ipam""#,
            r#""type":"azure-vnet-ipam","environment":"file""#,
        )
        .replace(
            r#""type":"tuning","#,
            &format!(
                r#""type":"tuning","dataDir":"{}","#,
                tb.dir.join("tuning").display()
            ),
        );
    assert!(text.contains("dataDir"), "{text}");
    std::fs::write(f, text).unwrap();
    let res = cnitool_run(&node, &netconf, "add", "azure", &path, &env).succeeded();
    let pod_if = res["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["sandbox"].is_string())
        .unwrap();
    assert_eq!(pod_if["mac"], "02:11:22:33:44:55", "tuning's MAC: {res}");
    assert!(ns_sh(&ns, &["ip", "link", "show", "eth0"]).contains("02:11:22:33:44:55"));
    cnitool_run(&node, &netconf, "check", "azure", &path, &env).succeeded();

    // (Setting the MAC flushed the entry already.) Traffic resolves it again through the host
    // veth's proxy ARP; the kernel drops it when idle; CHECK passes either way.
    ping(&ns, NODE_A_IP);
    let neigh = ns_sh(&ns, &["ip", "neigh", "show", "dev", "eth0"]);
    assert!(neigh.contains("aa:aa:aa:aa:aa:aa"), "{neigh}");
    sh(&["ip", "-n", &ns, "neigh", "flush", "dev", "eth0"]);
    cnitool_run(&node, &netconf, "check", "azure", &path, &env).succeeded();
    ping(&ns, NODE_A_IP);
    // A wrong entry breaks traffic: CHECK says so.
    sh(&[
        "ip",
        "-n",
        &ns,
        "neigh",
        "replace",
        "169.254.1.1",
        "lladdr",
        "02:00:00:00:00:09",
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);
    let out = check(&tb, &netconf, &path, &env);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(out.code != 0, "CHECK passed with a wrong neighbour entry");
    assert!(
        text.contains("neighbour 169.254.1.1 is 02:00:00:00:00:09"),
        "{text}"
    );
    cnitool_run(&node, &netconf, "del", "azure", &path, &env).succeeded();
}
