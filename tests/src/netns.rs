//! Network namespaces for kernel tests: made with a per-run name, removed on drop, so a failing
//! test leaves nothing behind. Traffic in these tests only ever goes between such namespaces.

use std::process::{Command, Output};

/// Fails the test loudly when it cannot do kernel work: CI runs as root with nft installed.
pub fn require_root_and_nft() {
    let uid = Command::new("id").arg("-u").output().expect("id runs");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "kernel tests need root (CAP_NET_ADMIN); CI runs them as root"
    );
    let nft = Command::new("nft").arg("--version").output();
    assert!(
        nft.is_ok_and(|o| o.status.success()),
        "kernel tests need nft (apt-get install nftables; .ci/run does)"
    );
}

/// A test's namespace, `nf<pid>-<tag>`: removed on drop, and every failure panics with the
/// command's message (the test fails loudly).
#[derive(Debug)]
pub struct Netns {
    inner: netfence_netns::Netns,
    pub name: String,
}

impl Netns {
    /// A new, empty network namespace named `nf<pid>-<tag>`.
    pub fn new(tag: &str) -> Netns {
        let name = format!("nf{}-{tag}", std::process::id());
        let inner = netfence_netns::Netns::create(&name).unwrap_or_else(|e| panic!("{e}"));
        Netns { inner, name }
    }

    /// Runs a closure on a thread that has entered the namespace, and returns its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.inner.run(f).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {} {program}: {e}", self.name))
    }

    /// Runs a command inside the namespace and returns its stdout; panics with stderr on failure.
    pub fn ok(&self, program: &str, args: &[&str]) -> String {
        let mut full = vec![program];
        full.extend_from_slice(args);
        self.inner
            .exec(&full)
            .unwrap_or_else(|e| panic!("in {}: {e}", self.name))
    }
}

/// `nft -j list table inet netfence` in a namespace, normalised for comparison: no handles
/// (they count objects, not meaning), objects sorted, rules kept in order within their chain
/// (the order objects were created in is history, the order of rules is meaning).
pub fn normalized_listing(ns: &Netns) -> serde_json::Value {
    use serde_json::Value;
    fn strip(v: &mut Value) {
        match v {
            Value::Object(map) => {
                map.remove("handle");
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v: Value =
        serde_json::from_str(&ns.ok("nft", &["-j", "list", "table", "inet", "netfence"])).expect("nft JSON");
    strip(&mut v);
    let items = v
        .get_mut("nftables")
        .and_then(Value::as_array_mut)
        .map(std::mem::take)
        .unwrap_or_default();
    let (mut rules, mut others): (Vec<Value>, Vec<Value>) =
        items.into_iter().partition(|i| i.get("rule").is_some());
    others.sort_by_key(|i| i.to_string());
    rules.sort_by_key(|r| r["rule"]["chain"].as_str().unwrap_or_default().to_string());
    others.extend(rules);
    Value::Array(others)
}

/// Runs a command in the current namespace; panics with its stderr when it fails.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `nft -c -f -` on a script: `Err` with nft's message when it refuses. Needs root.
pub fn nft_check(script: &str) -> Result<(), String> {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new("nft")
        .args(["-c", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft (CI installs the nftables package): {e}"))?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A command that runs `program` as nobody, with no capabilities (`setpriv`, from util-linux).
pub fn unprivileged(program: &str) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
    ])
    .arg(program);
    cmd
}
