//! The agent's configuration, from flags or `NETFENCE_` environment variables (the node name
//! is `NODE_NAME`, which the DaemonSet sets from the downward API).

use std::time::Duration;

#[derive(clap::Parser, Debug, Clone)]
#[command(name = "netfence-agent", version, about = "netfence node agent")]
pub struct Config {
    /// This node's name, as in the pods' spec.nodeName
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// How long to gather a burst of cluster events before programming, in milliseconds
    #[arg(long, env = "NETFENCE_COALESCE_MS", default_value_t = 5)]
    pub coalesce_ms: u64,
}

impl Config {
    /// Checks what clap's types cannot: a node name is a DNS subdomain, the delay is bounded.
    pub fn validate(&self) -> Result<(), String> {
        let name_ok = !self.node_name.is_empty()
            && self.node_name.len() <= 253
            && self
                .node_name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !name_ok {
            return Err(format!(
                "node name {:?} is not a Kubernetes node name",
                self.node_name
            ));
        }
        if self.coalesce() > Duration::from_secs(1) {
            return Err(format!(
                "coalescing delay {} ms is above the 1000 ms bound",
                self.coalesce_ms
            ));
        }
        Ok(())
    }

    pub fn coalesce(&self) -> Duration {
        Duration::from_millis(self.coalesce_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::Config;
    use clap::Parser;

    #[test]
    fn node_name_and_delay_are_checked() {
        let ok = Config::try_parse_from(["netfence-agent", "--node-name", "node-1"]).unwrap();
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(ok.coalesce().as_millis(), 5);
        let bad = Config::try_parse_from(["netfence-agent", "--node-name", "Node_1;rm"]).unwrap();
        assert!(bad.validate().unwrap_err().contains("Node_1;rm"));
        let slow =
            Config::try_parse_from(["netfence-agent", "--node-name", "n", "--coalesce-ms", "5000"]).unwrap();
        assert!(slow.validate().unwrap_err().contains("5000 ms"));
    }
}
