//! `netfence`: see what netfence would enforce, offline, from the YAML of a cluster.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use netfence_cli::input::{self, Input};
use netfence_cli::matrix::{self, Engine};
use policy_compiler::{compile_all_reporting, Protocol};

#[derive(Parser, Debug)]
#[command(
    name = "netfence",
    version,
    about = "Kubernetes NetworkPolicy, compiled to nftables: offline tools",
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Pod-to-pod reachability matrix (example: netfence matrix fixtures/demo --port 80)
    Matrix(MatrixArgs),
}

#[derive(clap::Args, Debug)]
struct MatrixArgs {
    /// Files or directories of cluster YAML/JSON; - for stdin
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "tcp")]
    protocol: ProtocolArg,
    #[arg(long, default_value_t = 80)]
    port: u16,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: OutputFormat,
    /// Which evaluator decides: the compiled per-node rulesets, or the reference reading of the spec
    #[arg(long, value_enum, default_value = "compiled")]
    engine: EngineArg,
    /// Compute with both engines; exit 1 listing the cells where they differ
    #[arg(long)]
    check: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ProtocolArg {
    #[value(alias = "TCP")]
    Tcp,
    #[value(alias = "UDP")]
    Udp,
    #[value(alias = "SCTP")]
    Sctp,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum OutputFormat {
    Table,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum EngineArg {
    Compiled,
    Reference,
}

fn load(paths: &[PathBuf]) -> Result<Input, ExitCode> {
    match input::load(paths) {
        Ok(input) => {
            for note in &input.notes {
                eprintln!("netfence: {note}");
            }
            for d in &input.diagnostics {
                eprintln!("netfence: warning: {d}");
            }
            Ok(input)
        }
        Err(e) => {
            eprintln!("netfence: error: {e}");
            Err(ExitCode::from(2))
        }
    }
}

fn run_matrix(args: &MatrixArgs) -> ExitCode {
    let input = match load(&args.paths) {
        Ok(input) => input,
        Err(code) => return code,
    };
    let protocol = match args.protocol {
        ProtocolArg::Tcp => Protocol::Tcp,
        ProtocolArg::Udp => Protocol::Udp,
        ProtocolArg::Sctp => Protocol::Sctp,
    };
    let (rulesets, diagnostics) = compile_all_reporting(&input.snapshot);
    for d in &diagnostics {
        eprintln!("netfence: warning: {d}");
    }
    let (engine, other_engine) = match args.engine {
        EngineArg::Compiled => (Engine::Compiled(&rulesets), Engine::Reference),
        EngineArg::Reference => (Engine::Reference, Engine::Compiled(&rulesets)),
    };
    let m = matrix::compute(&input.snapshot, engine, protocol, args.port);
    match args.output {
        OutputFormat::Table => print!("{}", m.to_table()),
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&m.to_json()).expect("JSON of plain values")
        ),
    }
    if args.check {
        let other = matrix::compute(&input.snapshot, other_engine, protocol, args.port);
        let diffs = m.differences(&other);
        if !diffs.is_empty() {
            let name = |e: Engine| {
                if matches!(e, Engine::Reference) {
                    "reference"
                } else {
                    "compiled"
                }
            };
            for (from, to, ours, theirs) in diffs {
                eprintln!(
                    "netfence: check: {from} -> {to}: {} says {ours}, {} says {theirs}",
                    name(engine),
                    name(other_engine)
                );
            }
            return ExitCode::from(1);
        }
        eprintln!("netfence: check: compiled and reference engines agree on every cell");
    }
    ExitCode::SUCCESS
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
    match &cli.command {
        Command::Matrix(args) => run_matrix(args),
    }
}
