//! Compile benchmark: full compile time and peak memory for one node, and the time to bring the
//! ruleset up to date after one pod's labels change and after one policy is added.
//!
//! Each cluster size runs in a child process of its own so that its peak resident memory
//! (VmHWM) is its own. Run: `cargo bench -p netfence-tests --bench compile` (all sizes) or with
//! `-- --quick` (the small sizes only, as a smoke run).

use std::process::Command;
use std::time::{Duration, Instant};

use netfence_tests::bench::Goals;
use netfence_tests::synth;
use policy_compiler::Compiler;

const GOAL_FULL: Duration = Duration::from_secs(1);
const GOAL_INCREMENTAL: Duration = Duration::from_millis(5);
const GOAL_MEMORY_KIB: u64 = 1024 * 1024;
const REPEATS: usize = 41;

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("field in /proc/self/status")
}

fn median_max(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (samples[samples.len() / 2], samples[samples.len() - 1])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs one size in this process and prints one result line.
fn child(n_pods: usize, n_policies: usize) {
    let snapshot = synth::cluster(n_pods, n_policies);
    let input_kib = status_kib("VmRSS:");
    let node = synth::node_name(0);

    let start = Instant::now();
    let mut compiler = Compiler::new(&node, snapshot);
    let full = start.elapsed();
    let peak_kib = status_kib("VmHWM:");
    let elements = compiler.ruleset().n_set_elements();
    let allow_sets = compiler.ruleset().allow_sets.len();

    // One remote pod relabelled (its app changes), back and forth, on pods across the cluster.
    let mut remote = Vec::new();
    let mut local = Vec::new();
    for r in 0..REPEATS {
        let i = synth::PODS_PER_NODE + (r * 7919) % (n_pods - synth::PODS_PER_NODE);
        let pod = synth::pod(i, n_pods, 1 + r % 2);
        let start = Instant::now();
        compiler.apply_pod(pod);
        remote.push(start.elapsed());
        // A pod on this node, which moves between allow-sets.
        let pod = synth::pod(r % synth::PODS_PER_NODE.min(n_pods), n_pods, 1 + r % 2);
        let start = Instant::now();
        compiler.apply_pod(pod);
        local.push(start.elapsed());
    }
    // One policy added in a namespace with pods on this node, then removed (not timed).
    let mut rng = synth::Rng::new(7);
    let mut added = Vec::new();
    for r in 0..REPEATS {
        let mut policy = synth::policy(n_policies + r, n_pods, &mut rng);
        policy.key.namespace = compiler
            .ruleset()
            .pods
            .keys()
            .nth(r % 50)
            .map_or("ns-0".to_string(), |k| k.namespace.clone());
        let key = policy.key.clone();
        let start = Instant::now();
        compiler.apply_policy(policy);
        added.push(start.elapsed());
        compiler.delete_policy(&key);
    }
    let (remote_med, remote_max) = median_max(remote);
    let (local_med, local_max) = median_max(local);
    let (added_med, added_max) = median_max(added);
    println!(
        "RESULT {n_pods} {n_policies} {:.1} {} {} {elements} {allow_sets} {:.3} {:.3} {:.3} {:.3} {:.3} {:.3}",
        ms(full),
        peak_kib,
        input_kib,
        ms(remote_med),
        ms(remote_max),
        ms(local_med),
        ms(local_max),
        ms(added_med),
        ms(added_max),
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--child") {
        child(args[pos + 1].parse().unwrap(), args[pos + 2].parse().unwrap());
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let pods: &[usize] = if quick {
        &[1_000, 10_000]
    } else {
        &[1_000, 10_000, 150_000]
    };
    let policies: &[usize] = if quick {
        &[100, 1_000]
    } else {
        &[100, 1_000, 10_000]
    };
    println!(
        "Compile for one node ({} pods per node); times in ms, memory in MiB (peak resident, whole process).",
        synth::PODS_PER_NODE
    );
    println!("| pods | policies | full compile | ratio to 1 s | peak RSS | input RSS | ratio to 1 GiB | set elements | allow-sets | remote relabel p50 / max | local relabel p50 / max | policy added p50 / max | worst median incremental / 5 ms |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut goals = Goals::new();
    for &n_pods in pods {
        for &n_policies in policies {
            let exe = std::env::current_exe().expect("own path");
            let out = Command::new(exe)
                .args(["--child", &n_pods.to_string(), &n_policies.to_string()])
                .output()
                .expect("child runs");
            let text = String::from_utf8_lossy(&out.stdout);
            let Some(line) = text.lines().find_map(|l| l.strip_prefix("RESULT ")) else {
                panic!(
                    "child {n_pods}/{n_policies} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            };
            let f: Vec<f64> = line.split_whitespace().map(|x| x.parse().unwrap()).collect();
            let full = Duration::from_secs_f64(f[2] / 1e3);
            let peak_kib = f[3] as u64;
            let worst_median = f[7].max(f[9]).max(f[11]);
            println!(
                "| {} | {} | {:.1} | {:.3} | {:.0} | {:.0} | {:.3} | {} | {} | {:.3} / {:.3} | {:.3} / {:.3} | {:.3} / {:.3} | {:.3} |",
                f[0],
                f[1],
                f[2],
                full.as_secs_f64() / GOAL_FULL.as_secs_f64(),
                peak_kib as f64 / 1024.0,
                f[4] / 1024.0,
                peak_kib as f64 / GOAL_MEMORY_KIB as f64,
                f[5],
                f[6],
                f[7],
                f[8],
                f[9],
                f[10],
                f[11],
                f[12],
                worst_median / ms(GOAL_INCREMENTAL),
            );
            let cell = format!("{n_pods} pods, {n_policies} policies");
            goals.at_most(&format!("{cell}: full compile, ms"), f[2], ms(GOAL_FULL));
            goals.at_most(
                &format!("{cell}: peak RSS, MiB"),
                peak_kib as f64 / 1024.0,
                GOAL_MEMORY_KIB as f64 / 1024.0,
            );
            goals.at_most(
                &format!("{cell}: slowest median incremental change, ms"),
                worst_median,
                ms(GOAL_INCREMENTAL),
            );
        }
    }
    goals.finish();
}
