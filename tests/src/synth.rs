//! Synthetic clusters for benchmarks: deterministic, of a given size, with label and selector
//! distributions shaped like real ones.
//!
//! Shape: one namespace per 150 pods, each with 8 apps (deployments) in tiers; pods carry
//! `app`, `tier`, `env`, `version` and a per-deployment `pod-template-hash`; namespaces carry
//! `team` (one of 40) and `env`. 110 pods per node. Policies, spread over namespaces:
//! 15% default-deny (some with egress), 45% app-to-app on a port or a named port, 20% from a
//! team's namespaces, 10% DNS and internet egress, 10% from CIDRs.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use policy_compiler::model::{
    ContainerPort, Directions, IpBlock, Labels, Namespace, NamespaceScope, Node, ObjectKey, Peer, Phase, Pod,
    Policy, PolicyBody, PortMatch, PortSpec, Rule,
};
use policy_compiler::selector::Selector;
use policy_compiler::{Protocol, Snapshot};

pub const PODS_PER_NODE: usize = 110;
const APPS_PER_NAMESPACE: usize = 8;
const TIERS: [&str; 4] = ["web", "api", "db", "cache"];
const ENVS: [&str; 3] = ["prod", "staging", "dev"];

/// A small deterministic generator (xorshift64*), so runs are comparable.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

fn sel(pairs: &[(&str, &str)]) -> Selector {
    let pairs: Vec<(&str, &str)> = pairs.to_vec();
    Selector::parse(pairs, []).expect("synthetic selectors are valid")
}

pub fn n_namespaces(n_pods: usize) -> usize {
    (n_pods / 150).max(4)
}

pub fn node_name(i: usize) -> String {
    format!("node-{i}")
}

fn pod_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0A00_0000u32 + i as u32 + 2))
}

