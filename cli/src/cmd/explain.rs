//! `netfence explain`: why one flow is allowed or denied.

use std::path::PathBuf;

use clap::ValueEnum;
use netfence_cli::explain::{deciding_nodes, explain, Endpoint};

use crate::{compile_some, load, protocol_of, CliError, ProtocolArg};

#[derive(clap::Args, Debug)]
pub struct ExplainArgs {
    /// Files or directories of cluster YAML/JSON; - for stdin
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// The source: NAMESPACE/POD or an address
    #[arg(long)]
    from: String,
    /// The destination: NAMESPACE/POD or an address
    #[arg(long)]
    to: String,
    #[arg(long)]
    port: u16,
    #[arg(long, value_enum, default_value = "tcp")]
    protocol: ProtocolArg,
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: ExplainFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ExplainFormat {
    Text,
    Json,
}

pub fn run_explain(args: &ExplainArgs, allow_invalid: bool) -> Result<(), CliError> {
    let from = Endpoint::parse(&args.from).map_err(|e| CliError::Usage(e.to_string()))?;
    let to = Endpoint::parse(&args.to).map_err(|e| CliError::Usage(e.to_string()))?;
    let input = load(&args.paths, allow_invalid)?;
    let rulesets = compile_some(&input.snapshot, deciding_nodes(&input.snapshot, [&from, &to]));
    let e = explain(
        &input.snapshot,
        &rulesets,
        &from,
        &to,
        protocol_of(args.protocol),
        args.port,
    )
    .map_err(|e| CliError::Usage(e.to_string()))?;
    match args.output {
        ExplainFormat::Text => print!("{}", e.to_text()),
        ExplainFormat::Json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&e.to_json()).expect("JSON of plain values")
            )
        }
    }
    Ok(())
}
