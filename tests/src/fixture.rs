//! Golden fixtures: `fixtures/<area>/<case>/cluster.yaml` (or several YAML files) with
//! `expect.toml`, the truth tables a person wrote down from the spec or the recipe.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use netfence_cli::input::{self, Input};
use netfence_cli::matrix::flow_addrs;
use policy_compiler::model::Pod;
use policy_compiler::{Flow, Protocol, Snapshot};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// What the case shows, and where it comes from.
    pub about: String,
    #[serde(default)]
    pub tables: Vec<Table>,
    #[serde(default)]
    pub flows: Vec<FlowCheck>,
    /// Changes applied one after another, each with the tables that hold after it.
    #[serde(default)]
    pub steps: Vec<Step>,
}

/// A change between probes: objects applied (a YAML file beside the fixture, read like the
/// cluster) and objects deleted (`"Kind namespace/name"` or `"Kind name"`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub about: String,
    #[serde(default)]
    pub apply: Option<String>,
    #[serde(default)]
    pub delete: Vec<String>,
    pub tables: Vec<Table>,
}

/// A reachability matrix: `allowed[i]` is the row of source `pods[i]`, one cell per destination,
/// `.` allowed and `X` denied, separated by spaces.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    pub protocol: String,
    pub port: u16,
    pub pods: Vec<String>,
    pub allowed: Vec<String>,
}

/// One flow; `from` and `to` are `namespace/pod` or an address.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowCheck {
    pub from: String,
    pub to: String,
    pub protocol: String,
    pub port: u16,
    pub allowed: bool,
    #[serde(default)]
    pub why: Option<String>,
}

#[derive(Debug)]
pub struct Fixture {
    pub dir: PathBuf,
    pub input: Input,
    pub expect: Expect,
}

/// One expected outcome, resolved to addresses.
#[derive(Debug)]
pub struct Case {
    pub label: String,
    pub flow: Flow,
    pub allowed: bool,
}

/// Every directory under `root` that holds an `expect.toml`, sorted.
pub fn discover(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if dir.join("expect.toml").is_file() {
            out.push(dir.clone());
        }
        for entry in std::fs::read_dir(&dir).expect("readable fixtures dir").flatten() {
            if entry.path().is_dir() {
                stack.push(entry.path());
            }
        }
    }
    out.sort();
    out
}

pub fn load(dir: &Path) -> Result<Fixture, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n != "expect.toml"))
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        })
        .collect();
    files.sort();
    let input = input::load(&files).map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(dir.join("expect.toml")).map_err(|e| e.to_string())?;
    let expect: Expect = toml::from_str(&text).map_err(|e| format!("expect.toml: {e}"))?;
    Ok(Fixture {
        dir: dir.to_path_buf(),
        input,
        expect,
    })
}

fn protocol(text: &str) -> Result<Protocol, String> {
    Protocol::parse(text).ok_or_else(|| format!("unknown protocol {text}"))
}

/// The cases of a list of truth tables over a snapshot.
pub fn table_cases(snap: &Snapshot, tables: &[Table]) -> Result<Vec<Case>, String> {
    let mut cases = Vec::new();
    let enforced: Vec<String> = snap
        .pods
        .values()
        .filter(|p| p.is_enforced())
        .map(|p| p.key.to_string())
        .collect();
    for table in tables {
        let proto = protocol(&table.protocol)?;
        let mut listed = table.pods.clone();
        listed.sort();
        if listed != enforced {
            return Err(format!(
                "table {}/{} lists {listed:?}, the cluster's pods are {enforced:?}",
                table.protocol, table.port
            ));
        }
        if table.allowed.len() != table.pods.len() {
            return Err(format!(
                "table {}/{}: {} rows for {} pods",
                table.protocol,
                table.port,
                table.allowed.len(),
                table.pods.len()
            ));
        }
        for (i, row) in table.allowed.iter().enumerate() {
            let cells: Vec<&str> = row.split_whitespace().collect();
            if cells.len() != table.pods.len() {
                return Err(format!(
                    "row {:?} has {} cells for {} pods",
                    row,
                    cells.len(),
                    table.pods.len()
                ));
            }
            let from = pod(snap, &table.pods[i])?;
            for (j, cell) in cells.iter().enumerate() {
                let allowed = match *cell {
                    "." => true,
                    "X" => false,
                    other => return Err(format!("cell {other:?}: use . or X")),
                };
                let to = pod(snap, &table.pods[j])?;
                for (src, dst) in family_pairs(from, to) {
                    cases.push(Case {
                        label: format!(
                            "{} -> {} {}/{} ({src} -> {dst})",
                            from.key, to.key, proto, table.port
                        ),
                        flow: Flow::new(src, dst, proto, table.port),
                        allowed,
                    });
                }
            }
        }
    }
    Ok(cases)
}

