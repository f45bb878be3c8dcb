//! `/var/run/azure-vnet.json` in upstream's schema (spec B.4.2): store key `"Network"`,
//! external interfaces, networks, endpoints. Endpoint records carry the SEED's fields (AKS,
//! Aug 2024), in upstream's field order; fields of other upstream versions (`NICType`,
//! `SecondaryInterfaces`, ...) and anything unknown are kept and written back.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::encoding::{GoBytes, GoIp, GoIpNet};
use crate::error::{Code, Error, Result};
use crate::store::schema::state_struct;
use crate::store::{RawJson, StateFile};

state_struct! {
    pub struct NetworkFile {
        network: Option<NetworkManager> = "Network", skip_if Option::is_none;
    }
}

state_struct! {
    pub struct NetworkManager {
        /// Always `null` in files upstream writes on Linux.
        cns_client: Value = "CnsClient";
        version: String = "Version";
        timestamp: String = "TimeStamp";
        external_interfaces: BTreeMap<String, ExternalInterface> = "ExternalInterfaces";
    }
}

state_struct! {
    pub struct DnsInfo {
        suffix: String = "Suffix";
        servers: Option<Vec<String>> = "Servers";
        options: Option<Vec<String>> = "Options";
    }
}

state_struct! {
    pub struct ExternalInterface {
        name: String = "Name";
        networks: BTreeMap<String, Network> = "Networks";
        subnets: Option<Vec<String>> = "Subnets";
        bridge_name: String = "BridgeName";
        dns_info: DnsInfo = "DNSInfo";
        mac_address: GoBytes = "MacAddress";
        ip_addresses: Value = "IPAddresses";
        routes: Value = "Routes";
        ipv4_gateway: GoIp = "IPv4Gateway";
        ipv6_gateway: GoIp = "IPv6Gateway";
    }
}

state_struct! {
    pub struct Network {
        id: String = "Id";
        hns_id: String = "HnsId", skip_if String::is_empty;
        mode: String = "Mode";
        vlan_id: i64 = "VlanId";
        subnets: Option<Vec<SubnetInfo>> = "Subnets";
        /// Kept as the JSON text they were read as: an ADD or DEL parses only the records it
        /// needs, and rewrites the others byte for byte.
        endpoints: BTreeMap<String, RawEndpoint> = "Endpoints";
        dns: DnsInfo = "DNS";
        enable_snat_on_host: bool = "EnableSnatOnHost";
        net_ns: String = "NetNs";
        snat_bridge_ip: String = "SnatBridgeIP";
    }
}

state_struct! {
    pub struct SubnetInfo {
        /// 2 = AF_INET, 10 = AF_INET6.
        family: i64 = "Family";
        prefix: GoIpNet = "Prefix";
        gateway: GoIp = "Gateway";
        primary_ip: GoIp = "PrimaryIP";
    }
}

state_struct! {
    pub struct RouteInfo {
        dst: GoIpNet = "Dst";
        src: GoIp = "Src";
        gw: GoIp = "Gw";
        protocol: i64 = "Protocol";
        dev_name: String = "DevName";
        scope: i64 = "Scope";
        priority: i64 = "Priority";
        table: i64 = "Table";
    }
}

state_struct! {
    /// An endpoint record: the SEED's fields, in upstream's order.
    pub struct Endpoint {
        id: String = "Id";
        hns_id: String = "HnsId", skip_if String::is_empty;
        hns_network_id: String = "HNSNetworkID", skip_if String::is_empty;
        sandbox_key: String = "SandboxKey";
        /// The container-side veth as created (`azv<11 hex>2`), as the seed records it.
        if_name: String = "IfName";
        host_if_name: String = "HostIfName";
        /// The pod-side MAC.
        mac_address: GoBytes = "MacAddress";
        infra_vnet_ip: GoIpNet = "InfraVnetIP";
        local_ip: String = "LocalIP";
        ip_addresses: Option<Vec<GoIpNet>> = "IPAddresses";
        gateways: Option<Vec<GoIp>> = "Gateways";
        dns: DnsInfo = "DNS";
        routes: Option<Vec<RouteInfo>> = "Routes";
        vlan_id: i64 = "VlanID";
        enable_snat_on_host: bool = "EnableSnatOnHost";
        enable_infra_vnet: bool = "EnableInfraVnet";
        enable_multitenancy: bool = "EnableMultitenancy";
        allow_inbound_from_host_to_nc: bool = "AllowInboundFromHostToNC";
        allow_inbound_from_nc_to_host: bool = "AllowInboundFromNCToHost";
        network_container_id: String = "NetworkContainerID";
        network_namespace: String = "NetworkNameSpace", skip_if String::is_empty;
        container_id: String = "ContainerID";
        pod_name: String = "PODName", skip_if String::is_empty;
        pod_namespace: String = "PODNameSpace", skip_if String::is_empty;
    }
}

/// How deep endpoint records sit in the file (Network > ExternalInterfaces > <if> > Networks >
/// <net> > Endpoints > <id>): a record we write is indented to match Go's `MarshalIndent`.
const ENDPOINT_DEPTH: usize = 7;

