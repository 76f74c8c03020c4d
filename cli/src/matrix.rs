//! The pod-to-pod reachability matrix, from the compiled rulesets or from the reference evaluator.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use policy_compiler::eval::decide_cluster;
use policy_compiler::model::Pod;
use policy_compiler::{reference, Flow, ObjectKey, Protocol, Ruleset, Snapshot};
use serde_json::{json, Map, Value};

/// Which evaluator decides the cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine<'a> {
    /// Each node's compiled ruleset: egress on the source's node, ingress on the destination's.
    Compiled(&'a BTreeMap<String, Ruleset>),
    /// The reference reading of the spec over the model.
    Reference,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matrix {
    pub protocol: Protocol,
    pub port: u16,
    /// Every enforced pod, by namespace and name.
    pub pods: Vec<ObjectKey>,
    /// `allowed[from][to]`.
    pub allowed: Vec<Vec<bool>>,
}

/// The address a flow from `from` to `to` uses: the first of `from`'s addresses whose family
/// `to` also has.
pub fn flow_addrs(from: &Pod, to: &Pod) -> Option<(IpAddr, IpAddr)> {
    from.ips.iter().find_map(|s| {
        to.ips
            .iter()
            .find(|d| d.is_ipv4() == s.is_ipv4())
            .map(|d| (*s, *d))
    })
}

pub fn compute(snapshot: &Snapshot, engine: Engine, protocol: Protocol, port: u16) -> Matrix {
    let pods: Vec<&Pod> = snapshot.pods.values().filter(|p| p.is_enforced()).collect();
    let allowed = pods
        .iter()
        .map(|from| {
            pods.iter()
                .map(|to| {
                    let Some((src, dst)) = flow_addrs(from, to) else {
                        return false;
                    };
                    let flow = Flow::new(src, dst, protocol, port);
                    match engine {
                        Engine::Compiled(rulesets) => decide_cluster(rulesets, &flow).allowed(),
                        Engine::Reference => reference::allows(snapshot, &flow),
                    }
                })
                .collect()
        })
        .collect();
    Matrix {
        protocol,
        port,
        pods: pods.iter().map(|p| p.key.clone()).collect(),
        allowed,
    }
}

impl Matrix {
    /// `{"protocol", "port", "pods", "allowed": {from: {to: bool}}}`.
    pub fn to_json(&self) -> Value {
        let mut allowed = Map::new();
        for (i, from) in self.pods.iter().enumerate() {
            let row: Map<String, Value> = self
                .pods
                .iter()
                .enumerate()
                .map(|(j, to)| (to.to_string(), Value::Bool(self.allowed[i][j])))
                .collect();
            allowed.insert(from.to_string(), Value::Object(row));
        }
        let pods: Vec<String> = self.pods.iter().map(ToString::to_string).collect();
        json!({"protocol": self.protocol.as_str(), "port": self.port, "pods": pods, "allowed": allowed})
    }

    /// Rows are sources, columns destinations, numbered; `.` allowed, `X` denied.
    pub fn to_table(&self) -> String {
        // Fit 120 columns while there is room: 30 pods with their names fit.
        const COLUMNS: usize = 120;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}/{}: rows are sources, columns destinations (by number); . allowed, X denied",
            self.protocol, self.port
        );
        let number_width = self.pods.len().to_string().len();
        let cell = number_width.max(1) + 1;
        let name_width = COLUMNS
            .saturating_sub(number_width + 1 + self.pods.len() * cell)
            .clamp(12, 28);
        let _ = write!(out, "{:>w$} {:<name_width$}", "", "", w = number_width);
        for j in 1..=self.pods.len() {
            let _ = write!(out, "{j:>cell$}");
        }
        out.push('\n');
        for (i, from) in self.pods.iter().enumerate() {
            let _ = write!(
                out,
                "{:>w$} {:<name_width$}",
                i + 1,
                abbreviate(&from.to_string(), name_width),
                w = number_width
            );
            for allowed in &self.allowed[i] {
                let _ = write!(out, "{:>cell$}", if *allowed { "." } else { "X" });
            }
            out.push('\n');
        }
        out
    }

    /// The cells where two matrices over the same pods differ: `(from, to, self, other)`.
    pub fn differences(&self, other: &Matrix) -> Vec<(ObjectKey, ObjectKey, bool, bool)> {
        let mut out = Vec::new();
        for (i, from) in self.pods.iter().enumerate() {
            for (j, to) in self.pods.iter().enumerate() {
                if self.allowed[i][j] != other.allowed[i][j] {
                    out.push((from.clone(), to.clone(), self.allowed[i][j], other.allowed[i][j]));
                }
            }
        }
        out
    }
}

/// Shortens a name to `width` characters, keeping its end, where pod names differ.
fn abbreviate(name: &str, width: usize) -> String {
    let chars: Vec<char> = name.chars().collect();
    if chars.len() <= width {
        return name.to_string();
    }
    let tail: String = chars[chars.len() - (width - 1)..].iter().collect();
    format!("~{tail}")
}

#[cfg(test)]
mod tests {
    use super::Matrix;
    use policy_compiler::{ObjectKey, Protocol};

    #[test]
    fn thirty_pods_fit_120_columns() {
        let pods: Vec<ObjectKey> = (0..30)
            .map(|i| ObjectKey::new("a-rather-long-namespace", format!("deployment-7d9f8c-pod-{i}")))
            .collect();
        let allowed = (0..30)
            .map(|i| (0..30).map(|j| (i + j) % 3 == 0).collect())
            .collect();
        let table = Matrix {
            protocol: Protocol::Tcp,
            port: 80,
            pods,
            allowed,
        }
        .to_table();
        for line in table.lines().skip(1) {
            assert!(
                line.chars().count() <= 120,
                "{} columns: {line}",
                line.chars().count()
            );
        }
        // Names keep their distinguishing end.
        assert!(table.contains("~") && table.contains("pod-29"), "{table}");
        assert_eq!(table.lines().count(), 32);
    }
}
