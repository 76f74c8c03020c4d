//! Walks `fixtures/`: every case's expected truth table must hold for the IR evaluator over the
//! compiled per-node rulesets and for the reference evaluator.

use std::path::Path;

use netfence_tests::fixture;
use policy_compiler::eval::decide_cluster;
use policy_compiler::{compile_all, reference};

#[test]
fn every_fixture_matches_its_truth_table() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    let dirs = fixture::discover(&root);
    assert!(
        dirs.len() >= 20,
        "expected the demo, the recipes and the spec scenarios, found {dirs:?}"
    );
    let mut failures = Vec::new();
    let mut n_cases = 0;
    for dir in &dirs {
        let fx = match fixture::load(dir) {
            Ok(fx) => fx,
            Err(e) => {
                failures.push(format!("{}: {e}", dir.display()));
                continue;
            }
        };
        let cases = match fx.cases() {
            Ok(cases) => cases,
            Err(e) => {
                failures.push(format!("{}: {e}", dir.display()));
                continue;
            }
        };
        assert!(!cases.is_empty(), "{}: no expectations", dir.display());
        let steps = match fx.steps() {
            Ok(steps) => steps,
            Err(e) => {
                failures.push(format!("{}: {e}", dir.display()));
                continue;
            }
        };
        let mut stages = vec![(fx.input.snapshot.clone(), cases)];
        stages.extend(steps);
        for (snapshot, cases) in stages {
            let rulesets = compile_all(&snapshot);
            for case in cases {
                n_cases += 1;
                let compiled = decide_cluster(&rulesets, &case.flow).allowed();
                let oracle = reference::allows(&snapshot, &case.flow);
                if compiled != case.allowed || oracle != case.allowed {
                    failures.push(format!(
                        "{}: {}: expected {}, compiled says {compiled}, reference says {oracle}",
                        dir.strip_prefix(&root).unwrap_or(dir).display(),
                        case.label,
                        case.allowed
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n_cases} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
