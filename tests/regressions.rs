//! Defects found with inputs no earlier test used, each reproduced through the real binaries.

mod common;
use common::*;

/// libcni's `GetVersionInfo` (podman's network check, `ValidateNetworkList`) calls VERSION with
/// placeholders in every other variable; both plugins must answer, as the CNI skel does.
#[test]
fn version_answers_libcni_placeholders() {
    let env: Vec<(String, String)> = [
        ("CNI_COMMAND", "VERSION"),
        ("CNI_CONTAINERID", "dummy"),
        ("CNI_NETNS", "dummy"),
        ("CNI_IFNAME", "dummy"),
        ("CNI_PATH", "dummy"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for bin in [vnet_bin(), ipam_bin()] {
        let out = run_plugin(None, &bin, &env, br#"{"cniVersion":"1.0.0"}"#).succeeded();
        assert_eq!(out["cniVersion"], "1.1.0", "{}: {out}", bin.display());
        let versions = out["supportedVersions"].as_array().unwrap();
        assert!(versions.iter().any(|v| v == "0.4.0"), "{out}");
    }
}

fn p(path: &std::path::Path) -> String {
    path.display().to_string()
}

/// A network config like the seed's (file source), at 1.1.0, with its own run directory and
/// its own share of node-a's secondary addresses (networks in separate run directories must
/// not hand out the same addresses).
fn conf_in(tb: &Testbed, run: &std::path::Path, share: usize, of: usize) -> String {
    let mut source = read_json(&tb.interfaces_file("a"));
    let addrs = source["Interfaces"][0]["IPSubnets"][0]["IPAddresses"]
        .as_array_mut()
        .unwrap();
    let mut i = 0;
    addrs.retain(|a| {
        i += 1;
        a["IsPrimary"] == true || i % of == share
    });
    let file = run.with_extension("interfaces.json");
    std::fs::write(&file, source.to_string()).unwrap();
    VNET_CONF
        .replacen('{', &format!(r#"{{"runDir":"{}","#, run.display()), 1)
        .replace(
            r#""environment":"file""#,
            &format!(
                r#""environment":"file","interfacesFile":"{}""#,
                file.display()
            ),
        )
}

fn vnet(tb: &Testbed, env: Vec<(String, String)>, conf: &str) -> PluginOut {
    run_plugin(
        Some(&tb.node("a")),
        &vnet_bin(),
        &with(tb.env("a"), &env),
        conf.as_bytes(),
    )
}

fn pod_env(
    cmd: &str,
    cid: &str,
    netns: &str,
    ifname: &str,
    ns: &str,
    name: &str,
) -> Vec<(String, String)> {
    let mut env = cni_env(cmd, cid, netns, ifname);
    env.push((
        "CNI_ARGS".into(),
        format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name}"),
    ));
    env
}

fn gc(tb: &Testbed, conf: &str, valid: &str) -> PluginOut {
    let conf = conf.replacen(
        '{',
        &format!(r#"{{"cni.dev/valid-attachments":{valid},"#),
        1,
    );
    let env = vec![
        ("CNI_COMMAND".into(), "GC".into()),
        ("CNI_PATH".into(), cni_path()),
    ];
    vnet(tb, env, &conf)
}

/// Any name the CNI spec and the kernel allow round-trips through both state files; DEL of
/// such a pod succeeds and leaves nothing. (A CNI_IFNAME holding `"` once made ADD write an
/// unescaped key, and every later DEL, CHECK and GC on the node failed with code 11.)
#[test]
fn hostile_but_valid_names_round_trip_and_delete_cleanly() {
    let tb = Testbed::up(8);
    let node = tb.node("a");
    // A plain pod first, so the hostile ones are added to an existing file.
    let (_, plain) = tb.pod("plain");
    vnet(
        &tb,
        pod_env("ADD", "cid-plain", &p(&plain), "eth0", "default", "plain"),
        VNET_CONF,
    )
    .succeeded();
    // (container ID, CNI_IFNAME, pod namespace, pod name)
    let hostile = [
        ("cid-q1", "e\"th\\0", "default", "q\"uo\\te"),
        ("cid-q2", "eth\u{1}\u{7f}", "ns-\u{e9}", "p\u{f6}d-\u{2603}"),
        ("cid-q3", "\u{e9}\u{f6}t\u{fc}", "k\"s", "ctl\u{2}\u{1b}[0m"),
        ("cid-q4", "e{}[]'\",", "a\\\"b", "x=y"),
    ];
    let mut pods = Vec::new();
    for (i, (cid, ifname, ns, name)) in hostile.iter().enumerate() {
        let (pod_ns, path) = tb.pod(&format!("h{i}"));
        let r = vnet(
            &tb,
            pod_env("ADD", cid, &p(&path), ifname, ns, name),
            VNET_CONF,
        )
        .succeeded();
        assert_eq!(r["interfaces"][1]["name"], *ifname, "{r}");
        assert!(
            links(&pod_ns).contains(&ifname.to_string()),
            "{ifname:?} in the pod"
        );
        ping(&pod_ns, NODE_A_IP);
        pods.push((cid, ifname, ns, name, path));
    }
    // Both files parse (read_json panics otherwise) and hold the names exactly.
    let eps = endpoints(&vnet_state(&tb, "a"), "azure");
    for (cid, ifname, ns, name, _) in &pods {
        let key = format!("{}-{ifname}", &cid[..cid.len().min(8)]);
        let ep = eps
            .get(&key)
            .unwrap_or_else(|| panic!("no record {key:?}: {eps:?}"));
        assert_eq!(ep["PODName"], **name);
        assert_eq!(ep["PODNameSpace"], **ns);
        assert_eq!(ep["HostIfName"], host_veth(&format!("{ns}.{name}")));
    }
    assert_eq!(ips_in_use(&tb.ipam_state("a")).len(), 5);
    // CHECK, then DEL of each, in the reverse order; a repeated DEL still succeeds.
    for (cid, ifname, ns, name, path) in pods.iter().rev() {
        let conf = VNET_CONF;
        vnet(&tb, pod_env("CHECK", cid, &p(path), ifname, ns, name), conf).succeeded();
        vnet(&tb, pod_env("DEL", cid, &p(path), ifname, ns, name), conf).succeeded();
        vnet(&tb, pod_env("DEL", cid, &p(path), ifname, ns, name), conf).succeeded();
        assert!(!routes(&node).contains(&host_veth(&format!("{ns}.{name}"))));
    }
    vnet(
        &tb,
        pod_env("DEL", "cid-plain", &p(&plain), "eth0", "default", "plain"),
        VNET_CONF,
    )
    .succeeded();
    assert!(endpoints(&vnet_state(&tb, "a"), "azure").is_empty());
    assert!(ips_in_use(&tb.ipam_state("a")).is_empty());
    assert!(!routes(&node).contains("dev azv"), "{}", routes(&node));
}

/// Names the kernel would not take as given (or JSON could not record) are refused with
/// code 4 before anything changes.
#[test]
fn names_the_kernel_or_json_cannot_take_are_refused_before_anything_changes() {
    use std::os::unix::ffi::OsStrExt;
    let tb = Testbed::up(2);
    let (pod_ns, path) = tb.pod("bad");
    let before = snapshot(&tb, "a", &pod_ns);
    // (CNI_IFNAME as bytes, words of the error)
    let table: [(&[u8], &str); 4] = [
        (b"eth%d", "%"),
        (b"e\xc3\xa0", "0xa0"),
        (b"eth\xff", "not valid UTF-8"),
        (b"eth\xc2\xa0", "whitespace"),
    ];
    for (ifname, words) in table {
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", &tb.node("a")])
            .arg(vnet_bin())
            .env_clear()
            .envs(with(
                tb.env("a"),
                &cni_env("ADD", "cid-bad", &p(&path), "x"),
            ))
            .env("CNI_IFNAME", std::ffi::OsStr::from_bytes(ifname));
        let out = run_with_stdin(cmd, VNET_CONF.as_bytes());
        let e = out.err(4);
        assert!(
            e["msg"].as_str().unwrap().contains(words),
            "{ifname:?}: {e}"
        );
        assert_eq!(
            snapshot(&tb, "a", &pod_ns),
            before,
            "{ifname:?} changed something"
        );
    }
}

/// GC touches what its run directory records, and strays whose peer never left the host;
/// a pod of another run directory (another network, or upstream's files during a migration)
/// keeps its veth. GC carries on past a failed step and reports it.
#[test]
fn gc_leaves_the_pods_of_another_run_directory_alone() {
    let tb = Testbed::up(10);
    let node = tb.node("a");
    let (run1, run2) = (tb.dir.join("run1"), tb.dir.join("run2"));
    let (conf1, conf2) = (conf_in(&tb, &run1, 0, 2), conf_in(&tb, &run2, 1, 2));
    let (ns1, path1) = tb.pod("one");
    let (ns2, path2) = tb.pod("two");
    vnet(
        &tb,
        pod_env("ADD", "cid-one", &p(&path1), "eth0", "default", "one"),
        &conf1,
    )
    .succeeded();
    vnet(
        &tb,
        pod_env("ADD", "cid-two", &p(&path2), "eth0", "default", "two"),
        &conf2,
    )
    .succeeded();
    // A stray of an interrupted ADD whose peer never left the host.
    let stray = "azvdeadbeef000";
    add_host_veth_pair(&node, stray, "azvdeadbeef0002");

    gc(
        &tb,
        &conf1,
        r#"[{"containerID":"cid-one","ifname":"eth0"}]"#,
    )
    .succeeded();
    let names = links(&node);
    assert!(
        names.contains(&host_veth("default.two")),
        "the other run directory's pod: {names:?}"
    );
    assert!(names.contains(&host_veth("default.one")));
    assert!(!names.contains(&stray.to_string()), "{names:?}");
    ping(&ns1, NODE_A_IP);
    ping(&ns2, NODE_A_IP);

    // GC of everything in run1, with run1's IPAM state unreadable: the record, route and veth
    // still go, and the failed IPAM step is reported.
    std::fs::write(run1.join("azure-vnet-ipam.json"), "{garbage").unwrap();
    let e = gc(&tb, &conf1, "[]").err(11);
    assert!(
        e["msg"].as_str().unwrap().contains("azure-vnet-ipam.json"),
        "{e}"
    );
    assert!(endpoints(&read_json(&run1.join("azure-vnet.json")), "azure").is_empty());
    let names = links(&node);
    assert!(!names.contains(&host_veth("default.one")), "{names:?}");
    assert!(names.contains(&host_veth("default.two")), "{names:?}");
    ping(&ns2, NODE_A_IP);
    vnet(
        &tb,
        pod_env("DEL", "cid-two", &p(&path2), "eth0", "default", "two"),
        &conf2,
    )
    .succeeded();
}

/// A run directory that outlives a reboot (on disk): the state files are older than the
/// boot, every pod they name died with it. Their addresses are free again, their records
/// gone, and a DEL of one of those pods succeeds.
#[test]
fn state_from_before_the_last_boot_frees_every_address() {
    let tb = Testbed::up(2);
    let run = tb.run_dir("a");
    let old: Vec<_> = ["old1", "old2"].iter().map(|n| tb.pod(n)).collect();
    for (i, (_, path)) in old.iter().enumerate() {
        let name = format!("old{}", i + 1);
        vnet(
            &tb,
            pod_env(
                "ADD",
                &format!("cid-{name}"),
                &p(path),
                "eth0",
                "default",
                &name,
            ),
            VNET_CONF,
        )
        .succeeded();
    }
    // The pool (two addresses) is full.
    let (new_ns, new_path) = tb.pod("new");
    let new = pod_env("ADD", "cid-new", &p(&new_path), "eth0", "default", "new");
    vnet(&tb, new.clone(), VNET_CONF).err(100);
    // "Reboot": the pods and their veths are gone, the files are from the previous boot.
    for (ns, _) in &old {
        tb.del_pod(ns);
    }
    eventually("the old veths to go", || {
        !links(&tb.node("a")).iter().any(|l| l.starts_with("azv"))
    });
    let btime: i64 = std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for f in ["azure-vnet.json", "azure-vnet-ipam.json"] {
        sh(&[
            "touch",
            "-d",
            &format!("@{}", btime - 3600),
            &p(&run.join(f)),
        ]);
    }
    let r = vnet(&tb, new, VNET_CONF).succeeded();
    ping(&new_ns, NODE_A_IP);
    let ip = result_ip(&r);
    let used = ips_in_use(&tb.ipam_state("a"));
    assert_eq!(
        used.into_iter().collect::<Vec<_>>(),
        vec![(ip, "cid-new".to_string())]
    );
    let eps = endpoints(&vnet_state(&tb, "a"), "azure");
    assert_eq!(eps.keys().collect::<Vec<_>>(), vec!["cid-new-eth0"]);
    // The runtime's DEL of an old pod (its namespace is gone) succeeds and frees nothing else.
    vnet(
        &tb,
        pod_env("DEL", "cid-old1", "", "eth0", "default", "old1"),
        VNET_CONF,
    )
    .succeeded();
    assert_eq!(ips_in_use(&tb.ipam_state("a")).len(), 1);
    let log = |f: &str| std::fs::read_to_string(tb.log_dir("a").join(f)).unwrap();
    assert!(log("azure-vnet.log").contains("older than the last boot"));
    let ipam_log = log("azure-vnet-ipam.log");
    assert!(
        ipam_log.contains("older than the last boot") && ipam_log.contains("cid-old2"),
        "{ipam_log}"
    );
}

// ---- issue 9: an address source that moves, a runtime that races ------------------------

/// An address Azure took away (the wireserver stops listing it while a pod holds it) is never
/// handed out again once released: not while the merged view is reused, not from the saved
/// state while the wireserver is down.
#[test]
fn an_address_the_wireserver_stopped_listing_is_never_handed_out_again() {
    for wireserver_down_after in [false, true] {
        let tb = Testbed::up(3); // 10.224.0.5, .6, .7
        let node = tb.node("a");
        let xml = tb.dir.join("nmagent.xml");
        std::fs::copy(tb.nmagent_xml("a"), &xml).unwrap();
        let ws = Wireserver::start(&node, &xml, "ok");
        let conf = ipam_conf("0.3.0", "");
        let ipam = |cmd: &str, cid: &str, url: &str| {
            let env = with(
                tb.env("a"),
                &[
                    ("AZURE_VNET_WIRESERVER_URL".into(), url.to_string()),
                    ("CNI_COMMAND".into(), cmd.into()),
                    ("CNI_CONTAINERID".into(), cid.into()),
                    ("CNI_NETNS".into(), "/var/run/netns/x".into()),
                    ("CNI_IFNAME".into(), "eth0".into()),
                    ("CNI_PATH".into(), cni_path()),
                ],
            );
            run_plugin(Some(&node), &ipam_bin(), &env, conf.as_bytes())
        };
        let ip_of = |out: PluginOut| result_ip(&out.succeeded());
        assert_eq!(ip_of(ipam("ADD", "c1", &ws.url)), "10.224.0.5");
        // Azure moves .5 to another NIC; the next ADD sees the new list.
        let text = std::fs::read_to_string(&xml).unwrap();
        let moved: String = text
            .lines()
            .filter(|l| !l.contains("10.224.0.5\""))
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&xml, moved).unwrap();
        assert_eq!(ip_of(ipam("ADD", "c2", &ws.url)), "10.224.0.6");
        let url = if wireserver_down_after {
            drop(ws);
            "http://127.0.0.1:9/machine/plugins?comp=nmagent&type=getinterfaceinfov1".to_string()
        } else {
            ws.url.clone()
        };
        ipam("DEL", "c1", &url).succeeded();
        // Drain the pool: .7, then nothing; .5 never again.
        assert_eq!(ip_of(ipam("ADD", "c3", &url)), "10.224.0.7");
        let e = ipam("ADD", "c4", &url).err(100);
        assert!(
            e["msg"]
                .as_str()
                .unwrap()
                .contains("No available addresses"),
            "{e}"
        );
        let state = tb.ipam_state("a");
        assert!(
            !state.to_string().contains("\"10.224.0.5\""),
            "down={wireserver_down_after}: {state}"
        );
    }
}

/// A DEL that arrives while the same container's ADD still runs (the runtime gave up waiting)
/// removes whatever that ADD made: after both return, nothing of the pod remains.
#[test]
fn del_while_the_same_containers_add_still_runs_leaves_nothing() {
    let tb = Testbed::up(5);
    let node = tb.node("a");
    let run = tb.run_dir("a");
    // Where the ADD is held: in its IPAM exec (the IPAM state lock), and just before its
    // record (the azure-vnet state lock).
    for (i, held) in ["azure-vnet-ipam.lock", "azure-vnet.lock"]
        .iter()
        .enumerate()
    {
        let (pod_ns, path) = tb.pod(&format!("race{i}"));
        let name = format!("race{i}");
        let env = |cmd: &str| {
            with(
                tb.env("a"),
                &pod_env(
                    cmd,
                    &format!("cid-race{i}"),
                    &p(&path),
                    "eth0",
                    "default",
                    &name,
                ),
            )
        };
        let lock = hold_lock(&run.join("azure-vnet").join(held));
        let spawn = |cmd: &str| {
            let node = node.clone();
            let env = env(cmd);
            std::thread::spawn(move || {
                run_plugin(Some(&node), &vnet_bin(), &env, VNET_CONF.as_bytes())
            })
        };
        // The ADD waits for the held lock, then the DEL for the pod's veth lock, which the
        // ADD holds: both are queued in the kernel before the lock is let go.
        let add = spawn("ADD");
        eventually("the ADD to wait for the held lock", || {
            flock_waiters(&run.join("azure-vnet").join(held)) > 0
        });
        let del = spawn("DEL");
        let hv = host_veth(&format!("default.{name}"));
        let veth_lock = run
            .join("azure-vnet")
            .join(format!("veth-{}.lock", &hv[3..5]));
        eventually("the DEL to wait for the pod's veth lock", || {
            flock_waiters(&veth_lock) > 0
        });
        drop(lock);
        let (add, del) = (add.join().unwrap(), del.join().unwrap());
        add.succeeded();
        del.succeeded();
        assert!(
            endpoints(&vnet_state(&tb, "a"), "azure").is_empty(),
            "{held}"
        );
        assert!(ips_in_use(&tb.ipam_state("a")).is_empty(), "{held}");
        assert!(
            !routes(&node).contains("dev azv"),
            "{held}: {}",
            routes(&node)
        );
        tb.del_pod(&pod_ns);
        eventually("the pod's veth to go with its namespace", || {
            !links(&node).contains(&host_veth(&format!("default.{name}")))
        });
    }
    // A DEL sent as the ADD starts: either the pod is whole (and a further DEL removes it) or
    // nothing remains.
    for i in 0..5 {
        let (_, path) = tb.pod(&format!("early{i}"));
        let name = format!("early{i}");
        let env = |cmd: &str| {
            with(
                tb.env("a"),
                &pod_env(
                    cmd,
                    &format!("cid-early{i}"),
                    &p(&path),
                    "eth0",
                    "default",
                    &name,
                ),
            )
        };
        let (node2, add_env) = (node.clone(), env("ADD"));
        let add = std::thread::spawn(move || {
            run_plugin(Some(&node2), &vnet_bin(), &add_env, VNET_CONF.as_bytes())
        });
        std::thread::sleep(std::time::Duration::from_millis(i));
        vnet(&tb, env("DEL"), VNET_CONF).succeeded();
        add.join().unwrap();
        // Whole (record, address and host route) or nothing at all.
        let recorded = !endpoints(&vnet_state(&tb, "a"), "azure").is_empty();
        let held = !ips_in_use(&tb.ipam_state("a")).is_empty();
        let routed = routes(&node).contains("dev azv");
        assert!(
            recorded == held && held == routed,
            "{recorded} {held} {routed}"
        );
        vnet(&tb, env("DEL"), VNET_CONF).succeeded();
        assert!(endpoints(&vnet_state(&tb, "a"), "azure").is_empty());
        assert!(ips_in_use(&tb.ipam_state("a")).is_empty());
        assert!(!routes(&node).contains("dev azv"), "{}", routes(&node));
    }
}

/// A NIC added to the node later (its own subnet, IsPrimary=false) does not capture new pods:
/// the network's pods stay in its subnet (azure-vnet pins `ipam.subnet`, as upstream), the
/// first pod of a node gets the primary NIC's subnet, and a network whose `master` is the
/// second NIC gets that NIC's subnet, with working traffic.
#[test]
fn a_second_nic_does_not_capture_the_networks_pods() {
    let tb = Testbed::up(2); // 10.224.0.5, .6 on eth0
    tb.second_nic(3); // 10.225.0.5, .6, .7 on eth1
    let node_b = tb.node("b");
    let add = |name: &str, conf: &str| {
        let (ns, path) = tb.pod(name);
        let out = vnet(
            &tb,
            pod_env(
                "ADD",
                &format!("cid-{name}"),
                &p(&path),
                "eth0",
                "default",
                name,
            ),
            conf,
        );
        (ns, out)
    };
    let ip = |out: &PluginOut| {
        let v = out.succeeded();
        v["ips"][0]["address"].as_str().unwrap().to_string()
    };
    let (ns1, out1) = add("n1", VNET_CONF);
    assert_eq!(ip(&out1), "10.224.0.5/16", "the primary NIC's subnet first");
    let (_, out2) = add("n2", VNET_CONF);
    assert_eq!(ip(&out2), "10.224.0.6/16");
    // The network's subnet is full: the pod is refused rather than given the other NIC's
    // subnet, which this network's master does not route.
    let (_, out3) = add("n3", VNET_CONF);
    let e = out3.err(100);
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains("No available addresses"),
        "{e}"
    );
    ping(&ns1, NODE_B_IP);

    // A network on the second NIC.
    let on_eth1 = VNET_CONF
        .replace(r#""name":"azure""#, r#""name":"azure2""#)
        .replace(r#""mode""#, r#""master":"eth1","mode""#);
    let (ns4, out4) = add("n4", &on_eth1);
    assert_eq!(ip(&out4), "10.225.0.5/16");
    let state = vnet_state(&tb, "a");
    assert!(
        state["Network"]["ExternalInterfaces"]["eth1"]["Networks"]["azure2"].is_object(),
        "{state}"
    );
    ping(&ns4, NODE_B_IP);
    ns_sh(&node_b, &["ping", "-c1", "-W2", "10.225.0.5"]);
}

/// A FIFO where a file belongs: the state files, the interfaces file, a log, the network
/// namespace, the command-line tool's conflist. Each is refused (or, for a log, skipped) at
/// once. Before, opening it waited for a writer for ever: an ADD hung holding the pod's veth
/// lock, and `status` and `metrics` hung too.
#[test]
fn a_fifo_where_a_file_belongs_is_refused_or_skipped_never_waited_on() {
    use nix::sys::stat::Mode;
    let tb = Testbed::up(5);
    let node = tb.node("a");
    let (pod_ns, path) = tb.pod("fifo");
    let netns = path.display().to_string();
    let scratch = TempDir::new("fifo");
    let fifo = |p: &std::path::Path| {
        nix::unistd::mkfifo(p, Mode::S_IRUSR | Mode::S_IWUSR).unwrap();
    };
    let call = |cmd: &str, netns: &str, extra: &[(String, String)]| {
        let env = with(tb.env("a"), &cni_env(cmd, "cid-fifo", netns, "eth0"));
        let env = with(env, &[kubelet_args("default", "fifo", "cid-fifo")]);
        run_plugin(
            Some(&node),
            &vnet_bin(),
            &with(env, extra),
            VNET_CONF.as_bytes(),
        )
    };
    let no_ip_in_use = || {
        !tb.run_dir("a").join("azure-vnet-ipam.json").exists()
            || ips_in_use(&tb.ipam_state("a")).is_empty()
    };
    let untouched = |what: &str| {
        assert!(no_ip_in_use(), "{what}");
        assert!(
            !links(&node).iter().any(|l| l.starts_with("azv")),
            "{what}: {:?}",
            links(&node)
        );
        assert!(!links(&pod_ns).contains(&"eth0".to_string()), "{what}");
    };

    // The state files: refused, as a directory is.
    for f in ["azure-vnet.json", "azure-vnet-ipam.json"] {
        let p = tb.run_dir("a").join(f);
        fifo(&p);
        let e = call("ADD", &netns, &[]).err(5);
        assert!(
            e["msg"].as_str().unwrap().contains("not a regular file"),
            "{f}: {e}"
        );
        std::fs::remove_file(&p).unwrap();
        untouched(f);
    }
    // The interfaces file (the address source): the ADD fails as for an unreadable one.
    let interfaces = scratch.join("interfaces.json");
    fifo(&interfaces);
    let out = call(
        "ADD",
        &netns,
        &[(
            "AZURE_VNET_INTERFACES_FILE".into(),
            interfaces.display().to_string(),
        )],
    );
    let e = out.err(100);
    assert!(
        e["msg"].as_str().unwrap().contains("not a regular file"),
        "{e}"
    );
    untouched("the interfaces file");
    // The network namespace.
    let e = call("ADD", &interfaces.display().to_string(), &[]).err(999);
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains("is not a network namespace"),
        "{e}"
    );
    untouched("the netns");
    // The logs: skipped; the pod is made and deleted as usual.
    let logs = scratch.join("logs");
    std::fs::create_dir(&logs).unwrap();
    for f in ["azure-vnet.log", "azure-vnet-ipam.log"] {
        fifo(&logs.join(f));
    }
    let log_env = [("AZURE_VNET_LOG_DIR".into(), logs.display().to_string())];
    call("ADD", &netns, &log_env).succeeded();
    assert_eq!(call("DEL", &netns, &log_env).code, 0);
    assert!(no_ip_in_use());

    // The command-line tool's conflist: a FIFO, /dev/zero (no end), a regular file over 1 MiB,
    // each refused, naming it.
    let big = scratch.join("big.conflist");
    std::fs::write(&big, vec![b' '; (1 << 20) + 1]).unwrap();
    for conflist in [
        interfaces.as_path(),
        std::path::Path::new("/dev/zero"),
        &big,
    ] {
        for sub in ["status", "metrics"] {
            let mut cmd = std::process::Command::new(vnet_bin());
            cmd.env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .envs(tb.env("a"))
                .args([sub, "--conflist"])
                .arg(conflist);
            let out = run_with_stdin(cmd, b"");
            let all = format!("{}{}", out.stdout, out.stderr);
            assert!(
                all.contains(&conflist.display().to_string()) && !all.contains("panicked"),
                "{sub} --conflist {}: exit {}: {all}",
                conflist.display(),
                out.code
            );
            // status cannot tell (exit 2); metrics still prints, saying the state is unreadable.
            match sub {
                "status" => assert_eq!(out.code, 2, "{all}"),
                _ => assert!(out.stdout.contains("azure_vnet_state_readable 0"), "{all}"),
            }
        }
    }
}

/// GC keeps or removes attachments, not containers. One whose container is listed with
/// another interface goes, address included: before, its record, route and veth went, but the
/// IPAM plugin's GC, keyed by container, kept its address for good. An entry without its
/// interface is refused before anything changes: before, it kept nothing of its container
/// here, and all of it in the IPAM plugin.
#[test]
fn gc_keeps_or_removes_whole_attachments() {
    let tb = Testbed::up(5);
    let node = tb.node("a");
    let (ns, path) = tb.pod("gc1");
    let added = vnet(
        &tb,
        pod_env("ADD", "cid-gc1", &p(&path), "eth0", "default", "gc1"),
        VNET_CONF,
    )
    .succeeded();
    let ip = result_ip(&added);

    let before = snapshot(&tb, "a", &ns);
    let e = gc(&tb, VNET_CONF, r#"[{"containerID":"cid-gc1"}]"#).err(7);
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains("without its containerID or ifname"),
        "{e}"
    );
    assert_eq!(
        before,
        snapshot(&tb, "a", &ns),
        "the refused GC changed something"
    );

    gc(
        &tb,
        VNET_CONF,
        r#"[{"containerID":"cid-gc1","ifname":"eth9"}]"#,
    )
    .succeeded();
    assert!(endpoints(&vnet_state(&tb, "a"), "azure").is_empty());
    assert!(
        ips_in_use(&tb.ipam_state("a")).is_empty(),
        "the removed attachment's address {ip} is still held: {:?}",
        ips_in_use(&tb.ipam_state("a"))
    );
    assert!(!routes(&node).contains(&ip), "{}", routes(&node));
    assert!(!links(&node).contains(&host_veth("default.gc1")));
}

/// GC of one network leaves the pods of another network of the same run directory (on a
/// second NIC) whole: the IPAM plugin's GC, which sees one state file for both, keeps the
/// addresses the other network's records hold. (Before, it released them: the other
/// network's live pods lost their addresses to the next ADD.)
#[test]
fn gc_of_one_network_keeps_the_other_networks_addresses() {
    let tb = Testbed::up(5);
    tb.second_nic(3);
    let conf2 = |master: &str| {
        VNET_CONF
            .replace(r#""name":"azure""#, r#""name":"azure2""#)
            .replace(r#""mode""#, &format!(r#""master":"{master}","mode""#))
    };
    let mut held = Vec::new();
    for (pod, conf) in [("gca", VNET_CONF.to_string()), ("gcb", conf2("eth1"))] {
        let (_, path) = tb.pod(pod);
        let cid = format!("cid-{pod}");
        let out = vnet(
            &tb,
            pod_env("ADD", &cid, &p(&path), "eth0", "default", pod),
            &conf,
        )
        .succeeded();
        held.push(result_ip(&out));
    }
    gc(
        &tb,
        VNET_CONF,
        r#"[{"containerID":"cid-gca","ifname":"eth0"}]"#,
    )
    .succeeded();
    let in_use = ips_in_use(&tb.ipam_state("a"));
    for ip in &held {
        assert!(in_use.contains_key(ip), "{ip} released: {in_use:?}");
    }
    // And the other network's own GC still removes what it does not list.
    gc(&tb, &conf2("eth1"), "[]").succeeded();
    let in_use = ips_in_use(&tb.ipam_state("a"));
    assert_eq!(
        in_use.keys().collect::<Vec<_>>(),
        vec![&held[0]],
        "{in_use:?}"
    );
}
