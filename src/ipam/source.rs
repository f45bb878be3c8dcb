//! Where the node's addresses come from (spec B.5.2): the Azure wireserver (NMAgent XML), a
//! file in upstream's interfaces.json format, or nothing (`null`); and how a source's NIC list
//! becomes pools: NICs matched by MAC against this namespace's links, the node's primary IPs
//! left out, one pool per subnet, gateway = first address.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use ipnetwork::IpNetwork;
use serde::Deserialize;

use crate::encoding::parse_mac;
use crate::error::{invalid_config, Code, Context, Error, Result};
use crate::netlink::Link;
use crate::settings::Settings;

/// NMAgent answers are a few KB (250 IPs are ~15 KB); anything past this is refused.
pub const MAX_SOURCE_BYTES: u64 = 1 << 20;
/// Upstream: connect timeout 10 s, response-header timeout 10 s (spec B.5.2).
pub const WIRESERVER_TIMEOUT: Duration = Duration::from_secs(10);

/// One NIC as a source lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicInfo {
    /// As written by the source (`000D3A4B1C2D`, `00:0d:3a:...`), or `*` for "first NIC".
    pub mac: String,
    pub is_primary: bool,
    pub subnets: Vec<SubnetInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetInfo {
    pub prefix: String,
    /// (address, is the node's primary IP)
    pub addresses: Vec<(String, bool)>,
}

/// A pool as the source sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolView {
    /// Canonical subnet CIDR (`10.224.0.0/16`): the pool's ID.
    pub id: String,
    pub subnet: IpNetwork,
    pub gateway: IpAddr,
    pub if_name: String,
    pub priority: i64,
    pub addresses: Vec<IpAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Azure,
    File,
    Null,
}

impl SourceKind {
    /// `ipam.environment` (spec B.2): `""`/`azure`, `file` (upstream: `fileIpam`, `mas`), `null`.
    pub fn parse(env: Option<&str>) -> Result<SourceKind> {
        match env.unwrap_or("") {
            "" | "azure" => Ok(SourceKind::Azure),
            "file" | "fileIpam" | "mas" => Ok(SourceKind::File),
            "null" => Ok(SourceKind::Null),
            other => Err(invalid_config(format!(
                "Invalid configuration: unknown ipam.environment {other:?} \
                 (expected azure, file, fileIpam, mas or null)"
            ))),
        }
    }
}

/// What a source answered, and a fingerprint of exactly what it answered. The answer is
/// parsed only when it is needed (`nics`): while it says what was merged last, the saved pools
/// are used and its bytes only fingerprinted.
#[derive(Debug, Clone)]
pub struct Fetched {
    kind: SourceKind,
    bytes: Vec<u8>,
    /// Where the answer came from, for errors.
    origin: String,
    pub fingerprint: u64,
}

impl Fetched {
    /// The NICs the answer lists.
    pub fn nics(&self) -> Result<Vec<NicInfo>> {
        match self.kind {
            SourceKind::Azure => {
                crate::ipam::nmagent::parse(&self.bytes).with_context(|| self.origin.clone())
            }
            SourceKind::File => {
                parse_interfaces_json(&self.bytes).with_context(|| self.origin.clone())
            }
            SourceKind::Null => Ok(Vec::new()),
        }
    }

    /// The same answer, its fingerprint also covering `extra` (config that shapes the view).
    pub fn salted(self, extra: &[u8]) -> Fetched {
        Fetched {
            fingerprint: fingerprint(&[&self.fingerprint.to_le_bytes(), extra]),
            ..self
        }
    }
}