/// An endpoint record as the JSON text it was read as (a view of the loaded file, see
/// `store::shared`), or as written by ADD.
#[derive(Debug, Clone, PartialEq)]
pub struct RawEndpoint(RawJson);

impl Default for RawEndpoint {
    fn default() -> Self {
        RawEndpoint(RawJson::from_string("{}".into()).unwrap_or_else(|_| unreachable!()))
    }
}

impl Serialize for RawEndpoint {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for RawEndpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let raw = RawJson::deserialize(d)?;
        if !raw.get().starts_with('{') {
            return Err(serde::de::Error::custom(
                "an endpoint record must be an object",
            ));
        }
        Ok(RawEndpoint(raw))
    }
}

impl RawEndpoint {
    pub fn parse(&self) -> Result<Endpoint> {
        serde_json::from_str(self.0.get()).map_err(|e| {
            Error::new(
                Code::TryAgainLater,
                format!("endpoint record is invalid ({e}): {:.200}", self.0.get()),
            )
        })
    }

    /// The record as Go's `MarshalIndent` would write it at its place in the file.
    pub fn from_endpoint(ep: &Endpoint) -> Result<RawEndpoint> {
        let text = String::from_utf8(crate::store::to_go_json(ep)?)
            .map_err(|e| Error::new(Code::Internal, e.to_string()))?;
        // JSON strings cannot hold a raw newline, so every '\n' here is layout.
        let text = text.replace('\n', &format!("\n{}", "\t".repeat(ENDPOINT_DEPTH)));
        RawJson::from_string(text)
            .map(RawEndpoint)
            .map_err(|e| Error::new(Code::Internal, format!("endpoint record: {e}")))
    }

    /// Whether the record's text holds `quoted` (a JSON string, quotes included). std's
    /// vectorised search takes needles of up to 32 bytes; a longer one (a container ID is 66)
    /// would get a fresh two-way searcher per record: its head rules out nearly every record
    /// first. (memchr's searcher would detect the CPU's features at run time: `cpuid`, which
    /// traps to the hypervisor on a VM.)
    pub fn mentions(&self, quoted: &str) -> bool {
        let text = self.0.get();
        let mut head = quoted.len().min(32);
        while !quoted.is_char_boundary(head) {
            head -= 1;
        }
        text.contains(&quoted[..head]) && text.contains(quoted)
    }
}

impl StateFile for NetworkFile {
    fn stamp(&mut self, version: &str, timestamp: &str) {
        let nm = self.network.get_or_insert_with(NetworkManager::default);
        nm.version = version.to_string();
        nm.timestamp = timestamp.to_string();
    }

    /// Endpoint records go; networks and external interfaces stay, as DEL leaves them.
    /// (Upstream keeps the records after a reboot, and its IPAM hands their addresses to new
    /// pods: records pointing at reused addresses.)
    fn forget_pods(&mut self) -> Vec<String> {
        let exts = self
            .network
            .iter_mut()
            .flat_map(|m| m.external_interfaces.values_mut());
        let nets = exts.flat_map(|ext| ext.networks.iter_mut());
        nets.flat_map(|(id, n)| {
            let keys = std::mem::take(&mut n.endpoints).into_keys();
            keys.map(move |k| format!("{id}/{k}"))
        })
        .collect()
    }
}

impl Network {
    /// Remove the records `pick` selects (it parses what it selects), returning them.
    pub fn remove_endpoints(
        &mut self,
        mut pick: impl FnMut(&str, &RawEndpoint) -> Result<Option<Endpoint>>,
    ) -> Result<Vec<Endpoint>> {
        let mut removed = Vec::new();
        let mut keys = Vec::new();
        for (k, raw) in &self.endpoints {
            if let Some(ep) = pick(k, raw)? {
                keys.push(k.clone());
                removed.push(ep);
            }
        }
        for k in keys {
            self.endpoints.remove(&k);
        }
        Ok(removed)
    }
}

impl NetworkFile {
    /// Every network, with its key (upstream's network ID, the conflist's `name`).
    fn networks(&self) -> impl Iterator<Item = (&String, &Network)> {
        self.network
            .iter()
            .flat_map(|nm| nm.external_interfaces.values())
            .flat_map(|ext| ext.networks.iter())
    }

    /// The network `id`, wherever (under which external interface) it lives.
    pub fn network(&self, id: &str) -> Option<&Network> {
        self.networks().find(|(k, _)| *k == id).map(|(_, n)| n)
    }

    pub fn network_mut(&mut self, id: &str) -> Option<&mut Network> {
        self.network
            .as_mut()?
            .external_interfaces
            .values_mut()
            .find_map(|ext| ext.networks.get_mut(id))
    }

    /// The first subnet network `net` recorded (upstream's `Subnets[0]`: its master's).
    pub fn first_subnet(&self, net: &str) -> Option<ipnetwork::IpNetwork> {
        let s = self.network(net)?.subnets.as_ref()?.first()?;
        s.prefix.to_network().map(crate::encoding::subnet_of)
    }

