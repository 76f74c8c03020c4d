//! `netfence compile`: the nft script of one node, or of every node into a directory.

use std::path::PathBuf;

use nft_backend::{build::build, render::render};
use policy_compiler::compile;

use crate::{compile_nodes, load, CliError};

#[derive(clap::Args, Debug)]
pub struct CompileArgs {
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

/// Loads the input and compiles one node's table.
pub fn node_table(
    paths: &[PathBuf],
    node: Option<&str>,
    allow_invalid: bool,
) -> Result<(String, nft_backend::nft::Table), CliError> {
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

fn write(path: &std::path::Path, text: &str) -> Result<(), CliError> {
    std::fs::write(path, text).map_err(|source| CliError::Write {
        path: path.to_path_buf(),
        source,
    })
}

pub fn run_compile_all(
    args: &CompileArgs,
    dir: &std::path::Path,
    allow_invalid: bool,
) -> Result<(), CliError> {
    let input = load(&args.paths, allow_invalid)?;
    let rulesets = compile_nodes(&input.snapshot);
    // Everything is rendered before anything is written.
    let scripts: Vec<(String, String)> = rulesets
        .iter()
        .map(|(node, r)| (node_file_name(node), render(&build(r))))
        .collect();
    std::fs::create_dir_all(dir).map_err(|source| CliError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    for (file, script) in &scripts {
        let path = dir.join(file);
        write(&path, script)?;
        eprintln!("netfence: wrote {}", path.display());
    }
    Ok(())
}

pub fn run_compile(args: &CompileArgs, allow_invalid: bool) -> Result<(), CliError> {
    if let (true, Some(dir)) = (args.all_nodes, &args.output_dir) {
        return run_compile_all(args, dir, allow_invalid);
    }
    let (_, table) = node_table(&args.paths, args.node.as_deref(), allow_invalid)?;
    let script = render(&table);
    match &args.output {
        None => print!("{script}"),
        Some(path) => write(path, &script)?,
    }
    Ok(())
}
