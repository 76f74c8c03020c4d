//! The agent's exit codes by kind of failure, from the binary (no root needed): 2 for a flag out
//! of range, 3 for a cluster configuration that cannot be read, 1 for a metrics address that is
//! taken; each with a message naming what is wrong.

use std::process::Command;

const AGENT: &str = env!("CARGO_BIN_EXE_netfence-agent");

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(AGENT)
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("the agent runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn each_kind_of_failure_exits_with_its_code() {
    let (code, stderr) = run(&["--node-name", "node-1", "--coalesce-ms", "5000"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("coalescing delay 5000 ms"), "{stderr}");

    let (code, stderr) = run(&[
        "--node-name",
        "node-1",
        "--kubeconfig",
        "/nonexistent/kubeconfig",
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("/nonexistent/kubeconfig") && stderr.contains("exit_code=3"),
        "{stderr}"
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = taken.local_addr().expect("bound").to_string();
    let (code, stderr) = run(&["--node-name", "node-1", "--metrics-addr", &addr]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot serve metrics on {addr}")),
        "{stderr}"
    );
}
