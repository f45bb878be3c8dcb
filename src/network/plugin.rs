//! The `azure-vnet` plugin in transparent mode: ADD, DEL, CHECK, GC and STATUS.
//!
//! Locks: the state lock (`azure-vnet.lock`) is held only for the read-modify-write of the
//! records, never across netlink work or the IPAM exec, so ADDs for different pods run in
//! parallel. A second, striped lock (`veth-XX.lock`, by host veth name) serialises the few
//! operations that race for the same host veth name: two sandboxes of one pod, or a DEL
//! cleaning up a leftover veth while an ADD for the same pod builds a new one.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnetwork::IpNetwork;
use serde_json::Value;

use crate::cni::env::Command;
use crate::cni::result::{CniResult, Dns, Interface, IpConfig, Route as CniRoute};
use crate::cni::skel::{Plugin, Request};
use crate::datapath::{self, Expected, Plan, HOST_VETH_MAC};
use crate::delegate;
use crate::encoding::{mac_to_string, GoBytes, GoIp, GoIpNet};
use crate::error::{invalid_config, runtime, Code, Error, Result};
use crate::logging::Stopwatch;
use crate::netlink::{Link, Netlink};
use crate::netns::Netns;
use crate::network::names;
use crate::network::persist::{Snapshot, VnetStore};
use crate::network::state::{
    DnsInfo, Endpoint, ExternalInterface, Network, NetworkFile, NetworkManager, RawEndpoint,
    RouteInfo, SubnetInfo,
};
use crate::rollback::Rollback;
use crate::store::{lock, LockGuard};

pub const PLUGIN_NAME: &str = "azure-vnet";
/// CNI_ARGS keys we read (upstream's struct, plus kubelet's K8S_POD_UID).
const KNOWN_ARGS: [&str; 4] = [
    "K8S_POD_NAMESPACE",
    "K8S_POD_NAME",
    "K8S_POD_INFRA_CONTAINER_ID",
    "K8S_POD_UID",
];

pub struct NetworkPlugin;

/// Names derived from the request.
struct Ident {
    host_veth: String,
    container_veth: String,
    short_id: String,
    long_id: String,
}

fn ident(req: &Request) -> Ident {
    let a = &req.env.args;
    let key = names::veth_key(
        a.pod_namespace(),
        a.pod_name(),
        &req.env.container_id,
        &req.env.ifname,
    );
    let host_veth = names::host_veth_name(&key);
    Ident {
        container_veth: names::container_veth_name(&host_veth),
        host_veth,
        short_id: names::short_endpoint_id(&req.env.container_id, &req.env.ifname),
        long_id: names::long_endpoint_id(&req.env.container_id, &req.env.ifname),
    }
}

fn veth_lock_path(req: &Request, host_veth: &str) -> PathBuf {
    req.settings
        .lock_dir()
        .join(names::veth_lock_name(host_veth))
}

fn veth_lock(req: &Request, host_veth: &str) -> Result<LockGuard> {
    lock::acquire(&veth_lock_path(req, host_veth), req.settings.lock_timeout)
}

/// This container's endpoint for this interface in this network, under either ID form.
fn find_record(
    file: &NetworkFile,
    req: &Request,
    id: &Ident,
) -> Result<Option<(String, Endpoint)>> {
    let cid = &req.env.container_id;
    Ok(file
        .find_in(&req.conf.conf.name, cid, |k, e| {
            e.container_id == *cid && (k == id.short_id || k == id.long_id)
        })?
        .into_iter()
        .next())
}

/// The network config for the IPAM plugin: the config we got, with `ipam.ipAddress` set when
/// one address is to be released (harmless to IPAM plugins that do not know the key).
fn ipam_stdin(req: &Request, address: Option<IpAddr>) -> Vec<u8> {
    let mut raw = req.conf.raw.clone();
    if let (Some(ip), Some(ipam)) = (address, raw.get_mut("ipam").and_then(Value::as_object_mut)) {
        ipam.insert("ipAddress".into(), Value::from(ip.to_string()));
    }
    serde_json::to_vec(&raw).unwrap_or_default()
}

fn ipam_exec(req: &Request, command: Command, address: Option<IpAddr>) -> Result<Vec<u8>> {
    let ipam = req.conf.ipam()?;
    delegate::exec(
        &ipam.plugin_type,
        command,
        &ipam_stdin(req, address),
        req.vars,
        &req.env.path,
    )
}

