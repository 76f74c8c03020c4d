//! Kernel test (root: the fake API server and the agent run in a network namespace the test
//! makes): an API server that refuses every list for seconds, by closing the connection or
//! with 503, is asked again with backoff, not every 100 ms, and the agent syncs once the lists
//! are served.
//!
//! Regression: the backoff was reset by the watcher's `Init` event, which comes before each
//! list request, so a failing list was retried every ~100 ms forever (200,000 list requests a
//! second from a 5,000-node cluster).

mod common;

use std::time::Duration;

use common::{eventually, namespace, node, Agent};
use netfence_tests::fakeapi::{get, FakeApi, Refusal};
use netfence_tests::netns::{require_root_and_nft, Netns};
use serde_json::json;

const RESOURCES: [&str; 4] = ["namespaces", "pods", "nodes", "networkpolicies"];
const METRICS: u16 = 19474;

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
    let agent = Agent::start(&ns.name, "node-0", &kubeconfig, METRICS, &log, 2000);

    // Four seconds of connections closed unanswered (the client does not retry those itself:
    // each is a failed list for the watcher). Backing off from 100 ms doubling to 2 s, each
    // wait at least half its ceiling, allows at most 8 lists per resource (the first and 7
    // retries); resetting on the list's start, as before, made it about 40.
    let lists_in = |secs| {
        let before: Vec<usize> = RESOURCES.iter().map(|r| api.requests(r, "list")).collect();
        std::thread::sleep(Duration::from_secs(secs));
        let after: Vec<usize> = RESOURCES.iter().map(|r| api.requests(r, "list")).collect();
        after
            .iter()
            .zip(before)
            .map(|(a, b)| a - b)
            .collect::<Vec<usize>>()
    };
    let lists = lists_in(4);
    for (resource, n) in RESOURCES.iter().zip(&lists) {
        assert!(
            (3..=9).contains(n),
            "{resource}: {n} lists in 4 s of closed connections ({lists:?}):\n{}",
            agent.log_text()
        );
    }
    // Then 503s: kube's client retries those itself (5 ms doubling), under the watcher's
    // backoff, which is at its 2 s bound by now: still a handful of requests, not hundreds.
    for resource in RESOURCES {
        api.refuse_with(resource, Some(Refusal::Unavailable));
    }
    let unavailable = lists_in(4);
    for (resource, n) in RESOURCES.iter().zip(&unavailable) {
        assert!(
            (1..=14).contains(n),
            "{resource}: {n} lists in 4 s of 503s ({unavailable:?}):\n{}",
            agent.log_text()
        );
    }
    assert_eq!(
        get(&ns.name, METRICS, "/readyz").map(|r| r.0),
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
            get(&ns.name, METRICS, "/readyz").is_some_and(|(code, _)| code == 200)
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