/// FNV-1a: a cheap fingerprint to notice that a source's answer has not changed.
pub fn fingerprint(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Ask the configured source for its answer (not parsed yet, see `Fetched::nics`).
pub fn fetch(kind: SourceKind, settings: &Settings) -> Result<Fetched> {
    let (bytes, origin) = match kind {
        SourceKind::Azure => (
            crate::ipam::wireserver::get(
                &settings.wireserver_url,
                WIRESERVER_TIMEOUT,
                MAX_SOURCE_BYTES,
            )?,
            format!("wireserver {}", settings.wireserver_url),
        ),
        SourceKind::File => (
            read_interfaces_file(&settings.interfaces_file)?,
            settings.interfaces_file.display().to_string(),
        ),
        SourceKind::Null => (Vec::new(), String::new()),
    };
    Ok(Fetched {
        kind,
        fingerprint: fingerprint(&[&bytes]),
        bytes,
        origin,
    })
}

#[derive(Deserialize)]
struct IfFile {
    #[serde(rename = "Interfaces", default)]
    interfaces: Vec<IfFileNic>,
}

#[derive(Deserialize)]
struct IfFileNic {
    #[serde(rename = "MacAddress", default)]
    mac: String,
    #[serde(rename = "IsPrimary", default)]
    is_primary: bool,
    #[serde(rename = "IPSubnets", default)]
    subnets: Vec<IfFileSubnet>,
}

#[derive(Deserialize)]
struct IfFileSubnet {
    #[serde(rename = "Prefix", default)]
    prefix: String,
    #[serde(rename = "IPAddresses", default)]
    addresses: Vec<IfFileAddr>,
}

#[derive(Deserialize)]
struct IfFileAddr {
    #[serde(rename = "Address", default)]
    address: String,
    #[serde(rename = "IsPrimary", default)]
    is_primary: bool,
}

/// upstream's `/etc/kubernetes/interfaces.json` (`mas`/`fileIpam` sources).
pub fn parse_interfaces_json(bytes: &[u8]) -> Result<Vec<NicInfo>> {
    let f: IfFile = serde_json::from_slice(bytes)
        .map_err(|e| Error::new(Code::Runtime, format!("invalid interfaces file: {e}")))?;
    Ok(f.interfaces
        .into_iter()
        .map(|n| NicInfo {
            mac: n.mac,
            is_primary: n.is_primary,
            subnets: n
                .subnets
                .into_iter()
                .map(|s| SubnetInfo {
                    prefix: s.prefix,
                    addresses: s
                        .addresses
                        .into_iter()
                        .map(|a| (a.address, a.is_primary))
                        .collect(),
                })
                .collect(),
        })
        .collect())
}

fn read_interfaces_file(path: &Path) -> Result<Vec<u8>> {
    crate::files::read_regular(path, MAX_SOURCE_BYTES)
        .map_err(|e| Error::os(Code::Runtime, &e))
        .with_context(|| format!("read interfaces file {}", path.display()))
}

/// The gateway Azure uses: the subnet's first address.
pub fn first_address(net: &IpNetwork) -> Option<IpAddr> {
    match net.network() {
        IpAddr::V4(a) => u32::from(a).checked_add(1).map(|n| IpAddr::V4(n.into())),
        IpAddr::V6(a) => u128::from(a).checked_add(1).map(|n| IpAddr::V6(n.into())),
    }
}

/// Drop addresses configured on this node's own interfaces from the pools: defence in depth
/// against a source that does not flag the node's primary IP (it must never reach a pod).
pub fn exclude_local(pools: &mut [PoolView], local: &HashSet<IpAddr>) {
    for p in pools {
        p.addresses.retain(|a| !local.contains(a));
    }
}

/// Turn a source's NICs into pools for this node. `links` are the links of the current network
/// namespace; `master` (conflist) restricts pools to that interface.
pub fn pools_from(nics: &[NicInfo], links: &[Link], master: Option<&str>) -> Vec<PoolView> {
    let mut out: Vec<PoolView> = Vec::new();
    let mut seen = HashSet::new();
    for nic in nics {
        let link = if nic.mac == "*" {
            // Upstream's test hook: "*" matches the first interface (we skip loopback).
            links.iter().find(|l| l.mac.is_some_and(|m| m != [0; 6]))
        } else {
            let Some(mac) = parse_mac(&nic.mac) else {
                continue;
            };
            links.iter().find(|l| l.mac == Some(mac))
        };
        let Some(link) = link else { continue };
        if master.is_some_and(|m| m != link.name) {
            continue;
        }
        let priority = if nic.is_primary { 0 } else { 1 };
        for s in &nic.subnets {
            let Ok(net) = s.prefix.parse::<IpNetwork>() else {
                continue;
            };
            let Ok(subnet) = IpNetwork::new(net.network(), net.prefix()) else {
                continue;
            };
            let id = subnet.to_string();
            // A prefix listed twice in one answer is skipped entirely (upstream).
            if !seen.insert(id.clone()) {
                out.retain(|p| p.id != id);
                continue;
            }
            let Some(gateway) = first_address(&subnet) else {
                continue;
            };
            let mut addresses: Vec<IpAddr> = s
                .addresses
                .iter()
                .filter(|(_, primary)| !primary)
                .filter_map(|(a, _)| a.parse::<IpAddr>().ok())
                .filter(|a| subnet.contains(*a) && *a != gateway)
                .collect();
            addresses.sort();
            addresses.dedup();
            out.push(PoolView {
                id,
                subnet,
                gateway,
                if_name: link.name.clone(),
                priority,
                addresses,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str, mac: &str) -> Link {
        Link {
            index: 2,
            name: name.into(),
            mac: parse_mac(mac),
            mtu: 1500,
            up: true,
            kind: None,
            peer_index: None,
            peer_netnsid: None,
        }
    }

    const IFJSON: &str = r#"{"Interfaces":[{"MacAddress":"000D3A6E1825","IsPrimary":true,"IPSubnets":[{"Prefix":"10.224.0.0/16","IPAddresses":[{"Address":"10.224.0.4","IsPrimary":true},{"Address":"10.224.0.6","IsPrimary":false},{"Address":"10.224.0.5","IsPrimary":false}]}]}]}"#;

    #[test]
    fn interfaces_json_upstream_format() {
        let nics = parse_interfaces_json(IFJSON.as_bytes()).unwrap();
        assert_eq!(nics[0].mac, "000D3A6E1825");
        assert!(nics[0].is_primary);
        assert_eq!(nics[0].subnets[0].addresses.len(), 3);
        for bad in [
            "",
            "{",
            r#"{"Interfaces":"x"}"#,
            r#"{"Interfaces":[{"IsPrimary":"yes"}]}"#,
        ] {
            assert!(parse_interfaces_json(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn pools_match_by_mac_and_exclude_primary() {
        let nics = parse_interfaces_json(IFJSON.as_bytes()).unwrap();
        let links = [
            link("lo", "00:00:00:00:00:00"),
            link("eth0", "00:0d:3a:6e:18:25"),
        ];
        let pools = pools_from(&nics, &links, None);
        assert_eq!(pools.len(), 1);
        let p = &pools[0];
        assert_eq!(p.id, "10.224.0.0/16");
        assert_eq!(p.if_name, "eth0");
        assert_eq!(p.gateway.to_string(), "10.224.0.1");
        assert_eq!(p.priority, 0);
        let addrs: Vec<String> = p.addresses.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            addrs,
            ["10.224.0.5", "10.224.0.6"],
            "sorted, primary 10.224.0.4 excluded"
        );
    }

    #[test]
    #[allow(clippy::type_complexity)] // a table of cases reads best as tuples
    fn pool_building_table() {
        let links = [
            link("eth0", "00:0d:3a:6e:18:25"),
            link("eth1", "00:0d:3a:6e:18:26"),
        ];
        let nic = |mac: &str, primary: bool, prefix: &str, addrs: &[&str]| NicInfo {
            mac: mac.into(),
            is_primary: primary,
            subnets: vec![SubnetInfo {
                prefix: prefix.into(),
                addresses: addrs.iter().map(|a| (a.to_string(), false)).collect(),
            }],
        };
        // (nics, master, expected [(pool id, ifname, priority, n addrs)])
        let table: Vec<(Vec<NicInfo>, Option<&str>, Vec<(&str, &str, i64, usize)>)> = vec![
            (
                vec![nic("000D3A6E1825", true, "10.224.0.0/16", &["10.224.0.9"])],
                None,
                vec![("10.224.0.0/16", "eth0", 0, 1)],
            ),
            (
                vec![nic("FFFFFFFFFFFF", true, "10.224.0.0/16", &["10.224.0.9"])],
                None,
                vec![],
            ),
            (
                vec![nic("000d3a6e1826", false, "10.225.0.0/24", &["10.225.0.9"])],
                None,
                vec![("10.225.0.0/24", "eth1", 1, 1)],
            ),
            (
                vec![nic("000D3A6E1825", true, "10.224.0.7/16", &["10.224.0.9"])],
                None,
                vec![("10.224.0.0/16", "eth0", 0, 1)],
            ),
            (
                vec![nic(
                    "000D3A6E1825",
                    true,
                    "10.224.0.0/16",
                    &["10.225.0.9", "bogus", "10.224.0.1"],
                )],
                None,
                vec![("10.224.0.0/16", "eth0", 0, 0)],
            ),
            (
                vec![nic("000D3A6E1825", true, "not-a-cidr", &["10.224.0.9"])],
                None,
                vec![],
            ),
            (
                vec![
                    nic("000D3A6E1825", true, "10.224.0.0/16", &["10.224.0.9"]),
                    nic("000D3A6E1826", true, "10.224.0.0/16", &["10.224.0.10"]),
                ],
                None,
                vec![],
            ),
            (
                vec![
                    nic("000D3A6E1825", true, "10.224.0.0/16", &["10.224.0.9"]),
                    nic("000D3A6E1826", false, "10.225.0.0/16", &["10.225.0.9"]),
                ],
                Some("eth1"),
                vec![("10.225.0.0/16", "eth1", 1, 1)],
            ),
            (
                vec![nic("*", true, "10.224.0.0/16", &["10.224.0.9"])],
                None,
                vec![("10.224.0.0/16", "eth0", 0, 1)],
            ),
        ];
        for (i, (nics, master, want)) in table.into_iter().enumerate() {
            let got: Vec<(String, String, i64, usize)> = pools_from(&nics, &links, master)
                .into_iter()
                .map(|p| (p.id, p.if_name, p.priority, p.addresses.len()))
                .collect();
            let want: Vec<(String, String, i64, usize)> = want
                .into_iter()
                .map(|(a, b, c, d)| (a.into(), b.into(), c, d))
                .collect();
            assert_eq!(got, want, "case {i}");
        }
    }

    #[test]
    fn environment_names() {
        for (env, want) in [
            (None, Some(SourceKind::Azure)),
            (Some(""), Some(SourceKind::Azure)),
            (Some("azure"), Some(SourceKind::Azure)),
            (Some("file"), Some(SourceKind::File)),
            (Some("fileIpam"), Some(SourceKind::File)),
            (Some("mas"), Some(SourceKind::File)),
            (Some("null"), Some(SourceKind::Null)),
            (Some("ipv6NodeIpam"), None),
            (Some("bogus"), None),
        ] {
            match (SourceKind::parse(env), want) {
                (Ok(k), Some(w)) => assert_eq!(k, w),
                (Err(e), None) => assert_eq!(e.code(), Code::InvalidConfig),
                (got, want) => panic!("{env:?}: {got:?} vs {want:?}"),
            }
        }
    }
}
