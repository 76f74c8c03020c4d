//! Lowering: Kubernetes API objects in, model types out. The only module that sees `k8s_openapi`.
//!
//! Policies are validated here, once: a policy that breaks a rule of the API (SPEC 2.6 to 2.8)
//! becomes [`PolicyBody::Invalid`] with the reason, which still isolates what it selects.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1 as k8s_core;
use k8s_openapi::api::networking::v1 as k8s_net;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as k8s_meta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::diagnostic::Diagnostic;
use crate::model::{
    ContainerPort, Directions, IpBlock, Labels, Namespace, NamespaceScope, Node, ObjectKey, Peer, Phase, Pod,
    Policy, PolicyBody, PortMatch, PortSpec, Protocol, Rule, Snapshot,
};
use crate::selector::{Selector, SelectorError};

/// Where a pod without `spec.nodeName` is placed (SPEC 1).
pub const DEFAULT_NODE: &str = "node-1";

/// Lowers whole lists of objects into a snapshot. Objects that cannot be lowered are reported and
/// left out; invalid policies are kept (they isolate) and reported.
pub fn snapshot(
    namespaces: &[k8s_core::Namespace],
    pods: &[k8s_core::Pod],
    policies: &[k8s_net::NetworkPolicy],
    nodes: &[k8s_core::Node],
) -> (Snapshot, Vec<Diagnostic>) {
    let mut snap = Snapshot::default();
    let mut diags = Vec::new();
    for ns in namespaces {
        match namespace(ns) {
            Ok(ns) => {
                snap.namespaces.insert(ns.name.clone(), ns);
            }
            Err(d) => diags.push(d),
        }
    }
    for node in nodes {
        match self::node(node) {
            Ok((node, mut warnings)) => {
                diags.append(&mut warnings);
                snap.nodes.insert(node.name.clone(), node);
            }
            Err(d) => diags.push(d),
        }
    }
    for p in pods {
        match pod(p) {
            Ok((pod, mut warnings)) => {
                diags.append(&mut warnings);
                snap.pods.insert(pod.key.clone(), pod);
            }
            Err(d) => diags.push(d),
        }
    }
    for p in policies {
        match policy(p) {
            Ok(policy) => {
                if let PolicyBody::Invalid { reason } = &policy.body {
                    diags.push(Diagnostic::invalid_policy(&policy.key, reason));
                }
                snap.policies.insert(policy.key.clone(), policy);
            }
            Err(d) => diags.push(d),
        }
    }
    (snap, diags)
}

fn labels_of(meta: &k8s_meta::ObjectMeta) -> Labels {
    meta.labels.clone().unwrap_or_default().into_iter().collect()
}

fn key_of(kind: &str, meta: &k8s_meta::ObjectMeta) -> Result<ObjectKey, Diagnostic> {
    let name = meta.name.clone().unwrap_or_default();
    if name.is_empty() {
        return Err(Diagnostic::new(kind, "<unnamed>", "metadata.name is missing"));
    }
    let namespace = meta.namespace.clone().unwrap_or_else(|| "default".to_string());
    Ok(ObjectKey::new(namespace, name))
}

pub fn namespace(ns: &k8s_core::Namespace) -> Result<Namespace, Diagnostic> {
    match ns.metadata.name.as_deref() {
        Some(name) if !name.is_empty() => Ok(Namespace::new(name, labels_of(&ns.metadata))),
        _ => Err(Diagnostic::new(
            "Namespace",
            "<unnamed>",
            "metadata.name is missing",
        )),
    }
}

