//! Endpoint selection (SPEC 5): which endpoints of a service port take cluster traffic and which
//! take node-local traffic, and the EndpointSlices a selector implies when the input has none.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::model::{ObjectKey, Phase, Pod};
use crate::nat::Backend;
use crate::service::{Endpoint, EndpointSlice, Service, ServicePort, SlicePort, TargetPort};

/// The endpoints of one service port: for cluster traffic, and for node-local traffic on the
/// node asked about. Sorted, without repeats.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selected {
    pub cluster: Vec<Backend>,
    pub local: Vec<Backend>,
}

/// Selects the endpoints of `port` from the service's slices. An endpoint serves the port when
/// its slice lists a port of the same name and protocol (that entry holds the endpoint's target
/// port). Of the endpoints that serve it: the ready ones; when none is ready, the serving and
/// terminating ones; every one when the service publishes not-ready addresses. The same address
/// and port in two slices counts once (the first slice by name wins).
pub fn select(service: &Service, port: &ServicePort, slices: &[&EndpointSlice], node: &str) -> Selected {
    let mut seen = BTreeSet::new();
    let mut candidates: Vec<(Backend, &Endpoint)> = Vec::new();
    for slice in slices {
        let Some(sp) = slice
            .ports
            .iter()
            .find(|sp| sp.name == port.name && sp.protocol == port.protocol)
        else {
            continue;
        };
        for ep in &slice.endpoints {
            let backend = Backend {
                addr: ep.addr,
                port: sp.port,
            };
            if seen.insert(backend) {
                candidates.push((backend, ep));
            }
        }
    }
    let usable = |eps: Vec<&(Backend, &Endpoint)>| -> Vec<Backend> {
        let pick = |keep: &dyn Fn(&Endpoint) -> bool| -> Vec<Backend> {
            let mut out: Vec<Backend> = eps.iter().filter(|(_, e)| keep(e)).map(|(b, _)| *b).collect();
            out.sort();
            out
        };
        if service.publish_not_ready {
            return pick(&|_| true);
        }
        let ready = pick(&|e| e.ready);
        if !ready.is_empty() {
            return ready;
        }
        pick(&|e| e.serving && e.terminating)
    };
    let all: Vec<_> = candidates.iter().collect();
    let local: Vec<_> = candidates
        .iter()
        .filter(|(_, e)| e.node.as_deref() == Some(node))
        .collect();
    Selected {
        cluster: usable(all),
        local: usable(local),
    }
}

/// The slices the endpoint slice controller would write for a service with a selector, for
/// offline input that has Services but no EndpointSlices for them: every pod of the service's
/// namespace that matches, has addresses and has not ended, ready when it runs; one slice per
/// address family and target-port mapping (a named `targetPort` resolves per pod; a pod without
/// the name serves none of that port).
pub fn derive_slices<'a>(service: &Service, pods: impl Iterator<Item = &'a Pod>) -> Vec<EndpointSlice> {
    // An empty selector selects nothing: such a service's endpoints are managed by hand.
    let Some(labels) = service.selector.as_ref().filter(|l| !l.is_empty()) else {
        return Vec::new();
    };
    let mut groups: BTreeMap<(bool, Vec<SlicePort>), Vec<Endpoint>> = BTreeMap::new();
    for pod in pods {
        if pod.key.namespace != service.key.namespace
            || !labels.iter().all(|(k, v)| pod.labels.get(k) == Some(v))
            || pod.ips.is_empty()
            || matches!(pod.phase, Phase::Succeeded | Phase::Failed)
        {
            continue;
        }
        let ports: Vec<SlicePort> = service
            .ports
            .iter()
            .filter_map(|p| {
                let number = match &p.target {
                    TargetPort::Number(n) => Some(*n),
                    TargetPort::Name(name) => pod.named_port(name, p.protocol),
                }?;
                Some(SlicePort {
                    name: p.name.clone(),
                    protocol: p.protocol,
                    port: number,
                })
            })
            .collect();
        for v4 in [true, false] {
            let Some(addr) = pod.ips.iter().copied().find(|a: &IpAddr| a.is_ipv4() == v4) else {
                continue;
            };
            let ready = pod.phase == Phase::Running;
            groups.entry((v4, ports.clone())).or_default().push(Endpoint {
                addr,
                ready,
                serving: ready,
                terminating: false,
                node: Some(pod.node.clone()),
            });
        }
    }
    groups
        .into_iter()
        .enumerate()
        .map(|(n, ((_, ports), endpoints))| EndpointSlice {
            key: ObjectKey::new(
                &service.key.namespace,
                format!("{}-derived-{n}", service.key.name),
            ),
            service: service.key.name.clone(),
            ports,
            endpoints,
        })
        .collect()
}
