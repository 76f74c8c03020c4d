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
    /// plan from a table to itself is empty.
    #[test]
    fn diff_plans_reach_the_new_table(first in gen::cluster(), second in gen::cluster()) {
        let (a, _) = first.lower();
        let (b, _) = second.lower();
        for node in ["node-0", "node-1"] {
            let old = build(&policy_compiler::compile(&a, node).0);
            let new = build(&policy_compiler::compile(&b, node).0);
            let plan = diff::diff(&old, &new);
            prop_assert!(diff::same_content(&diff::apply_to(&old, &plan), &new), "{:?}", plan);
            prop_assert!(diff::diff(&new, &new).is_empty());
        }
    }
}
