//! A cluster built of network namespaces on this machine: each node a namespace, each pod a
//! namespace with a veth to its node, the nodes joined by an underlay bridge. Every namespace
//! carries the run's prefix, and all of them are removed when the lab is dropped (on success,
//! failure and panic alike).
//!
//! Addressing: pods keep their cluster addresses (IPv4) on `eth0`, with a default route to the
//! node through a link-local next hop (held by the node side of every pod's veth); each node routes
//! its pods' addresses to their veths and the other nodes' pods to those nodes' underlay
//! addresses, which are the Node objects' InternalIPs.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netfence_netns::{in_netns, NetnsError};
use policy_compiler::model::Pod;
use policy_compiler::{ObjectKey, Snapshot};

/// Why the lab could not be built.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("sandbox: {0}")]
    Netns(#[from] NetnsError),
    #[error("sandbox: node {0} has no IPv4 InternalIP; give its Node object one")]
    NodeAddress(String),
    #[error("sandbox: {0}")]
    Program(String),
    #[error("sandbox: interrupted")]
    Interrupted,
}

/// Whether this process's sandbox was interrupted; held while a namespace is being created, so
/// that [`interrupt`] waits for a creation under way and none starts after it.
static INTERRUPTED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);

fn interrupted_flag() -> std::sync::MutexGuard<'static, bool> {
    INTERRUPTED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Stops this process's labs from making namespaces: returns once none is being made, so that
/// a removal of the run's namespaces after it (Ctrl-C) leaves none behind.
pub fn interrupt() {
    *interrupted_flag() = true;
}

/// Whether [`interrupt`] was called.
pub fn is_interrupted() -> bool {
    *interrupted_flag()
}

/// The next hop every pod routes through, answered by its node's veth.
const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// `ip -n NS ARGS...`, the arguments split on spaces (every value here is an address, a number
/// or a name the lab made, none with a space).
fn ip(ns: &str, args: &str) -> Result<(), LabError> {
    let mut full = vec!["ip", "-n", ns];
    full.extend(args.split_whitespace());
    netfence_netns::run(&full)?;
    Ok(())
}

/// `sysctl -qw SETTING` inside a namespace.
fn sysctl(ns: &str, setting: &str) -> Result<(), LabError> {
    netfence_netns::run(&["ip", "netns", "exec", ns, "sysctl", "-qw", setting])?;
    Ok(())
}

/// A pod of the lab: its key, namespace, node and IPv4 address.
#[derive(Clone, Debug)]
pub struct LabPod {
    pub key: ObjectKey,
    pub netns: String,
    pub node: String,
    pub addr: Ipv4Addr,
    /// Its IPv6 address, when the pod and its node are dual-stack.
    pub addr6: Option<Ipv6Addr>,
}

/// A node of the lab: its namespace and underlay addresses.
#[derive(Clone, Debug)]
pub struct LabNode {
    pub netns: String,
    pub addr: Ipv4Addr,
    pub addr6: Option<Ipv6Addr>,
}

#[derive(Debug)]
pub struct Lab {
    pub prefix: String,
    /// Node name to its namespace and underlay addresses.
    pub nodes: BTreeMap<String, LabNode>,
    pub pods: Vec<LabPod>,
    created: Vec<String>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for name in self.created.iter().rev() {
            netfence_netns::delete(name);
        }
    }
}

/// The prefix family of every sandbox namespace: `nfsb<pid>-...`, the process that made it.
pub const PREFIX: &str = "nfsb";

/// The prefix of this process's sandbox namespaces, `nfsb<pid>-` (`nfsb<pid>-<tag>-` with a
/// tag, for several labs in one process). The separator after the pid matters: run 3221's
/// namespaces are not run 32212's.
pub fn run_prefix(tag: &str) -> String {
    let pid = std::process::id();
    if tag.is_empty() {
        format!("{PREFIX}{pid}-")
    } else {
        format!("{PREFIX}{pid}-{tag}-")
    }
}

/// The process that made a sandbox namespace, read from its name (`nfsb<pid>-...`).
pub fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let digits = rest.split_once('-')?.0;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Removes the sandbox namespaces of process `pid` (this run's, on Ctrl-C); returns how many.
pub fn remove_run(pid: u32) -> usize {
    let names: Vec<String> = leftovers()
        .into_iter()
        .filter(|n| owner_pid(n) == Some(pid))
        .collect();
    names.iter().for_each(|n| netfence_netns::delete(n));
    names.len()
}

/// What `netfence sandbox --cleanup` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cleanup {
    /// Namespaces removed: their run has ended.
    pub removed: usize,
    /// Runs still in progress, whose namespaces were left alone.
    pub running: Vec<u32>,
}

