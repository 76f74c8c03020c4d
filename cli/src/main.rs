//! `netfence`: see what netfence would enforce, offline, from the YAML of a cluster; and (feature
//! `kernel`) program it, remove it, or try it in a sandbox of network namespaces.

#![forbid(unsafe_code)]

mod cmd;
mod error;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use netfence_cli::input::{self, Input};
use std::collections::BTreeMap;

use policy_compiler::{compile_all_reporting, Protocol, Ruleset};

#[cfg(feature = "kernel")]
use cmd::apply::ApplyArgs;
use cmd::compile::CompileArgs;
use cmd::explain::ExplainArgs;
use cmd::matrix::MatrixArgs;
#[cfg(feature = "kernel")]
use cmd::sandbox::SandboxArgs;
use error::CliError;

#[derive(Parser, Debug)]
#[command(
    name = "netfence",
    version,
    about = "Kubernetes NetworkPolicy, compiled to nftables: offline tools",
    arg_required_else_help = true
)]
struct Cli {
    /// Report invalid objects and go on as the agent does (an invalid policy isolates the pods it
    /// selects and allows nothing) instead of stopping with exit 2
    #[arg(long, global = true)]
    allow_invalid: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Pod-to-pod reachability matrix (example: netfence matrix fixtures/demo --port 80)
    Matrix(MatrixArgs),
    /// The nft script for one node (example: netfence compile fixtures/demo --node node-1)
    Compile(CompileArgs),
    /// Why a flow is allowed or denied (example: netfence explain fixtures/demo --from shop/frontend --to shop/db --port 80)
    Explain(ExplainArgs),
    #[cfg(feature = "kernel")]
    /// Program this network namespace's table inet netfence over netlink (example: sudo netfence apply fixtures/demo --node node-1)
    Apply(ApplyArgs),
    #[cfg(feature = "kernel")]
    /// Remove this network namespace's table inet netfence, and nothing else (example: sudo netfence remove)
    Remove,
    #[cfg(feature = "kernel")]
    /// Build the cluster as network namespaces, program it, probe every pair (example: sudo netfence sandbox fixtures/demo --check)
    Sandbox(SandboxArgs),
}

/// The flow every pod pair is asked about, and how the answer is printed (matrix, sandbox).
#[derive(clap::Args, Debug)]
pub struct FlowArgs {
    #[arg(long, value_enum, default_value = "tcp")]
    pub protocol: ProtocolArg,
    #[arg(long, default_value_t = 80)]
    pub port: u16,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: OutputFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ProtocolArg {
    #[value(alias = "TCP")]
    Tcp,
    #[value(alias = "UDP")]
    Udp,
    #[value(alias = "SCTP")]
    Sctp,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

/// Reads the input, printing its notes, and its diagnostics as errors (they stop the command)
/// or, with `--allow-invalid`, as warnings.
pub fn load(paths: &[PathBuf], allow_invalid: bool) -> Result<Input, CliError> {
    let input = input::load(paths).map_err(|e| CliError::Input(e.to_string()))?;
    for note in &input.notes {
        eprintln!("netfence: {note}");
    }
    if !allow_invalid && !input.diagnostics.is_empty() {
        for d in &input.diagnostics {
            eprintln!("netfence: error: {}", input.locate(d));
        }
        return Err(CliError::Input(
            "the input has invalid objects; nothing was done (--allow-invalid goes on as the agent would)"
                .to_string(),
        ));
    }
    for d in &input.diagnostics {
        eprintln!("netfence: warning: {}", input.locate(d));
    }
    Ok(input)
}

/// Compiles every node, printing the compiler's diagnostics as warnings.
pub fn compile_nodes(snapshot: &policy_compiler::Snapshot) -> BTreeMap<String, Ruleset> {
    let (rulesets, diagnostics) = compile_all_reporting(snapshot);
    for d in &diagnostics {
        eprintln!("netfence: warning: {d}");
    }
    rulesets
}

/// Compiles the named nodes only, printing the compiler's diagnostics (once each) as warnings.
pub fn compile_some(
    snapshot: &policy_compiler::Snapshot,
    nodes: impl IntoIterator<Item = String>,
) -> BTreeMap<String, Ruleset> {
    let mut diagnostics = std::collections::BTreeSet::new();
    let rulesets = nodes
        .into_iter()
        .map(|node| {
            let (ruleset, diags) = policy_compiler::compile(snapshot, &node);
            diagnostics.extend(diags);
            (node, ruleset)
        })
        .collect();
    for d in &diagnostics {
        eprintln!("netfence: warning: {d}");
    }
    rulesets
}

pub fn protocol_of(arg: ProtocolArg) -> Protocol {
    match arg {
        ProtocolArg::Tcp => Protocol::Tcp,
        ProtocolArg::Udp => Protocol::Udp,
        ProtocolArg::Sctp => Protocol::Sctp,
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match &cli.command {
        Command::Matrix(args) => cmd::matrix::run_matrix(args, cli.allow_invalid),
        Command::Compile(args) => cmd::compile::run_compile(args, cli.allow_invalid),
        #[cfg(feature = "kernel")]
        Command::Apply(args) => cmd::apply::run_apply(args, cli.allow_invalid),
        Command::Explain(args) => cmd::explain::run_explain(args, cli.allow_invalid),
        #[cfg(feature = "kernel")]
        Command::Sandbox(args) => cmd::sandbox::run_sandbox(args, cli.allow_invalid),
        #[cfg(feature = "kernel")]
        Command::Remove => nft_netlink::delete_table()
            .map(|()| println!("removed table inet netfence"))
            .map_err(CliError::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netfence: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
