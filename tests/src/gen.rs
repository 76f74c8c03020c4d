//! Random clusters for property tests: 1 to 3 nodes, 2 to 4 namespaces, up to 30 pods (some
//! dual-stack, some hostNetwork, some not running, with varied named ports) and up to 10
//! policies with random selectors, peers, ipBlocks and ports, a few of them invalid.
//!
//! Clusters are built as Kubernetes API objects and lowered, so lowering is exercised too.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1 as k8s_core;
use k8s_openapi::api::networking::v1 as k8s_net;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as k8s_meta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use policy_compiler::{lower, Compiler, Diagnostic, Flow, Protocol, Snapshot, L4};
use proptest::prelude::*;
use proptest::sample::select;

/// A generated cluster, as API objects.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub namespaces: Vec<k8s_core::Namespace>,
    pub nodes: Vec<k8s_core::Node>,
    pub pods: Vec<k8s_core::Pod>,
    pub policies: Vec<k8s_net::NetworkPolicy>,
}

impl Cluster {
    pub fn lower(&self) -> (Snapshot, Vec<Diagnostic>) {
        lower::snapshot(&self.namespaces, &self.pods, &self.policies, &self.nodes)
    }
}

const LABEL_KEYS: [&str; 3] = ["app", "tier", "env"];
const LABEL_VALUES: [&str; 3] = ["a", "b", "c"];
const PORT_NAMES: [&str; 3] = ["http", "metrics", "dns"];
const PORT_NUMBERS: [u16; 4] = [80, 81, 53, 8080];
/// The ports that flows are probed on: the ones policies use, and one none does.
pub const PROBE_PORTS: [u16; 5] = [80, 81, 53, 8080, 9999];

pub fn node_addrs(index: usize) -> Vec<IpAddr> {
    vec![
        format!("172.31.0.{}", index + 1).parse().unwrap(),
        format!("fd00:31::{}", index + 1).parse().unwrap(),
    ]
}

/// Addresses outside every node and pod range, that ipBlocks do and do not cover.
pub fn external_addrs() -> Vec<IpAddr> {
    ["203.0.113.9", "10.245.0.1", "2001:db8::9", "fd00:10:245::1"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect()
}

fn labels(pairs: &[(usize, usize)], keys: &[&str], values: &[&str]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                keys[*k % keys.len()].to_string(),
                values[*v % values.len()].to_string(),
            )
        })
        .collect()
}

fn selector_strategy() -> impl Strategy<Value = k8s_meta::LabelSelector> {
    let label_pairs = prop::collection::vec((0..3usize, 0..3usize), 0..=2);
    let expr = prop::option::weighted(
        0.4,
        (
            0..3usize,
            select(vec!["In", "NotIn", "Exists", "DoesNotExist", "Bogus"]),
            prop::collection::vec(0..3usize, 0..=2),
        ),
    );
    (label_pairs, expr).prop_map(|(pairs, expr)| {
        let match_labels = labels(&pairs, &LABEL_KEYS, &LABEL_VALUES);
        let match_expressions = expr.map(|(k, op, values)| {
            // Mostly well formed: In/NotIn get values, Exists/DoesNotExist none; a few are not.
            let needs = matches!(op, "In" | "NotIn");
            let vals: Vec<String> = values.iter().map(|v| LABEL_VALUES[*v].to_string()).collect();
            // Two values on Exists/DoesNotExist, or none on In/NotIn, make the policy invalid.
            let vals = if needs || vals.len() == 2 {
                Some(vals)
            } else {
                None
            };
            vec![k8s_meta::LabelSelectorRequirement {
                key: LABEL_KEYS[k].to_string(),
                operator: op.to_string(),
                values: vals,
            }]
        });
        k8s_meta::LabelSelector {
            match_labels: if match_labels.is_empty() {
                None
            } else {
                Some(match_labels)
            },
            match_expressions,
        }
    })
}

fn ns_selector_strategy() -> impl Strategy<Value = k8s_meta::LabelSelector> {
    prop::collection::vec((0..2usize, 0..2usize), 0..=1).prop_map(|pairs| k8s_meta::LabelSelector {
        match_labels: Some(labels(&pairs, &["team", "env"], &["x", "prod"])),
        match_expressions: None,
    })
}

