//! `netfence matrix`: pod-to-pod reachability, from the compiled rulesets or the reference.

use std::path::PathBuf;

use clap::ValueEnum;
use netfence_cli::matrix::{self, Engine};

use crate::{compile_nodes, load, protocol_of, CliError, FlowArgs, OutputFormat};

#[derive(clap::Args, Debug)]
pub struct MatrixArgs {
    /// Files or directories of cluster YAML/JSON; - for stdin
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    flow: FlowArgs,
    /// Which evaluator decides: the compiled per-node rulesets, or the reference reading of the spec
    #[arg(long, value_enum, default_value = "compiled")]
    engine: EngineArg,
    /// Compute with both engines; exit 1 listing the cells where they differ
    #[arg(long)]
    check: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum EngineArg {
    Compiled,
    Reference,
}

pub fn run_matrix(args: &MatrixArgs, allow_invalid: bool) -> Result<(), CliError> {
    let input = load(&args.paths, allow_invalid)?;
    let protocol = protocol_of(args.flow.protocol);
    let rulesets = compile_nodes(&input.snapshot);
    let (engine, other_engine) = match args.engine {
        EngineArg::Compiled => (Engine::Compiled(&rulesets), Engine::Reference),
        EngineArg::Reference => (Engine::Reference, Engine::Compiled(&rulesets)),
    };
    let m = matrix::compute(&input.snapshot, engine, protocol, args.flow.port);
    match args.flow.output {
        OutputFormat::Table => print!("{}", m.to_table()),
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&m.to_json()).expect("JSON of plain values")
        ),
    }
    if args.check {
        let other = matrix::compute(&input.snapshot, other_engine, protocol, args.flow.port);
        let diffs = m.differences(&other);
        if !diffs.is_empty() {
            let name = |e: Engine| {
                if matches!(e, Engine::Reference) {
                    "reference"
                } else {
                    "compiled"
                }
            };
            let n = diffs.len();
            for (from, to, ours, theirs) in diffs {
                eprintln!(
                    "netfence: check: {from} -> {to}: {} says {ours}, {} says {theirs}",
                    name(engine),
                    name(other_engine)
                );
            }
            return Err(CliError::CheckFailed(n));
        }
        eprintln!("netfence: check: compiled and reference engines agree on every cell");
    }
    Ok(())
}
