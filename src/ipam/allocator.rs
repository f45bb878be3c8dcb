//! Pure allocation logic over one address space: merging a source's view, handing out and
//! releasing addresses, GC. No I/O; tested against in-memory state.
//!
//! Allocation is deterministic (numeric order, starting after the pool's last allocation and
//! wrapping), so a just-released address is the last one reused while others are free.
//! Upstream picks in Go map order, which is random (spec B.7).

use std::collections::HashSet;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::encoding::{GoIp, GoIpNet};
use crate::error::{runtime, Result};
use crate::ipam::source::PoolView;
use crate::ipam::state::{AddressRecord, AddressSpace, Pool};

/// Merge a fresh view into the stored space (spec B.5.3): new pools and addresses are added;
/// free addresses the source no longer lists are dropped; addresses in use that it no longer
/// lists are kept, marked unlisted, until released (then they go: see `free`); pools that
/// vanished are dropped once nothing in them is in use. Returns whether anything changed.
pub fn merge(space: &mut AddressSpace, view: &[PoolView]) -> bool {
    let mut changed = false;
    for pv in view {
        let pool = space.pools.entry(pv.id.clone()).or_insert_with(|| {
            changed = true;
            Pool {
                id: pv.id.clone(),
                if_name: pv.if_name.clone(),
                subnet: GoIpNet::from_network(&pv.subnet),
                gateway: GoIp::some(pv.gateway),
                is_ipv6: pv.subnet.is_ipv6(),
                priority: pv.priority,
                ..Default::default()
            }
        });
        if pool.if_name != pv.if_name || pool.priority != pv.priority {
            pool.if_name = pv.if_name.clone();
            pool.priority = pv.priority;
            changed = true;
        }
        let listed: HashSet<String> = pv.addresses.iter().map(|a| a.to_string()).collect();
        changed |= keep_listed(pool, |k| listed.contains(k));
        for a in &pv.addresses {
            pool.addresses.entry(a.to_string()).or_insert_with(|| {
                changed = true;
                AddressRecord {
                    addr: GoIp::some(*a),
                    ..Default::default()
                }
            });
        }
    }
    let listed: HashSet<&str> = view.iter().map(|p| p.id.as_str()).collect();
    let before = space.pools.len();
    space.pools.retain(|id, pool| {
        listed.contains(id.as_str()) || pool.addresses.values().any(|r| !r.is_free())
    });
    for (_, pool) in space
        .pools
        .iter_mut()
        .filter(|(id, _)| !listed.contains(id.as_str()))
    {
        changed |= keep_listed(pool, |_| false);
    }
    changed | (space.pools.len() != before)
}

/// Drop the free records `listed` does not name and mark the held ones unlisted (or listed
/// again: Azure may give an address back). Returns whether anything changed.
fn keep_listed(pool: &mut Pool, listed: impl Fn(&str) -> bool) -> bool {
    let before = pool.addresses.len();
    pool.addresses.retain(|k, rec| listed(k) || !rec.is_free());
    let mut changed = pool.addresses.len() != before;
    for (k, rec) in pool.addresses.iter_mut() {
        let unlisted = !listed(k);
        changed |= rec.unlisted != unlisted;
        rec.unlisted = unlisted;
    }
    changed
}

#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    pub container_id: &'a str,
    /// `ipam.subnet`: the pool to use.
    pub pool: Option<&'a str>,
    /// `ipam.ipAddress`: one specific address.
    pub address: Option<IpAddr>,
    /// `master`: only pools on this interface.
    pub if_name: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub pool_id: String,
    /// The address with the pool's prefix length (`10.224.0.17/16`).
    pub address: IpNetwork,
    pub gateway: Option<IpAddr>,
    /// The container already held this address (a repeated ADD).
    pub existing: bool,
}

fn pool_network(pool: &Pool) -> Result<IpNetwork> {
    pool.subnet.to_network().ok_or_else(|| {
        runtime(format!(
            "pool {} has an invalid subnet in the state file",
            pool.id
        ))
    })
}

fn allocation(pool: &Pool, ip: IpAddr, existing: bool) -> Result<Allocation> {
    let net = pool_network(pool)?;
    Ok(Allocation {
        pool_id: pool.id.clone(),
        address: IpNetwork::new(ip, net.prefix())
            .map_err(|e| runtime(format!("pool {}: {e}", pool.id)))?,
        gateway: pool.gateway.0,
        existing,
    })
}