/// Removes the namespaces of sandbox runs whose process has ended; a run still in progress
/// keeps its namespaces (it removes them itself).
pub fn cleanup() -> Cleanup {
    let mut done = Cleanup::default();
    for name in leftovers() {
        let Some(pid) = owner_pid(&name) else { continue };
        if netfence_netns::process_alive(pid) {
            if !done.running.contains(&pid) {
                done.running.push(pid);
            }
            continue;
        }
        netfence_netns::delete(&name);
        done.removed += 1;
    }
    done
}

/// Names of namespaces that sandbox runs made (`nfsb<pid>-...`).
pub fn leftovers() -> Vec<String> {
    netfence_netns::list()
        .into_iter()
        .filter(|n| owner_pid(n).is_some())
        .collect()
}

/// The pod's first address of the family that the pod owns (`Snapshot::owner_of`).
fn owned_addr<T>(snapshot: &Snapshot, pod: &Pod, pick: impl Fn(IpAddr) -> Option<T>) -> Option<T> {
    pod.ips
        .iter()
        .filter(|a| snapshot.owner_of(**a).is_some_and(|o| o.key == pod.key))
        .find_map(|a| pick(*a))
}

fn v4(addr: IpAddr) -> Option<Ipv4Addr> {
    match addr {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    }
}

fn v6(addr: IpAddr) -> Option<Ipv6Addr> {
    match addr {
        IpAddr::V6(a) => Some(a),
        IpAddr::V4(_) => None,
    }
}

impl Lab {
    fn add_netns(&mut self, name: String) -> Result<String, LabError> {
        let interrupted = interrupted_flag();
        if *interrupted {
            return Err(LabError::Interrupted);
        }
        let added = netfence_netns::add(&name);
        // Recorded even when `lo` could not be set up, so that dropping the lab removes it.
        self.created.push(name.clone());
        drop(interrupted);
        added?;
        // No duplicate address detection: the lab's addresses are unique by construction, and
        // a tentative address would drop the first probes.
        sysctl(&name, "net.ipv6.conf.all.accept_dad=0")?;
        sysctl(&name, "net.ipv6.conf.default.accept_dad=0")?;
        Ok(name)
    }

    /// Builds the namespaces, links and routes for every enforced pod of the snapshot, with
    /// every namespace named `<prefix>...` (see [`run_prefix`]): the underlay, the nodes, the
    /// pods, then the routes between nodes.
    pub fn build(snapshot: &Snapshot, prefix: &str) -> Result<Lab, LabError> {
        let mut lab = Lab {
            prefix: prefix.to_string(),
            nodes: BTreeMap::new(),
            pods: Vec::new(),
            created: Vec::new(),
        };
        let underlay = lab.add_underlay()?;
        let pods: Vec<&Pod> = snapshot.pods.values().filter(|p| p.is_enforced()).collect();
        let mut node_names: Vec<&str> = pods.iter().map(|p| p.node.as_str()).collect();
        node_names.sort_unstable();
        node_names.dedup();
        for (i, node) in node_names.into_iter().enumerate() {
            lab.add_node(snapshot, &underlay, i, node)?;
        }
        for (k, pod) in pods.into_iter().enumerate() {
            lab.add_pod(snapshot, k, pod)?;
        }
        lab.route_between_nodes()?;
        Ok(lab)
    }

    /// The underlay: a namespace with a bridge every node's veth joins.
    fn add_underlay(&mut self) -> Result<String, LabError> {
        let underlay = self.add_netns(format!("{}ul", self.prefix))?;
        ip(&underlay, "link add br0 type bridge")?;
        ip(&underlay, "link set br0 up")?;
        Ok(underlay)
    }

    /// Node `i`: a namespace on the underlay with its InternalIPs, forwarding on.
    fn add_node(
        &mut self,
        snapshot: &Snapshot,
        underlay: &str,
        i: usize,
        node: &str,
    ) -> Result<(), LabError> {
        let addrs = snapshot
            .nodes
            .get(node)
            .map(|n| n.addrs.as_slice())
            .unwrap_or_default();
        let addr = addrs
            .iter()
            .find_map(|a| v4(*a))
            .ok_or_else(|| LabError::NodeAddress(node.to_string()))?;
        let addr6 = addrs.iter().find_map(|a| v6(*a));
        let ns = self.add_netns(format!("{}n{i}", self.prefix))?;
        let (outer, inner) = (format!("ul{i}"), format!("un{i}"));
        ip(
            underlay,
            &format!("link add {outer} type veth peer name {inner} netns {ns}"),
        )?;
        ip(underlay, &format!("link set {outer} master br0 up"))?;
        ip(&ns, &format!("addr add {addr}/16 dev {inner}"))?;
        ip(&ns, &format!("link set {inner} up"))?;
        // Like a real node, it routes what it has no route for (service addresses a NAT rule
        // left untranslated) out of its uplink, so the filter hooks see that traffic: on the
        // underlay, nothing answers it.
        ip(&ns, &format!("route add default dev {inner}"))?;
        sysctl(&ns, "net.ipv4.ip_forward=1")?;
        if let Some(addr6) = addr6 {
            ip(&ns, &format!("addr add {addr6}/64 dev {inner} nodad"))?;
            sysctl(&ns, "net.ipv6.conf.all.forwarding=1")?;
        }
        self.nodes.insert(
            node.to_string(),
            LabNode {
                netns: ns,
                addr,
                addr6,
            },
        );
        Ok(())
    }

