//! The `azure-vnet-ipam` plugin: ADD, DEL, CHECK, GC and STATUS over the IPAM state file.
//!
//! The slow part (asking the source: an HTTP GET or a file read, plus a netlink link dump) is
//! done before the lock is taken; under the lock there is only read, merge, allocate, write.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde_json::Value;

use crate::cni::result::{CniResult, Dns, IpConfig, Route};
use crate::cni::skel::{Plugin, Request};
use crate::encoding::parse_mac;
use crate::error::{invalid_config, Code, Error, Result};
use crate::ipam::allocator::{self, Allocation};
use crate::ipam::source::{self, Fetched, PoolView, SourceKind};
use crate::ipam::state::{AddressSpace, IpamFile};
use crate::logging::Logger;
use crate::logging::Stopwatch;
use crate::netlink::{Link, Netlink};
use crate::settings::Settings;
use crate::store::Store;

pub const PLUGIN_NAME: &str = "azure-vnet-ipam";
pub const STATE_FILE: &str = "azure-vnet-ipam.json";
/// Upstream's constant "DNS host proxy" (spec B.5.4): Azure's resolver.
pub const AZURE_DNS: &str = "168.63.129.16";
const DEFAULT_ADDRESS_SPACE: &str = "local";

pub struct IpamPlugin;

/// The parsed `ipam` section, as this plugin reads it.
struct IpamArgs {
    kind: SourceKind,
    space: String,
    pool: Option<String>,
    address: Option<IpAddr>,
    master: Option<String>,
}

fn ipam_args(req: &Request) -> Result<IpamArgs> {
    let ipam = req.conf.conf.ipam.clone().unwrap_or_default();
    let kind = SourceKind::parse(ipam.environment.as_deref())?;
    let pool = match ipam.subnet.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => {
            let net: IpNetwork = s
                .parse()
                .map_err(|_| invalid_config(format!("invalid ipam.subnet {s:?}: not a CIDR")))?;
            let canon = IpNetwork::new(net.network(), net.prefix())
                .map_err(|e| invalid_config(format!("invalid ipam.subnet {s:?}: {e}")))?;
            Some(canon.to_string())
        }
    };
    let address = match ipam.ip_address.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            s.parse::<IpAddr>()
                .map_err(|_| invalid_config(format!("invalid ipam.ipAddress {s:?}")))?,
        ),
    };
    Ok(IpamArgs {
        kind,
        space: ipam
            .address_space
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_ADDRESS_SPACE.to_string()),
        pool,
        address,
        master: req.conf.conf.master.clone().filter(|m| !m.is_empty()),
    })
}

fn store<'a>(req: &Request<'a>) -> Store<'a> {
    store_at(&req.settings, req.log)
}

/// The IPAM state file and its lock, where `settings` put them.
pub(crate) fn store_at<'a>(settings: &Settings, log: &'a Logger) -> Store<'a> {
    Store::new(
        settings.run_dir.join(STATE_FILE),
        settings.lock_dir().join(format!("{PLUGIN_NAME}.lock")),
        settings.lock_timeout,
        log,
    )
}

/// Ask the source what this node has. Never under the lock.
fn fetch(req: &Request, a: &IpamArgs) -> Result<Fetched> {
    let f = source::fetch(a.kind, &req.settings)?;
    // The view also depends on the config's interface filter.
    Ok(f.salted(a.master.as_deref().unwrap_or("").as_bytes()))
}

/// The source's answer as pools for this node: NICs matched to local links, the node's own
/// addresses left out. Netlink work: never under the lock.
fn build_view(nics: &[source::NicInfo], a: &IpamArgs) -> Result<Vec<PoolView>> {
    if a.kind == SourceKind::Null {
        return Ok(Vec::new());
    }
    let nl = Netlink::connect()?;
    let links = local_links(&nl, nics, a.master.as_deref())?;
    let mut pools = source::pools_from(nics, &links, a.master.as_deref());
    // IPv4 only: every veth on a busy node has an IPv6 link-local address, and pods get IPv4.
    let local: HashSet<IpAddr> = nl
        .addresses(true)?
        .into_iter()
        .map(|a| a.net.ip())
        .collect();
    source::exclude_local(&mut pools, &local);
    Ok(pools)
}

