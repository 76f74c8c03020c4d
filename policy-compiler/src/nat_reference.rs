//! The reference reading of SPEC 5: what NAT does with a new connection, decided from the
//! cluster model directly, line by line from the spec. It shares nothing with the compile path
//! (no `endpoints`, no `nat::ServiceRules`), so property tests can hold the IR and the packet
//! tracer to it.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::model::{Protocol, Snapshot};
use crate::nat::{Backend, NatOutcome};
use crate::service::{Endpoint, Service};

/// What a connection from `src` to `dst`, `protocol`, `port` becomes on `node` (the node where
/// it enters NAT: the client pod's node, the node itself, or the node an external client's
/// packet arrives at).
pub fn decide(
    snap: &Snapshot,
    node: &str,
    src: IpAddr,
    dst: IpAddr,
    protocol: Protocol,
    port: u16,
) -> NatOutcome {
    let proxied = || snap.services.values().filter(|s| s.unproxied.is_none());
    let this_node = snap.nodes.get(node);
    // Frontends: a service address with the port (ClusterIPs, externalIPs, LoadBalancer IPs);
    // else a NodePort on one of this node's InternalIPs. Of several services claiming one, the
    // first by namespace and name.
    let mut hit: Option<(&Service, usize, bool, bool)> = None; // (service, port idx, external, lb)
    'addr: for svc in proxied() {
        for (i, p) in svc.ports.iter().enumerate() {
            if p.protocol != protocol || p.port != port {
                continue;
            }
            if svc.cluster_ips.contains(&dst) {
                hit = Some((svc, i, false, false));
                break 'addr;
            }
            if svc.external_ips.contains(&dst) {
                hit = Some((svc, i, true, false));
                break 'addr;
            }
            if svc.lb_ips.contains(&dst) {
                hit = Some((svc, i, true, true));
                break 'addr;
            }
        }
    }
    if hit.is_none() && this_node.is_some_and(|n| n.internal_ips.contains(&dst)) {
        'np: for svc in proxied() {
            for (i, p) in svc.ports.iter().enumerate() {
                if p.protocol == protocol && p.node_port == Some(port) {
                    hit = Some((svc, i, true, false));
                    break 'np;
                }
            }
        }
    }
    let Some((svc, idx, external, lb)) = hit else {
        // A live ClusterIP on a port it does not serve is refused; an unheld address of a
        // service CIDR is dropped.
        if proxied().any(|s| s.cluster_ips.contains(&dst)) {
            return NatOutcome::Reject;
        }
        if snap.service_cidrs.values().flatten().any(|c| c.contains(&dst)) {
            return NatOutcome::Drop;
        }
        return NatOutcome::Pass;
    };
    if lb && !svc.source_ranges.is_empty() && !svc.source_ranges.iter().any(|r| r.contains(&src)) {
        return NatOutcome::Drop;
    }
    // Pod traffic is traffic from a node's podCIDRs (of the client's family).
    let pod_ranges: Vec<_> = snap
        .nodes
        .values()
        .flat_map(|n| n.pod_cidrs.iter())
        .filter(|c| c.network().is_ipv4() == src.is_ipv4())
        .collect();
    let from_pod = pod_ranges.iter().any(|c| c.contains(&src));
    let from_node = this_node.is_some_and(|n| n.addrs.contains(&src));
    let (only_local, masquerade) = if !external {
        (svc.internal_local, !pod_ranges.is_empty() && !from_pod)
    } else if !svc.external_local {
        (false, true)
    } else if from_pod {
        (false, false)
    } else {
        (!from_node, from_node)
    };
    let port_spec = &svc.ports[idx];
    // Every endpoint of the service that serves this port (its slice names the port), of the
    // frontend's family, once per address and port.
    let mut endpoints: Vec<(Backend, &Endpoint)> = Vec::new();
    let mut seen = BTreeSet::new();
    for slice in snap.slices.values() {
        if slice.key.namespace != svc.key.namespace || slice.service != svc.key.name {
            continue;
        }
        let Some(sp) = slice
            .ports
            .iter()
            .find(|sp| sp.name == port_spec.name && sp.protocol == protocol)
        else {
            continue;
        };
        for ep in &slice.endpoints {
            let b = Backend {
                addr: ep.addr,
                port: sp.port,
            };
            if ep.addr.is_ipv4() == dst.is_ipv4() && seen.insert(b) {
                endpoints.push((b, ep));
            }
        }
    }
    if only_local {
        endpoints.retain(|(_, e)| e.node.as_deref() == Some(node));
    }
    let chosen: BTreeSet<Backend> = if svc.publish_not_ready {
        endpoints.iter().map(|(b, _)| *b).collect()
    } else if endpoints.iter().any(|(_, e)| e.ready) {
        endpoints
            .iter()
            .filter(|(_, e)| e.ready)
            .map(|(b, _)| *b)
            .collect()
    } else {
        endpoints
            .iter()
            .filter(|(_, e)| e.serving && e.terminating)
            .map(|(b, _)| *b)
            .collect()
    };
    // No endpoint: refused, unless the traffic policy that applies to this frontend is Local.
    if chosen.is_empty() {
        let local_policy = if external {
            svc.external_local
        } else {
            svc.internal_local
        };
        return if local_policy {
            NatOutcome::Drop
        } else {
            NatOutcome::Reject
        };
    }
    NatOutcome::Dnat {
        backends: chosen.into_iter().collect(),
        masquerade,
    }
}
