//! `azure-vnet reconcile`: what no live pod holds, shown, and with `--apply` released through
//! the teardown DEL and GC share.
//!
//! Live attachments are what the runtime itself keeps: libcni's result cache
//! (`/var/lib/cni/results/<network>-<container>-<ifname>`, which containerd, CRI-O's libcni
//! users and podman write for every attachment they have added and not deleted), for a pod
//! whose namespace still exists. Everything else of this run directory goes: records, their
//! host routes and veths, addresses, and host veths whose peer never left the host.
//!
//! Safe against an ADD in flight, which holds an address before its record exists (and a pod
//! whose ADD just finished, before the runtime wrote its cache entry): a candidate must be
//! one in two looks `--grace` apart, no CNI operation for its container may be running (a scan
//! of the node's processes), and an address is released under the IPAM state lock after one
//! last scan, so no ADD can take it in between. No lock is held for longer than that.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::cli::node::{cni_operations, NodeConfig, Snapshot};
use crate::cli::status::{look, table};
use crate::cli::{Options, Usage};
use crate::error::{runtime, Result};
use crate::logging::Logger;
use crate::netlink::Netlink;
use crate::network::state::{Endpoint, NetworkFile};
use crate::network::teardown::Teardown;
use crate::store::lock;

const HELP: &str = "\
usage: azure-vnet reconcile [--apply] [--json] [--conflist FILE] [--cache-dir DIR]
                            [--grace SECONDS]

Shows (and with --apply releases) what no live pod holds: endpoint records, their host routes
and veths, addresses, and host veths whose peer never left the host. Live attachments are the
runtime's own: libcni's result cache (--cache-dir, default /var/lib/cni/results) for a pod
whose network namespace still exists. Dry run by default.

Safe while pods start: something counts only if it is there in two looks --grace seconds apart
(default 5), never while a CNI operation for its container runs (run it in the host's PID
namespace with CAP_SYS_PTRACE so it can see them: --apply refuses otherwise), and an address is
released under the IPAM state lock, so no ADD can be given it meanwhile. Between a pod's last
CNI plugin and the runtime's cache entry for it only --grace protects the pod: keep it longer
than the runtime could ever stall there.

Exit status: 0 nothing to do (or all done), 1 something to do (dry run) or not all done,
2 cannot tell.
";

/// One thing to remove, and why.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Item {
    /// An endpoint record (key) of a container that is not a live attachment.
    Record { key: String, container_id: String },
    /// An address held by a container that is not a live attachment, with no record.
    Address {
        address: IpAddr,
        container_id: String,
    },
    /// A host veth whose peer never left the host, named by no record.
    StrayVeth { name: String },
}

impl Item {
    fn describe(&self) -> (&'static str, String) {
        match self {
            Item::Record { key, .. } => ("remove record", key.clone()),
            Item::Address { address, .. } => ("release address", address.to_string()),
            Item::StrayVeth { name } => ("delete veth", name.clone()),
        }
    }
}

/// The attachments the runtime keeps for `network`: (container ID, interface name).
fn cached_attachments(dir: &Path, network: &str) -> Result<HashSet<(String, String)>> {
    let mut out = HashSet::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => {
            return Err(crate::error::Error::from(e).context(format!("read {}", dir.display())))
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // (An entry holds a result and the network's config, itself at most 1 MiB.) One that
        // cannot be read is not taken for a dead pod: the answer is "cannot tell".
        let bytes = match crate::files::read_regular(&path, 4 << 20) {
            Ok(b) => b,
            // Removed meanwhile, or not an entry at all (a FIFO, a directory).
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidInput
                ) =>
            {
                continue
            }
            Err(err) => {
                return Err(
                    crate::error::Error::from(err).context(format!("read {}", path.display()))
                )
            }
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        if v["networkName"] != network {
            continue;
        }
        if let (Some(c), Some(i)) = (v["containerId"].as_str(), v["ifName"].as_str()) {
            out.insert((c.to_string(), i.to_string()));
        }
    }
    Ok(out)
}

