//! `azure-vnet`: the transparent-mode main plugin, its state file and naming rules.

mod ipam;
pub(crate) mod names;
pub mod plugin;
pub(crate) mod record;
pub mod state;
mod teardown;
