//! Bad input never panics and never loses data: each case gives a CNI error JSON with the right
//! code on stdout, exit status 1, and the run directory (state files) is unchanged.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The state a case starts from.
#[derive(Clone)]
enum State {
    None,
    Bytes(Vec<u8>),
    Symlink,
}

struct Case {
    name: &'static str,
    /// Environment changes: Some(value) sets, None removes.
    env: Vec<(&'static str, Option<String>)>,
    stdin: Vec<u8>,
    state: State,
    hold_lock: bool,
    code: u64,
    /// Words the message must contain.
    words: &'static str,
}

fn case(name: &'static str, code: u64, words: &'static str) -> Case {
    Case {
        name,
        env: vec![],
        stdin: ipam_conf("0.3.0", r#","environment":"file""#).into_bytes(),
        state: State::None,
        hold_lock: false,
        code,
        words,
    }
}

impl Case {
    fn env(mut self, k: &'static str, v: Option<&str>) -> Self {
        self.env.push((k, v.map(String::from)));
        self
    }
    fn stdin(mut self, s: impl Into<Vec<u8>>) -> Self {
        self.stdin = s.into();
        self
    }
    fn state(mut self, s: State) -> Self {
        self.state = s;
        self
    }
    fn locked(mut self) -> Self {
        self.hold_lock = true;
        self
    }
}

/// Two secondaries, both in use by other containers: a full pool.
const FULL_STATE: &str = r#"{"IPAM":{"Version":"v1.6.21","TimeStamp":"2026-08-20T19:46:13Z","AddressSpaces":{"local":{"Id":"local","Scope":0,"Pools":{"10.224.0.0/16":{"Id":"10.224.0.0/16","IfName":"eth0","Subnet":{"IP":"10.224.0.0","Mask":"//8AAA=="},"Gateway":"10.224.0.1","Addresses":{"10.224.0.5":{"ID":"other-1","Addr":"10.224.0.5","InUse":true},"10.224.0.6":{"ID":"other-2","Addr":"10.224.0.6","InUse":true}},"IsIPv6":false,"Priority":0,"RefCount":1}}}}}}"#;

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if e.file_name() == "azure-vnet" {
            continue; // lock files: created by design, hold no data
        }
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let content = if meta.file_type().is_symlink() {
            std::fs::read_link(&p)
                .unwrap()
                .into_os_string()
                .into_encoded_bytes()
        } else if meta.is_dir() {
            b"<dir>".to_vec()
        } else {
            std::fs::read(&p).unwrap()
        };
        out.insert(p, content);
    }
    out
}