    /// Pod `k`: a namespace with a veth to its node, its addresses, and routes both ways.
    fn add_pod(&mut self, snapshot: &Snapshot, k: usize, pod: &Pod) -> Result<(), LabError> {
        let Some(addr) = owned_addr(snapshot, pod, v4) else {
            return Ok(());
        };
        let node = self.nodes[&pod.node].clone();
        let node_ns = &node.netns;
        let ns = self.add_netns(format!("{}p{k}", self.prefix))?;
        let host_side = format!("vp{k}");
        ip(
            node_ns,
            &format!("link add {host_side} type veth peer name eth0 netns {ns}"),
        )?;
        ip(node_ns, &format!("link set {host_side} up"))?;
        // The node side answers for the pods' next hop; it sends to the pod from its
        // underlay address, so the pod sees its node's own address (SPEC 2.13).
        ip(node_ns, &format!("addr add {GATEWAY}/32 dev {host_side}"))?;
        ip(
            node_ns,
            &format!("route add {addr}/32 dev {host_side} src {}", node.addr),
        )?;
        ip(&ns, &format!("addr add {addr}/32 dev eth0"))?;
        ip(&ns, "link set eth0 up")?;
        ip(&ns, &format!("route add {GATEWAY}/32 dev eth0"))?;
        ip(&ns, &format!("route add default via {GATEWAY} dev eth0"))?;
        let addr6 = owned_addr(snapshot, pod, v6).filter(|_| node.addr6.is_some());
        if let (Some(a6), Some(n6)) = (addr6, node.addr6) {
            ip(node_ns, &format!("addr add fe80::1/64 dev {host_side} nodad"))?;
            ip(
                node_ns,
                &format!("-6 route add {a6}/128 dev {host_side} src {n6}"),
            )?;
            ip(&ns, &format!("addr add {a6}/128 dev eth0 nodad"))?;
            ip(&ns, "-6 route add default via fe80::1 dev eth0")?;
        }
        self.pods.push(LabPod {
            key: pod.key.clone(),
            netns: ns,
            node: pod.node.clone(),
            addr,
            addr6,
        });
        Ok(())
    }

    /// Each node reaches the other nodes' pods through their underlay addresses.
    fn route_between_nodes(&self) -> Result<(), LabError> {
        for pod in &self.pods {
            let home = &self.nodes[&pod.node];
            for (name, node) in &self.nodes {
                if *name == pod.node {
                    continue;
                }
                ip(
                    &node.netns,
                    &format!("route add {}/32 via {}", pod.addr, home.addr),
                )?;
                if let (Some(a6), Some(via), Some(_)) = (pod.addr6, home.addr6, node.addr6) {
                    ip(&node.netns, &format!("-6 route add {a6}/128 via {via}"))?;
                }
            }
        }
        Ok(())
    }

    /// Leaves the namespaces in place when the lab is dropped (`netfence sandbox --keep`).
    pub fn keep(&mut self) -> Vec<String> {
        std::mem::take(&mut self.created)
    }

    pub fn pod(&self, key: &str) -> Option<&LabPod> {
        self.pods.iter().find(|p| p.key.to_string() == key)
    }

    /// Programs every node's `table inet netfence` over netlink, as the agent does.
    pub fn program(&self, snapshot: &Snapshot) -> Result<(), LabError> {
        for (node, lab_node) in &self.nodes {
            let table = nft_backend::build::build(&policy_compiler::compile(snapshot, node).0);
            in_netns(&lab_node.netns, move || {
                nft_netlink::apply_full(&table).and_then(|_| nft_netlink::verify(&table))
            })?
            .map_err(|e| LabError::Program(format!("node {node}: {e}")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::owner_pid;

    #[test]
    fn a_namespace_belongs_to_the_pid_before_its_separator() {
        assert_eq!(owner_pid("nfsb32212-ul"), Some(32212));
        assert_eq!(owner_pid("nfsb322120-ul"), Some(322120));
        assert_eq!(owner_pid("nfsb32212-o-p3"), Some(32212));
        for other in ["nfsb-ul", "nfsbx1-ul", "nfsb32212", "nf32212-ul", "nfsb3221a-ul"] {
            assert_eq!(owner_pid(other), None, "{other}");
        }
    }
}
