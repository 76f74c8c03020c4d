//! Why a command failed, by kind, each with its exit code (SPEC 6): 2 for what the user can fix
//! in the command line or the input (usage, bad input, invalid objects, missing privileges),
//! 1 for a check that found disagreements or work the system refused (the kernel, the sandbox,
//! writing output).

use std::path::PathBuf;

/// What stopped a command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Input that cannot be read, or objects lowering reported (without `--allow-invalid`); the
    /// details were printed as they were found.
    #[error("{0}")]
    Input(String),
    /// Arguments that do not fit the input (an unknown pod, a malformed address).
    #[error("{0}")]
    Usage(String),
    /// The command needs privileges it does not have.
    #[error("{0}")]
    Privilege(String),
    /// A check found disagreements (each was printed).
    #[error("check: {0} disagreements")]
    CheckFailed(usize),
    /// Output that could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Netfilter refused, or could not be reached.
    #[cfg(feature = "kernel")]
    #[error(transparent)]
    Netlink(#[from] nft_netlink::NetlinkError),
    /// The sandbox could not be built, programmed or probed.
    #[cfg(feature = "kernel")]
    #[error(transparent)]
    Sandbox(#[from] netfence_cli::sandbox::lab::LabError),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Input(_) | CliError::Usage(_) | CliError::Privilege(_) => 2,
            CliError::CheckFailed(_) | CliError::Write { .. } => 1,
            #[cfg(feature = "kernel")]
            CliError::Netlink(nft_netlink::NetlinkError::Permission | nft_netlink::NetlinkError::Name(_)) => {
                2
            }
            #[cfg(feature = "kernel")]
            CliError::Netlink(_) | CliError::Sandbox(_) => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CliError;

    #[test]
    fn each_kind_has_its_exit_code() {
        let mut cases = vec![
            (CliError::Input("bad".into()), 2),
            (CliError::Usage("no such pod".into()), 2),
            (CliError::Privilege("needs root".into()), 2),
            (CliError::CheckFailed(3), 1),
            (
                CliError::Write {
                    path: "x".into(),
                    source: std::io::Error::other("full"),
                },
                1,
            ),
        ];
        #[cfg(feature = "kernel")]
        cases.extend([
            (CliError::Netlink(nft_netlink::NetlinkError::Permission), 2),
            (CliError::Netlink(nft_netlink::NetlinkError::Name("x".into())), 2),
            (
                CliError::Netlink(nft_netlink::NetlinkError::Mismatch("x".into())),
                1,
            ),
        ]);
        for (error, code) in cases {
            assert_eq!(error.exit_code(), code, "{error}");
        }
    }
}
