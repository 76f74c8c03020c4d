//! The nft backend over the fixtures: the rendered script of every node of every fixture loads
//! with `nft -c -f`, the tracer walking the generated rules decides every expected flow as the
//! truth table says, and the demo's script is a reviewed snapshot.

use std::collections::BTreeMap;
use std::path::Path;

use expect_test::expect_file;
use netfence_tests::netns::nft_check;
use netfence_tests::{fixture, topology};
use nft_backend::{build::build, render::render, trace};
use policy_compiler::compile_all;

fn fixtures_root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

#[test]
fn every_fixture_script_passes_nft_check() {
    let mut failures = Vec::new();
    let mut n_scripts = 0;
    for dir in fixture::discover(&fixtures_root()) {
        let fx = fixture::load(&dir).expect("fixture loads");
        for (node, ruleset) in compile_all(&fx.input.snapshot) {
            n_scripts += 1;
            if let Err(e) = nft_check(&render(&build(&ruleset))) {
                failures.push(format!("{} node {node}: {e}", dir.display()));
            }
        }
    }
    assert!(n_scripts >= 20);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
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
fn demo_script_snapshot() {
    let fx = fixture::load(&fixtures_root().join("demo")).expect("demo loads");
    let rulesets = compile_all(&fx.input.snapshot);
    expect_file!["../../fixtures/demo/node-1.nft"].assert_eq(&render(&build(&rulesets["node-1"])));
}

#[test]
fn hostile_names_and_labels_never_reach_the_script() {
    let hostile = "x\"; flush ruleset; #{}\n";
    let text = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: default, labels: {{app: {hostile:?}}}}}
spec: {{nodeName: node-1, containers: [{{name: c, ports: [{{name: http, containerPort: 80}}]}}]}}
status: {{podIPs: [{{ip: 10.244.0.2}}]}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: "p-x-y", namespace: default}}
spec:
  podSelector: {{matchLabels: {{app: {hostile:?}}}}}
  ingress:
  - from: [{{podSelector: {{matchExpressions: [{{key: {hostile:?}, operator: In, values: [{hostile:?}]}}]}}}}]
    ports: [{{port: http}}]
  - from: [{{ipBlock: {{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}}}]
"#
    );
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
    nft_check(&script).unwrap_or_else(|e| panic!("{e}\n{script}"));
}
