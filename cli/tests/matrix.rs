//! The real `netfence` binary: the demo's matrix, `--check` on every fixture, and bad input.

use std::path::{Path, PathBuf};
use std::process::Command;

fn netfence(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_netfence"))
        .args(args)
        .output()
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

#[test]
fn demo_matrix_json() {
    let demo = fixtures().join("demo");
    let (code, stdout, _) = netfence(&["matrix", demo.to_str().unwrap(), "-o", "json", "--port", "80"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["protocol", "port", "pods", "allowed"],
        "field order of the documented schema"
    );
    assert_eq!(v["protocol"], "TCP");
    assert_eq!(v["allowed"]["shop/frontend"]["shop/backend"], true);
    assert_eq!(v["allowed"]["shop/frontend"]["shop/db"], false);
    assert_eq!(v["allowed"]["monitoring/prometheus"]["locked/vault"], false);
}

#[test]
fn check_agrees_on_every_fixture() {
    let mut dirs = vec![fixtures()];
    let mut checked = 0;
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            if entry.path().is_dir() {
                dirs.push(entry.path());
            }
        }
        if !dir.join("cluster.yaml").is_file() {
            continue;
        }
        for protocol in ["tcp", "udp", "sctp"] {
            let (code, _, stderr) = netfence(&[
                "matrix",
                dir.to_str().unwrap(),
                "--check",
                "--protocol",
                protocol,
                "-o",
                "json",
                "--allow-invalid",
            ]);
            assert_eq!(code, 0, "{}: {stderr}", dir.display());
            assert!(stderr.contains("agree on every cell"), "{stderr}");
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} fixtures");
}

#[test]
fn bad_input_is_an_error_naming_the_file() {
    let dir = std::env::temp_dir().join(format!("netfence-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        ("syntax.yaml", "kind: Pod\nmetadata: {name: x\n", "syntax.yaml:"),
        (
            "types.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: 7}\n",
            "types.yaml:4:20: Pod default/x",
        ),
        ("nokind.yaml", "metadata: {name: x}\n", "has no kind"),
        ("bad.json", "{\"kind\": \"Pod\", ", "bad.json:1:"),
        (
            "field.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: x, namespace: a}\nspec:\n  containers:\n  - name: c\n    ports:\n    - containerPort: eighty\n",
            "field.yaml:12:22: Pod a/x: spec.containers[0].ports[0].containerPort",
        ),
        (
            "protocol.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: a}\nspec:\n  ingress:\n  - ports: [{protocol: ICMP, port: 80}]\n",
            "protocol.yaml:5: NetworkPolicy a/p: invalid",
        ),
        (
            "cidr.yaml",
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: a}\nspec:\n  ingress:\n  - from: [{ipBlock: {cidr: 10.0.0.0/33}}]\n",
            "cidr.yaml:1: NetworkPolicy a/p: invalid",
        ),
    ];
    for (name, text, expected) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let (code, stdout, stderr) = netfence(&["matrix", path.to_str().unwrap()]);
        assert_eq!(code, 2, "{name}: {stderr}");
        assert!(stdout.is_empty(), "{name}: nothing on stdout, got {stdout}");
        assert!(stderr.contains(expected), "{name}: {stderr}");
        assert!(
            stderr.contains(name),
            "{name}: the message names the file: {stderr}"
        );
    }
    // `compile -o FILE` leaves an existing file alone and creates none on bad input.
    let out = dir.join("out.nft");
    std::fs::write(&out, "previous").unwrap();
    let (code, stdout, _) = netfence(&[
        "compile",
        dir.join("cidr.yaml").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!((code, stdout.as_str()), (2, ""));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "previous");
    let fresh = dir.join("fresh.nft");
    let (code, _, _) = netfence(&[
        "compile",
        dir.join("field.yaml").to_str().unwrap(),
        "-o",
        fresh.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(!fresh.exists(), "no output file on bad input");
    // With --allow-invalid, an invalid policy is reported and fails closed, as in the agent.
    let (code, stdout, stderr) = netfence(&[
        "compile",
        dir.join("cidr.yaml").to_str().unwrap(),
        "--allow-invalid",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("warning:") && stdout.contains("table inet netfence"),
        "{stderr}"
    );
    let (code, _, stderr) = netfence(&["matrix", "/nonexistent/cluster.yaml"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent/cluster.yaml"), "{stderr}");
    let (code, _, _) = netfence(&["matrix", "--port", "70000", "x.yaml"]);
    assert_eq!(code, 2, "usage errors exit 2");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn other_kinds_are_skipped_with_a_warning() {
    let dir = std::env::temp_dir().join(format!("netfence-cli-kinds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("list.yaml");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: cm}\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: p, namespace: a}\n  spec: {containers: [{name: c}]}\n",
    )
    .unwrap();
    let (code, stdout, stderr) = netfence(&["matrix", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("skipping ConfigMap cm"), "{stderr}");
    assert!(
        stderr.contains("pod a/p: no spec.nodeName, placed on node-1"),
        "{stderr}"
    );
    assert!(
        stderr.contains("pod a/p: no status.podIPs, assigned 10.244.0.2"),
        "{stderr}"
    );
    assert!(stdout.contains("a/p"), "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn apply_without_cap_net_admin_says_so() {
    let demo = fixtures().join("demo");
    let out = netfence_tests::netns::unprivileged(env!("CARGO_BIN_EXE_netfence"))
        .args(["apply", demo.to_str().unwrap(), "--node", "node-1"])
        .output()
        .expect("setpriv (util-linux) runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("CAP_NET_ADMIN"), "{stderr}");
    assert!(out.stdout.is_empty());
    // Without privileges a dry run still works: it compiles and shows what it would send.
    let dry = netfence_tests::netns::unprivileged(env!("CARGO_BIN_EXE_netfence"))
        .args(["apply", demo.to_str().unwrap(), "--node", "node-1", "--dry-run"])
        .output()
        .expect("setpriv runs");
    assert_eq!(
        dry.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert!(String::from_utf8_lossy(&dry.stdout).starts_with("dry run, nothing sent"));
}

#[test]
fn help_lists_every_command_with_an_example() {
    let (code, stdout, _) = netfence(&["--help"]);
    assert_eq!(code, 0);
    for command in ["matrix", "compile", "explain", "apply", "remove"] {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(command))
            .unwrap_or_else(|| panic!("{command}: {stdout}"));
        assert!(
            line.contains("example: ") && line.contains(&format!("netfence {command}")),
            "{line}"
        );
    }
    // No arguments: the same help, as a usage error.
    let (code, stdout, stderr) = netfence(&[]);
    assert_eq!(code, 2);
    assert!(stdout.contains("matrix") || stderr.contains("matrix"));
}

#[test]
fn stdin_is_read_with_a_dash() {
    let text = std::fs::read_to_string(fixtures().join("demo/cluster.yaml")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_netfence"))
        .args(["matrix", "-", "-o", "json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pods"].as_array().map(Vec::len), Some(5));
}

#[test]
fn exit_codes_say_which_kind_of_failure() {
    let demo = fixtures().join("demo");
    let demo = demo.to_str().unwrap();
    // 2: usage, and input that cannot be read.
    let (code, _, stderr) = netfence(&[
        "explain",
        demo,
        "--from",
        "nosuch/pod",
        "--to",
        "shop/db",
        "--port",
        "80",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("netfence: error: no pod nosuch/pod"), "{stderr}");
    let (code, _, stderr) = netfence(&["matrix", "/nonexistent/cluster.yaml"]);
    assert_eq!(code, 2, "{stderr}");
    // 1: output that cannot be written (the input was fine).
    let (code, stdout, stderr) = netfence(&[
        "compile",
        demo,
        "--node",
        "node-1",
        "-o",
        "/nonexistent/dir/node-1.nft",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("cannot write /nonexistent/dir/node-1.nft"),
        "{stderr}"
    );
    assert!(stdout.is_empty());
    // 0: the same command with somewhere to write.
    let dir = std::env::temp_dir().join(format!("netfence-exit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("node-1.nft");
    let (code, _, stderr) = netfence(&["compile", demo, "--node", "node-1", "-o", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(std::fs::read_to_string(&out)
        .unwrap()
        .contains("table inet netfence"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn pods_with_addresses_compile_on_any_number_of_nodes() {
    // 300 nodes, one addressed pod each: no addresses to hand out, so no limit on nodes.
    let pod = |i: usize, ip: Option<String>| {
        let status = ip.map_or(String::new(), |ip| {
            format!("status: {{podIPs: [{{ip: \"{ip}\"}}]}}\n")
        });
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: a}}\nspec: {{nodeName: n{i}, containers: [{{name: c}}]}}\n{status}"
        )
    };
    let addressed: String = (0..300)
        .map(|i| pod(i, Some(format!("10.{}.{}.2", i / 256, i % 256))))
        .collect();
    let dir = std::env::temp_dir().join(format!("netfence-nodes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cluster.yaml");
    std::fs::write(&file, &addressed).unwrap();
    let (code, stdout, stderr) = netfence(&["compile", file.to_str().unwrap(), "--node", "n299"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("table inet netfence"));
    // Pods without addresses on 256 nodes: the 256th node has no /24 left, and the error says
    // what to do.
    let unaddressed: String = (0..256).map(|i| pod(i, None)).collect();
    std::fs::write(&file, &unaddressed).unwrap();
    let (code, _, stderr) = netfence(&["compile", file.to_str().unwrap(), "--node", "n0"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr
            .contains("pods without addresses are spread over more than 255 nodes; give them status.podIPs"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
