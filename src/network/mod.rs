//! `azure-vnet`: the transparent-mode main plugin, its state file and naming rules.

pub(crate) mod ipam;
pub(crate) mod names;
pub mod plugin;
pub(crate) mod record;
pub mod state;
pub(crate) mod teardown;
