//! The table as an nft script, loadable with `nft -f` as one transaction that replaces
//! `table inet netfence` and touches nothing else.

use std::fmt::Write as _;
use std::net::IpAddr;

use policy_compiler::Protocol;

use crate::nft::{Addr, Chain, Family, MapTarget, Match, Rule, Set, SetKind, Table, Verdict};
use crate::{FAMILY, TABLE};

fn ip(family: Family) -> &'static str {
    match family {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    }
}

fn addr_type(family: Family) -> &'static str {
    match family {
        Family::V4 => "ipv4_addr",
        Family::V6 => "ipv6_addr",
    }
}

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

fn addr_field(a: Addr) -> &'static str {
    match a {
        Addr::Saddr => "saddr",
        Addr::Daddr => "daddr",
    }
}

fn elements(items: Vec<String>) -> String {
    if items.is_empty() {
        return String::new();
    }
    format!("\t\telements = {{ {} }}\n", items.join(",\n\t\t\t     "))
}

fn range_text<T: PartialEq + std::fmt::Display>((a, b): &(T, T)) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}-{b}")
    }
}

fn target_text(target: &MapTarget) -> String {
    match target {
        MapTarget::Jump(chain) => format!("jump {chain}"),
        MapTarget::Drop => "drop".to_string(),
    }
}

fn set_text(set: &Set) -> String {
    let t = addr_type(set.family);
    let (keyword, header, items): (&str, String, Vec<String>) = match &set.kind {
        SetKind::Addrs(addrs) => (
            "set",
            format!("type {t}"),
            addrs.iter().map(IpAddr::to_string).collect(),
        ),
        SetKind::Ranges(ranges) => (
            "set",
            format!("type {t}\n\t\tflags interval"),
            ranges.iter().map(range_text).collect(),
        ),
        SetKind::Ports(ranges) => (
            "set",
            "type inet_service\n\t\tflags interval".to_string(),
            ranges.iter().map(range_text).collect(),
        ),
        SetKind::AddrPorts(pairs) => (
            "set",
            format!("type {t} . inet_service"),
            pairs.iter().map(|(a, p)| format!("{a} . {p}")).collect(),
        ),
        SetKind::Dispatch(entries) => (
            "map",
            format!("type {t} : verdict"),
            entries.iter().map(|(a, c)| format!("{a} : jump {c}")).collect(),
        ),
        SetKind::Frontends(entries) => (
            "map",
            format!("type {t} . inet_proto . inet_service : verdict"),
            entries
                .iter()
                .map(|((a, p, n), target)| format!("{a} . {} . {n} : {}", proto(*p), target_text(target)))
                .collect(),
        ),
        SetKind::NodePorts(entries) => (
            "map",
            "type inet_proto . inet_service : verdict".to_string(),
            entries
                .iter()
                .map(|((p, n), target)| format!("{} . {n} : {}", proto(*p), target_text(target)))
                .collect(),
        ),
    };
    let size = set.size.map_or(String::new(), |n| format!("\t\tsize {n}\n"));
    format!(
        "\t{keyword} {} {{\n\t\t{header}\n{size}\t\tcomment \"{}\"\n{}\t}}\n",
        set.name,
        set.comment,
        elements(items)
    )
}

fn match_text(m: &Match) -> String {
    match m {
        Match::EstablishedOrRelated => "ct state established,related".to_string(),
        Match::NeighbourDiscovery => "icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, nd-redirect }".to_string(),
        Match::AddrIn { family, addr, set } => format!("{} {} @{set}", ip(*family), addr_field(*addr)),
        Match::Protocol(p) => format!("meta l4proto {}", proto(*p)),
        Match::PortRange { protocol, first, last } if first == last => format!("{} dport {first}", proto(*protocol)),
        Match::PortRange { protocol, first, last } => format!("{} dport {first}-{last}", proto(*protocol)),
        Match::PortIn { protocol, set } => format!("{} dport @{set}", proto(*protocol)),
        Match::DaddrPortIn { family, protocol, set } => format!("{} daddr . {} dport @{set}", ip(*family), proto(*protocol)),
        Match::AddrNotIn { family, addr, set } => format!("{} {} != @{set}", ip(*family), addr_field(*addr)),
        Match::AddrIs { family, addr, value } => format!("{} {} {value}", ip(*family), addr_field(*addr)),
        Match::MarkHas(bits) => format!("meta mark & {bits:#x} == {bits:#x}"),
    }
}

