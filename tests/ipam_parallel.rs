//! 64 concurrent ADDs against a 64-address pool: 64 distinct addresses, a valid state file;
//! the 65th gets the exhaustion error.

mod common;
use common::*;

use std::collections::BTreeSet;
use std::sync::Arc;

#[test]
fn sixty_four_parallel_adds_fill_a_sixty_four_address_pool_exactly() {
    let tb = Arc::new(Testbed::up(64));
    let conf = ipam_conf("1.0.0", r#","environment":"file""#);
    let threads: Vec<_> = (0..64)
        .map(|i| {
            let tb = Arc::clone(&tb);
            let conf = conf.clone();
            std::thread::spawn(move || {
                let env = with(
                    tb.env("a"),
                    &cni_env("ADD", &format!("par-{i:02}"), "/var/run/netns/x", "eth0"),
                );
                let out = run_plugin(Some(&tb.node("a")), &ipam_bin(), &env, conf.as_bytes());
                out.succeeded()["ips"][0]["address"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
        })
        .collect();
    let ips: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let distinct: BTreeSet<&String> = ips.iter().collect();
    assert_eq!(distinct.len(), 64, "{ips:?}");

    let state = tb.ipam_state("a");
    let used = ips_in_use(&state);
    assert_eq!(used.len(), 64);
    let owners: BTreeSet<&String> = used.values().collect();
    assert_eq!(owners.len(), 64, "one address per container");

    let env = with(
        tb.env("a"),
        &cni_env("ADD", "par-65", "/var/run/netns/x", "eth0"),
    );
    let before = std::fs::read(tb.run_dir("a").join("azure-vnet-ipam.json")).unwrap();
    let e = run_plugin(Some(&tb.node("a")), &ipam_bin(), &env, conf.as_bytes()).err(100);
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains("No available addresses"),
        "{e}"
    );
    assert_eq!(
        std::fs::read(tb.run_dir("a").join("azure-vnet-ipam.json")).unwrap(),
        before
    );
}
