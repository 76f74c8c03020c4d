//! `netfence sandbox`: the cluster built as network namespaces, programmed, and probed.

use std::path::PathBuf;

use netfence_cli::sandbox::{lab, run};

use crate::{compile_nodes, load, protocol_of, CliError, FlowArgs, OutputFormat};

#[derive(clap::Args, Debug)]
pub struct SandboxArgs {
    /// Files or directories of cluster YAML/JSON; - for stdin
    #[arg(required_unless_present = "cleanup")]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    flow: FlowArgs,
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

pub fn run_sandbox(args: &SandboxArgs, allow_invalid: bool) -> Result<(), CliError> {
    if args.cleanup {
        cleanup();
        return Ok(());
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(CliError::Privilege(
            "the sandbox makes network namespaces and programs nftables: it needs root \
             (CAP_NET_ADMIN and CAP_SYS_ADMIN); `netfence matrix` computes the matrix without them"
                .to_string(),
        ));
    }
    let input = load(&args.paths, allow_invalid)?;
    let mut snapshot = input.snapshot;
    for note in run::address_nodes(&mut snapshot) {
        eprintln!("netfence: {note}");
    }
    let rulesets = compile_nodes(&snapshot);
    let protocol = protocol_of(args.flow.protocol);
    let prefix = lab::run_prefix("");
    // Ctrl-C and SIGTERM: remove this run's namespaces (and no other run's) before exiting.
    let _ = ctrlc::set_handler(move || {
        lab::interrupt();
        lab::remove_run(std::process::id());
        std::process::exit(130);
    });
    let started = std::time::Instant::now();
    let result = lab::Lab::build(&snapshot, &prefix).and_then(|lab| {
        lab.program(&snapshot)?;
        let observed = run::probe_all(&lab, &snapshot, protocol, args.flow.port)?;
        Ok((lab, observed))
    });
    // An interruption removes the namespaces under the build or the probes, which then fail:
    // that failure is the interruption's, and the handler's exit (130) is the one to report.
    wait_if_interrupted();
    let (mut lab, observed) = result?;
    print_observed(args.flow.output, &observed);
    eprintln!(
        "netfence: sandbox: {} nodes, {} pods, {} probes in {:.1} s",
        lab.nodes.len(),
        lab.pods.len(),
        observed.matrix.pods.len().pow(2)
            + observed.matrix6.as_ref().map_or(0, |m| m.pods.len().pow(2))
            + observed.node_probes.len(),
        started.elapsed().as_secs_f64()
    );
    let mut result = Ok(());
    if args.check {
        let diffs = run::disagreements(&lab, &rulesets, &observed, protocol, args.flow.port);
        if diffs.is_empty() {
            eprintln!("netfence: check: the kernel and the compiled rulesets agree on every probe");
        } else {
            for d in &diffs {
                eprintln!("netfence: check: {d}");
            }
            result = Err(CliError::CheckFailed(diffs.len()));
        }
    }
    if args.keep {
        report_kept(&mut lab);
    }
    wait_if_interrupted();
    result
}

/// Once interrupted, the Ctrl-C/SIGTERM handler is removing this run's namespaces and will
/// exit with 130: the main thread waits for that rather than report what the removal broke.
fn wait_if_interrupted() {
    while lab::is_interrupted() {
        std::thread::park_timeout(std::time::Duration::from_secs(1));
    }
}

/// `--cleanup`: removes what ended runs left, and says which runs are still going.
fn cleanup() {
    let done = lab::cleanup();
    println!("removed {} sandbox network namespaces", done.removed);
    for pid in &done.running {
        println!("left the namespaces of sandbox run {pid}: it is still running");
    }
}

/// The matrices (both families for dual-stack pods) and the node probes, or the JSON.
fn print_observed(output: OutputFormat, observed: &run::Observed) {
    match output {
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
}

/// `--keep`: the namespaces stay; say how to enter and remove them.
fn report_kept(lab: &mut lab::Lab) {
    let names = lab.keep();
    eprintln!(
        "netfence: kept {} namespaces; enter one with: ip netns exec NAME bash",
        names.len()
    );
    for pod in &lab.pods {
        eprintln!("netfence:   {} ({}): {}", pod.key, pod.addr, pod.netns);
    }
    for (name, node) in &lab.nodes {
        eprintln!("netfence:   node {name} ({}): {}", node.addr, node.netns);
    }
    eprintln!("netfence: remove them with: netfence sandbox --cleanup");
}
