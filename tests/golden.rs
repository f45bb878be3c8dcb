//! Golden test against the user's real AKS node (seed 003): pod default/nginx, its container
//! ID, IP 10.224.0.24 from the /16 pool. The endpoint record must equal the seed's field by
//! field, all but the MAC (the kernel picks the pod's); the IPAM record must equal the seed's.

mod common;
use common::*;

use serde_json::{json, Value};

const CID: &str = "ee86fb8be61987b83e1da1338b09fc0a83dcd12f9754455e668b16dc98f20f48";
const NETNS: &str = "cni-1770aa7f-262a-c2ad-1c19-0a376d016a78";

/// The seed's record, verbatim.
const SEED_ENDPOINT: &str = r#"{
        "Id": "ee86fb8b-eth0",
        "SandboxKey": "",
        "IfName": "azvc440f4556932",
        "HostIfName": "azvc440f455693",
        "MacAddress": "umCZaqGD",
        "InfraVnetIP": {
                "IP": "",
                "Mask": null
        },
        "LocalIP": "",
        "IPAddresses": [
                {
                        "IP": "10.224.0.24",
                        "Mask": "//8AAA=="
                }
        ],
        "Gateways": [
                "0.0.0.0"
        ],
        "DNS": {
                "Suffix": "",
                "Servers": [
                        "168.63.129.16"
                ],
                "Options": null
        },
        "Routes": [
                {
                        "Dst": {
                                "IP": "0.0.0.0",
                                "Mask": "AAAAAA=="
                        },
                        "Src": "",
                        "Gw": "10.224.0.1",
                        "Protocol": 0,
                        "DevName": "",
                        "Scope": 0,
                        "Priority": 0,
                        "Table": 0
                }
        ],
        "VlanID": 0,
        "EnableSnatOnHost": false,
        "EnableInfraVnet": false,
        "EnableMultitenancy": false,
        "AllowInboundFromHostToNC": false,
        "AllowInboundFromNCToHost": false,
        "NetworkContainerID": "",
        "NetworkNameSpace": "/var/run/netns/cni-1770aa7f-262a-c2ad-1c19-0a376d016a78",
        "ContainerID": "ee86fb8be61987b83e1da1338b09fc0a83dcd12f9754455e668b16dc98f20f48",
        "PODName": "nginx",
        "PODNameSpace": "default"
}"#;

const SEED_IPAM_RECORD: &str = r#"{
        "ID": "ee86fb8be61987b83e1da1338b09fc0a83dcd12f9754455e668b16dc98f20f48",
        "Addr": "10.224.0.24",
        "InUse": true
}"#;

/// The seed pod's namespace, under its real name; removed on Drop.
struct SeedNetns;
impl SeedNetns {
    fn new() -> SeedNetns {
        assert!(
            !std::path::Path::new(&format!("/var/run/netns/{NETNS}")).exists(),
            "/var/run/netns/{NETNS} already exists: another run is using it"
        );
        sh(&["ip", "netns", "add", NETNS]);
        SeedNetns
    }
}
impl Drop for SeedNetns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", NETNS])
            .status();
    }
}

