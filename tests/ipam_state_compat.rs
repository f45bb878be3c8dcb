//! A state file written by upstream (with fields we do not model) loads, and our rewrite
//! keeps every field.

mod common;
use common::*;

use serde_json::{json, Value};

const UPSTREAM_STATE: &str = r#"{
	"IPAM": {
		"Version": "v1.6.21",
		"TimeStamp": "2026-08-20T19:46:13.987654321Z",
		"FutureManagerField": {"a": 1},
		"AddressSpaces": {
			"local": {
				"Id": "local",
				"Scope": 0,
				"Pools": {
					"10.224.0.0/16": {
						"Id": "10.224.0.0/16",
						"IfName": "eth0",
						"Subnet": {"IP": "10.224.0.0", "Mask": "//8AAA=="},
						"Gateway": "10.224.0.1",
						"Addresses": {
							"10.224.0.17": {"ID": "ee86fb8b1d6c4e0f8b7a2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071", "Addr": "10.224.0.17", "InUse": true, "Epoch": 3},
							"10.224.0.5": {"ID": "", "Addr": "10.224.0.5", "InUse": false}
						},
						"IsIPv6": false,
						"Priority": 0,
						"RefCount": 1,
						"FuturePoolField": [1, 2]
					}
				}
			}
		}
	},
	"FutureTopLevel": "kept"
}"#;

#[test]
fn upstream_state_with_unknown_fields_loads_and_survives_a_rewrite() {
    let tb = Testbed::up(30);
    let path = tb.run_dir("a").join("azure-vnet-ipam.json");
    std::fs::write(&path, UPSTREAM_STATE).unwrap();

    let env = with(
        tb.env("a"),
        &cni_env("ADD", "new-container", "/var/run/netns/x", "eth0"),
    );
    let r = run_plugin(
        Some(&tb.node("a")),
        &ipam_bin(),
        &env,
        ipam_conf("0.3.0", r#","environment":"file""#).as_bytes(),
    )
    .succeeded();
    let ip = r["ips"][0]["address"].as_str().unwrap().to_string();
    assert_ne!(ip, "10.224.0.17/16", "upstream's allocation is respected");

    let after: Value = read_json(&path);
    assert_eq!(after["FutureTopLevel"], "kept");
    assert_eq!(after["IPAM"]["FutureManagerField"], json!({"a": 1}));
    let pool = &after["IPAM"]["AddressSpaces"]["local"]["Pools"]["10.224.0.0/16"];
    assert_eq!(pool["FuturePoolField"], json!([1, 2]));
    assert_eq!(pool["Addresses"]["10.224.0.17"]["Epoch"], 3);
    assert_eq!(pool["Addresses"]["10.224.0.17"]["InUse"], true);
    assert_ne!(
        after["IPAM"]["TimeStamp"], "2026-08-20T19:46:13.987654321Z",
        "re-stamped"
    );

    // Upstream's container keeps its address through a DEL of someone else, and is released
    // by its own DEL (by container ID).
    let del = |cid: &str| {
        let env = with(tb.env("a"), &cni_env("DEL", cid, "", "eth0"));
        run_plugin(
            Some(&tb.node("a")),
            &ipam_bin(),
            &env,
            ipam_conf("0.3.0", r#","environment":"file""#).as_bytes(),
        )
        .succeeded();
    };
    del("someone-else");
    assert_eq!(
        read_json(&path)["IPAM"]["AddressSpaces"]["local"]["Pools"]["10.224.0.0/16"]["Addresses"]
            ["10.224.0.17"]["InUse"],
        true
    );
    del("ee86fb8b1d6c4e0f8b7a2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071");
    assert_eq!(
        read_json(&path)["IPAM"]["AddressSpaces"]["local"]["Pools"]["10.224.0.0/16"]["Addresses"]
            ["10.224.0.17"]["InUse"],
        false
    );
}
