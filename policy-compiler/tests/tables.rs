//! Table tests: selectors, peers, ipBlocks and ports, each row `(input, expected, why)`.

use std::net::IpAddr;

use k8s_openapi::api::core::v1 as k8s_core;
use k8s_openapi::api::networking::v1 as k8s_net;
use policy_compiler::eval::decide_cluster;
use policy_compiler::model::{Labels, NamespaceScope, Peer, PolicyBody};
use policy_compiler::selector::{Selector, SelectorError};
use policy_compiler::{compile_all, lower, reference, Flow, Protocol};
use serde_json::{json, Value};

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

type Expr<'a> = (&'a str, &'a str, Option<&'a [&'a str]>);
type Pairs<'a> = &'a [(&'a str, &'a str)];
/// `(matchLabels, matchExpressions, object labels, matches, why)`.
type SelectorRow<'a> = (Pairs<'a>, Vec<Expr<'a>>, Pairs<'a>, bool, &'a str);
/// `(ports, [(protocol, port, allowed)], why)`.
type PortRow<'a> = (Value, Vec<(Protocol, u16, bool)>, &'a str);

fn selector(match_labels: &[(&str, &str)], exprs: &[Expr]) -> Result<Selector, SelectorError> {
    let owned: Vec<(String, String, Option<Vec<String>>)> = exprs
        .iter()
        .map(|(k, op, vs)| {
            (
                k.to_string(),
                op.to_string(),
                vs.map(|v| v.iter().map(|s| s.to_string()).collect()),
            )
        })
        .collect();
    Selector::parse(
        match_labels.iter().copied(),
        owned
            .iter()
            .map(|(k, op, vs)| (k.as_str(), op.as_str(), vs.as_deref())),
    )
}

#[test]
fn selector_matching() {
    let web: &[(&str, &str)] = &[("app", "web"), ("tier", "front")];
    let none: &[(&str, &str)] = &[];
    #[rustfmt::skip]
    let rows: Vec<SelectorRow> = vec![
        (&[], vec![], none, true, "empty selector matches an object without labels"),
        (&[], vec![], web, true, "empty selector matches everything"),
        (&[("app", "web")], vec![], web, true, "matchLabels equal"),
        (&[("app", "db")], vec![], web, false, "matchLabels different value"),
        (&[("role", "x")], vec![], web, false, "matchLabels missing key"),
        (&[("app", "web"), ("tier", "front")], vec![], web, true, "matchLabels all pairs"),
        (&[("app", "web"), ("tier", "back")], vec![], web, false, "matchLabels is AND"),
        (&[("app", "")], vec![], &[("app", "")], true, "empty value equals empty value"),
        (&[("app", "")], vec![], none, false, "empty value needs the key"),
        (&[], vec![("app", "In", Some(&["web", "db"]))], web, true, "In, value listed"),
        (&[], vec![("app", "In", Some(&["db"]))], web, false, "In, value not listed"),
        (&[], vec![("role", "In", Some(&["x"]))], web, false, "In, key missing"),
        (&[], vec![("app", "NotIn", Some(&["db"]))], web, true, "NotIn, value not listed"),
        (&[], vec![("app", "NotIn", Some(&["web"]))], web, false, "NotIn, value listed"),
        (&[], vec![("role", "NotIn", Some(&["x"]))], web, true, "NotIn matches objects that lack the key"),
        (&[], vec![("app", "Exists", None)], web, true, "Exists, present"),
        (&[], vec![("role", "Exists", None)], web, false, "Exists, missing"),
        (&[], vec![("role", "DoesNotExist", None)], web, true, "DoesNotExist matches objects that lack the key"),
        (&[], vec![("app", "DoesNotExist", None)], web, false, "DoesNotExist, present"),
        (&[("app", "web")], vec![("tier", "NotIn", Some(&["front"]))], web, false, "matchLabels AND matchExpressions"),
        (&[("app", "web")], vec![("tier", "In", Some(&["front"])), ("x", "DoesNotExist", None)], web, true, "every term holds"),
        (&[], vec![("app", "Exists", Some(&[]))], web, true, "Exists with an empty values list is well formed"),
    ];
    for (match_labels, exprs, object, expected, why) in rows {
        let sel = selector(match_labels, &exprs).unwrap_or_else(|e| panic!("{why}: {e}"));
        assert_eq!(sel.matches(&labels(object)), expected, "{why}");
    }
}

