//! The nft backend over the fixtures, without root: the tracer walking the generated rules
//! decides every expected flow as the truth table says, and hostile names stay inert in the
//! script. (Snapshots of the scripts: `snapshots`; `nft -c` of them: `kernel_scripts`.)

use std::collections::BTreeMap;
use std::path::Path;

use netfence_tests::{fixture, topology};
use nft_backend::{build::build, render::render, trace};
use policy_compiler::compile_all;

fn fixtures_root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

#[test]
fn traced_rules_match_every_truth_table() {
    let mut failures = Vec::new();
    for dir in fixture::discover(&fixtures_root()) {
        let fx = fixture::load(&dir).expect("fixture loads");
        let mut stages = vec![(fx.input.snapshot.clone(), fx.cases().expect("cases"))];
        stages.extend(fx.steps().expect("steps"));
        for (snapshot, cases) in stages {
            let tables: BTreeMap<String, _> = compile_all(&snapshot)
                .iter()
                .map(|(n, r)| (n.clone(), build(r)))
                .collect();
            let topo = topology(&snapshot);
            for case in cases {
                let traced = trace::decide_cluster(&tables, &topo, &case.flow);
                if traced != case.allowed {
                    failures.push(format!(
                        "{}: {}: expected {}, rules say {traced}",
                        dir.display(),
                        case.label,
                        case.allowed
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn hostile_names_and_labels_never_reach_the_script() {
    let text = netfence_tests::hostile_cluster();
    let input = netfence_cli::input::load_str("hostile.yaml", &text).expect("loads");
    let rulesets = compile_all(&input.snapshot);
    let script = render(&build(&rulesets["node-1"]));
    // Cluster text appears only sanitised: in derived names and inside comments. It never ends
    // a statement, opens a block or starts a line of its own.
    for line in script.lines() {
        assert!(line.matches('"').count() % 2 == 0, "unbalanced quotes: {line}");
        assert!(
            !line.contains(';') || line.contains("type filter hook"),
            "statement break: {line}"
        );
        assert!(!line.trim_start().starts_with("flush"), "{line}");
    }
}
