//! `azure-vnet`: the transparent-mode main plugin, its state file and naming rules.

mod ipam;
pub(crate) mod names;
pub mod plugin;
mod record;
pub mod state;
mod teardown;
