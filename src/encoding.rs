//! Go `encoding/json` shapes used by upstream's state files (spec B.4.1): IPs as strings (`""`
//! for nil), `[]byte` (masks, MACs) as standard base64 (`null` for nil), `net.IPNet` as
//! `{"IP","Mask"}`, and `time.Time` as RFC 3339 with trimmed nanoseconds.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use ipnetwork::IpNetwork;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Go `net.IP`: `""` when nil.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoIp(pub Option<IpAddr>);

impl GoIp {
    pub fn some(ip: IpAddr) -> GoIp {
        GoIp(Some(ip))
    }
    pub fn unspecified_v4() -> GoIp {
        GoIp(Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)))
    }
    pub fn unspecified_v6() -> GoIp {
        GoIp(Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED)))
    }
}

impl Serialize for GoIp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(ip) => s.collect_str(&ip),
            None => s.serialize_str(""),
        }
    }
}

impl<'de> Deserialize<'de> for GoIp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<GoIp, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = GoIp;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an IP address string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<GoIp, E> {
                if s.is_empty() {
                    return Ok(GoIp(None));
                }
                s.parse()
                    .map(|ip| GoIp(Some(ip)))
                    .map_err(|_| E::custom(format!("invalid IP address {s:?}")))
            }
            fn visit_unit<E: de::Error>(self) -> Result<GoIp, E> {
                Ok(GoIp(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// Go `[]byte` (`net.IPMask`, `net.HardwareAddr`): standard base64, `null` when nil.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GoBytes(pub Option<Vec<u8>>);

impl Serialize for GoBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(b) => s.serialize_str(&B64.encode(b)),
            None => s.serialize_none(),
        }
    }
}

impl<'de> Deserialize<'de> for GoBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<GoBytes, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        match s {
            None => Ok(GoBytes(None)),
            Some(s) => B64
                .decode(s.as_bytes())
                .map(|b| GoBytes(Some(b)))
                .map_err(|e| de::Error::custom(format!("invalid base64 {s:?}: {e}"))),
        }
    }
}

/// Go `net.IPNet`: `{"IP": "10.224.0.0", "Mask": "//8AAA=="}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoIpNet {
    #[serde(rename = "IP", default)]
    pub ip: GoIp,
    #[serde(rename = "Mask", default)]
    pub mask: GoBytes,
}

impl GoIpNet {
    /// The zero value (`{"IP":"","Mask":null}`), e.g. an endpoint's unused `InfraVnetIP`.
    pub fn empty() -> GoIpNet {
        GoIpNet::default()
    }

    /// `ip` with the mask of `prefix` (host bits kept, as Go stores endpoint addresses).
    pub fn new(ip: IpAddr, prefix: u8) -> GoIpNet {
        GoIpNet {
            ip: GoIp(Some(ip)),
            mask: GoBytes(Some(prefix_to_mask(ip.is_ipv4(), prefix))),
        }
    }

    pub fn from_network(net: &IpNetwork) -> GoIpNet {
        GoIpNet::new(net.ip(), net.prefix())
    }

    /// Back to an `IpNetwork` (keeping the IP as stored); `None` for the zero value or an
    /// invalid mask.
    pub fn to_network(&self) -> Option<IpNetwork> {
        let ip = self.ip.0?;
        let mask = self.mask.0.as_deref()?;
        let prefix = mask_to_prefix(ip.is_ipv4(), mask)?;
        IpNetwork::new(ip, prefix).ok()
    }
}

/// The subnet an address with its prefix length belongs to (`10.224.0.17/16` ->
/// `10.224.0.0/16`).
pub fn subnet_of(net: IpNetwork) -> IpNetwork {
    // The prefix comes from a valid IpNetwork, so this cannot fail.
    IpNetwork::new(net.network(), net.prefix()).unwrap_or(net)
}

/// `prefix` as Go's `net.CIDRMask` bytes: 4 bytes for IPv4, 16 for IPv6.
pub fn prefix_to_mask(v4: bool, prefix: u8) -> Vec<u8> {
    let len = if v4 { 4 } else { 16 };
    let bits = u32::from(prefix).min(len as u32 * 8);
    (0..len)
        .map(|i| {
            let used = bits.saturating_sub(i as u32 * 8).min(8);
            if used == 0 {
                0
            } else {
                (0xffu16 << (8 - used)) as u8
            }
        })
        .collect()
}

/// A contiguous mask back to its prefix length. Accepts Go's 16-byte form of an IPv4 mask.
pub fn mask_to_prefix(v4: bool, mask: &[u8]) -> Option<u8> {
    let mask = match (v4, mask.len()) {
        (true, 4) | (false, 16) => mask,
        (true, 16) if mask[..12].iter().all(|b| *b == 0xff) => &mask[12..],
        _ => return None,
    };
    let mut prefix = 0u8;
    let mut ended = false;
    for b in mask {
        for bit in (0..8).rev() {
            let set = b & (1 << bit) != 0;
            match (set, ended) {
                (true, false) => prefix += 1,
                (false, _) => ended = true,
                (true, true) => return None,
            }
        }
    }
    Some(prefix)
}

