//! azure-vnet's side of its IPAM plugin (`ipam.type`): the config the plugin gets and each
//! command by exec delegation through CNI_PATH, as libcni's `invoke.Delegate*` do (spec B.1.4).

use std::collections::HashMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde_json::Value;

use crate::cni::config::Attachment;
use crate::cni::env::Command;
use crate::cni::skel::{Plugin, Request};
use crate::delegate;
use crate::error::{Code, Result};
use crate::ipam::plugin::{IpamPlugin, PLUGIN_NAME};

/// What azure-vnet adds to the IPAM config (spec B.1.4).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Pin {
    /// `ipam.ipAddress`: the one address to release (harmless to IPAM plugins that do not
    /// know the key).
    pub address: Option<IpAddr>,
    /// `ipam.subnet`: the network's recorded subnet, so that every pod of a network stays in
    /// the subnet its master routes (a NIC added later must not capture new pods). Only for
    /// azure-vnet-ipam, as upstream (host-local reads `subnet` as its own range), and only
    /// when the conflist does not choose one itself.
    pub subnet: Option<IpNetwork>,
}

/// The network config for the IPAM plugin: the config we got, with the `pin` set.
fn stdin(req: &Request, pin: Pin) -> Vec<u8> {
    let mut raw = req.conf.raw.clone();
    if let Some(ipam) = raw.get_mut("ipam").and_then(Value::as_object_mut) {
        if let Some(ip) = pin.address {
            ipam.insert("ipAddress".into(), Value::from(ip.to_string()));
        }
        let ours = ipam.get("type").and_then(Value::as_str) == Some(PLUGIN_NAME);
        let chosen = ipam
            .get("subnet")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty());
        if let (Some(subnet), true, false) = (pin.subnet, ours, chosen) {
            ipam.insert("subnet".into(), Value::from(subnet.to_string()));
        }
    }
    serde_json::to_vec(&raw).unwrap_or_default()
}

/// azure-vnet-ipam's code, for when the file CNI_PATH names is this very executable (see
/// `delegate::spawn`); any other IPAM plugin, or another build of ours, is exec'd.
fn local(plugin_type: &str) -> Option<&'static (dyn Plugin + Sync)> {
    (plugin_type == PLUGIN_NAME).then_some(&IpamPlugin as &'static (dyn Plugin + Sync))
}

/// Start the IPAM plugin's ADD on another CPU; its answer is collected later (ADD builds the
/// veth pair meanwhile).
pub(crate) fn spawn_add(req: &Request, subnet: Option<IpNetwork>) -> Result<delegate::Pending> {
    let pin = Pin {
        subnet,
        ..Pin::default()
    };
    let ty = &req.conf.ipam()?.plugin_type;
    delegate::spawn(
        ty,
        Command::Add,
        &stdin(req, pin),
        req.vars,
        &req.env.path,
        local(ty),
    )?
    .start()
}

pub(crate) fn exec(req: &Request, command: Command, pin: Pin) -> Result<Vec<u8>> {
    delegate_with(req, command, &stdin(req, pin), req.vars)
}

/// The IPAM plugin named by the config, given `stdin` and the variables `vars`.
fn delegate_with(
    req: &Request,
    command: Command,
    stdin: &[u8],
    vars: &HashMap<String, String>,
) -> Result<Vec<u8>> {
    let ty = &req.conf.ipam()?.plugin_type;
    delegate::exec(ty, command, stdin, vars, &req.env.path, local(ty))
}

/// A failed release is "try again", as upstream answers one (spec B.3.8).
fn release_failed(e: crate::error::Error) -> crate::error::Error {
    e.with_code(Code::TryAgainLater)
        .context("failed to release address")
}

/// Release `pin.address`, or everything the container holds.
pub(crate) fn release(req: &Request, pin: Pin) -> Result<()> {
    exec(req, Command::Del, pin)
        .map(|_| ())
        .map_err(release_failed)
}

/// [`release`] on behalf of another attachment than the request's (GC): its container ID and
/// interface name are what the IPAM plugin's DEL sees.
pub(crate) fn release_of(req: &Request, container_id: &str, ifname: &str, pin: Pin) -> Result<()> {
    let mut vars = req.vars.clone();
    vars.insert("CNI_CONTAINERID".into(), container_id.into());
    vars.insert("CNI_IFNAME".into(), ifname.into());
    // DEL needs no namespace; the GC's request names none.
    vars.remove("CNI_NETNS");
    delegate_with(req, Command::Del, &stdin(req, pin), &vars)
        .map(|_| ())
        .map_err(release_failed)
}

/// The IPAM plugin's GC, keeping `also` besides the request's valid attachments.
pub(crate) fn gc_keeping(req: &Request, also: Vec<Attachment>) -> Result<()> {
    let mut raw = req.conf.raw.clone();
    let mut valid = req.conf.conf.valid_attachments.clone().unwrap_or_default();
    valid.extend(also);
    let valid = serde_json::to_value(valid).map_err(|e| crate::error::internal(e.to_string()))?;
    if let Some(m) = raw.as_object_mut() {
        m.insert("cni.dev/valid-attachments".into(), valid);
    }
    let stdin = serde_json::to_vec(&raw).map_err(|e| crate::error::internal(e.to_string()))?;
    delegate_with(req, Command::Gc, &stdin, req.vars).map(|_| ())
}

/// Whether the IPAM plugin speaks CNI 1.1 (GC, STATUS): its VERSION answer lists 1.1.0.
pub(crate) fn speaks_1_1(req: &Request) -> Result<bool> {
    let out = exec(req, Command::Version, Pin::default())?;
    let v: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
    Ok(v["supportedVersions"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x == "1.1.0")))
}
