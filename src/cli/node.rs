//! A node as its state files and its kernel describe it: what `status`, `reconcile` and
//! `metrics` look at. Read-only: the state files are read under both state locks at once (a
//! consistent pair, the locks held for two file reads), the kernel without locks.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnetwork::IpNetwork;
use serde::Serialize;

use crate::cni::config::ParsedConf;
use crate::encoding::GoIpNet;
use crate::error::{invalid_config, Context, Result};
use crate::ipam::state::IpamFile;
use crate::logging::Logger;
use crate::netlink::{Link, Netlink, Route};
use crate::netns::Netns;
use crate::network::names;
use crate::network::state::{Endpoint, NetworkFile};
use crate::settings::Settings;
use crate::store::lock;

pub(crate) const DEFAULT_CONFLIST: &str = "/etc/cni/net.d/10-azure.conflist";

/// Where the node's plugin keeps its state: the azure-vnet entry of the conflist the runtime
/// uses, with the environment's overrides, resolved as the plugins resolve them.
pub(crate) struct NodeConfig {
    /// The conflist's `name`: the network whose records these are.
    pub network: String,
    pub settings: Settings,
    pub address_space: String,
}

impl NodeConfig {
    /// From `conflist` (the default one if `None` and it exists; else the environment alone).
    pub fn load(conflist: Option<&Path>, vars: &HashMap<String, String>) -> Result<NodeConfig> {
        let path = conflist.map(Path::to_path_buf).or_else(|| {
            let default = PathBuf::from(DEFAULT_CONFLIST);
            default.exists().then_some(default)
        });
        let entry = match &path {
            Some(p) => {
                let bytes = crate::files::read_regular(p, crate::cni::config::MAX_STDIN as u64)
                    .with_context(|| format!("read {}", p.display()))?;
                plugin_entry(&bytes).with_context(|| p.display().to_string())?
            }
            None => {
                serde_json::json!({"cniVersion": "1.1.0", "name": "azure", "type": "azure-vnet"})
            }
        };
        let plugin_conf = serde_json::to_vec(&entry).unwrap_or_default();
        let conf = ParsedConf::parse(&plugin_conf)?;
        Ok(NodeConfig {
            network: conf.conf.name.clone(),
            settings: Settings::resolve(Some(&conf.conf), vars),
            address_space: conf
                .conf
                .ipam
                .as_ref()
                .and_then(|i| i.address_space.clone())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "local".into()),
        })
    }
}

/// The azure-vnet plugin's entry of a conflist, with `cniVersion` and `name` from the list, as
/// libcni passes it.
fn plugin_entry(conflist: &[u8]) -> Result<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_slice(conflist).map_err(|e| invalid_config(format!("not JSON: {e}")))?;
    let mut entry = v["plugins"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["type"] == "azure-vnet"))
        .cloned()
        .ok_or_else(|| invalid_config("no azure-vnet plugin in the conflist"))?;
    for k in ["cniVersion", "name"] {
        if let (Some(o), Some(val)) = (entry.as_object_mut(), v.get(k)) {
            o.insert(k.into(), val.clone());
        }
    }
    Ok(entry)
}

/// Both state files as of one moment, and the CNI operations running then.
pub(crate) struct Snapshot {
    /// The network's endpoint records: (key, record).
    pub records: Vec<(String, Endpoint)>,
    /// Every record's host veth, in any network of the file.
    pub named_veths: HashSet<String>,
    pub ipam: IpamFile,
    /// Container IDs some plugin process is working on (an ADD holds its address before its
    /// record exists; a DEL releases it after its record is gone).
    pub in_flight: HashSet<String>,
    /// Whether this process sees every process's environment (the host's PID namespace and
    /// CAP_SYS_PTRACE): see `cni_operations`.
    pub sees_processes: bool,
}

