//! The generated nft rules themselves decide every flow of random clusters as the reference
//! evaluator does: the tracer walks the rules of each node's table.

use std::collections::BTreeMap;

use netfence_tests::gen::{self, flows, l4_strategy};
use netfence_tests::topology;
use nft_backend::build::build;
use nft_backend::diff;
use nft_backend::trace;
use policy_compiler::{compile_all, reference};
use proptest::prelude::*;
use proptest::test_runner::Config;

proptest! {
    #![proptest_config(Config { cases: 2000, failure_persistence: None, ..Config::default() })]

    #[test]
    fn traced_rules_equal_reference(cluster in gen::cluster(), l4s in l4_strategy()) {
        let (snap, _) = cluster.lower();
        let tables: BTreeMap<String, _> = compile_all(&snap).iter().map(|(n, r)| (n.clone(), build(r))).collect();
        let topo = topology(&snap);
        for flow in flows(&snap, &l4s) {
            let traced = trace::decide_cluster(&tables, &topo, &flow);
            prop_assert_eq!(traced, reference::allows(&snap, &flow), "{}", flow);
        }
    }
}

proptest! {
    #![proptest_config(Config { cases: 1000, failure_persistence: None, ..Config::default() })]

    /// The incremental plan between any two tables turns the first into the second, and the
    /// plan from a table to itself is empty. The old table's hash sets are given random sizes
    /// (as if grown or shrunk earlier), so some sets are recreated: every chain of the old
    /// table that reads a recreated set is rewritten or deleted (the kernel refuses to delete
    /// a set a rule holds), and a recreated set gets no element changes besides.
    #[test]
    fn diff_plans_reach_the_new_table(
        first in gen::cluster(),
        second in gen::cluster(),
        sizes in proptest::collection::vec(0u32..4, 64),
    ) {
        let (a, _) = first.lower();
        let (b, _) = second.lower();
        for node in ["node-0", "node-1"] {
            let mut old = build(&policy_compiler::compile(&a, node).0);
            for (set, k) in old.sets.iter_mut().zip(sizes.iter().cycle()) {
                set.size = set.size.map(|s| s << k);
            }
            let mut new = build(&policy_compiler::compile(&b, node).0);
            diff::fit_sizes(&old, &mut new);
            let plan = diff::diff(&old, &new);
            prop_assert!(diff::same_content(&diff::apply_to(&old, &plan), &new), "{:?}", plan);
            for set in &plan.replace_sets {
                for chain in old.chains.iter().filter(|c| c.rules.iter().any(|r| r.uses_set(&set.name))) {
                    prop_assert!(
                        plan.rewrite_chains.iter().any(|c| c.name == chain.name)
                            || plan.del_chains.contains(&chain.name),
                        "{} reads {} and stays", chain.name, set.name
                    );
                }
                prop_assert!(plan.add_elements.iter().chain(&plan.del_elements).all(|d| d.name != set.name));
            }
            for set in &new.sets {
                prop_assert!(set.size.is_none_or(|s| set.n_elements() <= s as usize), "{} overflows", set.name);
            }
            prop_assert!(diff::diff(&new, &new).is_empty());
        }
    }
}