pub fn node(node: &k8s_core::Node) -> Result<(Node, Vec<Diagnostic>), Diagnostic> {
    let name = match node.metadata.name.as_deref() {
        Some(name) if !name.is_empty() => name.to_string(),
        _ => return Err(Diagnostic::new("Node", "<unnamed>", "metadata.name is missing")),
    };
    let mut diags = Vec::new();
    let mut addrs = Vec::new();
    let mut internal_ips = Vec::new();
    let listed = node.status.as_ref().and_then(|s| s.addresses.as_ref());
    for a in listed.into_iter().flatten() {
        if a.type_ != "InternalIP" && a.type_ != "ExternalIP" {
            continue;
        }
        match a.address.parse::<IpAddr>() {
            Ok(ip) => {
                if a.type_ == "InternalIP" && !internal_ips.contains(&ip) && !ip.is_loopback() {
                    internal_ips.push(ip);
                }
                if !addrs.contains(&ip) {
                    addrs.push(ip);
                }
            }
            Err(_) => diags.push(Diagnostic::new(
                "Node",
                &name,
                &format!("ignoring address {:?}: not an IP address", a.address),
            )),
        }
    }
    let spec = node.spec.clone().unwrap_or_default();
    let cidr_texts = match spec.pod_cidrs {
        Some(list) if !list.is_empty() => list,
        _ => spec.pod_cidr.into_iter().collect(),
    };
    let mut pod_cidrs = Vec::new();
    for t in cidr_texts {
        match t.parse::<IpNet>() {
            Ok(net) => pod_cidrs.push(net.trunc()),
            Err(_) => diags.push(Diagnostic::new(
                "Node",
                &name,
                &format!("ignoring spec.podCIDRs entry {t:?}: not a CIDR"),
            )),
        }
    }
    Ok((
        Node {
            name,
            addrs,
            internal_ips,
            pod_cidrs,
        },
        diags,
    ))
}

fn phase(text: Option<&str>) -> Phase {
    match text {
        Some("Pending") => Phase::Pending,
        Some("Running") => Phase::Running,
        Some("Succeeded") => Phase::Succeeded,
        Some("Failed") => Phase::Failed,
        // A pod with no status yet is treated as running once it has addresses.
        None => Phase::Running,
        Some(_) => Phase::Unknown,
    }
}

pub fn pod(p: &k8s_core::Pod) -> Result<(Pod, Vec<Diagnostic>), Diagnostic> {
    let key = key_of("Pod", &p.metadata)?;
    let object = key.to_string();
    let mut diags = Vec::new();
    let spec = p.spec.as_ref();
    let status = p.status.as_ref();

    let mut ips = Vec::new();
    let listed: Vec<&str> = match status.and_then(|s| s.pod_ips.as_ref()) {
        Some(list) if !list.is_empty() => list.iter().map(|ip| ip.ip.as_str()).collect(),
        _ => status.and_then(|s| s.pod_ip.as_deref()).into_iter().collect(),
    };
    for text in listed {
        match text.parse::<IpAddr>() {
            Ok(ip) if !ips.contains(&ip) => ips.push(ip),
            Ok(_) => {}
            Err(_) => diags.push(Diagnostic::new(
                "Pod",
                &object,
                &format!("ignoring pod IP {text:?}: not an IP address"),
            )),
        }
    }

    let mut ports = Vec::new();
    if let Some(spec) = spec {
        let sidecars = spec
            .init_containers
            .iter()
            .flatten()
            .filter(|c| c.restart_policy.as_deref() == Some("Always"));
        for c in spec.containers.iter().chain(sidecars) {
            for cp in c.ports.iter().flatten() {
                let protocol = cp.protocol.as_deref().unwrap_or("TCP");
                let (Some(protocol), Ok(number)) =
                    (Protocol::parse(protocol), u16::try_from(cp.container_port))
                else {
                    diags.push(Diagnostic::new(
                        "Pod",
                        &object,
                        &format!(
                            "ignoring container port {} {:?} of container {:?}",
                            cp.container_port, protocol, c.name
                        ),
                    ));
                    continue;
                };
                if number == 0 {
                    continue;
                }
                ports.push(ContainerPort {
                    name: cp.name.clone().filter(|n| !n.is_empty()),
                    number,
                    protocol,
                });
            }
        }
    }

    let pod = Pod {
        labels: labels_of(&p.metadata),
        node: spec
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| DEFAULT_NODE.to_string()),
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
        phase: phase(status.and_then(|s| s.phase.as_deref())),
        ips,
        ports,
        key,
    };
    Ok((pod, diags))
}

