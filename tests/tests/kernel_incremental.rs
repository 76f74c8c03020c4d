//! Kernel test: random streams of cluster changes, each sent as an incremental transaction,
//! leave the kernel exactly where one full apply of the final state leaves it; after every step
//! the table read back equals what was intended.

use netfence_tests::gen::{self, apply, op_strategy};
use netfence_tests::netns::{normalized_listing, require_root_and_nft, Netns};
use nft_backend::build::build;
use nft_backend::netlink;
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
        let mut applied = build(compiler.ruleset());
        let table = applied.clone();
        incremental
            .run(move || netlink::apply_full(&table).map(|_| ()))
            .expect("first full apply");
        for op in &ops {
            apply(op, &next, &mut mirror, &mut compiler);
            let wanted = build(compiler.ruleset());
            let (old, new) = (applied.clone(), wanted.clone());
            incremental
                .run(move || netlink::apply_diff(&old, &new).and_then(|_| netlink::verify(&new)))
                .unwrap_or_else(|e| panic!("case {case}, after {op:?}: {e}"));
            applied = wanted;
            n_steps += 1;
        }
        let fresh = build(&policy_compiler::compile(&mirror, node).0);
        full.run(move || netlink::apply_full(&fresh).map(|_| ()))
            .expect("full apply");
        assert_eq!(
            normalized_listing(&incremental),
            normalized_listing(&full),
            "case {case}: {ops:?}"
        );
    }
    assert!(n_steps > 100, "{n_steps}");
}