impl Snapshot {
    pub fn take(cfg: &NodeConfig, log: &Logger) -> Result<Snapshot> {
        let vstore = crate::network::plugin::store_at(&cfg.settings, log);
        let istore = crate::ipam::plugin::store_at(&cfg.settings, log);
        // The plugins never hold one of these while waiting for the other, so holding both
        // (for two file reads) cannot deadlock; it gives a pair no ADD or DEL is half-way
        // through, but for the in-flight ones, which the process scan below names.
        let _v = vstore.lock()?;
        let _i = istore.lock()?;
        let file: NetworkFile = vstore.load()?.value;
        let ipam: IpamFile = istore.load()?.value;
        let (in_flight, sees_processes) = cni_operations();
        let all = file.select(None, |_, _, _| true)?;
        Ok(Snapshot {
            named_veths: all.iter().map(|(_, _, e)| e.host_if_name.clone()).collect(),
            records: all
                .into_iter()
                .filter(|(n, _, _)| *n == cfg.network)
                .map(|(_, k, e)| (k, e))
                .collect(),
            ipam,
            in_flight,
            sees_processes,
        })
    }

    /// Every address in use: address -> owner.
    pub fn allocations(&self, space: &str) -> HashMap<IpAddr, String> {
        let mut out = HashMap::new();
        if let Some(s) = self.ipam.space(space) {
            for p in s.pools.values() {
                for (k, r) in &p.addresses {
                    if let (false, Some(ip)) = (r.is_free(), r.addr.0.or_else(|| k.parse().ok())) {
                        out.insert(ip, r.id.clone());
                    }
                }
            }
        }
        out
    }
}

/// The container IDs of running CNI operations (processes with CNI_COMMAND and
/// CNI_CONTAINERID in their environment), and whether this process can see them all: in a
/// PID namespace of its own it sees none of the node's processes, and without CAP_SYS_PTRACE
/// (`kubectl debug node` drops it) it cannot read the environment of a process with more
/// capabilities than its own, as the runtime and the plugins it runs have.
pub(crate) fn cni_operations() -> (HashSet<String>, bool) {
    // The host's PID namespace has the kernel's thread daemon as pid 2.
    let sees = std::fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd")
        && has_cap_sys_ptrace(&std::fs::read_to_string("/proc/self/status").unwrap_or_default());
    let mut cids = HashSet::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return (cids, false);
    };
    let me = std::process::id().to_string();
    for e in dir.flatten() {
        let name = e.file_name();
        let pid = name.to_string_lossy();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
            continue;
        }
        // (A process may be unreadable even with CAP_SYS_PTRACE: one of another user
        // namespace, a VM's init. Not a runtime's plugin.)
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        let mut command = false;
        let mut cid = None;
        for var in env.split(|b| *b == 0) {
            if var.starts_with(b"CNI_COMMAND=") && var.len() > 12 {
                command = true;
            } else if let Some(c) = var.strip_prefix(b"CNI_CONTAINERID=") {
                cid = Some(String::from_utf8_lossy(c).into_owned());
            }
        }
        if let (true, Some(c)) = (command, cid) {
            cids.insert(c);
        }
    }
    (cids, sees)
}

/// Whether `/proc/self/status` says CAP_SYS_PTRACE (bit 19) is in the effective set.
fn has_cap_sys_ptrace(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 19) != 0)
}

/// The host side as the kernel has it now.
pub(crate) struct KernelView {
    pub links: Vec<Link>,
    pub routes: Vec<Route>,
}

impl KernelView {
    pub fn read(nl: &Netlink) -> Result<KernelView> {
        Ok(KernelView {
            links: nl.links()?,
            routes: nl.routes(true)?,
        })
    }

    fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }

    fn has_host_route(&self, ip: IpAddr, index: u32) -> bool {
        self.routes
            .iter()
            .any(|r| r.dst.ip() == ip && r.dst.prefix() == 32 && r.oif == Some(index))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum ProblemKind {
    AllocationWithoutRecord,
    RecordWithoutAllocation,
    NamespaceGone,
    VethMissing,
    VethDown,
    RouteMissing,
    OrphanVeth,
    OrphanRoute,
}

impl ProblemKind {
    pub const ALL: [ProblemKind; 8] = [
        ProblemKind::AllocationWithoutRecord,
        ProblemKind::RecordWithoutAllocation,
        ProblemKind::NamespaceGone,
        ProblemKind::VethMissing,
        ProblemKind::VethDown,
        ProblemKind::RouteMissing,
        ProblemKind::OrphanVeth,
        ProblemKind::OrphanRoute,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::AllocationWithoutRecord => "allocation-without-record",
            ProblemKind::RecordWithoutAllocation => "record-without-allocation",
            ProblemKind::NamespaceGone => "namespace-gone",
            ProblemKind::VethMissing => "veth-missing",
            ProblemKind::VethDown => "veth-down",
            ProblemKind::RouteMissing => "route-missing",
            ProblemKind::OrphanVeth => "orphan-veth",
            ProblemKind::OrphanRoute => "orphan-route",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Problem {
    pub kind: ProblemKind,
    /// What it is about: an address, an endpoint, a veth, a route.
    pub subject: String,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EndpointView {
    pub endpoint: String,
    pub container_id: String,
    pub pod_namespace: String,
    pub pod_name: String,
    #[serde(serialize_with = "display")]
    pub address: Option<IpNetwork>,
    pub host_veth: String,
    pub netns: String,
    pub veth_present: bool,
    pub veth_up: bool,
    pub host_route: bool,
    pub namespace_alive: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PoolStat {
    pub subnet: String,
    pub size: usize,
    pub in_use: usize,
    pub free: usize,
}

/// What `status` shows and `metrics` counts.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NodeView {
    pub network: String,
    pub endpoints: Vec<EndpointView>,
    pub pools: Vec<PoolStat>,
    pub problems: Vec<Problem>,
    /// Container IDs whose ADD or DEL is running: their half-made state is not a problem.
    pub in_flight: Vec<String>,
}

fn address_of(ep: &Endpoint) -> Option<IpNetwork> {
    ep.ip_addresses
        .iter()
        .flatten()
        .find_map(GoIpNet::to_network)
}

/// Whether a record's pod namespace still exists: its pinned path opens as one, or its veth's
/// peer lives in some namespace (a namespace that is gone takes its veth end with it).
fn namespace_alive(ep: &Endpoint, veth: Option<&Link>) -> bool {
    veth.is_some_and(|l| l.peer_netnsid.is_some())
        || (!ep.network_namespace.is_empty()
            && Netns::open(Path::new(&ep.network_namespace)).is_ok())
}

pub(crate) fn view(cfg: &NodeConfig, snap: &Snapshot, k: &KernelView) -> NodeView {
    let allocations = snap.allocations(&cfg.address_space);
    let mut problems = Vec::new();
    let mut endpoints = Vec::new();
    let mut recorded: HashSet<(IpAddr, &str)> = HashSet::new();
    for (key, ep) in &snap.records {
        let address = address_of(ep);
        let veth = k
            .link(&ep.host_if_name)
            .filter(|l| l.kind.as_deref() == Some("veth"));
        let v = EndpointView {
            endpoint: key.clone(),
            container_id: ep.container_id.clone(),
            pod_namespace: ep.pod_namespace.clone(),
            pod_name: ep.pod_name.clone(),
            address,
            host_veth: ep.host_if_name.clone(),
            netns: ep.network_namespace.clone(),
            veth_present: veth.is_some(),
            veth_up: veth.is_some_and(|l| l.up),
            host_route: match (veth, address) {
                (Some(l), Some(a)) => k.has_host_route(a.ip(), l.index),
                _ => false,
            },
            namespace_alive: namespace_alive(ep, veth),
        };
        let busy = snap.in_flight.contains(&ep.container_id);
        let mut problem = |kind, detail: String| {
            if !busy {
                problems.push(Problem {
                    kind,
                    subject: key.clone(),
                    detail,
                })
            }
        };
        if let Some(a) = address {
            recorded.insert((a.ip(), ep.container_id.as_str()));
            if allocations.get(&a.ip()) != Some(&ep.container_id) {
                let holder = match allocations.get(&a.ip()) {
                    Some(other) => format!("held by {other}"),
                    None => "free".into(),
                };
                problem(
                    ProblemKind::RecordWithoutAllocation,
                    format!("{} is {holder} in the IPAM state", a.ip()),
                );
            }
        }
        if !v.namespace_alive {
            problem(
                ProblemKind::NamespaceGone,
                format!(
                    "{} does not exist",
                    display_or(&v.netns, "(no netns recorded)")
                ),
            );
        } else if !v.veth_present {
            problem(
                ProblemKind::VethMissing,
                format!("no host veth {}", v.host_veth),
            );
        } else if !v.veth_up {
            problem(
                ProblemKind::VethDown,
                format!("host veth {} is down", v.host_veth),
            );
        }
        if v.veth_present && !v.host_route {
            let a = address.map(|a| a.ip().to_string()).unwrap_or_default();
            problem(
                ProblemKind::RouteMissing,
                format!("no route {a} dev {}", v.host_veth),
            );
        }
        endpoints.push(v);
    }
    for (ip, owner) in &allocations {
        if !recorded.contains(&(*ip, owner.as_str())) && !snap.in_flight.contains(owner) {
            problems.push(Problem {
                kind: ProblemKind::AllocationWithoutRecord,
                subject: ip.to_string(),
                detail: format!(
                    "in use by {} with no endpoint record",
                    display_or(owner, "(no owner)")
                ),
            });
        }
    }
    // Host veths and host routes no record names (another run directory's pods would show
    // here too: the subject says whose they are not).
    let by_index: HashMap<u32, &Link> = k.links.iter().map(|l| (l.index, l)).collect();
    for l in &k.links {
        if names::is_host_veth(&l.name)
            && l.kind.as_deref() == Some("veth")
            && !snap.named_veths.contains(&l.name)
            && !busy_veth(cfg, &l.name)
        {
            let peer = if l.peer_netnsid.is_some() {
                "its peer is in a pod namespace"
            } else {
                "its peer never left the host"
            };
            problems.push(Problem {
                kind: ProblemKind::OrphanVeth,
                subject: l.name.clone(),
                detail: format!("no record names it; {peer}"),
            });
        }
    }
    let record_routes: HashSet<(IpAddr, &str)> = snap
        .records
        .iter()
        .filter_map(|(_, e)| Some((address_of(e)?.ip(), e.host_if_name.as_str())))
        .collect();
    for r in &k.routes {
        let Some(dev) = r.oif.and_then(|i| by_index.get(&i)) else {
            continue;
        };
        if names::is_host_veth(&dev.name)
            && r.dst.prefix() == 32
            && r.gw.is_none()
            && snap.named_veths.contains(&dev.name)
            && !record_routes.contains(&(r.dst.ip(), dev.name.as_str()))
            && !busy_veth(cfg, &dev.name)
        {
            problems.push(Problem {
                kind: ProblemKind::OrphanRoute,
                subject: format!("{} dev {}", r.dst.ip(), dev.name),
                detail: "no record of this network names this address on this veth".into(),
            });
        }
    }
    let pools = snap
        .ipam
        .space(&cfg.address_space)
        .map(|s| {
            s.pools
                .values()
                .map(|p| {
                    let in_use = p.addresses.values().filter(|r| !r.is_free()).count();
                    PoolStat {
                        subnet: p.id.clone(),
                        size: p.addresses.len(),
                        in_use,
                        free: p.addresses.len() - in_use,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let mut in_flight: Vec<String> = snap.in_flight.iter().cloned().collect();
    in_flight.sort();
    NodeView {
        network: cfg.network.clone(),
        endpoints,
        pools,
        problems,
        in_flight,
    }
}

/// An ADD, DEL or GC is working on this veth name right now (it holds the name's lock).
fn busy_veth(cfg: &NodeConfig, name: &str) -> bool {
    let path = crate::network::plugin::veth_lock_path_at(&cfg.settings, name);
    matches!(lock::try_acquire(&path), Ok(None))
}

fn display_or<'a>(s: &'a str, or: &'a str) -> &'a str {
    if s.is_empty() {
        or
    } else {
        s
    }
}

fn display<S: serde::Serializer>(
    v: &Option<IpNetwork>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match v {
        Some(a) => s.collect_str(a),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_sys_ptrace_from_proc_status() {
        // (CapEff line, has CAP_SYS_PTRACE?)
        let cases = [
            ("CapEff:\t000001ffffffffff", true),
            ("CapEff:\t0000000000080000", true),
            ("CapEff:\t00000000a80425fb", false), // a container's default set
            ("CapEff:\t0000000000000000", false),
            ("CapEff:\tnot hex", false),
            ("CapPrm:\t000001ffffffffff", false),
            ("", false),
        ];
        for (line, want) in cases {
            let status = format!("Name:\tazure-vnet\n{line}\nCapBnd:\t000001ffffffffff\n");
            assert_eq!(has_cap_sys_ptrace(&status), want, "{line}");
        }
    }
}