fn record_ip(key: &str, rec: &AddressRecord) -> Option<IpAddr> {
    rec.addr.0.or_else(|| key.parse().ok())
}

fn take(pool: &mut Pool, key: &str, container_id: &str) -> Result<Allocation> {
    let ip = {
        let rec = pool
            .addresses
            .get_mut(key)
            .ok_or_else(|| runtime(format!("Address not found: {key}")))?;
        rec.in_use = true;
        rec.id = container_id.to_string();
        record_ip(key, rec).ok_or_else(|| runtime(format!("invalid address record {key}")))?
    };
    pool.last_allocated = Some(ip.to_string());
    pool.ref_count = 1;
    allocation(pool, ip, false)
}

/// Hand out an address (spec B.5.4, with deterministic order). Errors are CNI code 100 with
/// upstream's messages (`No available addresses`, `Address already in use`, ...).
pub fn allocate(space: &mut AddressSpace, req: &Request) -> Result<Allocation> {
    let family_ok = |p: &Pool| match req.address {
        Some(a) => p.is_ipv6 == a.is_ipv6(),
        None => !p.is_ipv6,
    };
    let usable = |p: &Pool| req.if_name.is_none_or(|n| n == p.if_name) && family_ok(p);
    if let Some(id) = req.pool {
        if !space.pools.contains_key(id) {
            return Err(runtime(format!(
                "Pool {id} not found: Invalid address pool"
            )));
        }
    }
    let in_scope = |id: &str| req.pool.is_none_or(|p| p == id);

    // Pools may overlap (a source listing overlapping prefixes, a prefix that changed while
    // addresses were in use): an address in use in one pool is not free in any other. (With
    // one pool there is no other: its own records already say what is free.)
    let taken = if space.pools.len() > 1 {
        in_use(space)
    } else {
        HashSet::new()
    };

    // A specific address.
    if let Some(want) = req.address {
        let key = want.to_string();
        let held = |p: &Pool| {
            p.addresses
                .get(&key)
                .is_some_and(|r| r.in_use && r.id == req.container_id)
        };
        let pool = space
            .pools
            .values_mut()
            .filter(|p| in_scope(&p.id) && p.addresses.contains_key(&key))
            .min_by_key(|p| !held(p))
            .ok_or_else(|| {
                runtime(format!(
                    "Address not found: {key} is in no pool of this node"
                ))
            })?;
        if held(pool) {
            return allocation(pool, want, true);
        }
        if !pool.addresses[&key].is_free() || taken.contains(&want) {
            return Err(runtime(format!("Address already in use: {key}")));
        }
        return take(pool, &key, req.container_id);
    }

    // Idempotent per container ID: the address it already holds.
    for pool in space
        .pools
        .values()
        .filter(|p| in_scope(&p.id) && usable(p))
    {
        if let Some((k, rec)) = pool
            .addresses
            .iter()
            .find(|(_, r)| r.in_use && r.id == req.container_id)
        {
            let ip =
                record_ip(k, rec).ok_or_else(|| runtime(format!("invalid address record {k}")))?;
            return allocation(pool, ip, true);
        }
    }

    // Pool choice, when nothing pins one (`ipam.subnet`, which azure-vnet sets from its network
    // record after the first pod): the primary NIC's pools first (priority 0), then more
    // addresses, ties by ID. Upstream prefers secondary NICs here, but in transparent mode
    // pod traffic leaves by the host's routes, which go out of the primary NIC: a secondary
    // NIC's address there is dropped by the VNet.
    let mut candidates: Vec<&Pool> = space
        .pools
        .values()
        .filter(|p| in_scope(&p.id) && usable(p))
        .collect();
    if candidates.is_empty() {
        return Err(runtime("no available address pools"));
    }
    candidates.retain(|p| next_free(p, &taken).is_some());
    candidates.sort_by(|a, b| {
        a.priority
            .cmp(&b.priority)
            .then(b.addresses.len().cmp(&a.addresses.len()))
            .then(a.id.cmp(&b.id))
    });
    let Some(pool_id) = candidates.first().map(|p| p.id.clone()) else {
        return Err(runtime("No available addresses"));
    };
    let pool = space
        .pools
        .get_mut(&pool_id)
        .ok_or_else(|| runtime("pool vanished"))?;
    let key = next_free(pool, &taken).ok_or_else(|| runtime("No available addresses"))?;
    take(pool, &key, req.container_id)
}