fn ipam_release(req: &Request, address: Option<IpAddr>) -> Result<()> {
    ipam_exec(req, Command::Del, address)
        .map(|_| ())
        .map_err(|e| {
            e.with_code(Code::TryAgainLater)
                .context("failed to release address")
        })
}

/// Create the veth pair. A host veth of the same name is deleted first, as upstream does: the
/// name belongs to this pod, and what holds it is a previous sandbox of the pod or a leftover
/// of an interrupted ADD. Anything that is not a veth is someone else's: refused.
fn build_veth(
    host: &Netlink,
    pod: &Netns,
    plan: &Plan,
    snap: &Snapshot,
    req: &Request,
    id: &Ident,
) -> Result<datapath::Veth> {
    // The container end is born as CNI_IFNAME in the pod, so EEXIST is either name.
    let pod_name_taken = |e: Error| {
        e.context(format!(
            "the pod already has an interface named {}",
            req.env.ifname
        ))
    };
    match datapath::create_veth(host, pod, plan) {
        Err(e) if e.is_errno(nix::libc::EEXIST) => {
            let Some(old) = host.link_by_name(&id.host_veth)? else {
                return Err(pod_name_taken(e));
            };
            if old.kind.as_deref() != Some("veth") {
                return Err(runtime(format!(
                    "host interface {} already exists and is not a veth; refusing to delete it",
                    id.host_veth
                )));
            }
            let owner = snap.file()?.veth_owner(&id.host_veth)?.unwrap_or_default();
            req.log.warn(
                "deleting an existing host veth of the same name",
                &[
                    ("veth", Value::from(id.host_veth.as_str())),
                    ("owner", Value::from(owner)),
                ],
            );
            host.delete_link(old.index)?;
            datapath::create_veth(host, pod, plan).map_err(|e| {
                if e.is_errno(nix::libc::EEXIST) {
                    pod_name_taken(e)
                } else {
                    e
                }
            })
        }
        other => other,
    }
}

/// The master interface (spec B.3.1): the conflist's `master`, else the host interface with an
/// address in the pod's subnet.
fn find_master(host: &Netlink, master: Option<&str>, pod: IpNetwork) -> Result<Link> {
    if let Some(name) = master.filter(|m| !m.is_empty()) {
        return host
            .link_by_name(name)?
            .ok_or_else(|| runtime(format!("Failed to find the master interface {name}")));
    }
    let index = host
        .addresses(pod.is_ipv4())?
        .into_iter()
        .find(|a| a.net.network() == pod.network() && a.net.prefix() == pod.prefix())
        .map(|a| a.index)
        .ok_or_else(|| {
            runtime(format!(
                "Failed to find the master interface: no host interface has an address in {}/{} (set \"master\")",
                pod.network(),
                pod.prefix()
            ))
        })?;
    host.link_by_index(index)?
        .ok_or_else(|| runtime("Failed to find the master interface"))
}

