//! The agent's configuration, from flags or `NETFENCE_` environment variables (the node name
//! is `NODE_NAME`, which the DaemonSet sets from the downward API).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "netfence-agent",
    version,
    about = "netfence node agent: keeps table inet netfence equal to the cluster's NetworkPolicies for this node"
)]
pub struct Config {
    /// This node's name, as in the pods' spec.nodeName
    #[arg(long, env = "NODE_NAME", required_unless_present = "uninstall")]
    pub node_name: Option<String>,
    /// A kubeconfig file; without one, the in-cluster service account (or $KUBECONFIG, or
    /// ~/.kube/config) is used
    #[arg(long, env = "NETFENCE_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Where /healthz, /readyz and /metrics are served
    #[arg(long, env = "NETFENCE_METRICS_ADDR", default_value = "0.0.0.0:9473")]
    pub metrics_addr: SocketAddr,
    /// How long to gather a burst of cluster events before programming, in milliseconds
    #[arg(long, env = "NETFENCE_COALESCE_MS", default_value_t = 5)]
    pub coalesce_ms: u64,
    /// The longest wait between reconnects to the API server, in milliseconds
    #[arg(long, env = "NETFENCE_MAX_BACKOFF_MS", default_value_t = 5000)]
    pub max_backoff_ms: u64,
    /// Log format (RUST_LOG sets the level, default info)
    #[arg(long, env = "NETFENCE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Remove table inet netfence from this node and exit
    #[arg(long)]
    pub uninstall: bool,
}

impl Config {
    /// Checks what clap's types cannot: a node name is a DNS subdomain, the delays are bounded.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(node) = &self.node_name {
            let name_ok = !node.is_empty()
                && node.len() <= 253
                && node
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
            if !name_ok {
                return Err(format!("node name {node:?} is not a Kubernetes node name"));
            }
        }
        if self.coalesce() > Duration::from_secs(1) {
            return Err(format!(
                "coalescing delay {} ms is above the 1000 ms bound",
                self.coalesce_ms
            ));
        }
        if !(100..=300_000).contains(&self.max_backoff_ms) {
            return Err(format!(
                "maximum backoff {} ms is outside 100 to 300000 ms",
                self.max_backoff_ms
            ));
        }
        Ok(())
    }

    pub fn coalesce(&self) -> Duration {
        Duration::from_millis(self.coalesce_ms)
    }

    pub fn max_backoff(&self) -> Duration {
        Duration::from_millis(self.max_backoff_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::Config;
    use clap::Parser;

    #[test]
    fn node_name_and_delays_are_checked() {
        let ok = Config::try_parse_from(["netfence-agent", "--node-name", "node-1"]).unwrap();
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(ok.coalesce().as_millis(), 5);
        assert_eq!(ok.metrics_addr.port(), 9473);
        let bad = Config::try_parse_from(["netfence-agent", "--node-name", "Node_1;rm"]).unwrap();
        assert!(bad.validate().unwrap_err().contains("Node_1;rm"));
        let slow =
            Config::try_parse_from(["netfence-agent", "--node-name", "n", "--coalesce-ms", "5000"]).unwrap();
        assert!(slow.validate().unwrap_err().contains("5000 ms"));
        let backoff =
            Config::try_parse_from(["netfence-agent", "--node-name", "n", "--max-backoff-ms", "1"]).unwrap();
        assert!(backoff.validate().unwrap_err().contains("1 ms"));
    }

    #[test]
    fn the_node_is_required_except_to_uninstall() {
        assert!(Config::try_parse_from(["netfence-agent"]).is_err());
        let un = Config::try_parse_from(["netfence-agent", "--uninstall"]).unwrap();
        assert!(un.uninstall && un.node_name.is_none());
        assert!(
            Config::try_parse_from(["netfence-agent", "--node-name", "n", "--log-format", "yaml"]).is_err()
        );
    }
}
