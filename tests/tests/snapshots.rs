//! Snapshots of IR dumps and diagnostics, reviewed in the diff. Regenerate on purpose with
//! `UPDATE_EXPECT=1 cargo test -p netfence-tests --test snapshots`.

use std::path::Path;

use expect_test::expect_file;
use netfence_tests::fixture;
use policy_compiler::compile;

fn load(case: &str) -> fixture::Fixture {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(case);
    fixture::load(&dir).unwrap_or_else(|e| panic!("{case}: {e}"))
}

#[test]
fn demo_ir_dumps() {
    let fx = load("demo");
    let (node1, d1) = compile(&fx.input.snapshot, "node-1");
    let (node2, d2) = compile(&fx.input.snapshot, "node-2");
    assert!(d1.is_empty() && d2.is_empty(), "{d1:?} {d2:?}");
    expect_file!["../../fixtures/demo/node-1.ir"].assert_eq(&node1.dump());
    expect_file!["../../fixtures/demo/node-2.ir"].assert_eq(&node2.dump());
}

#[test]
fn invalid_policy_diagnostics() {
    let fx = load("semantics/invalid-policy-fails-closed");
    let (ruleset, compile_diags) = compile(&fx.input.snapshot, "node-1");
    let mut text: Vec<String> = fx.input.diagnostics.iter().map(ToString::to_string).collect();
    text.extend(compile_diags.iter().map(ToString::to_string));
    text.push(String::new());
    expect_file!["../../fixtures/semantics/invalid-policy-fails-closed/diagnostics.txt"]
        .assert_eq(&text.join("\n"));
    expect_file!["../../fixtures/semantics/invalid-policy-fails-closed/node-1.ir"].assert_eq(&ruleset.dump());
}
