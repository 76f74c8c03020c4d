//! The real binary over every fixture: `matrix -o json` equals the fixture's truth tables,
//! `compile` prints what the library builds for every node, and `matrix
//! --check` agrees on the property-test generator's clusters written as `kind: List` files.

use std::path::{Path, PathBuf};
use std::process::Command;

use netfence_tests::fixture;
use netfence_tests::gen;
use nft_backend::{build::build, render::render};
use policy_compiler::compile;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};

const NETFENCE: &str = env!("CARGO_BIN_EXE_netfence");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(NETFENCE).args(args).output().expect("netfence runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn matrix_json_equals_every_truth_table() {
    let mut checked = 0;
    for dir in fixture::discover(&root()) {
        let fx = fixture::load(&dir).expect("fixture");
        for table in &fx.expect.tables {
            let port = table.port.to_string();
            let (code, stdout, stderr) = run(&[
                "matrix",
                dir.to_str().unwrap(),
                "-o",
                "json",
                "--protocol",
                &table.protocol,
                "--port",
                &port,
                "--allow-invalid",
            ]);
            assert_eq!(code, 0, "{stderr}");
            let v: Value = serde_json::from_str(&stdout).expect("JSON");
            assert_eq!(v["protocol"], table.protocol.as_str());
            assert_eq!(v["port"], table.port);
            for (i, from) in table.pods.iter().enumerate() {
                for (j, cell) in table.allowed[i].split_whitespace().enumerate() {
                    let to = &table.pods[j];
                    assert_eq!(
                        v["allowed"][from][to],
                        json!(cell == "."),
                        "{}: {from} -> {to} {}/{}",
                        dir.display(),
                        table.protocol,
                        table.port
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 300, "{checked}");
}

#[test]
fn compile_prints_what_the_library_builds_for_every_node() {
    // The scripts themselves are snapshots (netfence-tests' `snapshots`) that `nft -c` loads
    // (`kernel_scripts`); here the binary must print exactly that, on every fixture.
    let mut failures = Vec::new();
    let mut n = 0;
    for dir in fixture::discover(&root()) {
        let fx = fixture::load(&dir).expect("fixture");
        for node in fx.input.snapshot.node_names() {
            let (code, script, stderr) = run(&[
                "compile",
                dir.to_str().unwrap(),
                "--node",
                &node,
                "--allow-invalid",
            ]);
            assert_eq!(code, 0, "{stderr}");
            let want = render(&build(&compile(&fx.input.snapshot, &node).0));
            if script != want {
                failures.push(format!(
                    "{} {node}: netfence compile differs from the library",
                    dir.display()
                ));
            }
            n += 1;
        }
    }
    assert!(n >= 40, "{n}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn check_agrees_on_generated_clusters() {
    let mut runner = TestRunner::new(Config {
        failure_persistence: None,
        ..Config::default()
    });
    let dir = std::env::temp_dir().join(format!("netfence-gen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for case in 0..150 {
        let cluster = gen::cluster().new_tree(&mut runner).expect("draw").current();
        let mut items: Vec<Value> = Vec::new();
        let with_kind = |mut v: Value, kind: &str, version: &str| {
            v["kind"] = json!(kind);
            v["apiVersion"] = json!(version);
            v
        };
        items.extend(
            cluster
                .namespaces
                .iter()
                .map(|o| with_kind(serde_json::to_value(o).unwrap(), "Namespace", "v1")),
        );
        items.extend(
            cluster
                .nodes
                .iter()
                .map(|o| with_kind(serde_json::to_value(o).unwrap(), "Node", "v1")),
        );
        items.extend(
            cluster
                .pods
                .iter()
                .map(|o| with_kind(serde_json::to_value(o).unwrap(), "Pod", "v1")),
        );
        items.extend(cluster.policies.iter().map(|o| {
            with_kind(
                serde_json::to_value(o).unwrap(),
                "NetworkPolicy",
                "networking.k8s.io/v1",
            )
        }));
        let path = dir.join(format!("case-{case}.json"));
        std::fs::write(
            &path,
            json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string(),
        )
        .unwrap();
        let protocol = ["TCP", "UDP", "SCTP"][case % 3];
        let port = gen::PROBE_PORTS[case % gen::PROBE_PORTS.len()].to_string();
        let (code, _, stderr) = run(&[
            "matrix",
            path.to_str().unwrap(),
            "--check",
            "--allow-invalid",
            "--protocol",
            protocol,
            "--port",
            &port,
        ]);
        assert_eq!(code, 0, "case {case}: {stderr}");
        assert!(stderr.contains("agree on every cell"), "{stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
