//! One sandbox run: build the lab, program every node, start servers, probe every pod pair
//! (and nodes to their pods, pods to their nodes) on real sockets, and report what got through.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
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
    pub matrix: Matrix,
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
            .or_insert_with(|| Node {
                name: name.clone(),
                addrs: Vec::new(),
            })
            .addrs
            .push(addr);
    }
    notes
}

/// Runs servers in every pod (the probed port and every declared port of the protocol) and on
/// every node, then probes. The lab must be built and programmed.
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
        }
    }
    for (ns, addr) in lab.nodes.values() {
        servers.listen(ns, *addr, protocol, port)?;
    }

    let keys: Vec<ObjectKey> = lab.pods.iter().map(|p| p.key.clone()).collect();
    let mut pending = Vec::new();
    for (i, from) in lab.pods.iter().enumerate() {
        for (j, to) in lab.pods.iter().enumerate() {
            let (netns, dst) = (from.netns.clone(), to.addr);
            pending.push((
                (i, j),
                std::thread::spawn(move || connects(&netns, dst, protocol, port, PROBE_TIMEOUT)),
            ));
        }
    }
    let mut node_pending = Vec::new();
    for (name, (ns, addr)) in &lab.nodes {
        for pod in lab.pods.iter().filter(|p| p.node == *name) {
            let (netns, dst) = (ns.clone(), pod.addr);
            let label = (format!("node {name}"), pod.key.to_string());
            node_pending.push((
                label,
                std::thread::spawn(move || connects(&netns, dst, protocol, port, PROBE_TIMEOUT)),
            ));
            let (netns, dst) = (pod.netns.clone(), *addr);
            let label = (pod.key.to_string(), format!("node {name}"));
            node_pending.push((
                label,
                std::thread::spawn(move || connects(&netns, dst, protocol, port, PROBE_TIMEOUT)),
            ));
        }
    }
    let mut allowed = vec![vec![false; keys.len()]; keys.len()];
    for ((i, j), handle) in pending {
        allowed[i][j] = handle
            .join()
            .map_err(|_| LabError::Program("a probe panicked".to_string()))??;
    }
    let mut node_probes = Vec::new();
    for ((from, to), handle) in node_pending {
        let ok = handle
            .join()
            .map_err(|_| LabError::Program("a probe panicked".to_string()))??;
        node_probes.push(NodeProbe {
            from,
            to,
            allowed: ok,
        });
    }
    drop(servers);
    Ok(Observed {
        matrix: Matrix {
            protocol,
            port,
            pods: keys,
            allowed,
        },
        node_probes,
    })
}

/// What the compiled rulesets say the node probes should see: a node reaches its own pods, and
/// a pod reaches its node when its egress allows it.
pub fn expected_node_probes(
    snapshot: &Snapshot,
    rulesets: &BTreeMap<String, policy_compiler::Ruleset>,
    lab: &Lab,
    protocol: Protocol,
    port: u16,
) -> Vec<NodeProbe> {
    let mut out = Vec::new();
    for (name, (_, addr)) in &lab.nodes {
        for pod in lab.pods.iter().filter(|p| p.node == *name) {
            for (src, dst, from, to) in [
                (
                    IpAddr::V4(*addr),
                    IpAddr::V4(pod.addr),
                    format!("node {name}"),
                    pod.key.to_string(),
                ),
                (
                    IpAddr::V4(pod.addr),
                    IpAddr::V4(*addr),
                    pod.key.to_string(),
                    format!("node {name}"),
                ),
            ] {
                let flow = policy_compiler::Flow::new(src, dst, protocol, port);
                let allowed = policy_compiler::eval::decide_cluster(rulesets, &flow).allowed();
                debug_assert_eq!(allowed, policy_compiler::reference::allows(snapshot, &flow));
                out.push(NodeProbe { from, to, allowed });
            }
        }
    }
    out
}
