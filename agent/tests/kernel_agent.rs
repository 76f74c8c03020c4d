//! Kernel test (root): the agent for one node runs in that node's namespace against the fake
//! API server; the test changes the cluster through the server and probes real TCP traffic
//! between pod namespaces. Policies created, changed and deleted, a pod and a namespace
//! relabelled, the server going away and coming back, 410 Gone, the agent killed and
//! restarted, a malformed object, readiness, metrics, SIGTERM and --uninstall; and, in a
//! namespace of its own, lists refused for seconds retried with backoff. Every step
//! that expects a denied flow also expects an allowed one between the same pods.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::{eventually, ingress_policy, namespace, node, pod, Agent};
use netfence_cli::sandbox::lab::Lab;
use netfence_cli::sandbox::probe::{tcp_connects, Servers};
use netfence_tests::fakeapi::{get, FakeApi, Refusal};
use netfence_tests::netns::{require_root_and_nft, Netns};
use nix::sys::signal::Signal;
use policy_compiler::Protocol;
use serde_json::{json, Value};

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 10);
const WEB: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 11);
const OTHER: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 12);
const METRICS: u16 = 19473;
const BACKOFF_METRICS: u16 = 19474;
const RESOURCES: [&str; 4] = ["namespaces", "pods", "nodes", "networkpolicies"];

const CONVERGE: Duration = Duration::from_secs(10);

struct World {
    lab: Lab,
    node_ns: String,
}

impl World {
    fn ns_of(&self, key: &str) -> String {
        self.lab
            .pod(key)
            .unwrap_or_else(|| panic!("pod {key}"))
            .netns
            .clone()
    }

    fn connects(&self, from: &str) -> bool {
        tcp_connects(&self.ns_of(from), WEB, 80, Duration::from_millis(300)).expect("probe")
    }

    /// Waits until client→web and other→web are as expected, then checks them once more.
    fn expect(&self, step: &str, client: bool, other: bool) {
        let ok = eventually(CONVERGE, || {
            self.connects("a/client") == client && self.connects("b/other") == other
        });
        assert!(
            ok,
            "{step}: want client→web {client}, other→web {other}; got {} and {}",
            self.connects("a/client"),
            self.connects("b/other")
        );
    }

    /// The flows hold for a while: nothing changes them.
    fn stays(&self, step: &str, client: bool, other: bool) {
        for _ in 0..5 {
            assert_eq!(self.connects("a/client"), client, "{step}: client→web");
            assert_eq!(self.connects("b/other"), other, "{step}: other→web");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn metric(&self, name: &str) -> f64 {
        let (_, body) = get(&self.node_ns, METRICS, "/metrics").expect("metrics answer");
        body.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("metric {name} in {body}"))
    }

    fn readyz(&self) -> Option<u16> {
        get(&self.node_ns, METRICS, "/readyz").map(|(code, _)| code)
    }

    fn nft(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("ip")
            .args(["netns", "exec", &self.node_ns, "nft"])
            .args(args)
            .output()
            .expect("nft runs")
    }

    fn has_chain(&self, name: &str) -> bool {
        self.nft(&["list", "chain", "inet", "netfence", name])
            .status
            .success()
    }

    fn has_table(&self) -> bool {
        self.nft(&["list", "table", "inet", "netfence"]).status.success()
    }
}

fn cluster() -> Vec<Value> {
    vec![
        namespace("a", json!({"team": "a"})),
        namespace("b", json!({"team": "b"})),
        node("node-0", "172.31.0.1"),
        client(json!({"app": "client"})),
        pod("a", "web", "node-0", &WEB.to_string(), json!({"app": "web"})),
        other(json!({"app": "other"})),
    ]
}

fn lab() -> World {
    let objects = cluster();
    fn of<T: serde::de::DeserializeOwned>(objects: &[Value], kind: &str) -> Vec<T> {
        let typed = objects.iter().filter(|o| o["kind"] == kind);
        typed
            .map(|v| serde_json::from_value(v.clone()).expect("object"))
            .collect()
    }
    let (nss, pods, nodes) = (
        of(&objects, "Namespace"),
        of(&objects, "Pod"),
        of(&objects, "Node"),
    );
    let (snapshot, diags) = policy_compiler::lower::snapshot(&nss, &pods, &[], &nodes);
    assert!(diags.is_empty(), "{diags:?}");
    let prefix = format!("nfag{}-", std::process::id());
    let lab = Lab::build(&snapshot, &prefix).expect("lab");
    let node_ns = lab.nodes["node-0"].netns.clone();
    World { lab, node_ns }
}

/// The client pod, a/client, with these labels.
fn client(labels: Value) -> Value {
    pod("a", "client", "node-0", &CLIENT.to_string(), labels)
}

/// The other pod, b/other, with these labels.
fn other(labels: Value) -> Value {
    pod("b", "other", "node-0", &OTHER.to_string(), labels)
}

fn web_from(from: Value) -> Value {
    ingress_policy("a", "web", json!({"matchLabels": {"app": "web"}}), from)
}

#[test]
fn agent_keeps_the_node_equal_to_the_cluster() {
    require_root_and_nft();
    let world = lab();
    let mut servers = Servers::new();
    servers
        .listen(&world.ns_of("a/web"), WEB, Protocol::Tcp, 80)
        .expect("server");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut api = FakeApi::new();
    for object in cluster() {
        api.apply(object);
    }
    let port = api.listen(&world.node_ns);
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, FakeApi::kubeconfig(port)).expect("kubeconfig");
    let log = dir.path().join("agent.log");

