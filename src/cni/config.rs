//! The network configuration on stdin. Typed where we use a field, and every other field kept
//! (`extra`) so nothing a user or another tool put there is lost when we pass it on.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::cni::result::Dns;
use crate::cni::version::{Version, DEFAULT_CONFIG_VERSION};
use crate::error::{invalid_config, Code, Error, Result};

/// Network configs are small; anything larger than this on stdin is refused before parsing.
pub const MAX_STDIN: usize = 1 << 20;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NetConf {
    #[serde(
        rename = "cniVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cni_version: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Host interface whose MTU the pod gets (else the one holding the pool's subnet); also a
    /// pool filter for the IPAM plugin (spec B.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<IpamConf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    /// Where the state files and the lock directory live (spec A.4; default `/var/run`).
    #[serde(rename = "runDir", default, skip_serializing_if = "Option::is_none")]
    pub run_dir: Option<PathBuf>,
    /// Where the log files go (spec A.4; default `/var/log`).
    #[serde(rename = "logDir", default, skip_serializing_if = "Option::is_none")]
    pub log_dir: Option<PathBuf>,
    /// `debug`, `info` (default), `warn`, `error` (upstream's field, which it ignores).
    #[serde(rename = "logLevel", default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// Rotate a log file at this size (default 5, upstream's).
    #[serde(
        rename = "logMaxSizeMB",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub log_max_size_mb: Option<u64>,
    /// Rotated files kept (default 8, upstream's).
    #[serde(
        rename = "logMaxBackups",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub log_max_backups: Option<u32>,
    #[serde(
        rename = "prevResult",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub prev_result: Option<Value>,
    /// CNI 1.1 GC: the attachments that must survive.
    #[serde(
        rename = "cni.dev/valid-attachments",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub valid_attachments: Option<Vec<Attachment>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IpamConf {
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    /// Address source: `azure` (default), `file` (also upstream's `fileIpam` and `mas`), `null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Pool (subnet CIDR) to allocate from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// Upstream's key (not `address`) for requesting or releasing one specific IP.
    #[serde(rename = "ipAddress", default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    #[serde(
        rename = "addressSpace",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub address_space: Option<String>,
    #[serde(
        rename = "wireserverUrl",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub wireserver_url: Option<String>,
    #[serde(
        rename = "interfacesFile",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub interfaces_file: Option<PathBuf>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    #[serde(default)]
    pub ifname: String,
}

/// A parsed config with its version, plus the original JSON (for delegation to IPAM).
#[derive(Debug, Clone)]
pub struct ParsedConf {
    pub conf: NetConf,
    pub version: Version,
    pub raw: Value,
}

impl ParsedConf {
    pub fn parse(stdin: &[u8]) -> Result<ParsedConf> {
        if stdin.len() > MAX_STDIN {
            return Err(Error::new(
                Code::Decode,
                format!("network config on stdin is larger than {} bytes", MAX_STDIN),
            ));
        }
        let raw: Value = serde_json::from_slice(stdin).map_err(|e| {
            Error::new(Code::Decode, format!("failed to parse network config: {e}"))
        })?;
        if !raw.is_object() {
            return Err(Error::new(
                Code::Decode,
                "failed to parse network config: not a JSON object",
            ));
        }
        if crate::encoding::has_raw_token(&raw) {
            return Err(invalid_config(format!(
                "invalid network config: the key {:?} is reserved",
                crate::encoding::SERDE_RAW_TOKEN
            )));
        }
        let conf: NetConf = serde_json::from_value(raw.clone())
            .map_err(|e| invalid_config(format!("invalid network config: {e}")))?;
        let version = match conf.cni_version.as_deref() {
            None => DEFAULT_CONFIG_VERSION,
            Some(v) => Version::parse(v)?,
        };
        Ok(ParsedConf { conf, version, raw })
    }

    /// libcni's `ValidateNetworkName`: the name becomes a state key, so it is restricted.
    pub fn validate_name(&self) -> Result<()> {
        let name = &self.conf.name;
        if name.is_empty() {
            return Err(invalid_config("missing network name"));
        }
        let ok = name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !ok {
            return Err(invalid_config(format!(
                "invalid network name {name:?}: must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"
            )));
        }
        Ok(())
    }

    pub fn ipam(&self) -> Result<&IpamConf> {
        self.conf
            .ipam
            .as_ref()
            .filter(|i| !i.plugin_type.is_empty())
            .ok_or_else(|| invalid_config("network config has no ipam.type"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_PLUGIN: &str = r#"{"cniVersion":"0.3.0","name":"azure","type":"azure-vnet","mode":"transparent",
        "ipsToRouteViaHost":["169.254.20.10"],"ipam":{"type":"azure-vnet-ipam"}}"#;

    #[test]
    fn seed_plugin_config_parses_and_keeps_unknown_fields() {
        let p = ParsedConf::parse(SEED_PLUGIN.as_bytes()).unwrap();
        assert_eq!(p.version, Version::V0_3_0);
        assert_eq!(p.conf.mode.as_deref(), Some("transparent"));
        assert_eq!(p.ipam().unwrap().plugin_type, "azure-vnet-ipam");
        assert_eq!(p.conf.extra["ipsToRouteViaHost"][0], "169.254.20.10");
        let back = serde_json::to_value(&p.conf).unwrap();
        assert_eq!(back, p.raw, "a round trip keeps every field");
    }

    #[test]
    fn parse_table() {
        // (stdin, expected error code or None)
        let big = format!(r#"{{"name":"n","pad":"{}"}}"#, "x".repeat(MAX_STDIN));
        let table: Vec<(&str, Option<Code>)> = vec![
            (SEED_PLUGIN, None),
            (r#"{"name":"n"}"#, None),
            (
                r#"{"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}"#,
                None,
            ),
            ("", Some(Code::Decode)),
            ("{", Some(Code::Decode)),
            ("[1,2]", Some(Code::Decode)),
            ("null", Some(Code::Decode)),
            (r#"{"name":5}"#, Some(Code::InvalidConfig)),
            (r#"{"name":"n","ipam":"x"}"#, Some(Code::InvalidConfig)),
            (
                r#"{"name":"n","cniVersion":"9.9.9"}"#,
                Some(Code::IncompatibleVersion),
            ),
            (r#"{"name":"n","cniVersion":7}"#, Some(Code::InvalidConfig)),
            (&big, Some(Code::Decode)),
            // Found by fuzzing: sorted first when we pass the config on, this key would make
            // serde_json read the object as raw JSON (here "n.2", which does not parse).
            (
                r#"{"name":"n","i":[{"n":"","$serde_json::private::RawValue":"n.2"}]}"#,
                Some(Code::InvalidConfig),
            ),
            (
                r#"{"name":"n","prevResult":{"ips":[],"\u0024serde_json::private::RawValue":1}}"#,
                Some(Code::InvalidConfig),
            ),
        ];
        for (input, want) in table {
            let got = ParsedConf::parse(input.as_bytes());
            match (got, want) {
                (Ok(_), None) => {}
                (Err(e), Some(code)) => assert_eq!(e.code(), code, "{:.60}: {e}", input),
                (got, want) => panic!("{:.60}: got {:?}, want {want:?}", input, got.map(|_| ())),
            }
        }
    }

    #[test]
    fn numbers_survive_the_trip_to_the_ipam_plugin() {
        // Found by fuzzing (fuzz/fuzz_targets/config.rs): serde_json's default float parser
        // may be one ULP off, so a number we printed read back as another one (in the config
        // we hand to IPAM, and in unknown state-file fields). Cargo.toml enables
        // `float_roundtrip`; Go's encoding/json, like it, parses floats exactly.
        for num in [
            "1.8446742477300954e20",
            "184467424773009551615",
            "2.2250738585072011e-308",
            "5e-324",
            "1.7976931348623157e308",
            "0.1",
            "-0",
            "18446744073709551615",
            "-9223372036854775808",
        ] {
            let p = ParsedConf::parse(format!(r#"{{"name":"n","x":[{num}]}}"#).as_bytes()).unwrap();
            let sent = serde_json::to_vec(&p.raw).unwrap();
            let got = ParsedConf::parse(&sent).unwrap();
            assert_eq!(got.raw, p.raw, "{num} came back as {}", got.raw["x"][0]);
            let direct: f64 = num.parse().unwrap();
            assert_eq!(p.raw["x"][0].as_f64(), Some(direct), "{num} parsed exactly");
        }
    }

    #[test]
    fn missing_version_means_020() {
        let p = ParsedConf::parse(br#"{"name":"n"}"#).unwrap();
        assert_eq!(p.version, Version::V0_2_0);
    }

    #[test]
    fn name_validation_table() {
        for (name, ok) in [
            ("azure", true),
            ("a.b-c_d", true),
            ("", false),
            ("../x", false),
            ("-a", false),
            ("a b", false),
        ] {
            let p = ParsedConf::parse(format!(r#"{{"name":{name:?}}}"#).as_bytes()).unwrap();
            assert_eq!(p.validate_name().is_ok(), ok, "{name:?}");
        }
    }
}
