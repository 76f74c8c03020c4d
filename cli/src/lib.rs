//! The offline `netfence` command's library: reading cluster files and computing matrices, shared
//! by the binary and the integration tests.

pub mod explain;
pub mod input;
pub mod matrix;
pub mod sandbox;
