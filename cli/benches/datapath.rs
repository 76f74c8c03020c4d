//! Datapath benchmark (needs root): new TCP connections per second and request/response
//! latency between a client and a server namespace routed through a node namespace, with the
//! node holding (a) no table, (b) only a conntrack fast path, (c) netfence's table for a cluster
//! of 100k pods and 10k policies in which client and server are pods of that node, (d) an
//! iptables-style linear chain of the same allowances for the measured flow, and (e) netfence's
//! table for one policy of 300 peers and 300 ports that admits the client (rules that look
//! peers and ports up in sets, not their cross product).
//!
//! Run: `cargo bench -p netfence-cli --bench datapath`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netfence_netns::in_netns;
use netfence_tests::bench::{median, Goals};
use netfence_tests::netns::{require_root_and_nft, Netns};
use netfence_tests::synth;
use nft_backend::build::build;
use policy_compiler::model::{
    ContainerPort, Directions, NamespaceScope, Peer, Phase, Pod, Policy, PolicyBody, PortMatch, PortSpec,
    Rule,
};
use policy_compiler::selector::Selector;
use policy_compiler::{ObjectKey, Protocol, Snapshot};

const CLIENT: Ipv4Addr = Ipv4Addr::new(100, 64, 1, 2);
const SERVER: Ipv4Addr = Ipv4Addr::new(100, 64, 2, 2);
const PORT: u16 = 8080;
const DURATION: Duration = Duration::from_secs(3);
/// Runs of each of the two rulesets the goal compares.
const ROUNDS: usize = 5;

fn sel(pairs: &[(&str, &str)]) -> Selector {
    Selector::parse(pairs.iter().copied(), []).expect("selector")
}

fn bench_pod(name: &str, addr: Ipv4Addr, app: &str) -> Pod {
    Pod {
        key: ObjectKey::new("ns-0", name),
        labels: [("app".to_string(), app.to_string())].into_iter().collect(),
        node: "node-0".to_string(),
        host_network: false,
        phase: Phase::Running,
        ips: vec![addr.into()],
        ports: vec![ContainerPort {
            name: Some("http".into()),
            number: PORT,
            protocol: Protocol::Tcp,
        }],
    }
}

/// 100k pods, 10k policies, and the bench's client and server on `node-0`: the server accepts
/// the client on 8080 and every pod of the cluster on 9999; the client may send to the server.
fn cluster() -> Snapshot {
    let mut snap = synth::cluster(100_000, 10_000);
    for pod in [
        bench_pod("bench-client", CLIENT, "bench-client"),
        bench_pod("bench-server", SERVER, "bench-server"),
    ] {
        snap.pods.insert(pod.key.clone(), pod);
    }
    let tcp = |port: PortMatch| {
        Some(vec![PortSpec {
            protocol: Protocol::Tcp,
            port,
        }])
    };
    let pods = |ns: NamespaceScope, s: Selector| Peer::Pods {
        namespaces: ns,
        pods: s,
    };
    let policies = [
        Policy {
            key: ObjectKey::new("ns-0", "bench-server"),
            pod_selector: sel(&[("app", "bench-server")]),
            directions: Directions {
                ingress: true,
                egress: false,
            },
            body: PolicyBody::Valid {
                ingress: vec![
                    Rule {
                        peers: Some(vec![pods(
                            NamespaceScope::Selected(Selector::everything()),
                            Selector::everything(),
                        )]),
                        ports: tcp(PortMatch::Range {
                            first: 9999,
                            last: 9999,
                        }),
                    },
                    Rule {
                        peers: Some(vec![pods(
                            NamespaceScope::Named("ns-0".into()),
                            sel(&[("app", "bench-client")]),
                        )]),
                        ports: tcp(PortMatch::Named("http".into())),
                    },
                ],
                egress: vec![],
            },
        },
        Policy {
            key: ObjectKey::new("ns-0", "bench-client"),
            pod_selector: sel(&[("app", "bench-client")]),
            directions: Directions {
                ingress: true,
                egress: true,
            },
            body: PolicyBody::Valid {
                ingress: vec![],
                egress: vec![Rule {
                    peers: Some(vec![pods(
                        NamespaceScope::Named("ns-0".into()),
                        sel(&[("app", "bench-server")]),
                    )]),
                    ports: tcp(PortMatch::Range {
                        first: PORT,
                        last: PORT,
                    }),
                }],
            },
        },
    ];
    for p in policies {
        snap.policies.insert(p.key.clone(), p);
    }
    snap
}

