//! Kernel tests with real traffic: the demo cluster built as network namespaces, programmed
//! over netlink, probed on real sockets. Every denied flow sits beside allowed flows between the
//! same pods in the same test.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use netfence_cli::input;
use netfence_cli::matrix::{self, Engine};
use netfence_cli::sandbox::lab::{run_prefix, Lab};
use netfence_cli::sandbox::probe::{tcp_connects, Servers};
use netfence_netns::in_netns;
use netfence_tests::netns::require_root_and_nft;
use policy_compiler::model::{ContainerPort, Phase, Pod};
use policy_compiler::{compile_all, ObjectKey, Protocol, Snapshot};

const PORT: u16 = 80;
const TIMEOUT: Duration = Duration::from_millis(400);

fn demo() -> Snapshot {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/demo");
    input::load(&[dir]).expect("demo loads").snapshot
}

#[test]
fn demo_truth_table_holds_on_real_sockets() {
    require_root_and_nft();
    let snap = demo();
    let lab = Lab::build(&snap, &run_prefix("m")).expect("lab builds");
    lab.program(&snap).expect("nodes programmed");
    let mut servers = Servers::new();
    for pod in &lab.pods {
        servers
            .listen(&pod.netns, pod.addr, Protocol::Tcp, PORT)
            .expect("server listens");
    }
    let rulesets = compile_all(&snap);
    let expected = matrix::compute(&snap, Engine::Compiled(&rulesets), Protocol::Tcp, PORT);
    let mut probes = Vec::new();
    for (i, from) in expected.pods.iter().enumerate() {
        for (j, to) in expected.pods.iter().enumerate() {
            let src = lab.pod(&from.to_string()).expect("pod in lab").clone();
            let dst = lab.pod(&to.to_string()).expect("pod in lab").addr;
            probes.push((
                (i, j),
                std::thread::spawn(move || tcp_connects(&src.netns, dst, PORT, TIMEOUT)),
            ));
        }
    }
    let mut mismatches = Vec::new();
    let (mut n_allowed, mut n_denied) = (0, 0);
    for ((i, j), probe) in probes {
        let observed = probe.join().expect("probe thread").expect("probe runs");
        if observed {
            n_allowed += 1;
        } else {
            n_denied += 1;
        }
        if observed != expected.allowed[i][j] {
            mismatches.push(format!(
                "{} -> {}: kernel {observed}, compiled {}",
                expected.pods[i], expected.pods[j], expected.allowed[i][j]
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    assert!(
        n_allowed > 0 && n_denied > 0,
        "both outcomes observed: {n_allowed} allowed, {n_denied} denied"
    );

    // The node reaches its own pods, even the locked-down vault; the other node does not.
    let vault = lab.pod("locked/vault").expect("vault").clone();
    let own_node = lab.nodes[&vault.node].netns.clone();
    let other = lab
        .nodes
        .iter()
        .find(|(n, _)| **n != vault.node)
        .map(|(_, node)| node.netns.clone())
        .expect("two nodes");
    assert!(
        tcp_connects(&own_node, vault.addr, PORT, TIMEOUT).unwrap(),
        "kubelet path to the vault"
    );
    assert!(
        !tcp_connects(&other, vault.addr, PORT, TIMEOUT).unwrap(),
        "another node's address is denied"
    );
    // Pod-to-node egress is policed: the vault may not reach its node, prometheus may.
    let node_addr = lab.nodes[&vault.node].addr;
    let mut node_server = Servers::new();
    node_server
        .listen(&own_node, node_addr, Protocol::Tcp, 10250)
        .unwrap();
    let prometheus = lab.pod("monitoring/prometheus").expect("prometheus").clone();
    assert!(
        tcp_connects(&prometheus.netns, node_addr, 10250, TIMEOUT).unwrap(),
        "unisolated pod reaches its node"
    );
    assert!(
        !tcp_connects(&vault.netns, node_addr, 10250, TIMEOUT).unwrap(),
        "egress-isolated pod does not"
    );
}

/// The demo with `extra` more monitoring pods (on a node outside the lab): every shop pod's
/// allow-set gains that many addresses, and no flow between the lab's pods changes.
fn with_extra_monitoring(snap: &Snapshot, extra: usize) -> Snapshot {
    let mut big = snap.clone();
    for i in 0..extra {
        let key = ObjectKey::new("monitoring", format!("scraper-{i}"));
        big.pods.insert(
            key.clone(),
            Pod {
                key,
                labels: [("app".to_string(), "scraper".to_string())].into_iter().collect(),
                node: "node-9".to_string(),
                host_network: false,
                phase: Phase::Running,
                ips: vec![Ipv4Addr::from(0x0A63_0000u32 + i as u32).into()],
                ports: vec![ContainerPort {
                    name: Some("http".into()),
                    number: 80,
                    protocol: Protocol::Tcp,
                }],
            },
        );
    }
    big
}

#[test]
fn large_updates_never_open_a_window() {
    require_root_and_nft();
    let small = demo();
    let big = with_extra_monitoring(&small, 20_000);
    let lab = Lab::build(&small, &run_prefix("a")).expect("lab builds");
    lab.program(&small).expect("nodes programmed");
    let backend = lab.pod("shop/backend").expect("backend").clone();
    let frontend = lab.pod("shop/frontend").expect("frontend").clone();
    let db = lab.pod("shop/db").expect("db").clone();
    let mut servers = Servers::new();
    servers
        .listen(&backend.netns, backend.addr, Protocol::Tcp, PORT)
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<[AtomicUsize; 4]> = Arc::new(Default::default());
    let spawn_loop = |netns: String, slot: usize| {
        let (stop, counts) = (Arc::clone(&stop), Arc::clone(&counts));
        std::thread::spawn(move || {
            in_netns(&netns.clone(), move || {
                while !stop.load(Ordering::Relaxed) {
                    let ok = std::net::TcpStream::connect_timeout(
                        &(backend.addr, PORT).into(),
                        Duration::from_millis(300),
                    )
                    .is_ok();
                    counts[slot + usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
                }
            })
        })
    };
    // frontend -> backend is allowed (slots 0 ok, 1 failed); db -> backend is denied (2, 3).
    let allowed = spawn_loop(frontend.netns.clone(), 0);
    let denied = spawn_loop(db.netns.clone(), 2);

    let node_ns = lab.nodes[&backend.node].netns.clone();
    let tables =
        [&small, &big].map(|s| nft_backend::build::build(&policy_compiler::compile(s, &backend.node).0));
    let n_elements = tables[1].n_elements();
    // Half the rounds replace the whole table, half send only the difference (20,000 elements;
    // the sets that grow or shrink that much are recreated with another size).
    let mut applied = tables[0].clone();
    for round in 0..100 {
        let (old, mut new) = (applied, tables[round % 2].clone());
        let full = round % 4 < 2;
        applied = in_netns(&node_ns, move || {
            if full {
                nft_netlink::apply_full(&new)?;
            } else {
                nft_netlink::apply_diff(&old, &mut new)?;
            }
            Ok::<_, nft_netlink::NetlinkError>(new)
        })
        .unwrap()
        .expect("apply");
    }
    stop.store(true, Ordering::Relaxed);
    allowed.join().unwrap().unwrap();
    denied.join().unwrap().unwrap();
    let [ok, failed, denied_ok, denied_failed] = [0, 1, 2, 3].map(|i| counts[i].load(Ordering::Relaxed));
    assert!(n_elements > 20_000, "the large table holds {n_elements} elements");
    assert!(ok > 100, "the allowed flow kept connecting: {ok}");
    assert_eq!(failed, 0, "allowed connections that failed during 100 applies");
    assert!(denied_failed > 0, "the denied flow was tried");
    assert_eq!(
        denied_ok, 0,
        "denied connections that got through during 100 applies"
    );
}

#[test]
fn policy_sees_the_pod_behind_a_service_address() {
    require_root_and_nft();
    let snap = demo();
    let lab = Lab::build(&snap, &run_prefix("s")).expect("lab builds");
    lab.program(&snap).expect("nodes programmed");
    let backend = lab.pod("shop/backend").expect("backend").clone();
    let mut servers = Servers::new();
    servers
        .listen(&backend.netns, backend.addr, Protocol::Tcp, PORT)
        .unwrap();
    // A stand-in for kube-proxy on every node: ClusterIP 10.96.0.10 port 80 to the backend pod.
    let cluster_ip = Ipv4Addr::new(10, 96, 0, 10);
    let script = format!(
        "table ip kube-proxy-standin {{\n\tchain services {{\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t\tip daddr {cluster_ip} tcp dport {PORT} dnat to {}:{PORT}\n\t}}\n}}\n",
        backend.addr
    );
    let path = std::env::temp_dir().join(format!("netfence-svc-{}.nft", std::process::id()));
    std::fs::write(&path, script).unwrap();
    for node in lab.nodes.values() {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &node.netns, "nft", "-f"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    std::fs::remove_file(&path).unwrap();
    // Policy is written for the pod: the frontend may reach the backend, the database may not,
    // through the service address as directly.
    for (client, allowed) in [
        ("shop/frontend", true),
        ("monitoring/prometheus", true),
        ("shop/db", false),
    ] {
        let pod = lab.pod(client).expect("client").clone();
        assert_eq!(
            tcp_connects(&pod.netns, cluster_ip, PORT, TIMEOUT).unwrap(),
            allowed,
            "{client} via the service"
        );
        assert_eq!(
            tcp_connects(&pod.netns, backend.addr, PORT, TIMEOUT).unwrap(),
            allowed,
            "{client} directly"
        );
    }
}
