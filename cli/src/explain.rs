//! `netfence explain`: why a flow is allowed or denied, side by side: the source's egress on its
//! node and the destination's ingress on its node, with the policies that select each pod, the
//! rule that allows the flow (or that none does), and what named ports resolved to.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use policy_compiler::eval::{decide_cluster, locate, SideVerdict};
use policy_compiler::ir::{IrRule, Ruleset};
use policy_compiler::model::{Direction, PortMatch};
use policy_compiler::{Flow, ObjectKey, Protocol, Snapshot};
use serde_json::{json, Value};

/// One end of the flow as the user named it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Pod(ObjectKey),
    Addr(IpAddr),
}

impl Endpoint {
    /// `NAMESPACE/POD` or an IP address.
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        if let Ok(addr) = text.parse::<IpAddr>() {
            return Ok(Endpoint::Addr(addr));
        }
        match text.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Endpoint::Pod(ObjectKey::new(ns, name)))
            }
            _ => Err(format!("{text:?} is neither NAMESPACE/POD nor an IP address")),
        }
    }
}

/// One side of the decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Side {
    pub direction: Direction,
    /// The address on this side: the source for egress, the destination for ingress.
    pub addr: IpAddr,
    /// The pod whose policy applies on this side, if the address is a policed pod.
    pub pod: Option<String>,
    pub node: Option<String>,
    pub isolated: bool,
    /// The policies that select the pod for this direction.
    pub policies: Vec<String>,
    pub verdict: SideVerdict,
}

/// A named port the deciding side's rules use, and what it is on the destination pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedPortUse {
    pub name: String,
    pub protocol: Protocol,
    pub pod: Option<String>,
    pub number: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    pub from: String,
    pub to: String,
    pub flow: Flow,
    pub allowed: bool,
    pub egress: Side,
    pub ingress: Side,
    pub named_ports: Vec<NamedPortUse>,
}

fn pod_addr(snap: &Snapshot, key: &ObjectKey, family_of: Option<IpAddr>) -> Result<IpAddr, String> {
    let pod = snap
        .pods
        .get(key)
        .ok_or_else(|| format!("no pod {key} in the input"))?;
    if !pod.is_enforced() {
        return Err(format!(
            "pod {key} is not running with an address of its own (hostNetwork, finished or unaddressed)"
        ));
    }
    pod.ips
        .iter()
        .find(|a| family_of.is_none_or(|f| f.is_ipv4() == a.is_ipv4()))
        .copied()
        .ok_or_else(|| format!("pod {key} has no address of the other end's family"))
}

fn describe(snap: &Snapshot, e: &Endpoint, addr: IpAddr) -> String {
    match e {
        Endpoint::Pod(key) => format!("{key} ({addr})"),
        Endpoint::Addr(_) => match snap.owner_of(addr) {
            Some(pod) => format!("{addr} (pod {})", pod.key),
            None => match snap.nodes.values().find(|n| n.addrs.contains(&addr)) {
                Some(node) => format!("{addr} (node {})", node.name),
                None => addr.to_string(),
            },
        },
    }
}

fn side(
    snap: &Snapshot,
    rulesets: &BTreeMap<String, Ruleset>,
    own: IpAddr,
    direction: Direction,
    verdict: SideVerdict,
) -> Side {
    let ruleset = locate(rulesets, own);
    let local = ruleset.and_then(|r| r.pods.iter().find(|(_, p)| p.addrs.contains(&own)));
    let key = local.and_then(|(_, p)| p.isolation(direction));
    Side {
        direction,
        addr: own,
        pod: snap.owner_of(own).map(|p| p.key.to_string()),
        node: ruleset.map(|r| r.node.clone()),
        isolated: key.is_some(),
        policies: key
            .map(|k| k.policies.iter().map(ToString::to_string).collect())
            .unwrap_or_default(),
        verdict,
    }
}

fn rules_of(rulesets: &BTreeMap<String, Ruleset>, own: IpAddr, direction: Direction) -> Vec<&IrRule> {
    let Some(ruleset) = locate(rulesets, own) else {
        return Vec::new();
    };
    ruleset
        .pods
        .values()
        .filter(|p| p.addrs.contains(&own))
        .filter_map(|p| p.isolation(direction))
        .flat_map(|k| ruleset.allow_sets[k].rules.iter())
        .collect()
}

/// Decides and explains one flow.
pub fn explain(
    snap: &Snapshot,
    rulesets: &BTreeMap<String, Ruleset>,
    from: &Endpoint,
    to: &Endpoint,
    protocol: Protocol,
    port: u16,
) -> Result<Explanation, String> {
    let (src, dst) = match (from, to) {
        (Endpoint::Addr(s), Endpoint::Addr(d)) => (*s, *d),
        (Endpoint::Addr(s), Endpoint::Pod(k)) => (*s, pod_addr(snap, k, Some(*s))?),
        (Endpoint::Pod(k), Endpoint::Addr(d)) => (pod_addr(snap, k, Some(*d))?, *d),
        (Endpoint::Pod(a), Endpoint::Pod(b)) => {
            let s = pod_addr(snap, a, None)?;
            match pod_addr(snap, b, Some(s)) {
                Ok(d) => (s, d),
                Err(_) => {
                    let d = pod_addr(snap, b, None)?;
                    (pod_addr(snap, a, Some(d))?, d)
                }
            }
        }
    };
    if src.is_ipv4() != dst.is_ipv4() {
        return Err(format!("{src} and {dst} are of different address families"));
    }
    let flow = Flow::new(src, dst, protocol, port);
    let decision = decide_cluster(rulesets, &flow);
    let mut named_ports = Vec::new();
    for (own, direction) in [(src, Direction::Egress), (dst, Direction::Ingress)] {
        for rule in rules_of(rulesets, own, direction) {
            for spec in rule.ports.iter().flatten().filter(|p| p.protocol == protocol) {
                let PortMatch::Named(name) = &spec.port else {
                    continue;
                };
                let owner = snap.owner_of(dst);
                let entry = NamedPortUse {
                    name: name.clone(),
                    protocol,
                    pod: owner.map(|p| p.key.to_string()),
                    number: owner.and_then(|p| p.named_port(name, protocol)),
                };
                if !named_ports.contains(&entry) {
                    named_ports.push(entry);
                }
            }
        }
    }
    Ok(Explanation {
        from: describe(snap, from, src),
        to: describe(snap, to, dst),
        flow,
        allowed: decision.allowed(),
        egress: side(snap, rulesets, src, Direction::Egress, decision.egress),
        ingress: side(snap, rulesets, dst, Direction::Ingress, decision.ingress),
        named_ports,
    })
}

