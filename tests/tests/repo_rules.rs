//! Repository rules that a reviewer should not have to remember: every Rust file opens with a
//! `//!` line saying what it is for, `unsafe` appears only in the nft-netlink crate, and every
//! other crate forbids it at its root.

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

/// The workspace's crates, read from its manifest so that a new crate cannot be forgotten.
fn crate_dirs(root: &Path) -> Vec<String> {
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    let value: toml::Value = toml::from_str(&manifest).expect("Cargo.toml parses");
    let members = value["workspace"]["members"].as_array().expect("members");
    members
        .iter()
        .map(|m| m.as_str().expect("a path").to_string())
        .collect()
}

/// The crate that holds the kernel half (libnftnl is C): the only one allowed `unsafe`.
const KERNEL_CRATE: &str = "nft-netlink";

#[test]
fn every_crate_but_the_kernel_half_forbids_unsafe_at_its_root() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dirs = crate_dirs(&root);
    assert!(
        dirs.len() >= 7 && dirs.iter().any(|d| d == KERNEL_CRATE),
        "{dirs:?}"
    );
    let mut problems = Vec::new();
    for dir in dirs.iter().filter(|d| *d != KERNEL_CRATE) {
        for root_file in ["src/lib.rs", "src/main.rs"] {
            let path = root.join(dir).join(root_file);
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            if !text.lines().any(|l| l.trim() == "#![forbid(unsafe_code)]") {
                problems.push(format!("{}: no #![forbid(unsafe_code)]", path.display()));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_file_says_what_it_is_for_and_unsafe_stays_in_netlink() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for crate_dir in crate_dirs(&root) {
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
        let in_netlink = file.components().any(|c| c.as_os_str() == KERNEL_CRATE);
        let uses_unsafe = text.lines().any(|l| {
            let code = l.split("//").next().unwrap_or("");
            needles.iter().any(|n| code.contains(n.as_str()))
        });
        if uses_unsafe && !in_netlink {
            problems.push(format!(
                "{}: unsafe outside the {KERNEL_CRATE} crate",
                file.display()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Pure checks run without root (STYLE 23): in this crate, only `kernel_*` tests may touch the
/// kernel or need root, and each is declared with the `kernel` feature, so
/// `cargo test -p netfence-tests --no-default-features` is exactly the pure tests.
#[test]
fn only_kernel_tests_need_root_and_each_is_behind_the_kernel_feature() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(dir.join("Cargo.toml")).expect("Cargo.toml"))
            .expect("parses");
    let gated: Vec<String> = manifest["test"]
        .as_array()
        .expect("[[test]] entries")
        .iter()
        .filter(|t| {
            t["required-features"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x.as_str() == Some("kernel")))
        })
        .filter_map(|t| t["name"].as_str().map(str::to_string))
        .collect();
    // Spelled in pieces so that this file does not match itself.
    let needles = [
        ["require_root", "_and_nft"].concat(),
        ["nft", "_check("].concat(),
        ["Netns", "::new("].concat(),
        ["unprivileged", "("].concat(),
        ["in_", "netns("].concat(),
    ];
    let mut problems = Vec::new();
    let mut n_kernel = 0;
    for entry in std::fs::read_dir(dir.join("tests")).expect("tests/").flatten() {
        let path = entry.path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let text = std::fs::read_to_string(&path).expect("readable");
        if name.starts_with("kernel_") {
            n_kernel += 1;
            if !gated.contains(&name) {
                problems.push(format!(
                    "{name}: a kernel test without required-features = [\"kernel\"]"
                ));
            }
        } else if let Some(n) = needles.iter().find(|n| text.contains(n.as_str())) {
            problems.push(format!(
                "{name}: a pure test uses {n} (kernel tests are named kernel_*)"
            ));
        }
    }
    assert!(n_kernel >= 2, "{n_kernel}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
