//! The product end to end: the seed conflist UNCHANGED (0.3.0, azure-vnet in transparent mode,
//! azure-vnet-ipam on the wireserver source, then the real portmap plugin), driven by the real
//! cnitool with kubelet-style CNI_ARGS, on both nodes of the simulated VNet.

mod common;
use common::*;

use serde_json::Value;

struct Pod {
    ns: String,
    path: std::path::PathBuf,
    node: &'static str,
    name: String,
    ip: String,
    result: Value,
}

fn sysctl(ns: &str, key: &str) -> String {
    ns_sh(ns, &["cat", &format!("/proc/sys/{key}")])
        .trim()
        .to_string()
}

/// Spec B.3.4, checked with `ip` and /proc/sys, on both sides.
fn assert_datapath(tb: &Testbed, p: &Pod) {
    let node = tb.node(p.node);
    let hv = host_veth(&format!("default.{}", p.name));
    // Host side.
    let link = ns_sh(&node, &["ip", "-d", "-o", "link", "show", &hv]);
    assert!(
        link.contains("link/ether aa:aa:aa:aa:aa:aa"),
        "host veth MAC: {link}"
    );
    assert!(link.contains("mtu 1500 "), "host veth MTU = eth0's: {link}");
    assert!(
        link.contains("state UP") || link.contains(",UP"),
        "host veth up: {link}"
    );
    assert!(link.contains(" veth "), "is a veth: {link}");
    // One queue each way on both ends (the kernel's default is one per CPU, cut to one in use).
    assert!(
        link.contains("numtxqueues 1 numrxqueues 1 "),
        "one queue each way: {link}"
    );
    assert_eq!(sysctl(&node, &format!("net/ipv4/conf/{hv}/proxy_arp")), "1");
    assert_eq!(sysctl(&node, &format!("net/ipv6/conf/{hv}/accept_ra")), "0");
    let host_routes = routes(&node);
    assert!(
        host_routes
            .lines()
            .any(|l| l.trim() == format!("{} dev {hv} proto static", p.ip)),
        "host route {} dev {hv} proto static:\n{host_routes}",
        p.ip
    );
    assert_eq!(sysctl(&node, "net/ipv4/ip_forward"), "1");

    // Pod side.
    let l = ns_sh(&p.ns, &["ip", "-d", "-o", "link", "show", "eth0"]);
    assert!(l.contains("mtu 1500 ") && l.contains(" veth "), "{l}");
    assert!(l.contains("numtxqueues 1 numrxqueues 1 "), "{l}");
    assert!(l.contains("state UP") || l.contains(",UP"), "{l}");
    let mac = p.result["interfaces"][1]["mac"].as_str().unwrap();
    assert!(
        l.contains(&format!("link/ether {mac}")),
        "pod MAC matches the result: {l}"
    );
    let addrs = ns_sh(&p.ns, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert_eq!(addrs.lines().count(), 1, "{addrs}");
    assert!(addrs.contains(&format!("inet {}/16 ", p.ip)), "{addrs}");
    let r: Vec<String> = routes(&p.ns)
        .lines()
        .map(|l| l.trim().to_string())
        .collect();
    assert_eq!(
        r,
        vec![
            "default via 169.254.1.1 dev eth0 proto static".to_string(),
            "169.254.1.1 dev eth0 proto static scope link".to_string()
        ],
        "exactly two routes: the kernel subnet route is gone"
    );
    let neigh = ns_sh(
        &p.ns,
        &["ip", "neigh", "show", "169.254.1.1", "dev", "eth0"],
    );
    assert!(neigh.contains("lladdr aa:aa:aa:aa:aa:aa"), "{neigh}");
    assert!(
        ["PROBE", "REACHABLE", "STALE", "DELAY"]
            .iter()
            .any(|s| neigh.contains(s)),
        "{neigh}"
    );
    assert_eq!(sysctl(&p.ns, "net/ipv6/conf/eth0/accept_ra"), "0");
}

const SEED_ENDPOINT_KEYS: [&str; 22] = [
    "Id",
    "SandboxKey",
    "IfName",
    "HostIfName",
    "MacAddress",
    "InfraVnetIP",
    "LocalIP",
    "IPAddresses",
    "Gateways",
    "DNS",
    "Routes",
    "VlanID",
    "EnableSnatOnHost",
    "EnableInfraVnet",
    "EnableMultitenancy",
    "AllowInboundFromHostToNC",
    "AllowInboundFromNCToHost",
    "NetworkContainerID",
    "NetworkNameSpace",
    "ContainerID",
    "PODName",
    "PODNameSpace",
];

fn assert_records(tb: &Testbed, p: &Pod, cid: &str) {
    let state = vnet_state(tb, p.node);
    let eps = endpoints(&state, "azure");
    let (key, ep) = eps
        .iter()
        .find(|(_, e)| e["ContainerID"] == cid)
        .unwrap_or_else(|| panic!("no record for {cid}: {eps:?}"));
    // cnitool's IDs share "cnitool-": the first pod gets upstream's short ID, later ones the
    // long form (spec A.3.2).
    assert!(
        *key == format!("{}-eth0", &cid[..8]) || *key == format!("{cid}/eth0"),
        "{key}"
    );
    assert_eq!(ep["Id"], key.as_str());
    let keys: Vec<&str> = ep.as_object().unwrap().keys().map(String::as_str).collect();
    let mut want = SEED_ENDPOINT_KEYS.to_vec();
    want.sort();
    let mut got = keys.clone();
    got.sort();
    assert_eq!(got, want, "the seed's endpoint fields, no more, no less");
    let hv = host_veth(&format!("default.{}", p.name));
    assert_eq!(ep["HostIfName"], hv.as_str());
    assert_eq!(ep["IfName"], format!("{hv}2").as_str());
    assert_eq!(ep["ContainerID"], cid);
    assert_eq!(ep["PODName"], p.name.as_str());
    assert_eq!(ep["PODNameSpace"], "default");
    assert_eq!(
        ep["NetworkNameSpace"],
        p.path.display().to_string().as_str()
    );
    assert_eq!(
        ep["IPAddresses"],
        serde_json::json!([{"IP": p.ip, "Mask": "//8AAA=="}])
    );
    assert_eq!(ep["Gateways"], serde_json::json!(["0.0.0.0"]));
    assert_eq!(
        ep["DNS"],
        serde_json::json!({"Suffix":"","Servers":["168.63.129.16"],"Options":null})
    );
    let net = &state["Network"]["ExternalInterfaces"]["eth0"];
    assert_eq!(net["Name"], "eth0");
    assert_eq!(
        net["MacAddress"],
        if p.node == "a" {
            "AA06Sxwt"
        } else {
            "AA06Sxw9"
        }
    );
    assert_eq!(net["Networks"]["azure"]["Mode"], "transparent");
    assert_eq!(
        net["Networks"]["azure"]["Subnets"][0],
        serde_json::json!({"Family":2,"Prefix":{"IP":"10.224.0.0","Mask":"//8AAA=="},"Gateway":"10.224.0.1","PrimaryIP":""})
    );
    let used = ips_in_use(&tb.ipam_state(p.node));
    assert_eq!(used[&p.ip], cid, "IPAM record: the full container ID");
}

/// `ip monitor route` in a namespace, its output in a file, subscribed before `start` returns.
struct RouteMonitor {
    child: std::process::Child,
    out: TempDir,
}

impl RouteMonitor {
    fn start(ns: &str) -> RouteMonitor {
        let out = TempDir::new("monitor");
        let child = std::process::Command::new("ip")
            .args(["-n", ns, "monitor", "route"])
            .stdout(std::fs::File::create(out.join("events")).unwrap())
            .spawn()
            .unwrap();
        let m = RouteMonitor { child, out };
        // A route of its own, added and removed until the monitor reports it: then it listens
        // (it subscribes some time after it starts).
        eventually("ip monitor to listen", || {
            for op in ["add", "del"] {
                sh(&["ip", "-n", ns, "route", op, "192.0.2.77/32", "dev", "lo"]);
            }
            m.read().contains("192.0.2.77 dev lo")
        });
        m
    }

    fn read(&self) -> String {
        std::fs::read_to_string(self.out.join("events")).unwrap()
    }

    /// Everything seen, once a line containing `what` has been.
    fn until(&self, what: &str) -> String {
        eventually(&format!("ip monitor to show {what:?}"), || {
            self.read().contains(what)
        });
        self.read()
    }
}

impl Drop for RouteMonitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn seed_conflist_through_cnitool_on_two_nodes() {
    let tb = Testbed::up(30);
    let ws_a = Wireserver::start(&tb.node("a"), &tb.nmagent_xml("a"), "ok");
    let ws_b = Wireserver::start(&tb.node("b"), &tb.nmagent_xml("b"), "ok");
    let netconf = netconf_dir(&tb.dir, "10-azure.conflist");
    let www = TempDir::new("www");
    let _api = http_server(&tb.api(), 80, "hello from the API server ILB\n", &www);

    let mut pods: Vec<Pod> = Vec::new();
    for (node, name, url) in [
        ("a", "a1", &ws_a.url),
        ("a", "a2", &ws_a.url),
        ("b", "b1", &ws_b.url),
    ] {
        let (ns, path) = tb.pod(name);
        let cid = cnitool_container_id(&path);
        let mut env = with(
            tb.env(node),
            &[
                ("AZURE_VNET_WIRESERVER_URL".into(), url.clone()),
                kubelet_args("default", name, &cid),
            ],
        );
        if name == "a1" {
            env.push((
                "CAP_ARGS".into(),
                r#"{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}"#
                    .into(),
            ));
        }
        let monitor = RouteMonitor::start(&tb.node(node));
        let result = cnitool_run(&tb.node(node), &netconf, "add", "azure", &path, &env).succeeded();
        let hv = host_veth(&format!("default.{name}"));
        // The host route is born with the pod end already up: never flagged `linkdown`, not
        // even until the kernel's link-watch work would clear the flag.
        let events = monitor.until(&format!(" dev {hv} proto static"));
        assert!(
            !events.contains("linkdown"),
            "a route flagged linkdown:\n{events}"
        );
        assert_eq!(result["cniVersion"], "0.3.0");
        assert_eq!(
            result["interfaces"][0]["name"],
            host_veth(&format!("default.{name}")).as_str()
        );
        assert_eq!(result["interfaces"][0]["mac"], "aa:aa:aa:aa:aa:aa");
        assert_eq!(result["interfaces"][1]["name"], "eth0");
        assert_eq!(
            result["interfaces"][1]["sandbox"],
            path.display().to_string().as_str()
        );
        assert_eq!(result["ips"][0]["interface"], 1);
        assert_eq!(result["ips"][0]["gateway"], "10.224.0.1");
        assert_eq!(
            result["routes"][0],
            serde_json::json!({"dst":"0.0.0.0/0","gw":"10.224.0.1"})
        );
        assert_eq!(result["dns"]["nameservers"][0], "168.63.129.16");
        let ip = result["ips"][0]["address"]
            .as_str()
            .unwrap()
            .trim_end_matches("/16")
            .to_string();
        let p = Pod {
            ns,
            path,
            node,
            name: name.to_string(),
            ip,
            result,
        };
        assert_datapath(&tb, &p);
        assert_records(&tb, &p, &cid);
        pods.push(p);
    }
    let (a1, a2, b1) = (&pods[0], &pods[1], &pods[2]);
    assert!(
        a1.ip.starts_with("10.224.0.") && b1.ip.starts_with("10.224.1."),
        "{} {}",
        a1.ip,
        b1.ip
    );
    assert_ne!(a1.ip, a2.ip);

    // Reachability: pod <-> pod on one node and across nodes, pod -> node, node -> pod.
    ping(&a1.ns, &a2.ip);
    ping(&a2.ns, &a1.ip);
    ping(&a1.ns, &b1.ip);
    ping(&b1.ns, &a1.ip);
    ping(&a1.ns, NODE_A_IP);
    ping(&tb.node("a"), &a1.ip);
    ping(&tb.node("b"), &a1.ip);
    // HTTP from a pod to the API server's ILB IP in the delegated subnet.
    assert_eq!(
        http_get(&a1.ns, &format!("http://{API_IP}/index.html")),
        "hello from the API server ILB\n"
    );
    assert_eq!(
        http_get(&b1.ns, &format!("http://{API_IP}/index.html")),
        "hello from the API server ILB\n"
    );
    // Port mapping through the chained portmap: node:8080 -> a1:80, from the node and from node-b.
    let web = http_server(&a1.ns, 80, "hello from pod a1\n", &www);
    assert_eq!(
        http_get(&a1.ns, "http://127.0.0.1/index.html"),
        "hello from pod a1\n"
    );
    assert_eq!(
        http_get(
            &tb.node("a"),
            &format!("http://{NODE_A_IP}:8080/index.html")
        ),
        "hello from pod a1\n"
    );
    assert_eq!(
        http_get(
            &tb.node("b"),
            &format!("http://{NODE_A_IP}:8080/index.html")
        ),
        "hello from pod a1\n"
    );

    // The server keeps a1's namespace alive; stop it, as the runtime stops a pod's processes.
    drop(web);

    // DEL: no host route, no record, the IP free; once the pod's namespace is gone, no azv link.
    for p in &pods {
        let cid = cnitool_container_id(&p.path);
        let mut env = with(tb.env(p.node), &[kubelet_args("default", &p.name, &cid)]);
        if p.name == "a1" {
            env.push((
                "CAP_ARGS".into(),
                r#"{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}"#
                    .into(),
            ));
        }
        cnitool_run(&tb.node(p.node), &netconf, "del", "azure", &p.path, &env).succeeded();
        let node = tb.node(p.node);
        assert!(
            !routes(&node).contains(&format!("{} dev", p.ip)),
            "host route left:\n{}",
            routes(&node)
        );
        assert!(
            endpoints(&vnet_state(&tb, p.node), "azure").is_empty()
                || !endpoints(&vnet_state(&tb, p.node), "azure")
                    .values()
                    .any(|e| e["ContainerID"] == cid.as_str())
        );
        assert!(!ips_in_use(&tb.ipam_state(p.node)).contains_key(&p.ip));
    }
    for p in &pods {
        assert!(endpoints(&vnet_state(&tb, p.node), "azure").is_empty());
        tb.del_pod(&p.ns);
    }
    for n in ["a", "b"] {
        let node = tb.node(n);
        eventually("no azv link left on the node", || {
            !links(&node).iter().any(|l| l.starts_with("azv"))
        });
        assert!(ips_in_use(&tb.ipam_state(n)).is_empty());
    }
    let nat = ns_sh(&tb.node("a"), &["iptables", "-t", "nat", "-S"]);
    assert!(
        !nat.contains("8080"),
        "portmap cleaned up its rules:\n{nat}"
    );
}