#[test]
fn selector_errors() {
    #[rustfmt::skip]
    let rows: Vec<(Vec<Expr>, SelectorError, &str)> = vec![
        (vec![("app", "In", None)], SelectorError::MissingValues { key: "app".into(), operator: "In".into() }, "In needs values"),
        (vec![("app", "NotIn", Some(&[]))], SelectorError::MissingValues { key: "app".into(), operator: "NotIn".into() }, "NotIn needs values"),
        (vec![("app", "Exists", Some(&["x"]))], SelectorError::UnexpectedValues { key: "app".into(), operator: "Exists".into() }, "Exists takes none"),
        (vec![("app", "DoesNotExist", Some(&["x"]))], SelectorError::UnexpectedValues { key: "app".into(), operator: "DoesNotExist".into() }, "DoesNotExist takes none"),
        (vec![("app", "in", Some(&["x"]))], SelectorError::UnknownOperator { key: "app".into(), operator: "in".into() }, "operators are case-sensitive"),
        (vec![("", "Exists", None)], SelectorError::EmptyKey, "a key is needed"),
    ];
    for (exprs, expected, why) in rows {
        assert_eq!(selector(&[], &exprs), Err(expected), "{why}");
    }
}

fn policy_with(spec: Value) -> policy_compiler::model::Policy {
    let object: k8s_net::NetworkPolicy = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": "ns"}, "spec": spec
    }))
    .expect("well-typed policy");
    lower::policy(&object).expect("identified")
}

fn invalid_reason(spec: Value) -> Option<String> {
    match policy_with(spec).body {
        PolicyBody::Invalid { reason } => Some(reason),
        PolicyBody::Valid { .. } => None,
    }
}

