//! Identifiers derived from the CNI request (spec B.3.1, A.2, A.3.1-2).

use crate::cni::env::CniEnv;

/// The names one request derives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ident {
    pub host_veth: String,
    /// What the record's `IfName` says (upstream's temporary name, as the seed records it).
    pub container_veth: String,
    pub short_id: String,
    pub long_id: String,
}

impl Ident {
    pub fn of(env: &CniEnv) -> Ident {
        let a = &env.args;
        let key = veth_key(
            a.pod_namespace(),
            a.pod_name(),
            &env.container_id,
            &env.ifname,
        );
        let host_veth = host_veth_name(&key);
        Ident {
            container_veth: container_veth_name(&host_veth),
            host_veth,
            short_id: short_endpoint_id(&env.container_id, &env.ifname),
            long_id: long_endpoint_id(&env.container_id, &env.ifname),
        }
    }

    /// Whether `key` is one of the two forms of this request's endpoint ID.
    pub fn is_key(&self, key: &str) -> bool {
        key == self.short_id || key == self.long_id
    }
}

/// Host-side veth: `azv` + the first 11 hex digits of SHA-1(key): 14 characters, within
/// IFNAMSIZ with room for the container side's `2`.
pub fn host_veth_name(key: &str) -> String {
    let hex = sha1_smol::Sha1::from(key).digest().to_string();
    format!("azv{}", &hex[..11])
}

/// Whether `name` has the shape of a host veth name.
pub fn is_host_veth(name: &str) -> bool {
    name.len() == 14 && name.starts_with("azv")
}

/// The key upstream hashes: `<namespace>.<pod>` from kubelet's CNI_ARGS. Runtimes that pass no
/// full pod identity (containerd's `ctr run --cni` and nerdctl pass none; podman passes
/// `K8S_POD_NAME` without a namespace) get the container ID and the interface name instead of
/// an error (spec A.3.1).
pub fn veth_key(
    pod_namespace: Option<&str>,
    pod_name: Option<&str>,
    container_id: &str,
    ifname: &str,
) -> String {
    match (pod_namespace, pod_name) {
        (Some(ns), Some(name)) => format!("{ns}.{name}"),
        _ => format!("{container_id}.{ifname}"),
    }
}

/// The container side is created as `<host>2` and renamed to CNI_IFNAME in the pod.
pub fn container_veth_name(host: &str) -> String {
    format!("{host}2")
}

/// Upstream's endpoint ID: the first 8 characters of the container ID, `-`, the interface.
/// Upstream returns "" for IDs of 8 characters or fewer; we use the whole ID instead.
pub fn short_endpoint_id(container_id: &str, ifname: &str) -> String {
    let head: String = container_id.chars().take(8).collect();
    format!("{head}-{ifname}")
}

/// Used when the short ID is taken by another container (spec A.3.2: cnitool's
/// `cnitool-<hash>` and ctr's `default-<name>` share their first 8 characters). The `/` cannot
/// appear in a container ID, an interface name, or so in any short ID: a long ID never equals
/// another container's short ID (with `-`, ctr's `k8s-pod1` + `eth0` would be `k8s-pod1x`'s
/// short ID), and two long IDs are equal only for the same container and interface.
pub fn long_endpoint_id(container_id: &str, ifname: &str) -> String {
    format!("{container_id}/{ifname}")
}

/// The interface name in an endpoint ID of `container_id` (either form above); `None` for an
/// ID of another shape.
pub fn ifname_in_endpoint_id<'a>(id: &'a str, container_id: &str) -> Option<&'a str> {
    let head: String = container_id.chars().take(8).collect();
    id.strip_prefix(container_id)
        .and_then(|rest| rest.strip_prefix('/'))
        .or_else(|| id.strip_prefix(head.as_str())?.strip_prefix('-'))
        .filter(|i| !i.is_empty())
}

/// Lock stripe guarding one host veth name between ADD, DEL and GC (see the plugin).
pub fn veth_lock_name(host: &str) -> String {
    format!("veth-{}.lock", host.get(3..5).unwrap_or("00"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interface_name_comes_back_out_of_either_endpoint_id() {
        let cid = "ee86fb8b5d2c4e1f";
        for ifname in ["eth0", "net1", "a-b"] {
            for id in [
                short_endpoint_id(cid, ifname),
                long_endpoint_id(cid, ifname),
            ] {
                assert_eq!(ifname_in_endpoint_id(&id, cid), Some(ifname), "{id}");
            }
        }
        // (id, container ID): not this container's, or no interface.
        for (id, c) in [
            ("ee86fb8b-eth0", "ffffffff0000"),
            ("ee86fb8b-", cid),
            ("ee86fb8b5d2c4e1f/", cid),
            ("eth0", cid),
        ] {
            assert_eq!(ifname_in_endpoint_id(id, c), None, "{id}");
        }
    }

    #[test]
    fn names_match_the_seed_and_the_spec() {
        // Seed: pod default/nginx -> azvc440f455693, container side azvc440f4556932.
        let host = host_veth_name(&veth_key(
            Some("default"),
            Some("nginx"),
            "ee86fb8b",
            "eth0",
        ));
        assert_eq!(host, "azvc440f455693");
        assert_eq!(container_veth_name(&host), "azvc440f4556932");
        // Spec B.4.2: kube-system/coredns-789789675-x2lqk -> azvd3e9f8799af.
        assert_eq!(
            host_veth_name("kube-system.coredns-789789675-x2lqk"),
            "azvd3e9f8799af"
        );
        assert!(container_veth_name(&host).len() <= 15);
    }

    #[test]
    fn endpoint_ids() {
        let table = [
            (
                "ee86fb8be61987b83e1da1338b09fc0a83dcd12f9754455e668b16dc98f20f48",
                "eth0",
                "ee86fb8b-eth0",
            ),
            ("cnitool-20ab", "eth0", "cnitool--eth0"),
            ("short", "eth0", "short-eth0"),
            ("12345678", "net1", "12345678-net1"),
        ];
        for (cid, ifname, want) in table {
            assert_eq!(short_endpoint_id(cid, ifname), want);
        }
        assert_eq!(long_endpoint_id("default-c1", "eth0"), "default-c1/eth0");
        // The collision a `-` would allow: an 8-character ID's short form is its long form.
        assert_ne!(
            long_endpoint_id("k8s-pod1", "eth0"),
            short_endpoint_id("k8s-pod1x", "eth0")
        );
        assert_ne!(
            long_endpoint_id("abcd1234", "eth0"),
            short_endpoint_id("abcd1234", "eth0")
        );
    }

    #[test]
    fn runtimes_without_pod_identity_get_distinct_names() {
        let a = host_veth_name(&veth_key(None, None, "default-c1", "eth0"));
        let b = host_veth_name(&veth_key(None, None, "default-c2", "eth0"));
        let c = host_veth_name(&veth_key(Some("ns"), None, "default-c1", "eth0"));
        assert_ne!(a, b);
        assert_eq!(a, c, "half a pod identity is no identity");
        assert!(a.starts_with("azv") && a.len() == 14);
        assert_eq!(veth_lock_name(&a), format!("veth-{}.lock", &a[3..5]));
    }
}