/// The interface a record's key names (`<cid8>-<ifname>` or `<cid>/<ifname>`).
fn ifname_of(key: &str, cid: &str) -> String {
    if let Some(i) = key.strip_prefix(&format!("{cid}/")) {
        return i.to_string();
    }
    let head: String = cid.chars().take(8).collect();
    key.strip_prefix(&format!("{head}-"))
        .unwrap_or(key)
        .to_string()
}

/// What one look finds to remove, with why.
fn plan(
    cfg: &NodeConfig,
    snap: &Snapshot,
    view: &crate::cli::node::NodeView,
    live: &HashSet<(String, String)>,
) -> BTreeMap<Item, String> {
    let mut out = BTreeMap::new();
    let live_cids: HashSet<&str> = live.iter().map(|(c, _)| c.as_str()).collect();
    let mut kept_cids = HashSet::new();
    for (e, (key, ep)) in view.endpoints.iter().zip(&snap.records) {
        if snap.in_flight.contains(&ep.container_id) {
            kept_cids.insert(ep.container_id.as_str());
            continue;
        }
        let cached = live.contains(&(ep.container_id.clone(), ifname_of(key, &ep.container_id)));
        let why = match (cached, e.namespace_alive) {
            (true, true) => {
                kept_cids.insert(ep.container_id.as_str());
                continue;
            }
            (false, _) => "the runtime has no such attachment (no libcni cache entry)",
            (true, false) => "its pod's network namespace is gone",
        };
        out.insert(
            Item::Record {
                key: key.clone(),
                container_id: ep.container_id.clone(),
            },
            format!("{}: {why}", pod_of(ep)),
        );
    }
    let recorded: HashSet<(IpAddr, &str)> = snap
        .records
        .iter()
        .filter_map(|(_, e)| {
            let a = e.ip_addresses.as_ref()?.first()?.ip.0?;
            Some((a, e.container_id.as_str()))
        })
        .collect();
    for (ip, owner) in snap.allocations(&cfg.address_space) {
        if owner.is_empty()
            || recorded.contains(&(ip, owner.as_str()))
            || kept_cids.contains(owner.as_str())
            || live_cids.contains(owner.as_str())
            || snap.in_flight.contains(&owner)
        {
            continue;
        }
        out.insert(
            Item::Address {
                address: ip,
                container_id: owner.clone(),
            },
            format!("held by {owner}, which is no live attachment and has no record"),
        );
    }
    for p in &view.problems {
        if p.kind == crate::cli::node::ProblemKind::OrphanVeth
            && p.detail.contains("never left the host")
        {
            out.insert(
                Item::StrayVeth {
                    name: p.subject.clone(),
                },
                "named by no record; its peer never left the host (an interrupted ADD)".into(),
            );
        }
    }
    out
}

fn pod_of(ep: &Endpoint) -> String {
    if ep.pod_name.is_empty() {
        format!("container {}", ep.container_id)
    } else {
        format!("pod {}/{}", ep.pod_namespace, ep.pod_name)
    }
}

#[derive(Serialize)]
struct Outcome<'a> {
    item: &'a Item,
    action: &'static str,
    subject: String,
    why: &'a str,
    done: Option<bool>,
}