fn ip_block_strategy() -> impl Strategy<Value = k8s_net::IPBlock> {
    select(vec![
        ("10.244.0.0/16", vec!["10.244.1.0/24"]),
        ("10.244.0.0/24", vec![]),
        ("10.244.0.4/30", vec![]),
        ("10.244.2.7/32", vec![]),
        ("172.31.0.0/24", vec![]),
        ("0.0.0.0/0", vec!["10.244.0.0/16"]),
        ("fd00:10:244::/48", vec!["fd00:10:244:1::/64"]),
        ("::/0", vec![]),
        ("203.0.113.0/24", vec![]),
        ("10.244.0.0/16", vec!["10.245.0.0/24"]),
        ("10.244.0.0/33", vec![]),
    ])
    .prop_map(|(cidr, except)| k8s_net::IPBlock {
        cidr: cidr.to_string(),
        except: if except.is_empty() {
            None
        } else {
            Some(except.iter().map(|e| e.to_string()).collect())
        },
    })
}

fn peer_strategy() -> impl Strategy<Value = k8s_net::NetworkPolicyPeer> {
    prop_oneof![
        3 => selector_strategy().prop_map(|s| k8s_net::NetworkPolicyPeer { pod_selector: Some(s), ..Default::default() }),
        2 => ns_selector_strategy().prop_map(|s| k8s_net::NetworkPolicyPeer { namespace_selector: Some(s), ..Default::default() }),
        2 => (ns_selector_strategy(), selector_strategy()).prop_map(|(n, p)| k8s_net::NetworkPolicyPeer {
            namespace_selector: Some(n),
            pod_selector: Some(p),
            ..Default::default()
        }),
        2 => ip_block_strategy().prop_map(|b| k8s_net::NetworkPolicyPeer { ip_block: Some(b), ..Default::default() }),
    ]
}

fn port_strategy() -> impl Strategy<Value = k8s_net::NetworkPolicyPort> {
    let protocol = prop::option::weighted(0.6, select(vec!["TCP", "UDP", "SCTP"]));
    let port = prop_oneof![
        1 => Just((None, None)),
        4 => select(PORT_NUMBERS.to_vec()).prop_map(|n| (Some(IntOrString::Int(i32::from(n))), None)),
        3 => select(PORT_NAMES.to_vec()).prop_map(|n| (Some(IntOrString::String(n.to_string())), None)),
        1 => Just((Some(IntOrString::Int(80)), Some(81))),
        1 => Just((Some(IntOrString::Int(8080)), Some(8000))),
    ];
    (protocol, port).prop_map(|(protocol, (port, end_port))| k8s_net::NetworkPolicyPort {
        protocol: protocol.map(str::to_string),
        port,
        end_port,
    })
}

type RawRule = (
    Option<Vec<k8s_net::NetworkPolicyPeer>>,
    Option<Vec<k8s_net::NetworkPolicyPort>>,
);

fn rule_strategy() -> impl Strategy<Value = RawRule> {
    (
        prop::option::weighted(0.8, prop::collection::vec(peer_strategy(), 0..=3)),
        prop::option::weighted(0.7, prop::collection::vec(port_strategy(), 0..=3)),
    )
}

fn policy_strategy(namespaces: Vec<String>) -> impl Strategy<Value = k8s_net::NetworkPolicy> {
    (
        select(namespaces),
        prop::option::weighted(0.9, selector_strategy()),
        select(vec![
            None,
            Some(vec!["Ingress"]),
            Some(vec!["Egress"]),
            Some(vec!["Ingress", "Egress"]),
        ]),
        prop::option::weighted(0.8, prop::collection::vec(rule_strategy(), 0..=3)),
        prop::option::weighted(0.5, prop::collection::vec(rule_strategy(), 0..=3)),
    )
        .prop_map(
            |(namespace, pod_selector, types, ingress, egress)| k8s_net::NetworkPolicy {
                metadata: k8s_meta::ObjectMeta {
                    namespace: Some(namespace),
                    ..Default::default()
                },
                spec: Some(k8s_net::NetworkPolicySpec {
                    pod_selector,
                    policy_types: types.map(|t| t.iter().map(|s| s.to_string()).collect()),
                    ingress: ingress.map(|rules| {
                        rules
                            .into_iter()
                            .map(|(from, ports)| k8s_net::NetworkPolicyIngressRule { from, ports })
                            .collect()
                    }),
                    egress: egress.map(|rules| {
                        rules
                            .into_iter()
                            .map(|(to, ports)| k8s_net::NetworkPolicyEgressRule { to, ports })
                            .collect()
                    }),
                }),
            },
        )
}

#[derive(Clone, Debug)]
struct PodDraw {
    namespace: usize,
    node: usize,
    labels: Vec<(usize, usize)>,
    dual_stack: bool,
    host_network: bool,
    phase: &'static str,
    ports: Vec<(usize, usize, bool, bool)>,
    no_address: bool,
}