fn pod<'a>(snap: &'a Snapshot, name: &str) -> Result<&'a Pod, String> {
    snap.pods
        .values()
        .find(|p| p.key.to_string() == name)
        .ok_or_else(|| format!("no pod {name} in the cluster"))
}

impl Fixture {
    /// Every expected outcome of the initial cluster, over every address family both ends have.
    pub fn cases(&self) -> Result<Vec<Case>, String> {
        let mut cases = table_cases(&self.input.snapshot, &self.expect.tables)?;
        for check in &self.expect.flows {
            let proto = protocol(&check.protocol)?;
            for (src, dst) in self.endpoints(&check.from, &check.to)? {
                cases.push(Case {
                    label: format!(
                        "{} -> {} {}/{} ({})",
                        check.from,
                        check.to,
                        proto,
                        check.port,
                        check.why.as_deref().unwrap_or("")
                    ),
                    flow: Flow::new(src, dst, proto, check.port),
                    allowed: check.allowed,
                });
            }
        }
        Ok(cases)
    }

    /// The cluster after each step, with that step's expected outcomes.
    pub fn steps(&self) -> Result<Vec<(Snapshot, Vec<Case>)>, String> {
        let mut snap = self.input.snapshot.clone();
        let mut out = Vec::new();
        for step in &self.expect.steps {
            if let Some(file) = &step.apply {
                let path = self.dir.join(file);
                let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                let changes =
                    input::load_str(&path.display().to_string(), &text).map_err(|e| e.to_string())?;
                snap.namespaces.extend(changes.snapshot.namespaces);
                snap.pods.extend(changes.snapshot.pods);
                snap.policies.extend(changes.snapshot.policies);
                snap.nodes.extend(changes.snapshot.nodes);
            }
            for target in &step.delete {
                let (kind, name) = target
                    .split_once(' ')
                    .ok_or_else(|| format!("delete {target:?}: use \"Kind name\""))?;
                let key = |n: &str| {
                    n.split_once('/')
                        .map(|(ns, n)| policy_compiler::ObjectKey::new(ns, n))
                        .ok_or_else(|| format!("{n}: use namespace/name"))
                };
                let removed = match kind {
                    "NetworkPolicy" => snap.policies.remove(&key(name)?).is_some(),
                    "Pod" => snap.pods.remove(&key(name)?).is_some(),
                    "Namespace" => snap.namespaces.remove(name).is_some(),
                    "Node" => snap.nodes.remove(name).is_some(),
                    other => return Err(format!("delete: unknown kind {other}")),
                };
                if !removed {
                    return Err(format!("delete {target}: no such object"));
                }
            }
            let cases =
                table_cases(&snap, &step.tables).map_err(|e| format!("step {:?}: {e}", step.about))?;
            out.push((snap.clone(), cases));
        }
        Ok(out)
    }

    fn endpoints(&self, from: &str, to: &str) -> Result<Vec<(IpAddr, IpAddr)>, String> {
        let snap = &self.input.snapshot;
        let addr = |text: &str| text.parse::<IpAddr>().ok();
        Ok(match (addr(from), addr(to)) {
            (Some(s), Some(d)) => vec![(s, d)],
            (Some(s), None) => {
                let to = pod(snap, to)?;
                to.ips
                    .iter()
                    .filter(|d| d.is_ipv4() == s.is_ipv4())
                    .map(|d| (s, *d))
                    .collect()
            }
            (None, Some(d)) => {
                let from = pod(snap, from)?;
                from.ips
                    .iter()
                    .filter(|s| s.is_ipv4() == d.is_ipv4())
                    .map(|s| (*s, d))
                    .collect()
            }
            (None, None) => family_pairs(pod(snap, from)?, pod(snap, to)?),
        })
    }
}

/// One address pair per family that both pods have.
fn family_pairs(from: &Pod, to: &Pod) -> Vec<(IpAddr, IpAddr)> {
    let v4 = |p: &Pod| Pod {
        ips: p.ips.iter().copied().filter(IpAddr::is_ipv4).collect(),
        ..p.clone()
    };
    let v6 = |p: &Pod| Pod {
        ips: p.ips.iter().copied().filter(IpAddr::is_ipv6).collect(),
        ..p.clone()
    };
    [flow_addrs(&v4(from), &v4(to)), flow_addrs(&v6(from), &v6(to))]
        .into_iter()
        .flatten()
        .collect()
}

/// Compares `actual` with the snapshot file at `path`, or writes it when `UPDATE_EXPECT=1`
/// (then review the change in the diff).
pub fn check_snapshot(path: &Path, actual: &str) -> Result<(), String> {
    if std::env::var("UPDATE_EXPECT").is_ok_and(|v| v == "1") {
        std::fs::write(path, actual).map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok(());
    }
    let expected = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: {e} (UPDATE_EXPECT=1 writes it)", path.display()))?;
    if expected == actual {
        Ok(())
    } else {
        Err(format!(
            "{} differs from what is built now (review, then UPDATE_EXPECT=1)",
            path.display()
        ))
    }
}
