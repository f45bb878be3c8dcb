//! The address sources: the wireserver's NMAgent XML (`nmagent::parse`) and upstream's
//! interfaces.json (`parse_interfaces_json`). Never panics; what parses becomes pools
//! (`pools_from`, against a fixed set of links) that keep the pool rules, and those pools feed
//! the allocator.
#![no_main]

use std::collections::HashSet;

use azure_vnet_cni::internals::allocator::{self, Request};
use azure_vnet_cni::internals::encoding::parse_mac;
use azure_vnet_cni::internals::ipam_state::AddressSpace;
use azure_vnet_cni::internals::netlink::Link;
use azure_vnet_cni::internals::nmagent;
use azure_vnet_cni::internals::source::{self, NicInfo};
use libfuzzer_sys::fuzz_target;

fn link(index: u32, name: &str, mac: &str) -> Link {
    Link {
        index,
        name: name.into(),
        mac: parse_mac(mac),
        mtu: 1500,
        up: true,
        kind: None,
        peer_index: None,
        peer_netnsid: None,
    }
}

fn exercise(nics: &[NicInfo]) {
    // The MACs the seeds and the testbed use, plus loopback.
    let links = [
        link(1, "lo", "00:00:00:00:00:00"),
        link(2, "eth0", "00:0d:3a:4b:1c:2d"),
        link(3, "eth1", "00:0d:3a:6e:18:25"),
    ];
    for master in [None, Some("eth0"), Some("eth1")] {
        let pools = source::pools_from(nics, &links, master);
        let mut ids = HashSet::new();
        for p in &pools {
            assert!(ids.insert(p.id.clone()), "pool {} listed twice", p.id);
            assert_eq!(p.id, p.subnet.to_string());
            assert_eq!(
                p.subnet.network(),
                p.subnet.ip(),
                "pool subnet is canonical"
            );
            assert!(master.is_none_or(|m| m == p.if_name));
            assert!(links.iter().any(|l| l.name == p.if_name && l.name != "lo"));
            assert!(
                p.addresses.windows(2).all(|w| w[0] < w[1]),
                "sorted, unique"
            );
            for a in &p.addresses {
                assert!(p.subnet.contains(*a), "{a} outside {}", p.subnet);
                assert_ne!(*a, p.gateway);
            }
        }
        let mut space = AddressSpace::default();
        allocator::merge(&mut space, &pools);
        assert!(!allocator::merge(&mut space, &pools), "merge is idempotent");
        let free = allocator::free_count(&space);
        let mut got = HashSet::new();
        for i in 0..free.min(4) {
            let cid = format!("c{i}");
            let req = Request {
                container_id: &cid,
                ..Default::default()
            };
            match allocator::allocate(&mut space, &req) {
                Ok(a) => assert!(got.insert(a.address.ip()), "{} handed out twice", a.address),
                Err(_) => break,
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(nics) = nmagent::parse(data) {
        exercise(&nics);
    }
    if let Ok(nics) = source::parse_interfaces_json(data) {
        exercise(&nics);
    }
});
