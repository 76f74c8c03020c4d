//! Address ranges of an `ipBlock`: its CIDR minus its excepts, as disjoint inclusive ranges.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use policy_compiler::model::IpBlock;

fn to_u128(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_u128(v4: bool, n: u128) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(n as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(n))
    }
}

fn bounds(net: &IpNet) -> (u128, u128) {
    (to_u128(net.network()), to_u128(net.broadcast()))
}

/// The block's addresses as sorted, disjoint, inclusive ranges (empty when the excepts cover it).
pub fn ranges(block: &IpBlock) -> Vec<(IpAddr, IpAddr)> {
    let v4 = block.cidr.network().is_ipv4();
    let (mut lo, hi) = bounds(&block.cidr);
    let mut holes: Vec<(u128, u128)> = block.except.iter().map(bounds).collect();
    holes.sort();
    let mut out = Vec::new();
    for (h_lo, h_hi) in holes {
        if h_hi < lo {
            continue;
        }
        if h_lo > lo {
            out.push((from_u128(v4, lo), from_u128(v4, h_lo - 1)));
        }
        if h_hi >= hi {
            return out;
        }
        lo = h_hi + 1;
    }
    out.push((from_u128(v4, lo), from_u128(v4, hi)));
    out
}

/// Sorted, disjoint inclusive ranges covering what `ranges` cover: overlapping and adjacent
/// ranges (by `number`, the key as an integer) become one, as an interval set's elements must.
fn merge<T: Copy + Ord>(mut ranges: Vec<(T, T)>, number: impl Fn(T) -> u128) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some((_, last_hi)) if number(lo) <= number(*last_hi).saturating_add(1) => {
                *last_hi = (*last_hi).max(hi);
            }
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// [`merge`] of address ranges, each of one family.
pub fn union(ranges: Vec<(IpAddr, IpAddr)>) -> Vec<(IpAddr, IpAddr)> {
    merge(ranges, to_u128)
}

/// [`merge`] of port ranges.
pub fn union_ports(ranges: Vec<(u16, u16)>) -> Vec<(u16, u16)> {
    merge(ranges, u128::from)
}

#[cfg(test)]
mod tests {
    use super::{ranges, union, union_ports};
    use policy_compiler::model::IpBlock;

    fn block(cidr: &str, except: &[&str]) -> IpBlock {
        IpBlock {
            cidr: cidr.parse().unwrap(),
            except: except.iter().map(|e| e.parse().unwrap()).collect(),
        }
    }

    fn text(block: &IpBlock) -> Vec<String> {
        ranges(block).iter().map(|(a, b)| format!("{a}-{b}")).collect()
    }

    #[test]
    fn cidr_minus_excepts() {
        assert_eq!(text(&block("10.0.0.0/8", &[])), ["10.0.0.0-10.255.255.255"]);
        assert_eq!(
            text(&block("10.0.0.0/8", &["10.1.0.0/16"])),
            ["10.0.0.0-10.0.255.255", "10.2.0.0-10.255.255.255"]
        );
        assert_eq!(
            text(&block("10.0.0.0/8", &["10.0.0.0/9"])),
            ["10.128.0.0-10.255.255.255"],
            "except at the start"
        );
        assert_eq!(
            text(&block("10.0.0.0/8", &["10.128.0.0/9"])),
            ["10.0.0.0-10.127.255.255"],
            "except at the end"
        );
        assert_eq!(
            text(&block("10.0.0.0/8", &["10.0.0.0/9", "10.128.0.0/9"])),
            Vec::<String>::new(),
            "fully excepted"
        );
        assert_eq!(
            text(&block("10.0.0.0/8", &["10.1.0.0/16", "10.1.2.0/24"])),
            ["10.0.0.0-10.0.255.255", "10.2.0.0-10.255.255.255"],
            "nested excepts"
        );
        assert_eq!(text(&block("0.0.0.0/0", &[])), ["0.0.0.0-255.255.255.255"]);
        assert_eq!(
            text(&block("::/0", &["fd00::/8"])),
            [
                "::-fcff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                "fe00::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
            ]
        );
    }

    #[test]
    fn unions_merge_overlapping_and_adjacent_ranges_only() {
        assert_eq!(
            union_ports(vec![
                (443, 443),
                (80, 80),
                (81, 90),
                (85, 86),
                (92, 92),
                (65535, 65535)
            ]),
            vec![(80, 90), (92, 92), (443, 443), (65535, 65535)]
        );
        assert_eq!(union_ports(vec![(0, 65535), (1, 2)]), vec![(0, 65535)]);
        let a = |s: &str| s.parse().unwrap();
        let blocks = [
            block("10.0.0.0/24", &["10.0.0.128/25"]),
            block("10.0.0.128/26", &[]),
            block("10.0.2.0/24", &[]),
        ];
        let all: Vec<_> = blocks.iter().flat_map(ranges).collect();
        assert_eq!(
            union(all),
            vec![(a("10.0.0.0"), a("10.0.0.191")), (a("10.0.2.0"), a("10.0.2.255"))]
        );
        let top = [block("255.255.255.0/24", &[]), block("255.255.255.128/25", &[])];
        assert_eq!(
            union(top.iter().flat_map(ranges).collect()),
            vec![(a("255.255.255.0"), a("255.255.255.255"))]
        );
    }
}
