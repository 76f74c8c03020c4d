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
use std::process::Command;

use policy_compiler::{ObjectKey, Snapshot};

/// Why the lab could not be built.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("sandbox: `{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("sandbox: cannot enter network namespace {name}: {reason}")]
    Enter { name: String, reason: String },
    #[error("sandbox: node {0} has no IPv4 InternalIP; give its Node object one")]
    NodeAddress(String),
    #[error("sandbox: {0}")]
    Program(String),
}

/// The next hop every pod routes through, answered by its node's veth.
const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

fn run(args: &[&str]) -> Result<String, LabError> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| LabError::Command {
            command: args.join(" "),
            stderr: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(LabError::Command {
            command: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a closure on a thread that has entered the named network namespace.
pub fn in_netns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, LabError> {
    let path = format!("/var/run/netns/{name}");
    let name = name.to_string();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).map_err(|e| LabError::Enter {
            name: name.clone(),
            reason: e.to_string(),
        })?;
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| LabError::Enter {
            name: name.clone(),
            reason: e.to_string(),
        })?;
        Ok(f())
    })
    .join()
    .map_err(|_| LabError::Program("a namespace thread panicked".to_string()))?
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

#[derive(Debug)]
pub struct Lab {
    pub prefix: String,
    /// Node name to its namespace and underlay address.
    pub nodes: BTreeMap<String, (String, Ipv4Addr)>,
    /// Node name to its IPv6 underlay address, for dual-stack nodes.
    pub nodes6: BTreeMap<String, Ipv6Addr>,
    pub pods: Vec<LabPod>,
    created: Vec<String>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for name in self.created.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

/// The prefix family of every sandbox namespace.
pub const PREFIX: &str = "nfsb";

/// Removes the namespaces whose names start with `prefix`; returns how many.
pub fn remove_all(prefix: &str) -> usize {
    let names: Vec<String> = leftovers()
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect();
    for name in &names {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
    }
    names.len()
}

/// Names of namespaces left by sandbox runs (prefix `nfsb`).
pub fn leftovers() -> Vec<String> {
    run(&["ip", "netns", "list"])
        .map(|out| {
            out.lines()
                .filter_map(|l| l.split_whitespace().next())
                .filter(|n| n.starts_with("nfsb"))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

impl Lab {
    fn add_netns(&mut self, name: String) -> Result<String, LabError> {
        run(&["ip", "netns", "add", &name])?;
        self.created.push(name.clone());
        run(&["ip", "-n", &name, "link", "set", "lo", "up"])?;
        // No duplicate address detection: the lab's addresses are unique by construction, and
        // a tentative address would drop the first probes.
        run(&[
            "ip",
            "netns",
            "exec",
            &name,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        ])?;
        Ok(name)
    }

    /// Builds the namespaces, links and routes for every enforced pod of the snapshot (IPv4).
    pub fn build(snapshot: &Snapshot, prefix: &str) -> Result<Lab, LabError> {
        let mut lab = Lab {
            nodes6: BTreeMap::new(),
            prefix: prefix.to_string(),
            nodes: BTreeMap::new(),
            pods: Vec::new(),
            created: Vec::new(),
        };
        let underlay = lab.add_netns(format!("{prefix}-ul"))?;
        run(&["ip", "-n", &underlay, "link", "add", "br0", "type", "bridge"])?;
        run(&["ip", "-n", &underlay, "link", "set", "br0", "up"])?;

        let pods: Vec<_> = snapshot.pods.values().filter(|p| p.is_enforced()).collect();
        let mut node_names: Vec<String> = pods.iter().map(|p| p.node.clone()).collect();
        node_names.sort();
        node_names.dedup();
        for (i, node) in node_names.iter().enumerate() {
            let addr = snapshot
                .nodes
                .get(node)
                .and_then(|n| {
                    n.addrs.iter().find_map(|a| match a {
                        IpAddr::V4(v4) => Some(*v4),
                        IpAddr::V6(_) => None,
                    })
                })
                .ok_or_else(|| LabError::NodeAddress(node.clone()))?;
            let ns = lab.add_netns(format!("{prefix}-n{i}"))?;
            let (outer, inner) = (format!("ul{i}"), format!("un{i}"));
            run(&[
                "ip", "-n", &underlay, "link", "add", &outer, "type", "veth", "peer", "name", &inner,
                "netns", &ns,
            ])?;
            run(&[
                "ip", "-n", &underlay, "link", "set", &outer, "master", "br0", "up",
            ])?;
            run(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/16"),
                "dev",
                &inner,
            ])?;
            run(&["ip", "-n", &ns, "link", "set", &inner, "up"])?;
            run(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ])?;
            let addr6 = snapshot.nodes.get(node).and_then(|n| {
                n.addrs.iter().find_map(|a| match a {
                    IpAddr::V6(v6) => Some(*v6),
                    IpAddr::V4(_) => None,
                })
            });
            if let Some(addr6) = addr6 {
                run(&[
                    "ip",
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{addr6}/64"),
                    "dev",
                    &inner,
                    "nodad",
                ])?;
                run(&[
                    "ip",
                    "netns",
                    "exec",
                    &ns,
                    "sysctl",
                    "-qw",
                    "net.ipv6.conf.all.forwarding=1",
                ])?;
                lab.nodes6.insert(node.clone(), addr6);
            }
            lab.nodes.insert(node.clone(), (ns, addr));
        }
        for (k, pod) in pods.iter().enumerate() {
            let Some(addr) = pod.ips.iter().find_map(|a| match a {
                IpAddr::V4(v4) if snapshot.owner_of(*a).is_some_and(|o| o.key == pod.key) => Some(*v4),
                _ => None,
            }) else {
                continue;
            };
            let (node_ns, _) = lab.nodes[&pod.node].clone();
            let ns = lab.add_netns(format!("{prefix}-p{k}"))?;
            let host_side = format!("vp{k}");
            run(&[
                "ip", "-n", &node_ns, "link", "add", &host_side, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ])?;
            run(&["ip", "-n", &node_ns, "link", "set", &host_side, "up"])?;
            // The node side answers for the pods' next hop; it sends to the pod from its
            // underlay address, so the pod sees its node's own address (SPEC 2.13).
            run(&[
                "ip",
                "-n",
                &node_ns,
                "addr",
                "add",
                &format!("{GATEWAY}/32"),
                "dev",
                &host_side,
            ])?;
            let (_, node_addr) = lab.nodes[&pod.node];
            run(&[
                "ip",
                "-n",
                &node_ns,
                "route",
                "add",
                &format!("{addr}/32"),
                "dev",
                &host_side,
                "src",
                &node_addr.to_string(),
            ])?;
            run(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/32"),
                "dev",
                "eth0",
            ])?;
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
            run(&[
                "ip",
                "-n",
                &ns,
                "route",
                "add",
                &format!("{GATEWAY}/32"),
                "dev",
                "eth0",
            ])?;
            run(&[
                "ip",
                "-n",
                &ns,
                "route",
                "add",
                "default",
                "via",
                &GATEWAY.to_string(),
                "dev",
                "eth0",
            ])?;
            let node6 = lab.nodes6.get(&pod.node).copied();
            let addr6 = pod
                .ips
                .iter()
                .find_map(|a| match a {
                    IpAddr::V6(v6) if snapshot.owner_of(*a).is_some_and(|o| o.key == pod.key) => Some(*v6),
                    _ => None,
                })
                .filter(|_| node6.is_some());
            if let (Some(a6), Some(n6)) = (addr6, node6) {
                run(&[
                    "ip",
                    "-n",
                    &node_ns,
                    "addr",
                    "add",
                    "fe80::1/64",
                    "dev",
                    &host_side,
                    "nodad",
                ])?;
                run(&[
                    "ip",
                    "-n",
                    &node_ns,
                    "-6",
                    "route",
                    "add",
                    &format!("{a6}/128"),
                    "dev",
                    &host_side,
                    "src",
                    &n6.to_string(),
                ])?;
                run(&[
                    "ip",
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{a6}/128"),
                    "dev",
                    "eth0",
                    "nodad",
                ])?;
                run(&[
                    "ip", "-n", &ns, "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0",
                ])?;
            }
            lab.pods.push(LabPod {
                key: pod.key.clone(),
                netns: ns,
                node: pod.node.clone(),
                addr,
                addr6,
            });
        }
        // Each node reaches the other nodes' pods through their underlay addresses.
        for pod in &lab.pods {
            let (_, via) = lab.nodes[&pod.node];
            for (node, (ns, _)) in &lab.nodes {
                if *node != pod.node {
                    run(&[
                        "ip",
                        "-n",
                        ns,
                        "route",
                        "add",
                        &format!("{}/32", pod.addr),
                        "via",
                        &via.to_string(),
                    ])?;
                }
            }
        }
        for pod in &lab.pods {
            let (Some(a6), Some(via)) = (pod.addr6, lab.nodes6.get(&pod.node)) else {
                continue;
            };
            for (node, (ns, _)) in &lab.nodes {
                if *node != pod.node && lab.nodes6.contains_key(node) {
                    run(&[
                        "ip",
                        "-n",
                        ns,
                        "-6",
                        "route",
                        "add",
                        &format!("{a6}/128"),
                        "via",
                        &via.to_string(),
                    ])?;
                }
            }
        }
        Ok(lab)
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
        for (node, (ns, _)) in &self.nodes {
            let table = nft_backend::build::build(&policy_compiler::compile(snapshot, node).0);
            in_netns(ns, move || {
                nft_backend::netlink::apply_full(&table).and_then(|_| nft_backend::netlink::verify(&table))
            })?
            .map_err(|e| LabError::Program(format!("node {node}: {e}")))?;
        }
        Ok(())
    }
}
