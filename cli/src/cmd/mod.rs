//! The binary's commands, one module each: their arguments and what they run.

#[cfg(feature = "kernel")]
pub mod apply;
pub mod compile;
pub mod explain;
pub mod matrix;
#[cfg(feature = "kernel")]
pub mod sandbox;
