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
        let mut tables = vec![build(compiler.ruleset())];
        for op in &ops {
            apply(op, &next, &mut mirror, &mut compiler);
            tables.push(build(compiler.ruleset()));
        }
        n_steps += ops.len();
        // The whole stream goes through one session, as the agent's writer sends it.
        let stream = ops.clone();
        incremental
            .run(move || -> Result<(), String> {
                let mut session = netlink::Session::open().map_err(|e| e.to_string())?;
                session
                    .apply_full(&tables[0])
                    .map_err(|e| format!("first full apply: {e}"))?;
                for (pair, op) in tables.windows(2).zip(&stream) {
                    session
                        .apply_diff(&pair[0], &pair[1])
                        .and_then(|_| session.verify(&pair[1]))
                        .map_err(|e| format!("after {op:?}: {e}"))?;
                }
                Ok(())
            })
            .unwrap_or_else(|e| panic!("case {case}: {e}"));
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
