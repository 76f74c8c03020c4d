//! Shared pieces of the integration tests: the golden-fixture reader and the random cluster
//! generator that the property tests and the benchmarks draw from.

pub mod fixture;
pub mod gen;
pub mod synth;
