//! `netfence apply` and `netfence remove`: this network namespace's table, over netlink.

use std::path::PathBuf;
use std::process::ExitCode;

use nft_backend::netlink;

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
    let want = match netlink::expected(&table) {
        Ok(want) => want,
        Err(e) => {
            eprintln!("netfence: error: {e}");
            return ExitCode::from(2);
        }
    };
    // One session for the read, the transaction and the read-back: one socket close.
    let mut session = match netlink::Session::open() {
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
    let current = match session.as_mut().map(netlink::Session::read) {
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
pub fn netlink_exit(e: &netlink::NetlinkError) -> ExitCode {
    ExitCode::from(if matches!(e, netlink::NetlinkError::Permission) {
        2
    } else {
        1
    })
}

/// What applying `want` changes in the kernel's table, one line per set or chain.
fn size_text(size: Option<u32>) -> String {
    size.map_or_else(|| "none".to_string(), |n| n.to_string())
}

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
                let resized = match (old.size, set.size) {
                    (was, now) if was == now => String::new(),
                    (was, now) => format!("; size {}, was {}", size_text(now), size_text(was)),
                };
                out.push(format!(
                    "set {name}: {added} elements added, {removed} removed{resized}"
                ));
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
