//! nft-backend: turns a compiled `policy_compiler::Ruleset` into nftables state for
//! `table inet netfence`, without touching the kernel.
//!
//! `build` makes the structured table (`nft`), `render` prints it as an nft script, `trace`
//! decides packets by walking its rules (so tests check the rules themselves), and `diff` plans
//! the change from one table to another. The kernel half, which sends these tables over netlink,
//! is the `nft-netlink` crate; this one builds without the C libraries.

#![forbid(unsafe_code)]

pub mod build;
pub mod diff;
pub mod identity;
pub mod interval;
pub mod names;
pub mod nft;
pub mod render;
pub mod trace;

/// The one table netfence owns.
pub const TABLE: &str = "netfence";
/// Its family: one table for IPv4 and IPv6.
pub const FAMILY: &str = "inet";
