//! policy-compiler: Kubernetes NetworkPolicy semantics, from cluster state to per-node allow-sets.
//!
//! Pure: no I/O, no async, no netfilter. Objects are lowered once (`lower`) into model types
//! (`model`, `selector`); `compile` turns a snapshot into one node's `ir::Ruleset`, and keeps it
//! up to date incrementally; `eval` decides flows from rulesets and `reference` decides them from
//! the model, as the oracle.

#![forbid(unsafe_code)]

pub mod compile;
pub mod diagnostic;
pub mod endpoints;
pub mod eval;
pub mod flow;
pub mod ir;
pub mod lower;
pub mod lower_service;
pub mod model;
pub mod nat;
pub mod nat_reference;
mod pod_index;
pub mod reference;
pub mod selector;
pub mod service;

pub use compile::{compile, compile_all, compile_all_reporting, Compiler};
pub use diagnostic::Diagnostic;
pub use flow::{Flow, L4};
pub use ir::Ruleset;
pub use model::{ObjectKey, Protocol, Snapshot};
