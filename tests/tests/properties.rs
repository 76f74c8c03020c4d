//! Laws of the compiler, over random clusters (see `netfence_tests::gen`).

use std::collections::BTreeMap;

use netfence_tests::gen::{self, apply, flows, l4_strategy, op_strategy, Cluster};
use policy_compiler::eval::{decide_cluster, SideVerdict};
use policy_compiler::model::{Direction, ObjectKey};
use policy_compiler::{compile_all, lower, reference, Compiler, Ruleset};
use proptest::prelude::*;
use proptest::test_runner::Config;

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config(5000))]

    /// The IR evaluator, reading only the source's and destination's node rulesets, decides
    /// every flow as the reference reading of the spec does: pod pairs, node addresses and
    /// addresses outside the cluster.
    #[test]
    fn compiled_decisions_equal_reference(cluster in gen::cluster(), l4s in l4_strategy()) {
        let (snap, _) = cluster.lower();
        let rulesets = compile_all(&snap);
        for flow in flows(&snap, &l4s) {
            let compiled = decide_cluster(&rulesets, &flow);
            let oracle = reference::allows(&snap, &flow);
            prop_assert_eq!(compiled.allowed(), oracle, "{} decided {:?}", flow, compiled);
        }
    }
}

proptest! {
    #![proptest_config(config(1000))]

    /// Random streams of applies and deletes end, after every step, where a fresh full compile
    /// of the resulting cluster ends: same ruleset, same dump.
    #[test]
    fn incremental_updates_equal_fresh_compile(
        first in gen::cluster(),
        second in gen::cluster(),
        ops in prop::collection::vec(op_strategy(), 1..40),
    ) {
        let (start, _) = first.lower();
        let (next, _) = second.lower();
        for node in ["node-0", "node-1"] {
            let mut mirror = start.clone();
            let mut compiler = Compiler::new(node, start.clone());
            for op in &ops {
                apply(op, &next, &mut mirror, &mut compiler);
                let fresh = Compiler::new(node, mirror.clone());
                prop_assert_eq!(compiler.ruleset(), fresh.ruleset(), "after {:?} on {}", op, node);
            }
        }
    }

    /// The order in which policies arrive, in the input or one by one, does not change the IR.
    #[test]
    fn policy_order_does_not_change_the_ir(cluster in gen::cluster(), seed in any::<u64>()) {
        let (snap, _) = cluster.lower();
        let mut reversed = cluster.clone();
        reversed.policies.reverse();
        let (snap_reversed, _) = reversed.lower();
        prop_assert_eq!(&snap, &snap_reversed);

        let mut order: Vec<ObjectKey> = snap.policies.keys().cloned().collect();
        let n = order.len().max(1);
        order.rotate_left((seed as usize) % n);
        if seed % 2 == 0 {
            order.reverse();
        }
        for node in snap.node_names() {
            let full = Compiler::new(&node, snap.clone());
            let mut empty = snap.clone();
            empty.policies.clear();
            let mut one_by_one = Compiler::new(&node, empty);
            for key in &order {
                one_by_one.apply_policy(snap.policies[key].clone());
            }
            prop_assert_eq!(full.ruleset().dump(), one_by_one.ruleset().dump());
            prop_assert_eq!(full.ruleset(), one_by_one.ruleset());
        }
    }

    /// A pod that no policy selects (listing that direction) is not isolated in it, and one
    /// that some policy selects is.
    #[test]
    fn a_pod_is_isolated_exactly_when_a_policy_selects_it(cluster in gen::cluster()) {
        let (snap, _) = cluster.lower();
        for ruleset in compile_all(&snap).values() {
            for (key, local) in &ruleset.pods {
                let pod = &snap.pods[key];
                for direction in Direction::BOTH {
                    let selected = snap.policies.values().any(|p| {
                        p.key.namespace == key.namespace && p.directions.has(direction) && p.pod_selector.matches(&pod.labels)
                    });
                    prop_assert_eq!(local.isolation(direction).is_some(), selected, "{} {:?}", key, direction);
                }
            }
            let enforced_here = snap.pods.values().filter(|p| p.node == ruleset.node && p.is_enforced()).count();
            prop_assert!(ruleset.pods.len() <= enforced_here);
        }
    }

    /// Adding a policy never takes away an allowance: a flow it stops was let through only
    /// because one end was not isolated before, and the new policy isolates it.
    #[test]
    fn adding_a_policy_never_removes_an_allowed_flow(cluster in gen::cluster(), extra in gen::cluster(), l4s in l4_strategy()) {
        let Some(mut policy) = extra.policies.first().cloned() else { return Ok(()) };
        policy.metadata.name = Some("added".to_string());
        let (before_snap, _) = cluster.lower();
        let mut with = cluster.clone();
        with.policies.push(policy);
        let (after_snap, _) = with.lower();
        let before: BTreeMap<String, Ruleset> = compile_all(&before_snap);
        let after: BTreeMap<String, Ruleset> = compile_all(&after_snap);
        for flow in flows(&before_snap, &l4s) {
            let (b, a) = (decide_cluster(&before, &flow), decide_cluster(&after, &flow));
            if b.allowed() && !a.allowed() {
                let newly_isolated = (b.egress == SideVerdict::NotIsolated && a.egress == SideVerdict::Denied)
                    || (b.ingress == SideVerdict::NotIsolated && a.ingress == SideVerdict::Denied);
                prop_assert!(newly_isolated, "{}: before {:?}, after {:?}", flow, b, a);
            }
        }
    }
}

/// Lowering the generator's clusters never panics and reports every invalid policy it keeps.
#[test]
fn generated_invalid_policies_are_reported() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::new(config(1));
    let mut invalid_seen = 0;
    for _ in 0..300 {
        let cluster: Cluster = gen::cluster().new_tree(&mut runner).expect("tree").current();
        let (snap, diagnostics) = lower::snapshot(
            &cluster.namespaces,
            &cluster.pods,
            &cluster.policies,
            &cluster.nodes,
        );
        for policy in snap.policies.values() {
            if let policy_compiler::model::PolicyBody::Invalid { .. } = policy.body {
                invalid_seen += 1;
                let name = policy.key.to_string();
                assert!(
                    diagnostics
                        .iter()
                        .any(|d| d.object == name && d.kind == "NetworkPolicy"),
                    "{name} not reported"
                );
            }
        }
    }
    assert!(
        invalid_seen > 0,
        "the generator should make some invalid policies"
    );
}
