//! `/var/run/azure-vnet.json` in upstream's schema (spec B.4.2): store key `"Network"`,
//! external interfaces, networks, endpoints. Endpoint records carry the SEED's fields (AKS,
//! Aug 2024), in upstream's field order; fields of other upstream versions (`NICType`,
//! `SecondaryInterfaces`, ...) and anything unknown are kept in `extra` and written back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::encoding::{GoBytes, GoIp, GoIpNet};
use crate::ipam::state::null_default;
use crate::store::StateFile;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkFile {
    #[serde(rename = "Network", default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkManager>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkManager {
    /// Always `null` in files upstream writes on Linux.
    #[serde(rename = "CnsClient", default)]
    pub cns_client: Value,
    #[serde(rename = "Version", default)]
    pub version: String,
    #[serde(rename = "TimeStamp", default)]
    pub timestamp: String,
    #[serde(
        rename = "ExternalInterfaces",
        default,
        deserialize_with = "null_default"
    )]
    pub external_interfaces: BTreeMap<String, ExternalInterface>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DnsInfo {
    #[serde(rename = "Suffix", default)]
    pub suffix: String,
    #[serde(rename = "Servers", default)]
    pub servers: Option<Vec<String>>,
    #[serde(rename = "Options", default)]
    pub options: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExternalInterface {
    #[serde(rename = "Name", default)]
    pub name: String,
    #[serde(rename = "Networks", default, deserialize_with = "null_default")]
    pub networks: BTreeMap<String, Network>,
    #[serde(rename = "Subnets", default)]
    pub subnets: Option<Vec<String>>,
    #[serde(rename = "BridgeName", default)]
    pub bridge_name: String,
    #[serde(rename = "DNSInfo", default)]
    pub dns_info: DnsInfo,
    #[serde(rename = "MacAddress", default)]
    pub mac_address: GoBytes,
    #[serde(rename = "IPAddresses", default)]
    pub ip_addresses: Value,
    #[serde(rename = "Routes", default)]
    pub routes: Value,
    #[serde(rename = "IPv4Gateway", default)]
    pub ipv4_gateway: GoIp,
    #[serde(rename = "IPv6Gateway", default)]
    pub ipv6_gateway: GoIp,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Network {
    #[serde(rename = "Id", default)]
    pub id: String,
    #[serde(rename = "HnsId", default, skip_serializing_if = "String::is_empty")]
    pub hns_id: String,
    #[serde(rename = "Mode", default)]
    pub mode: String,
    #[serde(rename = "VlanId", default)]
    pub vlan_id: i64,
    #[serde(rename = "Subnets", default)]
    pub subnets: Option<Vec<SubnetInfo>>,
    #[serde(rename = "Endpoints", default, deserialize_with = "null_default")]
    pub endpoints: BTreeMap<String, Endpoint>,
    #[serde(rename = "DNS", default)]
    pub dns: DnsInfo,
    #[serde(rename = "EnableSnatOnHost", default)]
    pub enable_snat_on_host: bool,
    #[serde(rename = "NetNs", default)]
    pub net_ns: String,
    #[serde(rename = "SnatBridgeIP", default)]
    pub snat_bridge_ip: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SubnetInfo {
    /// 2 = AF_INET, 10 = AF_INET6.
    #[serde(rename = "Family", default)]
    pub family: i64,
    #[serde(rename = "Prefix", default)]
    pub prefix: GoIpNet,
    #[serde(rename = "Gateway", default)]
    pub gateway: GoIp,
    #[serde(rename = "PrimaryIP", default)]
    pub primary_ip: GoIp,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteInfo {
    #[serde(rename = "Dst", default)]
    pub dst: GoIpNet,
    #[serde(rename = "Src", default)]
    pub src: GoIp,
    #[serde(rename = "Gw", default)]
    pub gw: GoIp,
    #[serde(rename = "Protocol", default)]
    pub protocol: i64,
    #[serde(rename = "DevName", default)]
    pub dev_name: String,
    #[serde(rename = "Scope", default)]
    pub scope: i64,
    #[serde(rename = "Priority", default)]
    pub priority: i64,
    #[serde(rename = "Table", default)]
    pub table: i64,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    #[serde(rename = "Id", default)]
    pub id: String,
    #[serde(rename = "HnsId", default, skip_serializing_if = "String::is_empty")]
    pub hns_id: String,
    #[serde(
        rename = "HNSNetworkID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub hns_network_id: String,
    #[serde(rename = "SandboxKey", default)]
    pub sandbox_key: String,
    /// The container-side veth as created (`azv<11 hex>2`), as the seed records it.
    #[serde(rename = "IfName", default)]
    pub if_name: String,
    #[serde(rename = "HostIfName", default)]
    pub host_if_name: String,
    /// The pod-side MAC.
    #[serde(rename = "MacAddress", default)]
    pub mac_address: GoBytes,
    #[serde(rename = "InfraVnetIP", default)]
    pub infra_vnet_ip: GoIpNet,
    #[serde(rename = "LocalIP", default)]
    pub local_ip: String,
    #[serde(rename = "IPAddresses", default)]
    pub ip_addresses: Option<Vec<GoIpNet>>,
    #[serde(rename = "Gateways", default)]
    pub gateways: Option<Vec<GoIp>>,
    #[serde(rename = "DNS", default)]
    pub dns: DnsInfo,
    #[serde(rename = "Routes", default)]
    pub routes: Option<Vec<RouteInfo>>,
    #[serde(rename = "VlanID", default)]
    pub vlan_id: i64,
    #[serde(rename = "EnableSnatOnHost", default)]
    pub enable_snat_on_host: bool,
    #[serde(rename = "EnableInfraVnet", default)]
    pub enable_infra_vnet: bool,
    #[serde(rename = "EnableMultitenancy", default)]
    pub enable_multitenancy: bool,
    #[serde(rename = "AllowInboundFromHostToNC", default)]
    pub allow_inbound_from_host_to_nc: bool,
    #[serde(rename = "AllowInboundFromNCToHost", default)]
    pub allow_inbound_from_nc_to_host: bool,
    #[serde(rename = "NetworkContainerID", default)]
    pub network_container_id: String,
    #[serde(
        rename = "NetworkNameSpace",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub network_namespace: String,
    #[serde(rename = "ContainerID", default)]
    pub container_id: String,
    #[serde(rename = "PODName", default, skip_serializing_if = "String::is_empty")]
    pub pod_name: String,
    #[serde(
        rename = "PODNameSpace",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub pod_namespace: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl StateFile for NetworkFile {
    fn stamp(&mut self, version: &str, timestamp: &str) {
        let nm = self.network.get_or_insert_with(NetworkManager::default);
        nm.version = version.to_string();
        nm.timestamp = timestamp.to_string();
    }
}

impl NetworkFile {
    /// Every endpoint of every network, with the network's ID.
    pub fn endpoints(&self) -> impl Iterator<Item = (&str, &Endpoint)> {
        self.network
            .iter()
            .flat_map(|nm| nm.external_interfaces.values())
            .flat_map(|ext| ext.networks.values())
            .flat_map(|n| n.endpoints.values().map(move |e| (n.id.as_str(), e)))
    }

    /// The network `id`, wherever (under which external interface) it lives.
    pub fn network(&self, id: &str) -> Option<&Network> {
        self.network
            .as_ref()?
            .external_interfaces
            .values()
            .find_map(|ext| ext.networks.get(id))
    }

    pub fn network_mut(&mut self, id: &str) -> Option<&mut Network> {
        self.network
            .as_mut()?
            .external_interfaces
            .values_mut()
            .find_map(|ext| ext.networks.get_mut(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spec B.4.2's example, written as upstream HEAD writes it (with NICType and
    /// SecondaryInterfaces, which the seed's AKS version did not have).
    const UPSTREAM: &str = r#"{"Network":{"CnsClient":null,"Version":"v1.6.21","TimeStamp":"2026-08-20T19:46:14.123456789Z",
      "ExternalInterfaces":{"eth0":{"Name":"eth0","Networks":{"azure":{"Id":"azure","Mode":"transparent","VlanId":0,
      "Subnets":[{"Family":2,"Prefix":{"IP":"10.224.0.0","Mask":"//8AAA=="},"Gateway":"10.224.0.1","PrimaryIP":""}],
      "Endpoints":{"ee86fb8b-eth0":{"Id":"ee86fb8b-eth0","SandboxKey":"","IfName":"eth0","HostIfName":"azvd3e9f8799af",
      "MacAddress":"ij8cK01e","InfraVnetIP":{"IP":"","Mask":null},"LocalIP":"","IPAddresses":[{"IP":"10.224.0.17","Mask":"//8AAA=="}],
      "Gateways":["0.0.0.0"],"DNS":{"Suffix":"","Servers":["168.63.129.16"],"Options":null},
      "Routes":[{"Dst":{"IP":"0.0.0.0","Mask":"AAAAAA=="},"Src":"","Gw":"10.224.0.1","Protocol":0,"DevName":"","Scope":0,"Priority":0,"Table":0}],
      "VlanID":0,"EnableSnatOnHost":false,"EnableInfraVnet":false,"EnableMultitenancy":false,"AllowInboundFromHostToNC":false,
      "AllowInboundFromNCToHost":false,"NetworkContainerID":"","NetworkNameSpace":"/var/run/netns/cni-3b1f0c2e",
      "ContainerID":"ee86fb8b1d6c4e0f8b7a2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071","PODName":"coredns-789789675-x2lqk",
      "PODNameSpace":"kube-system","SecondaryInterfaces":{},"NICType":"InfraNIC"}},
      "DNS":{"Suffix":"","Servers":null,"Options":null},"EnableSnatOnHost":false,"NetNs":"","SnatBridgeIP":""}},
      "Subnets":["10.224.0.0/16"],"BridgeName":"","DNSInfo":{"Suffix":"","Servers":null,"Options":null},"MacAddress":"AA06Sxwt",
      "IPAddresses":null,"Routes":null,"IPv4Gateway":"0.0.0.0","IPv6Gateway":"::"}}}}"#;

    #[test]
    fn upstream_head_file_loads_and_round_trips() {
        let f: NetworkFile = serde_json::from_str(UPSTREAM).unwrap();
        let (net, ep) = f.endpoints().next().unwrap();
        assert_eq!(net, "azure");
        assert_eq!(ep.host_if_name, "azvd3e9f8799af");
        assert_eq!(ep.extra["NICType"], "InfraNIC");
        assert_eq!(
            ep.ip_addresses.as_ref().unwrap()[0]
                .to_network()
                .unwrap()
                .to_string(),
            "10.224.0.17/16"
        );
        let back = serde_json::to_value(&f).unwrap();
        let orig: Value = serde_json::from_str(UPSTREAM).unwrap();
        assert_eq!(back, orig);
    }

    #[test]
    fn old_files_with_missing_fields_and_nulls_load() {
        let f: NetworkFile = serde_json::from_str(
            r#"{"Network":{"ExternalInterfaces":{"eth0":{"Name":"eth0","Networks":{"azure":{"Id":"azure","Endpoints":null}}}}}}"#,
        )
        .unwrap();
        assert!(f.network("azure").unwrap().endpoints.is_empty());
        let f: NetworkFile =
            serde_json::from_str(r#"{"Network":{"ExternalInterfaces":null}}"#).unwrap();
        assert_eq!(f.endpoints().count(), 0);
    }
}
