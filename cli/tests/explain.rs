//! `netfence explain` on the real binary: snapshots of the four cases a reader most needs.
//! Regenerate on purpose with `UPDATE_EXPECT=1`.

use std::path::Path;
use std::process::Command;

use expect_test::{expect, Expect};

fn explain(case: &str, args: &[&str], expected: Expect) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(case);
    let out = Command::new(env!("CARGO_BIN_EXE_netfence"))
        .arg("explain")
        .arg(&dir)
        .args(args)
        .output()
        .expect("netfence runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    expected.assert_eq(&String::from_utf8_lossy(&out.stdout));
}

#[test]
fn named_port_resolved_on_the_destination() {
    explain(
        "semantics/named-ports-per-pod",
        &[
            "--from",
            "default/client",
            "--to",
            "default/srv-b",
            "--port",
            "9090",
        ],
        expect![[r#"
            default/client (10.244.0.3) -> default/srv-b (10.244.1.2), TCP/9090: allowed
              egress of default/client on node-1: isolated by default/client-egress
                allowed by default/client-egress, egress rule 0
              ingress of default/srv-b on node-2: isolated by default/srv-http
                allowed by default/srv-http, ingress rule 0
              named port TCP/http is 9090 on default/srv-b
        "#]],
    );
}

#[test]
fn ip_block_except() {
    explain(
        "semantics/ipblock-except-boundaries",
        &["--from", "10.244.1.7", "--to", "default/web", "--port", "80"],
        expect![[r#"
            10.244.1.7 -> default/web (10.244.0.3), TCP/80: denied
              egress of 10.244.1.7: not a pod that policy applies to: no egress check
              ingress of default/web on node-1: isolated by default/web-from-block
                denied: no ingress rule of these policies allows this flow
        "#]],
    );
    explain(
        "semantics/ipblock-except-boundaries",
        &["--from", "10.244.2.7", "--to", "default/web", "--port", "80"],
        expect![[r#"
            10.244.2.7 -> default/web (10.244.0.3), TCP/80: allowed
              egress of 10.244.2.7: not a pod that policy applies to: no egress check
              ingress of default/web on node-1: isolated by default/web-from-block
                allowed by default/web-from-block, ingress rule 0
        "#]],
    );
}

#[test]
fn both_sides_isolated_on_one_node() {
    explain(
        "semantics/named-ports-per-pod",
        &[
            "--from",
            "default/client",
            "--to",
            "default/srv-a",
            "--port",
            "8080",
        ],
        expect![[r#"
            default/client (10.244.0.3) -> default/srv-a (10.244.0.2), TCP/8080: allowed
              egress of default/client on node-1: isolated by default/client-egress
                allowed by default/client-egress, egress rule 0
              ingress of default/srv-a on node-1: isolated by default/srv-http
                allowed by default/srv-http, ingress rule 0
              named port TCP/http is 8080 on default/srv-a
        "#]],
    );
}

#[test]
fn neither_side_isolated() {
    explain(
        "spec/allow-http",
        &[
            "--from",
            "default/client",
            "--to",
            "default/frontend",
            "--port",
            "80",
        ],
        expect![[r#"
        default/client (10.244.0.3) -> default/frontend (10.244.1.2), TCP/80: allowed
          egress of default/client on node-1: not isolated: no policy selects it for egress
          ingress of default/frontend on node-2: not isolated: no policy selects it for ingress
    "#]],
    );
}

#[test]
fn json_output() {
    explain(
        "demo",
        &[
            "--from",
            "shop/frontend",
            "--to",
            "shop/db",
            "--port",
            "80",
            "-o",
            "json",
        ],
        expect![[r#"
            {
              "from": "shop/frontend (10.244.0.2)",
              "to": "shop/db (10.244.1.3)",
              "src": "10.244.0.2",
              "dst": "10.244.1.3",
              "protocol": "TCP",
              "port": 80,
              "allowed": false,
              "egress": {
                "pod": "shop/frontend",
                "node": "node-1",
                "isolated": false,
                "policies": [],
                "passes": true,
                "allowed_by": null,
                "reason": "not isolated: no policy selects it for egress"
              },
              "ingress": {
                "pod": "shop/db",
                "node": "node-2",
                "isolated": true,
                "policies": [
                  "shop/allow-monitoring",
                  "shop/db-from-backend"
                ],
                "passes": false,
                "allowed_by": null,
                "reason": "denied: no ingress rule of these policies allows this flow"
              },
              "named_ports": []
            }
        "#]],
    );
}

#[test]
fn bad_endpoints_are_usage_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/demo");
    for (from, to, text) in [
        ("shop", "shop/db", "neither NAMESPACE/POD nor an IP address"),
        ("shop/nope", "shop/db", "no pod shop/nope"),
        ("10.0.0.1", "fd00::1", "different address families"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_netfence"))
            .arg("explain")
            .arg(&dir)
            .args(["--from", from, "--to", to, "--port", "80"])
            .output()
            .expect("netfence runs");
        assert_eq!(out.status.code(), Some(2));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(text),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout.is_empty());
    }
}

/// `explain` compiles only the nodes that decide the flow (so it stays quick on clusters of
/// hundreds of nodes); on those alone it must still decide every expected flow of every
/// fixture as the truth table says.
#[test]
fn explain_on_the_deciding_nodes_agrees_with_every_truth_table() {
    use netfence_cli::explain::{deciding_nodes, explain, Endpoint};
    use policy_compiler::L4;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    let (mut checked, mut failures) = (0, Vec::new());
    for dir in netfence_tests::fixture::discover(&root) {
        let fx = netfence_tests::fixture::load(&dir).expect("fixture loads");
        let snap = &fx.input.snapshot;
        for case in fx.cases().expect("cases") {
            let L4::Port(protocol, port) = case.flow.l4 else {
                continue;
            };
            let (from, to) = (Endpoint::Addr(case.flow.src), Endpoint::Addr(case.flow.dst));
            let rulesets = deciding_nodes(snap, [&from, &to])
                .into_iter()
                .map(|node| {
                    let ruleset = policy_compiler::compile(snap, &node).0;
                    (node, ruleset)
                })
                .collect();
            let e = explain(snap, &rulesets, &from, &to, protocol, port).expect("explains");
            if e.allowed != case.allowed {
                failures.push(format!(
                    "{}: {}: explain says {}",
                    dir.display(),
                    case.label,
                    e.allowed
                ));
            }
            checked += 1;
        }
    }
    assert!(checked > 1000, "{checked}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
