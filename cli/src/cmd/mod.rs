//! The binary's commands, one module each: their arguments and what they run.

pub mod apply;
pub mod compile;
pub mod explain;
pub mod matrix;
pub mod sandbox;
