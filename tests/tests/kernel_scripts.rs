//! Kernel test: every node's script of every fixture, and a script of hostile names, load with
//! `nft -c -f` (checked by the kernel, applied nowhere). Needs root; one `nft -c` per fixture,
//! its nodes' scripts in one transaction.

use std::path::Path;

use netfence_tests::fixture;
use netfence_tests::netns::{nft_check, require_root_and_nft};
use nft_backend::{build::build, render::render};
use policy_compiler::{compile, compile_all};

#[test]
fn every_fixture_script_and_hostile_names_pass_nft_check() {
    require_root_and_nft();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    let mut failures = Vec::new();
    let mut n_fixtures = 0;
    for dir in fixture::discover(&root) {
        let fx = fixture::load(&dir).expect("fixture loads");
        // Each script replaces the table, so a fixture's scripts in a row are one valid
        // transaction that checks every one of them.
        let scripts: String = fx
            .input
            .snapshot
            .node_names()
            .iter()
            .map(|node| render(&build(&compile(&fx.input.snapshot, node).0)))
            .collect();
        if let Err(e) = nft_check(&scripts) {
            failures.push(format!("{}: {e}", dir.display()));
        }
        n_fixtures += 1;
    }
    assert!(n_fixtures >= 70, "{n_fixtures}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    let input =
        netfence_cli::input::load_str("hostile.yaml", &netfence_tests::hostile_cluster()).expect("loads");
    let script = render(&build(&compile_all(&input.snapshot)["node-1"]));
    nft_check(&script).unwrap_or_else(|e| panic!("{e}\n{script}"));
}
