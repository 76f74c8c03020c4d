//! Repository rules that a reviewer should not have to remember: every Rust file opens with a
//! `//!` line saying what it is for, and `unsafe` appears only in nft-backend's netlink module.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable").flatten() {
        let path = entry.path();
        if path.is_dir() && path.file_name().is_some_and(|n| n != "target" && n != ".git") {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_file_says_what_it_is_for_and_unsafe_stays_in_netlink() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for crate_dir in ["policy-compiler", "nft-backend", "agent", "cli", "tests"] {
        rust_files(&root.join(crate_dir), &mut files);
    }
    assert!(files.len() > 40, "{}", files.len());
    // Spelled in pieces so that this file does not match itself.
    let keyword = ["un", "safe"].concat();
    let needles = [
        format!("{keyword} {{"),
        format!("{keyword} fn"),
        format!("{keyword} impl"),
    ];
    let mut problems = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable");
        if !text.starts_with("//!") {
            problems.push(format!("{}: does not start with a //! line", file.display()));
        }
        let in_netlink = file.components().any(|c| c.as_os_str() == "netlink");
        let uses_unsafe = text.lines().any(|l| {
            let code = l.split("//").next().unwrap_or("");
            needles.iter().any(|n| code.contains(n.as_str()))
        });
        if uses_unsafe && !in_netlink {
            problems.push(format!(
                "{}: unsafe outside nft-backend's netlink module",
                file.display()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
