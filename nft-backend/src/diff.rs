//! The difference between two tables, as the few changes an incremental transaction sends:
//! set and map elements added or removed, chains added, rewritten or removed, sets added,
//! removed or recreated with another size. Pure; `netlink::apply_diff` sends a plan in one
//! transaction.
//!
//! A hash set's declared size is a limit the kernel enforces, so a set that outgrows it is
//! recreated; [`fit_sizes`] keeps the sizes already in the kernel wherever they still serve, so
//! that happens only when a set outgrows its size or falls to a sixteenth of it.
//!
//! Names carry a hash of what they stand for (a selector, an ipBlock, a set of policies), so a
//! set or chain that keeps its name keeps its meaning: a relabelled pod changes elements only.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use crate::nft::{Chain, Set, SetKind, Table};

/// What to send, in the order the transaction needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Sets and maps that are new, with all their elements.
    pub add_sets: Vec<Set>,
    /// Chains that are new, with their rules.
    pub add_chains: Vec<Chain>,
    /// Chains whose rules changed: flushed and filled again.
    pub rewrite_chains: Vec<Chain>,
    /// Sets whose elements are replaced whole (interval sets, whose elements are not keys).
    pub refill_sets: Vec<Set>,
    /// Sets and maps recreated under the same name (another size): deleted and added again
    /// with all their elements. Every surviving chain that uses one is in `rewrite_chains`.
    pub replace_sets: Vec<Set>,
    /// Elements to remove from existing sets (each `Set` holds only those elements).
    pub del_elements: Vec<Set>,
    /// Elements to add to existing sets.
    pub add_elements: Vec<Set>,
    /// Chains to delete, once nothing jumps to them.
    pub del_chains: Vec<String>,
    /// Sets to delete, once no rule uses them.
    pub del_sets: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        *self == Plan::default()
    }

    /// Elements added plus elements removed.
    pub fn n_element_changes(&self) -> usize {
        let count = |sets: &[Set]| sets.iter().map(Set::n_elements).sum::<usize>();
        count(&self.add_elements) + count(&self.del_elements)
    }

    /// What the plan changes, in a line.
    pub fn summary(&self) -> String {
        format!(
            "{} elements added, {} removed; {} sets added, {} removed, {} refilled, {} recreated; {} chains added, {} rewritten, {} removed",
            self.add_elements.iter().map(Set::n_elements).sum::<usize>(),
            self.del_elements.iter().map(Set::n_elements).sum::<usize>(),
            self.add_sets.len(),
            self.del_sets.len(),
            self.refill_sets.len(),
            self.replace_sets.len(),
            self.add_chains.len(),
            self.rewrite_chains.len(),
            self.del_chains.len()
        )
    }
}

fn with_kind(set: &Set, kind: SetKind) -> Set {
    Set { kind, ..set.clone() }
}

/// `(the elements of a that b lacks, the elements of b that a lacks)`. `build` emits every
/// element list sorted and without repeats, so this is one linear merge, checking the order as
/// it goes; other input (from elsewhere) takes the slower general path.
fn differences<T: Ord + Clone>(a: &[T], b: &[T]) -> (Vec<T>, Vec<T>) {
    let ascending = |v: &[T], k: usize| k == 0 || k >= v.len() || v[k - 1] < v[k];
    let (mut only_a, mut only_b) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    loop {
        if !(ascending(a, i) && ascending(b, j)) {
            let (in_a, in_b): (BTreeSet<&T>, BTreeSet<&T>) = (a.iter().collect(), b.iter().collect());
            return (
                in_a.difference(&in_b).map(|x| (*x).clone()).collect(),
                in_b.difference(&in_a).map(|x| (*x).clone()).collect(),
            );
        }
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => match x.cmp(y) {
                Ordering::Less => {
                    only_a.push(x.clone());
                    i += 1;
                }
                Ordering::Greater => {
                    only_b.push(y.clone());
                    j += 1;
                }
                Ordering::Equal => {
                    i += 1;
                    j += 1;
                }
            },
            (Some(x), None) => {
                only_a.push(x.clone());
                i += 1;
            }
            (None, Some(y)) => {
                only_b.push(y.clone());
                j += 1;
            }
            (None, None) => return (only_a, only_b),
        }
    }
}