/// One pod of the synthetic cluster; `generation` varies its labels for relabelling benchmarks.
pub fn pod(i: usize, n_pods: usize, generation: usize) -> Pod {
    let n_ns = n_namespaces(n_pods);
    let ns = i % n_ns;
    let app = (i / n_ns + generation) % APPS_PER_NAMESPACE;
    let labels: Labels = [
        ("app", format!("app-{app}")),
        ("tier", TIERS[app % TIERS.len()].to_string()),
        ("env", ENVS[ns % ENVS.len()].to_string()),
        ("version", format!("v{}", (i + generation) % 3)),
        ("pod-template-hash", format!("{:08x}", (ns * 31 + app) * 7919)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Pod {
        key: ObjectKey::new(format!("ns-{ns}"), format!("app-{app}-{i}")),
        labels,
        node: node_name(i / PODS_PER_NODE),
        host_network: false,
        phase: Phase::Running,
        ips: vec![pod_ip(i)],
        ports: vec![
            ContainerPort {
                name: Some("http".into()),
                number: 8080 + (app % 2) as u16,
                protocol: Protocol::Tcp,
            },
            ContainerPort {
                name: Some("metrics".into()),
                number: 9090,
                protocol: Protocol::Tcp,
            },
        ],
    }
}

fn ports(specs: &[(Protocol, PortMatch)]) -> Option<Vec<PortSpec>> {
    Some(
        specs
            .iter()
            .map(|(protocol, port)| PortSpec {
                protocol: *protocol,
                port: port.clone(),
            })
            .collect(),
    )
}

fn single(n: u16) -> PortMatch {
    PortMatch::Range { first: n, last: n }
}

/// Policy number `i` of the synthetic cluster.
pub fn policy(i: usize, n_pods: usize, rng: &mut Rng) -> Policy {
    let n_ns = n_namespaces(n_pods);
    let ns = format!("ns-{}", rng.below(n_ns));
    let app = |rng: &mut Rng| format!("app-{}", rng.below(APPS_PER_NAMESPACE));
    let roll = rng.below(100);
    let both = Directions {
        ingress: true,
        egress: true,
    };
    let ingress_only = Directions {
        ingress: true,
        egress: false,
    };
    let (pod_selector, directions, ingress, egress) = match roll {
        0..=14 => {
            let d = if roll < 5 { both } else { ingress_only };
            (Selector::everything(), d, vec![], vec![])
        }
        15..=59 => {
            let port = if roll.is_multiple_of(2) {
                single(8080)
            } else {
                PortMatch::Named("http".into())
            };
            let rule = Rule {
                peers: Some(vec![Peer::Pods {
                    namespaces: NamespaceScope::Named(ns.clone()),
                    pods: sel(&[("app", &app(rng))]),
                }]),
                ports: ports(&[(Protocol::Tcp, port)]),
            };
            (sel(&[("app", &app(rng))]), ingress_only, vec![rule], vec![])
        }
        60..=79 => {
            let team = format!("team-{}", rng.below(40));
            let rule = Rule {
                peers: Some(vec![Peer::Pods {
                    namespaces: NamespaceScope::Selected(sel(&[("team", &team)])),
                    pods: sel(&[("tier", TIERS[rng.below(TIERS.len())])]),
                }]),
                ports: ports(&[(Protocol::Tcp, PortMatch::Named("metrics".into()))]),
            };
            (
                sel(&[("tier", TIERS[rng.below(TIERS.len())])]),
                ingress_only,
                vec![rule],
                vec![],
            )
        }
        80..=89 => {
            let dns = Rule {
                peers: Some(vec![Peer::Pods {
                    namespaces: NamespaceScope::Selected(sel(&[("kubernetes.io/metadata.name", "ns-0")])),
                    pods: sel(&[("app", "app-0")]),
                }]),
                ports: ports(&[(Protocol::Udp, single(53)), (Protocol::Tcp, single(53))]),
            };
            let internet = Rule {
                peers: Some(vec![Peer::IpBlock(IpBlock {
                    cidr: "0.0.0.0/0".parse::<IpNet>().unwrap(),
                    except: vec!["10.0.0.0/8".parse().unwrap()],
                })]),
                ports: ports(&[(Protocol::Tcp, single(443))]),
            };
            (
                sel(&[("app", &app(rng))]),
                Directions {
                    ingress: false,
                    egress: true,
                },
                vec![],
                vec![dns, internet],
            )
        }
        _ => {
            let cidr = format!("192.168.{}.0/24", rng.below(256));
            let rule = Rule {
                peers: Some(vec![Peer::IpBlock(IpBlock {
                    cidr: cidr.parse().unwrap(),
                    except: vec![],
                })]),
                ports: None,
            };
            (sel(&[("app", &app(rng))]), ingress_only, vec![rule], vec![])
        }
    };
    Policy {
        key: ObjectKey::new(ns, format!("policy-{i}")),
        pod_selector,
        directions,
        body: PolicyBody::Valid { ingress, egress },
    }
}

pub fn namespace(i: usize) -> Namespace {
    let labels: Labels = [
        ("team".to_string(), format!("team-{}", i % 40)),
        ("env".to_string(), ENVS[i % ENVS.len()].to_string()),
    ]
    .into_iter()
    .collect();
    Namespace::new(format!("ns-{i}"), labels)
}

/// A cluster of `n_pods` pods and `n_policies` policies, the same for the same arguments.
pub fn cluster(n_pods: usize, n_policies: usize) -> Snapshot {
    let mut rng = Rng::new(n_pods as u64 * 1_000_003 + n_policies as u64);
    let namespaces = (0..n_namespaces(n_pods))
        .map(|i| (format!("ns-{i}"), namespace(i)))
        .collect();
    let pods = (0..n_pods)
        .map(|i| pod(i, n_pods, 0))
        .map(|p| (p.key.clone(), p))
        .collect();
    let policies = (0..n_policies)
        .map(|i| policy(i, n_pods, &mut rng))
        .map(|p| (p.key.clone(), p))
        .collect();
    let n_nodes = n_pods.div_ceil(PODS_PER_NODE);
    let nodes: BTreeMap<String, Node> = (0..n_nodes)
        .map(|i| {
            let addr = IpAddr::V4(Ipv4Addr::new(172, 16 + (i >> 16) as u8, (i >> 8) as u8, i as u8));
            (node_name(i), Node::with_addrs(node_name(i), vec![addr]))
        })
        .collect();
    Snapshot {
        namespaces,
        pods,
        policies,
        nodes,
        ..Snapshot::default()
    }
}

/// A cluster whose node `node-0` holds `n_local` pods that accept traffic from every pod of the
/// cluster (one `namespaceSelector: {}` peer) on a named port: its table holds about
/// `n_pods` set elements. For programming benchmarks, where size is the variable.
pub fn flat(n_pods: usize, n_local: usize) -> Snapshot {
    let mut snap = cluster(n_pods, 0);
    let local_ns = "ns-0";
    for (i, pod) in snap.pods.values_mut().enumerate() {
        pod.node = if i < n_local {
            node_name(0)
        } else {
            node_name(1 + i % 50)
        };
        if i < n_local {
            pod.key.namespace = local_ns.to_string();
        }
    }
    snap.pods = snap.pods.into_values().map(|p| (p.key.clone(), p)).collect();
    let policy = Policy {
        key: ObjectKey::new(local_ns, "from-everyone-on-http"),
        pod_selector: Selector::everything(),
        directions: Directions {
            ingress: true,
            egress: false,
        },
        body: PolicyBody::Valid {
            ingress: vec![Rule {
                peers: Some(vec![Peer::Pods {
                    namespaces: NamespaceScope::Selected(Selector::everything()),
                    pods: Selector::everything(),
                }]),
                ports: ports(&[(Protocol::Tcp, PortMatch::Named("http".into()))]),
            }],
            egress: vec![],
        },
    };
    snap.policies.insert(policy.key.clone(), policy);
    snap
}

/// A cluster file (YAML) with one policy that has many peers and many ports: pod `ns-0/server`
/// on `node-0` at `server` accepts TCP from `n_peers` pod selectors (`app: peer-<i>`, each
/// matching one pod; the last matches pod `ns-0/client` at `client`) on `n_ports` ports, spaced
/// apart so no two merge into a range, the last of them `client_port`. With 300 and 300 it is
/// about 21 KB: the policy whose cross product of rules (180,000 in one chain) took a minute to
/// apply before rules looked peers and ports up in sets.
pub fn wide_policy_yaml(
    n_peers: usize,
    n_ports: usize,
    server: Ipv4Addr,
    client: Ipv4Addr,
    client_port: u16,
) -> String {
    let pod = |name: &str, app: &str, addr: Ipv4Addr| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: ns-0, labels: {{app: {app}}}}}\n\
             spec: {{nodeName: node-0, containers: [{{name: main}}]}}\nstatus: {{podIPs: [{{ip: \"{addr}\"}}]}}\n"
        )
    };
    let mut out = String::from("apiVersion: v1\nkind: Namespace\nmetadata: {name: ns-0}\n");
    out.push_str(&pod("server", "server", server));
    out.push_str(&pod("client", &format!("peer-{}", n_peers - 1), client));
    for i in 0..n_peers - 1 {
        let addr = Ipv4Addr::new(10, 245, (i / 250) as u8, (i % 250 + 1) as u8);
        out.push_str(&pod(&format!("peer-{i}"), &format!("peer-{i}"), addr));
    }
    out.push_str(
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: wide, namespace: ns-0}\n\
         spec:\n  podSelector: {matchLabels: {app: server}}\n  ingress:\n  - from:\n",
    );
    for i in 0..n_peers {
        out.push_str(&format!(
            "    - podSelector: {{matchLabels: {{app: peer-{i}}}}}\n"
        ));
    }
    out.push_str("    ports:\n");
    for i in 0..n_ports - 1 {
        out.push_str(&format!("    - port: {}\n", 1000 + 3 * i));
    }
    out.push_str(&format!("    - port: {client_port}\n"));
    out
}
