//! `netfence apply` and `netfence remove`: this network namespace's table, over netlink.

use std::path::PathBuf;
use std::process::ExitCode;

use super::compile::node_table;

#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
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

pub fn run_apply(args: &ApplyArgs, allow_invalid: bool) -> ExitCode {
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
    let want = match nft_netlink::expected(&table) {
        Ok(want) => want,
        Err(e) => {
            eprintln!("netfence: error: {e}");
            return ExitCode::from(2);
        }
    };
    // One session for the read, the transaction and the read-back: one socket close.
    let mut session = match nft_netlink::Session::open() {
        Ok(session) => Some(session),
        Err(e) if args.dry_run => {
            eprintln!("netfence: note: cannot read the current table ({e}); showing it as absent");
            None
        }
        Err(e) => {
            eprintln!("netfence: error: {e}");
            return netlink_exit(&e);
        }
    };
    let current = match session.as_mut().map(nft_netlink::Session::read) {
        None => None,
        Some(Ok(current)) => current,
        Some(Err(_)) if args.dry_run => None,
        Some(Err(e)) => {
            eprintln!("netfence: error: {e}");
            return netlink_exit(&e);
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
    let Some(session) = session.as_mut() else {
        return ExitCode::from(2);
    };
    let result = session
        .apply_full(&table)
        .and_then(|report| session.verify(&table).map(|()| report));
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
pub fn netlink_exit(e: &nft_netlink::NetlinkError) -> ExitCode {
    ExitCode::from(if matches!(e, nft_netlink::NetlinkError::Permission) {
        2
    } else {
        1
    })
}

/// What applying `want` changes in the kernel's table, one line per set or chain.
fn describe_changes(current: Option<&nft_netlink::Listing>, want: &nft_netlink::Listing) -> Vec<String> {
    match current {
        None => vec![format!(
            "table inet netfence created with {} sets and maps, {} chains",
            want.sets.len(),
            want.chains.len()
        )],
        Some(current) => want.changes_from(current),
    }
}