    // Before the first sync: the API server is away, nothing is programmed, not ready.
    api.stop();
    let mut agent = Agent::start(&world.node_ns, "node-0", &kubeconfig, METRICS, &log, 500);
    assert!(
        eventually(CONVERGE, || world.readyz().is_some()),
        "the agent serves its probes"
    );
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        world.readyz(),
        Some(503),
        "not ready before every watch has listed"
    );
    assert_eq!(world.metric("netfence_synced"), 0.0);
    assert!(!world.has_table(), "nothing is programmed before the first sync");
    assert_eq!(get(&world.node_ns, METRICS, "/healthz").map(|r| r.0), Some(200));
    // Three of the four watches list; the fourth is refused: still nothing programmed.
    api.refuse("networkpolicies", true);
    api.restart();
    assert!(
        eventually(CONVERGE, || api.requests("networkpolicies", "list") >= 2),
        "retried"
    );
    assert!(eventually(CONVERGE, || agent
        .log_text()
        .contains("listed resource=\"pods\"")));
    assert_eq!(
        world.readyz(),
        Some(503),
        "not ready while one watch has not listed"
    );
    assert!(
        !world.has_table(),
        "nothing is programmed before every watch has listed"
    );
    api.refuse("networkpolicies", false);
    assert!(
        eventually(CONVERGE, || world.readyz() == Some(200)),
        "ready after the sync:\n{}",
        agent.log_text()
    );
    assert!(world.has_table());
    assert_eq!(world.metric("netfence_applies_total{mode=\"full\"}"), 1.0);
    world.expect("no policy", true, true);

    // A policy created, changed, then its namespace and pods relabelled, then deleted.
    api.apply(web_from(
        json!([{"podSelector": {"matchLabels": {"app": "client"}}}]),
    ));
    world.expect("policy created: client only", true, false);
    api.apply(web_from(
        json!([{"namespaceSelector": {"matchLabels": {"team": "b"}}}]),
    ));
    world.expect("policy changed: namespace team=b only", false, true);
    api.apply(namespace("a", json!({"team": "b"})));
    world.expect("namespace a relabelled team=b", true, true);
    api.apply(namespace("a", json!({"team": "a"})));
    world.expect("namespace a relabelled back", false, true);
    let friends = json!([{"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "friend"}}}]);
    api.apply(web_from(friends));
    api.apply(client(json!({"app": "client", "role": "friend"})));
    world.expect("client relabelled role=friend", true, false);
    api.apply(client(json!({"app": "client"})));
    api.apply(other(json!({"app": "other", "role": "friend"})));
    world.expect("friend label moved from client to other", false, true);
    api.delete("NetworkPolicy", "a", "web");
    world.expect("policy deleted", true, true);
    let diffs = world.metric("netfence_applies_total{mode=\"diff\"}");
    assert!(
        diffs >= 7.0,
        "every step was at least one incremental transaction: {diffs}"
    );
    assert!(world.metric("netfence_event_to_enforced_seconds_count") >= 9.0);

    // The API server goes away: the rules stay; changes made meanwhile land when it returns.
    api.apply(web_from(
        json!([{"podSelector": {"matchLabels": {"app": "client"}}}]),
    ));
    world.expect("before the outage", true, false);
    api.stop();
    api.apply(web_from(
        json!([{"namespaceSelector": {"matchLabels": {"team": "b"}}}]),
    ));
    world.stays("API server away", true, false);
    assert_eq!(world.readyz(), Some(200), "the last ruleset is still enforced");
    api.restart();
    world.expect("API server back", false, true);
    assert!(world.metric("netfence_watch_errors_total") >= 1.0);

    // 410 Gone: history compacted and watches dropped; the agent lists again.
    let lists = api.requests("networkpolicies", "list");
    api.expire();
    api.apply(web_from(
        json!([{"podSelector": {"matchLabels": {"app": "client"}}}]),
    ));
    world.expect("after 410 Gone", true, false);
    assert!(
        api.requests("networkpolicies", "list") > lists,
        "the agent listed again"
    );

    // Watches dropped: the agent resumes from its last version, without listing again.
    let lists = api.requests("pods", "list");
    let watches = api.requests("pods", "watch");
    api.drop_watches();
    // The pod and the policy both change, so each step has an allowed flow beside a denied one.
    let policy_lists = api.requests("networkpolicies", "list");
    api.apply(client(json!({"app": "other"})));
    api.apply(web_from(
        json!([{"namespaceSelector": {"matchLabels": {"team": "b"}}}]),
    ));
    world.expect(
        "after dropped watches: client relabelled, policy team=b",
        false,
        true,
    );
    api.apply(client(json!({"app": "client"})));
    api.apply(web_from(
        json!([{"podSelector": {"matchLabels": {"app": "client"}}}]),
    ));
    world.expect("client and policy back", true, false);
    assert_eq!(api.requests("pods", "list"), lists, "resumed, not listed again");
    assert_eq!(
        api.requests("networkpolicies", "list"),
        policy_lists,
        "resumed, not listed again"
    );
    assert!(api.requests("pods", "watch") > watches, "watched again");
    assert!(api.bookmarks() > 0, "idle watches got bookmarks");

    // A burst of changes is gathered into few transactions; a steady stream is still
    // programmed as it goes (the delay counts from a burst's first change).
    let anywhere = json!([{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "client"}}}]);
    api.apply(web_from(anywhere));
    world.expect("policy: app=client from any namespace", true, false);
    let before = world.metric("netfence_last_applied_generation");
    for i in 0..31 {
        let app = if i % 2 == 0 { "client" } else { "other" };
        api.apply(other(json!({"app": app})));
    }
    world.expect("after a burst of 31 relabels ending app=client", true, true);
    let burst = world.metric("netfence_last_applied_generation") - before;
    assert!(
        (1.0..=5.0).contains(&burst),
        "31 changes in a burst took {burst} transactions"
    );
    let before = world.metric("netfence_last_applied_generation");
    for i in 0..41 {
        let app = if i % 2 == 0 { "other" } else { "client" };
        api.apply(other(json!({"app": app})));
        std::thread::sleep(Duration::from_millis(5));
    }
    world.expect("after a stream of 41 relabels ending app=other", true, false);
    let stream = world.metric("netfence_last_applied_generation") - before;
    assert!(
        stream >= 3.0,
        "a 200 ms stream was programmed as it went, not once at its end: {stream}"
    );

    // Someone else changes the table: the read-back after the changes notices, and the agent
    // replaces the table whole.
    assert!(world
        .nft(&["add", "chain", "inet", "netfence", "intruder"])
        .status
        .success());
    assert!(
        eventually(CONVERGE, || !world.has_chain("intruder")),
        "the foreign chain was removed"
    );
    assert!(world.metric("netfence_verify_failures_total") >= 1.0);
    world.expect("after the table was repaired", true, false);

    // A transaction the kernel refuses: a foreign rule uses a set the next change deletes.
    // The table stays as it was, the failure is reported, and the retry (a full replace)
    // converges.
    let sets = String::from_utf8(world.nft(&["list", "table", "inet", "netfence"]).stdout).expect("utf-8");
    let set = sets
        .split_whitespace()
        .find(|w| w.starts_with("pods-app_client-") && w.ends_with("-4"))
        .unwrap_or_else(|| panic!("the client peer set in {sets}"))
        .to_string();
    assert!(world
        .nft(&["add", "chain", "inet", "netfence", "holder"])
        .status
        .success());
    let rule = format!("ip saddr @{set} accept");
    assert!(world
        .nft(&["add", "rule", "inet", "netfence", "holder", &rule])
        .status
        .success());
    let failures = world.metric("netfence_apply_failures_total");
    api.delete("NetworkPolicy", "a", "web");
    world.expect("policy deleted despite a refused transaction", true, true);
    assert!(
        world.metric("netfence_apply_failures_total") > failures,
        "the refusal was counted"
    );
    assert!(agent
        .log_text()
        .contains("transaction failed; the previous table stays"));
    assert!(!world.has_chain("holder"), "the retry replaced the table whole");
    assert!(
        eventually(CONVERGE, || world.readyz() == Some(200)),
        "ready again"
    );
    api.apply(web_from(
        json!([{"podSelector": {"matchLabels": {"app": "client"}}}]),
    ));
    world.expect("policy back: client only", true, false);

    // Updates that change nothing policy reads (a status write, an annotation) send nothing.
    let generation = world.metric("netfence_last_applied_generation");
    let events = world.metric("netfence_watch_events_total{resource=\"pods\"}");
    let mut touched = client(json!({"app": "client"}));
    touched["metadata"]["annotations"]["touched"] = json!("yes");
    touched["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
    api.apply(touched);
    assert!(eventually(CONVERGE, || world
        .metric("netfence_watch_events_total{resource=\"pods\"}")
        > events));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        world.metric("netfence_last_applied_generation"),
        generation,
        "no transaction"
    );
    world.stays("after a status-only update", true, false);

    // The agent killed: the rules stay; a restarted agent converges.
    assert_eq!(agent.signal(Signal::SIGKILL), None, "killed by the signal");
    api.apply(web_from(
        json!([{"namespaceSelector": {"matchLabels": {"team": "b"}}}]),
    ));
    world.stays("agent dead", true, false);
    assert!(agent.log_text().contains("table replaced and verified"));
    let mut agent = Agent::start(&world.node_ns, "node-0", &kubeconfig, METRICS, &log, 500);
    world.expect("agent restarted", false, true);
    assert!(
        agent.log_text().contains("from a previous run stays in place"),
        "{}",
        agent.log_text()
    );

    // A malformed object is logged and skipped; the rest is still enforced and still updated.
    api.apply(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "broken", "namespace": "a"},
                     "spec": {"containers": "not a list"}}),
    );
    api.apply(web_from(
        json!([{"podSelector": {"matchLabels": {"app": "client"}}}]),
    ));
    world.expect("after a malformed pod", true, false);
    assert!(world.metric("netfence_malformed_objects_total") >= 1.0);
    assert!(agent.log_text().contains("pods a/broken"), "{}", agent.log_text());

    // SIGTERM leaves the rules; --uninstall removes them.
    assert_eq!(agent.signal(Signal::SIGTERM), Some(0));
    world.stays("agent stopped", true, false);
    assert!(world.has_table());
    let uninstall = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &world.node_ns,
            env!("CARGO_BIN_EXE_netfence-agent"),
        ])
        .args(["--uninstall", "--log-format", "json"])
        .output()
        .expect("uninstall runs");
    let stderr = String::from_utf8_lossy(&uninstall.stderr);
    assert!(uninstall.status.success(), "{stderr}");
    let line = stderr.lines().last().expect("a log line");
    let line: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("a JSON log line: {e}: {line}"));
    assert_eq!(line["fields"]["message"], "table inet netfence removed", "{line}");
    assert_eq!(line["level"], "INFO", "{line}");
    assert!(!world.has_table());
    world.expect("uninstalled: nothing policed", true, true);
}