fn selector(sel: &k8s_meta::LabelSelector) -> Result<Selector, SelectorError> {
    let labels = sel
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.as_str()));
    let exprs = sel
        .match_expressions
        .iter()
        .flatten()
        .map(|e| (e.key.as_str(), e.operator.as_str(), e.values.as_deref()));
    Selector::parse(labels, exprs)
}

/// Lowers a policy. `Err` only when it cannot be identified; an invalid spec gives `Ok` with an
/// invalid body, which still isolates (SPEC 2.17).
pub fn policy(p: &k8s_net::NetworkPolicy) -> Result<Policy, Diagnostic> {
    let key = key_of("NetworkPolicy", &p.metadata)?;
    let default_spec = k8s_net::NetworkPolicySpec::default();
    let spec = p.spec.as_ref().unwrap_or(&default_spec);

    let mut problems = Vec::new();
    let pod_selector = match spec.pod_selector.as_ref().map(selector).transpose() {
        Ok(sel) => sel.unwrap_or_else(Selector::everything),
        Err(e) => {
            problems.push(format!(
                "spec.podSelector: {e} (the policy now isolates every pod of its namespace)"
            ));
            Selector::everything()
        }
    };
    let directions = match directions(spec) {
        Ok(d) => d,
        Err(e) => {
            problems.push(e);
            Directions {
                ingress: true,
                egress: true,
            }
        }
    };
    let ingress = rules(
        spec.ingress
            .iter()
            .flatten()
            .map(|r| (r.from.as_deref(), r.ports.as_deref())),
        "ingress",
        "from",
        &key.namespace,
        &mut problems,
    );
    let egress = rules(
        spec.egress
            .iter()
            .flatten()
            .map(|r| (r.to.as_deref(), r.ports.as_deref())),
        "egress",
        "to",
        &key.namespace,
        &mut problems,
    );

    let body = if problems.is_empty() {
        PolicyBody::Valid { ingress, egress }
    } else {
        PolicyBody::Invalid {
            reason: problems.join("; "),
        }
    };
    Ok(Policy {
        key,
        pod_selector,
        directions,
        body,
    })
}

/// The effective `policyTypes` (SPEC 2.2).
fn directions(spec: &k8s_net::NetworkPolicySpec) -> Result<Directions, String> {
    match spec.policy_types.as_deref() {
        None | Some([]) => Ok(Directions {
            ingress: true,
            egress: spec.egress.is_some(),
        }),
        Some(types) => {
            let mut d = Directions {
                ingress: false,
                egress: false,
            };
            for t in types {
                match t.as_str() {
                    "Ingress" => d.ingress = true,
                    "Egress" => d.egress = true,
                    other => {
                        return Err(format!(
                        "spec.policyTypes: unknown type {other:?} (the policy now isolates both directions)"
                    ))
                    }
                }
            }
            Ok(d)
        }
    }
}

fn rules<'a>(
    raw: impl Iterator<
        Item = (
            Option<&'a [k8s_net::NetworkPolicyPeer]>,
            Option<&'a [k8s_net::NetworkPolicyPort]>,
        ),
    >,
    direction: &str,
    peers_field: &str,
    namespace: &str,
    problems: &mut Vec<String>,
) -> Vec<Rule> {
    let mut out = Vec::new();
    for (i, (peers, ports)) in raw.enumerate() {
        let peers = match peers {
            None | Some([]) => None,
            Some(list) => Some(
                list.iter()
                    .enumerate()
                    .filter_map(|(j, p)| {
                        peer(p, namespace)
                            .map_err(|e| {
                                problems.push(format!("spec.{direction}[{i}].{peers_field}[{j}]: {e}"))
                            })
                            .ok()
                    })
                    .collect(),
            ),
        };
        let ports = match ports {
            None | Some([]) => None,
            Some(list) => Some(
                list.iter()
                    .enumerate()
                    .filter_map(|(j, p)| {
                        port(p)
                            .map_err(|e| problems.push(format!("spec.{direction}[{i}].ports[{j}]: {e}")))
                            .ok()
                    })
                    .collect(),
            ),
        };
        out.push(Rule { peers, ports });
    }
    out
}

