//! Walks `fixtures/services/`: every outcome a case's `services.toml` writes from SPEC 5 must be
//! what the reference reading of the spec, the IR evaluator and the packet tracer (walking the
//! built nftables rules) all answer.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use nft_backend::trace::{trace_service, Entry};
use policy_compiler::nat::Seen;
use policy_compiler::{compile, nat_reference, Flow, Protocol, Snapshot};
use serde::Deserialize;

#[derive(Deserialize)]
struct Expectations {
    expect: Vec<Expect>,
}

#[derive(Deserialize)]
struct Expect {
    from: String,
    to: String,
    result: String,
    #[serde(default)]
    backends: Vec<String>,
    #[serde(default)]
    masquerade: bool,
    hairpin: Option<String>,
    why: String,
}

/// The client's address, the node where its connection enters NAT, and how it enters.
fn client(snap: &Snapshot, from: &str) -> (IpAddr, String, Entry) {
    if let Some(node) = from.strip_prefix("node/") {
        let addr = snap.nodes[node].addrs[0];
        return (addr, node.to_string(), Entry::Output);
    }
    if let Some((addr, node)) = from.split_once('@') {
        return (
            addr.parse().expect("an address"),
            node.to_string(),
            Entry::Prerouting,
        );
    }
    let (ns, name) = from.split_once('/').expect("NS/POD");
    let pod = &snap.pods[&policy_compiler::ObjectKey::new(ns, name)];
    (pod.ips[0], pod.node.clone(), Entry::Prerouting)
}

fn frontend(to: &str) -> (IpAddr, u16, Protocol) {
    let (addr_port, proto) = to.split_once('/').expect("ADDR:PORT/PROTO");
    let (addr, port) = addr_port.rsplit_once(':').expect("ADDR:PORT");
    (
        addr.trim_matches(['[', ']']).parse().expect("an address"),
        port.parse().expect("a port"),
        Protocol::parse(proto).expect("a protocol"),
    )
}

/// What the expectation says, as a [`Seen`]: endpoints by pod name, resolved to addresses
/// with the port the reference answered for them.
fn expected(snap: &Snapshot, e: &Expect, answered: &Seen) -> Seen {
    match e.result.as_str() {
        "pass" => Seen::Pass,
        "reject" => Seen::Reject,
        "drop" => Seen::Drop,
        "dnat" => {
            let ports: BTreeMap<IpAddr, u16> = match answered {
                Seen::Dnat(m) => m.keys().map(|b| (b.addr, b.port)).collect(),
                _ => BTreeMap::new(),
            };
            let mut out = BTreeMap::new();
            for name in &e.backends {
                let (ns, pod) = name.split_once('/').expect("NS/POD");
                let addr = snap.pods[&policy_compiler::ObjectKey::new(ns, pod)].ips[0];
                let port = ports.get(&addr).copied().unwrap_or(0);
                let hairpin = e.hairpin.as_deref() == Some(name.as_str());
                out.insert(
                    policy_compiler::nat::Backend { addr, port },
                    e.masquerade || hairpin,
                );
            }
            Seen::Dnat(out)
        }
        other => panic!("unknown result {other:?}"),
    }
}

#[test]
fn every_service_fixture_holds_for_the_reference_the_ir_and_the_rules() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/services");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .expect("fixtures/services")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("services.toml").is_file())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no service fixtures under {}", root.display());
    let mut failures = Vec::new();
    let mut n = 0;
    for dir in dirs {
        let input = netfence_cli::input::load(&[dir.join("cluster.yaml")]).expect("the fixture loads");
        let snap = &input.snapshot;
        let text = std::fs::read_to_string(dir.join("services.toml")).expect("readable");
        let cases: Expectations = toml::from_str(&text).expect("services.toml parses");
        for e in &cases.expect {
            n += 1;
            let (src, node, entry) = client(snap, &e.from);
            let (dst, port, protocol) = frontend(&e.to);
            let reference = nat_reference::decide(snap, &node, src, dst, protocol, port).seen(src);
            let ruleset = compile(snap, &node).0;
            let ir = ruleset
                .services
                .decide(&ruleset.node_addrs, src, dst, protocol, port)
                .seen(src);
            let table = nft_backend::build::build(&ruleset);
            let traced = trace_service(&table, entry, &Flow::new(src, dst, protocol, port));
            let want = expected(snap, e, &reference);
            for (who, got) in [("reference", &reference), ("IR", &ir), ("tracer", &traced)] {
                if *got != want {
                    failures.push(format!(
                        "{}: {} -> {} ({}): {who} answers {got:?}, expected {want:?}",
                        dir.display(),
                        e.from,
                        e.to,
                        e.why
                    ));
                }
            }
        }
    }
    assert!(n >= 10, "only {n} expectations");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