/// An API server that refuses every list for seconds, by closing the connection or with 503, is
/// asked again with backoff, not every 100 ms, and the agent syncs once the lists are served.
/// Regression: the backoff was reset by the watcher's `Init` event, which comes before each
/// list request, so a failing list was retried every ~100 ms forever (200,000 list requests a
/// second from a 5,000-node cluster).
#[test]
fn refused_lists_are_retried_with_backoff_until_served() {
    require_root_and_nft();
    let ns = Netns::new("backoff");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut api = FakeApi::new();
    api.apply(namespace("a", json!({})));
    api.apply(node("node-0", "172.31.0.2"));
    for resource in RESOURCES {
        api.refuse_with(resource, Some(Refusal::Reset));
    }
    let port = api.listen(&ns.name);
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, FakeApi::kubeconfig(port)).expect("kubeconfig");
    let log = dir.path().join("agent.log");
    let agent = Agent::start(&ns.name, "node-0", &kubeconfig, BACKOFF_METRICS, &log, 2000);

    // Four seconds of connections closed unanswered (the client does not retry those itself:
    // each is a failed list for the watcher). Backing off from 100 ms doubling to 2 s, each
    // wait at least half its ceiling, allows at most 8 lists per resource (the first and 7
    // retries); resetting on the list's start, as before, made it about 40.
    // Lists per resource over `secs` seconds, each within `allowed`.
    let lists_within = |secs, allowed: std::ops::RangeInclusive<usize>, what: &str| {
        let count = || RESOURCES.map(|r| api.requests(r, "list"));
        let before = count();
        std::thread::sleep(Duration::from_secs(secs));
        let lists: Vec<usize> = count().iter().zip(before).map(|(a, b)| a - b).collect();
        for (resource, n) in RESOURCES.iter().zip(&lists) {
            assert!(
                allowed.contains(n),
                "{resource}: {n} lists in {secs} s of {what} ({lists:?}):\n{}",
                agent.log_text()
            );
        }
    };
    lists_within(4, 3..=9, "closed connections");
    // Then 503s: kube's client retries those itself (5 ms doubling), under the watcher's
    // backoff, which is at its 2 s bound by now: still a handful of requests, not hundreds.
    for resource in RESOURCES {
        api.refuse_with(resource, Some(Refusal::Unavailable));
    }
    lists_within(4, 1..=14, "503s");
    assert_eq!(
        get(&ns.name, BACKOFF_METRICS, "/readyz").map(|r| r.0),
        Some(503),
        "not ready while every list is refused"
    );
    assert!(agent.log_text().contains("retry_in_ms="), "{}", agent.log_text());

    // Served again: every watch lists, and the agent programs the node and is ready, within
    // a couple of maximum waits.
    let before: Vec<usize> = RESOURCES.iter().map(|r| api.requests(r, "list")).collect();
    for resource in RESOURCES {
        api.refuse_with(resource, None);
    }
    assert!(
        eventually(Duration::from_secs(10), || {
            get(&ns.name, BACKOFF_METRICS, "/readyz").is_some_and(|(code, _)| code == 200)
        }),
        "ready once the lists are served:\n{}",
        agent.log_text()
    );
    let served: Vec<usize> = RESOURCES.iter().map(|r| api.requests(r, "list")).collect();
    assert!(
        served.iter().zip(&before).all(|(after, before)| after > before),
        "{before:?} then {served:?}"
    );
}