fn ipam_cases() -> Vec<Case> {
    let big = {
        let mut v = ipam_conf("0.3.0", "").into_bytes();
        v.truncate(v.len() - 1);
        v.extend(format!(r#","pad":"{}"}}"#, "x".repeat(2 << 20)).into_bytes());
        v
    };
    let truncated = FULL_STATE.as_bytes()[..FULL_STATE.len() / 2].to_vec();
    vec![
        case("no CNI_COMMAND", 4, "CNI_COMMAND").env("CNI_COMMAND", None),
        case("unknown CNI_COMMAND", 4, "FROB").env("CNI_COMMAND", Some("FROB")),
        case("ADD without CNI_CONTAINERID", 4, "CNI_CONTAINERID").env("CNI_CONTAINERID", None),
        case("container ID with a path", 4, "CNI_CONTAINERID")
            .env("CNI_CONTAINERID", Some("../../etc/passwd")),
        case("container ID starting with -", 4, "CNI_CONTAINERID")
            .env("CNI_CONTAINERID", Some("-rf")),
        case("ifname with a slash", 4, "CNI_IFNAME").env("CNI_IFNAME", Some("eth0/x")),
        case("ifname too long", 4, "CNI_IFNAME").env("CNI_IFNAME", Some("eth0123456789abc")),
        case("ifname as a kernel name template", 4, "template").env("CNI_IFNAME", Some("eth%d")),
        case("ifname with byte 0xa0 (the kernel's space)", 4, "0xa0")
            .env("CNI_IFNAME", Some("eth\u{e0}")),
        case("ADD without CNI_NETNS", 4, "CNI_NETNS").env("CNI_NETNS", None),
        case("relative CNI_NETNS", 4, "CNI_NETNS").env("CNI_NETNS", Some("netns/x")),
        case("no CNI_PATH", 4, "CNI_PATH").env("CNI_PATH", None),
        case("malformed CNI_ARGS", 4, "CNI_ARGS").env("CNI_ARGS", Some("K8S_POD_NAME")),
        case("empty stdin", 6, "parse").stdin(""),
        case("invalid JSON", 6, "parse").stdin("{\"cniVersion\":"),
        case("JSON that is not an object", 6, "object").stdin("[1,2,3]"),
        case("oversized stdin", 6, "larger than").stdin(big),
        case("unknown cniVersion", 1, "incompatible CNI versions")
            .stdin(r#"{"cniVersion":"9.9.9","name":"azure","ipam":{"type":"azure-vnet-ipam"}}"#),
        case("cniVersion not a string", 7, "invalid network config")
            .stdin(r#"{"cniVersion":1,"name":"azure"}"#),
        case("missing network name", 7, "name")
            .stdin(r#"{"cniVersion":"0.3.0","ipam":{"type":"azure-vnet-ipam"}}"#),
        case("network name with a path", 7, "name")
            .stdin(r#"{"cniVersion":"0.3.0","name":"../x","ipam":{"type":"azure-vnet-ipam"}}"#),
        case("unknown environment", 7, "ipam.environment")
            .stdin(ipam_conf("0.3.0", r#","environment":"moon""#)),
        case("subnet not a CIDR", 7, "ipam.subnet").stdin(ipam_conf(
            "0.3.0",
            r#","environment":"file","subnet":"10.224/x""#,
        )),
        case("ipAddress not an IP", 7, "ipam.ipAddress").stdin(ipam_conf(
            "0.3.0",
            r#","environment":"file","ipAddress":"ten""#,
        )),
        case(
            "requested address outside the pool",
            100,
            "Address not found",
        )
        .stdin(ipam_conf(
            "0.3.0",
            r#","environment":"file","ipAddress":"192.168.7.7""#,
        )),
        case(
            "requested address owned by another container",
            100,
            "Address already in use",
        )
        .stdin(ipam_conf(
            "0.3.0",
            r#","environment":"file","ipAddress":"10.224.0.5""#,
        ))
        .state(State::Bytes(FULL_STATE.into())),
        case("pool exhausted", 100, "No available addresses")
            .state(State::Bytes(FULL_STATE.into())),
        case("unknown pool requested", 100, "not found").stdin(ipam_conf(
            "0.3.0",
            r#","environment":"file","subnet":"10.9.0.0/16""#,
        )),
        case("corrupt state file", 11, "corrupt").state(State::Bytes(b"\x00garbage{".to_vec())),
        case("truncated state file", 11, "corrupt").state(State::Bytes(truncated)),
        case("whitespace-only state file", 11, "corrupt").state(State::Bytes(b"  \n\t ".to_vec())),
        case("state file of the wrong shape", 11, "corrupt")
            .state(State::Bytes(br#"{"IPAM":{"AddressSpaces":[1]}}"#.to_vec())),
        case("DEL with a corrupt state file", 11, "corrupt")
            .env("CNI_COMMAND", Some("DEL"))
            .state(State::Bytes(b"{{{".to_vec())),
        case("state file is a symlink", 5, "symlink").state(State::Symlink),
        case("interfaces file missing", 100, "interfaces file").env(
            "AZURE_VNET_INTERFACES_FILE",
            Some("/nonexistent/interfaces.json"),
        ),
        case("interfaces file is garbage", 100, "invalid interfaces file")
            .env("AZURE_VNET_INTERFACES_FILE", Some("/proc/self/status")),
        case("CHECK at 0.3.0", 1, "CHECK").env("CNI_COMMAND", Some("CHECK")),
        case("GC before 1.1.0", 1, "GC")
            .env("CNI_COMMAND", Some("GC"))
            .stdin(ipam_conf("1.0.0", "")),
        case("GC without valid-attachments", 7, "valid-attachments")
            .env("CNI_COMMAND", Some("GC"))
            .stdin(ipam_conf("1.1.0", "")),
        case(
            "store lock held by someone else",
            11,
            "timed out locking store",
        )
        .locked(),
    ]
}

fn run_cases(tb: &Testbed, bin: &Path, cases: Vec<Case>) {
    let base_ifjson = tb.interfaces_file("a");
    let mut failures = Vec::new();
    for (i, c) in cases.into_iter().enumerate() {
        let run = TempDir::new("bad");
        let state_path = run.join("azure-vnet-ipam.json");
        match &c.state {
            State::None => {}
            State::Bytes(b) => std::fs::write(&state_path, b).unwrap(),
            State::Symlink => {
                std::fs::write(run.join("real.json"), FULL_STATE).unwrap();
                std::os::unix::fs::symlink(run.join("real.json"), &state_path).unwrap();
            }
        }
        let _lock = c
            .hold_lock
            .then(|| hold_lock(&run.join("azure-vnet/azure-vnet-ipam.lock")));
        let mut env = with(
            tb.env("a"),
            &cni_env("ADD", &format!("bad-{i}"), "/var/run/netns/bad", "eth0"),
        );
        env = with(
            env,
            &[
                (
                    "AZURE_VNET_RUN_DIR".into(),
                    run.path().display().to_string(),
                ),
                (
                    "AZURE_VNET_INTERFACES_FILE".into(),
                    base_ifjson.display().to_string(),
                ),
                ("AZURE_VNET_LOCK_TIMEOUT_MS".into(), "200".into()),
            ],
        );
        for (k, v) in &c.env {
            env.retain(|(ek, _)| ek != k);
            if let Some(v) = v {
                env.push((k.to_string(), v.clone()));
            }
        }
        let before = snapshot(run.path());
        let out = run_plugin(Some(&tb.node("a")), bin, &env, &c.stdin);
        let after = snapshot(run.path());
        let verdict = (|| -> Result<(), String> {
            if out.code != 1 {
                return Err(format!("exit {} (stdout {:?})", out.code, out.stdout));
            }
            let v: serde_json::Value = serde_json::from_str(&out.stdout)
                .map_err(|e| format!("stdout not JSON: {e}: {:?}", out.stdout))?;
            if v["code"] != c.code {
                return Err(format!("code {} != {}: {v}", v["code"], c.code));
            }
            let msg = v["msg"].as_str().unwrap_or("");
            if !msg.contains(c.words) {
                return Err(format!("msg lacks {:?}: {msg}", c.words));
            }
            if v["cniVersion"].as_str().is_none() {
                return Err(format!("no cniVersion: {v}"));
            }
            if before != after {
                return Err(format!(
                    "run dir changed: {:?} -> {:?}",
                    before.keys(),
                    after.keys()
                ));
            }
            if out.stderr.contains("panicked") {
                return Err(format!("panicked: {}", out.stderr));
            }
            Ok(())
        })();
        if let Err(e) = verdict {
            failures.push(format!("{}: {e}", c.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn azure_vnet_ipam_bad_input_table() {
    let tb = Testbed::up(2);
    let cases = ipam_cases();
    assert!(cases.len() >= 20);
    run_cases(&tb, &ipam_bin(), cases);
}

// ---- azure-vnet -------------------------------------------------------------------------

/// The seed's plugin config at `version`, on the file source unless `wire` (wireserver).
fn vconf(version: &str, extra: &str) -> String {
    format!(
        r#"{{"cniVersion":"{version}","name":"azure","type":"azure-vnet","mode":"transparent","ipsToRouteViaHost":["169.254.20.10"],"ipam":{{"type":"azure-vnet-ipam","environment":"file"}}{extra}}}"#
    )
}

struct VCase {
    name: &'static str,
    env: Vec<(&'static str, Option<String>)>,
    stdin: String,
    files: Vec<(&'static str, State)>,
    lock: Option<&'static str>,
    code: u64,
    words: &'static str,
}

fn vcase(name: &'static str, code: u64, words: &'static str) -> VCase {
    VCase {
        name,
        env: vec![],
        stdin: vconf("0.3.0", ""),
        files: vec![],
        lock: None,
        code,
        words,
    }
}

impl VCase {
    fn env(mut self, k: &'static str, v: Option<&str>) -> Self {
        self.env.push((k, v.map(String::from)));
        self
    }
    fn stdin(mut self, s: impl Into<String>) -> Self {
        self.stdin = s.into();
        self
    }
    fn file(mut self, name: &'static str, s: State) -> Self {
        self.files.push((name, s));
        self
    }
}

/// An azure-vnet.json as upstream writes it (spec B.4.2), one endpoint.
const UPSTREAM_VNET: &str = r#"{
	"Network": {
		"CnsClient": null,
		"Version": "v1.6.21",
		"TimeStamp": "2026-08-20T19:46:14.123456789Z",
		"ExternalInterfaces": {
			"eth0": {
				"Name": "eth0",
				"Networks": {
					"azure": {
						"Id": "azure",
						"Mode": "transparent",
						"VlanId": 0,
						"Subnets": [{"Family": 2, "Prefix": {"IP": "10.224.0.0", "Mask": "//8AAA=="}, "Gateway": "10.224.0.1", "PrimaryIP": ""}],
						"Endpoints": {
							"ee86fb8b-eth0": {"Id": "ee86fb8b-eth0", "IfName": "eth0", "HostIfName": "azvd3e9f8799af", "ContainerID": "ee86fb8b1d6c", "IPAddresses": [{"IP": "10.224.0.5", "Mask": "//8AAA=="}], "NICType": "InfraNIC"}
						},
						"DNS": {"Suffix": "", "Servers": null, "Options": null},
						"EnableSnatOnHost": false,
						"NetNs": "",
						"SnatBridgeIP": ""
					}
				},
				"Subnets": ["10.224.0.0/16"],
				"BridgeName": "",
				"DNSInfo": {"Suffix": "", "Servers": null, "Options": null},
				"MacAddress": "AA06Sxwt",
				"IPAddresses": null,
				"Routes": null,
				"IPv4Gateway": "0.0.0.0",
				"IPv6Gateway": "::"
			}
		}
	}
}"#;

fn vnet_cases(ws: &BTreeMap<&str, String>) -> Vec<VCase> {
    let big = format!(
        r#"{{"cniVersion":"0.3.0","name":"azure","pad":"{}"}}"#,
        "x".repeat(2 << 20)
    );
    // The seed's config as is: the default `azure` source, i.e. the (fake) wireserver.
    let wire = |_mode: &str| vconf("0.3.0", "").replace(r#","environment":"file""#, "");
    let wire_env = |mode: &str| Some(ws[mode].clone());
    let truncated = UPSTREAM_VNET[..UPSTREAM_VNET.len() * 2 / 3].to_string();
    vec![
        vcase("no CNI_COMMAND", 4, "CNI_COMMAND").env("CNI_COMMAND", None),
        vcase("lower-case command", 4, "unknown CNI_COMMAND").env("CNI_COMMAND", Some("add")),
        vcase("ADD without CNI_NETNS", 4, "CNI_NETNS").env("CNI_NETNS", None),
        vcase("ADD without CNI_IFNAME", 4, "CNI_IFNAME").env("CNI_IFNAME", None),
        vcase("ifname as a kernel name template", 4, "template").env("CNI_IFNAME", Some("net%d")),
        vcase("ifname with a non-breaking space", 4, "whitespace")
            .env("CNI_IFNAME", Some("eth\u{a0}0")),
        vcase("ifname with byte 0xa0 (the kernel's space)", 4, "0xa0")
            .env("CNI_IFNAME", Some("\u{e0}")),
        vcase("container ID with a slash", 4, "CNI_CONTAINERID")
            .env("CNI_CONTAINERID", Some("a/../../b")),
        vcase(
            "unknown CNI_ARGS key, no IgnoreUnknown",
            4,
            "unknown CNI_ARGS key",
        )
        .env("CNI_ARGS", Some("K8S_POD_NAME=x;FOO=bar")),
        vcase("CNI_ARGS pair without =", 4, "no '='")
            .env("CNI_ARGS", Some("IgnoreUnknown=1;K8S_POD_NAME")),
        vcase("invalid JSON", 6, "parse").stdin("{\"cniVersion\": \"0.3.0\", \"name\""),
        vcase("oversized stdin", 6, "larger than").stdin(big),
        vcase("unknown cniVersion", 1, "incompatible CNI versions").stdin(vconf("0.5.0", "")),
        vcase("CHECK at 0.3.0", 1, "CHECK").env("CNI_COMMAND", Some("CHECK")),
        vcase("GC at 1.0.0", 1, "GC")
            .env("CNI_COMMAND", Some("GC"))
            .stdin(vconf("1.0.0", "")),
        vcase("GC without valid-attachments", 7, "valid-attachments")
            .env("CNI_COMMAND", Some("GC"))
            .stdin(vconf("1.1.0", "")),
        vcase("missing network name", 7, "name")
            .stdin(vconf("0.3.0", "").replace(r#""name":"azure","#, "")),
        vcase("mode bridge", 2, "transparent")
            .stdin(vconf("0.3.0", "").replace("transparent", "bridge")),
        vcase("no mode", 2, "transparent")
            .stdin(vconf("0.3.0", "").replace(r#""mode":"transparent","#, "")),
        vcase("no ipam", 7, "ipam.type").stdin(
            r#"{"cniVersion":"0.3.0","name":"azure","type":"azure-vnet","mode":"transparent"}"#,
        ),
        vcase("ipam.type is a path", 7, "invalid plugin type").stdin(
            vconf("0.3.0", "").replace(r#""type":"azure-vnet-ipam""#, r#""type":"../../bin/sh""#),
        ),
        vcase("IPAM binary missing", 100, "failed to find plugin")
            .stdin(vconf("0.3.0", "").replace("azure-vnet-ipam", "no-such-ipam")),
        vcase(
            "CNI_NETNS is a plain file",
            999,
            "is not a network namespace",
        )
        .env("CNI_NETNS", Some("/etc/hostname")),
        vcase("CNI_NETNS does not exist", 3, "no-such-netns")
            .env("CNI_NETNS", Some("/var/run/netns/no-such-netns")),
        vcase("azure-vnet.json garbage", 11, "corrupt")
            .file("azure-vnet.json", State::Bytes(b"\x7fELF garbage".to_vec())),
        vcase("upstream azure-vnet.json truncated", 11, "corrupt")
            .file("azure-vnet.json", State::Bytes(truncated.into_bytes())),
        vcase("azure-vnet.json of the wrong shape", 11, "corrupt").file(
            "azure-vnet.json",
            State::Bytes(
                br#"{"Network":{"ExternalInterfaces":{"eth0":{"Networks":[]}}}}"#.to_vec(),
            ),
        ),
        vcase("azure-vnet.json is a symlink", 5, "symlink").file("azure-vnet.json", State::Symlink),
        vcase("DEL with azure-vnet.json garbage", 11, "corrupt")
            .env("CNI_COMMAND", Some("DEL"))
            .file("azure-vnet.json", State::Bytes(b"{\"Network\": {".to_vec())),
        vcase("azure-vnet-ipam.json corrupt", 11, "corrupt")
            .file("azure-vnet-ipam.json", State::Bytes(b"[]]".to_vec())),
        vcase(
            "upstream IPAM file with every address in use",
            100,
            "No available addresses",
        )
        .file("azure-vnet-ipam.json", State::Bytes(FULL_STATE.into()))
        .file("azure-vnet.json", State::Bytes(UPSTREAM_VNET.into())),
        vcase(
            "wireserver answers garbage",
            100,
            "invalid NMAgent interface XML",
        )
        .stdin(wire("garbage"))
        .env("AZURE_VNET_WIRESERVER_URL", wire_env("garbage").as_deref()),
        vcase("wireserver answers HTTP 500", 100, "HTTP status 500")
            .stdin(wire("status500"))
            .env(
                "AZURE_VNET_WIRESERVER_URL",
                wire_env("status500").as_deref(),
            ),
        vcase("wireserver answer is huge", 100, "larger than")
            .stdin(wire("huge"))
            .env("AZURE_VNET_WIRESERVER_URL", wire_env("huge").as_deref()),
        vcase(
            "wireserver answer is deeply nested",
            100,
            "no available address pools",
        )
        .stdin(wire("deep"))
        .env("AZURE_VNET_WIRESERVER_URL", wire_env("deep").as_deref()),
        vcase("wireserver answers too slowly", 100, "wireserver")
            .stdin(wire("slow"))
            .env("AZURE_VNET_WIRESERVER_URL", wire_env("slow").as_deref()),
        VCase {
            lock: Some("azure-vnet"),
            ..vcase("veth name lock held", 11, "timed out locking store")
        },
    ]
}

fn run_vnet_cases(tb: &Testbed, cases: Vec<VCase>) {
    let (pod_ns, pod_path) = tb.pod("badvnet");
    let mut failures = Vec::new();
    for (i, c) in cases.into_iter().enumerate() {
        let run = TempDir::new("vbad");
        for (name, st) in &c.files {
            let p = run.join(name);
            match st {
                State::None => {}
                State::Bytes(b) => std::fs::write(&p, b).unwrap(),
                State::Symlink => {
                    std::fs::write(run.join("elsewhere.json"), UPSTREAM_VNET).unwrap();
                    std::os::unix::fs::symlink(run.join("elsewhere.json"), &p).unwrap();
                }
            }
        }
        let cid = format!("vbad-{i}");
        let _lock = c.lock.map(|_| {
            let hv = host_veth("default.badpod");
            // The stripe lock azure-vnet takes on the host veth name (`veth-<2 hex>.lock`).
            hold_lock(
                &run.join("azure-vnet")
                    .join(format!("veth-{}.lock", &hv[3..5])),
            )
        });
        let mut env = with(
            tb.env("a"),
            &[
                ("CNI_COMMAND".into(), "ADD".into()),
                ("CNI_CONTAINERID".into(), cid.clone()),
                ("CNI_NETNS".into(), pod_path.display().to_string()),
                ("CNI_IFNAME".into(), "eth0".into()),
                ("CNI_PATH".into(), cni_path()),
                kubelet_args("default", "badpod", &cid),
                (
                    "AZURE_VNET_RUN_DIR".into(),
                    run.path().display().to_string(),
                ),
                ("AZURE_VNET_LOCK_TIMEOUT_MS".into(), "200".into()),
            ],
        );
        for (k, v) in &c.env {
            env.retain(|(ek, _)| ek != k);
            if let Some(v) = v {
                env.push((k.to_string(), v.clone()));
            }
        }
        let before = (
            snapshot(run.path()),
            links(&tb.node("a")),
            routes(&tb.node("a")),
            links(&pod_ns),
        );
        let out = run_plugin(Some(&tb.node("a")), &vnet_bin(), &env, c.stdin.as_bytes());
        let after = (
            snapshot(run.path()),
            links(&tb.node("a")),
            routes(&tb.node("a")),
            links(&pod_ns),
        );
        let verdict = (|| -> Result<(), String> {
            if out.code != 1 {
                return Err(format!("exit {} (stdout {:?})", out.code, out.stdout));
            }
            let v: serde_json::Value = serde_json::from_str(&out.stdout)
                .map_err(|e| format!("stdout not JSON: {e}: {:?}", out.stdout))?;
            if v["code"] != c.code {
                return Err(format!("code {} != {}: {v}", v["code"], c.code));
            }
            let msg = v["msg"].as_str().unwrap_or("");
            if !msg.contains(c.words) {
                return Err(format!("msg lacks {:?}: {msg}", c.words));
            }
            if before.0 != after.0 {
                return Err(format!(
                    "run dir changed: {:?} -> {:?}",
                    before.0.keys(),
                    after.0.keys()
                ));
            }
            if before.1 != after.1 || before.2 != after.2 || before.3 != after.3 {
                return Err("the network changed".into());
            }
            if out.stderr.contains("panicked") {
                return Err(format!("panicked: {}", out.stderr));
            }
            Ok(())
        })();
        if let Err(e) = verdict {
            failures.push(format!("{}: {e}", c.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn azure_vnet_bad_input_table() {
    let tb = Testbed::up(2);
    let modes = ["garbage", "status500", "huge", "deep", "slow"];
    let servers: Vec<Wireserver> = modes
        .iter()
        .map(|m| Wireserver::start(&tb.node("a"), &tb.nmagent_xml("a"), m))
        .collect();
    let urls: BTreeMap<&str, String> = modes
        .iter()
        .zip(&servers)
        .map(|(m, w)| (*m, w.url.clone()))
        .collect();
    let cases = vnet_cases(&urls);
    assert!(
        cases.len() + ipam_cases().len() >= 40,
        "at least 40 cases across both binaries"
    );
    run_vnet_cases(&tb, cases);
}
