//! nft-backend: turns a compiled `policy_compiler::Ruleset` into nftables state for
//! `table inet netfence`.
//!
//! So far it holds the naming scheme that keeps cluster-controlled text out of the ruleset;
//! rendering and the netlink path come next (see ARCHITECTURE.md).

pub mod names;

/// The one table netfence owns.
pub const TABLE: &str = "netfence";
/// Its family: one table for IPv4 and IPv6.
pub const FAMILY: &str = "inet";