fn pod_strategy() -> impl Strategy<Value = PodDraw> {
    (
        0..4usize,
        0..3usize,
        prop::collection::vec((0..3usize, 0..3usize), 0..=3),
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.1),
        select(vec![
            "Running",
            "Running",
            "Running",
            "Running",
            "Running",
            "Running",
            "Pending",
            "Succeeded",
            "Failed",
        ]),
        prop::collection::vec(
            (0..3usize, 0..4usize, any::<bool>(), prop::bool::weighted(0.2)),
            0..=3,
        ),
        prop::bool::weighted(0.05),
    )
        .prop_map(
            |(namespace, node, labels, dual_stack, host_network, phase, ports, no_address)| PodDraw {
                namespace,
                node,
                labels,
                dual_stack,
                host_network,
                phase,
                ports,
                no_address,
            },
        )
}

fn build_pod(i: usize, d: &PodDraw, namespaces: &[String], n_nodes: usize) -> k8s_core::Pod {
    let node = d.node % n_nodes;
    let namespace = &namespaces[d.namespace % namespaces.len()];
    let ips: Vec<String> = if d.no_address {
        Vec::new()
    } else if d.host_network {
        node_addrs(node).iter().map(ToString::to_string).collect()
    } else {
        let mut ips = vec![format!("10.244.{node}.{}", i + 2)];
        if d.dual_stack {
            ips.push(format!("fd00:10:244:{node}::{:x}", i + 2));
        }
        ips
    };
    let mut containers = vec![k8s_core::Container {
        name: "main".to_string(),
        ..Default::default()
    }];
    let mut sidecars = vec![];
    for (name, number, udp, in_sidecar) in &d.ports {
        let port = k8s_core::ContainerPort {
            name: Some(PORT_NAMES[*name].to_string()),
            container_port: i32::from(PORT_NUMBERS[*number]),
            protocol: Some(if *udp { "UDP" } else { "TCP" }.to_string()),
            ..Default::default()
        };
        if *in_sidecar {
            sidecars.push(k8s_core::Container {
                name: format!("side-{}", sidecars.len()),
                restart_policy: Some("Always".to_string()),
                ports: Some(vec![port]),
                ..Default::default()
            });
        } else {
            containers[0].ports.get_or_insert_with(Vec::new).push(port);
        }
    }
    k8s_core::Pod {
        metadata: k8s_meta::ObjectMeta {
            name: Some(format!("pod-{i}")),
            namespace: Some(namespace.clone()),
            labels: Some(labels(&d.labels, &LABEL_KEYS, &LABEL_VALUES)),
            ..Default::default()
        },
        spec: Some(k8s_core::PodSpec {
            node_name: Some(format!("node-{node}")),
            host_network: Some(d.host_network),
            containers,
            init_containers: if sidecars.is_empty() { None } else { Some(sidecars) },
            ..Default::default()
        }),
        status: Some(k8s_core::PodStatus {
            phase: Some(d.phase.to_string()),
            pod_ips: Some(ips.into_iter().map(|ip| k8s_core::PodIP { ip }).collect()),
            ..Default::default()
        }),
    }
}

