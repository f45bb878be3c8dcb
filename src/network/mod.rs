//! `azure-vnet`: the transparent-mode main plugin, its state file and naming rules.

pub mod names;
pub mod plugin;
pub mod state;
