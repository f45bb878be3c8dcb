//! What azure-vnet records about an endpoint in `azure-vnet.json`, and what it answers from a
//! record: the seed-shaped endpoint record (spec A.2), its place in the file (external
//! interface, network, subnet, endpoint key), and the ADD result rebuilt from it.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde_json::Value;

use crate::cni::result::{CniResult, Dns, Interface, IpConfig, Route};
use crate::cni::skel::Request;
use crate::datapath::HOST_VETH_MAC;
use crate::encoding::{mac_to_string, subnet_of, GoBytes, GoIp, GoIpNet};
use crate::error::Result;
use crate::netlink::Link;
use crate::network::names::Ident;
use crate::network::state::{
    DnsInfo, Endpoint, ExternalInterface, Network, NetworkFile, NetworkManager, RawEndpoint,
    RouteInfo, SubnetInfo,
};

/// This container's records, in any network: (network, key, record). One pass over the file.
pub(crate) type Mine = Vec<(String, String, Endpoint)>;

pub(crate) fn mine(file: &NetworkFile, req: &Request) -> Result<Mine> {
    file.records_of(&req.env.container_id)
}

/// Among the container's records, its endpoint for this interface in the request's network,
/// under either ID.
pub(crate) fn find(mine: &Mine, req: &Request, id: &Ident) -> Option<(String, Endpoint)> {
    let net = &req.conf.conf.name;
    mine.iter()
        .find(|(n, k, _)| n == net && id.is_key(k))
        .map(|(_, k, e)| (k.clone(), e.clone()))
}

/// DNS the endpoint gets: the conflist's `dns` if it names servers, else the IPAM's (upstream
/// keeps the same rule for the record; we also return it, so a repeated ADD's result, rebuilt
/// from the record, is identical).
pub(crate) fn effective_dns(req: &Request, ipam: &Dns) -> Dns {
    match &req.conf.conf.dns {
        Some(d) if !d.nameservers.is_empty() => d.clone(),
        _ => ipam.clone(),
    }
}