/// A random cluster of the size the issue asks for.
pub fn cluster() -> impl Strategy<Value = Cluster> {
    (
        1..=3usize,
        2..=4usize,
        prop::collection::vec((0..2usize, 0..2usize), 4),
    )
        .prop_flat_map(|(n_nodes, n_namespaces, ns_labels)| {
            let names: Vec<String> = (0..n_namespaces).map(|i| format!("ns-{i}")).collect();
            (
                Just(n_nodes),
                Just(names.clone()),
                Just(ns_labels),
                prop::collection::vec(pod_strategy(), 0..=30),
                prop::collection::vec(policy_strategy(names), 0..=10),
            )
        })
        .prop_map(|(n_nodes, names, ns_labels, pods, policies)| {
            let namespaces = names
                .iter()
                .enumerate()
                .map(|(i, name)| k8s_core::Namespace {
                    metadata: k8s_meta::ObjectMeta {
                        name: Some(name.clone()),
                        labels: Some(labels(&ns_labels[i..=i], &["team", "env"], &["x", "prod"])),
                        ..Default::default()
                    },
                    ..Default::default()
                })
                .collect();
            let nodes = (0..n_nodes)
                .map(|i| k8s_core::Node {
                    metadata: k8s_meta::ObjectMeta {
                        name: Some(format!("node-{i}")),
                        ..Default::default()
                    },
                    status: Some(k8s_core::NodeStatus {
                        addresses: Some(
                            node_addrs(i)
                                .iter()
                                .map(|a| k8s_core::NodeAddress {
                                    type_: "InternalIP".to_string(),
                                    address: a.to_string(),
                                })
                                .collect(),
                        ),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect();
            let pods = pods
                .iter()
                .enumerate()
                .map(|(i, d)| build_pod(i, d, &names, n_nodes))
                .collect();
            let policies = policies
                .into_iter()
                .enumerate()
                .map(|(i, mut p)| {
                    p.metadata.name = Some(format!("pol-{i}"));
                    p
                })
                .collect();
            Cluster {
                namespaces,
                nodes,
                pods,
                policies,
            }
        })
}

/// The transport choices that flows are probed on.
pub fn probe_l4() -> Vec<(Protocol, u16)> {
    let mut out = Vec::new();
    for protocol in Protocol::ALL {
        for port in PROBE_PORTS {
            out.push((protocol, port));
        }
    }
    out
}

/// Every address worth probing: pods' (running or not, hostNetwork or not), nodes', outsiders'.
pub fn addresses(snap: &Snapshot) -> Vec<IpAddr> {
    let mut addrs: Vec<IpAddr> = snap.pods.values().flat_map(|p| p.ips.iter().copied()).collect();
    addrs.extend(snap.nodes.values().flat_map(|n| n.addrs.iter().copied()));
    addrs.extend(external_addrs());
    addrs.sort();
    addrs.dedup();
    addrs
}

pub fn flows(snap: &Snapshot, l4s: &[L4]) -> Vec<Flow> {
    let addrs = addresses(snap);
    let mut out = Vec::new();
    for src in &addrs {
        for dst in addrs.iter().filter(|d| d.is_ipv4() == src.is_ipv4()) {
            for l4 in l4s {
                out.push(Flow {
                    src: *src,
                    dst: *dst,
                    l4: *l4,
                });
            }
        }
    }
    out
}

pub fn l4_strategy() -> impl Strategy<Value = Vec<L4>> {
    let port =
        (select(Protocol::ALL.to_vec()), select(PROBE_PORTS.to_vec())).prop_map(|(p, n)| L4::Port(p, n));
    let icmp = select(vec![8u8, 128, 133, 135, 137, 138]).prop_map(|t| L4::Icmp { type_: t });
    (prop::collection::vec(port, 2), icmp).prop_map(|(mut v, i)| {
        v.push(i);
        v
    })
}

/// One change to a cluster.
#[derive(Clone, Debug)]
pub enum Op {
    ApplyPod(usize),
    DeletePod(usize),
    ApplyPolicy(usize),
    DeletePolicy(usize),
    ApplyNamespace(usize),
    DeleteNamespace(usize),
}

pub fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..64usize).prop_map(Op::ApplyPod),
        2 => (0..64usize).prop_map(Op::DeletePod),
        3 => (0..64usize).prop_map(Op::ApplyPolicy),
        1 => (0..64usize).prop_map(Op::DeletePolicy),
        1 => (0..64usize).prop_map(Op::ApplyNamespace),
        1 => (0..64usize).prop_map(Op::DeleteNamespace),
    ]
}

/// Applies `op`, drawing objects from `next`, to the compiler and to a mirror snapshot.
pub fn apply(op: &Op, next: &Snapshot, mirror: &mut Snapshot, compiler: &mut Compiler) {
    fn nth<K: Clone, V: Clone>(map: &BTreeMap<K, V>, i: usize) -> Option<(K, V)> {
        if map.is_empty() {
            None
        } else {
            map.iter().nth(i % map.len()).map(|(k, v)| (k.clone(), v.clone()))
        }
    }
    match op {
        Op::ApplyPod(i) => {
            if let Some((key, pod)) = nth(&next.pods, *i) {
                mirror.pods.insert(key, pod.clone());
                compiler.apply_pod(pod);
            }
        }
        Op::DeletePod(i) => {
            if let Some((key, _)) = nth(&mirror.pods, *i) {
                mirror.pods.remove(&key);
                compiler.delete_pod(&key);
            }
        }
        Op::ApplyPolicy(i) => {
            if let Some((key, policy)) = nth(&next.policies, *i) {
                mirror.policies.insert(key, policy.clone());
                compiler.apply_policy(policy);
            }
        }
        Op::DeletePolicy(i) => {
            if let Some((key, _)) = nth(&mirror.policies, *i) {
                mirror.policies.remove(&key);
                compiler.delete_policy(&key);
            }
        }
        Op::ApplyNamespace(i) => {
            if let Some((name, ns)) = nth(&next.namespaces, *i) {
                mirror.namespaces.insert(name, ns.clone());
                compiler.apply_namespace(ns);
            }
        }
        Op::DeleteNamespace(i) => {
            if let Some((name, _)) = nth(&mirror.namespaces, *i) {
                mirror.namespaces.remove(&name);
                compiler.delete_namespace(&name);
            }
        }
    }
}