fn rule_text(rule: &Rule) -> String {
    let mut parts: Vec<String> = rule.matches.iter().map(match_text).collect();
    parts.push(match &rule.verdict {
        Verdict::Accept => "accept".to_string(),
        Verdict::Drop => "drop".to_string(),
        Verdict::Return => "return".to_string(),
        Verdict::Jump(chain) => format!("jump {chain}"),
        Verdict::Dispatch { family, addr, map } => {
            format!("{} {} vmap @{map}", ip(*family), addr_field(*addr))
        }
        Verdict::FrontendDispatch { family, map } => {
            format!("{} daddr . meta l4proto . th dport vmap @{map}", ip(*family))
        }
        Verdict::NodePortDispatch { map } => format!("meta l4proto . th dport vmap @{map}"),
        Verdict::RandomJump(chains) => {
            let entries: Vec<String> = chains
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{i} : jump {c}"))
                .collect();
            format!(
                "numgen random mod {} vmap {{ {} }}",
                chains.len(),
                entries.join(", ")
            )
        }
        Verdict::Mark(bits) => format!("meta mark set meta mark | {bits:#x}"),
        Verdict::Dnat {
            addr: IpAddr::V4(a),
            port,
        } => format!("dnat ip to {a}:{port}"),
        Verdict::Dnat {
            addr: IpAddr::V6(a),
            port,
        } => format!("dnat ip6 to [{a}]:{port}"),
        Verdict::Masquerade => "masquerade".to_string(),
        Verdict::RejectTcpReset => "reject with tcp reset".to_string(),
        Verdict::RejectPortUnreachable => "reject with icmpx port-unreachable".to_string(),
    });
    if let Some(c) = &rule.comment {
        parts.push(format!("comment \"{c}\""));
    }
    parts.join(" ")
}

fn chain_text(chain: &Chain) -> String {
    let mut out = format!("\tchain {} {{\n\t\tcomment \"{}\"\n", chain.name, chain.comment);
    if let Some(hook) = chain.hook {
        let _ = writeln!(
            out,
            "\t\ttype {} hook {} priority {}; policy accept;",
            if hook.is_nat() { "nat" } else { "filter" },
            hook.point(),
            hook.priority_text()
        );
    }
    for rule in &chain.rules {
        let _ = writeln!(out, "\t\t{}", rule_text(rule));
    }
    out.push_str("\t}\n");
    out
}

/// The script: create the table if missing, delete it, and define it anew, all in one
/// transaction. Sets first, then allow-set chains, then the maps that jump to them, then the
/// chains that use the maps.
pub fn render(table: &Table) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "#!/usr/sbin/nft -f");
    let _ = writeln!(
        out,
        "# netfence: generated. Replaces table {FAMILY} {TABLE} in one transaction."
    );
    let _ = writeln!(out, "table {FAMILY} {TABLE} {{}}");
    let _ = writeln!(out, "delete table {FAMILY} {TABLE}");
    let _ = writeln!(out, "table {FAMILY} {TABLE} {{");
    for set in table.sets.iter().filter(|s| !s.is_map()) {
        out.push_str(&set_text(set));
    }
    for chain in table.chains.iter().filter(|c| !c.is_late()) {
        out.push_str(&chain_text(chain));
    }
    for set in table.sets.iter().filter(|s| s.is_map()) {
        out.push_str(&set_text(set));
    }
    for chain in table.chains.iter().filter(|c| c.is_late()) {
        out.push_str(&chain_text(chain));
    }
    out.push_str("}\n");
    out
}
