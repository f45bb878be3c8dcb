//! azure-vnet-cni: Azure CNI in transparent mode (`azure-vnet`) and its IPAM plugin
//! (`azure-vnet-ipam`), as one library with two thin binaries.
//!
//! Rooms, and what may call what:
//! - [`cni`]: the CNI protocol (env, config, results, versions, errors, dispatcher). Pure.
//! - [`store`]: state files (flock + atomic replace). [`encoding`]: upstream's Go JSON shapes.
//! - [`ipam`]: address sources, pools, the allocator and the `azure-vnet-ipam` commands.
//! - [`settings`], [`logging`]: overrides and JSON-lines logs shared by both plugins.

pub mod cni;
pub mod datapath;
pub mod delegate;
pub mod encoding;
pub mod error;
pub mod ipam;
pub mod logging;
pub mod netlink;
pub mod netns;
pub mod network;
pub mod rollback;
pub mod settings;
pub mod store;
pub mod sysctl;

pub use error::{Code, Error, Result};

/// What a binary's `main` does: collect env and stdin, dispatch, print, exit.
pub fn run_plugin(plugin: &dyn cni::skel::Plugin) -> ! {
    use std::io::{Read, Write};

    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-v" || a == "--version") {
        // Upstream prints "Azure CNI Version <v>" (spec A.1).
        println!("Azure CNI Version {}", store::plugin_version());
        std::process::exit(0);
    }
    let vars: std::collections::HashMap<String, String> = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    // Read one byte past the limit so the dispatcher can tell "too big" from "exactly full".
    let mut stdin = Vec::new();
    let _ = std::io::stdin()
        .take(cni::config::MAX_STDIN as u64 + 1)
        .read_to_end(&mut stdin);
    let out = cni::skel::dispatch(plugin, &vars, &stdin);
    let mut so = std::io::stdout().lock();
    let _ = so.write_all(&out.stdout);
    let _ = so.flush();
    std::process::exit(out.exit_code)
}
