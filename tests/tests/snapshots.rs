//! Snapshots, reviewed in the diff and checked without root: every fixture's IR dump and nft
//! script per node (`<node>.ir`, `<node>.nft` beside its `cluster.yaml`), and the diagnostics
//! of the invalid-policy fixture. Regenerate on purpose with
//! `UPDATE_EXPECT=1 cargo test -p netfence-tests --test snapshots`. (That the scripts load is
//! the kernel test `kernel_scripts`: `nft -c` needs root.)

use std::path::Path;

use expect_test::expect_file;
use netfence_tests::fixture::{self, check_snapshot};
use nft_backend::{build::build, render::render};
use policy_compiler::compile;

fn fixtures_root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

#[test]
fn every_fixture_ir_dump_and_script_match_their_snapshots() {
    let mut failures = Vec::new();
    let mut n_nodes = 0;
    for dir in fixture::discover(&fixtures_root()) {
        let fx = fixture::load(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for node in fx.input.snapshot.node_names() {
            let (ruleset, _) = compile(&fx.input.snapshot, &node);
            let script = render(&build(&ruleset));
            for (file, text) in [
                (format!("{node}.ir"), ruleset.dump()),
                (format!("{node}.nft"), script),
            ] {
                if let Err(e) = check_snapshot(&dir.join(file), &text) {
                    failures.push(e);
                }
            }
            n_nodes += 1;
        }
    }
    assert!(n_nodes >= 100, "{n_nodes}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn invalid_policy_diagnostics() {
    let dir = fixtures_root().join("semantics/invalid-policy-fails-closed");
    let fx = fixture::load(&dir).expect("fixture loads");
    let (_, compile_diags) = compile(&fx.input.snapshot, "node-1");
    let mut text: Vec<String> = fx.input.diagnostics.iter().map(ToString::to_string).collect();
    text.extend(compile_diags.iter().map(ToString::to_string));
    text.push(String::new());
    expect_file!["../../fixtures/semantics/invalid-policy-fails-closed/diagnostics.txt"]
        .assert_eq(&text.join("\n"));
}

#[test]
fn kernel_object_names_are_pinned() {
    // Names are a contract with running nodes: a renamed set or chain is deleted and created
    // again at upgrade (a full replace when a dispatch map changes). Change on purpose only.
    let fx = fixture::load(&fixtures_root().join("demo")).expect("demo loads");
    let table = build(&compile(&fx.input.snapshot, "node-2").0);
    let mut names: Vec<&str> = table.sets.iter().map(|s| s.name.as_str()).collect();
    names.extend(table.chains.iter().map(|c| c.name.as_str()));
    names.sort_unstable();
    expect_test::expect![[r#"
        dispatch
        eg-dispatch-4
        eg-dispatch-6
        forward
        in-allow-monitoring-09b92ab904b0
        in-allow-monitoring-8cc8523dbf7f
        in-dispatch-4
        in-dispatch-6
        input
        node-addrs-4
        node-addrs-6
        output
        pods-all-e3c2d77585ee-4
        pods-all-e3c2d77585ee-6
        pods-app_backend-5da7c9ee8049-4
        pods-app_backend-5da7c9ee8049-6
        pods-app_frontend-da875fa6a0ec-4
        pods-app_frontend-da875fa6a0ec-6"#]]
    .assert_eq(&names.join("\n"));
}