/// A merged view is reused (no link lookups, no merge) while the source says the same and the
/// merge is at most this old; then it is rebuilt, to notice a NIC renamed or moved.
const VIEW_MAX_AGE: u64 = 60_000_000_000;

fn still_current(space: &AddressSpace, fingerprint: u64, now: u64) -> bool {
    space.last_source == Some(fingerprint)
        && space
            .last_refresh
            .is_some_and(|t| t <= now && now - t <= VIEW_MAX_AGE)
}

/// The links the NICs' MACs can match. The NIC is nearly always `eth0` (or `master`), so look
/// those up by name and dump every link only if some NIC is still unmatched: on a busy node
/// the dump is 250 veths long, and ADD would slow down with every pod.
fn local_links(nl: &Netlink, nics: &[source::NicInfo], master: Option<&str>) -> Result<Vec<Link>> {
    let mut links = Vec::new();
    for name in master.into_iter().chain(["eth0"]) {
        if let Some(l) = nl.link_by_name(name)? {
            links.push(l);
        }
    }
    let all_found = nics
        .iter()
        .all(|n| parse_mac(&n.mac).is_some_and(|mac| links.iter().any(|l| l.mac == Some(mac))));
    if all_found {
        Ok(links)
    } else {
        nl.links()
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Whether a view fetched at `fetched` may be merged over the one merged last. A last merge
/// more than a minute "in the future" means the clock was stepped back: merge anyway rather
/// than ignore the source until the clock catches up.
fn newer_than_merged(last: Option<u64>, fetched: u64) -> bool {
    const CLOCK_STEP: u64 = 60_000_000_000;
    match last {
        None => true,
        Some(last) => fetched >= last || last - fetched > CLOCK_STEP,
    }
}

fn result_of(a: &Allocation) -> CniResult {
    let default = if a.address.is_ipv4() {
        "0.0.0.0/0"
    } else {
        "::/0"
    };
    CniResult {
        interfaces: Vec::new(),
        ips: vec![IpConfig {
            interface: None,
            address: a.address,
            gateway: a.gateway,
        }],
        routes: match (a.gateway, default.parse()) {
            (Some(gw), Ok(dst)) => vec![Route::new(dst, Some(gw))],
            _ => Vec::new(),
        },
        dns: Dns {
            nameservers: vec![AZURE_DNS.to_string()],
            ..Default::default()
        },
    }
}

/// Log the addresses a DEL or GC released.
fn log_released(req: &Request, msg: &str, released: &[IpAddr]) {
    let list: Vec<Value> = released
        .iter()
        .map(|ip| Value::from(ip.to_string()))
        .collect();
    req.log.info(msg, &[("addresses", Value::from(list))]);
}

impl Plugin for IpamPlugin {
    fn name(&self) -> &'static str {
        PLUGIN_NAME
    }

    fn add(&self, req: &Request) -> Result<CniResult> {
        let a = ipam_args(req)?;
        let mut watch = Stopwatch::start();
        let fetched_at = now_nanos();
        let fetched = fetch(req, &a);
        watch.lap("source");
        let store = store(req);
        let loaded = store.load::<IpamFile>()?;

        // The source's view of this node (NICs matched to links: netlink work, outside the
        // lock), unless it says exactly what was merged last: then the saved pools are it.
        let current = |f: &Fetched| {
            let space = loaded.value.space(&a.space);
            space.is_some_and(|s| still_current(s, f.fingerprint, fetched_at))
        };
        let view = match &fetched {
            Ok(f) if current(f) => Ok(None),
            Ok(f) => f.nics().and_then(|nics| build_view(&nics, &a)).map(Some),
            Err(e) => Err(e.clone()),
        };
        watch.lap("links");

        let request = allocator::Request {
            container_id: &req.env.container_id,
            pool: a.pool.as_deref(),
            address: a.address,
            if_name: a.master.as_deref(),
        };
        let alloc = store.update(Some(loaded), |file: &mut IpamFile| {
            let space = file.space_mut(&a.space);
            let mut changed = false;
            match &view {
                // A view fetched before the one merged last is not merged over it.
                Ok(Some(v)) if newer_than_merged(space.last_refresh, fetched_at) => {
                    allocator::merge(space, v);
                    space.last_refresh = Some(fetched_at);
                    space.last_source = fetched.as_ref().ok().map(|f| f.fingerprint);
                    changed = true;
                }
                Ok(_) => {}
                // The saved pools, when the source cannot be asked or its answer cannot be
                // used: pods keep starting while the wireserver is down (as upstream).
                Err(e) if space.pools.is_empty() => {
                    return Err(e.clone().context("no address pools (and no saved state)"));
                }
                Err(e) => req.log.warn(
                    "address source failed; using the saved state",
                    &[("error", Value::from(e.msg()))],
                ),
            }
            let alloc = allocator::allocate(space, &request)
                .map_err(|e| e.context("Failed to allocate address"))?;
            changed |= !alloc.existing;
            Ok((alloc, changed))
        })?;
        watch.lap("state");
        req.log.info(
            if alloc.existing {
                "address already held"
            } else {
                "address allocated"
            },
            &[
                ("address", Value::from(alloc.address.to_string())),
                ("pool", Value::from(alloc.pool_id.clone())),
                watch.field(),
            ],
        );
        Ok(result_of(&alloc))
    }

    fn del(&self, req: &Request) -> Result<()> {
        let a = ipam_args(req)?;
        let released = store(req).update(None, |file: &mut IpamFile| {
            if file.space(&a.space).is_none() {
                return Ok((Vec::new(), false));
            }
            let space = file.space_mut(&a.space);
            let released =
                allocator::release(space, &req.env.container_id, a.pool.as_deref(), a.address);
            let changed = !released.is_empty();
            Ok((released, changed))
        })?;
        log_released(req, "released", &released);
        Ok(())
    }

    fn check(&self, req: &Request) -> Result<()> {
        let a = ipam_args(req)?;
        let file: IpamFile = store(req).load()?.value;
        let held = file.space(&a.space).is_some_and(|s| {
            s.pools.values().any(|p| {
                p.addresses
                    .values()
                    .any(|r| r.in_use && r.id == req.env.container_id)
            })
        });
        if held {
            Ok(())
        } else {
            Err(Error::new(
                Code::Runtime,
                format!(
                    "no address is allocated to container {}",
                    req.env.container_id
                ),
            ))
        }
    }

    fn gc(&self, req: &Request) -> Result<()> {
        let valid = req.conf.conf.valid_attachments.as_ref().ok_or_else(|| {
            invalid_config("GC needs cni.dev/valid-attachments (an empty list releases everything)")
        })?;
        let valid: HashSet<&str> = valid.iter().map(|a| a.container_id.as_str()).collect();
        let released = store(req).update(None, |file: &mut IpamFile| {
            let mut released = Vec::new();
            if let Some(am) = file.ipam.as_mut() {
                for space in am.address_spaces.values_mut() {
                    released.extend(allocator::gc(space, &valid));
                }
            }
            let changed = !released.is_empty();
            Ok((released, changed))
        })?;
        log_released(req, "gc released", &released);
        Ok(())
    }

    fn status(&self, req: &Request) -> Result<()> {
        let a = ipam_args(req)?;
        let view = fetch(req, &a).and_then(|f| build_view(&f.nics()?, &a));
        let mut file: IpamFile = store(req).load().map(|l| l.value).map_err(|e| {
            e.with_code(Code::LimitedConnectivity)
                .context("IPAM state unreadable; DEL of existing containers fails too")
        })?;
        let space = file.space_mut(&a.space);
        let why = match &view {
            Ok(v) => {
                allocator::merge(space, v);
                None
            }
            Err(e) => Some(e.msg().to_string()),
        };
        if allocator::free_count(space) > 0 {
            return Ok(());
        }
        let msg = match (why, space.pools.is_empty()) {
            (Some(why), true) => format!("no address pools: {why}"),
            (_, true) => "no address pools: the source lists no addresses for this node".into(),
            (_, false) => "No available addresses: every address of this node is in use".into(),
        };
        Err(Error::new(Code::NotAvailable, msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_views_fetched_after_the_last_merge_are_merged() {
        let s = 1_000_000_000u64;
        // (last merge, this fetch, merge?)
        let table = [
            (None, 5 * s, true),
            (Some(5 * s), 6 * s, true),
            (Some(5 * s), 5 * s, true),
            (Some(6 * s), 5 * s, false),
            (Some(600 * s), 5 * s, true), // the clock went back 10 minutes
        ];
        for (last, fetched, want) in table {
            assert_eq!(newer_than_merged(last, fetched), want, "{last:?} {fetched}");
        }
    }
}