fn bool_field(req: &Request, key: &str) -> bool {
    req.conf
        .conf
        .extra
        .get(key)
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// The endpoint record, shaped like the seed's (AKS); its `Id` is set by [`insert`].
pub(crate) fn endpoint(
    req: &Request,
    id: &Ident,
    address: IpNetwork,
    pod_mac: [u8; 6],
    routes: &[Route],
    dns: &Dns,
) -> Endpoint {
    let a = &req.env.args;
    Endpoint {
        if_name: id.container_veth.clone(),
        host_if_name: id.host_veth.clone(),
        mac_address: GoBytes(Some(pod_mac.to_vec())),
        infra_vnet_ip: GoIpNet::empty(),
        ip_addresses: Some(vec![GoIpNet::from_network(&address)]),
        gateways: Some(vec![GoIp::unspecified_v4()]),
        dns: DnsInfo {
            suffix: dns.domain.clone().unwrap_or_default(),
            servers: (!dns.nameservers.is_empty()).then(|| dns.nameservers.clone()),
            options: None,
            ..Default::default()
        },
        routes: (!routes.is_empty()).then(|| {
            routes
                .iter()
                .map(|r| RouteInfo {
                    dst: GoIpNet::new(r.dst.network(), r.dst.prefix()),
                    gw: GoIp(r.gw),
                    ..Default::default()
                })
                .collect()
        }),
        enable_snat_on_host: bool_field(req, "enableSnatOnHost"),
        network_namespace: req
            .env
            .netns
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        container_id: req.env.container_id.clone(),
        pod_name: a.pod_name().unwrap_or_default().to_string(),
        pod_namespace: a.pod_namespace().unwrap_or_default().to_string(),
        ..Default::default()
    }
}

/// Insert `ep` under the request's network, creating the external interface (`master`), the
/// network and its subnet records on first use, as upstream does. Returns the endpoint's key.
pub(crate) fn insert(
    file: &mut NetworkFile,
    req: &Request,
    id: &Ident,
    master: &Link,
    address: IpNetwork,
    gateway: Option<IpAddr>,
    ep: Endpoint,
) -> Result<String> {
    let net_id = req.conf.conf.name.clone();
    let subnet = subnet_of(address);
    let subnet_str = subnet.to_string();
    let nm = file.network.get_or_insert_with(NetworkManager::default);
    let ext_name = nm
        .external_interfaces
        .iter()
        .find(|(_, x)| x.networks.contains_key(&net_id))
        .map(|(k, _)| k.clone())
        .unwrap_or_else(|| master.name.clone());
    let ext = nm
        .external_interfaces
        .entry(ext_name.clone())
        .or_insert_with(|| ExternalInterface {
            name: ext_name,
            mac_address: GoBytes(master.mac.map(|m| m.to_vec())),
            ipv4_gateway: GoIp::unspecified_v4(),
            ipv6_gateway: GoIp::unspecified_v6(),
            ..Default::default()
        });
    let subnets = ext.subnets.get_or_insert_with(Vec::new);
    if !subnets.contains(&subnet_str) {
        subnets.push(subnet_str);
    }
    let net = ext
        .networks
        .entry(net_id.clone())
        .or_insert_with(|| Network {
            id: net_id,
            mode: req.conf.conf.mode.clone().unwrap_or_default(),
            enable_snat_on_host: bool_field(req, "enableSnatOnHost"),
            ..Default::default()
        });
    let subnets = net.subnets.get_or_insert_with(Vec::new);
    if !subnets
        .iter()
        .any(|s| s.prefix.to_network() == Some(subnet))
    {
        subnets.push(SubnetInfo {
            family: if address.is_ipv4() { 2 } else { 10 },
            prefix: GoIpNet::from_network(&subnet),
            gateway: GoIp(gateway),
            primary_ip: GoIp(None),
            ..Default::default()
        });
    }
    // Spec A.3.2: runtimes whose IDs share 8 characters must not collide on the short ID.
    let taken = match net.endpoints.get(&id.short_id) {
        Some(other) => other.parse()?.container_id != req.env.container_id,
        None => false,
    };
    let key = if taken { &id.long_id } else { &id.short_id };
    let raw = RawEndpoint::from_endpoint(&Endpoint {
        id: key.clone(),
        ..ep
    })?;
    net.endpoints.insert(key.clone(), raw);
    Ok(key.clone())
}

/// The ADD result for an endpoint, rebuilt from its record (a repeated ADD).
pub(crate) fn result(file: &NetworkFile, req: &Request, ep: &Endpoint) -> CniResult {
    let gateways: Vec<(IpNetwork, Option<IpAddr>)> = file
        .network(&req.conf.conf.name)
        .and_then(|n| n.subnets.as_ref())
        .map(|s| {
            s.iter()
                .filter_map(|s| Some((s.prefix.to_network()?, s.gateway.0)))
                .collect()
        })
        .unwrap_or_default();
    let ips = ep
        .ip_addresses
        .iter()
        .flatten()
        .filter_map(GoIpNet::to_network)
        .map(|address| IpConfig {
            interface: Some(1),
            address,
            gateway: gateways
                .iter()
                .find(|(net, _)| subnet_of(*net) == subnet_of(address))
                .and_then(|(_, gw)| *gw),
        })
        .collect();
    let routes = ep
        .routes
        .iter()
        .flatten()
        .filter_map(|r| Some(Route::new(r.dst.to_network()?, r.gw.0)))
        .collect();
    let pod_mac = ep.mac_address.0.as_deref().map(mac_to_string);
    CniResult {
        interfaces: interfaces(req, &ep.host_if_name, pod_mac),
        ips,
        routes,
        dns: Dns {
            nameservers: ep.dns.servers.clone().unwrap_or_default(),
            domain: Some(ep.dns.suffix.clone()).filter(|s| !s.is_empty()),
            ..Default::default()
        },
    }
}

/// `interfaces` of the result: the host veth (for chained plugins such as bandwidth, which
/// look it up there) and the pod interface with its sandbox.
pub(crate) fn interfaces(
    req: &Request,
    host_veth: &str,
    pod_mac: Option<String>,
) -> Vec<Interface> {
    vec![
        Interface {
            name: host_veth.to_string(),
            mac: Some(mac_to_string(&HOST_VETH_MAC)),
            ..Default::default()
        },
        Interface {
            name: req.env.ifname.clone(),
            mac: pod_mac,
            sandbox: req.env.netns.as_ref().map(|p| p.display().to_string()),
            ..Default::default()
        },
    ]
}

/// The endpoint's addresses.
pub(crate) fn ips(ep: &Endpoint) -> Vec<IpAddr> {
    ep.ip_addresses
        .iter()
        .flatten()
        .filter_map(|n| n.ip.0)
        .collect()
}

/// ADD's record path and DEL's lookup on a file's text, without the kernel: what ADD records
/// for the request (`vars`, `conf`) is inserted into `state`, written, read back, and found
/// again as DEL finds it, equal to what was recorded, with every other record kept. `Ok(false)`
/// when ADD would not record (refused input, a state file that does not load, an existing
/// attachment of the container). For the fuzz target `names` and the unit tests.
#[cfg(any(test, feature = "internals"))]
pub fn add_then_find(
    state: &[u8],
    vars: &std::collections::HashMap<String, String>,
    conf: &[u8],
) -> std::result::Result<bool, String> {
    use crate::cni::config::ParsedConf;
    use crate::cni::env::CniEnv;
    use crate::store::{parse_state, to_go_json};
    let path = std::path::Path::new("azure-vnet.json");
    let (Ok(env), Ok(conf)) = (CniEnv::from_vars(vars), ParsedConf::parse(conf)) else {
        return Ok(false);
    };
    let Ok(mut file) = parse_state::<NetworkFile>(path, state) else {
        return Ok(false);
    };
    let log = crate::logging::Logger::discard();
    let req = Request {
        settings: crate::settings::Settings::resolve(Some(&conf.conf), vars),
        env,
        conf,
        vars,
        log: &log,
    };
    if req.conf.validate_name().is_err()
        || !matches!(file.records_of(&req.env.container_id), Ok(r) if r.is_empty())
    {
        return Ok(false);
    }
    let Ok(before) = file.select(None, |_, _, _| true) else {
        return Ok(false);
    };
    let id = Ident::of(&req.env);
    let address: IpNetwork = "10.224.0.77/16".parse().map_err(|e| format!("{e}"))?;
    let master = Link {
        index: 2,
        name: "eth0".into(),
        mac: Some([0, 0x0d, 0x3a, 0x4b, 0x1c, 0x2d]),
        mtu: 1500,
        up: true,
        kind: None,
        peer_index: None,
        peer_netnsid: None,
    };
    let ep = endpoint(&req, &id, address, [2, 0, 0, 0, 0, 1], &[], &Dns::default());
    let key = insert(&mut file, &req, &id, &master, address, None, ep.clone())
        .map_err(|e| format!("insert: {e}"))?;
    let text = to_go_json(&file).map_err(|e| format!("serialize: {e}"))?;
    let back: NetworkFile = parse_state(path, &text).map_err(|e| format!("reload: {e}"))?;
    let mine = mine(&back, &req).map_err(|e| format!("find: {e}"))?;
    let (k, found) = find(&mine, &req, &id).ok_or("the record written is not found again")?;
    if k != key || found != (Endpoint { id: key, ..ep }) {
        return Err(format!("found {k:?} {found:?}"));
    }
    let after = back
        .select(None, |_, _, _| true)
        .map_err(|e| format!("{e}"))?;
    if after.len() != before.len() + 1 {
        return Err(format!(
            "{} records before, {} after",
            before.len(),
            after.len()
        ));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::config::ParsedConf;
    use crate::cni::env::CniEnv;
    use crate::logging::Logger;
    use crate::settings::Settings;
    use std::collections::HashMap;

    const CONF: &str = r#"{"cniVersion":"0.3.0","name":"azure","type":"azure-vnet","mode":"transparent","ipam":{"type":"azure-vnet-ipam"}}"#;

    fn request<'a>(vars: &'a HashMap<String, String>, log: &'a Logger, conf: &str) -> Request<'a> {
        let conf = ParsedConf::parse(conf.as_bytes()).unwrap();
        Request {
            env: CniEnv::from_vars(vars).unwrap(),
            settings: Settings::resolve(Some(&conf.conf), vars),
            conf,
            vars,
            log,
        }
    }

    fn vars(cid: &str, ifname: &str, pod: &str) -> HashMap<String, String> {
        [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", cid),
            ("CNI_NETNS", "/var/run/netns/cni-1"),
            ("CNI_IFNAME", ifname),
            ("CNI_PATH", "/opt/cni/bin"),
            (
                "CNI_ARGS",
                &format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}"),
            ),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn master() -> Link {
        Link {
            index: 2,
            name: "eth0".into(),
            mac: crate::encoding::parse_mac("000D3A4B1C2D"),
            mtu: 1500,
            up: true,
            kind: None,
            peer_index: None,
            peer_netnsid: None,
        }
    }

    /// Record `cid` as an ADD would, through the file's text (what the next process reads).
    fn add(file: &mut NetworkFile, cid: &str, ifname: &str, pod: &str, ip: &str) -> String {
        let (v, log) = (vars(cid, ifname, pod), Logger::discard());
        let req = request(&v, &log, CONF);
        let id = Ident::of(&req.env);
        let address: IpNetwork = ip.parse().unwrap();
        let dns = Dns {
            nameservers: vec!["168.63.129.16".into()],
            ..Default::default()
        };
        let routes = [Route::new(
            "0.0.0.0/0".parse().unwrap(),
            Some("10.224.0.1".parse().unwrap()),
        )];
        let ep = endpoint(&req, &id, address, [2, 0, 0, 0, 0, 1], &routes, &dns);
        let gw = Some("10.224.0.1".parse().unwrap());
        let key = insert(file, &req, &id, &master(), address, gw, ep).unwrap();
        let text = crate::store::to_go_json(file).unwrap();
        *file = serde_json::from_slice(&text).unwrap();
        key
    }

    #[test]
    fn records_are_found_again_and_answer_like_the_first_add() {
        let mut file = NetworkFile::default();
        // (container ID, CNI_IFNAME, pod name, address, key)
        let table = [
            (
                "ee86fb8be619",
                "eth0",
                "nginx",
                "10.224.0.24/16",
                "ee86fb8b-eth0",
            ),
            (
                "ee86fb8bXXXX",
                "eth0",
                "other",
                "10.224.0.25/16",
                "ee86fb8bXXXX/eth0",
            ),
            ("c3", "e\"1\\", "q\"uote\\d", "10.224.0.26/16", "c3-e\"1\\"),
            (
                "c4",
                "é\u{1}\u{7f}",
                "pod-é",
                "10.224.0.27/16",
                "c4-é\u{1}\u{7f}",
            ),
        ];
        for (cid, ifname, pod, ip, want) in table {
            assert_eq!(add(&mut file, cid, ifname, pod, ip), want);
        }
        for (cid, ifname, pod, ip, key) in table {
            let (v, log) = (vars(cid, ifname, pod), Logger::discard());
            let req = request(&v, &log, CONF);
            let id = Ident::of(&req.env);
            let (k, ep) = find(&mine(&file, &req).unwrap(), &req, &id).expect(cid);
            assert_eq!(k, key);
            assert_eq!(ep.id, key);
            assert_eq!(ep.pod_name, pod);
            assert_eq!(ep.host_if_name, id.host_veth);
            assert_eq!(ips(&ep), [ip.parse::<IpNetwork>().unwrap().ip()]);
            let res = result(&file, &req, &ep);
            assert_eq!(res.ips[0].address.to_string(), ip);
            assert_eq!(res.ips[0].gateway.unwrap().to_string(), "10.224.0.1");
            assert_eq!(res.interfaces[1].name, ifname);
            assert_eq!(res.interfaces[1].mac.as_deref(), Some("02:00:00:00:00:01"));
            assert_eq!(res.dns.nameservers, ["168.63.129.16"]);
        }
        let net = file.network("azure").unwrap();
        assert_eq!(net.subnets.as_ref().unwrap().len(), 1, "one subnet record");
        assert_eq!(net.endpoints.len(), 4);
    }

    #[test]
    fn hostile_names_are_recorded_and_found_again() {
        let mut state = Vec::new();
        // (container ID, CNI_IFNAME, pod name): each added to the file the one before left.
        for (cid, ifname, pod) in [
            ("c1", "eth0", "plain"),
            ("c2", "e\"th\\0", "q\"uo\\te"),
            ("c3", "\u{1}\u{7f}\u{e9}", "\u{2603}\u{1b}[0m"),
            ("c1x", "eth0", "x"), // shares no prefix: short ID
            ("c2-long-id", "\"", "}{"),
        ] {
            let v = vars(cid, ifname, pod);
            assert_eq!(
                add_then_find(&state, &v, CONF.as_bytes()),
                Ok(true),
                "{cid}"
            );
            // Keep what was recorded for the next round, as the next process would read it.
            let mut file: NetworkFile = serde_json::from_slice(&state).unwrap_or_default();
            let (log, v2) = (Logger::discard(), v.clone());
            let req = request(&v2, &log, CONF);
            let id = Ident::of(&req.env);
            let address: IpNetwork = "10.224.0.9/16".parse().unwrap();
            let ep = endpoint(&req, &id, address, [2; 6], &[], &Dns::default());
            insert(&mut file, &req, &id, &master(), address, None, ep).unwrap();
            state = crate::store::to_go_json(&file).unwrap();
        }
        let v = vars("c1", "eth0", "plain");
        assert_eq!(
            add_then_find(&state, &v, CONF.as_bytes()),
            Ok(false),
            "attached"
        );
        assert_eq!(
            add_then_find(b"{", &v, CONF.as_bytes()),
            Ok(false),
            "corrupt"
        );
    }

    #[test]
    fn conflist_dns_with_servers_wins_over_the_ipams() {
        let (v, log) = (vars("c1", "eth0", "p"), Logger::discard());
        let ipam = Dns {
            nameservers: vec!["168.63.129.16".into()],
            ..Default::default()
        };
        for (conf, want) in [
            (CONF.to_string(), "168.63.129.16"),
            (
                CONF.replace("\"mode\"", r#""dns":{"nameservers":["10.0.0.10"]},"mode""#),
                "10.0.0.10",
            ),
            (
                CONF.replace("\"mode\"", r#""dns":{"search":["x"]},"mode""#),
                "168.63.129.16",
            ),
        ] {
            let req = request(&v, &log, &conf);
            assert_eq!(effective_dns(&req, &ipam).nameservers, [want], "{conf}");
        }
    }
}