pub(crate) fn reconcile_cmd(p: &mut lexopt::Parser) -> std::result::Result<i32, Usage> {
    let o = Options::parse(p, &["conflist", "cache-dir", "grace"], &["apply", "json"])?;
    if o.help {
        print!("{HELP}");
        return Ok(0);
    }
    let grace = match o.path("grace") {
        None => Duration::from_secs(5),
        Some(g) => g
            .to_str()
            .and_then(|s| s.parse::<f64>().ok())
            // (Negative, NaN, infinite and too large for a Duration are all refused.)
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .ok_or_else(|| Usage(format!("--grace {}: not a number of seconds", g.display())))?,
    };
    let cache = o
        .path("cache-dir")
        .cloned()
        .unwrap_or_else(|| PathBuf::from("/var/lib/cni/results"));
    let conflist = o.path("conflist").map(|p| p.as_path());
    let run = || -> Result<(NodeConfig, BTreeMap<Item, String>)> {
        let (cfg, snap, view) = look(conflist)?;
        if o.flag("apply") && !snap.sees_processes {
            return Err(runtime(
                "this process cannot see the node's CNI operations (it needs the host's PID \
                 namespace, and CAP_SYS_PTRACE to read their environments): it could not tell \
                 an ADD in flight",
            ));
        }
        let first = plan(
            &cfg,
            &snap,
            &view,
            &cached_attachments(&cache, &cfg.network)?,
        );
        if first.is_empty() {
            return Ok((cfg, first));
        }
        std::thread::sleep(grace);
        let (cfg, snap, view) = look(conflist)?;
        let second = plan(
            &cfg,
            &snap,
            &view,
            &cached_attachments(&cache, &cfg.network)?,
        );
        let both = second
            .into_iter()
            .filter(|(item, _)| first.contains_key(item))
            .collect();
        Ok((cfg, both))
    };
    let (cfg, items) = match run() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("azure-vnet reconcile: {}", e.msg());
            return Ok(2);
        }
    };
    let results = if o.flag("apply") {
        apply(&cfg, &items)
    } else {
        BTreeMap::new()
    };
    let outcomes: Vec<Outcome> = items
        .iter()
        .map(|(item, why)| {
            let (action, subject) = item.describe();
            Outcome {
                item,
                action,
                subject,
                why,
                done: o
                    .flag("apply")
                    .then(|| results.get(item).copied().unwrap_or(false)),
            }
        })
        .collect();
    if o.flag("json") {
        println!(
            "{}",
            serde_json::to_string_pretty(&outcomes).unwrap_or_default()
        );
    } else if outcomes.is_empty() {
        println!("nothing to reconcile: every record and address belongs to a live attachment");
    } else {
        let rows: Vec<Vec<String>> = outcomes
            .iter()
            .map(|o| {
                let mut r = vec![o.action.to_string(), o.subject.clone(), o.why.to_string()];
                if let Some(d) = o.done {
                    r.insert(0, if d { "done" } else { "FAILED" }.into());
                }
                r
            })
            .collect();
        if o.flag("apply") {
            print!("{}", table(&["RESULT", "ACTION", "SUBJECT", "WHY"], &rows));
        } else {
            println!("dry run: nothing was changed (--apply does it)\n");
            print!("{}", table(&["ACTION", "SUBJECT", "WHY"], &rows));
        }
    }
    let all_done = results.values().all(|d| *d);
    Ok(match (outcomes.is_empty(), o.flag("apply") && all_done) {
        (true, _) | (false, true) => 0,
        _ => 1,
    })
}