fn minus<T: Ord + Clone>(a: &[T], b: &[T]) -> Vec<T> {
    differences(a, b).0
}

/// Element changes between two versions of one set: `(removed, added)`, or `None` when the set
/// must be refilled whole.
fn element_changes(old: &Set, new: &Set) -> Option<(SetKind, SetKind)> {
    match (&old.kind, &new.kind) {
        (SetKind::Addrs(a), SetKind::Addrs(b)) => {
            let (removed, added) = differences(a, b);
            Some((SetKind::Addrs(removed), SetKind::Addrs(added)))
        }
        (SetKind::AddrPorts(a), SetKind::AddrPorts(b)) => {
            let (removed, added) = differences(a, b);
            Some((SetKind::AddrPorts(removed), SetKind::AddrPorts(added)))
        }
        (SetKind::Dispatch(a), SetKind::Dispatch(b)) => {
            let (removed, added) = map_changes(a, b);
            Some((SetKind::Dispatch(removed), SetKind::Dispatch(added)))
        }
        (SetKind::Frontends(a), SetKind::Frontends(b)) => {
            let (removed, added) = map_changes(a, b);
            Some((SetKind::Frontends(removed), SetKind::Frontends(added)))
        }
        (SetKind::NodePorts(a), SetKind::NodePorts(b)) => {
            let (removed, added) = map_changes(a, b);
            Some((SetKind::NodePorts(removed), SetKind::NodePorts(added)))
        }
        _ => None,
    }
}

/// A map's entries, key to target.
type Entries<K, V> = Vec<(K, V)>;

/// A map's `(removed, added)` entries: a key whose target changed is removed and added again.
fn map_changes<K: Ord + Clone, V: PartialEq + Clone>(
    a: &[(K, V)],
    b: &[(K, V)],
) -> (Entries<K, V>, Entries<K, V>) {
    let new_keys: BTreeMap<&K, &V> = b.iter().map(|(k, v)| (k, v)).collect();
    let old_keys: BTreeMap<&K, &V> = a.iter().map(|(k, v)| (k, v)).collect();
    let removed = a
        .iter()
        .filter(|(k, v)| new_keys.get(k) != Some(&v))
        .cloned()
        .collect();
    let added = b
        .iter()
        .filter(|(k, v)| old_keys.get(k) != Some(&v))
        .cloned()
        .collect();
    (removed, added)
}

