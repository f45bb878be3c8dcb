//! `azure-vnet status`: every endpoint with its health, every pool, every problem, for people
//! (an aligned table) or machines (`--json`). Exit status 0: no problem; 1: problems; 2: it
//! cannot tell (a state file unreadable). Changes nothing.

use std::collections::HashMap;

use crate::cli::node::{self, KernelView, NodeConfig, NodeView, Snapshot};
use crate::cli::{Options, Usage};
use crate::error::Result;
use crate::logging::Logger;
use crate::netlink::Netlink;

const HELP: &str = "\
usage: azure-vnet status [--json] [--conflist FILE]

Every endpoint (pod, container, address, host veth, network namespace) with its health (host
veth present and up, host route present, namespace alive), every address pool (size, in use,
free), and the problems, each named:
  allocation-without-record   an address in use that no endpoint record names
  record-without-allocation   an endpoint record whose address IPAM does not give its container
  namespace-gone              an endpoint record whose pod namespace no longer exists
  veth-missing, veth-down     an endpoint record without its host veth, or with it down
  route-missing               an endpoint record without its host route
  orphan-veth                 an azv host veth that no record names
  orphan-route                a host route on a recorded veth that no record names
What an ADD or DEL still running has half made is not a problem (it is listed as in flight).

Paths (runDir, ...) come from the conflist the runtime uses (default
/etc/cni/net.d/10-azure.conflist) or the environment (AZURE_VNET_RUN_DIR, ...), as the
plugins read them. The state locks are held only while the two state files are read.

Exit status: 0 no problem, 1 problems, 2 cannot tell.
";

/// Everything `status`, `reconcile` and `metrics` share: the configuration and one look.
pub(crate) fn look(conflist: Option<&std::path::Path>) -> Result<(NodeConfig, Snapshot, NodeView)> {
    let vars: HashMap<String, String> = std::env::vars().collect();
    let cfg = NodeConfig::load(conflist, &vars)?;
    let log = Logger::discard();
    let snap = Snapshot::take(&cfg, &log)?;
    let nl = Netlink::connect()?;
    let kernel = KernelView::read(&nl)?;
    let view = node::view(&cfg, &snap, &kernel);
    Ok((cfg, snap, view))
}

pub(crate) fn status_cmd(p: &mut lexopt::Parser) -> std::result::Result<i32, Usage> {
    let o = Options::parse(p, &["conflist"], &["json"])?;
    if o.help {
        print!("{HELP}");
        return Ok(0);
    }
    let (_, snap, view) = match look(o.path("conflist").map(|p| p.as_path())) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("azure-vnet status: {}", e.msg());
            return Ok(2);
        }
    };
    if o.flag("json") {
        println!(
            "{}",
            serde_json::to_string_pretty(&view).unwrap_or_default()
        );
    } else {
        print!("{}", render(&view, snap.sees_processes));
    }
    Ok(if view.problems.is_empty() { 0 } else { 1 })
}

/// Rows of cells as aligned columns, two spaces apart.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&width).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:w$}  "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

fn render(v: &NodeView, sees_processes: bool) -> String {
    let mut out = format!("network {}\n\n", v.network);
    let rows: Vec<Vec<String>> = v
        .endpoints
        .iter()
        .map(|e| {
            let mut health = Vec::new();
            if !e.namespace_alive {
                health.push("namespace gone");
            }
            if !e.veth_present {
                health.push("no veth");
            } else if !e.veth_up {
                health.push("veth down");
            }
            if !e.host_route {
                health.push("no route");
            }
            let pod = match (e.pod_namespace.is_empty(), e.pod_name.is_empty()) {
                (true, true) => "-".to_string(),
                _ => format!("{}/{}", e.pod_namespace, e.pod_name),
            };
            vec![
                pod,
                e.container_id.chars().take(12).collect(),
                e.address
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "-".into()),
                e.host_veth.clone(),
                e.netns.clone(),
                if health.is_empty() {
                    "ok".into()
                } else {
                    health.join(", ")
                },
            ]
        })
        .collect();
    out.push_str(&format!("ENDPOINTS ({})\n", rows.len()));
    out.push_str(&table(
        &["POD", "CONTAINER", "ADDRESS", "VETH", "NETNS", "HEALTH"],
        &rows,
    ));
    let pools: Vec<Vec<String>> = v
        .pools
        .iter()
        .map(|p| {
            vec![
                p.subnet.clone(),
                p.size.to_string(),
                p.in_use.to_string(),
                p.free.to_string(),
            ]
        })
        .collect();
    out.push_str("\nPOOLS\n");
    out.push_str(&table(&["SUBNET", "SIZE", "IN USE", "FREE"], &pools));
    let problems: Vec<Vec<String>> = v
        .problems
        .iter()
        .map(|p| {
            vec![
                p.kind.as_str().to_string(),
                p.subject.clone(),
                p.detail.clone(),
            ]
        })
        .collect();
    out.push_str(&format!("\nPROBLEMS ({})\n", problems.len()));
    if !problems.is_empty() {
        out.push_str(&table(&["KIND", "SUBJECT", "DETAIL"], &problems));
    }
    if !v.in_flight.is_empty() {
        out.push_str(&format!("\nin flight: {}\n", v.in_flight.join(", ")));
    }
    if !sees_processes {
        out.push_str(
            "\nnote: this process cannot see the node's CNI operations (it needs the host's PID \
             namespace, and CAP_SYS_PTRACE): an ADD or DEL in flight may show as a problem\n",
        );
    }
    out
}