/// Every address some record holds, in any pool.
fn in_use(space: &AddressSpace) -> HashSet<IpAddr> {
    space
        .pools
        .values()
        .flat_map(|p| p.addresses.iter())
        .filter(|(_, r)| !r.is_free())
        .filter_map(|(k, r)| record_ip(k, r))
        .collect()
}

/// The first free address after `last_allocated` in numeric order, wrapping around; addresses
/// in `taken` (in use in another pool) are not free.
fn next_free(pool: &Pool, taken: &HashSet<IpAddr>) -> Option<String> {
    let mut free: Vec<(IpAddr, &String)> = pool
        .addresses
        .iter()
        .filter(|(_, r)| r.is_free())
        .filter_map(|(k, r)| record_ip(k, r).map(|ip| (ip, k)))
        .filter(|(ip, _)| !taken.contains(ip))
        .collect();
    free.sort();
    let cursor: Option<IpAddr> = pool.last_allocated.as_deref().and_then(|s| s.parse().ok());
    let pick = match cursor {
        Some(c) => free.iter().find(|(ip, _)| *ip > c).or(free.first()),
        None => free.first(),
    };
    pick.map(|(_, k)| (*k).clone())
}

/// Release what `container_id` holds (spec B.5.5): one address if given, else everything it
/// owns. Unknown pools and addresses, free addresses, and addresses owned by another container
/// are all "nothing to release" (success) so DEL is idempotent and never frees someone else's.
/// Returns the released addresses.
pub fn release(
    space: &mut AddressSpace,
    container_id: &str,
    pool: Option<&str>,
    address: Option<IpAddr>,
) -> Vec<IpAddr> {
    let key = address.map(|a| a.to_string());
    free(space, |pool_id, k, rec| {
        pool.is_none_or(|id| id == pool_id)
            && key.as_ref().is_none_or(|want| want == k)
            && rec.in_use
            && rec.id == container_id
    })
}

/// CNI GC: release every address owned by a container that is not in `valid`. Records in use
/// without an owner (written by very old upstream versions) are left alone: we cannot know.
pub fn gc(space: &mut AddressSpace, valid: &HashSet<&str>) -> Vec<IpAddr> {
    free(space, |_, _, rec| {
        rec.in_use && !rec.id.is_empty() && !valid.contains(rec.id.as_str())
    })
}

/// Free the records `pick` selects (pool ID, key, record); an unlisted one is removed instead,
/// so an address Azure took away is never handed out again (upstream deletes it at release
/// too). Returns the released addresses.
fn free(
    space: &mut AddressSpace,
    pick: impl Fn(&str, &str, &AddressRecord) -> bool,
) -> Vec<IpAddr> {
    let mut released = Vec::new();
    for p in space.pools.values_mut() {
        p.addresses.retain(|k, rec| {
            if !pick(&p.id, k, rec) {
                return true;
            }
            released.extend(record_ip(k, rec));
            rec.in_use = false;
            rec.id.clear();
            !rec.unlisted
        });
    }
    released
}

