//! Kernel tests of programming: in network namespaces made for the test, the table that
//! `netfence apply` sends over netlink lists exactly as the script `netfence compile` prints,
//! loaded with `nft -f`; and other tables are never touched.

use std::path::{Path, PathBuf};

use netfence_tests::netns::{normalized_listing, require_root_and_nft, Netns};

const NETFENCE: &str = env!("CARGO_BIN_EXE_netfence");

fn fixture_dirs() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            if entry.path().is_dir() {
                stack.push(entry.path());
            }
        }
        if dir.join("cluster.yaml").is_file() {
            out.push(dir);
        }
    }
    out.sort();
    out
}

#[test]
fn netlink_and_script_list_identically() {
    require_root_and_nft();
    let by_netlink = Netns::new("nl");
    let by_script = Netns::new("sc");
    let mut compared = 0;
    for dir in fixture_dirs() {
        let d = dir.to_str().unwrap();
        for node in ["node-1", "node-2"] {
            let script = std::process::Command::new(NETFENCE)
                .args(["compile", d, "--node", node, "--allow-invalid"])
                .output()
                .unwrap();
            assert!(script.status.success(), "{d}");
            let path = std::env::temp_dir().join(format!("netfence-{}-{node}.nft", std::process::id()));
            std::fs::write(&path, &script.stdout).unwrap();
            by_script.ok("nft", &["-f", path.to_str().unwrap()]);
            let report = by_netlink.ok(NETFENCE, &["apply", d, "--node", node, "--allow-invalid"]);
            assert!(report.contains("table inet netfence for node"), "{report}");
            assert_eq!(
                normalized_listing(&by_netlink),
                normalized_listing(&by_script),
                "{d} {node}"
            );
            std::fs::remove_file(&path).unwrap();
            compared += 1;
        }
    }
    assert!(compared >= 40, "{compared}");
}

#[test]
fn other_tables_are_never_touched() {
    require_root_and_nft();
    let ns = Netns::new("co");
    let standin = "table inet kube-proxy-standin {
	chain services {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr 10.96.0.10 tcp dport 53 dnat ip to 10.244.0.5
	}
	chain filter {
		type filter hook forward priority -10; policy accept;
		ip saddr 192.0.2.1 drop
	}
}
";
    let path = std::env::temp_dir().join(format!("netfence-standin-{}.nft", std::process::id()));
    std::fs::write(&path, standin).unwrap();
    ns.ok("nft", &["-f", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    let before = ns.ok("nft", &["list", "table", "inet", "kube-proxy-standin"]);
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/demo");
    for node in ["node-1", "node-2", "node-1"] {
        ns.ok(NETFENCE, &["apply", demo.to_str().unwrap(), "--node", node]);
        assert_eq!(
            ns.ok("nft", &["list", "table", "inet", "kube-proxy-standin"]),
            before,
            "after apply for {node}"
        );
    }
    assert!(ns.ok("nft", &["list", "tables"]).contains("table inet netfence"));
    // The same input again changes nothing, and says so; a dry run sends nothing.
    let again = ns.ok(NETFENCE, &["apply", demo.to_str().unwrap(), "--node", "node-1"]);
    assert!(again.contains("already in place, nothing changed"), "{again}");
    // A set the kernel holds with another declared size (as an incremental apply may leave it)
    // is reported as resized by a full apply.
    let script = ns.ok(NETFENCE, &["compile", demo.to_str().unwrap(), "--node", "node-1"]);
    let resized = script.replacen("size 64", "size 128", 1);
    assert_ne!(resized, script, "the script declares sizes");
    let path = std::env::temp_dir().join(format!("netfence-{}-resized.nft", std::process::id()));
    std::fs::write(&path, resized).unwrap();
    ns.ok("nft", &["-f", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    let report = ns.ok(NETFENCE, &["apply", demo.to_str().unwrap(), "--node", "node-1"]);
    assert!(
        report.contains(": 0 elements added, 0 removed; size 64, was 128"),
        "{report}"
    );
    let listed = ns.ok("nft", &["list", "table", "inet", "netfence"]);
    let dry = ns.ok(
        NETFENCE,
        &["apply", demo.to_str().unwrap(), "--node", "node-2", "--dry-run"],
    );
    assert!(
        dry.starts_with("dry run, nothing sent") && dry.contains("would change:"),
        "{dry}"
    );
    assert_eq!(
        ns.ok("nft", &["list", "table", "inet", "netfence"]),
        listed,
        "a dry run changes nothing"
    );
    assert_eq!(ns.ok(NETFENCE, &["remove"]).trim(), "removed table inet netfence");
    let tables = ns.ok("nft", &["list", "tables"]);
    assert!(!tables.contains("netfence"), "{tables}");
    assert_eq!(
        ns.ok("nft", &["list", "table", "inet", "kube-proxy-standin"]),
        before,
        "after remove"
    );
    // Removing again is not an error: there is nothing to remove.
    ns.ok(NETFENCE, &["remove"]);
}

#[test]
fn a_refused_transaction_leaves_the_previous_table_and_names_the_object() {
    require_root_and_nft();
    let ns = Netns::new("rf");
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/demo");
    ns.ok(NETFENCE, &["apply", demo.to_str().unwrap(), "--node", "node-1"]);
    let before = normalized_listing(&ns);
    // A table whose dispatch map jumps to a chain that does not exist: the kernel refuses that
    // message, so the whole transaction, and the table stays as it was.
    let input = netfence_cli::input::load(&[demo]).expect("demo loads");
    let (ruleset, _) = policy_compiler::compile(&input.snapshot, "node-2");
    let mut table = nft_backend::build::build(&ruleset);
    let map = table
        .sets
        .iter_mut()
        .find(|s| s.name == "in-dispatch-4")
        .expect("dispatch map");
    if let nft_backend::nft::SetKind::Dispatch(entries) = &mut map.kind {
        entries.push(("10.244.9.9".parse().unwrap(), "no-such-chain".to_string()));
    }
    let err = ns
        .run(move || nft_netlink::apply_full(&table))
        .expect_err("the kernel refuses");
    assert!(matches!(err, nft_netlink::NetlinkError::Refused { .. }), "{err}");
    assert!(err.to_string().contains("elements of set in-dispatch-4"), "{err}");
    assert!(!err.is_retryable(), "{err}");
    assert_eq!(
        normalized_listing(&ns),
        before,
        "a refused transaction changes nothing"
    );
    // The positive control: the same table without the bad element applies.
    let (ruleset, _) = policy_compiler::compile(&input.snapshot, "node-2");
    let table = nft_backend::build::build(&ruleset);
    ns.run(move || nft_netlink::apply_full(&table))
        .expect("a good table applies");
    assert_ne!(normalized_listing(&ns), before);
}
