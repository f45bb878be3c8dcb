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
