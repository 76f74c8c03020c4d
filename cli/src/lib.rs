//! The `netfence` command's library: reading cluster files, computing matrices and explanations,
//! and (feature `kernel`) the sandbox that builds a cluster of network namespaces. The binary
//! is a thin layer of arguments over it; the kernel tests drive the sandbox through it too.

#![forbid(unsafe_code)]

pub mod explain;
pub mod input;
pub mod matrix;
#[cfg(feature = "kernel")]
pub mod sandbox;