/// Do what the plan says, through the shared teardown; whether each item was done.
fn apply(cfg: &NodeConfig, items: &BTreeMap<Item, String>) -> BTreeMap<Item, bool> {
    let log = Logger::open(&cfg.settings.log, "azure-vnet");
    let mut done = BTreeMap::new();
    let Ok(host) = Netlink::connect() else {
        return done;
    };
    let vstore = crate::network::plugin::store_at(&cfg.settings, &log);
    let release = |ep: Option<&Endpoint>, pin: crate::network::ipam::Pin| -> Result<()> {
        match (ep, pin.address) {
            (Some(ep), Some(ip)) => release_if_idle(cfg, &log, ip, Some(&ep.container_id)),
            _ => Ok(()),
        }
    };
    let mut teardown = Teardown::new(&log, &host, &cfg.network, &release);
    // Records (and then their routes, addresses and veths).
    let keys: HashSet<(&str, &str)> = items
        .keys()
        .filter_map(|i| match i {
            Item::Record { key, container_id } => Some((key.as_str(), container_id.as_str())),
            _ => None,
        })
        .collect();
    if !keys.is_empty() {
        let removed = teardown.records(&vstore, None, |k, raw| {
            let e = raw.parse()?;
            let busy = cni_operations().0.contains(&e.container_id);
            Ok((keys.contains(&(k, e.container_id.as_str())) && !busy).then_some(e))
        });
        let removed = removed.unwrap_or_default();
        teardown.routes(&removed);
        teardown.release(&removed);
        let remaining: NetworkFile = vstore.load().map(|l| l.value).unwrap_or_default();
        for ep in &removed {
            let named = remaining
                .veth_owner(&ep.host_if_name)
                .ok()
                .flatten()
                .is_some();
            if let (false, Ok(Some(link))) = (named, host.link_by_name(&ep.host_if_name)) {
                veth_if_idle(cfg, &mut teardown, &link);
            }
            done.insert(
                Item::Record {
                    key: ep.id.clone(),
                    container_id: ep.container_id.clone(),
                },
                true,
            );
        }
    }
    let records_done = done.clone();
    for item in items.keys() {
        let ok = match item {
            Item::Record { .. } => records_done.contains_key(item),
            Item::Address {
                address,
                container_id,
            } => release_if_idle(cfg, &log, *address, Some(container_id)).is_ok(),
            Item::StrayVeth { name } => match host.link_by_name(name) {
                Ok(Some(link)) if link.peer_netnsid.is_none() => {
                    veth_if_idle(cfg, &mut teardown, &link)
                }
                _ => false,
            },
        };
        done.insert(item.clone(), ok);
    }
    if let Err(e) = teardown.finish() {
        eprintln!("azure-vnet reconcile: {}", e.msg());
    }
    done
}

/// Delete a host veth unless an ADD, DEL or GC holds its name's lock; whether it went.
fn veth_if_idle(cfg: &NodeConfig, teardown: &mut Teardown, link: &crate::netlink::Link) -> bool {
    let path = crate::network::plugin::veth_lock_path_at(&cfg.settings, &link.name);
    match lock::try_acquire(&path) {
        Ok(Some(_guard)) => {
            teardown.veth(link);
            true
        }
        _ => false,
    }
}

/// Release `ip` (held by `owner`, if given) under the IPAM state lock, unless a CNI operation
/// for its holder runs: the scan happens under the lock, and an ADD allocates under it, so no
/// ADD can be given the address between the scan and the release.
fn release_if_idle(cfg: &NodeConfig, log: &Logger, ip: IpAddr, owner: Option<&str>) -> Result<()> {
    let store = crate::ipam::plugin::store_at(&cfg.settings, log);
    let space = cfg.address_space.clone();
    let released = store.update(None, |file: &mut crate::ipam::state::IpamFile| {
        let Some(s) = file.space(&space) else {
            return Ok((false, false));
        };
        let holder = s
            .pools
            .values()
            .find_map(|p| p.addresses.get(&ip.to_string()))
            .filter(|r| !r.is_free())
            .map(|r| r.id.clone());
        let Some(holder) = holder.filter(|h| owner.is_none_or(|o| o == h)) else {
            return Ok((false, false));
        };
        if cni_operations().0.contains(&holder) {
            return Err(runtime(format!(
                "{ip}: a CNI operation for {holder} is running; left alone"
            )));
        }
        let gone = crate::ipam::allocator::release(file.space_mut(&space), &holder, None, Some(ip));
        let changed = !gone.is_empty();
        Ok((changed, changed))
    })?;
    if released {
        log.info(
            "reconcile released an address no live attachment holds",
            &[("address", serde_json::Value::from(ip.to_string()))],
        );
    }
    Ok(())
}