/// The same allowances for the measured flow as a linear chain: one rule per address that may
/// reach the server on 9999, then the client's rule, then drop.
fn linear_script(snap: &Snapshot) -> String {
    let mut out = String::from("table inet linear {\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n\t\tct state established,related accept\n");
    for pod in snap.pods.values().filter(|p| p.is_enforced()) {
        for ip in &pod.ips {
            if ip.is_ipv4() && *ip != std::net::IpAddr::V4(CLIENT) {
                out.push_str(&format!(
                    "\t\tip saddr {ip} ip daddr {SERVER} tcp dport 9999 accept\n"
                ));
            }
        }
    }
    out.push_str(&format!(
        "\t\tip saddr {CLIENT} ip daddr {SERVER} tcp dport {PORT} accept\n"
    ));
    out.push_str(&format!("\t\tip daddr {SERVER} drop\n\t}}\n}}\n"));
    out
}

struct Topology {
    client: Netns,
    router: Netns,
    server: Netns,
}

fn topology() -> Topology {
    let t = Topology {
        client: Netns::new("dc"),
        router: Netns::new("dr"),
        server: Netns::new("ds"),
    };
    let r = &t.router.name;
    for (ns, name, addr, gw, subnet) in [
        (&t.client, "vc", CLIENT, "100.64.1.1", "100.64.1.1/24"),
        (&t.server, "vs", SERVER, "100.64.2.1", "100.64.2.1/24"),
    ] {
        netfence_tests::netns::sh(&[
            "ip", "-n", r, "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ]);
        netfence_tests::netns::sh(&["ip", "-n", r, "addr", "add", subnet, "dev", name]);
        netfence_tests::netns::sh(&["ip", "-n", r, "link", "set", name, "up"]);
        ns.ok("ip", &["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        ns.ok("ip", &["link", "set", "eth0", "up"]);
        ns.ok("ip", &["link", "set", "lo", "up"]);
        ns.ok("ip", &["route", "add", "default", "via", gw]);
    }
    t.router.ok("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    // A run opens some 20,000 connections, which would leave the client's ephemeral ports in
    // TIME_WAIT for a minute: connect() then searches the port range ever longer, and the
    // later runs slow down. Reusing TIME_WAIT ports for new outgoing connections keeps every
    // run alike.
    t.client.ok("sysctl", &["-qw", "net.ipv4.tcp_tw_reuse=1"]);
    t.client
        .ok("sysctl", &["-qw", "net.ipv4.ip_local_port_range=1024 65000"]);
    t
}

/// Runs the client for `DURATION`: connections per second, p50 and p99 latency in µs. The
/// router's connection tracking table is emptied first, so no run inherits the last one's
/// entries.
fn measure(t: &Topology) -> (f64, f64, f64) {
    let _ = t.router.exec("conntrack", &["-F"]);
    let stop = Arc::new(AtomicBool::new(false));
    let listener = in_netns(&t.server.name, || {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        s.set_reuse_address(true)?;
        s.bind(&SocketAddr::from((SERVER, PORT)).into())?;
        s.listen(4096)?;
        Ok::<TcpListener, std::io::Error>(s.into())
    })
    .expect("ns")
    .expect("listen");
    let server_stop = Arc::clone(&stop);
    listener.set_nonblocking(true).expect("nonblocking");
    let server = std::thread::spawn(move || {
        let mut byte = [0u8; 1];
        while !server_stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut s, _)) => {
                    let _ = s.set_nonblocking(false);
                    if s.read_exact(&mut byte).is_ok() {
                        let _ = s.write_all(&byte);
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_micros(50)),
            }
        }
    });
    let latencies = in_netns(&t.client.name, || {
        let mut lat = Vec::new();
        let start = Instant::now();
        let mut byte = [7u8; 1];
        while start.elapsed() < DURATION {
            let t0 = Instant::now();
            let mut s = TcpStream::connect_timeout(&SocketAddr::from((SERVER, PORT)), Duration::from_secs(1))
                .expect("allowed flow connects");
            s.write_all(&byte).expect("request");
            s.read_exact(&mut byte).expect("response");
            lat.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        lat
    })
    .expect("ns");
    stop.store(true, Ordering::Relaxed);
    server.join().expect("server");
    let mut lat = latencies;
    lat.sort_by(|a, b| a.partial_cmp(b).expect("numbers"));
    let rate = lat.len() as f64 / DURATION.as_secs_f64();
    (rate, lat[lat.len() / 2], lat[lat.len() * 99 / 100])
}

fn main() {
    require_root_and_nft();
    let t = topology();
    let snap = cluster();
    let table = build(&policy_compiler::compile(&snap, "node-0").0);
    let n_elements = table.n_elements();
    let n_rules: usize = table.chains.iter().map(|c| c.rules.len()).sum();
    let script_path = std::env::temp_dir().join(format!("netfence-linear-{}.nft", std::process::id()));
    std::fs::write(&script_path, linear_script(&snap)).expect("script");
    let script_path = script_path.to_str().expect("utf-8").to_string();

    let mut rows = Vec::new();
    rows.push(("no ruleset", measure(&t)));
    let fast_path = "table inet netfence {\n chain forward {\n  type filter hook forward priority filter; policy accept;\n  ct state established,related accept\n }\n}\n";
    let path = std::env::temp_dir().join(format!("netfence-ct-{}.nft", std::process::id()));
    std::fs::write(&path, fast_path).expect("script");
    let path = path.to_str().expect("utf-8").to_string();
    // The two rulesets the goal compares, measured in turn ROUNDS times each, so that the
    // machine's drift over the run falls on both; each row is the run with the median rate,
    // and the goal is checked on the median of each round's ratio (runs seconds apart).
    // The same table with its sets declared without a size (the kernel's resizable hash, as
    // before sets were sized), in the same rounds: what sizing costs or saves per packet.
    let wide_yaml = synth::wide_policy_yaml(300, 300, SERVER, CLIENT, PORT);
    let wide_input = netfence_cli::input::load_str("wide.yaml", &wide_yaml).expect("the wide policy loads");
    let wide = build(&policy_compiler::compile(&wide_input.snapshot, "node-0").0);
    let mut no_sizes = table.clone();
    for set in &mut no_sizes.sets {
        set.size = None;
    }
    let (mut fast, mut ours, mut resizable, mut wide_runs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        in_netns(&t.router.name, nft_netlink::delete_table)
            .expect("ns")
            .expect("delete");
        t.router.ok("nft", &["-f", &path]);
        fast.push(measure(&t));
        for (table, runs) in [
            (&table, &mut ours),
            (&no_sizes, &mut resizable),
            (&wide, &mut wide_runs),
        ] {
            let table = table.clone();
            in_netns(&t.router.name, move || nft_netlink::apply_full(&table))
                .expect("ns")
                .expect("apply");
            runs.push(measure(&t));
        }
    }
    std::fs::remove_file(&path).expect("removed");
    let round_ratios: Vec<f64> = ours.iter().zip(&fast).map(|(o, f)| o.0 / f.0).collect();
    let sizing_ratios: Vec<f64> = ours.iter().zip(&resizable).map(|(o, r)| o.0 / r.0).collect();
    let wide_ratios: Vec<f64> = wide_runs.iter().zip(&fast).map(|(w, f)| w.0 / f.0).collect();
    rows.push(("conntrack fast path only", median_run(fast)));
    rows.push(("netfence (this table)", median_run(ours)));
    rows.push(("netfence, sets without a size", median_run(resizable)));
    rows.push((
        "netfence, one policy of 300 peers x 300 ports",
        median_run(wide_runs),
    ));
    in_netns(&t.router.name, nft_netlink::delete_table)
        .expect("ns")
        .expect("delete");
    t.router.ok("nft", &["-f", &script_path]);
    rows.push(("linear chain, same allowances", measure(&t)));
    std::fs::remove_file(&script_path).expect("removed");

    let base = rows[1].1 .0;
    println!(
        "New TCP connections (connect, 1-byte request, 1-byte response, close), one client, {} s each.",
        DURATION.as_secs()
    );
    println!("netfence table: {n_elements} set elements, {n_rules} rules in all chains, for 100k pods and 10k policies.");
    println!("| node ruleset | connections/s | ratio to conntrack-only | p50 latency µs | p99 latency µs |");
    println!("|---|---|---|---|---|");
    for (name, (rate, p50, p99)) in &rows {
        println!(
            "| {name} | {rate:.0} | {:.2} | {p50:.0} | {p99:.0} |",
            rate / base
        );
    }
    let mut goals = Goals::new();
    println!(
        "Per round, netfence / conntrack-only: {}; sized / unsized sets: {}; 300x300 policy / conntrack-only: {}.",
        list(&round_ratios),
        list(&sizing_ratios),
        list(&wide_ratios)
    );
    goals.at_least(
        "new connections/s, netfence table / conntrack fast path only, median of rounds",
        median(round_ratios),
        0.95,
    );
    goals.at_least(
        "new connections/s, the 300-peer x 300-port policy's table / conntrack fast path only, median of rounds",
        median(wide_ratios),
        0.95,
    );
    goals.finish();
}

fn list(ratios: &[f64]) -> String {
    ratios
        .iter()
        .map(|r| format!("{r:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Of several runs of one ruleset, the one with the median connection rate.
fn median_run(mut runs: Vec<(f64, f64, f64)>) -> (f64, f64, f64) {
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    runs[runs.len() / 2]
}
