//! `/var/run/azure-vnet-ipam.json` in upstream's schema (spec B.4.3): store key `"IPAM"`,
//! address spaces, pools keyed by subnet CIDR, address records keyed by IP string. Every struct
//! keeps fields it does not model, so a file written by a newer or older upstream survives our
//! rewrite. Maps are `BTreeMap`s: Go writes map keys sorted, so do we.

use std::collections::BTreeMap;

use crate::encoding::{GoIp, GoIpNet};
use crate::store::schema::state_struct;
use crate::store::StateFile;

state_struct! {
    pub struct IpamFile {
        ipam: Option<AddressManager> = "IPAM", skip_if Option::is_none;
    }
}

state_struct! {
    pub struct AddressManager {
        version: String = "Version";
        timestamp: String = "TimeStamp";
        address_spaces: BTreeMap<String, AddressSpace> = "AddressSpaces";
    }
}

state_struct! {
    pub struct AddressSpace {
        id: String = "Id";
        /// 0 = local, 1 = global.
        scope: i64 = "Scope";
        pools: BTreeMap<String, Pool> = "Pools";
        /// Our addition (upstream ignores it): when the view merged last was fetched, in
        /// nanoseconds since the epoch, so an older view fetched concurrently is not merged
        /// over a newer one.
        last_refresh: Option<u64> = "LastRefresh", skip_if Option::is_none;
        /// Our addition: a fingerprint of the source's answer merged last, so an unchanged
        /// answer needs no link lookups and no merge.
        last_source: Option<u64> = "LastSource", skip_if Option::is_none;
    }
}

state_struct! {
    pub struct Pool {
        /// The subnet CIDR string, e.g. `"10.224.0.0/16"`.
        id: String = "Id";
        /// Host interface whose MAC matched the source's NIC.
        if_name: String = "IfName";
        subnet: GoIpNet = "Subnet";
        gateway: GoIp = "Gateway";
        addresses: BTreeMap<String, AddressRecord> = "Addresses";
        is_ipv6: bool = "IsIPv6";
        /// 0 for the primary NIC, 1 for a secondary NIC.
        priority: i64 = "Priority";
        ref_count: i64 = "RefCount";
        /// Our addition (upstream ignores unknown fields): the address handed out last, so the
        /// next allocation starts after it and a just-released address is reused last.
        last_allocated: Option<String> = "LastAllocated", skip_if Option::is_none;
    }
}

state_struct! {
    pub struct AddressRecord {
        /// The owner's full CNI_CONTAINERID; `""` when free.
        id: String = "ID";
        addr: GoIp = "Addr";
        in_use: bool = "InUse";
        /// Our addition (upstream keeps this in memory only, as `unhealthy`): the source no
        /// longer lists this address, which a pod still holds. Azure routes it elsewhere now,
        /// so when it is released the record goes instead of becoming free.
        unlisted: bool = "Unlisted", skip_if crate::store::schema::is_false;
    }
}

impl AddressRecord {
    pub fn is_free(&self) -> bool {
        !self.in_use && self.id.is_empty()
    }
}

impl StateFile for IpamFile {
    fn stamp(&mut self, version: &str, timestamp: &str) {
        let am = self.ipam.get_or_insert_with(AddressManager::default);
        am.version = version.to_string();
        am.timestamp = timestamp.to_string();
    }

    /// Every address is released; pools stay (upstream's `restore` does the same).
    fn forget_pods(&mut self) -> Vec<String> {
        let spaces = self
            .ipam
            .iter_mut()
            .flat_map(|m| m.address_spaces.values_mut());
        let none = std::collections::HashSet::new();
        spaces
            .flat_map(|s| crate::ipam::allocator::gc(s, &none))
            .map(|ip| ip.to_string())
            .collect()
    }
}

impl IpamFile {
    /// The address space `id`, created empty (local scope) if absent.
    pub fn space_mut(&mut self, id: &str) -> &mut AddressSpace {
        self.ipam
            .get_or_insert_with(AddressManager::default)
            .address_spaces
            .entry(id.to_string())
            .or_insert_with(|| AddressSpace {
                id: id.to_string(),
                ..Default::default()
            })
    }

    pub fn space(&self, id: &str) -> Option<&AddressSpace> {
        self.ipam.as_ref()?.address_spaces.get(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Spec B.4.3's example, plus fields a future upstream might add at every level.
    pub const UPSTREAM: &str = r#"{
	"IPAM": {
		"Version": "v1.6.21",
		"TimeStamp": "2026-08-20T19:46:13.987654321Z",
		"FutureTop": 7,
		"AddressSpaces": {
			"local": {
				"Id": "local",
				"Scope": 0,
				"FutureSpace": [1],
				"Pools": {
					"10.224.0.0/16": {
						"Id": "10.224.0.0/16",
						"IfName": "eth0",
						"Subnet": { "IP": "10.224.0.0", "Mask": "//8AAA==" },
						"Gateway": "10.224.0.1",
						"Addresses": {
							"10.224.0.17": { "ID": "ee86fb8b1d6c4e0f8b7a2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071", "Addr": "10.224.0.17", "InUse": true, "Lease": "x" },
							"10.224.0.18": { "ID": "", "Addr": "10.224.0.18", "InUse": false },
							"10.224.0.5":  { "ID": "", "Addr": "10.224.0.5",  "InUse": false }
						},
						"IsIPv6": false,
						"Priority": 0,
						"RefCount": 1,
						"FuturePool": {"a": null}
					}
				}
			}
		}
	},
	"SomethingElse": {"kept": true}
}"#;

    #[test]
    fn upstream_file_loads_and_round_trips_unknown_fields() {
        let f: IpamFile = serde_json::from_str(UPSTREAM).unwrap();
        let pool = &f.space("local").unwrap().pools["10.224.0.0/16"];
        assert_eq!(
            pool.subnet.to_network().unwrap().to_string(),
            "10.224.0.0/16"
        );
        assert!(pool.addresses["10.224.0.17"].in_use);
        assert!(pool.addresses["10.224.0.5"].is_free());
        let back: Value = serde_json::to_value(&f).unwrap();
        let orig: Value = serde_json::from_str(UPSTREAM).unwrap();
        assert_eq!(back, orig, "every field, known or not, survives");
    }

    #[test]
    fn nulls_and_missing_fields_load() {
        let f: IpamFile = serde_json::from_str(
            r#"{"IPAM":{"AddressSpaces":{"local":{"Id":"local","Pools":{"p":{"Addresses":null}}}}}}"#,
        )
        .unwrap();
        assert!(f.space("local").unwrap().pools["p"].addresses.is_empty());
        let f: IpamFile = serde_json::from_str(r#"{"IPAM":{"AddressSpaces":null}}"#).unwrap();
        assert!(f.ipam.unwrap().address_spaces.is_empty());
        let f: IpamFile = serde_json::from_str("{}").unwrap();
        assert!(f.ipam.is_none());
    }

    #[test]
    fn written_keys_are_sorted_like_go() {
        let f: IpamFile = serde_json::from_str(UPSTREAM).unwrap();
        let text = String::from_utf8(crate::store::to_go_json(&f).unwrap()).unwrap();
        let a = text.find("\"10.224.0.17\"").unwrap();
        let b = text.find("\"10.224.0.5\"").unwrap();
        assert!(a < b, "string order, as Go sorts map keys");
    }
}
