//! The `azure-vnet` plugin in transparent mode: ADD, DEL, CHECK, GC and STATUS.
//!
//! Locks: the state lock (`azure-vnet.lock`) is held only for the read-modify-write of the
//! records, never across netlink work or the IPAM exec, so ADDs for different pods run in
//! parallel. A second, striped lock (`veth-XX.lock`, by host veth name) serialises the few
//! operations that race for the same host veth name: two sandboxes of one pod, or a DEL or GC
//! cleaning up a leftover veth while an ADD for the same pod builds a new one.

use std::collections::HashSet;
use std::path::PathBuf;

use ipnetwork::IpNetwork;
use serde_json::Value;

use crate::cni::config::Attachment;
use crate::cni::env::Command;
use crate::cni::result::{CniResult, IpConfig};
use crate::cni::skel::{Plugin, Request};
use crate::datapath::{self, Expected, Plan};
use crate::encoding::{mac_to_string, parse_mac, subnet_of, GoIpNet};
use crate::error::{invalid_config, runtime, Code, Error, Result};
use crate::logging::{Logger, Stopwatch};
use crate::netlink::{Link, Netlink};
use crate::netns::Netns;
use crate::network::ipam::{self, Pin};
use crate::network::names::{self, Ident};
use crate::network::record;
use crate::network::state::{Endpoint, NetworkFile};
use crate::network::teardown::Teardown;
use crate::rollback::Rollback;
use crate::settings::Settings;
use crate::store::{lock, LockGuard, Store};

pub const PLUGIN_NAME: &str = "azure-vnet";
pub(crate) const STATE_FILE: &str = "azure-vnet.json";
/// CNI_ARGS keys we read (upstream's struct, plus kubelet's K8S_POD_UID).
const KNOWN_ARGS: [&str; 4] = [
    "K8S_POD_NAMESPACE",
    "K8S_POD_NAME",
    "K8S_POD_INFRA_CONTAINER_ID",
    "K8S_POD_UID",
];

pub struct NetworkPlugin;

fn store<'a>(req: &Request<'a>) -> Store<'a> {
    store_at(&req.settings, req.log)
}

/// The endpoint records' file and its lock, where `settings` put them.
pub(crate) fn store_at<'a>(settings: &Settings, log: &'a Logger) -> Store<'a> {
    Store::new(
        settings.run_dir.join(STATE_FILE),
        settings.lock_dir().join("azure-vnet.lock"),
        settings.lock_timeout,
        log,
    )
}

pub(crate) fn veth_lock_path_at(settings: &Settings, host_veth: &str) -> PathBuf {
    settings.lock_dir().join(names::veth_lock_name(host_veth))
}

fn veth_lock_path(req: &Request, host_veth: &str) -> PathBuf {
    veth_lock_path_at(&req.settings, host_veth)
}

fn veth_lock(req: &Request, host_veth: &str) -> Result<LockGuard> {
    lock::acquire(&veth_lock_path(req, host_veth), req.settings.lock_timeout)
}

fn netns_of(req: &Request) -> Result<Netns> {
    let path = req
        .env
        .netns
        .as_ref()
        .ok_or_else(|| Error::new(Code::InvalidEnv, "CNI_NETNS is not set"))?;
    Netns::open(path)
}

fn check_mode(req: &Request) -> Result<()> {
    match req.conf.conf.mode.as_deref() {
        Some("transparent") => Ok(()),
        other => Err(Error::new(
            Code::UnsupportedField,
            format!("mode {other:?} is not supported: this plugin implements \"transparent\" only"),
        )),
    }
}

/// One attachment per container: azure-vnet-ipam hands out one address per container ID, and
/// the host veth is named after the pod, so a second interface would share the first one's
/// address and replace its veth (upstream has the same limit, silently).
fn refuse_second_attachment(mine: &record::Mine, req: &Request) -> Result<()> {
    match mine.first() {
        Some((net, key, _)) => Err(runtime(format!(
            "container {} already has an azure-vnet endpoint ({key} in network {net}): one attachment per container",
            req.env.container_id
        ))),
        None => Ok(()),
    }
}

