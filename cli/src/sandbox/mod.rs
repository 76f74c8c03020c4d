//! The sandbox: a cluster's pods and nodes as network namespaces on this machine, programmed by
//! the real backend over netlink, with servers and probes on real sockets.

pub mod lab;
pub mod probe;
pub mod run;
