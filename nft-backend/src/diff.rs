//! The difference between two tables, as the few changes an incremental transaction sends:
//! set and map elements added or removed, chains added, rewritten or removed, sets added or
//! removed. Pure; `netlink::apply_diff` sends a plan in one transaction.
//!
//! Names carry a hash of what they stand for (a selector, an ipBlock, a set of policies), so a
//! set or chain that keeps its name keeps its meaning: a relabelled pod changes elements only.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

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
        let count = |sets: &[Set]| sets.iter().map(n_elements).sum::<usize>();
        count(&self.add_elements) + count(&self.del_elements)
    }

    /// What the plan changes, in a line.
    pub fn summary(&self) -> String {
        format!(
            "{} elements added, {} removed; {} sets added, {} removed, {} refilled; {} chains added, {} rewritten, {} removed",
            self.add_elements.iter().map(n_elements).sum::<usize>(),
            self.del_elements.iter().map(n_elements).sum::<usize>(),
            self.add_sets.len(),
            self.del_sets.len(),
            self.refill_sets.len(),
            self.add_chains.len(),
            self.rewrite_chains.len(),
            self.del_chains.len()
        )
    }
}

fn n_elements(set: &Set) -> usize {
    match &set.kind {
        SetKind::Addrs(v) => v.len(),
        SetKind::Ranges(v) => v.len(),
        SetKind::AddrPorts(v) => v.len(),
        SetKind::Dispatch(v) => v.len(),
    }
}

fn with_kind(set: &Set, kind: SetKind) -> Set {
    Set { kind, ..set.clone() }
}

/// The elements of `a` that `b` lacks. `build` emits every element list sorted, so this is one
/// linear merge; unsorted input (from elsewhere) takes the slower general path.
fn minus<T: Ord + Clone>(a: &[T], b: &[T]) -> Vec<T> {
    if !(a.is_sorted() && b.is_sorted()) {
        let b: BTreeSet<&T> = b.iter().collect();
        return a.iter().filter(|x| !b.contains(x)).cloned().collect();
    }
    let mut out = Vec::new();
    let mut j = 0;
    for x in a {
        while j < b.len() && b[j] < *x {
            j += 1;
        }
        if j >= b.len() || b[j] != *x {
            out.push(x.clone());
        }
    }
    out
}

/// Element changes between two versions of one set: `(removed, added)`, or `None` when the set
/// must be refilled whole.
fn element_changes(old: &Set, new: &Set) -> Option<(SetKind, SetKind)> {
    match (&old.kind, &new.kind) {
        (SetKind::Addrs(a), SetKind::Addrs(b)) => {
            Some((SetKind::Addrs(minus(a, b)), SetKind::Addrs(minus(b, a))))
        }
        (SetKind::AddrPorts(a), SetKind::AddrPorts(b)) => {
            Some((SetKind::AddrPorts(minus(a, b)), SetKind::AddrPorts(minus(b, a))))
        }
        (SetKind::Dispatch(a), SetKind::Dispatch(b)) => {
            // A key whose target changed is removed and added again.
            let new_keys: BTreeMap<IpAddr, &String> = b.iter().map(|(k, v)| (*k, v)).collect();
            let old_keys: BTreeMap<IpAddr, &String> = a.iter().map(|(k, v)| (*k, v)).collect();
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
            Some((SetKind::Dispatch(removed), SetKind::Dispatch(added)))
        }
        _ => None,
    }
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
            Some(old_set) if old_set.family != set.family => {
                // Same name, other key type: cannot happen with derived names; replace it.
                plan.del_sets.push(set.name.clone());
                plan.add_sets.push(set.clone());
            }
            Some(old_set) => match element_changes(old_set, set) {
                Some((removed, added)) => {
                    let removed = with_kind(set, removed);
                    let added = with_kind(set, added);
                    if n_elements(&removed) > 0 {
                        plan.del_elements.push(removed);
                    }
                    if n_elements(&added) > 0 {
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
    for chain in &new.chains {
        match old_chains.get(chain.name.as_str()) {
            None => plan.add_chains.push(chain.clone()),
            Some(old_chain) if *old_chain == chain => {}
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

/// The table that results from applying `plan` to `old`, as the kernel would hold it (sets and
/// chains by name; order is the table's own concern).
pub fn apply_to(old: &Table, plan: &Plan) -> Table {
    let mut sets: BTreeMap<String, Set> = old.sets.iter().map(|s| (s.name.clone(), s.clone())).collect();
    let mut chains: BTreeMap<String, Chain> =
        old.chains.iter().map(|c| (c.name.clone(), c.clone())).collect();
    for name in &plan.del_sets {
        sets.remove(name);
    }
    for set in plan.add_sets.iter().chain(&plan.refill_sets) {
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
            (SetKind::Dispatch(a), SetKind::Dispatch(d)) => SetKind::Dispatch(
                a.iter()
                    .chain(d)
                    .cloned()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect(),
            ),
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
            }
        }
        sets.sort_by(|x, y| x.name.cmp(&y.name));
        let mut chains = t.chains.clone();
        chains.sort_by(|x, y| x.name.cmp(&y.name));
        (sets, chains)
    };
    norm(a) == norm(b)
}
