//! `azure-vnet-ipam`: the node's VNet secondary IPs, learned from the wireserver (NMAgent XML)
//! or a file, kept in upstream's state file, handed out by a deterministic allocator.

pub mod allocator;
pub mod nmagent;
pub mod plugin;
pub mod source;
pub mod state;
pub mod wireserver;
