//! One sandbox run: build the lab, program every node, start servers, probe every pod pair
//! (and nodes to their pods, pods to their nodes) on real sockets, and report what got through.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use policy_compiler::model::Node;
use policy_compiler::{ObjectKey, Protocol, Snapshot};

use super::lab::{Lab, LabError};
use super::probe::{connects, Servers};
use crate::matrix::Matrix;

/// How long a probe waits before it calls the flow denied.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

/// A probe from or to a node's own address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeProbe {
    pub from: String,
    pub to: String,
    pub allowed: bool,
}

#[derive(Debug)]
pub struct Observed {
    /// Pod pairs over IPv4.
    pub matrix: Matrix,
    /// Pod pairs over IPv6, among the dual-stack pods, when there are any.
    pub matrix6: Option<Matrix>,
    pub node_probes: Vec<NodeProbe>,
}

/// Gives every node that pods use an IPv4 address when no Node object gives it one: the lab
/// needs an underlay address per node, and the compiler must know it (SPEC 2.13). Returns the
/// notes to print.
pub fn address_nodes(snapshot: &mut Snapshot) -> Vec<String> {
    let mut used: BTreeSet<IpAddr> = snapshot
        .nodes
        .values()
        .flat_map(|n| n.addrs.iter().copied())
        .collect();
    used.extend(snapshot.pods.values().flat_map(|p| p.ips.iter().copied()));
    let mut notes = Vec::new();
    let mut next = 1u8;
    let names: BTreeSet<String> = snapshot
        .pods
        .values()
        .filter(|p| p.is_enforced())
        .map(|p| p.node.clone())
        .collect();
    for name in names {
        let has_v4 = snapshot
            .nodes
            .get(&name)
            .is_some_and(|n| n.addrs.iter().any(IpAddr::is_ipv4));
        if has_v4 {
            continue;
        }
        let addr = loop {
            let candidate = IpAddr::V4(Ipv4Addr::new(172, 31, 0, next));
            next = next.saturating_add(1);
            if used.insert(candidate) || next == u8::MAX {
                break candidate;
            }
        };
        notes.push(format!(
            "node {name}: no IPv4 InternalIP, the sandbox gives it {addr}"
        ));
        snapshot
            .nodes
            .entry(name.clone())
            .or_insert_with(|| Node::with_addrs(name.clone(), Vec::new()));
        let node = snapshot.nodes.get_mut(&name).expect("inserted above");
        node.addrs.push(addr);
        node.internal_ips.push(addr);
    }
    // Dual-stack pods need a dual-stack node to route them.
    let v6_nodes: BTreeSet<String> = snapshot
        .pods
        .values()
        .filter(|p| p.is_enforced() && p.ips.iter().any(IpAddr::is_ipv6))
        .map(|p| p.node.clone())
        .collect();
    let mut next6 = 1u16;
    for name in v6_nodes {
        let node = snapshot
            .nodes
            .entry(name.clone())
            .or_insert_with(|| Node::with_addrs(name.clone(), Vec::new()));
        if node.addrs.iter().any(IpAddr::is_ipv6) {
            continue;
        }
        let addr = loop {
            let candidate = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x31, 0, 0, 0, 0, 0, next6));
            next6 = next6.saturating_add(1);
            if used.insert(candidate) || next6 == u16::MAX {
                break candidate;
            }
        };
        notes.push(format!(
            "node {name}: no IPv6 InternalIP, the sandbox gives it {addr}"
        ));
        node.addrs.push(addr);
        node.internal_ips.push(addr);
    }
    notes
}

type Pending = std::thread::JoinHandle<Result<bool, LabError>>;

fn join(handle: Pending) -> Result<bool, LabError> {
    handle
        .join()
        .map_err(|_| LabError::Program("a probe panicked".to_string()))?
}

/// Every pair of the given (pod, namespace, address) list, probed in parallel.
fn pairs(pods: &[(ObjectKey, String, IpAddr)], protocol: Protocol, port: u16) -> Result<Matrix, LabError> {
    let mut pending = Vec::new();
    for (i, (_, netns, _)) in pods.iter().enumerate() {
        for (j, (_, _, dst)) in pods.iter().enumerate() {
            let (netns, dst) = (netns.clone(), *dst);
            pending.push((
                (i, j),
                std::thread::spawn(move || connects(&netns, dst, protocol, port, PROBE_TIMEOUT)),
            ));
        }
    }
    let mut allowed = vec![vec![false; pods.len()]; pods.len()];
    for ((i, j), handle) in pending {
        allowed[i][j] = join(handle)?;
    }
    Ok(Matrix {
        protocol,
        port,
        pods: pods.iter().map(|(k, _, _)| k.clone()).collect(),
        allowed,
    })
}

/// One node probe: labels, the namespace it starts in, and both addresses.
struct NodePair {
    from: String,
    to: String,
    netns: String,
    src: IpAddr,
    dst: IpAddr,
}