/// DNS the endpoint gets: the conflist's `dns` if it names servers, else the IPAM's (upstream
/// keeps the same rule for the endpoint record; we also return it, so a repeated ADD's result,
/// rebuilt from the record, is identical).
fn effective_dns(req: &Request, ipam: &Dns) -> Dns {
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

/// The endpoint record, shaped like the seed's (AKS).
fn endpoint_record(
    req: &Request,
    id: &Ident,
    key: &str,
    address: IpNetwork,
    pod_mac: [u8; 6],
    routes: &[CniRoute],
    dns: &Dns,
) -> Endpoint {
    let a = &req.env.args;
    Endpoint {
        id: key.to_string(),
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

/// Insert the endpoint (and the external interface and network records on first use).
fn record_endpoint(
    file: &mut NetworkFile,
    req: &Request,
    id: &Ident,
    master: &Link,
    address: IpNetwork,
    gateway: Option<IpAddr>,
    ep: Endpoint,
) -> Result<String> {
    let net_id = req.conf.conf.name.clone();
    let subnet = IpNetwork::new(address.network(), address.prefix()).unwrap_or(address);
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
    let key = if taken {
        id.long_id.clone()
    } else {
        id.short_id.clone()
    };
    let raw = RawEndpoint::from_endpoint(&Endpoint {
        id: key.clone(),
        ..ep
    })?;
    net.endpoints.insert(key.clone(), raw);
    Ok(key)
}

/// The ADD result for an endpoint, rebuilt from its record (a repeated ADD).
fn result_from_record(file: &NetworkFile, req: &Request, ep: &Endpoint) -> Result<CniResult> {
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
                .find(|(net, _)| net.contains(address.ip()) && net.prefix() == address.prefix())
                .and_then(|(_, gw)| *gw),
        })
        .collect();
    let routes = ep
        .routes
        .iter()
        .flatten()
        .filter_map(|r| Some(CniRoute::new(r.dst.to_network()?, r.gw.0)))
        .collect();
    let pod_mac = ep.mac_address.0.as_deref().map(mac_to_string);
    Ok(CniResult {
        interfaces: interfaces(&ep.host_if_name, &req.env.ifname, pod_mac, req),
        ips,
        routes,
        dns: Dns {
            nameservers: ep.dns.servers.clone().unwrap_or_default(),
            domain: Some(ep.dns.suffix.clone()).filter(|s| !s.is_empty()),
            ..Default::default()
        },
    })
}

/// `interfaces` of the result: the host veth (for chained plugins such as bandwidth, which
/// look it up there) and the pod interface with its sandbox.
fn interfaces(
    host_veth: &str,
    ifname: &str,
    pod_mac: Option<String>,
    req: &Request,
) -> Vec<Interface> {
    vec![
        Interface {
            name: host_veth.to_string(),
            mac: Some(mac_to_string(&HOST_VETH_MAC)),
            ..Default::default()
        },
        Interface {
            name: ifname.to_string(),
            mac: pod_mac,
            sandbox: req.env.netns.as_ref().map(|p| p.display().to_string()),
            ..Default::default()
        },
    ]
}

fn endpoint_ips(ep: &Endpoint) -> Vec<IpAddr> {
    ep.ip_addresses
        .iter()
        .flatten()
        .filter_map(|n| n.ip.0)
        .collect()
}

fn netns_of(req: &Request) -> Result<Netns> {
    let path = req
        .env
        .netns
        .as_ref()
        .ok_or_else(|| Error::new(Code::InvalidEnv, "CNI_NETNS is not set"))?;
    Netns::open(path)
}

/// Whether an unclaimed host veth is this DEL's to remove: its peer never reached a pod (an
/// interrupted ADD), or it is in this DEL's own namespace. A peer in another namespace may be a
/// newer sandbox of the same pod (same veth name) whose record was lost: leave it.
fn leftover_of_this_pod(host: &Netlink, link: &Link, req: &Request) -> bool {
    let Some(peer_ns) = link.peer_netnsid else {
        return true;
    };
    let ours = req
        .env
        .netns
        .as_deref()
        .and_then(|p| Netns::open(p).ok())
        .and_then(|ns| host.nsid_of(ns.raw_fd()).ok().flatten());
    ours == Some(peer_ns)
}

/// Whether the IPAM plugin speaks CNI 1.1 (GC, STATUS): its VERSION answer lists 1.1.0.
fn ipam_speaks_1_1(req: &Request) -> Result<bool> {
    let out = ipam_exec(req, Command::Version, None)?;
    let v: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
    Ok(v["supportedVersions"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x == "1.1.0")))
}

