//! CNI spec versions: which ones we speak, ordering, and the VERSION command's answer.

use crate::error::{Code, Error, Result};

/// Every CNI version both plugins accept, oldest first. Upstream stops at 1.0.0 (spec B.1.3);
/// we add 1.1.0 for GC and STATUS (spec A.1).
pub const SUPPORTED: [&str; 7] = [
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// What a network config without `cniVersion` means: upstream's `ParseNetworkConfig` default.
pub const DEFAULT_CONFIG_VERSION: Version = Version::V0_2_0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    V0_1_0,
    V0_2_0,
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl Version {
    pub const ALL: [Version; 7] = [
        Version::V0_1_0,
        Version::V0_2_0,
        Version::V0_3_0,
        Version::V0_3_1,
        Version::V0_4_0,
        Version::V1_0_0,
        Version::V1_1_0,
    ];

    pub fn parse(s: &str) -> Result<Version> {
        Version::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                Error::new(
                    Code::IncompatibleVersion,
                    format!(
                        "incompatible CNI versions: config is {s:?}, plugin supports {:?}",
                        SUPPORTED
                    ),
                )
            })
    }

    pub fn as_str(self) -> &'static str {
        SUPPORTED[self as usize]
    }

    /// 0.1.0 and 0.2.0 results use the legacy `ip4`/`ip6` shape.
    pub fn is_legacy(self) -> bool {
        self < Version::V0_3_0
    }

    /// 0.3.x and 0.4.0 results carry `"version": "4"|"6"` on each IP.
    pub fn ips_carry_version(self) -> bool {
        (Version::V0_3_0..Version::V1_0_0).contains(&self)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The VERSION command's output, as libcni prints it (compact JSON and a newline).
pub fn version_info() -> String {
    let info = serde_json::json!({
        "cniVersion": Version::V1_1_0.as_str(),
        "supportedVersions": SUPPORTED,
    });
    format!("{info}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let table: &[(&str, Option<Version>)] = &[
            ("0.1.0", Some(Version::V0_1_0)),
            ("0.2.0", Some(Version::V0_2_0)),
            ("0.3.0", Some(Version::V0_3_0)),
            ("0.3.1", Some(Version::V0_3_1)),
            ("0.4.0", Some(Version::V0_4_0)),
            ("1.0.0", Some(Version::V1_0_0)),
            ("1.1.0", Some(Version::V1_1_0)),
            ("1.2.0", None),
            ("0.5.0", None),
            ("1.0", None),
            ("", None),
            ("v1.0.0", None),
        ];
        for (s, want) in table {
            match (Version::parse(s), want) {
                (Ok(v), Some(w)) => assert_eq!(v, *w, "{s}"),
                (Err(e), None) => assert_eq!(e.code(), Code::IncompatibleVersion, "{s}"),
                (got, want) => panic!("{s}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn ordering_and_shapes() {
        assert!(Version::V0_2_0.is_legacy());
        assert!(!Version::V0_3_0.is_legacy());
        assert!(Version::V0_4_0.ips_carry_version());
        assert!(!Version::V1_0_0.ips_carry_version());
        assert!(Version::V1_1_0 > Version::V1_0_0);
        for v in Version::ALL {
            assert_eq!(Version::parse(v.as_str()).unwrap(), v);
        }
    }

    #[test]
    fn version_info_lists_every_version() {
        let v: serde_json::Value = serde_json::from_str(&version_info()).unwrap();
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(v["supportedVersions"].as_array().unwrap().len(), 7);
    }
}