/// Each node to its pods and each pod to its node, over each family the two share.
fn node_pairs(lab: &Lab) -> Vec<NodePair> {
    let mut out = Vec::new();
    for (name, node) in &lab.nodes {
        let (ns, addr) = (&node.netns, node.addr);
        for pod in lab.pods.iter().filter(|p| p.node == *name) {
            let mut families = vec![(IpAddr::V4(addr), IpAddr::V4(pod.addr), "")];
            if let (Some(n6), Some(p6)) = (node.addr6, pod.addr6) {
                families.push((IpAddr::V6(n6), IpAddr::V6(p6), " over IPv6"));
            }
            for (node_addr, pod_addr, family) in families {
                out.push(NodePair {
                    from: format!("node {name}"),
                    to: format!("{}{family}", pod.key),
                    netns: ns.clone(),
                    src: node_addr,
                    dst: pod_addr,
                });
                out.push(NodePair {
                    from: pod.key.to_string(),
                    to: format!("node {name}{family}"),
                    netns: pod.netns.clone(),
                    src: pod_addr,
                    dst: node_addr,
                });
            }
        }
    }
    out
}

/// Runs servers in every pod (the probed port and every declared port of the protocol, on each
/// of its addresses) and on every node, then probes. The lab must be built and programmed.
pub fn probe_all(
    lab: &Lab,
    snapshot: &Snapshot,
    protocol: Protocol,
    port: u16,
) -> Result<Observed, LabError> {
    let mut servers = Servers::new();
    for pod in &lab.pods {
        let mut ports: BTreeSet<u16> = BTreeSet::from([port]);
        if let Some(p) = snapshot.pods.get(&pod.key) {
            ports.extend(
                p.ports
                    .iter()
                    .filter(|cp| cp.protocol == protocol)
                    .map(|cp| cp.number),
            );
        }
        for n in ports {
            servers.listen(&pod.netns, pod.addr, protocol, n)?;
            if let Some(a6) = pod.addr6 {
                servers.listen(&pod.netns, a6, protocol, n)?;
            }
        }
    }
    for node in lab.nodes.values() {
        servers.listen(&node.netns, node.addr, protocol, port)?;
        if let Some(a6) = node.addr6 {
            servers.listen(&node.netns, a6, protocol, port)?;
        }
    }
    let v4: Vec<(ObjectKey, String, IpAddr)> = lab
        .pods
        .iter()
        .map(|p| (p.key.clone(), p.netns.clone(), IpAddr::V4(p.addr)))
        .collect();
    let v6: Vec<(ObjectKey, String, IpAddr)> = lab
        .pods
        .iter()
        .filter_map(|p| p.addr6.map(|a| (p.key.clone(), p.netns.clone(), IpAddr::V6(a))))
        .collect();
    let node_pending: Vec<(String, String, Pending)> = node_pairs(lab)
        .into_iter()
        .map(|p| {
            let (netns, dst) = (p.netns, p.dst);
            (
                p.from,
                p.to,
                std::thread::spawn(move || connects(&netns, dst, protocol, port, PROBE_TIMEOUT)),
            )
        })
        .collect();
    let matrix = pairs(&v4, protocol, port)?;
    let matrix6 = if v6.is_empty() {
        None
    } else {
        Some(pairs(&v6, protocol, port)?)
    };
    let mut node_probes = Vec::new();
    for (from, to, handle) in node_pending {
        node_probes.push(NodeProbe {
            from,
            to,
            allowed: join(handle)?,
        });
    }
    drop(servers);
    Ok(Observed {
        matrix,
        matrix6,
        node_probes,
    })
}

/// The cells and node probes where the kernel disagrees with the compiled rulesets.
pub fn disagreements(
    lab: &Lab,
    rulesets: &BTreeMap<String, policy_compiler::Ruleset>,
    observed: &Observed,
    protocol: Protocol,
    port: u16,
) -> Vec<String> {
    let decide = |src: IpAddr, dst: IpAddr| {
        let flow = policy_compiler::Flow::new(src, dst, protocol, port);
        policy_compiler::eval::decide_cluster(rulesets, &flow).allowed()
    };
    let mut out = Vec::new();
    let mut families = vec![(&observed.matrix, "")];
    if let Some(m6) = &observed.matrix6 {
        families.push((m6, " over IPv6"));
    }
    for (matrix, family) in families {
        let addr_of = |key: &ObjectKey| {
            let pod = lab.pods.iter().find(|p| p.key == *key);
            match (family.is_empty(), pod) {
                (true, Some(p)) => Some(IpAddr::V4(p.addr)),
                (false, Some(p)) => p.addr6.map(IpAddr::V6),
                (_, None) => None,
            }
        };
        for (i, from) in matrix.pods.iter().enumerate() {
            for (j, to) in matrix.pods.iter().enumerate() {
                let (Some(src), Some(dst)) = (addr_of(from), addr_of(to)) else {
                    continue;
                };
                let want = decide(src, dst);
                if matrix.allowed[i][j] != want {
                    out.push(format!(
                        "{from} -> {to}{family}: kernel {}, compiled {want}",
                        matrix.allowed[i][j]
                    ));
                }
            }
        }
    }
    for (pair, got) in node_pairs(lab).into_iter().zip(&observed.node_probes) {
        let want = decide(pair.src, pair.dst);
        if got.allowed != want {
            out.push(format!(
                "{} -> {}: kernel {}, compiled {want}",
                pair.from, pair.to, got.allowed
            ));
        }
    }
    out
}
