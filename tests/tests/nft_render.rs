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

/// Regression: a rule with 300 peers and 300 ports compiled to 180,000 nft rules (one per peer,
/// family and port). Peers and ports are set lookups now: the chain has one rule per family
/// and its drop, and the tracer still decides by peer and port.
#[test]
fn peers_times_ports_is_not_a_cross_product_of_rules() {
    use std::net::Ipv4Addr;
    let (server, client) = (Ipv4Addr::new(10, 244, 0, 2), Ipv4Addr::new(10, 244, 0, 3));
    let yaml = netfence_tests::synth::wide_policy_yaml(300, 300, server, client, 8080);
    let input = netfence_cli::input::load_str("wide.yaml", &yaml).expect("loads");
    let rulesets = compile_all(&input.snapshot);
    let table = build(&rulesets["node-0"]);
    let chain = table
        .chains
        .iter()
        .find(|c| c.name.starts_with("in-wide-"))
        .expect("the policy's allow-set chain");
    assert_eq!(chain.rules.len(), 3, "{:#?}", chain.rules);
    let tables: BTreeMap<String, _> = [("node-0".to_string(), table)].into_iter().collect();
    let topo = topology(&input.snapshot);
    let flow = |src: Ipv4Addr, port| policy_compiler::Flow {
        src: src.into(),
        dst: server.into(),
        l4: policy_compiler::L4::Port(policy_compiler::Protocol::Tcp, port),
    };
    let peer = Ipv4Addr::new(10, 245, 0, 1);
    let stranger = Ipv4Addr::new(10, 246, 0, 1);
    assert!(
        trace::decide_cluster(&tables, &topo, &flow(client, 8080)),
        "the client on its port"
    );
    assert!(
        trace::decide_cluster(&tables, &topo, &flow(peer, 1003)),
        "a peer on a listed port"
    );
    assert!(
        !trace::decide_cluster(&tables, &topo, &flow(peer, 1004)),
        "a port between listed ones"
    );
    assert!(
        !trace::decide_cluster(&tables, &topo, &flow(stranger, 8080)),
        "an address no peer holds"
    );
}