    /// The external interface (master) under which network `net` recorded `address`'s subnet.
    pub fn external_interface_for(
        &self,
        net: &str,
        address: ipnetwork::IpNetwork,
    ) -> Option<String> {
        let subnet = crate::encoding::subnet_of(address);
        self.network
            .as_ref()?
            .external_interfaces
            .iter()
            .find(|(_, ext)| {
                ext.networks.contains_key(net)
                    && ext
                        .subnets
                        .as_ref()
                        .is_some_and(|s| s.contains(&subnet.to_string()))
            })
            .map(|(name, _)| name.clone())
    }

    /// The records, in any network, whose text mentions `needle` (every record when `None`)
    /// and that `pred` accepts, parsed: (network, key, record).
    pub fn select(
        &self,
        needle: Option<&str>,
        pred: impl Fn(&str, &str, &Endpoint) -> bool,
    ) -> Result<Vec<(String, String, Endpoint)>> {
        // A record can only match if its text holds the needle, JSON-quoted: only those
        // records are parsed.
        let quoted = needle.map(crate::store::json_string);
        let mut out = Vec::new();
        for (net, n) in self.networks() {
            for (k, raw) in &n.endpoints {
                if quoted.as_deref().is_none_or(|q| raw.mentions(q)) {
                    let ep = raw.parse()?;
                    if pred(net, k, &ep) {
                        out.push((net.clone(), k.clone(), ep));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Every record of container `cid`, in any network: (network, key, record).
    pub fn records_of(&self, cid: &str) -> Result<Vec<(String, String, Endpoint)>> {
        self.select(Some(cid), |_, _, e| e.container_id == cid)
    }

    /// The container that owns host veth `name` in any network, if any.
    pub fn veth_owner(&self, name: &str) -> Result<Option<String>> {
        let mut found = self.select(Some(name), |_, _, e| e.host_if_name == name)?;
        Ok(found.pop().map(|(_, _, e)| e.container_id))
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
        let all = f.select(None, |_, _, _| true).unwrap();
        let (net, _, ep) = &all[0];
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
        assert!(f.select(None, |_, _, _| true).unwrap().is_empty());
    }

    #[test]
    fn written_records_are_indented_like_go_and_parse_back() {
        let ep = Endpoint {
            id: "ee86fb8b-eth0".into(),
            container_id: "ee86fb8b".into(),
            host_if_name: "azvc440f455693".into(),
            ..Default::default()
        };
        let raw = RawEndpoint::from_endpoint(&ep).unwrap();
        assert_eq!(raw.parse().unwrap(), ep);
        let mut f = NetworkFile::default();
        f.network
            .get_or_insert_with(Default::default)
            .external_interfaces
            .entry("eth0".into())
            .or_default()
            .networks
            .entry("azure".into())
            .or_default()
            .endpoints
            .insert("ee86fb8b-eth0".into(), raw);
        let text = String::from_utf8(crate::store::to_go_json(&f).unwrap()).unwrap();
        // The record's fields sit one level below its key, the closing brace at the key's level.
        assert!(
            text.contains(
                "\n\t\t\t\t\t\t\t\"ee86fb8b-eth0\": {\n\t\t\t\t\t\t\t\t\"Id\": \"ee86fb8b-eth0\""
            ),
            "{text}"
        );
        assert!(!text.contains("\"PODNameSpace\""), "omitempty");
        let back: NetworkFile = serde_json::from_str(&text).unwrap();
        assert_eq!(
            crate::store::to_go_json(&back).unwrap(),
            text.as_bytes(),
            "stable"
        );
        assert_eq!(
            back.veth_owner("azvc440f455693").unwrap().as_deref(),
            Some("ee86fb8b")
        );
        assert_eq!(
            back.veth_owner("azvc440f45569").unwrap(),
            None,
            "whole strings only"
        );
    }

    #[test]
    fn mentions_matches_whole_json_strings() {
        let cid = "ee86fb8b1d6c4e0f8b7a2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071";
        let pod = "pod-ééééééééééééééééé-x"; // byte 32 of its quoted form is inside an 'é'
        let raw: RawEndpoint = serde_json::from_str(&format!(
            r#"{{"ContainerID":"abc-1","HostIfName":"azv1","Id":"{cid}","PODName":"{pod}"}}"#
        ))
        .unwrap();
        let other_cid = format!("{}0", &cid[..63]); // same head, another ID
        for (needle, want) in [
            (cid, true),
            (&other_cid[..], false),
            (&cid[..40], false),
            (pod, true),
            ("pod-éééééééééééééééééé-x", false),
            ("abc-1", true),
            ("abc", false),
            ("bc-1", false),
            ("azv1", true),
            ("ContainerID", true),
            ("x", false),
            ("a\"b", false),
        ] {
            let quoted = crate::store::json_string(needle);
            assert_eq!(raw.mentions(&quoted), want, "{needle}");
        }
        assert!(
            serde_json::from_str::<RawEndpoint>("[1]").is_err(),
            "records are objects"
        );
    }
}
