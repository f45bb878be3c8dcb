//! Hostile but valid names through ADD's record path and DEL's lookup (`add_then_find`): any
//! CNI_IFNAME, CNI_CONTAINERID, K8S_POD_NAME and K8S_POD_NAMESPACE the environment validation
//! accepts is recorded in `azure-vnet.json` so that the file loads again and the record is
//! found again, equal to what was written, next to every record the file already held. Found
//! a defect before it existed: an unescaped CNI_IFNAME in a spliced record (code 11 for every
//! later DEL on the node).
//!
//! Input: the fields separated by NUL bytes: ifname, container ID, pod namespace, pod name,
//! and the state file's text (empty: no file).
#![no_main]

use std::collections::HashMap;

use azure_vnet_cni::internals::add_then_find;
use libfuzzer_sys::fuzz_target;

const CONF: &[u8] = br#"{"cniVersion":"1.1.0","name":"azure","type":"azure-vnet","mode":"transparent","ipam":{"type":"azure-vnet-ipam"}}"#;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(5, |b| *b == 0);
    let mut field = || parts.next().unwrap_or_default();
    let (ifname, cid, ns, pod) = (field(), field(), field(), field());
    let state = field();
    // The process boundary refuses CNI_* values that are not UTF-8 (lib.rs).
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
    let (Some(ifname), Some(cid), Some(ns), Some(pod)) =
        (text(ifname), text(cid), text(ns), text(pod))
    else {
        return;
    };
    let vars: HashMap<String, String> = [
        ("CNI_COMMAND", "ADD".to_string()),
        ("CNI_CONTAINERID", cid),
        ("CNI_NETNS", "/var/run/netns/fuzz".to_string()),
        ("CNI_IFNAME", ifname),
        ("CNI_PATH", "/opt/cni/bin".to_string()),
        (
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={pod}"),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if let Err(e) = add_then_find(state, &vars, CONF) {
        panic!("{e}");
    }
});
