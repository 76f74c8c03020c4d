//! Programming benchmark (needs root): how long it takes to put a table of 1k, 10k and 100k set
//! elements into the kernel, by one netlink transaction and by `nft -f` of the rendered script
//! (the way kube-proxy's nftables mode programs), with the kernel's share (system time); and how
//! long an incremental change of one pod takes at 100k elements, from the compiler's update to
//! the acknowledged transaction; and how long `netfence apply` (the whole process) takes to
//! program a policy with 300 peers and 300 ports.
//!
//! Run: `cargo bench -p netfence-cli --bench programming`.

use std::time::{Duration, Instant};

use netfence_netns::in_netns;
use netfence_tests::bench::{median, Goals};
use netfence_tests::netns::{require_root_and_nft, Netns};
use netfence_tests::synth;
use nft_backend::{build::build, render::render};
use nix::sys::resource::{getrusage, UsageWho};
use policy_compiler::Compiler;

const RUNS: usize = 5;

/// A change's name, its times from the update, and its diff-and-transaction times.
type Row = (&'static str, Vec<f64>, Vec<f64>);

/// One change to the cluster, applied to the compiler.
type Change = Box<dyn Fn(&mut Compiler)>;

fn secs(tv: nix::sys::time::TimeVal) -> f64 {
    tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6
}

fn ms(s: f64) -> f64 {
    s * 1e3
}

/// (wall, system) seconds of one netlink full apply, in the namespace: on a socket opened for
/// it and closed after it (as `nft -f` does; the close waits for the kernel to release the old
/// table), and on a session held open from earlier (as the agent does).
fn netlink_full(ns: &Netns, table: &nft_backend::nft::Table) -> [(f64, f64); 2] {
    let table = table.clone();
    in_netns(&ns.name, move || {
        let measure = |f: &mut dyn FnMut()| {
            let before = getrusage(UsageWho::RUSAGE_THREAD).expect("rusage");
            let start = Instant::now();
            f();
            let wall = start.elapsed().as_secs_f64();
            let after = getrusage(UsageWho::RUSAGE_THREAD).expect("rusage");
            (wall, secs(after.system_time()) - secs(before.system_time()))
        };
        let own = measure(&mut || {
            nft_netlink::apply_full(&table).expect("netlink apply");
        });
        let mut session = nft_netlink::Session::open().expect("session");
        let held = measure(&mut || {
            session.apply_full(&table).expect("netlink apply");
        });
        [own, held]
    })
    .expect("namespace")
}

/// (wall, system) seconds of `nft -f` of the script, children's system time included.
fn nft_file(ns: &Netns, path: &str) -> (f64, f64) {
    let before = getrusage(UsageWho::RUSAGE_CHILDREN).expect("rusage");
    let start = Instant::now();
    ns.ok("nft", &["-f", path]);
    let wall = start.elapsed().as_secs_f64();
    let after = getrusage(UsageWho::RUSAGE_CHILDREN).expect("rusage");
    (wall, secs(after.system_time()) - secs(before.system_time()))
}

/// Adds, relabels and deletes one local pod 21 times; per change the times from the compiler's
/// update to the acknowledged transaction, and of the difference and transaction alone.
fn incremental(mut compiler: Compiler) -> (usize, Vec<Row>) {
    let mut session = nft_netlink::Session::open().expect("session");
    let mut applied = build(compiler.ruleset());
    session.apply_full(&applied).expect("apply");
    let n_elements = applied.n_elements();
    let mut rows: Vec<Row> = vec![
        ("add", vec![], vec![]),
        ("relabel", vec![], vec![]),
        ("delete", vec![], vec![]),
    ];
    for round in 0..21 {
        let i = 200 + round * 997;
        let mut pod = synth::pod(i, 100_000, 0);
        pod.node = synth::node_name(0);
        pod.key.namespace = "ns-0".to_string();
        pod.key.name = format!("bench-{round}");
        pod.ips = vec![std::net::Ipv4Addr::new(100, 64, (round / 200) as u8, (round % 200) as u8 + 1).into()];
        let mut relabelled = pod.clone();
        relabelled.labels.insert("app".to_string(), "moved".to_string());
        let key = pod.key.clone();
        let changes: [Change; 3] = [
            Box::new(move |c: &mut Compiler| c.apply_pod(pod.clone())),
            Box::new(move |c: &mut Compiler| c.apply_pod(relabelled.clone())),
            Box::new(move |c: &mut Compiler| c.delete_pod(&key)),
        ];
        for (row, change) in rows.iter_mut().zip(changes) {
            let start = Instant::now();
            change(&mut compiler);
            let mut new = build(compiler.ruleset());
            let t = Instant::now();
            let report = session.apply_diff(&applied, &mut new).expect("diff apply");
            let send: Duration = t.elapsed();
            let total: Duration = start.elapsed();
            applied = new;
            assert!(report.n_messages > 0, "the change reached the kernel");
            row.1.push(total.as_secs_f64());
            row.2.push(send.as_secs_f64());
        }
    }
    (n_elements, rows)
}

fn main() {
    require_root_and_nft();
    let ns = Netns::new("bench");
    let mut goals = Goals::new();
    println!("Full programming, median of {RUNS} runs; times in ms.");
    println!("| set elements | netlink wall, socket closed | netlink wall, session held | netlink system | nft -f wall | nft -f system | netlink / nft -f, socket closed | netlink / nft -f, session held | kernel share of netlink |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for n_pods in [1_000usize, 10_000, 100_000] {
        let snap = synth::flat(n_pods, 100);
        let table = build(&policy_compiler::compile(&snap, &synth::node_name(0)).0);
        let path = std::env::temp_dir().join(format!("netfence-bench-{}-{n_pods}.nft", std::process::id()));
        std::fs::write(&path, render(&table)).expect("script written");
        let path = path.to_str().expect("utf-8 path").to_string();
        let (mut nl, mut held, mut nl_sys, mut nf, mut nf_sys) = (vec![], vec![], vec![], vec![], vec![]);
        for _ in 0..RUNS {
            let [(w, s), (h, _)] = netlink_full(&ns, &table);
            nl.push(w);
            held.push(h);
            nl_sys.push(s);
            let (w, s) = nft_file(&ns, &path);
            nf.push(w);
            nf_sys.push(s);
        }
        std::fs::remove_file(&path).expect("script removed");
        let (nl, held, nl_sys) = (median(nl), median(held), median(nl_sys));
        let (nf, nf_sys) = (median(nf), median(nf_sys));
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} |",
            table.n_elements(),
            ms(nl),
            ms(held),
            ms(nl_sys),
            ms(nf),
            ms(nf_sys),
            nl / nf,
            held / nf,
            nl_sys / nl
        );
        goals.at_most(
            &format!(
                "full apply at {} elements, netlink (session held) / nft -f",
                table.n_elements()
            ),
            held / nf,
            0.5,
        );
    }

    // One pod added, relabelled, deleted, on a table of about 100k elements: the compiler's
    // update, the table built from the IR, the difference, and the acknowledged transaction.
    let node = synth::node_name(0);
    let mut snap = synth::flat(100_000, 100);
    // Relabelled pods move to another allow-set: the ones `app=moved` selects.
    let moved = policy_compiler::model::Policy {
        key: policy_compiler::ObjectKey::new("ns-0", "moved-pods"),
        pod_selector: policy_compiler::selector::Selector::parse([("app", "moved")], []).expect("selector"),
        directions: policy_compiler::model::Directions {
            ingress: true,
            egress: true,
        },
        body: policy_compiler::model::PolicyBody::Valid {
            ingress: vec![],
            egress: vec![],
        },
    };
    snap.policies.insert(moved.key.clone(), moved);
    let compiler = Compiler::new(&node, snap.clone());
    // The compiler, the builder and one held session, in the namespace: the agent's writer.
    let (n_elements, rows) = in_netns(&ns.name, move || incremental(compiler)).expect("namespace");
    println!();
    println!(
        "Incremental change of one local pod at {n_elements} elements, median and max of 21; times in ms."
    );
    println!("| change | update to acknowledged, median | max | of which diff and transaction, median | ratio of median to the 2 ms goal |");
    println!("|---|---|---|---|---|");
    for (name, total, send) in rows {
        let max = total.iter().cloned().fold(0.0, f64::max);
        let med = median(total);
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} | {:.2} |",
            ms(med),
            ms(max),
            ms(median(send.clone())),
            ms(med) / 2.0
        );
        goals.at_most(
            &format!("one-pod {name} at {n_elements} elements, diff and transaction, median ms"),
            ms(median(send)),
            2.0,
        );
    }
    wide_policy(&ns, &mut goals);
    goals.finish();
}

