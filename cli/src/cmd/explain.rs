//! `netfence explain`: why one flow is allowed or denied.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;
use netfence_cli::explain::{explain, Endpoint};

use crate::{compile_nodes, load, protocol_of, ProtocolArg};

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

pub fn run_explain(args: &ExplainArgs, allow_invalid: bool) -> ExitCode {
    let (from, to) = match (Endpoint::parse(&args.from), Endpoint::parse(&args.to)) {
        (Ok(from), Ok(to)) => (from, to),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("netfence: error: {e}");
            return ExitCode::from(2);
        }
    };
    let input = match load(&args.paths, allow_invalid) {
        Ok(input) => input,
        Err(code) => return code,
    };
    let rulesets = compile_nodes(&input.snapshot);
    match explain(
        &input.snapshot,
        &rulesets,
        &from,
        &to,
        protocol_of(args.protocol),
        args.port,
    ) {
        Ok(e) => {
            match args.output {
                ExplainFormat::Text => print!("{}", e.to_text()),
                ExplainFormat::Json => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&e.to_json()).expect("JSON of plain values")
                    )
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("netfence: error: {e}");
            ExitCode::from(2)
        }
    }
}
