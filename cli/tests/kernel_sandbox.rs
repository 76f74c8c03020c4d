//! `netfence sandbox` on every fixture: the matrix the kernel lets through, probed on real
//! sockets, equals the fixture's truth tables (TCP and UDP; this kernel has no SCTP sockets, so
//! SCTP tables are checked by the evaluators, the tracer and `nft -c` only), and `--check`
//! agrees. Every fixture with a denied cell also has allowed cells between the same pods.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use netfence_cli::sandbox::lab::{owner_pid, run_prefix, Lab};
use netfence_cli::sandbox::run;
use netfence_tests::fixture;
use netfence_tests::netns::require_root_and_nft;
use policy_compiler::Protocol;
use serde_json::{json, Value};

const NETFENCE: &str = env!("CARGO_BIN_EXE_netfence");

/// `--cleanup` removes every sandbox namespace, so the tests here take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn sandbox_namespaces(pid: u32) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| owner_pid(n) == Some(pid))
        .map(str::to_string)
        .collect()
}

#[test]
fn kernel_matches_every_truth_table() {
    require_root_and_nft();
    let _turn = turn();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    let (mut n_tables, mut n_allowed, mut n_denied) = (0, 0, 0);
    let mut skipped = Vec::new();
    for dir in fixture::discover(&root) {
        let fx = fixture::load(&dir).expect("fixture");
        // The positive control for every denied cell below: with the policies taken away, every
        // pair of these pods connects on these namespaces, so a denial is policy, not plumbing.
        let mut open = fx.input.snapshot.clone();
        open.policies.clear();
        run::address_nodes(&mut open);
        let lab = Lab::build(&open, &run_prefix("o")).expect("lab");
        lab.program(&open).expect("programmed");
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            let observed = run::probe_all(&lab, &open, protocol, 80).expect("probes");
            assert!(
                observed.matrix.allowed.iter().flatten().all(|a| *a),
                "{}: without policy, {protocol} does not connect",
                dir.display()
            );
        }
        drop(lab);
        for table in &fx.expect.tables {
            if table.protocol == "SCTP" {
                skipped.push(format!("{} SCTP/{}", dir.display(), table.port));
                continue;
            }
            let port = table.port.to_string();
            let out = Command::new(NETFENCE)
                .args([
                    "sandbox",
                    dir.to_str().unwrap(),
                    "--protocol",
                    &table.protocol,
                    "--port",
                    &port,
                ])
                .args(["-o", "json", "--check", "--allow-invalid"])
                .output()
                .expect("netfence runs");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "{}: {stderr}", dir.display());
            let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
            for (i, from) in table.pods.iter().enumerate() {
                for (j, cell) in table.allowed[i].split_whitespace().enumerate() {
                    let to = &table.pods[j];
                    let want = cell == ".";
                    assert_eq!(
                        v["allowed"][from][to],
                        json!(want),
                        "{}: {from} -> {to} {}/{}",
                        dir.display(),
                        table.protocol,
                        port
                    );
                    if want {
                        n_allowed += 1
                    } else {
                        n_denied += 1
                    }
                }
            }
            n_tables += 1;
        }
    }
    assert!(
        n_tables >= 35 && n_allowed > 100 && n_denied > 50,
        "{n_tables} tables, {n_allowed} allowed, {n_denied} denied"
    );
    // SCTP tables are left to the evaluators, the tracer and `nft -c` (no SCTP sockets here).
    assert!(skipped.iter().all(|t| t.contains(" SCTP/")), "{skipped:?}");
    assert!(sandbox_namespaces(std::process::id()).is_empty());
}

