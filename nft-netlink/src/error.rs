//! What can fail in a transaction or a read-back, and whether trying again may help.

use std::io;

use nftnl_sys::libc;

/// What failed, in which phase, and whether trying again may help.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink: cannot open a netfilter socket (netfence needs CAP_NET_ADMIN): {0}")]
    Socket(#[source] io::Error),
    #[error("netlink: not permitted: programming nftables needs CAP_NET_ADMIN (run as root, or grant the capability); `netfence matrix` and `netfence compile` work without it")]
    Permission,
    #[error("netlink: sending the batch failed: {0}")]
    Send(#[source] io::Error),
    #[error("netlink: the kernel refused {object}: {source}; the transaction was not applied")]
    Refused {
        object: String,
        #[source]
        source: io::Error,
    },
    #[error("netlink: reading acknowledgements failed: {0}")]
    Receive(#[source] io::Error),
    #[error(
        "netlink: the table was applied, but the kernel holds something else (from what was intended: {0})"
    )]
    Mismatch(String),
    #[error("netlink: {0} contains a NUL byte")]
    Name(String),
}

impl NetlinkError {
    /// Whether the same transaction may succeed later (a busy kernel, a full socket buffer).
    pub fn is_retryable(&self) -> bool {
        match self {
            NetlinkError::Send(_) | NetlinkError::Receive(_) => true,
            NetlinkError::Refused { source, .. } => {
                matches!(
                    source.raw_os_error(),
                    Some(libc::EBUSY) | Some(libc::EAGAIN) | Some(libc::ENOBUFS)
                )
            }
            NetlinkError::Socket(_)
            | NetlinkError::Name(_)
            | NetlinkError::Mismatch(_)
            | NetlinkError::Permission => false,
        }
    }
}
