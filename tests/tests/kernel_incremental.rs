//! Kernel tests: random streams of cluster changes, each sent as an incremental transaction,
//! leave the kernel exactly where one full apply of the final state leaves it; after every step
//! the table read back equals what was intended. Sets that outgrow their declared size, or
//! shrink far below it, are recreated within the diff's transaction.

use netfence_tests::gen::{self, apply, op_strategy};
use netfence_tests::netns::{normalized_listing, require_root_and_nft, Netns};
use netfence_tests::synth;
use nft_backend::build::build;
use nft_backend::diff::{diff, fit_sizes};
use nft_backend::nft::Table;
use policy_compiler::Compiler;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, TestRunner};

#[test]
fn incremental_streams_end_where_a_full_apply_ends() {
    require_root_and_nft();
    let incremental = Netns::new("inc");
    let full = Netns::new("ful");
    let mut runner = TestRunner::new(Config {
        failure_persistence: None,
        ..Config::default()
    });
    let streams = (
        gen::cluster(),
        gen::cluster(),
        proptest::collection::vec(op_strategy(), 1..25),
    );
    let mut n_steps = 0;
    for case in 0..40 {
        let (first, second, ops) = streams.new_tree(&mut runner).expect("draw").current();
        let (start, _) = first.lower();
        let (next, _) = second.lower();
        let node = if case % 2 == 0 { "node-0" } else { "node-1" };
        let mut mirror = start.clone();
        let mut compiler = Compiler::new(node, start);
        let mut tables = vec![build(compiler.ruleset())];
        for op in &ops {
            apply(op, &next, &mut mirror, &mut compiler);
            tables.push(build(compiler.ruleset()));
        }
        n_steps += ops.len();
        // The whole stream goes through one session, as the agent's writer sends it.
        let stream = ops.clone();
        let applied = incremental
            .run(move || -> Result<Table, String> {
                let mut session = nft_netlink::Session::open().map_err(|e| e.to_string())?;
                let mut tables = tables.into_iter();
                let mut applied = tables.next().expect("the first table");
                session
                    .apply_full(&applied)
                    .map_err(|e| format!("first full apply: {e}"))?;
                for (mut next, op) in tables.zip(&stream) {
                    session
                        .apply_diff(&applied, &mut next)
                        .and_then(|_| session.verify(&next))
                        .map_err(|e| format!("after {op:?}: {e}"))?;
                    applied = next;
                }
                Ok(applied)
            })
            .unwrap_or_else(|e| panic!("case {case}: {e}"));
        // The fresh table with the sizes the stream's sets kept (sizes are capacity, not
        // meaning; a set created by a full apply is sized for its elements alone).
        let mut fresh = build(&policy_compiler::compile(&mirror, node).0);
        fit_sizes(&applied, &mut fresh);
        full.run(move || nft_netlink::apply_full(&fresh).map(|_| ()))
            .expect("full apply");
        assert_eq!(
            normalized_listing(&incremental),
            normalized_listing(&full),
            "case {case}: {ops:?}"
        );
    }
    assert!(n_steps > 100, "{n_steps}");
}

/// A cluster grows tenfold, its local pods too, then shrinks and grows again: each step one
/// incremental transaction. Sets and the dispatch map that outgrow their declared size (or
/// shrink far below it) are recreated in that transaction, the chains reading them rewritten;
/// the kernel ends each step where a full apply of the same table would.
#[test]
fn sets_outgrowing_their_size_are_recreated_within_the_diff() {
    require_root_and_nft();
    let incremental = Netns::new("grw");
    let full = Netns::new("grf");
    let steps = [
        (20, 5),
        (200, 5),
        (200, 120),
        (1_000, 120),
        (150, 10),
        (20, 5),
        (1_000, 200),
    ];
    let tables: Vec<Table> = steps
        .iter()
        .map(|&(n_pods, n_local)| build(&policy_compiler::compile(&synth::flat(n_pods, n_local), "node-0").0))
        .collect();
    let mut n_recreated = 0;
    let mut n_kept = 0;
    let mut applied = tables[0].clone();
    let first = applied.clone();
    incremental
        .run(move || nft_netlink::apply_full(&first).map(|_| ()))
        .expect("first full apply");
    for (step, next) in tables.into_iter().enumerate().skip(1) {
        let mut fitted = next.clone();
        fit_sizes(&applied, &mut fitted);
        let plan = diff(&applied, &fitted);
        n_recreated += plan.replace_sets.len();
        n_kept += plan.add_elements.len() + plan.del_elements.len();
        let old = applied.clone();
        let mut new = next;
        applied = incremental
            .run(move || -> Result<Table, String> {
                let mut session = nft_netlink::Session::open().map_err(|e| e.to_string())?;
                session.apply_diff(&old, &mut new).map_err(|e| e.to_string())?;
                session.verify(&new).map_err(|e| e.to_string())?;
                Ok(new)
            })
            .unwrap_or_else(|e| panic!("step {step} {:?}: {e}", steps[step]));
        assert_eq!(
            applied, fitted,
            "step {step}: apply_diff fits sizes as fit_sizes does"
        );
        for set in &applied.sets {
            assert!(
                set.size.is_none_or(|s| set.n_elements() <= s as usize),
                "step {step}: {} holds {} elements, size {:?}",
                set.name,
                set.n_elements(),
                set.size
            );
        }
        let same = applied.clone();
        full.run(move || nft_netlink::apply_full(&same).map(|_| ()))
            .expect("full apply");
        assert_eq!(
            normalized_listing(&incremental),
            normalized_listing(&full),
            "step {step} {:?}",
            steps[step]
        );
    }
    assert!(n_recreated >= 4, "sets recreated: {n_recreated}");
    assert!(n_kept >= 4, "sets changed by elements alone: {n_kept}");
}
