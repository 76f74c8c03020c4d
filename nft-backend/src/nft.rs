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
    /// Inclusive destination port ranges (an interval set of `inet_service`), sorted and
    /// disjoint. It holds no addresses: its set's `family` is not read.
    Ports(Vec<(u16, u16)>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Set {
    pub name: String,
    pub family: Family,
    pub kind: SetKind,
    /// The most elements the kernel lets the set hold (`size` in the script), for hash sets and
    /// maps; `None` for interval sets. Declaring it makes the kernel pick its fixed-size hash,
    /// with the buckets allocated once, over the resizable one it grows element by element:
    /// half the kernel's time to load 100k elements. See [`hash_size`].
    pub size: Option<u32>,
    /// Where it comes from, for readers of the script: never cluster text unescaped.
    pub comment: String,
}

/// The smallest size a hash set is declared with.
pub const MIN_HASH_SIZE: u32 = 64;

/// The size a hash set of `n` elements is declared with when it is created: the power of two
/// at or above twice `n`, at least [`MIN_HASH_SIZE`]. It leaves room to double before an
/// incremental change must recreate the set (see `diff::fit_sizes`).
pub fn hash_size(n: usize) -> u32 {
    let n = u32::try_from(n).unwrap_or(u32::MAX);
    n.saturating_mul(2)
        .checked_next_power_of_two()
        .unwrap_or(1 << 31)
        .max(MIN_HASH_SIZE)
}

impl Set {
    /// A set declared with the size [`hash_size`] gives its elements, or none for interval
    /// sets, whose elements are ranges.
    pub fn new(name: String, family: Family, kind: SetKind, comment: String) -> Set {
        let mut set = Set {
            name,
            family,
            kind,
            size: None,
            comment,
        };
        set.size = set.fresh_size();
        set
    }

    /// The size a set with these elements is created with.
    pub fn fresh_size(&self) -> Option<u32> {
        match self.kind {
            SetKind::Ranges(_) | SetKind::Ports(_) => None,
            _ => Some(hash_size(self.n_elements())),
        }
    }

    pub fn n_elements(&self) -> usize {
        match &self.kind {
            SetKind::Addrs(v) => v.len(),
            SetKind::Ranges(v) => v.len(),
            SetKind::AddrPorts(v) => v.len(),
            SetKind::Dispatch(v) => v.len(),
            SetKind::Ports(v) => v.len(),
        }
    }
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
    /// `tcp dport @set`: the destination port in a [`SetKind::Ports`] set.
    PortIn { protocol: Protocol, set: String },
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

impl Rule {
    /// Whether the rule reads the named set or map.
    pub fn uses_set(&self, name: &str) -> bool {
        let in_matches = self.matches.iter().any(|m| match m {
            Match::AddrIn { set, .. } | Match::PortIn { set, .. } | Match::DaddrPortIn { set, .. } => {
                set == name
            }
            _ => false,
        });
        in_matches || matches!(&self.verdict, Verdict::Dispatch { map, .. } if map == name)
    }
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
        self.sets.iter().map(Set::n_elements).sum()
    }
}
