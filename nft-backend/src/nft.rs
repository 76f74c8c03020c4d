//! A structured form of the nftables objects netfence programs: sets, verdict maps, chains and
//! rules, with only the expressions netfence uses. The text renderer, the packet tracer and the
//! netlink path all read this one form, so what is traced is what is loaded.

use std::net::IpAddr;

use policy_compiler::Protocol;

/// Address family of an address match or of a set's keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];

    pub fn of(addr: IpAddr) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    pub fn suffix(self) -> &'static str {
        match self {
            Family::V4 => "4",
            Family::V6 => "6",
        }
    }
}

/// Which address of the packet a match reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Addr {
    Saddr,
    Daddr,
}

/// What a set holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetKind {
    /// Exact addresses (a hash set).
    Addrs(Vec<IpAddr>),
    /// Inclusive address ranges (an interval set), sorted and disjoint.
    Ranges(Vec<(IpAddr, IpAddr)>),
    /// `address . port` pairs of one protocol (a concatenated hash set).
    AddrPorts(Vec<(IpAddr, u16)>),
    /// Address to the chain to jump to (a verdict map).
    Dispatch(Vec<(IpAddr, String)>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Set {
    pub name: String,
    pub family: Family,
    pub kind: SetKind,
    /// Where it comes from, for readers of the script: never cluster text unescaped.
    pub comment: String,
}

/// One condition of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Match {
    /// `ct state established,related`.
    EstablishedOrRelated,
    /// ICMPv6 types 133 to 137 (router and neighbour discovery, redirect).
    NeighbourDiscovery,
    /// `ip saddr @set` / `ip6 daddr @set` (hash or interval set).
    AddrIn { family: Family, addr: Addr, set: String },
    /// `meta l4proto tcp`.
    Protocol(Protocol),
    /// `tcp dport 80-81`.
    PortRange {
        protocol: Protocol,
        first: u16,
        last: u16,
    },
    /// `ip daddr . tcp dport @set`.
    DaddrPortIn {
        family: Family,
        protocol: Protocol,
        set: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Return,
    /// `jump chain`.
    Jump(String),
    /// `ip saddr vmap @map`: jump to the chain the map names for the address, if any.
    Dispatch {
        family: Family,
        addr: Addr,
        map: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub verdict: Verdict,
    pub comment: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Forward,
    Input,
    Output,
}

impl Hook {
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Forward => "forward",
            Hook::Input => "input",
            Hook::Output => "output",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    /// Base chains: the hook, at filter priority, policy accept.
    pub hook: Option<Hook>,
    pub rules: Vec<Rule>,
    pub comment: String,
}

/// Everything in `table inet netfence` for one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    pub sets: Vec<Set>,
    pub chains: Vec<Chain>,
}

impl Table {
    pub fn set(&self, name: &str) -> Option<&Set> {
        self.sets.iter().find(|s| s.name == name)
    }

    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    pub fn n_elements(&self) -> usize {
        self.sets
            .iter()
            .map(|s| match &s.kind {
                SetKind::Addrs(v) => v.len(),
                SetKind::Ranges(v) => v.len(),
                SetKind::AddrPorts(v) => v.len(),
                SetKind::Dispatch(v) => v.len(),
            })
            .sum()
    }
}