fn peer(p: &k8s_net::NetworkPolicyPeer, namespace: &str) -> Result<Peer, String> {
    match (&p.ip_block, &p.namespace_selector, &p.pod_selector) {
        (Some(block), None, None) => ip_block(block).map(Peer::IpBlock),
        (Some(_), _, _) => {
            Err("ipBlock cannot be combined with podSelector or namespaceSelector".to_string())
        }
        (None, None, None) => Err("a peer must set podSelector, namespaceSelector or ipBlock".to_string()),
        (None, ns, pods) => {
            let namespaces = match ns {
                None => NamespaceScope::Named(namespace.to_string()),
                Some(sel) => {
                    NamespaceScope::Selected(selector(sel).map_err(|e| format!("namespaceSelector: {e}"))?)
                }
            };
            let pods = match pods {
                None => Selector::everything(),
                Some(sel) => selector(sel).map_err(|e| format!("podSelector: {e}"))?,
            };
            Ok(Peer::Pods { namespaces, pods })
        }
    }
}

/// Parses a CIDR as the API does: host bits are allowed and dropped.
fn cidr(text: &str) -> Result<IpNet, String> {
    text.trim()
        .parse::<IpNet>()
        .map(|net| net.trunc())
        .map_err(|_| format!("{text:?} is not a CIDR"))
}

fn ip_block(block: &k8s_net::IPBlock) -> Result<IpBlock, String> {
    let net = cidr(&block.cidr).map_err(|e| format!("ipBlock.cidr: {e}"))?;
    let mut except = BTreeSet::new();
    for (k, text) in block.except.iter().flatten().enumerate() {
        let e = cidr(text).map_err(|e| format!("ipBlock.except[{k}]: {e}"))?;
        let same_family = matches!(
            (net, e),
            (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_))
        );
        if !same_family {
            return Err(format!(
                "ipBlock.except[{k}]: {text:?} is not of the family of cidr {net}"
            ));
        }
        if !(net.contains(&e) && e.prefix_len() > net.prefix_len()) {
            return Err(format!(
                "ipBlock.except[{k}]: {text:?} must be a strict subset of cidr {net}"
            ));
        }
        except.insert(e);
    }
    Ok(IpBlock {
        cidr: net,
        except: except.into_iter().collect(),
    })
}

/// An IANA service name, as container port names must be: 1 to 15 lowercase letters, digits and
/// inner single hyphens, with at least one letter.
fn is_port_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 15
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.iter().any(|b| b.is_ascii_lowercase())
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
        && !name.contains("--")
}

fn port(p: &k8s_net::NetworkPolicyPort) -> Result<PortSpec, String> {
    let protocol_text = p.protocol.as_deref().unwrap_or("TCP");
    let protocol =
        Protocol::parse(protocol_text).ok_or_else(|| format!("unknown protocol {protocol_text:?}"))?;
    let port = match (&p.port, p.end_port) {
        (None, None) => PortMatch::All,
        (None, Some(_)) => return Err("endPort needs a numeric port".to_string()),
        (Some(IntOrString::String(name)), None) if is_port_name(name) => PortMatch::Named(name.clone()),
        (Some(IntOrString::String(name)), None) => return Err(format!("{name:?} is not a valid port name")),
        (Some(IntOrString::String(_)), Some(_)) => {
            return Err("endPort cannot be used with a named port".to_string())
        }
        (Some(IntOrString::Int(first)), end) => {
            let first = port_number(*first)?;
            let last = match end {
                None => first,
                Some(end) => port_number(end).map_err(|e| format!("endPort: {e}"))?,
            };
            if last < first {
                return Err(format!("endPort {last} is below port {first}"));
            }
            PortMatch::Range { first, last }
        }
    };
    Ok(PortSpec { protocol, port })
}

fn port_number(n: i32) -> Result<u16, String> {
    match u16::try_from(n) {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("{n} is not a port number (1 to 65535)")),
    }
}