#[test]
fn interrupted_runs_leave_nothing_behind() {
    require_root_and_nft();
    let _turn = turn();
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/demo");
    let child = Command::new(NETFENCE)
        .args(["sandbox", demo.to_str().unwrap(), "--protocol", "udp"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("runs");
    let pid = child.id();
    // Wait until the run has made some namespaces, then interrupt it.
    let mut seen = 0;
    for _ in 0..200 {
        seen = sandbox_namespaces(pid).len();
        if seen > 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(seen > 2, "the run made namespaces");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("signal");
    let status = child.wait_with_output().expect("exits").status;
    assert_eq!(status.code(), Some(130), "exits as interrupted");
    assert!(
        sandbox_namespaces(pid).is_empty(),
        "{:?}",
        sandbox_namespaces(pid)
    );
}

/// Sends `signal` to a sandbox run.
fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).expect("signal");
}

/// Regression: an interrupted run removed every namespace whose name began with `nfsb<pid>`
/// (run 32212 removed run 322120's), and `--cleanup` removed the namespaces of runs still in
/// progress. Two runs at once: cleanup leaves both, an interrupted one removes its own only,
/// and the other completes and agrees with the compiler.
#[test]
fn two_sandboxes_at_once_each_remove_only_their_own() {
    use nix::sys::signal::Signal;
    require_root_and_nft();
    let _turn = turn();
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/demo");
    let spawn = || {
        Command::new(NETFENCE)
            .args(["sandbox", demo.to_str().unwrap(), "--check"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("runs")
    };
    let (first, second) = (spawn(), spawn());
    // Freeze each run while it builds, so both are in progress at once.
    for run in [&first, &second] {
        let pid = run.id();
        assert!(
            (0..400).any(|_| {
                std::thread::sleep(Duration::from_millis(5));
                sandbox_namespaces(pid).len() > 2
            }),
            "run {pid} made namespaces"
        );
        signal(pid, Signal::SIGSTOP);
    }
    let (a, b) = (first.id(), second.id());
    let (before_a, before_b) = (sandbox_namespaces(a), sandbox_namespaces(b));

    let cleanup = Command::new(NETFENCE)
        .args(["sandbox", "--cleanup"])
        .output()
        .expect("runs");
    let said = String::from_utf8_lossy(&cleanup.stdout);
    for pid in [a, b] {
        assert!(
            said.contains(&format!("sandbox run {pid}: it is still running")),
            "{said}"
        );
    }
    assert_eq!(
        sandbox_namespaces(a),
        before_a,
        "cleanup leaves a running sandbox"
    );
    assert_eq!(
        sandbox_namespaces(b),
        before_b,
        "cleanup leaves a running sandbox"
    );

    signal(a, Signal::SIGCONT);
    signal(a, Signal::SIGINT);
    let interrupted = first.wait_with_output().expect("exits");
    assert_eq!(
        interrupted.status.code(),
        Some(130),
        "exits as interrupted: {}",
        String::from_utf8_lossy(&interrupted.stderr)
    );
    assert!(sandbox_namespaces(a).is_empty(), "{:?}", sandbox_namespaces(a));
    assert_eq!(sandbox_namespaces(b), before_b, "the other run's namespaces stay");

    signal(b, Signal::SIGCONT);
    let done = second.wait_with_output().expect("exits");
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("agree on every probe"), "{stderr}");
    assert!(sandbox_namespaces(b).is_empty());
}

#[test]
fn kept_namespaces_are_listed_and_cleaned_up() {
    require_root_and_nft();
    let _turn = turn();
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/demo");
    let out = Command::new(NETFENCE)
        .args(["sandbox", demo.to_str().unwrap(), "--keep"])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("kept 8 namespaces") && stderr.contains("netfence sandbox --cleanup"),
        "{stderr}"
    );
    let kept = stderr.lines().filter(|l| l.contains(": nfsb")).count();
    assert_eq!(kept, 7, "five pods and two nodes are listed: {stderr}");
    let cleanup = Command::new(NETFENCE)
        .args(["sandbox", "--cleanup"])
        .output()
        .expect("runs");
    assert!(
        String::from_utf8_lossy(&cleanup.stdout).starts_with("removed "),
        "cleanup reports"
    );
    let left = Command::new("ip").args(["netns", "list"]).output().expect("ip");
    assert!(
        !String::from_utf8_lossy(&left.stdout).contains("nfsb"),
        "nothing left"
    );
}

#[test]
fn without_root_it_says_what_it_needs() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/demo");
    let out = netfence_tests::netns::unprivileged(NETFENCE)
        .args(["sandbox", demo.to_str().unwrap()])
        .output()
        .expect("setpriv (util-linux) runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("needs root") && stderr.contains("netfence matrix"),
        "{stderr}"
    );
}

/// Conformance cases that change labels or policies between probes: the lab stays, each node
/// is programmed again with the changed cluster (as the agent would), and the kernel is probed
/// again.
#[test]
fn updates_between_probes_take_effect_on_the_kernel() {
    require_root_and_nft();
    let _turn = turn();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    let mut n_steps = 0;
    for dir in fixture::discover(&root) {
        let fx = fixture::load(&dir).expect("fixture");
        if fx.expect.steps.is_empty() {
            continue;
        }
        let lab = Lab::build(&fx.input.snapshot, &run_prefix("u")).expect("lab");
        let mut stages = vec![(fx.input.snapshot.clone(), &fx.expect.tables)];
        for ((snapshot, _), step) in fx.steps().expect("steps").into_iter().zip(&fx.expect.steps) {
            stages.push((snapshot, &step.tables));
        }
        for (k, (snapshot, tables)) in stages.iter().enumerate() {
            lab.program(snapshot).expect("programmed");
            for table in tables.iter().filter(|t| t.protocol != "SCTP") {
                let protocol = Protocol::parse(&table.protocol).expect("protocol");
                let observed = run::probe_all(&lab, snapshot, protocol, table.port).expect("probes");
                let json = observed.matrix.to_json();
                for (i, from) in table.pods.iter().enumerate() {
                    for (j, cell) in table.allowed[i].split_whitespace().enumerate() {
                        let to = &table.pods[j];
                        assert_eq!(
                            json["allowed"][from][to],
                            json!(cell == "."),
                            "{} stage {k}: {from} -> {to} {}/{}",
                            dir.display(),
                            table.protocol,
                            table.port
                        );
                    }
                }
            }
            n_steps += usize::from(k > 0);
        }
    }
    assert!(n_steps >= 5, "{n_steps}");
}

#[test]
fn dual_stack_pods_are_probed_over_both_families() {
    require_root_and_nft();
    let _turn = turn();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/semantics/ipblock-except-boundaries");
    let out = Command::new(NETFENCE)
        .args(["sandbox", dir.to_str().unwrap(), "--check"])
        .output()
        .expect("runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("agree on every probe"), "{stderr}");
    // The IPv6 matrix: b's address is in the except range, so b -> web is denied, and the
    // other pairs get through (the positive control, in the same run).
    let v6 = stdout
        .split("IPv6, the dual-stack pods:")
        .nth(1)
        .expect("an IPv6 matrix");
    let rows: Vec<&str> = v6
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert_eq!(rows.len(), 3, "{v6}");
    assert!(
        rows[1].contains("default/b") && rows[1].trim_end().ends_with(". . X"),
        "{}",
        rows[1]
    );
    assert!(rows[0].trim_end().ends_with(". . ."), "{}", rows[0]);
    assert!(
        stdout.contains("node node-1 -> default/web over IPv6: allowed"),
        "{stdout}"
    );
}
