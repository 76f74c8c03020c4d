//! `netfence-agent`: the node agent. This first version reads and checks its configuration; the
//! watchers and the writer come with the agent issue (see ARCHITECTURE.md).

mod config;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let config = match config::Config::try_parse() {
        Ok(config) => config,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match config.validate() {
        Ok(()) => {
            eprintln!(
                "netfence-agent: configuration for node {} is valid; watching the cluster is not built yet, exiting",
                config.node_name
            );
            ExitCode::from(1)
        }
        Err(reason) => {
            eprintln!("netfence-agent: error: {reason}");
            ExitCode::from(2)
        }
    }
}