/// `a` and `d` as one sorted list without repeats.
fn merged<T: Ord + Clone>(a: &[T], d: &[T]) -> Vec<T> {
    a.iter()
        .chain(d)
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The plan that turns `old` into `new`.
pub fn diff(old: &Table, new: &Table) -> Plan {
    let mut plan = Plan::default();
    let old_sets: BTreeMap<&str, &Set> = old.sets.iter().map(|s| (s.name.as_str(), s)).collect();
    let new_sets: BTreeMap<&str, &Set> = new.sets.iter().map(|s| (s.name.as_str(), s)).collect();
    for set in &new.sets {
        match old_sets.get(set.name.as_str()) {
            None => plan.add_sets.push(set.clone()),
            Some(old_set) if *old_set == set => {}
            Some(old_set)
                if old_set.size != set.size
                    || old_set.family != set.family
                    || std::mem::discriminant(&old_set.kind) != std::mem::discriminant(&set.kind) =>
            {
                // Another size, or (not with derived names) another key type: recreate it.
                plan.replace_sets.push(set.clone());
            }
            Some(old_set) => match element_changes(old_set, set) {
                Some((removed, added)) => {
                    let removed = with_kind(set, removed);
                    let added = with_kind(set, added);
                    if removed.n_elements() > 0 {
                        plan.del_elements.push(removed);
                    }
                    if added.n_elements() > 0 {
                        plan.add_elements.push(added);
                    }
                }
                None => plan.refill_sets.push(set.clone()),
            },
        }
    }
    plan.del_sets.extend(
        old.sets
            .iter()
            .filter(|s| !new_sets.contains_key(s.name.as_str()))
            .map(|s| s.name.clone()),
    );

    let old_chains: BTreeMap<&str, &Chain> = old.chains.iter().map(|c| (c.name.as_str(), c)).collect();
    let new_names: BTreeSet<&str> = new.chains.iter().map(|c| c.name.as_str()).collect();
    // A set can only be deleted once no rule uses it: chains whose rules use a recreated set
    // are rewritten (or, gone from `new`, deleted; `netlink` empties those first).
    let uses_replaced = |chain: &Chain| {
        chain
            .rules
            .iter()
            .any(|r| plan.replace_sets.iter().any(|s| r.uses_set(&s.name)))
    };
    for chain in &new.chains {
        match old_chains.get(chain.name.as_str()) {
            None => plan.add_chains.push(chain.clone()),
            Some(old_chain) if *old_chain == chain && !uses_replaced(old_chain) => {}
            Some(_) => plan.rewrite_chains.push(chain.clone()),
        }
    }
    plan.del_chains.extend(
        old.chains
            .iter()
            .filter(|c| !new_names.contains(c.name.as_str()))
            .map(|c| c.name.clone()),
    );
    plan
}

/// Gives each hash set of `new` the size its namesake in `old` (the kernel's table) was
/// declared with, while that size still holds the set's elements and is at most four times the
/// size the set would be created with (so under 16 times its elements, or at most 256): such a
/// set changes by its elements alone. Other sets keep the size they were built with, and the
/// diff recreates them. Hysteresis: a set created for `n` elements (size `2n` to `4n`) is recreated only once
/// it outgrows that size or falls to between `n/4` and `n/8`, so a set hovering at a boundary
/// is not recreated on every change.
pub fn fit_sizes(old: &Table, new: &mut Table) {
    let old_sets: BTreeMap<&str, &Set> = old.sets.iter().map(|s| (s.name.as_str(), s)).collect();
    for set in &mut new.sets {
        let (Some(old_set), Some(fresh)) = (old_sets.get(set.name.as_str()), set.fresh_size()) else {
            continue;
        };
        let Some(kept) = old_set.size else { continue };
        let fits = u32::try_from(set.n_elements()).is_ok_and(|n| n <= kept);
        if fits && u64::from(kept) <= 4 * u64::from(fresh) {
            set.size = Some(kept);
        }
    }
}

/// The table that results from applying `plan` to `old`, as the kernel would hold it (sets and
/// chains by name; order is the table's own concern).
pub fn apply_to(old: &Table, plan: &Plan) -> Table {
    let mut sets: BTreeMap<String, Set> = old.sets.iter().map(|s| (s.name.clone(), s.clone())).collect();
    let mut chains: BTreeMap<String, Chain> =
        old.chains.iter().map(|c| (c.name.clone(), c.clone())).collect();
    for name in &plan.del_sets {
        sets.remove(name);
    }
    for set in plan
        .add_sets
        .iter()
        .chain(&plan.refill_sets)
        .chain(&plan.replace_sets)
    {
        sets.insert(set.name.clone(), set.clone());
    }
    for delta in &plan.del_elements {
        let set = sets
            .get_mut(&delta.name)
            .expect("plan removes from an existing set");
        set.kind = match (&set.kind, &delta.kind) {
            (SetKind::Addrs(a), SetKind::Addrs(d)) => SetKind::Addrs(minus(a, d)),
            (SetKind::AddrPorts(a), SetKind::AddrPorts(d)) => SetKind::AddrPorts(minus(a, d)),
            (SetKind::Dispatch(a), SetKind::Dispatch(d)) => SetKind::Dispatch(minus(a, d)),
            (SetKind::Frontends(a), SetKind::Frontends(d)) => SetKind::Frontends(minus(a, d)),
            (SetKind::NodePorts(a), SetKind::NodePorts(d)) => SetKind::NodePorts(minus(a, d)),
            (kind, _) => kind.clone(),
        };
    }
    for delta in &plan.add_elements {
        let set = sets.get_mut(&delta.name).expect("plan adds to an existing set");
        let merged = match (&set.kind, &delta.kind) {
            (SetKind::Addrs(a), SetKind::Addrs(d)) => SetKind::Addrs(
                a.iter()
                    .chain(d)
                    .copied()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect(),
            ),
            (SetKind::AddrPorts(a), SetKind::AddrPorts(d)) => SetKind::AddrPorts(
                a.iter()
                    .chain(d)
                    .copied()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect(),
            ),
            (SetKind::Dispatch(a), SetKind::Dispatch(d)) => SetKind::Dispatch(merged(a, d)),
            (SetKind::Frontends(a), SetKind::Frontends(d)) => SetKind::Frontends(merged(a, d)),
            (SetKind::NodePorts(a), SetKind::NodePorts(d)) => SetKind::NodePorts(merged(a, d)),
            (kind, _) => kind.clone(),
        };
        set.kind = merged;
    }
    for name in &plan.del_chains {
        chains.remove(name);
    }
    for chain in plan.add_chains.iter().chain(&plan.rewrite_chains) {
        chains.insert(chain.name.clone(), chain.clone());
    }
    Table {
        sets: sets.into_values().collect(),
        chains: chains.into_values().collect(),
    }
}

/// Two tables with the same sets, elements and chains, whatever their order.
pub fn same_content(a: &Table, b: &Table) -> bool {
    let norm = |t: &Table| {
        let mut sets = t.sets.clone();
        for s in &mut sets {
            match &mut s.kind {
                SetKind::Addrs(v) => v.sort(),
                SetKind::Ranges(v) => v.sort(),
                SetKind::AddrPorts(v) => v.sort(),
                SetKind::Dispatch(v) => v.sort(),
                SetKind::Ports(v) => v.sort(),
                SetKind::Frontends(v) => v.sort(),
                SetKind::NodePorts(v) => v.sort(),
            }
        }
        sets.sort_by(|x, y| x.name.cmp(&y.name));
        let mut chains = t.chains.clone();
        chains.sort_by(|x, y| x.name.cmp(&y.name));
        (sets, chains)
    };
    norm(a) == norm(b)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::{apply_to, diff, differences, fit_sizes, same_content};
    use crate::nft::{hash_size, Addr, Chain, Family, Hook, Rule, Set, SetKind, Table, Verdict};

    fn addrs(n: usize) -> SetKind {
        SetKind::Addrs(
            (0..n)
                .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i as u32)))
                .collect(),
        )
    }

    /// A base chain dispatching through map `m` (jumping to `c`) and chain `c` reading set `s`.
    fn table(n_set: usize, n_map: usize) -> Table {
        let map = SetKind::Dispatch(
            (0..n_map)
                .map(|i| {
                    (
                        IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i as u32)),
                        "c".to_string(),
                    )
                })
                .collect(),
        );
        Table {
            sets: vec![
                Set::new("s".into(), Family::V4, addrs(n_set), String::new()),
                Set::new("m".into(), Family::V4, map, String::new()),
            ],
            chains: vec![
                Chain {
                    name: "base".into(),
                    hook: Some(Hook::Forward),
                    rules: vec![Rule {
                        matches: vec![],
                        verdict: Verdict::Dispatch {
                            family: Family::V4,
                            addr: Addr::Daddr,
                            map: "m".into(),
                        },
                        comment: None,
                    }],
                    comment: String::new(),
                },
                Chain {
                    name: "c".into(),
                    hook: None,
                    rules: vec![Rule {
                        matches: vec![crate::nft::Match::AddrIn {
                            family: Family::V4,
                            addr: Addr::Saddr,
                            set: "s".into(),
                        }],
                        verdict: Verdict::Accept,
                        comment: None,
                    }],
                    comment: String::new(),
                },
            ],
        }
    }

    fn names<'a>(of: impl Iterator<Item = &'a String>) -> Vec<&'a str> {
        of.map(String::as_str).collect()
    }

    #[test]
    fn differences_of_sorted_and_unsorted_lists() {
        // (a, b, a minus b, b minus a)
        type Case<'a> = (&'a [u32], &'a [u32], &'a [u32], &'a [u32]);
        let cases: [Case; 6] = [
            (&[], &[], &[], &[]),
            (&[1, 2, 3], &[], &[1, 2, 3], &[]),
            (&[], &[4, 5], &[], &[4, 5]),
            (&[1, 3, 5, 7], &[2, 3, 7, 8, 9], &[1, 5], &[2, 8, 9]),
            // Out of order or repeated: the general path, same answer.
            (&[5, 1, 3], &[3, 2], &[1, 5], &[2]),
            (&[1, 1, 2], &[2, 3, 3], &[1], &[3]),
        ];
        for (a, b, only_a, only_b) in cases {
            assert_eq!(
                differences(a, b),
                (only_a.to_vec(), only_b.to_vec()),
                "{a:?} {b:?}"
            );
        }
    }

    #[test]
    fn sizes_are_powers_of_two_with_room_to_double() {
        assert_eq!(hash_size(0), 64);
        assert_eq!(hash_size(32), 64);
        assert_eq!(hash_size(33), 128);
        assert_eq!(hash_size(100_201), 262_144);
        assert_eq!(hash_size(usize::MAX), 1 << 31);
        let ranges = Set::new("r".into(), Family::V4, SetKind::Ranges(vec![]), String::new());
        assert_eq!(ranges.size, None);
    }

    #[test]
    fn sets_keep_their_size_while_it_fits_and_is_not_too_sparse() {
        let old = table(1000, 10); // s: 2048, m: 64
        for (n, kept) in [
            (1000, true),
            (2048, true),
            (2049, false),
            (129, true),
            (127, false),
        ] {
            let mut new = table(n, 10);
            fit_sizes(&old, &mut new);
            let size = new.set("s").unwrap().size.unwrap();
            assert_eq!(size == 2048, kept, "{n} elements: size {size}");
            assert!(n <= size as usize);
            let plan = diff(&old, &new);
            assert_eq!(
                plan.replace_sets.len(),
                usize::from(!kept),
                "{n}: {}",
                plan.summary()
            );
            // A kept set changes by its elements alone; a recreated one carries all of them.
            assert!(plan
                .del_elements
                .iter()
                .chain(&plan.add_elements)
                .all(|s| kept && s.name == "s"));
            assert!(same_content(&apply_to(&old, &plan), &new));
        }
    }

    #[test]
    fn a_recreated_set_rewrites_every_chain_that_reads_it() {
        let old = table(10, 10);
        let mut new = table(10, 100); // m outgrows 64
        fit_sizes(&old, &mut new);
        let plan = diff(&old, &new);
        assert_eq!(names(plan.replace_sets.iter().map(|s| &s.name)), ["m"]);
        // The base chain is unchanged but holds the map: it is rewritten so the map can go.
        assert_eq!(names(plan.rewrite_chains.iter().map(|c| &c.name)), ["base"]);
        assert!(plan.add_elements.is_empty() && plan.del_elements.is_empty());
        assert!(same_content(&apply_to(&old, &plan), &new));
        // And back down to 10 elements: the map keeps 256 (at most 4 x 64, the fresh size).
        let mut down = table(10, 10);
        fit_sizes(&new, &mut down);
        assert_eq!(down.set("m").unwrap().size, Some(256));
        assert!(diff(&new, &down).replace_sets.is_empty());
    }
}