/// `aa:bb:cc:dd:ee:ff`
pub fn mac_to_string(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A MAC written with or without `:`/`-` separators, any case (`000D3A4B1C2D`,
/// `00:0d:3a:4b:1c:2d`), as the NMAgent XML and interfaces.json spell it.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let hex: String = s.chars().filter(|c| *c != ':' && *c != '-').collect();
    if hex.len() != 12 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 6];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

/// serde_json, with the `raw_value` feature this crate uses, reads a JSON object whose *first*
/// key is this private token as embedded raw JSON, not as an object. We write map keys sorted,
/// so an object that holds the token as another key would read back differently (or not at
/// all) after we rewrite it: such input is refused (found by fuzzing, fuzz/fuzz_targets/config.rs).
pub const SERDE_RAW_TOKEN: &str = "$serde_json::private::RawValue";

/// Whether some object in `v` has the key [`SERDE_RAW_TOKEN`] (iterative: any depth).
pub fn has_raw_token(v: &serde_json::Value) -> bool {
    let mut todo = vec![v];
    while let Some(v) = todo.pop() {
        match v {
            serde_json::Value::Object(m) => {
                if m.contains_key(SERDE_RAW_TOKEN) {
                    return true;
                }
                todo.extend(m.values());
            }
            serde_json::Value::Array(a) => todo.extend(a),
            _ => {}
        }
    }
    false
}

/// Go's `time.Time` JSON form (RFC 3339, nanoseconds with trailing zeros trimmed), in UTC.
pub fn rfc3339_nano(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, day) = civil_from_days(days);
    let (hh, mm, ss) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let mut s = format!("{y:04}-{m:02}-{day:02}T{hh:02}:{mm:02}:{ss:02}");
    let nanos = d.subsec_nanos();
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Days since 1970-01-01 to (year, month, day): Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn masks_as_go_writes_them() {
        // (v4, prefix, base64) from spec B.4.1 and Go's net.CIDRMask.
        let table = [
            (true, 16, "//8AAA=="),
            (true, 0, "AAAAAA=="),
            (true, 32, "/////w=="),
            (true, 24, "////AA=="),
            (true, 28, "////8A=="),
            (false, 64, "//////////8AAAAAAAAAAA=="),
        ];
        for (v4, prefix, b64) in table {
            let mask = prefix_to_mask(v4, prefix);
            assert_eq!(B64.encode(&mask), b64, "/{prefix}");
            assert_eq!(mask_to_prefix(v4, &mask), Some(prefix), "/{prefix}");
        }
        assert_eq!(
            mask_to_prefix(true, &[255, 0, 255, 0]),
            None,
            "non-contiguous"
        );
        assert_eq!(mask_to_prefix(true, &[255, 255]), None, "short");
        let mut v4in16 = vec![0xff; 12];
        v4in16.extend([255, 255, 0, 0]);
        assert_eq!(mask_to_prefix(true, &v4in16), Some(16));
    }

    #[test]
    fn macs_as_go_writes_them() {
        // Spec B.4.2: 00:0d:3a:4b:1c:2d -> "AA06Sxwt"; the seed's pod MAC "umCZaqGD".
        let mac = parse_mac("000D3A4B1C2D").unwrap();
        assert_eq!(B64.encode(mac), "AA06Sxwt");
        assert_eq!(mac_to_string(&mac), "00:0d:3a:4b:1c:2d");
        assert_eq!(parse_mac("00:0d:3a:4b:1c:2d"), Some(mac));
        assert_eq!(parse_mac("00-0D-3A-4B-1C-2D"), Some(mac));
        let seed = B64.decode("umCZaqGD").unwrap();
        assert_eq!(mac_to_string(&seed), "ba:60:99:6a:a1:83");
        for bad in [
            "",
            "000D3A4B1C2",
            "000D3A4B1C2DX",
            "zz0D3A4B1C2D",
            "ä0D3A4B1C2D",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }

    #[test]
    fn ipnet_round_trip() {
        let n = GoIpNet::new("10.224.0.24".parse().unwrap(), 16);
        let text = serde_json::to_string(&n).unwrap();
        assert_eq!(text, r#"{"IP":"10.224.0.24","Mask":"//8AAA=="}"#);
        let back: GoIpNet = serde_json::from_str(&text).unwrap();
        assert_eq!(back.to_network().unwrap().to_string(), "10.224.0.24/16");
        let empty: GoIpNet = serde_json::from_str(r#"{"IP":"","Mask":null}"#).unwrap();
        assert_eq!(empty, GoIpNet::empty());
        assert_eq!(
            serde_json::to_string(&empty).unwrap(),
            r#"{"IP":"","Mask":null}"#
        );
        assert!(serde_json::from_str::<GoIpNet>(r#"{"IP":"x","Mask":null}"#).is_err());
        assert!(serde_json::from_str::<GoIpNet>(r#"{"IP":"","Mask":"!!"}"#).is_err());
    }

    #[test]
    fn serde_raw_token_found_at_any_depth() {
        let table = [
            (r#"{"a":[1,{"b":{"c":2}}]}"#, false),
            (r#"{"a":1,"$serde_json::private::RawValue":2}"#, true),
            (
                r#"[[{"x":{"y":[{"z":0,"$serde_json::private::RawValue":null}]}}]]"#,
                true,
            ),
            (
                r#"{"a":{"b":2,"\u0024serde_json::private::RawValue":1}}"#,
                true,
            ),
            (r#"{"$serde_json::private::RawValue":"[1]"}"#, false), // read as [1]
        ];
        for (text, want) in table {
            let v: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(has_raw_token(&v), want, "{text}");
        }
    }

    #[test]
    fn timestamps_as_go_writes_them() {
        let table = [
            (0, 0, "1970-01-01T00:00:00Z"),
            (1_787_255_174, 123_456_789, "2026-08-20T19:46:14.123456789Z"),
            (1_787_255_174, 120_000_000, "2026-08-20T19:46:14.12Z"),
            (951_782_400, 0, "2000-02-29T00:00:00Z"),
        ];
        for (secs, nanos, want) in table {
            let t = UNIX_EPOCH + Duration::new(secs, nanos);
            assert_eq!(rfc3339_nano(t), want);
        }
    }
}
