//! `netfence`: see what netfence would enforce, offline, from the YAML of a cluster.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use netfence_cli::explain::{explain, Endpoint};
use netfence_cli::input::{self, Input};
use netfence_cli::matrix::{self, Engine};
use nft_backend::{build::build, netlink, render::render};
use policy_compiler::{compile, compile_all_reporting, Protocol};

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
    /// Program this network namespace's table inet netfence over netlink (example: sudo netfence apply fixtures/demo --node node-1)
    Apply(ApplyArgs),
    /// Remove this network namespace's table inet netfence, and nothing else (example: sudo netfence remove)
    Remove,
    /// Build the cluster as network namespaces, program it, probe every pair (example: sudo netfence sandbox fixtures/demo --check)
    Sandbox(SandboxArgs),
}

#[derive(clap::Args, Debug)]
struct CompileArgs {
    /// Files or directories of cluster YAML/JSON; - for stdin
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// The node to compile for (default: the first node, by name)
    #[arg(long, conflicts_with = "all_nodes")]
    node: Option<String>,
    /// Write the script here instead of stdout (only when compiling succeeded)
    #[arg(long, short = 'o', conflicts_with = "all_nodes")]
    output: Option<PathBuf>,
    /// Compile every node, one script each, into --output-dir
    #[arg(long, requires = "output_dir")]
    all_nodes: bool,
    /// Where --all-nodes writes NODE.nft files
    #[arg(long, requires = "all_nodes")]
    output_dir: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct ExplainArgs {
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
enum ExplainFormat {
    Text,
    Json,
}

#[derive(clap::Args, Debug)]
struct SandboxArgs {
    /// Files or directories of cluster YAML/JSON; - for stdin
    #[arg(required_unless_present = "cleanup")]
    paths: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "tcp")]
    protocol: ProtocolArg,
    #[arg(long, default_value_t = 80)]
    port: u16,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: OutputFormat,
    /// Also compute the compiled matrix; exit 1 listing the cells where the kernel disagrees
    #[arg(long)]
    check: bool,
    /// Leave the namespaces up, and print how to enter and remove them
    #[arg(long)]
    keep: bool,
    /// Remove the namespaces that earlier runs left, and nothing else
    #[arg(long, conflicts_with_all = ["check", "keep"])]
    cleanup: bool,
}

#[derive(clap::Args, Debug)]
struct ApplyArgs {
    /// Files or directories of cluster YAML/JSON; - for stdin
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// The node whose policy this network namespace enforces
    #[arg(long, required = true)]
    node: String,
    /// Print what would be sent, without sending
    #[arg(long)]
    dry_run: bool,
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

fn load(paths: &[PathBuf], allow_invalid: bool) -> Result<Input, ExitCode> {
    match input::load(paths) {
        Ok(input) => {
            for note in &input.notes {
                eprintln!("netfence: {note}");
            }
            if !allow_invalid && !input.diagnostics.is_empty() {
                for d in &input.diagnostics {
                    eprintln!("netfence: error: {}", input.locate(d));
                }
                eprintln!("netfence: the input has invalid objects; nothing was done (--allow-invalid goes on as the agent would)");
                return Err(ExitCode::from(2));
            }
            for d in &input.diagnostics {
                eprintln!("netfence: warning: {}", input.locate(d));
            }
            Ok(input)
        }
        Err(e) => {
            eprintln!("netfence: error: {e}");
            Err(ExitCode::from(2))
        }
    }
}

fn protocol_of(arg: ProtocolArg) -> Protocol {
    match arg {
        ProtocolArg::Tcp => Protocol::Tcp,
        ProtocolArg::Udp => Protocol::Udp,
        ProtocolArg::Sctp => Protocol::Sctp,
    }
}

fn run_explain(args: &ExplainArgs, allow_invalid: bool) -> ExitCode {
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
    let (rulesets, diagnostics) = compile_all_reporting(&input.snapshot);
    for d in &diagnostics {
        eprintln!("netfence: warning: {d}");
    }
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

fn run_sandbox(args: &SandboxArgs, allow_invalid: bool) -> ExitCode {
    use netfence_cli::sandbox::{lab, run};
    if args.cleanup {
        let n = lab::remove_all(lab::PREFIX);
        println!("removed {n} sandbox network namespaces");
        return ExitCode::SUCCESS;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "netfence: error: the sandbox makes network namespaces and programs nftables: it needs root \
             (CAP_NET_ADMIN and CAP_SYS_ADMIN); `netfence matrix` computes the matrix without them"
        );
        return ExitCode::from(2);
    }
    let input = match load(&args.paths, allow_invalid) {
        Ok(input) => input,
        Err(code) => return code,
    };
    let mut snapshot = input.snapshot;
    for note in run::address_nodes(&mut snapshot) {
        eprintln!("netfence: {note}");
    }
    let (rulesets, diagnostics) = compile_all_reporting(&snapshot);
    for d in &diagnostics {
        eprintln!("netfence: warning: {d}");
    }
    let protocol = protocol_of(args.protocol);
    let prefix = format!("{}{}", lab::PREFIX, std::process::id());
    let on_signal = prefix.clone();
    // Ctrl-C and SIGTERM: remove this run's namespaces before exiting.
    let _ = ctrlc::set_handler(move || {
        lab::remove_all(&on_signal);
        std::process::exit(130);
    });
    let started = std::time::Instant::now();
    let result = lab::Lab::build(&snapshot, &prefix).and_then(|lab| {
        lab.program(&snapshot)?;
        let observed = run::probe_all(&lab, &snapshot, protocol, args.port)?;
        Ok((lab, observed))
    });
    let (mut lab, observed) = match result {
        Ok(done) => done,
        Err(e) => {
            eprintln!("netfence: error: {e}");
            return ExitCode::from(1);
        }
    };
    match args.output {
        OutputFormat::Table => {
            print!("{}", observed.matrix.to_table());
            if let Some(m6) = &observed.matrix6 {
                print!("IPv6, the dual-stack pods: {}", m6.to_table());
            }
            for p in &observed.node_probes {
                println!(
                    "{} -> {}: {}",
                    p.from,
                    p.to,
                    if p.allowed { "allowed" } else { "denied" }
                );
            }
        }
        OutputFormat::Json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&observed.matrix.to_json()).expect("JSON of plain values")
            )
        }
    }
    eprintln!(
        "netfence: sandbox: {} nodes, {} pods, {} probes in {:.1} s",
        lab.nodes.len(),
        lab.pods.len(),
        observed.matrix.pods.len().pow(2)
            + observed.matrix6.as_ref().map_or(0, |m| m.pods.len().pow(2))
            + observed.node_probes.len(),
        started.elapsed().as_secs_f64()
    );
    let mut code = ExitCode::SUCCESS;
    if args.check {
        let diffs = run::disagreements(&lab, &rulesets, &observed, protocol, args.port);
        if diffs.is_empty() {
            eprintln!("netfence: check: the kernel and the compiled rulesets agree on every probe");
        } else {
            for d in &diffs {
                eprintln!("netfence: check: {d}");
            }
            code = ExitCode::from(1);
        }
    }
    if args.keep {
        let names = lab.keep();
        eprintln!(
            "netfence: kept {} namespaces; enter one with: ip netns exec NAME bash",
            names.len()
        );
        for pod in &lab.pods {
            eprintln!("netfence:   {} ({}): {}", pod.key, pod.addr, pod.netns);
        }
        for (node, (ns, addr)) in &lab.nodes {
            eprintln!("netfence:   node {node} ({addr}): {ns}");
        }
        eprintln!("netfence: remove them with: netfence sandbox --cleanup");
    }
    code
}