#[test]
fn peers_null_and_empty_selectors() {
    let peer = |p: Value| -> Peer {
        match policy_with(json!({"ingress": [{"from": [p]}]})).body {
            PolicyBody::Valid { ingress, .. } => ingress[0].peers.as_ref().unwrap()[0].clone(),
            PolicyBody::Invalid { reason } => panic!("{reason}"),
        }
    };
    assert_eq!(
        peer(json!({"podSelector": {}})),
        Peer::Pods {
            namespaces: NamespaceScope::Named("ns".into()),
            pods: Selector::everything()
        },
        "podSelector alone, namespaceSelector null: the policy's namespace"
    );
    assert_eq!(
        peer(json!({"namespaceSelector": {}})),
        Peer::Pods {
            namespaces: NamespaceScope::Selected(Selector::everything()),
            pods: Selector::everything()
        },
        "namespaceSelector {{}}: every namespace, every pod"
    );
    assert_eq!(
        peer(json!({"namespaceSelector": {"matchLabels": null}, "podSelector": {"matchLabels": {"a": "b"}}})),
        Peer::Pods {
            namespaces: NamespaceScope::Selected(Selector::everything()),
            pods: selector(&[("a", "b")], &[]).unwrap()
        },
        "both in one peer, with null matchLabels"
    );
    #[rustfmt::skip]
    let invalid: Vec<(Value, &str, &str)> = vec![
        (json!({}), "must set podSelector, namespaceSelector or ipBlock", "an empty peer"),
        (json!({"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}), "cannot be combined", "ipBlock is exclusive"),
        (json!({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Bogus"}]}}), "unknown operator", "bad expression"),
    ];
    for (p, text, why) in invalid {
        let reason =
            invalid_reason(json!({"ingress": [{"from": [p]}]})).unwrap_or_else(|| panic!("{why}: accepted"));
        assert!(reason.contains(text), "{why}: {reason}");
        assert!(
            reason.contains("spec.ingress[0].from[0]"),
            "{why}: the reason names the field: {reason}"
        );
    }
}

#[test]
fn ip_block_validation() {
    let block = |cidr: &str, except: Vec<&str>| json!({"ingress": [{"from": [{"ipBlock": {"cidr": cidr, "except": except}}]}]});
    #[rustfmt::skip]
    let rows: Vec<(Value, Option<&str>, &str)> = vec![
        (block("10.0.0.0/8", vec!["10.1.0.0/16"]), None, "except inside cidr"),
        (block("10.0.0.0/8", vec!["10.0.0.0/32", "10.255.255.255/32"]), None, "except at both ends"),
        (block("10.0.0.0/8", vec!["10.0.0.0/8"]), Some("strict subset"), "except equal to cidr"),
        (block("10.0.0.0/8", vec!["11.0.0.0/16"]), Some("strict subset"), "except outside cidr"),
        (block("10.0.0.0/8", vec!["10.0.0.0/7"]), Some("strict subset"), "except wider than cidr"),
        (block("10.0.0.0/8", vec!["fd00::/64"]), Some("not of the family"), "mixed family"),
        (block("fd00::/48", vec!["fd00:0:0:1::/64"]), None, "v6 except"),
        (block("10.0.0.0/33", vec![]), Some("is not a CIDR"), "prefix too long"),
        (block("10.0.0.0", vec![]), Some("is not a CIDR"), "no prefix"),
        (block("banana", vec![]), Some("is not a CIDR"), "not an address"),
        (block("10.0.0.0/8", vec!["10.1.0.0/x"]), Some("ipBlock.except[0]"), "malformed except"),
    ];
    for (spec, expected, why) in rows {
        let reason = invalid_reason(spec);
        match expected {
            None => assert_eq!(reason, None, "{why}"),
            Some(text) => assert!(
                reason.as_deref().is_some_and(|r| r.contains(text)),
                "{why}: {reason:?}"
            ),
        }
    }
    // Host bits are dropped, as the API does.
    match policy_with(block("10.1.2.3/8", vec![])).body {
        PolicyBody::Valid { ingress, .. } => match &ingress[0].peers.as_ref().unwrap()[0] {
            Peer::IpBlock(b) => assert_eq!(b.cidr.to_string(), "10.0.0.0/8"),
            other => panic!("{other:?}"),
        },
        PolicyBody::Invalid { reason } => panic!("{reason}"),
    }
}

/// A cluster with one server (ports http 8080/TCP, dns 53/UDP, and in a native sidecar assoc
/// 7777/SCTP and http 9090/UDP) and one client, and a policy on the server with `ports`.
fn port_cluster(ports: Value) -> (policy_compiler::Snapshot, IpAddr, IpAddr) {
    let server: k8s_core::Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "server", "namespace": "ns", "labels": {"app": "server"}},
        "spec": {"nodeName": "n1", "containers": [
            {"name": "a", "ports": [{"name": "http", "containerPort": 8080}, {"name": "dns", "containerPort": 53, "protocol": "UDP"}]}
        ], "initContainers": [
            {"name": "sidecar", "restartPolicy": "Always", "ports": [{"name": "assoc", "containerPort": 7777, "protocol": "SCTP"}, {"name": "http", "containerPort": 9090, "protocol": "UDP"}]},
            {"name": "init", "ports": [{"name": "setup", "containerPort": 6000}]}
        ]},
        "status": {"podIPs": [{"ip": "10.0.0.2"}]}
    }))
    .unwrap();
    let client: k8s_core::Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client", "namespace": "ns"},
        "spec": {"nodeName": "n2", "containers": [{"name": "c"}]}, "status": {"podIPs": [{"ip": "10.0.1.2"}]}
    }))
    .unwrap();
    let policy: k8s_net::NetworkPolicy = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {"podSelector": {"matchLabels": {"app": "server"}}, "ingress": [{"ports": ports}]}
    }))
    .unwrap();
    let (snap, _) = lower::snapshot(&[], &[server, client], &[policy], &[]);
    (snap, "10.0.1.2".parse().unwrap(), "10.0.0.2".parse().unwrap())
}

