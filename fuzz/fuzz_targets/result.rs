//! CNI results (an IPAM plugin's output, a `prevResult`) at every version: parsing never
//! panics, and a parsed result printed at any version parses back to what that version keeps.
#![no_main]

use azure_vnet_cni::internals::result::CniResult;
use azure_vnet_cni::internals::version::Version;
use libfuzzer_sys::fuzz_target;

/// What printing `r` at `v` keeps (see the conversion unit tests in src/cni/result.rs).
fn kept_at(r: &CniResult, v: Version) -> CniResult {
    let mut r = r.clone();
    if v < Version::V1_1_0 {
        for i in &mut r.interfaces {
            i.mtu = None;
            i.socket_path = None;
            i.pci_id = None;
        }
        for rt in &mut r.routes {
            rt.mtu = None;
            rt.advmss = None;
            rt.priority = None;
            rt.table = None;
            rt.scope = None;
        }
    }
    if v.is_legacy() {
        // One address per family (ip4, then ip6), each with the routes of its family.
        r.interfaces.clear();
        let mut ips = Vec::new();
        let mut routes = Vec::new();
        for v4 in [true, false] {
            if let Some(ip) = r.ips.iter().find(|ip| ip.address.is_ipv4() == v4) {
                let mut ip = ip.clone();
                ip.interface = None;
                ips.push(ip);
                routes.extend(r.routes.iter().filter(|rt| rt.dst.is_ipv4() == v4).cloned());
            }
        }
        r.ips = ips;
        r.routes = routes;
    }
    r
}

fuzz_target!(|data: &[u8]| {
    for v in Version::ALL {
        let Ok(r) = CniResult::from_slice(data, v) else {
            continue;
        };
        for out in Version::ALL {
            let bytes = r.to_bytes(out);
            let back = match CniResult::from_slice(&bytes, out) {
                Ok(b) => b,
                Err(e) => panic!(
                    "{v} -> {out}: own output does not parse: {e}\n{}",
                    String::from_utf8_lossy(&bytes)
                ),
            };
            assert_eq!(
                back,
                kept_at(&r, out),
                "{v} -> {out}\n{}",
                String::from_utf8_lossy(&bytes)
            );
            let value: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
            assert_eq!(CniResult::from_value(&value, out).ok(), Some(back));
        }
    }
});