fn run_matrix(args: &MatrixArgs, allow_invalid: bool) -> ExitCode {
    let input = match load(&args.paths, allow_invalid) {
        Ok(input) => input,
        Err(code) => return code,
    };
    let protocol = protocol_of(args.protocol);
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

/// Loads the input and compiles one node's table; `None` after printing why.
fn node_table(
    paths: &[PathBuf],
    node: Option<&str>,
    allow_invalid: bool,
) -> Result<(String, nft_backend::nft::Table), ExitCode> {
    let input = load(paths, allow_invalid)?;
    let nodes = input.snapshot.node_names();
    let node = match node {
        Some(n) => n.to_string(),
        None => match nodes.first() {
            Some(n) => n.clone(),
            None => {
                eprintln!(
                    "netfence: the input names no node; compiling for {}",
                    policy_compiler::lower::DEFAULT_NODE
                );
                policy_compiler::lower::DEFAULT_NODE.to_string()
            }
        },
    };
    if !nodes.contains(&node) {
        eprintln!("netfence: warning: no pod or Node object names node {node}; its table isolates nothing");
    }
    let (ruleset, diagnostics) = compile(&input.snapshot, &node);
    for d in &diagnostics {
        eprintln!("netfence: warning: {d}");
    }
    Ok((node, build(&ruleset)))
}

/// A node name as a file name: characters outside `[A-Za-z0-9._-]` become `_`, and a leading
/// dot too, so no name from the cluster can leave the output directory.
fn node_file_name(node: &str) -> String {
    let mut name: String = node
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.starts_with('.') || name.is_empty() {
        name.insert(0, '_');
    }
    format!("{name}.nft")
}

fn run_compile_all(args: &CompileArgs, dir: &std::path::Path, allow_invalid: bool) -> ExitCode {
    let input = match load(&args.paths, allow_invalid) {
        Ok(input) => input,
        Err(code) => return code,
    };
    let (rulesets, diagnostics) = compile_all_reporting(&input.snapshot);
    for d in &diagnostics {
        eprintln!("netfence: warning: {d}");
    }
    // Everything is rendered before anything is written.
    let scripts: Vec<(String, String)> = rulesets
        .iter()
        .map(|(node, r)| (node_file_name(node), render(&build(r))))
        .collect();
    if let Err(e) = std::fs::create_dir_all(dir) {
        eprintln!("netfence: error: cannot create {}: {e}", dir.display());
        return ExitCode::from(2);
    }
    for (file, script) in &scripts {
        let path = dir.join(file);
        if let Err(e) = std::fs::write(&path, script) {
            eprintln!("netfence: error: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
        eprintln!("netfence: wrote {}", path.display());
    }
    ExitCode::SUCCESS
}

fn run_compile(args: &CompileArgs, allow_invalid: bool) -> ExitCode {
    if let (true, Some(dir)) = (args.all_nodes, &args.output_dir) {
        return run_compile_all(args, dir, allow_invalid);
    }
    let (_, table) = match node_table(&args.paths, args.node.as_deref(), allow_invalid) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let script = render(&table);
    match &args.output {
        None => print!("{script}"),
        Some(path) => {
            if let Err(e) = std::fs::write(path, script) {
                eprintln!("netfence: error: cannot write {}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
    }
    ExitCode::SUCCESS
}

fn run_apply(args: &ApplyArgs, allow_invalid: bool) -> ExitCode {
    let (node, table) = match node_table(&args.paths, Some(&args.node), allow_invalid) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let n_rules: usize = table.chains.iter().map(|c| c.rules.len()).sum();
    let summary = format!(
        "table inet netfence for node {node}: {} sets and maps, {} elements, {} chains, {n_rules} rules",
        table.sets.len(),
        table.n_elements(),
        table.chains.len()
    );
    let want = match netlink::expected(&table) {
        Ok(want) => want,
        Err(e) => {
            eprintln!("netfence: error: {e}");
            return ExitCode::from(2);
        }
    };
    let current = if args.dry_run {
        netlink::read().ok().flatten()
    } else {
        match netlink::read() {
            Ok(current) => current,
            Err(e) => {
                eprintln!("netfence: error: {e}");
                return netlink_exit(&e);
            }
        }
    };
    if current.as_ref() == Some(&want) {
        println!("{summary}: already in place, nothing changed");
        return ExitCode::SUCCESS;
    }
    let changes = describe_changes(current.as_ref(), &want);
    if args.dry_run {
        println!("dry run, nothing sent: {summary}");
        for change in &changes {
            println!("  would change: {change}");
        }
        return ExitCode::SUCCESS;
    }
    let result = netlink::apply_full(&table).and_then(|report| netlink::verify(&table).map(|()| report));
    match result {
        Ok(report) => {
            println!(
                "applied {summary} in one transaction of {} messages, {:.2} ms, verified by reading it back",
                report.n_messages,
                report.elapsed.as_secs_f64() * 1e3
            );
            for change in &changes {
                println!("  changed: {change}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("netfence: error: {e}");
            netlink_exit(&e)
        }
    }
}

/// Exit 2 when the environment forbids the work (a usage problem), 1 when the kernel refused.
fn netlink_exit(e: &netlink::NetlinkError) -> ExitCode {
    ExitCode::from(if matches!(e, netlink::NetlinkError::Permission) {
        2
    } else {
        1
    })
}

/// What applying `want` changes in the kernel's table, one line per set or chain.
fn describe_changes(current: Option<&netlink::Listing>, want: &netlink::Listing) -> Vec<String> {
    let Some(current) = current else {
        return vec![format!(
            "table inet netfence created with {} sets and maps, {} chains",
            want.sets.len(),
            want.chains.len()
        )];
    };
    let mut out = Vec::new();
    for (name, set) in &want.sets {
        match current.sets.get(name) {
            None => out.push(format!("set {name} added ({} elements)", set.elements.len())),
            Some(old) if old != set => {
                let added = set.elements.difference(&old.elements).count();
                let removed = old.elements.difference(&set.elements).count();
                out.push(format!("set {name}: {added} elements added, {removed} removed"));
            }
            Some(_) => {}
        }
    }
    out.extend(
        current
            .sets
            .keys()
            .filter(|n| !want.sets.contains_key(*n))
            .map(|n| format!("set {n} removed")),
    );
    for (name, chain) in &want.chains {
        match current.chains.get(name) {
            None => out.push(format!("chain {name} added ({} rules)", chain.rules.len())),
            Some(old) if old != chain => out.push(format!(
                "chain {name}: {} rules, was {}",
                chain.rules.len(),
                old.rules.len()
            )),
            Some(_) => {}
        }
    }
    out.extend(
        current
            .chains
            .keys()
            .filter(|n| !want.chains.contains_key(*n))
            .map(|n| format!("chain {n} removed")),
    );
    out
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
        Command::Matrix(args) => run_matrix(args, cli.allow_invalid),
        Command::Compile(args) => run_compile(args, cli.allow_invalid),
        Command::Apply(args) => run_apply(args, cli.allow_invalid),
        Command::Explain(args) => run_explain(args, cli.allow_invalid),
        Command::Sandbox(args) => run_sandbox(args, cli.allow_invalid),
        Command::Remove => match netlink::delete_table() {
            Ok(()) => {
                println!("removed table inet netfence");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("netfence: error: {e}");
                netlink_exit(&e)
            }
        },
    }
}