/// Create the veth pair. A host veth of the same name is deleted first, as upstream does: the
/// name belongs to this pod, and what holds it is a previous sandbox of the pod or a leftover
/// of an interrupted ADD. Anything that is not a veth is someone else's: refused.
fn build_veth(
    host: &Netlink,
    pod: &Netns,
    plan: &Plan,
    file: &NetworkFile,
    log: &Logger,
) -> Result<datapath::Veth> {
    // The container end is born as CNI_IFNAME in the pod, so EEXIST is either name.
    let pod_name_taken = |e: Error| {
        e.context(format!(
            "the pod already has an interface named {}",
            plan.ifname
        ))
    };
    match datapath::create_veth(host, pod, plan) {
        Err(e) if e.is_errno(nix::libc::EEXIST) => {
            let Some(old) = host.link_by_name(plan.host_veth)? else {
                return Err(pod_name_taken(e));
            };
            if old.kind.as_deref() != Some("veth") {
                return Err(runtime(format!(
                    "host interface {} already exists and is not a veth; refusing to delete it",
                    plan.host_veth
                )));
            }
            let owner = file.veth_owner(plan.host_veth)?.unwrap_or_default();
            log.warn(
                "deleting an existing host veth of the same name",
                &[
                    ("veth", Value::from(plan.host_veth)),
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

/// The master interface (spec B.3.1): the conflist's `master`, else the one this network
/// recorded for the pod's subnet, else the host interface with an address in the pod's
/// subnet (a dump), as upstream does.
fn find_master(host: &Netlink, file: &NetworkFile, req: &Request, pod: IpNetwork) -> Result<Link> {
    let conf = req.conf.conf.master.as_deref().filter(|m| !m.is_empty());
    if let Some(name) = conf {
        return host
            .link_by_name(name)?
            .ok_or_else(|| runtime(format!("Failed to find the master interface {name}")));
    }
    if let Some(name) = file.external_interface_for(&req.conf.conf.name, pod) {
        if let Some(l) = host.link_by_name(&name)? {
            return Ok(l);
        }
    }
    let index = host
        .addresses(pod.is_ipv4())?
        .into_iter()
        .find(|a| subnet_of(a.net) == subnet_of(pod))
        .map(|a| a.index)
        .ok_or_else(|| {
            runtime(format!(
                "Failed to find the master interface: no host interface has an address in {} (set \"master\")",
                subnet_of(pod)
            ))
        })?;
    host.link_by_index(index)?
        .ok_or_else(|| runtime("Failed to find the master interface"))
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

/// The interface (CNI_IFNAME) of the attachment a record is for, from its key. A record keyed
/// otherwise (another writer's) gives `eth0`: our IPAM plugin releases and keeps by container
/// (and address), which is all it needs of it.
fn attachment_ifname(ep: &Endpoint) -> String {
    names::ifname_in_endpoint_id(&ep.id, &ep.container_id)
        .filter(|i| crate::cni::env::validate_ifname(i).is_ok())
        .unwrap_or("eth0")
        .to_string()
}

/// DEL of a container with no record here: state lost, a repeated DEL, or an ADD interrupted
/// before its record. Release by container ID, and remove this pod's host veth if no record
/// claims it (spec A.3.5). The caller holds the veth lock.
fn del_unrecorded(
    req: &Request,
    id: &Ident,
    file: &NetworkFile,
    mine: &record::Mine,
) -> Result<()> {
    if let Some((net, key, _)) = mine.first() {
        // The container's one attachment is another one (network or interface): its
        // address and veth are not this DEL's to touch.
        req.log.info(
            "nothing to delete: the container's endpoint is another one",
            &[("endpoint", Value::from(format!("{net}/{key}")))],
        );
        return Ok(());
    }
    let host = Netlink::connect()?;
    let release = |_: Option<&Endpoint>, pin| ipam::release(req, pin);
    let mut teardown = Teardown::new(req.log, &host, &req.conf.conf.name, &release);
    if file.veth_owner(&id.host_veth)?.is_none() {
        if let Some(link) = host.link_by_name(&id.host_veth)? {
            if link.kind.as_deref() == Some("veth") && leftover_of_this_pod(&host, &link, req) {
                teardown.veth(&link);
            }
        }
    }
    teardown.release_all(file.first_subnet(&req.conf.conf.name));
    teardown.finish()
}

impl Plugin for NetworkPlugin {
    fn name(&self) -> &'static str {
        PLUGIN_NAME
    }

    fn add(&self, req: &Request) -> Result<CniResult> {
        check_mode(req)?;
        req.env.args.check_known(&KNOWN_ARGS)?;
        req.conf.ipam()?;
        let id = Ident::of(&req.env);
        let pod = netns_of(req)?;
        let store = store(req);

        // Everything below, up to the record, is one claim on the host veth name.
        let _veth_guard = veth_lock(req, &id.host_veth)?;
        let mut watch = Stopwatch::start();

        // Read the records before anything is done: a state file we could not update at the
        // end is refused now, before IPAM or the kernel are touched.
        let loaded = store.load()?;
        let mine = record::mine(&loaded.value, req)?;
        if let Some((key, ep)) = record::find(&mine, req, &id) {
            // Spec A.3.3: a repeated ADD answers again and leaves the working pod alone.
            req.log.info(
                "endpoint exists; returning its result",
                &[("endpoint", Value::from(key.as_str()))],
            );
            return Ok(record::result(&loaded.value, req, &ep));
        }
        refuse_second_attachment(&mine, req)?;
        watch.lap("stateRead");
        if datapath::ensure_ip_forward()? {
            req.log
                .warn("net.ipv4.ip_forward was 0 on the node; enabled it", &[]);
        }

        // The address, asked for now: the IPAM plugin runs on another CPU (in this process
        // when it is this executable, else exec'd) while this one builds the veth pair. From
        // here it may hold an address for this container, whatever it answers: the guard
        // releases it by container ID (the container has no other attachment, see above).
        // `pending` is declared after the guard, so an early return waits for the IPAM before
        // the guard releases. (The netlink handle is declared before: it outlives the undo.)
        let host = Netlink::connect()?;
        let mut rollback = Rollback::new(req.log);
        let to_ipam = |e: Error| e.context("Failed to allocate pool: Failed to delegate");
        let subnet = loaded.value.first_subnet(&req.conf.conf.name);
        let pending = ipam::spawn_add(req, subnet).map_err(to_ipam)?;
        let pin = Pin {
            subnet,
            ..Pin::default()
        };
        rollback.push("release the IP", move || ipam::release(req, pin));

        // The veth pair.
        let plan = Plan {
            host_veth: &id.host_veth,
            ifname: &req.env.ifname,
            pod_mac: datapath::random_mac()?,
        };
        let veth = build_veth(&host, &pod, &plan, &loaded.value, req.log)?;
        // Deleting the host end takes the pod end (and the host route) with it.
        rollback.push("delete the veth pair", {
            let host = &host;
            move || host.delete_link(veth.index)
        });
        watch.lap("vethCreate");

        // While the IPAM plugin finishes, a short thread does what does not need the address:
        // the host sysctls, then, from inside the pod, it opens what must be opened from
        // there. The answer is waited for whatever happens.
        let (host_done, pod_handles, out) = datapath::prepare_while(&pod, &plan, || pending.wait());
        // An IPAM failure is the answer even if preparing failed too: it came first, as in a
        // sequential ADD.
        let out = out.map_err(to_ipam)?;
        host_done?;
        let pod_handles = pod_handles?;
        let ipam =
            CniResult::from_slice(&out, req.conf.version).map_err(|e| e.context("IPAM result"))?;
        let ipc = ipam
            .ips
            .iter()
            .find(|ip| ip.address.is_ipv4())
            .cloned()
            .ok_or_else(|| runtime("IPAM returned no IPv4 address"))?;
        let address = ipc.address;
        watch.lap("ipam");

        // Routes and addresses, in the pod, then on the host. The host end was born up, so once
        // the pod end is up the pair has its carrier and the host route is not born flagged
        // `linkdown` (a flag the kernel clears only later, from its link-watch work, visible
        // meanwhile in `ip route`).
        let master = find_master(&host, &loaded.value, req, address)?;
        datapath::configure_pod(&host, pod_handles, &plan, &veth, address, master.mtu)?;
        datapath::configure_host(&host, &veth, address, master.mtu)?;
        watch.lap("routes");

        // The record, last: from here on the pod is the runtime's to delete.
        let dns = record::effective_dns(req, &ipam.dns);
        let ep = record::endpoint(req, &id, address, plan.pod_mac, &ipam.routes, &dns);
        let key = store.update(Some(loaded), |file| {
            let key = record::insert(file, req, &id, &master, address, ipc.gateway, ep)?;
            Ok((key, true))
        })?;
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
            interfaces: record::interfaces(req, &id.host_veth, Some(mac_to_string(&plan.pod_mac))),
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
        let id = Ident::of(&req.env);
        let store = store(req);
        let cid = &req.env.container_id;

        // The pod's veth lock first: an ADD of this pod still running (the runtime gave up
        // waiting for it) finishes before this DEL looks, so what it made is found and goes.
        let _veth_guard = veth_lock(req, &id.host_veth)?;
        let mut watch = Stopwatch::start();

        // This container's record for this interface.
        let loaded = store.load::<NetworkFile>()?;
        watch.lap("stateRead");
        let mine = record::mine(&loaded.value, req)?;
        let Some((key, ep)) = record::find(&mine, req, &id) else {
            return del_unrecorded(req, &id, &loaded.value, &mine);
        };

        // Host routes, the record, then the address. The veth stays: its peer is in the pod
        // and goes with the pod's namespace (upstream does the same).
        let host = Netlink::connect()?;
        let release = |_: Option<&Endpoint>, pin| ipam::release(req, pin);
        let mut teardown = Teardown::new(req.log, &host, &req.conf.conf.name, &release);
        teardown.routes(std::slice::from_ref(&ep));
        let removed = teardown.records(&store, Some(loaded), |k, raw| {
            if k != key {
                return Ok(None);
            }
            let e = raw.parse()?;
            Ok((e.container_id == *cid).then_some(e))
        });
        watch.lap("stateWrite");
        if let Some(removed) = removed {
            teardown.release(&removed);
        }
        watch.lap("ipam");
        req.log.info(
            "endpoint deleted",
            &[("endpoint", Value::from(key)), watch.field()],
        );
        teardown.finish()
    }

    fn check(&self, req: &Request) -> Result<()> {
        let id = Ident::of(&req.env);
        let pod = netns_of(req)?;
        let file: NetworkFile = store(req).load()?.value;
        let mine = record::mine(&file, req)?;
        let (key, ep) = record::find(&mine, req, &id).ok_or_else(|| {
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
        // The pod interface is compared with the runtime's prevResult, the chain's final word
        // (a chained `tuning` may have changed its MAC), else with the record.
        let prev = match &req.conf.conf.prev_result {
            Some(v) => Some(CniResult::from_value(v, req.conf.version)?),
            None => None,
        };
        let pod_mac = match &prev {
            Some(p) => p
                .interfaces
                .iter()
                .find(|i| i.name == req.env.ifname && i.sandbox.is_some())
                .and_then(|i| i.mac.as_deref().and_then(parse_mac)),
            None => ep.mac_address.0.as_deref().and_then(|m| m.try_into().ok()),
        };
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
        if let Err(e) = ipam::exec(req, Command::Check, Pin::default()) {
            diffs.push(format!("the IPAM plugin says: {}", e.msg()));
        }
        if prev.is_some_and(|p| !p.ips.iter().any(|ip| ip.address.ip() == address.ip())) {
            diffs.push(format!("prevResult does not list {address}"));
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
        // The spec's entries name an attachment: both fields. One without its interface would
        // keep nothing here (and, by its container, everything in the IPAM plugin's GC).
        if let Some(a) = valid
            .iter()
            .find(|a| a.container_id.is_empty() || a.ifname.is_empty())
        {
            return Err(invalid_config(format!(
                "cni.dev/valid-attachments: an entry without its containerID or ifname \
                 (containerID {:?}, ifname {:?})",
                a.container_id, a.ifname
            )));
        }
        let valid: HashSet<(&str, String)> = valid
            .iter()
            .flat_map(|a| {
                [
                    names::short_endpoint_id(&a.container_id, &a.ifname),
                    names::long_endpoint_id(&a.container_id, &a.ifname),
                ]
                .map(|k| (a.container_id.as_str(), k))
            })
            .collect();
        let store = store(req);
        let host = Netlink::connect()?;
        // A removed record's address goes as its DEL would have given it back: as its own
        // container's. The IPAM plugin's GC that follows keys on containers only, so it would
        // keep the address of an attachment whose container is listed with another interface.
        let release = |ep: Option<&Endpoint>, pin| match ep {
            // (A record without its container, by another writer: nothing to release as.)
            Some(ep) if ep.container_id.is_empty() => Ok(()),
            Some(ep) => ipam::release_of(req, &ep.container_id, &attachment_ifname(ep), pin),
            None => ipam::release(req, pin),
        };
        let mut teardown = Teardown::new(req.log, &host, &req.conf.conf.name, &release);

        // The records of attachments that are not valid, their host routes, their addresses.
        let removed = teardown
            .records(&store, None, |k, raw| {
                let e = raw.parse()?;
                Ok((!valid.contains(&(e.container_id.as_str(), k.to_string()))).then_some(e))
            })
            .unwrap_or_default();
        teardown.routes(&removed);
        teardown.release(&removed);

        // Host veths: those of the removed records, and strays whose peer never left the host.
        // A veth whose peer is in some pod and that no record here names belongs to another
        // run directory or to an upstream install: not ours to touch.
        let gone: HashSet<&str> = removed.iter().map(|e| e.host_if_name.as_str()).collect();
        for link in host.links()?.iter().filter(|l| {
            l.kind.as_deref() == Some("veth")
                && (gone.contains(l.name.as_str())
                    || (names::is_host_veth(&l.name) && l.peer_netnsid.is_none()))
        }) {
            // One an ADD is building holds its veth lock; one a record still names (a newer
            // sandbox of the same pod) stays.
            let Some(_guard) = lock::try_acquire(&veth_lock_path(req, &link.name))? else {
                continue;
            };
            if store
                .load::<NetworkFile>()?
                .value
                .veth_owner(&link.name)?
                .is_some()
            {
                continue;
            }
            teardown.veth(link);
        }
        // The IPAM plugin's GC sees every network's addresses (one state file): it keeps, too,
        // those of every record still here, the other networks' and any this GC failed to
        // remove, so that no address a record names is ever freed.
        let recorded = store.load::<NetworkFile>().and_then(|l| {
            Ok(l.value
                .select(None, |_, _, e| !e.container_id.is_empty())?
                .into_iter()
                .map(|(_, _, ep)| Attachment {
                    ifname: attachment_ifname(&ep),
                    container_id: ep.container_id,
                })
                .collect())
        });
        teardown.ipam_gc(req, recorded);
        teardown.finish()
    }

    fn status(&self, req: &Request) -> Result<()> {
        // A config every ADD would refuse cannot serve one: STATUS says so, as ADD would.
        check_mode(req)?;
        // An IPAM plugin older than CNI 1.1 cannot say; we have nothing else to report.
        if ipam::speaks_1_1(req)? {
            ipam::exec(req, Command::Status, Pin::default())?;
        }
        Ok(())
    }
}