/// `netfence apply` of a cluster file whose one policy has 300 peers and 300 ports, the whole
/// process a user runs, timed from start to exit (the table removed before each run, so each
/// creates it). Before rules looked peers and ports up in sets, this policy compiled to
/// 180,000 rules in one chain and took a minute to apply.
fn wide_policy(ns: &Netns, goals: &mut Goals) {
    const NETFENCE: &str = env!("CARGO_BIN_EXE_netfence");
    let (server, client) = (
        std::net::Ipv4Addr::new(10, 244, 0, 2),
        std::net::Ipv4Addr::new(10, 244, 0, 3),
    );
    let yaml = synth::wide_policy_yaml(300, 300, server, client, 8080);
    let input = netfence_cli::input::load_str("wide.yaml", &yaml).expect("the wide policy loads");
    let table = build(&policy_compiler::compile(&input.snapshot, "node-0").0);
    let allow_set_rules: usize = table
        .chains
        .iter()
        .filter(|c| c.name.starts_with("in-"))
        .map(|c| c.rules.len())
        .sum();
    let path = std::env::temp_dir().join(format!("netfence-wide-{}.yaml", std::process::id()));
    std::fs::write(&path, &yaml).expect("cluster written");
    let path = path.to_str().expect("utf-8 path").to_string();
    let mut runs = Vec::new();
    for _ in 0..RUNS {
        ns.ok(NETFENCE, &["remove"]);
        let start = Instant::now();
        ns.ok(NETFENCE, &["apply", &path, "--node", "node-0"]);
        runs.push(start.elapsed().as_secs_f64());
    }
    std::fs::remove_file(&path).expect("cluster removed");
    let wall = median(runs);
    println!();
    let policy_bytes = yaml.len() - yaml.find("kind: NetworkPolicy").unwrap_or(0);
    println!(
        "A policy with 300 peers and 300 ports ({} KB; {} KB of YAML with its 300 pods): {allow_set_rules} rules in its allow-set chain, {} set elements.",
        policy_bytes / 1024,
        yaml.len() / 1024,
        table.n_elements()
    );
    println!("| command | wall, median of {RUNS} | ratio to the 1 s goal |");
    println!("|---|---|---|");
    println!(
        "| netfence apply FILE --node node-0 | {:.1} ms | {:.3} |",
        ms(wall),
        wall
    );
    goals.at_most(
        "netfence apply of the 300-peer, 300-port policy, whole process, s",
        wall,
        1.0,
    );
}
