//! What the agent's kernel test and benchmark share: cluster objects as the API serves them,
//! and the agent process run inside a node's namespace.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub fn namespace(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

pub fn node(name: &str, addr: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
           "status": {"addresses": [{"type": "InternalIP", "address": addr}]}})
}

pub fn pod(ns: &str, name: &str, node: &str, ip: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{ns}-{name}"), "labels": labels,
                        "annotations": {"note": "dropped by the agent"}},
           "spec": {"nodeName": node, "containers": [{"name": "main", "image": "x",
                    "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}]}]},
           "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
}

/// A policy on the pods `selector` selects in `ns`, admitting ingress from `from` peers.
pub fn ingress_policy(ns: &str, name: &str, selector: Value, from: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"podSelector": selector, "policyTypes": ["Ingress"], "ingress": [{"from": from}]}})
}

/// The agent, started in a node's namespace; killed when dropped.
pub struct Agent {
    pub child: Child,
    pub log: std::path::PathBuf,
}

impl Agent {
    pub fn start(
        netns: &str,
        node: &str,
        kubeconfig: &std::path::Path,
        metrics_port: u16,
        log: &std::path::Path,
        max_backoff_ms: u64,
    ) -> Agent {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", netns, env!("CARGO_BIN_EXE_netfence-agent")])
            .args([
                "--node-name",
                node,
                "--coalesce-ms",
                "5",
                "--max-backoff-ms",
                &max_backoff_ms.to_string(),
            ])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("agent starts");
        Agent {
            child,
            log: log.to_path_buf(),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal and waits for the exit; returns the exit code.
    pub fn signal(&mut self, signal: nix::sys::signal::Signal) -> Option<i32> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, signal);
        self.child.wait().ok().and_then(|s| s.code())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to `limit` for `check` to hold.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}
