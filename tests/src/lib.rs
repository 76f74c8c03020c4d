//! Shared pieces of the integration tests: the golden-fixture reader and the random cluster
//! generator that the property tests and the benchmarks draw from.

#![forbid(unsafe_code)]

pub mod bench;
pub mod fakeapi;
pub mod fixture;
pub mod gen;
pub mod netns;
pub mod synth;

use nft_backend::trace::Topology;
use policy_compiler::Snapshot;

/// Where each address lives, from the model: enforced pods' addresses on their node, and each
/// node's own addresses. Addresses of finished pods belong to nobody.
pub fn topology(snap: &Snapshot) -> Topology {
    let mut topo = Topology::default();
    for node in snap.nodes.values() {
        for addr in &node.addrs {
            topo.nodes.insert(*addr, node.name.clone());
        }
    }
    for pod in snap.pods.values().filter(|p| p.is_enforced()) {
        for addr in &pod.ips {
            if snap.owner_of(*addr).is_some_and(|o| o.key == pod.key) {
                topo.pods.insert(*addr, pod.node.clone());
            }
        }
    }
    topo
}

/// A cluster whose names, labels and selector keys try to break out of an nft script (quotes,
/// `;`, `#`, braces, newlines): the script must keep them inert and still load.
pub fn hostile_cluster() -> String {
    let hostile = "x\"; flush ruleset; #{}\n";
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: default, labels: {{app: {hostile:?}}}}}
spec: {{nodeName: node-1, containers: [{{name: c, ports: [{{name: http, containerPort: 80}}]}}]}}
status: {{podIPs: [{{ip: 10.244.0.2}}]}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: "p-x-y", namespace: default}}
spec:
  podSelector: {{matchLabels: {{app: {hostile:?}}}}}
  ingress:
  - from: [{{podSelector: {{matchExpressions: [{{key: {hostile:?}, operator: In, values: [{hostile:?}]}}]}}}}]
    ports: [{{port: http}}]
  - from: [{{ipBlock: {{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}}}]
"#
    )
}