impl Plugin for NetworkPlugin {
    fn name(&self) -> &'static str {
        PLUGIN_NAME
    }

    fn add(&self, req: &Request) -> Result<CniResult> {
        match req.conf.conf.mode.as_deref() {
            Some("transparent") => {}
            other => {
                return Err(Error::new(
                    Code::UnsupportedField,
                    format!(
                    "mode {other:?} is not supported: this plugin implements \"transparent\" only"
                ),
                ))
            }
        }
        req.env.args.check_known(&KNOWN_ARGS)?;
        req.conf.ipam()?;
        let id = ident(req);
        let pod = netns_of(req)?;
        let vstore = VnetStore::new(req);

        // Everything below, up to the record, is one claim on the host veth name.
        let _veth_guard = veth_lock(req, &id.host_veth)?;
        let mut watch = Stopwatch::new();
        // Read (and, unless it is our own latest output, validated) before anything is done:
        // a state file we could not update at the end is refused now, before IPAM or the
        // kernel are touched.
        let snap = vstore.snapshot(&req.env.container_id)?;
        if let Snapshot::Parsed(l) = &snap {
            if let Some((key, ep)) = find_record(&l.value, req, &id)? {
                // Spec A.3.3: a repeated ADD answers again and leaves the working pod alone.
                req.log.info(
                    "endpoint exists; returning its result",
                    &[("endpoint", Value::from(key.as_str()))],
                );
                return result_from_record(&l.value, req, &ep);
            }
        }
        // One attachment per container: azure-vnet-ipam hands out one address per container
        // ID, and the host veth is named after the pod, so a second interface would share the
        // first one's address and replace its veth (upstream has the same limit, silently).
        if let Some((net, key, _)) = snap.records_of(&req.env.container_id)?.first() {
            return Err(runtime(format!(
                "container {} already has an azure-vnet endpoint ({key} in network {net}): one attachment per container",
                req.env.container_id
            )));
        }
        watch.lap("stateRead");
        if datapath::ensure_ip_forward()? {
            req.log
                .warn("net.ipv4.ip_forward was 0 on the node; enabled it", &[]);
        }

        // Declared before the guard, so it outlives the guard's undo steps.
        let host = Netlink::connect()?;
        watch.lap("netlinkSetup");
        let mut rollback = Rollback::new(req.log);
        let plan = Plan {
            host_veth: &id.host_veth,
            ifname: &req.env.ifname,
            pod_mac: datapath::random_mac()?,
        };
        let veth = build_veth(&host, &pod, &plan, &snap, req, &id)?;
        // Deleting the host end takes the pod end (and the host route) with it.
        rollback.push("delete the veth pair", {
            let host = &host;
            move || host.delete_link(veth.index)
        });
        watch.lap("vethCreate");
        let pending = delegate::spawn(
            &req.conf.ipam()?.plugin_type,
            Command::Add,
            &ipam_stdin(req, None),
            req.vars,
            &req.env.path,
        )
        .map_err(|e| e.context("Failed to allocate pool: Failed to delegate"))?;
        watch.lap("ipamSpawn");
        // While the IPAM plugin runs (about half of an ADD), what does not need the address is
        // done: the host sysctls and, on a thread in the pod, the rename to CNI_IFNAME. The
        // IPAM answer is waited for whatever happens, so an address it handed out is released
        // by the guard. (The veth pair is created before the IPAM exec, not during it: the
        // kernel's netdev registration waits for the other CPU, and an exec in progress there
        // makes it 5x slower.)
        let (prepared, out) = datapath::prepare_pod_while(&pod, &plan, &veth, || {
            let host_done = datapath::prepare_host(&plan);
            (host_done, pending.wait())
        });
        let (host_done, out) = out;
        watch.lap("ipamWait");
        // An IPAM failure is the answer even if building failed too: it came first, as in
        // a sequential ADD.
        let out = out.map_err(|e| e.context("Failed to allocate pool: Failed to delegate"))?;
        // From here the IPAM plugin holds an address for this container, whatever its result
        // says: release by container ID (the container has no other attachment, see above).
        rollback.push("release the IP", move || ipam_release(req, None));
        host_done?;
        let pod_nl = prepared?;
        let ipam =
            CniResult::from_slice(&out, req.conf.version).map_err(|e| e.context("IPAM result"))?;
        let ipc = ipam
            .ips
            .iter()
            .find(|ip| ip.address.is_ipv4())
            .cloned()
            .ok_or_else(|| runtime("IPAM returned no IPv4 address"))?;
        let address = ipc.address;

        // The master: the conflist's, else the one this network already recorded for the
        // pod's subnet (one lookup), else found by address (a dump), as upstream does.
        let known = req
            .conf
            .conf
            .master
            .clone()
            .filter(|m| !m.is_empty())
            .or_else(|| snap.master_for(&req.conf.conf.name, address));
        let master = match known {
            Some(name) => match host.link_by_name(&name)? {
                Some(l) => l,
                None => find_master(&host, req.conf.conf.master.as_deref(), address)?,
            },
            None => find_master(&host, None, address)?,
        };
        datapath::configure_host(&host, &veth, address, master.mtu)?;
        watch.lap("hostNetlink");
        datapath::configure_pod(&pod_nl, &plan, &veth, address, master.mtu)?;
        let pod_mac = plan.pod_mac;
        watch.lap("podNetlink");

        let dns = effective_dns(req, &ipam.dns);
        let ep = endpoint_record(req, &id, "", address, pod_mac, &ipam.routes, &dns);
        let key = vstore.add_endpoint(
            snap,
            &req.conf.conf.name,
            address.ip(),
            address.prefix(),
            &req.env.container_id,
            (&id.short_id, &id.long_id),
            &ep,
            |file| record_endpoint(file, req, &id, &master, address, ipc.gateway, ep.clone()),
        )?;
        watch.lap("stateWrite");
        rollback.disarm();
        req.log.info(
            "endpoint created",
            &[
                ("endpoint", Value::from(key)),
                ("address", Value::from(address.to_string())),
                ("hostVeth", Value::from(id.host_veth.as_str())),
                watch.field(),
            ],
        );
        Ok(CniResult {
            interfaces: interfaces(
                &id.host_veth,
                &req.env.ifname,
                Some(mac_to_string(&pod_mac)),
                req,
            ),
            ips: vec![IpConfig {
                interface: Some(1),
                address,
                gateway: ipc.gateway,
            }],
            routes: ipam.routes,
            dns,
        })
    }

    fn del(&self, req: &Request) -> Result<()> {
        let id = ident(req);
        let vstore = VnetStore::new(req);
        let mut watch = Stopwatch::new();
        let loaded = vstore.load_if_mentions(&req.env.container_id)?;
        let records: Vec<(String, Endpoint)> = match &loaded {
            Some(l) => find_record(&l.value, req, &id)?.into_iter().collect(),
            None => Vec::new(),
        };
        watch.lap("stateRead");
        let host = Netlink::connect()?;
        watch.lap("netlinkSetup");
        if records.is_empty() {
            // State lost, a repeated DEL, or an ADD interrupted before its record: release by
            // container ID, and remove a host veth of ours that no record claims (spec A.3.5).
            let _guard = veth_lock(req, &id.host_veth)?;
            let file: NetworkFile = vstore.load()?;
            if let Some((net, key, _)) = file.records_of(&req.env.container_id)?.first() {
                // The container's one attachment is another one (network or interface): its
                // address and veth are not this DEL's to touch.
                req.log.info(
                    "nothing to delete: the container's endpoint is another one",
                    &[("endpoint", Value::from(format!("{net}/{key}")))],
                );
                return Ok(());
            }
            if file.veth_owner(&id.host_veth)?.is_none() {
                if let Some(link) = host.link_by_name(&id.host_veth)? {
                    if link.kind.as_deref() == Some("veth")
                        && leftover_of_this_pod(&host, &link, req)
                    {
                        host.delete_link(link.index)?;
                        req.log.info(
                            "deleted an unclaimed host veth",
                            &[("veth", Value::from(id.host_veth.as_str()))],
                        );
                    }
                }
            }
            return ipam_release(req, None);
        }
        for (key, ep) in &records {
            let routes = datapath::remove_host_routes(&host, &ep.host_if_name, &endpoint_ips(ep));
            if let Err(e) = routes {
                req.log.warn(
                    "removing host routes failed",
                    &[
                        ("endpoint", Value::from(key.as_str())),
                        ("error", Value::from(e.msg())),
                    ],
                );
            }
            // The veth stays: its peer is in the pod and goes with the pod's namespace, which
            // saves the ~20 ms the kernel needs to delete a veth (upstream does the same).
        }
        watch.lap("hostNetlink");
        // The record goes before the address is released, so the records are at every moment
        // a subset of what IPAM has handed out: a DEL killed in between leaves an allocation
        // without a record, which the runtime's retry releases by container ID.
        let remove = |file: &mut NetworkFile| {
            let mut changed = false;
            if let Some(net) = file.network_mut(&req.conf.conf.name) {
                for (key, _) in &records {
                    let ours = match net.endpoints.get(key) {
                        Some(raw) => raw.parse()?.container_id == req.env.container_id,
                        None => false,
                    };
                    if ours {
                        net.endpoints.remove(key);
                        changed = true;
                    }
                }
            }
            Ok(((), changed))
        };
        vstore.update(loaded, remove)?;
        watch.lap("stateWrite");
        for (_, ep) in &records {
            for ip in endpoint_ips(ep) {
                ipam_release(req, Some(ip))?;
            }
        }
        watch.lap("ipamExec");
        let keys: Vec<Value> = records
            .iter()
            .map(|(k, _)| Value::from(k.as_str()))
            .collect();
        req.log.info(
            "endpoint deleted",
            &[("endpoints", Value::from(keys)), watch.field()],
        );
        Ok(())
    }

    fn check(&self, req: &Request) -> Result<()> {
        let id = ident(req);
        let pod = netns_of(req)?;
        let file: NetworkFile = VnetStore::new(req).load()?;
        let (key, ep) = find_record(&file, req, &id)?.ok_or_else(|| {
            runtime(format!(
                "no endpoint for container {} interface {} in network {}",
                req.env.container_id, req.env.ifname, req.conf.conf.name
            ))
        })?;
        let address = ep
            .ip_addresses
            .iter()
            .flatten()
            .find_map(GoIpNet::to_network)
            .ok_or_else(|| runtime(format!("endpoint {key} has no address")))?;
        let pod_mac = ep.mac_address.0.as_deref().and_then(|m| m.try_into().ok());
        let host = Netlink::connect()?;
        let mut diffs = datapath::verify(
            &host,
            &pod,
            &Expected {
                host_veth: &ep.host_if_name,
                ifname: &req.env.ifname,
                address,
                pod_mac,
            },
        )?;
        if let Err(e) = ipam_exec(req, Command::Check, None) {
            diffs.push(format!("the IPAM plugin says: {}", e.msg()));
        }
        if let Some(prev) = &req.conf.conf.prev_result {
            let prev = CniResult::from_value(prev, req.conf.version)?;
            if !prev.ips.iter().any(|ip| ip.address.ip() == address.ip()) {
                diffs.push(format!("prevResult does not list {address}"));
            }
        }
        if diffs.is_empty() {
            Ok(())
        } else {
            Err(runtime(format!(
                "CHECK of endpoint {key} failed: {}",
                diffs.join("; ")
            )))
        }
    }

    fn gc(&self, req: &Request) -> Result<()> {
        let valid = req.conf.conf.valid_attachments.as_ref().ok_or_else(|| {
            invalid_config("GC needs cni.dev/valid-attachments (an empty list removes everything)")
        })?;
        let valid: HashSet<(String, String)> = valid
            .iter()
            .flat_map(|a| {
                [
                    names::short_endpoint_id(&a.container_id, &a.ifname),
                    names::long_endpoint_id(&a.container_id, &a.ifname),
                ]
                .map(|k| (a.container_id.clone(), k))
            })
            .collect();
        let vstore = VnetStore::new(req);
        let removed: Vec<Endpoint> = vstore.update(None, |file: &mut NetworkFile| {
            let mut removed = Vec::new();
            if let Some(net) = file.network_mut(&req.conf.conf.name) {
                let mut gone = Vec::new();
                for (k, raw) in &net.endpoints {
                    let e = raw.parse()?;
                    if !valid.contains(&(e.container_id.clone(), k.clone())) {
                        gone.push(k.clone());
                        removed.push(e);
                    }
                }
                for k in gone {
                    net.endpoints.remove(&k);
                }
            }
            let changed = !removed.is_empty();
            Ok((removed, changed))
        })?;
        let host = Netlink::connect()?;
        for ep in &removed {
            if let Err(e) = datapath::remove_host_routes(&host, &ep.host_if_name, &endpoint_ips(ep))
            {
                req.log.warn(
                    "gc: removing host routes failed",
                    &[("error", Value::from(e.msg()))],
                );
            }
        }
        // Host veths no record claims: those of the endpoints just removed, and leftovers of
        // ADDs killed before their record. One an ADD is still building holds its veth lock.
        let links = host.links()?;
        for link in links.iter().filter(|l| {
            l.name.starts_with("azv") && l.name.len() == 14 && l.kind.as_deref() == Some("veth")
        }) {
            let Some(_guard) = lock::try_acquire(&veth_lock_path(req, &link.name))? else {
                continue;
            };
            let file: NetworkFile = vstore.load()?;
            if file.veth_owner(&link.name)?.is_some() {
                continue;
            }
            // Look again under the lock: a DEL or the pod's namespace teardown may have
            // removed it since the listing.
            let Some(now) = host.link_by_name(&link.name)? else {
                continue;
            };
            match host.delete_link(now.index) {
                Ok(()) => req.log.info(
                    "gc deleted host veth",
                    &[("veth", Value::from(link.name.as_str()))],
                ),
                Err(e) if e.is_errno(nix::libc::ENODEV) => {}
                Err(e) => return Err(e),
            }
        }
        // An IPAM plugin older than CNI 1.1 has no GC (libcni's DEL of stale cached
        // attachments covers it).
        if ipam_speaks_1_1(req)? {
            ipam_exec(req, Command::Gc, None)?;
        }
        Ok(())
    }

    fn status(&self, req: &Request) -> Result<()> {
        // An IPAM plugin older than CNI 1.1 cannot say; we have nothing else to report.
        if ipam_speaks_1_1(req)? {
            ipam_exec(req, Command::Status, None)?;
        }
        Ok(())
    }
}