#[test]
fn ports() {
    use Protocol::{Sctp, Tcp, Udp};
    #[rustfmt::skip]
    let rows: Vec<PortRow> = vec![
        (json!([{"port": 8080}]), vec![(Tcp, 8080, true), (Udp, 8080, false), (Tcp, 8081, false)], "protocol defaults to TCP"),
        (json!([{"port": 80, "endPort": 82}]), vec![(Tcp, 79, false), (Tcp, 80, true), (Tcp, 82, true), (Tcp, 83, false)], "endPort is inclusive"),
        (json!([{"protocol": "UDP"}]), vec![(Udp, 1, true), (Udp, 65535, true), (Tcp, 53, false)], "protocol only: every port of it"),
        (json!([{"protocol": "SCTP", "port": 7777}]), vec![(Sctp, 7777, true), (Tcp, 7777, false)], "SCTP"),
        (json!([{"port": "http"}]), vec![(Tcp, 8080, true), (Udp, 9090, false), (Tcp, 9090, false)], "named TCP port resolves on the pod"),
        (json!([{"port": "http", "protocol": "UDP"}]), vec![(Udp, 9090, true), (Tcp, 8080, false)], "named port by name and protocol, from a sidecar"),
        (json!([{"port": "assoc", "protocol": "SCTP"}]), vec![(Sctp, 7777, true)], "sidecar SCTP port"),
        (json!([{"port": "setup"}]), vec![(Tcp, 6000, false)], "ports of ordinary init containers do not count"),
        (json!([{"port": "missing"}]), vec![(Tcp, 8080, false)], "a name the pod lacks matches nothing"),
        (json!([]), vec![(Tcp, 1, true), (Sctp, 9, true)], "empty ports: every port"),
        (json!(null), vec![(Udp, 5, true)], "absent ports: every port"),
        (json!([{"port": 53, "protocol": "UDP"}, {"port": 8080}]), vec![(Udp, 53, true), (Tcp, 8080, true), (Tcp, 53, false)], "entries are ORed"),
    ];
    for (ports, probes, why) in rows {
        let (snap, client, server) = port_cluster(ports);
        let rulesets = compile_all(&snap);
        for (protocol, port, expected) in probes {
            let flow = Flow::new(client, server, protocol, port);
            assert_eq!(
                reference::allows(&snap, &flow),
                expected,
                "{why}: reference, {flow}"
            );
            assert_eq!(
                decide_cluster(&rulesets, &flow).allowed(),
                expected,
                "{why}: compiled, {flow}"
            );
        }
    }
}

#[test]
fn invalid_ports() {
    #[rustfmt::skip]
    let rows: Vec<(Value, &str, &str)> = vec![
        (json!({"port": 81, "endPort": 80}), "below port", "endPort below port"),
        (json!({"port": "http", "endPort": 90}), "named port", "endPort with a named port"),
        (json!({"endPort": 90}), "needs a numeric port", "endPort alone"),
        (json!({"port": 0}), "not a port number", "port 0"),
        (json!({"port": 65536}), "not a port number", "port above 65535"),
        (json!({"port": 80, "endPort": 70000}), "endPort", "endPort above 65535"),
        (json!({"port": 80, "protocol": "tcp"}), "unknown protocol", "protocol is case-sensitive"),
        (json!({"port": 80, "protocol": "ICMP"}), "unknown protocol", "ICMP is not a port protocol"),
        (json!({"port": "80"}), "not a valid port name", "a number in a string is not a name"),
        (json!({"port": "HTTP"}), "not a valid port name", "names are lowercase"),
        (json!({"port": "a-very-long-port-name"}), "not a valid port name", "names are at most 15 characters"),
    ];
    for (port, text, why) in rows {
        let reason = invalid_reason(json!({"ingress": [{"ports": [port]}]}))
            .unwrap_or_else(|| panic!("{why}: accepted"));
        assert!(reason.contains(text), "{why}: {reason}");
    }
}

#[test]
fn policy_types() {
    let dirs = |spec: Value| {
        let p = policy_with(spec);
        (p.directions.ingress, p.directions.egress)
    };
    assert_eq!(dirs(json!({})), (true, false), "absent: Ingress");
    assert_eq!(
        dirs(json!({"egress": []})),
        (true, true),
        "egress present, even empty: Ingress and Egress"
    );
    assert_eq!(
        dirs(json!({"policyTypes": []})),
        (true, false),
        "empty list is absent"
    );
    assert_eq!(
        dirs(json!({"policyTypes": ["Egress"], "ingress": [{}]})),
        (false, true),
        "explicit Egress only"
    );
    assert!(invalid_reason(json!({"policyTypes": ["Sideways"]})).is_some_and(|r| r.contains("Sideways")));
    assert_eq!(
        dirs(json!({"policyTypes": ["Sideways"]})),
        (true, true),
        "an unknown type isolates both ways"
    );
}
