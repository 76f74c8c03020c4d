//! Agent benchmark (needs root).
//!
//! Event-to-enforced latency: the agent for `node-0` runs in a network namespace made for the
//! run, against the fake API server holding 10k pods and 1k policies. The benchmark makes
//! 1,000 changes one after another (a local pod added, a policy that selects it changed, the
//! pod relabelled into another allow-set, the pod deleted) and times each from the moment the
//! server emits it to the kernel's notification that the transaction enforcing it committed
//! (a netlink socket subscribed to nftables' multicast group in that namespace).
//!
//! Memory: a fresh agent syncs a cluster of 150k pods; its peak and current resident memory
//! after the sync, from /proc.
//!
//! Run: `cargo bench -p netfence-agent --bench agent`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use common::{eventually, ingress_policy, namespace, node, pod, Agent};
use netfence_tests::bench::Goals;
use netfence_tests::fakeapi::{get, FakeApi};
use netfence_tests::netns::{require_root_and_nft, Netns};
use nix::sys::socket::{
    bind, recv, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
    SockType,
};
use serde_json::{json, Value};

const METRICS: u16 = 19474;
/// nfnetlink's nftables multicast group, and the message that ends every committed transaction.
const NFNLGRP_NFTABLES: u32 = 7;
const NEWGEN: u16 = (10 << 8) | 15;

fn pod_ip(j: usize) -> String {
    format!("10.{}.{}.{}", 1 + j / 62_500, (j / 250) % 250, j % 250 + 1)
}

/// A cluster of `n_pods` pods on 100 nodes in 100 namespaces, with `n_policies` policies
/// (ten per namespace, one per app label), each admitting the next app from namespaces of
/// one team on one port.
fn cluster(n_pods: usize, n_policies: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for i in 0..100 {
        out.push(namespace(
            &format!("ns-{i}"),
            json!({"team": format!("t-{}", i % 10)}),
        ));
        out.push(node(
            &format!("node-{i}"),
            &format!("172.31.{}.{}", i / 250, i % 250 + 1),
        ));
    }
    for j in 0..n_pods {
        let labels = json!({"app": format!("app-{}", (j / 7) % 10)});
        out.push(pod(
            &format!("ns-{}", (j / 100) % 100),
            &format!("pod-{j}"),
            &format!("node-{}", j % 100),
            &pod_ip(j),
            labels,
        ));
    }
    for k in 0..n_policies {
        out.push(policy(k, 80 + (k % 5) as u16));
    }
    out
}

fn policy(k: usize, port: u16) -> Value {
    let app = (k / 100) % 10;
    let mut p = ingress_policy(
        &format!("ns-{}", k % 100),
        &format!("pol-{k}"),
        json!({"matchLabels": {"app": format!("app-{app}")}}),
        json!([{"namespaceSelector": {"matchLabels": {"team": format!("t-{}", k % 10)}},
                "podSelector": {"matchLabels": {"app": format!("app-{}", (app + 1) % 10)}}}]),
    );
    p["spec"]["ingress"][0]["ports"] = json!([{"protocol": "TCP", "port": port}]);
    p
}

/// A netlink socket in `netns` that hears every committed nftables transaction there.
fn monitor(netns: &Netns) -> OwnedFd {
    netns.run(|| {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::empty(),
            SockProtocol::NetlinkNetFilter,
        )
        .expect("netlink socket");
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 1 << (NFNLGRP_NFTABLES - 1)))
            .expect("join the nftables group");
        setsockopt(&fd, sockopt::RcvBuf, &(8 << 20)).expect("receive buffer");
        fd
    })
}

/// Waits for the next committed transaction; false after `limit`.
fn next_commit(fd: &OwnedFd, limit: Duration) -> bool {
    let start = Instant::now();
    let mut buf = vec![0u8; 1 << 16];
    setsockopt(
        fd,
        sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(0, 50_000),
    )
    .expect("timeout");
    while start.elapsed() < limit {
        let Ok(n) = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) else {
            continue;
        };
        let mut at = 0;
        while at + 16 <= n {
            let len = u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
            let kind = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().expect("2 bytes"));
            if kind == NEWGEN {
                return true;
            }
            at += len.max(16).next_multiple_of(4);
        }
    }
    false
}

