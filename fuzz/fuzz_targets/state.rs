//! The state files as `Store::load` loads them (`store::parse_state` into `IpamFile` and
//! `NetworkFile`; endpoint records as azure-vnet parses them on demand). Whatever loads must be
//! written back (`to_go_json`) and load again to an equal value, byte-stable on a second
//! rewrite (upstream files survive our rewrite); the IPAM allocator (allocate, release, gc,
//! merge) and the endpoint lookups must not panic on any loadable state.
#![no_main]

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;

use azure_vnet_cni::internals::allocator::{self, Request};
use azure_vnet_cni::internals::encoding::has_raw_token;
use azure_vnet_cni::internals::ipam_state::{AddressSpace, IpamFile};
use azure_vnet_cni::internals::network_state::{Endpoint, NetworkFile, RawEndpoint};
use azure_vnet_cni::internals::source::{first_address, PoolView};
use azure_vnet_cni::internals::{parse_state_shared, to_go_json, StateFile};
use libfuzzer_sys::fuzz_target;

const CID: &str = "fuzz-container";
/// The seed's pod (seed 003): its container ID and host veth.
const SEED_CID: &str = "ee86fb8be61987b83e1da1338b09fc0a83dcd12f9754455e668b16dc98f20f48";
const SEED_VETH: &str = "azvc440f455693";

/// An endpoint record as azure-vnet writes it (`RawEndpoint::from_endpoint`) parses back equal.
fn endpoint_round_trip(ep: &Endpoint) {
    let raw = RawEndpoint::from_endpoint(ep).expect("an endpoint record serializes");
    let back = raw.parse().expect("our endpoint record parses");
    assert_eq!(&back, ep, "endpoint record changed");
}

fn round_trip<T: StateFile + PartialEq + std::fmt::Debug>(f: &T) {
    let out = to_go_json(f).expect("a loaded state file serializes");
    let back: T = match parse_state_shared(Path::new("rewritten.json"), out.clone()) {
        Ok(b) => b,
        Err(e) => panic!(
            "our rewrite does not load: {e}\n{}",
            String::from_utf8_lossy(&out)
        ),
    };
    assert_eq!(&back, f, "rewrite changed the state");
    let again = to_go_json(&back).expect("serializes");
    assert_eq!(again, out, "second rewrite differs");
}

/// As the store loads a file: endpoint records are views of the bytes read.
fn load<T: StateFile>(data: &[u8]) -> Option<T> {
    parse_state_shared(Path::new("fuzz.json"), data.to_vec()).ok()
}

/// A source view built from the stored pools, as a refresh would bring it.
fn views(space: &AddressSpace) -> Vec<PoolView> {
    space
        .pools
        .iter()
        .filter_map(|(id, p)| {
            let net = p.subnet.to_network()?;
            let subnet = ipnetwork::IpNetwork::new(net.network(), net.prefix()).ok()?;
            let gateway = first_address(&subnet)?;
            let addresses: Vec<IpAddr> = p
                .addresses
                .keys()
                .filter_map(|k| k.parse().ok())
                .filter(|a| subnet.contains(*a) && *a != gateway)
                .collect();
            Some(PoolView {
                id: id.clone(),
                subnet,
                gateway,
                if_name: p.if_name.clone(),
                priority: p.priority,
                addresses,
            })
        })
        .collect()
}

/// Every address a record holds (free or not, by its `Addr`, else its key), in any pool.
fn held_ips(space: &AddressSpace) -> HashSet<IpAddr> {
    space
        .pools
        .values()
        .flat_map(|p| p.addresses.iter())
        .filter(|(_, r)| !r.is_free())
        .filter_map(|(k, r)| r.addr.0.or_else(|| k.parse().ok()))
        .collect()
}

fn exercise_allocator(space: &AddressSpace) {
    let mut s = space.clone();
    let before = allocator::free_count(&s);
    let held = held_ips(&s);
    let req = Request {
        container_id: CID,
        ..Default::default()
    };
    if let Ok(a) = allocator::allocate(&mut s, &req) {
        if !a.existing {
            assert!(!held.contains(&a.address.ip()), "{a:?} was in use already");
        }
        let b = allocator::allocate(&mut s, &req).expect("a repeated ADD succeeds");
        assert_eq!(
            a.address, b.address,
            "a repeated ADD returns the same address"
        );
        assert!(b.existing);
        assert!(allocator::free_count(&s) <= before);
        let released = allocator::release(&mut s, CID, None, None);
        assert!(
            released.contains(&a.address.ip()),
            "{released:?} lacks {a:?}"
        );
    }
    // A specific address and a specific pool, taken from the state itself.
    let first = s
        .pools
        .iter()
        .next()
        .map(|(id, p)| (id.clone(), p.addresses.keys().next().cloned()));
    if let Some((pool_id, key)) = first {
        let address = key.and_then(|k| k.parse::<IpAddr>().ok());
        for (pool, address) in [(Some(pool_id.as_str()), None), (None, address)] {
            let req = Request {
                container_id: CID,
                pool,
                address,
                if_name: None,
            };
            let _ = allocator::allocate(&mut s, &req);
            let _ = allocator::release(&mut s, CID, pool, address);
        }
    }
    let valid: HashSet<&str> = [CID].into_iter().collect();
    let _ = allocator::gc(&mut s, &valid);
    let _ = allocator::gc(&mut s, &HashSet::new());

    let view = views(&s);
    allocator::merge(&mut s, &view);
    assert!(
        !allocator::merge(&mut s, &view),
        "merging the same view twice changes nothing"
    );
    let _ = allocator::allocate(&mut s, &req);
}

fuzz_target!(|data: &[u8]| {
    // A record alone, as `RawEndpoint::parse` reads it (from a file `parse_state` accepted).
    if let Ok(ep) = serde_json::from_slice::<Endpoint>(data) {
        if serde_json::from_slice(data).is_ok_and(|v| !has_raw_token(&v)) {
            endpoint_round_trip(&ep);
        }
    }
    if let Some(f) = load::<IpamFile>(data) {
        round_trip(&f);
        if let Some(am) = &f.ipam {
            for space in am.address_spaces.values() {
                exercise_allocator(space);
            }
        }
        let mut stamped = f.clone();
        stamped.stamp("v0.0.0", "2026-11-21T00:00:00Z");
        round_trip(&stamped);
    }
    if let Some(f) = load::<NetworkFile>(data) {
        round_trip(&f);
        if let Ok(eps) = f.select(None, |_, _, _| true) {
            for (_, _, ep) in &eps {
                endpoint_round_trip(ep);
            }
        }
        let _ = f.veth_owner(SEED_VETH);
        let _ = f.veth_owner(CID);
        for net in ["azure", ""] {
            let _ = f.select(Some(SEED_CID), |n, _, _| n == net);
            let _ = f.select(Some(CID), |n, k, e| {
                n == net && k.starts_with(&e.container_id)
            });
        }
        let mut stamped = f.clone();
        stamped.stamp("v0.0.0", "2026-11-21T00:00:00Z");
        round_trip(&stamped);
    }
});
