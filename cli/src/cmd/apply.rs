//! `netfence apply` and `netfence remove`: this network namespace's table, over netlink.

use std::path::PathBuf;

use super::compile::node_table;
use crate::CliError;

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

pub fn run_apply(args: &ApplyArgs, allow_invalid: bool) -> Result<(), CliError> {
    let (node, table) = node_table(&args.paths, Some(&args.node), allow_invalid)?;
    let n_rules: usize = table.chains.iter().map(|c| c.rules.len()).sum();
    let summary = format!(
        "table inet netfence for node {node}: {} sets and maps, {} elements, {} chains, {n_rules} rules",
        table.sets.len(),
        table.n_elements(),
        table.chains.len()
    );
    let want = nft_netlink::expected(&table)?;
    // One session for the read, the transaction and the read-back: one socket close.
    let mut session = match nft_netlink::Session::open() {
        Ok(session) => Some(session),
        Err(e) if args.dry_run => {
            eprintln!("netfence: note: cannot read the current table ({e}); showing it as absent");
            None
        }
        Err(e) => return Err(e.into()),
    };
    let current = match session.as_mut().map(nft_netlink::Session::read) {
        None => None,
        Some(Ok(current)) => current,
        Some(Err(_)) if args.dry_run => None,
        Some(Err(e)) => return Err(e.into()),
    };
    if current.as_ref() == Some(&want) {
        println!("{summary}: already in place, nothing changed");
        return Ok(());
    }
    let changes = describe_changes(current.as_ref(), &want);
    if args.dry_run {
        println!("dry run, nothing sent: {summary}");
        for change in &changes {
            println!("  would change: {change}");
        }
        return Ok(());
    }
    let session = match session.as_mut() {
        Some(session) => session,
        None => nft_netlink::Session::open().map(|s| session.insert(s))?,
    };
    let report = session
        .apply_full(&table)
        .and_then(|report| session.verify(&table).map(|()| report))?;
    println!(
        "applied {summary} in one transaction of {} messages, {:.2} ms, verified by reading it back",
        report.n_messages,
        report.elapsed.as_secs_f64() * 1e3
    );
    for change in &changes {
        println!("  changed: {change}");
    }
    Ok(())
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
