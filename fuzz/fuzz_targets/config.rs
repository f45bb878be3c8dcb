//! The network config on stdin (`ParsedConf::parse`) and everything derived from it before
//! any I/O: name validation, the ipam section, the settings. Never panics; and the config as
//! azure-vnet hands it to the IPAM plugin (the raw JSON, `ipam.ipAddress` set, re-serialized)
//! parses again to the same config.
#![no_main]

use std::collections::HashMap;

use azure_vnet_cni::internals::config::{ParsedConf, MAX_STDIN};
use azure_vnet_cni::internals::settings::Settings;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = ParsedConf::parse(data) else {
        return;
    };
    let name_ok = p.validate_name().is_ok();
    let ipam_type = p.ipam().ok().map(|i| i.plugin_type.clone());
    let s = Settings::resolve(Some(&p.conf), &HashMap::new());
    let _ = s.lock_dir();

    // What azure-vnet's ipam_stdin() does before exec'ing the IPAM plugin.
    let mut raw = p.raw.clone();
    let has_ipam = match raw.get_mut("ipam").and_then(Value::as_object_mut) {
        Some(ipam) => {
            ipam.insert("ipAddress".into(), Value::from("10.224.0.5"));
            true
        }
        None => false,
    };
    let stdin = serde_json::to_vec(&raw).expect("a parsed config serializes");
    if stdin.len() > MAX_STDIN {
        return;
    }
    let q = ParsedConf::parse(&stdin).expect("the delegated config parses");
    assert_eq!(q.version, p.version);
    assert_eq!(q.conf.name, p.conf.name);
    assert_eq!(q.validate_name().is_ok(), name_ok);
    assert_eq!(q.ipam().ok().map(|i| i.plugin_type.clone()), ipam_type);
    if has_ipam {
        let ipam = q.conf.ipam.as_ref().expect("ipam kept");
        assert_eq!(ipam.ip_address.as_deref(), Some("10.224.0.5"));
    } else {
        assert_eq!(
            q.raw, p.raw,
            "the config survives the trip to the IPAM plugin"
        );
    }
    assert_eq!(Settings::resolve(Some(&q.conf), &HashMap::new()), s);
});