/// How many addresses could be handed out (free, and not in use in another pool).
pub fn free_count(space: &AddressSpace) -> usize {
    let taken = in_use(space);
    let free: HashSet<IpAddr> = space
        .pools
        .values()
        .flat_map(|p| p.addresses.iter())
        .filter(|(_, r)| r.is_free())
        .filter_map(|(k, r)| record_ip(k, r))
        .filter(|ip| !taken.contains(ip))
        .collect();
    free.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: &str, addrs: &[&str]) -> PoolView {
        let subnet: IpNetwork = id.parse().unwrap();
        PoolView {
            id: id.into(),
            subnet,
            gateway: crate::ipam::source::first_address(&subnet).unwrap(),
            if_name: "eth0".into(),
            priority: 0,
            addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn space_with(addrs: &[&str]) -> AddressSpace {
        let mut s = AddressSpace::default();
        merge(&mut s, &[view("10.224.0.0/16", addrs)]);
        s
    }

    fn req(cid: &str) -> Request<'_> {
        Request {
            container_id: cid,
            ..Default::default()
        }
    }

    fn alloc(s: &mut AddressSpace, cid: &str) -> String {
        allocate(s, &req(cid)).unwrap().address.ip().to_string()
    }

    #[test]
    fn allocation_is_numeric_and_rotates_past_released_addresses() {
        let mut s = space_with(&["10.224.0.10", "10.224.0.9", "10.224.0.100", "10.224.0.11"]);
        assert_eq!(alloc(&mut s, "a"), "10.224.0.9");
        assert_eq!(alloc(&mut s, "b"), "10.224.0.10");
        assert_eq!(
            release(&mut s, "a", None, None),
            vec!["10.224.0.9".parse::<IpAddr>().unwrap()]
        );
        // .9 was just released: the others go first.
        assert_eq!(alloc(&mut s, "c"), "10.224.0.11");
        assert_eq!(alloc(&mut s, "d"), "10.224.0.100");
        assert_eq!(alloc(&mut s, "e"), "10.224.0.9");
        let e = allocate(&mut s, &req("f")).unwrap_err();
        assert_eq!(e.msg(), "No available addresses");
        assert_eq!(e.code().cni_code(), 100);
    }

    #[test]
    fn allocation_result_carries_pool_prefix_and_gateway() {
        let mut s = space_with(&["10.224.0.24"]);
        let a = allocate(&mut s, &req("ee86fb8b")).unwrap();
        assert_eq!(a.address.to_string(), "10.224.0.24/16");
        assert_eq!(a.gateway, Some("10.224.0.1".parse().unwrap()));
        assert_eq!(a.pool_id, "10.224.0.0/16");
        let rec = &s.pools["10.224.0.0/16"].addresses["10.224.0.24"];
        assert!(rec.in_use);
        assert_eq!(rec.id, "ee86fb8b");
        assert_eq!(s.pools["10.224.0.0/16"].ref_count, 1);
    }

    #[test]
    fn repeated_add_returns_the_same_address() {
        let mut s = space_with(&["10.224.0.5", "10.224.0.6"]);
        let a = allocate(&mut s, &req("c1")).unwrap();
        let b = allocate(&mut s, &req("c1")).unwrap();
        assert_eq!(a.address, b.address);
        assert!(!a.existing && b.existing);
        assert_eq!(free_count(&s), 1);
    }

    #[test]
    #[allow(clippy::type_complexity)] // a table of cases reads best as tuples
    fn specific_address_table() {
        // (requested, pool, container, expected Ok(ip) or Err(message prefix))
        let table: &[(&str, Option<&str>, &str, std::result::Result<&str, &str>)] = &[
            ("10.224.0.6", None, "c1", Ok("10.224.0.6")),
            ("10.224.0.6", Some("10.224.0.0/16"), "c1", Ok("10.224.0.6")),
            ("10.224.0.5", None, "c1", Err("Address already in use")),
            ("10.224.0.7", None, "c1", Err("Address not found")),
            ("192.168.0.1", None, "c1", Err("Address not found")),
            (
                "10.224.0.6",
                Some("10.225.0.0/16"),
                "c1",
                Err("Pool 10.225.0.0/16 not found"),
            ),
            ("10.224.0.5", None, "owner", Ok("10.224.0.5")),
        ];
        for (ip, pool, cid, want) in table {
            let mut s = space_with(&["10.224.0.5", "10.224.0.6"]);
            allocate(
                &mut s,
                &Request {
                    address: Some("10.224.0.5".parse().unwrap()),
                    ..req("owner")
                },
            )
            .unwrap();
            let got = allocate(
                &mut s,
                &Request {
                    container_id: cid,
                    pool: *pool,
                    address: Some(ip.parse().unwrap()),
                    if_name: None,
                },
            );
            match (got, want) {
                (Ok(a), Ok(w)) => assert_eq!(a.address.ip().to_string(), *w, "{ip}"),
                (Err(e), Err(w)) => assert!(e.msg().starts_with(w), "{ip}: {e}"),
                (got, want) => panic!("{ip}: {got:?} vs {want:?}"),
            }
        }
    }

    #[test]
    fn release_table() {
        // (container, pool, address, released count)
        let table: &[(&str, Option<&str>, Option<&str>, usize)] = &[
            ("a", None, None, 1),
            ("a", None, Some("10.224.0.5"), 1),
            ("a", None, Some("10.224.0.6"), 0), // b's address: never released by a
            ("a", Some("10.225.0.0/16"), None, 0), // unknown pool: nothing to do
            ("a", None, Some("10.9.9.9"), 0),   // unknown address
            ("nobody", None, None, 0),
            ("b", Some("10.224.0.0/16"), None, 1),
        ];
        for (cid, pool, addr, n) in table {
            let mut s = space_with(&["10.224.0.5", "10.224.0.6", "10.224.0.7"]);
            alloc(&mut s, "a");
            alloc(&mut s, "b");
            let got = release(&mut s, cid, *pool, addr.map(|a| a.parse().unwrap()));
            assert_eq!(got.len(), *n, "{cid} {pool:?} {addr:?}");
            assert_eq!(free_count(&s), 1 + n);
        }
    }

    #[test]
    fn merge_rules() {
        let mut s = space_with(&["10.224.0.5", "10.224.0.6", "10.224.0.7"]);
        alloc(&mut s, "a"); // .5
                            // The source now lists .6 and .8: .7 (free) goes, .5 (in use) stays, .8 arrives.
        assert!(merge(
            &mut s,
            &[view("10.224.0.0/16", &["10.224.0.6", "10.224.0.8"])]
        ));
        let keys: Vec<&String> = s.pools["10.224.0.0/16"].addresses.keys().collect();
        assert_eq!(keys, ["10.224.0.5", "10.224.0.6", "10.224.0.8"]);
        // Same view again: no change.
        assert!(!merge(
            &mut s,
            &[view("10.224.0.0/16", &["10.224.0.6", "10.224.0.8"])]
        ));
        // The pool vanishes from the source: kept (with only the in-use record) until released.
        assert!(merge(&mut s, &[view("10.225.0.0/16", &["10.225.0.9"])]));
        assert_eq!(s.pools["10.224.0.0/16"].addresses.len(), 1);
        release(&mut s, "a", None, None);
        merge(&mut s, &[view("10.225.0.0/16", &["10.225.0.9"])]);
        assert!(!s.pools.contains_key("10.224.0.0/16"));
        assert!(s.pools.contains_key("10.225.0.0/16"));
    }

    #[test]
    fn an_address_the_source_took_away_is_never_handed_out_again() {
        let mut s = space_with(&["10.224.0.5", "10.224.0.6", "10.224.0.7"]);
        assert_eq!(alloc(&mut s, "a"), "10.224.0.5");
        // Azure moves .5 to another NIC while the pod holds it.
        assert!(merge(
            &mut s,
            &[view("10.224.0.0/16", &["10.224.0.6", "10.224.0.7"])]
        ));
        assert!(s.pools["10.224.0.0/16"].addresses["10.224.0.5"].unlisted);
        // Its release (DEL or GC, with no further merge: the cached and the saved-state
        // paths) removes it; the pool drains without it.
        assert_eq!(release(&mut s, "a", None, None).len(), 1);
        assert!(!s.pools["10.224.0.0/16"]
            .addresses
            .contains_key("10.224.0.5"));
        let got: Vec<String> = ["b", "c"].iter().map(|c| alloc(&mut s, c)).collect();
        assert_eq!(got, ["10.224.0.6", "10.224.0.7"]);
        assert_eq!(
            allocate(&mut s, &req("d")).unwrap_err().msg(),
            "No available addresses"
        );
        // Listed again later (Azure gave it back): an ordinary address again.
        alloc_gc_and_relist(&mut s);
    }

    fn alloc_gc_and_relist(s: &mut AddressSpace) {
        let addrs = ["10.224.0.5", "10.224.0.6", "10.224.0.7"];
        merge(s, &[view("10.224.0.0/16", &addrs[1..])]);
        merge(s, &[view("10.224.0.0/16", &addrs)]);
        assert_eq!(alloc(s, "e"), "10.224.0.5");
        merge(s, &[view("10.224.0.0/16", &addrs[1..])]);
        merge(s, &[view("10.224.0.0/16", &addrs)]);
        assert!(!s.pools["10.224.0.0/16"].addresses["10.224.0.5"].unlisted);
        gc(s, &HashSet::from(["b", "c"]));
        assert_eq!(free_count(s), 1, "{:?}", s.pools);
    }

    #[test]
    fn pool_choice_and_filters() {
        let mut s = AddressSpace::default();
        let mut secondary = view("10.225.0.0/24", &["10.225.0.9"]);
        secondary.priority = 1;
        secondary.if_name = "eth1".into();
        merge(
            &mut s,
            &[
                view("10.224.0.0/16", &["10.224.0.5", "10.224.0.6"]),
                secondary,
            ],
        );
        // The primary NIC's pool first, then the other pool once it is full.
        assert_eq!(alloc(&mut s, "a"), "10.224.0.5");
        assert_eq!(alloc(&mut s, "b"), "10.224.0.6");
        assert_eq!(alloc(&mut s, "b2"), "10.225.0.9");
        // master filter
        let e = allocate(
            &mut s,
            &Request {
                if_name: Some("eth1"),
                ..req("c")
            },
        )
        .unwrap_err();
        assert_eq!(e.msg(), "No available addresses");
        release(&mut s, "b2", None, None);
        let on_eth1 = Request {
            if_name: Some("eth1"),
            ..req("c")
        };
        assert_eq!(
            allocate(&mut s, &on_eth1).unwrap().address.ip().to_string(),
            "10.225.0.9"
        );
        let e = allocate(
            &mut s,
            &Request {
                if_name: Some("eth9"),
                ..req("c")
            },
        )
        .unwrap_err();
        assert_eq!(e.msg(), "no available address pools");
        let mut empty = AddressSpace::default();
        assert_eq!(
            allocate(&mut empty, &req("x")).unwrap_err().msg(),
            "no available address pools"
        );
    }

    #[test]
    #[allow(clippy::type_complexity)] // a table of cases reads best as tuples
    fn overlapping_pools_never_hand_out_an_address_twice() {
        // Found by fuzzing (fuzz/fuzz_targets/nmagent.rs): a wireserver answer listing
        // 10.224.0.0/16 and 10.224.0.0/1 made two pools holding 10.224.0.2, and the allocator
        // gave it to two containers. In use in one pool means taken in all of them.
        let mut s = AddressSpace::default();
        merge(
            &mut s,
            &[
                view("0.0.0.0/1", &["10.224.0.2"]),
                view("10.224.0.0/16", &["10.224.0.2", "10.224.0.3"]),
            ],
        );
        // In order: (container, requested address, Ok((ip, existing)) or Err(message prefix))
        let table: &[(&str, Option<&str>, std::result::Result<(&str, bool), &str>)] = &[
            ("c1", None, Ok(("10.224.0.2", false))),
            ("c2", None, Ok(("10.224.0.3", false))),
            ("c3", None, Err("No available addresses")),
            ("c3", Some("10.224.0.2"), Err("Address already in use")),
            ("c1", Some("10.224.0.2"), Ok(("10.224.0.2", true))),
            ("c1", None, Ok(("10.224.0.2", true))),
        ];
        for (cid, address, want) in table {
            let got = allocate(
                &mut s,
                &Request {
                    address: address.map(|a| a.parse().unwrap()),
                    ..req(cid)
                },
            );
            match (got, want) {
                (Ok(a), Ok((ip, existing))) => {
                    assert_eq!(a.address.ip().to_string(), *ip, "{cid} {address:?}");
                    assert_eq!(a.existing, *existing, "{cid} {address:?}");
                }
                (Err(e), Err(w)) => assert!(e.msg().starts_with(w), "{cid} {address:?}: {e}"),
                (got, want) => panic!("{cid} {address:?}: {got:?} vs {want:?}"),
            }
        }
        assert_eq!(free_count(&s), 0, "free in 0.0.0.0/1, in use in the /16");
        assert_eq!(release(&mut s, "c1", None, None).len(), 1);
        assert_eq!(free_count(&s), 1, "one address, listed in two pools");
    }

    #[test]
    fn gc_releases_only_invalid_owned_addresses() {
        let mut s = space_with(&["10.224.0.5", "10.224.0.6", "10.224.0.7"]);
        alloc(&mut s, "keep");
        alloc(&mut s, "drop");
        // A record in use without an owner (very old upstream): untouched.
        let rec = s
            .pools
            .get_mut("10.224.0.0/16")
            .unwrap()
            .addresses
            .get_mut("10.224.0.7")
            .unwrap();
        rec.in_use = true;
        let valid: HashSet<&str> = ["keep"].into_iter().collect();
        let released = gc(&mut s, &valid);
        assert_eq!(released, vec!["10.224.0.6".parse::<IpAddr>().unwrap()]);
        assert_eq!(free_count(&s), 1);
    }
}