/// Discards notifications already queued.
fn drain(fd: &OwnedFd) {
    while next_commit(fd, Duration::from_millis(100)) {}
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn start(api: &mut FakeApi, netns: &Netns, dir: &std::path::Path) -> Agent {
    let port = api.listen(&netns.name);
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, FakeApi::kubeconfig(port)).expect("kubeconfig");
    let agent = Agent::start(
        &netns.name,
        "node-0",
        &kubeconfig,
        METRICS,
        &dir.join("agent.log"),
        500,
    );
    let ready = eventually(Duration::from_secs(300), || {
        get(&netns.name, METRICS, "/readyz").is_some_and(|(code, _)| code == 200)
    });
    assert!(ready, "the agent became ready:\n{}", agent.log_text());
    agent
}

fn memory_of(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kib = |field: &str| -> f64 {
        let line = status.lines().find(|l| l.starts_with(field)).expect("field");
        line.split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .expect("number")
    };
    (kib("VmHWM:") / 1024.0, kib("VmRSS:") / 1024.0)
}

fn latency(netns: &Netns, dir: &std::path::Path, goals: &mut Goals) {
    let mut api = FakeApi::new();
    for object in cluster(10_000, 1_000) {
        api.apply(object);
    }
    let mut agent = start(&mut api, netns, dir);
    let fd = monitor(netns);
    drain(&fd);
    let mut samples = Vec::new();
    let mut missed = 0;
    for round in 0..250 {
        let ip = format!("10.200.{}.{}", round / 250, round % 250 + 1);
        let name = format!("bench-{round}");
        let changes = [
            pod("ns-0", &name, "node-0", &ip, json!({"app": "app-1"})),
            policy(100, 1000 + (round % 2) as u16),
            pod("ns-0", &name, "node-0", &ip, json!({"app": "app-2"})),
        ];
        for (i, change) in changes.into_iter().chain([Value::Null]).enumerate() {
            let t0 = Instant::now();
            match change {
                Value::Null => api.delete("Pod", "ns-0", &name),
                object => {
                    api.apply(object);
                }
            }
            if next_commit(&fd, Duration::from_secs(2)) {
                samples.push(t0.elapsed().as_secs_f64() * 1e3);
            } else {
                missed += 1;
                eprintln!("round {round} change {i}: no transaction within 2 s");
            }
        }
    }
    samples.sort_by(|a, b| a.partial_cmp(b).expect("numbers"));
    let (p50, p99, max) = (
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples[samples.len() - 1],
    );
    let (hwm, rss) = memory_of(agent.child.id());
    println!("Event-to-enforced latency, 10k pods / 1k policies, coalescing 5 ms, {} changes ({missed} without a transaction); ms.", samples.len());
    println!("| p50 | p99 | max | p99 / 50 ms goal | agent peak RSS MiB | agent RSS MiB |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {p50:.2} | {p99:.2} | {max:.2} | {:.2} | {hwm:.0} | {rss:.0} |",
        p99 / 50.0
    );
    goals.at_most("event-to-enforced p99, ms", p99, 50.0);
    goals.at_most("changes without a transaction", missed as f64, 0.0);
    assert_eq!(agent.signal(nix::sys::signal::Signal::SIGTERM), Some(0));
}

fn memory(netns: &Netns, dir: &std::path::Path, goals: &mut Goals) {
    let mut api = FakeApi::new();
    for object in cluster(150_000, 1_000) {
        api.apply(object);
    }
    let listed = Instant::now();
    let agent = start(&mut api, netns, dir);
    let synced = listed.elapsed();
    let (hwm, rss) = memory_of(agent.child.id());
    println!();
    println!("Agent memory with 150k pods, 1k policies in the caches (100 nodes; this node has 1.5k pods).");
    println!("| start to ready s | peak RSS MiB | RSS after sync MiB | peak / 300 MiB goal |");
    println!("|---|---|---|---|");
    println!(
        "| {:.1} | {hwm:.0} | {rss:.0} | {:.2} |",
        synced.as_secs_f64(),
        hwm / 300.0
    );
    goals.at_most("agent peak RSS with 150k pods, MiB", hwm, 300.0);
}

fn main() {
    require_root_and_nft();
    let netns = Netns::new("agb");
    netns.ok("ip", &["link", "set", "lo", "up"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut goals = Goals::new();
    latency(&netns, dir.path(), &mut goals);
    memory(&netns, dir.path(), &mut goals);
    goals.finish();
}
