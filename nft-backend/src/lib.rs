//! nft-backend: turns a compiled `policy_compiler::Ruleset` into nftables state for
//! `table inet netfence`.
//!
//! `build` makes the structured table (`nft`), `render` prints it as an nft script, and `trace`
//! decides packets by walking its rules, so tests check the rules themselves. The netlink path
//! will read the same structured table.

pub mod build;
pub mod diff;
pub mod interval;
pub mod names;
#[allow(unsafe_code)]
pub mod netlink;
pub mod nft;
pub mod render;
pub mod trace;

/// The one table netfence owns.
pub const TABLE: &str = "netfence";
/// Its family: one table for IPv4 and IPv6.
pub const FAMILY: &str = "inet";
