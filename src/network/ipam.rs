//! azure-vnet's side of its IPAM plugin (`ipam.type`): the config the plugin gets and each
//! command by exec delegation through CNI_PATH, as libcni's `invoke.Delegate*` do (spec B.1.4).

use std::net::IpAddr;

use serde_json::Value;

use crate::cni::env::Command;
use crate::cni::skel::Request;
use crate::delegate;
use crate::error::{Code, Result};

/// The network config for the IPAM plugin: the config we got, with `ipam.ipAddress` set when
/// one address is to be released (harmless to IPAM plugins that do not know the key).
fn stdin(req: &Request, address: Option<IpAddr>) -> Vec<u8> {
    let mut raw = req.conf.raw.clone();
    if let (Some(ip), Some(ipam)) = (address, raw.get_mut("ipam").and_then(Value::as_object_mut)) {
        ipam.insert("ipAddress".into(), Value::from(ip.to_string()));
    }
    serde_json::to_vec(&raw).unwrap_or_default()
}

/// Start the IPAM plugin's ADD; its answer is collected later (ADD builds the veth pair
/// meanwhile).
pub(crate) fn spawn_add(req: &Request) -> Result<delegate::Pending> {
    delegate::spawn(
        &req.conf.ipam()?.plugin_type,
        Command::Add,
        &stdin(req, None),
        req.vars,
        &req.env.path,
    )
}

pub(crate) fn exec(req: &Request, command: Command, address: Option<IpAddr>) -> Result<Vec<u8>> {
    delegate::exec(
        &req.conf.ipam()?.plugin_type,
        command,
        &stdin(req, address),
        req.vars,
        &req.env.path,
    )
}

/// Release `address`, or everything the container holds. A failure is "try again", as
/// upstream answers a failed release (spec B.3.8).
pub(crate) fn release(req: &Request, address: Option<IpAddr>) -> Result<()> {
    exec(req, Command::Del, address).map(|_| ()).map_err(|e| {
        e.with_code(Code::TryAgainLater)
            .context("failed to release address")
    })
}

/// Whether the IPAM plugin speaks CNI 1.1 (GC, STATUS): its VERSION answer lists 1.1.0.
pub(crate) fn speaks_1_1(req: &Request) -> Result<bool> {
    let out = exec(req, Command::Version, None)?;
    let v: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
    Ok(v["supportedVersions"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x == "1.1.0")))
}
