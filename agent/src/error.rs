//! Why the agent stopped, by kind, each with its exit code: a supervisor (or a person reading
//! `kubectl describe pod`) tells a bad flag from an unreachable cluster configuration from a
//! node that refuses netfilter changes without reading the log.

use std::io;
use std::net::SocketAddr;

use nft_netlink::NetlinkError;

/// What stopped the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A flag or variable out of its range.
    #[error("{0}")]
    Usage(String),
    /// The kubeconfig or the in-cluster service account cannot be read.
    #[error("cluster configuration: {0}")]
    ClusterConfig(String),
    /// The metrics address cannot be listened on.
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// A thread, the runtime or a signal handler could not start.
    #[error("cannot start {what}: {source}")]
    Start {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// Netfilter refused (`--uninstall`).
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
}

impl AgentError {
    /// 2: usage; 3: cluster configuration; 4: netfilter (no CAP_NET_ADMIN, or refused);
    /// 1: anything else that kept it from starting.
    pub fn exit_code(&self) -> u8 {
        match self {
            AgentError::Usage(_) => 2,
            AgentError::ClusterConfig(_) => 3,
            AgentError::Netlink(_) => 4,
            AgentError::Metrics { .. } | AgentError::Start { .. } => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::AgentError;

    #[test]
    fn each_kind_has_its_exit_code() {
        let io = || std::io::Error::other("x");
        let cases = [
            (AgentError::Usage("bad flag".into()), 2),
            (AgentError::ClusterConfig("no kubeconfig".into()), 3),
            (AgentError::Netlink(nft_netlink::NetlinkError::Permission), 4),
            (
                AgentError::Metrics {
                    addr: "127.0.0.1:1".parse().unwrap(),
                    source: io(),
                },
                1,
            ),
            (
                AgentError::Start {
                    what: "the writer",
                    source: io(),
                },
                1,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(error.exit_code(), code, "{error}");
        }
    }
}
