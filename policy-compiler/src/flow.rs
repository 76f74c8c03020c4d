//! A flow to decide: the first packet of a connection, as the evaluators see it.

use std::fmt;
use std::net::IpAddr;

use crate::model::Protocol;

/// What rides on IP: a transport port, or an ICMP message (ICMPv6 when the addresses are v6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum L4 {
    Port(Protocol, u16),
    Icmp { type_: u8 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub l4: L4,
}

impl Flow {
    pub fn new(src: IpAddr, dst: IpAddr, protocol: Protocol, port: u16) -> Flow {
        Flow {
            src,
            dst,
            l4: L4::Port(protocol, port),
        }
    }

    /// IPv6 neighbour discovery and router solicitation/advertisement (ICMPv6 133 to 137), which
    /// always pass (SPEC 2.16).
    pub fn is_neighbour_discovery(&self) -> bool {
        matches!(self.l4, L4::Icmp { type_: 133..=137 }) && self.dst.is_ipv6()
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.l4 {
            L4::Port(protocol, port) => write!(f, "{} -> {} {protocol}/{port}", self.src, self.dst),
            L4::Icmp { type_ } => write!(f, "{} -> {} icmp type {type_}", self.src, self.dst),
        }
    }
}
