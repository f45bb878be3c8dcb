//! CNI results for every version from 0.1.0 to 1.1.0, and conversion between them.
//!
//! Internally a result is the 1.1.0 shape ([`CniResult`]); it is parsed from and printed at any
//! supported version. 0.1.0/0.2.0 use the legacy `ip4`/`ip6` shape; 0.3.x/0.4.0 put a
//! `"version"` on each IP; 1.1.0 adds route and interface fields the older versions lack.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cni::version::Version;
use crate::error::{Code, Error, Result};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// 1.1.0 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// 1.1.0 only.
    #[serde(
        rename = "socketPath",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub socket_path: Option<String>,
    /// 1.1.0 only.
    #[serde(rename = "pciID", default, skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// Index into `interfaces`.
    pub interface: Option<usize>,
    /// The address with its prefix length (host bits kept: `10.224.0.17/16`).
    pub address: IpNetwork,
    pub gateway: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNetwork,
    pub gw: Option<IpAddr>,
    /// The remaining fields are 1.1.0 only.
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
    pub priority: Option<u32>,
    pub table: Option<u32>,
    pub scope: Option<u8>,
}

impl Route {
    pub fn new(dst: IpNetwork, gw: Option<IpAddr>) -> Route {
        Route {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

// ---- wire shapes: what libcni reads and prints, fields in its order -------------------------

/// A result at any version: 0.1.0/0.2.0 use `ip4`/`ip6`, later ones the rest.
#[derive(Serialize, Deserialize)]
struct Wire {
    #[serde(
        rename = "cniVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    cni_version: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip4: Option<WireLegacyIp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip6: Option<WireLegacyIp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ips: Vec<WireIp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    routes: Vec<WireRoute>,
    #[serde(default)]
    dns: Dns,
}

#[derive(Serialize, Deserialize)]
struct WireIp {
    /// 0.3.x and 0.4.0 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interface: Option<usize>,
    address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gateway: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct WireRoute {
    dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gw: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<u8>,
}

#[derive(Serialize, Deserialize)]
struct WireLegacyIp {
    ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    routes: Vec<WireRoute>,
}

fn decode_err(msg: String) -> Error {
    Error::new(Code::Decode, msg)
}

fn parse_cidr(s: &str) -> Result<IpNetwork> {
    s.parse::<IpNetwork>()
        .map_err(|e| decode_err(format!("invalid CIDR {s:?} in result: {e}")))
}

fn parse_ip(s: Option<&str>) -> Result<Option<IpAddr>> {
    match s.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| decode_err(format!("invalid IP {s:?} in result"))),
    }
}

impl WireRoute {
    fn into_route(self) -> Result<Route> {
        Ok(Route {
            dst: parse_cidr(&self.dst)?,
            gw: parse_ip(self.gw.as_deref())?,
            mtu: self.mtu,
            advmss: self.advmss,
            priority: self.priority,
            table: self.table,
            scope: self.scope,
        })
    }
}

impl CniResult {
    /// Parse a result printed at `version` (e.g. by an IPAM plugin, or a `prevResult`).
    pub fn from_value(value: &Value, version: Version) -> Result<CniResult> {
        let bad =
            |e: serde_json::Error| decode_err(format!("failed to parse {version} result: {e}"));
        let w: Wire = serde_json::from_value(value.clone()).map_err(bad)?;
        if version.is_legacy() {
            let mut out = CniResult {
                dns: w.dns,
                ..Default::default()
            };
            for ip in [w.ip4, w.ip6].into_iter().flatten() {
                out.ips.push(IpConfig {
                    interface: None,
                    address: parse_cidr(&ip.ip)?,
                    gateway: parse_ip(ip.gateway.as_deref())?,
                });
                for r in ip.routes {
                    out.routes.push(r.into_route()?);
                }
            }
            return Ok(out);
        }
        let ips = w
            .ips
            .into_iter()
            .map(|ip| {
                Ok(IpConfig {
                    interface: ip.interface,
                    address: parse_cidr(&ip.address)?,
                    gateway: parse_ip(ip.gateway.as_deref())?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let routes = w
            .routes
            .into_iter()
            .map(WireRoute::into_route)
            .collect::<Result<Vec<_>>>()?;
        if let Some(ip) = ips
            .iter()
            .find(|ip| ip.interface.is_some_and(|i| i >= w.interfaces.len()))
        {
            return Err(decode_err(format!(
                "result IP {} refers to interface {:?}, but only {} interfaces are listed",
                ip.address,
                ip.interface,
                w.interfaces.len()
            )));
        }
        Ok(CniResult {
            interfaces: w.interfaces,
            ips,
            routes,
            dns: w.dns,
        })
    }

    pub fn from_slice(bytes: &[u8], version: Version) -> Result<CniResult> {
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| decode_err(format!("failed to parse result: {e}")))?;
        CniResult::from_value(&v, version)
    }

    /// Printed as libcni's `PrintResult` does: its field order, indented with four spaces,
    /// no trailing newline. Go's `types.DNS` is a struct, so `dns` is always there.
    pub fn to_bytes(&self, version: Version) -> Vec<u8> {
        let mut wire = Wire {
            cni_version: Some(version.as_str().to_string()),
            interfaces: Vec::new(),
            ip4: None,
            ip6: None,
            ips: Vec::new(),
            routes: Vec::new(),
            dns: self.dns.clone(),
        };
        let route = |r: &Route| {
            let new = version >= Version::V1_1_0;
            WireRoute {
                dst: r.dst.to_string(),
                gw: r.gw.map(|g| g.to_string()),
                mtu: r.mtu.filter(|_| new),
                advmss: r.advmss.filter(|_| new),
                priority: r.priority.filter(|_| new),
                table: r.table.filter(|_| new),
                scope: r.scope.filter(|_| new),
            }
        };
        if version.is_legacy() {
            // 0.2.0 carries one address per family: libcni keeps the first of each.
            let legacy = |v4: bool| {
                let ip = self.ips.iter().find(|ip| ip.address.is_ipv4() == v4)?;
                Some(WireLegacyIp {
                    ip: ip.address.to_string(),
                    gateway: ip.gateway.map(|g| g.to_string()),
                    routes: self
                        .routes
                        .iter()
                        .filter(|r| r.dst.is_ipv4() == v4)
                        .map(route)
                        .collect(),
                })
            };
            (wire.ip4, wire.ip6) = (legacy(true), legacy(false));
            return crate::cni::pretty4(&wire);
        }
        let interfaces = self
            .interfaces
            .iter()
            .map(|i| match version < Version::V1_1_0 {
                true => Interface {
                    mtu: None,
                    socket_path: None,
                    pci_id: None,
                    ..i.clone()
                },
                false => i.clone(),
            });
        let ips = self.ips.iter().map(|ip| WireIp {
            version: version
                .ips_carry_version()
                .then(|| if ip.address.is_ipv4() { "4" } else { "6" }.to_string()),
            interface: ip.interface,
            address: ip.address.to_string(),
            gateway: ip.gateway.map(|g| g.to_string()),
        });
        wire.interfaces = interfaces.collect();
        wire.ips = ips.collect();
        wire.routes = self.routes.iter().map(route).collect();
        crate::cni::pretty4(&wire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl CniResult {
        fn to_value(&self, version: Version) -> Value {
            serde_json::from_slice(&self.to_bytes(version)).unwrap()
        }
    }

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "azvc440f455693".into(),
                    mac: Some("aa:aa:aa:aa:aa:aa".into()),
                    ..Default::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("ba:60:99:6a:a1:83".into()),
                    sandbox: Some("/var/run/netns/pod".into()),
                    mtu: Some(1500),
                    ..Default::default()
                },
            ],
            ips: vec![IpConfig {
                interface: Some(1),
                address: "10.224.0.24/16".parse().unwrap(),
                gateway: Some("10.224.0.1".parse().unwrap()),
            }],
            routes: vec![Route {
                table: Some(100),
                ..Route::new(
                    "0.0.0.0/0".parse().unwrap(),
                    Some("10.224.0.1".parse().unwrap()),
                )
            }],
            dns: Dns {
                nameservers: vec!["168.63.129.16".into()],
                ..Default::default()
            },
        }
    }

    /// What each version keeps of `sample()`.
    fn expected_at(v: Version) -> CniResult {
        let mut r = sample();
        if v < Version::V1_1_0 {
            r.interfaces[1].mtu = None;
            r.routes[0].table = None;
        }
        if v.is_legacy() {
            r.interfaces.clear();
            r.ips[0].interface = None;
        }
        r
    }

    #[test]
    fn printed_at_each_version_parses_as_that_version() {
        for v in Version::ALL {
            let bytes = sample().to_bytes(v);
            let text = String::from_utf8(bytes.clone()).unwrap();
            let back =
                CniResult::from_slice(&bytes, v).unwrap_or_else(|e| panic!("{v}: {e}\n{text}"));
            assert_eq!(back, expected_at(v), "{v}\n{text}");
            let value: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(value["cniVersion"], v.as_str());
        }
    }

    #[test]
    fn shapes_per_version() {
        let r = sample();
        let legacy = r.to_value(Version::V0_2_0);
        assert_eq!(legacy["ip4"]["ip"], "10.224.0.24/16");
        assert_eq!(legacy["ip4"]["gateway"], "10.224.0.1");
        assert_eq!(legacy["ip4"]["routes"][0]["dst"], "0.0.0.0/0");
        assert!(legacy.get("ips").is_none() && legacy.get("interfaces").is_none());

        let v030 = r.to_value(Version::V0_3_0);
        assert_eq!(v030["ips"][0]["version"], "4");
        assert_eq!(v030["ips"][0]["interface"], 1);
        assert!(v030["interfaces"][1].get("mtu").is_none());
        assert!(v030["routes"][0].get("table").is_none());

        let v100 = r.to_value(Version::V1_0_0);
        assert!(v100["ips"][0].get("version").is_none());

        let v110 = r.to_value(Version::V1_1_0);
        assert_eq!(v110["interfaces"][1]["mtu"], 1500);
        assert_eq!(v110["routes"][0]["table"], 100);
    }

    #[test]
    fn upstream_ipam_output_parses() {
        // Spec B.5.4: what upstream azure-vnet-ipam prints at 0.3.0.
        let text = r#"{"cniVersion":"0.3.0","ips":[{"version":"4","address":"10.224.0.17/16","gateway":"10.224.0.1"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.224.0.1"}],"dns":{"nameservers":["168.63.129.16"]}}"#;
        let r = CniResult::from_slice(text.as_bytes(), Version::V0_3_0).unwrap();
        assert_eq!(r.ips[0].address.to_string(), "10.224.0.17/16");
        assert_eq!(r.routes[0].gw, Some("10.224.0.1".parse().unwrap()));
        assert_eq!(r.dns.nameservers, vec!["168.63.129.16"]);
    }

    #[test]
    fn legacy_keeps_first_address_of_each_family() {
        let mut r = sample();
        r.ips.push(IpConfig {
            interface: Some(1),
            address: "10.224.0.25/16".parse().unwrap(),
            gateway: None,
        });
        r.ips.push(IpConfig {
            interface: Some(1),
            address: "fd00::5/64".parse().unwrap(),
            gateway: None,
        });
        let v = r.to_value(Version::V0_2_0);
        assert_eq!(v["ip4"]["ip"], "10.224.0.24/16");
        assert_eq!(v["ip6"]["ip"], "fd00::5/64");
    }

    #[test]
    fn bad_results_are_decode_errors() {
        let table: &[(&str, Version)] = &[
            (r#"{"ips":[{"address":"nope"}]}"#, Version::V1_0_0),
            (
                r#"{"ips":[{"address":"10.0.0.1/24","gateway":"x"}]}"#,
                Version::V1_0_0,
            ),
            (
                r#"{"ips":[{"address":"10.0.0.1/24","interface":3}]}"#,
                Version::V1_0_0,
            ),
            (r#"{"ip4":{"ip":"10.0.0.1/40"}}"#, Version::V0_2_0),
            (r#"{"routes":[{"gw":"10.0.0.1"}]}"#, Version::V0_4_0),
            ("not json", Version::V1_0_0),
        ];
        for (text, v) in table {
            let e = CniResult::from_slice(text.as_bytes(), *v).unwrap_err();
            assert_eq!(e.code(), Code::Decode, "{text}");
        }
    }
}
