//! azure-vnet-cni: Azure CNI in transparent mode (`azure-vnet`) and its IPAM plugin
//! (`azure-vnet-ipam`), as one library and one executable that acts by the name it is run as.
//!
//! Rooms, and what may call what:
//! - [`cni`]: the CNI protocol: environment, network config, results and versions, errors,
//!   and the dispatcher (`skel`) that turns env + stdin into stdout + exit status. Pure.
//! - [`store`]: the state files: a kernel lock around read-modify-write, crash-safe
//!   replacement, the `state_struct!` schema macro; [`encoding`]: upstream's Go JSON shapes.
//! - [`ipam`]: `azure-vnet-ipam`: address sources (wireserver, file), pools, the pure
//!   allocator, its state file and commands.
//! - [`network`]: `azure-vnet`: names, the endpoint records and their file, the IPAM
//!   delegation, the shared teardown, and the commands.
//! - [`datapath`]: the transparent-mode datapath (ADD's steps, CHECK's verification), over
//!   [`netlink`] (a thin typed rtnetlink layer), [`netns`] (work inside a namespace on a
//!   short-lived thread) and [`sysctl`].
//! - [`delegate`]: exec'ing another CNI plugin (or running ours in-process); [`cpu`]: moving
//!   a helper that must run beside its caller to another CPU; [`rollback`]: ADD's undo guard.
//! - [`error`]: the one error type and its CNI codes; [`settings`], [`logging`]: path
//!   overrides and the JSON-lines logs shared by both plugins.

pub(crate) mod cli;
pub(crate) mod cni;
pub(crate) mod cpu;
pub(crate) mod datapath;
pub(crate) mod delegate;
pub(crate) mod encoding;
pub(crate) mod error;
pub(crate) mod files;
pub(crate) mod ipam;
pub(crate) mod logging;
pub(crate) mod netlink;
pub(crate) mod netns;
pub(crate) mod network;
pub(crate) mod rollback;
pub(crate) mod settings;
pub(crate) mod store;
pub(crate) mod sysctl;

/// The crate's internals, for the fuzz targets and the benchmark's in-process floor only
/// (`--features internals`); nothing else depends on them.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod internals {
    pub use crate::cni::{config, result, version};
    pub use crate::ipam::{allocator, nmagent, source, state as ipam_state};
    pub use crate::network::record::add_then_find;
    pub use crate::network::state as network_state;
    pub use crate::store::{parse_state, parse_state_shared, to_go_json, StateFile};
    pub mod datapath {
        pub use crate::datapath::*;
    }
    pub mod encoding {
        pub use crate::encoding::*;
    }
    pub mod netlink {
        pub use crate::netlink::*;
    }
    pub mod netns {
        pub use crate::netns::*;
    }
    pub mod settings {
        pub use crate::settings::*;
    }
}

/// The executable's `main`: `azure-vnet-ipam` when run under that name (as busybox and
/// Calico's `calico-ipam` do), `azure-vnet` otherwise; and `azure-vnet` run by a person (a
/// command, no CNI_COMMAND: a runtime always sets it and passes no arguments) is the
/// command-line tool.
pub fn main() -> ! {
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    let args: Vec<_> = args.collect();
    let name = std::path::Path::new(&argv0).file_name().unwrap_or_default();
    if name
        .to_string_lossy()
        .starts_with(ipam::plugin::PLUGIN_NAME)
    {
        run_plugin(&ipam::plugin::IpamPlugin)
    }
    let by_a_person = std::env::var_os("CNI_COMMAND").is_none_or(|c| c.is_empty())
        && args.first().is_some_and(|a| a != "-v" && a != "--version");
    if by_a_person {
        std::process::exit(cli::run(args))
    }
    run_plugin(&network::plugin::NetworkPlugin)
}

/// What a binary's `main` does: collect env and stdin, dispatch, print, exit.
fn run_plugin(plugin: &dyn cni::skel::Plugin) -> ! {
    use std::io::{Read, Write};

    // One malloc arena: a process that lives a few milliseconds gains nothing from a
    // per-thread arena for its short pod thread, which would reserve and touch memory of its
    // own. (SAFETY: glibc's mallopt, called before any other thread exists.)
    unsafe { nix::libc::mallopt(nix::libc::M_ARENA_MAX, 1) };

    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-v" || a == "--version") {
        // Upstream prints "Azure CNI Version <v>" (spec A.1).
        println!("Azure CNI Version {}", store::plugin_version());
        std::process::exit(0);
    }
    // Values that are not UTF-8 cannot be recorded in the JSON state files (nor compared
    // with what is): a CNI_* variable holding one is refused before anything changes.
    let mut vars = std::collections::HashMap::new();
    let mut not_utf8 = Vec::new();
    for (k, v) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        match v.into_string() {
            Ok(v) => {
                vars.insert(k, v);
            }
            Err(v) => {
                if k.starts_with("CNI_") {
                    not_utf8.push(k.clone());
                }
                vars.insert(k, v.to_string_lossy().into_owned());
            }
        }
    }
    // Read one byte past the limit so the dispatcher can tell "too big" from "exactly full".
    let mut stdin = Vec::new();
    let _ = std::io::stdin()
        .take(cni::config::MAX_STDIN as u64 + 1)
        .read_to_end(&mut stdin);
    // Delegates we exec die with us (see `delegate::spawn`).
    delegate::die_with_parent(&vars);
    let out = match not_utf8.is_empty() {
        true => cni::skel::dispatch(plugin, &vars, &stdin),
        false => cni::skel::refuse(error::invalid_env(format!(
            "{} is not valid UTF-8",
            not_utf8.join(", ")
        ))),
    };
    let mut so = std::io::stdout().lock();
    let _ = so.write_all(&out.stdout);
    let _ = so.flush();
    std::process::exit(out.exit_code)
}
