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
    /// Service frontends: `address . protocol . port` to a verdict (a verdict map).
    Frontends(Vec<(Frontend, MapTarget)>),
    /// NodePorts: `protocol . port` to a verdict (a verdict map of one family's chains).
    NodePorts(Vec<((Protocol, u16), MapTarget)>),
}

/// The key of a frontend map: destination address, protocol and port.
pub type Frontend = (IpAddr, Protocol, u16);

/// What a verdict map entry does.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MapTarget {
    Jump(String),
    Drop,
}

impl MapTarget {
    pub fn chain(&self) -> Option<&str> {
        match self {
            MapTarget::Jump(c) => Some(c),
            MapTarget::Drop => None,
        }
    }
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
            SetKind::Frontends(v) => v.len(),
            SetKind::NodePorts(v) => v.len(),
        }
    }

    /// Whether it is a verdict map (its elements name chains, so it is made after them).
    pub fn is_map(&self) -> bool {
        matches!(
            self.kind,
            SetKind::Dispatch(_) | SetKind::Frontends(_) | SetKind::NodePorts(_)
        )
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
    /// `ip saddr != @set`.
    AddrNotIn { family: Family, addr: Addr, set: String },
    /// `ip saddr 10.0.0.1`.
    AddrIs {
        family: Family,
        addr: Addr,
        value: IpAddr,
    },
    /// `meta mark & 0x4000 == 0x4000`: every bit of the mask is set.
    MarkHas(u32),
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
    /// `ip daddr . meta l4proto . th dport vmap @map` (a [`SetKind::Frontends`] map).
    FrontendDispatch {
        family: Family,
        map: String,
    },
    /// `meta l4proto . th dport vmap @map` (a [`SetKind::NodePorts`] map).
    NodePortDispatch {
        map: String,
    },
    /// `numgen random mod N vmap { 0 : jump a, 1 : jump b, ... }`.
    RandomJump(Vec<String>),
    /// `meta mark set meta mark | bits`: the one action that does not end the rule's chain;
    /// evaluation goes on with the next rule.
    Mark(u32),
    /// `dnat ip to 10.0.0.1:8080` (the family is the address's).
    Dnat {
        addr: IpAddr,
        port: u16,
    },
    /// `masquerade`.
    Masquerade,
    /// `reject with tcp reset` (the rule must match TCP).
    RejectTcpReset,
    /// `reject with icmpx port-unreachable`.
    RejectPortUnreachable,
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
            Match::AddrIn { set, .. }
            | Match::AddrNotIn { set, .. }
            | Match::PortIn { set, .. }
            | Match::DaddrPortIn { set, .. } => set == name,
            _ => false,
        });
        in_matches
            || matches!(&self.verdict,
                Verdict::Dispatch { map, .. }
                | Verdict::FrontendDispatch { map, .. }
                | Verdict::NodePortDispatch { map } if map == name)
    }
}

/// A base chain's hook, type and priority. Its name is the chain's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// Policy and the no-endpoint rejects (filter 0).
    Forward,
    Input,
    Output,
    /// Source ranges of LoadBalancer IPs, before DNAT (filter, dstnat - 10).
    FirewallPrerouting,
    FirewallOutput,
    /// Service DNAT (nat, dstnat).
    NatPrerouting,
    NatOutput,
    /// Masquerade of marked connections (nat, srcnat).
    NatPostrouting,
}

impl Hook {
    pub const ALL: [Hook; 8] = [
        Hook::FirewallPrerouting,
        Hook::FirewallOutput,
        Hook::NatPrerouting,
        Hook::NatOutput,
        Hook::Forward,
        Hook::Input,
        Hook::Output,
        Hook::NatPostrouting,
    ];

    /// The base chain's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Forward => "forward",
            Hook::Input => "input",
            Hook::Output => "output",
            Hook::FirewallPrerouting => "firewall-prerouting",
            Hook::FirewallOutput => "firewall-output",
            Hook::NatPrerouting => "nat-prerouting",
            Hook::NatOutput => "nat-output",
            Hook::NatPostrouting => "nat-postrouting",
        }
    }

    /// The netfilter hook it attaches to.
    pub fn point(self) -> &'static str {
        match self {
            Hook::Forward => "forward",
            Hook::Input => "input",
            Hook::Output | Hook::FirewallOutput | Hook::NatOutput => "output",
            Hook::FirewallPrerouting | Hook::NatPrerouting => "prerouting",
            Hook::NatPostrouting => "postrouting",
        }
    }

    pub fn is_nat(self) -> bool {
        matches!(self, Hook::NatPrerouting | Hook::NatOutput | Hook::NatPostrouting)
    }

    /// The priority number (filter 0, dstnat -100, srcnat 100).
    pub fn priority(self) -> i32 {
        match self {
            Hook::Forward | Hook::Input | Hook::Output => 0,
            Hook::FirewallPrerouting | Hook::FirewallOutput => -110,
            Hook::NatPrerouting | Hook::NatOutput => -100,
            Hook::NatPostrouting => 100,
        }
    }

    /// The priority as the script spells it: nft 1.0 takes the names `dstnat` and `srcnat`
    /// on some hooks only (not `dstnat` on output), so NAT priorities are numbers.
    pub fn priority_text(self) -> String {
        match self.priority() {
            0 => "filter".to_string(),
            n => n.to_string(),
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

impl Chain {
    /// Whether a rule of it looks a verdict map up (so the chain is made after the maps).
    pub fn reads_map(&self) -> bool {
        self.rules.iter().any(|r| {
            matches!(
                r.verdict,
                Verdict::Dispatch { .. }
                    | Verdict::FrontendDispatch { .. }
                    | Verdict::NodePortDispatch { .. }
            )
        })
    }

    /// Made after the maps: base chains and chains that read a map.
    pub fn is_late(&self) -> bool {
        self.hook.is_some() || self.reads_map()
    }
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