#[test]
fn endpoint_and_ipam_records_equal_the_seed() {
    let tb = Testbed::up(30);
    // The node's wireserver lists one secondary IP, 10.224.0.24, as on the seed's node.
    let xml = tb.dir.join("golden.xml");
    std::fs::write(
        &xml,
        r#"<Interfaces><Interface MacAddress="000D3A4B1C2D" IsPrimary="true"><IPSubnet Prefix="10.224.0.0/16">
           <IPAddress Address="10.224.0.4" IsPrimary="true"/><IPAddress Address="10.224.0.24" IsPrimary="false"/>
           </IPSubnet></Interface></Interfaces>"#,
    )
    .unwrap();
    let ws = Wireserver::start(&tb.node("a"), &xml, "ok");
    let _ns = SeedNetns::new();
    let netns = format!("/var/run/netns/{NETNS}");

    // The seed conflist's azure-vnet entry, as libcni hands it to the plugin.
    let conf = r#"{"cniVersion":"0.3.0","name":"azure","type":"azure-vnet","mode":"transparent",
                   "ipsToRouteViaHost":["169.254.20.10"],"ipam":{"type":"azure-vnet-ipam"}}"#;
    let env = with(
        with(tb.env("a"), &cni_env("ADD", CID, &netns, "eth0")),
        &[
            ("AZURE_VNET_WIRESERVER_URL".into(), ws.url.clone()),
            kubelet_args("default", "nginx", CID),
        ],
    );
    let result = run_plugin(Some(&tb.node("a")), &vnet_bin(), &env, conf.as_bytes()).succeeded();
    assert_eq!(result["ips"][0]["address"], "10.224.0.24/16");

    let state = vnet_state(&tb, "a");
    let ours = &state["Network"]["ExternalInterfaces"]["eth0"]["Networks"]["azure"]["Endpoints"]
        ["ee86fb8b-eth0"];
    let seed: Value = serde_json::from_str(SEED_ENDPOINT).unwrap();
    let (ours_o, seed_o) = (ours.as_object().unwrap(), seed.as_object().unwrap());
    assert_eq!(
        ours_o.keys().collect::<Vec<_>>(),
        seed_o.keys().collect::<Vec<_>>(),
        "same fields"
    );
    for (k, want) in seed_o {
        if k == "MacAddress" {
            continue;
        }
        assert_eq!(&ours[k], want, "field {k}");
    }
    // The MAC recorded is the pod's eth0 MAC, in Go's base64.
    let mac = result["interfaces"][1]["mac"]
        .as_str()
        .unwrap()
        .replace(':', "");
    let bytes: Vec<u8> = (0..6)
        .map(|i| u8::from_str_radix(&mac[i * 2..i * 2 + 2], 16).unwrap())
        .collect();
    let link = ns_sh(NETNS, &["ip", "-o", "link", "show", "eth0"]);
    assert!(
        link.contains(result["interfaces"][1]["mac"].as_str().unwrap()),
        "{link}"
    );
    use base64::Engine;
    assert_eq!(
        ours["MacAddress"],
        base64::engine::general_purpose::STANDARD
            .encode(bytes)
            .as_str()
    );

    let ipam = tb.ipam_state("a");
    let rec = &ipam["IPAM"]["AddressSpaces"]["local"]["Pools"]["10.224.0.0/16"]["Addresses"]
        ["10.224.0.24"];
    assert_eq!(
        rec,
        &serde_json::from_str::<Value>(SEED_IPAM_RECORD).unwrap()
    );

    // And the record's text is what upstream writes: tab-indented, this field order.
    let text = std::fs::read_to_string(tb.run_dir("a").join("azure-vnet.json")).unwrap();
    let at = text.find("\"ee86fb8b-eth0\": {").unwrap();
    // Key order as it appears in the seed's text (serde_json's map would sort them).
    let seed_order: Vec<&str> = SEED_ENDPOINT
        .lines()
        .filter(|l| l.starts_with("        \"") && !l.starts_with("         "))
        .filter_map(|l| l.trim().strip_prefix('"')?.split('"').next())
        .collect();
    assert_eq!(seed_order.len(), 22);
    let order: Vec<usize> = seed_order
        .iter()
        .map(|k| text[at..].find(&format!("\"{k}\":")).unwrap())
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "fields in the seed's order"
    );
    assert_eq!(
        state["Network"]["ExternalInterfaces"]["eth0"]["MacAddress"],
        "AA06Sxwt"
    );
    assert_eq!(state["Network"]["CnsClient"], json!(null));

    let env = with(env, &[("CNI_COMMAND".into(), "DEL".into())]);
    run_plugin(Some(&tb.node("a")), &vnet_bin(), &env, conf.as_bytes()).succeeded();
    assert!(ips_in_use(&tb.ipam_state("a")).is_empty());
}