fn verdict_text(side: &Side) -> String {
    let dir = side.direction.as_str();
    match &side.verdict {
        SideVerdict::NotAPod => format!("not a pod that policy applies to: no {dir} check"),
        SideVerdict::NotIsolated => format!("not isolated: no policy selects it for {dir}"),
        SideVerdict::FromNode => "from its own node's address: always allowed (kubelet probes)".to_string(),
        SideVerdict::NeighbourDiscovery => "ICMPv6 neighbour discovery: always allowed".to_string(),
        SideVerdict::Loopback => "to its own address: loopback, never policed".to_string(),
        SideVerdict::Allowed { policy, index } => format!("allowed by {policy}, {dir} rule {index}"),
        SideVerdict::Denied => format!("denied: no {dir} rule of these policies allows this flow"),
    }
}

impl Explanation {
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let (proto, port) = match self.flow.l4 {
            policy_compiler::L4::Port(p, n) => (p.as_str(), n),
            policy_compiler::L4::Icmp { .. } => ("ICMP", 0),
        };
        let verdict = if self.allowed { "allowed" } else { "denied" };
        let _ = writeln!(out, "{} -> {}, {proto}/{port}: {verdict}", self.from, self.to);
        for side in [&self.egress, &self.ingress] {
            let who = side.pod.clone().unwrap_or_else(|| side.addr.to_string());
            let node = side.node.as_deref().map_or(String::new(), |n| format!(" on {n}"));
            let _ = write!(out, "  {} of {who}{node}: ", side.direction.as_str());
            if side.isolated {
                let _ = writeln!(out, "isolated by {}", side.policies.join(", "));
                let _ = writeln!(out, "    {}", verdict_text(side));
            } else {
                let _ = writeln!(out, "{}", verdict_text(side));
            }
        }
        for np in &self.named_ports {
            let _ = match (&np.pod, np.number) {
                (Some(pod), Some(n)) => {
                    writeln!(out, "  named port {}/{} is {n} on {pod}", np.protocol, np.name)
                }
                (Some(pod), None) => writeln!(
                    out,
                    "  named port {}/{} is not declared by {pod}",
                    np.protocol, np.name
                ),
                (None, _) => writeln!(
                    out,
                    "  named port {}/{} matches nothing: the destination is no pod",
                    np.protocol, np.name
                ),
            };
        }
        out
    }

    pub fn to_json(&self) -> Value {
        let side = |s: &Side| {
            let allowed_by = match &s.verdict {
                SideVerdict::Allowed { policy, index } => {
                    json!({"policy": policy.to_string(), "rule": index})
                }
                _ => Value::Null,
            };
            json!({
                "pod": s.pod, "node": s.node, "isolated": s.isolated, "policies": s.policies,
                "passes": s.verdict.passes(), "allowed_by": allowed_by, "reason": verdict_text(s),
            })
        };
        let (proto, port) = match self.flow.l4 {
            policy_compiler::L4::Port(p, n) => (p.as_str(), n),
            policy_compiler::L4::Icmp { .. } => ("ICMP", 0),
        };
        let named: Vec<Value> = self
            .named_ports
            .iter()
            .map(|n| json!({"name": n.name, "protocol": n.protocol.as_str(), "pod": n.pod, "number": n.number}))
            .collect();
        json!({
            "from": self.from, "to": self.to, "src": self.flow.src.to_string(), "dst": self.flow.dst.to_string(),
            "protocol": proto, "port": port, "allowed": self.allowed,
            "egress": side(&self.egress), "ingress": side(&self.ingress), "named_ports": named,
        })
    }
}

/// The nodes whose rulesets decide a flow between the endpoints: a named pod's node, the node of
/// the pod that owns an address, and a node that holds an address itself. Only these are
/// compiled (the flow crosses no other node's hooks), so `explain` answers as quickly on a
/// cluster of 900 nodes as of two.
pub fn deciding_nodes(snap: &Snapshot, endpoints: [&Endpoint; 2]) -> BTreeSet<String> {
    let mut nodes = BTreeSet::new();
    for endpoint in endpoints {
        match endpoint {
            Endpoint::Pod(key) => nodes.extend(snap.pods.get(key).map(|p| p.node.clone())),
            Endpoint::Addr(addr) => {
                nodes.extend(snap.owner_of(*addr).map(|p| p.node.clone()));
                let holders = snap.nodes.values().filter(|n| n.addrs.contains(addr));
                nodes.extend(holders.map(|n| n.name.clone()));
            }
        }
    }
    nodes
}
