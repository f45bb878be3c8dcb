//! `azure-vnet`: the transparent-mode main plugin, its state file and naming rules.

pub mod index;
pub mod names;
pub mod persist;
pub mod plugin;
pub mod state;
