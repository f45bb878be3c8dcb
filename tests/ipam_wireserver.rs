//! The wireserver source, against a fake wireserver on the node namespace's loopback that
//! serves the real NMAgent XML over real HTTP (never 168.63.129.16).

mod common;
use common::*;

use serde_json::Value;

fn add(tb: &Testbed, url: &str, cid: &str) -> PluginOut {
    let env = with(
        with(
            tb.env("a"),
            &cni_env("ADD", cid, "/var/run/netns/none", "eth0"),
        ),
        &[("AZURE_VNET_WIRESERVER_URL".into(), url.into())],
    );
    run_plugin(
        Some(&tb.node("a")),
        &ipam_bin(),
        &env,
        ipam_conf("0.3.0", "").as_bytes(),
    )
}

#[test]
fn allocates_from_the_wireserver_and_falls_back_to_saved_state_when_it_is_down_or_garbled() {
    let tb = Testbed::up(30);
    let ws = Wireserver::start(&tb.node("a"), &tb.nmagent_xml("a"), "ok");
    let r = add(&tb, &ws.url, "c-ws-1").succeeded();
    assert_eq!(r["ips"][0]["address"], "10.224.0.5/16");
    assert_eq!(r["ips"][0]["gateway"], "10.224.0.1");
    assert_eq!(
        r["routes"][0],
        serde_json::json!({"dst":"0.0.0.0/0","gw":"10.224.0.1"})
    );
    let pool = &tb.ipam_state("a")["IPAM"]["AddressSpaces"]["local"]["Pools"]["10.224.0.0/16"];
    assert_eq!(pool["IfName"], "eth0");
    assert_eq!(
        pool["Subnet"],
        serde_json::json!({"IP":"10.224.0.0","Mask":"//8AAA=="})
    );
    assert_eq!(pool["Addresses"].as_object().unwrap().len(), 30);
    let url = ws.url.clone();
    drop(ws);

    // Down: the saved state still hands out addresses.
    let r = add(&tb, &url, "c-ws-2").succeeded();
    assert_eq!(r["ips"][0]["address"], "10.224.0.6/16");
    let log = std::fs::read_to_string(tb.log_dir("a").join("azure-vnet-ipam.log")).unwrap();
    assert!(log.contains("using the saved state"), "{log}");

    // Up but answering garbage: an answer that does not parse counts as none (it is parsed
    // only once its fingerprint differs from the merged one, after the first lock round).
    let ws = Wireserver::start(&tb.node("a"), &tb.nmagent_xml("a"), "garbage");
    let r = add(&tb, &ws.url, "c-ws-3").succeeded();
    assert_eq!(r["ips"][0]["address"], "10.224.0.7/16");
    let log = std::fs::read_to_string(tb.log_dir("a").join("azure-vnet-ipam.log")).unwrap();
    assert!(
        log.matches("using the saved state").count() == 2
            && log.contains("invalid NMAgent interface XML"),
        "{log}"
    );
    // And the saved pools were not touched by the garbage.
    let pool = &tb.ipam_state("a")["IPAM"]["AddressSpaces"]["local"]["Pools"]["10.224.0.0/16"];
    assert_eq!(pool["Addresses"].as_object().unwrap().len(), 30);
}

#[test]
fn bad_wireserver_answers_without_saved_state_are_clear_errors() {
    let tb = Testbed::up(5);
    // (mode, words the error must contain)
    let table = [
        ("garbage", "invalid NMAgent interface XML"),
        ("status500", "HTTP status 500"),
        ("huge", "larger than 1048576 bytes"),
    ];
    for (i, (mode, words)) in table.iter().enumerate() {
        let ws = Wireserver::start(&tb.node("a"), &tb.nmagent_xml("a"), mode);
        let out = add(&tb, &ws.url, &format!("c-bad-{i}"));
        let e = out.err(100);
        let msg = e["msg"].as_str().unwrap();
        assert!(msg.contains(words), "{mode}: {msg}");
        assert!(msg.contains("127.0.0.1"), "names the wireserver: {msg}");
        assert!(
            !tb.run_dir("a").join("azure-vnet-ipam.json").exists(),
            "{mode}: nothing written"
        );
    }
    // Nobody listening at all.
    let e = add(&tb, "http://127.0.0.1:9/machine/plugins", "c-bad-x").err(100);
    assert!(
        e["msg"].as_str().unwrap().contains("no address pools"),
        "{e}"
    );
}

#[test]
fn deeply_nested_answer_is_handled_without_crashing() {
    let tb = Testbed::up(5);
    let ws = Wireserver::start(&tb.node("a"), &tb.nmagent_xml("a"), "deep");
    // Valid XML with no NIC: no pools, so a clean error, not a stack overflow.
    let e = add(&tb, &ws.url, "c-deep").err(100);
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains("no available address pools"),
        "{e}"
    );
}

#[test]
fn unknown_nic_mac_gives_no_pools() {
    let tb = Testbed::up(5);
    let xml = tb.dir.join("other.xml");
    let text = std::fs::read_to_string(tb.nmagent_xml("a"))
        .unwrap()
        .replace("000D3A4B1C2D", "000D3AFFFFFF");
    std::fs::write(&xml, text).unwrap();
    let ws = Wireserver::start(&tb.node("a"), &xml, "ok");
    let e: Value = add(&tb, &ws.url, "c-mac").err(100);
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains("no available address pools"),
        "{e}"
    );
}
