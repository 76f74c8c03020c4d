//! The canonical encoding of what a kernel object stands for, from which its name is hashed.
//!
//! Set and chain names are a contract with the running node: an object whose name survives an
//! upgrade is updated in place, one whose name changes is deleted and created again (and a
//! changed dispatch map makes that a full replace). So names never come from `Debug` output,
//! which a derive or a field rename changes silently, but from this encoding, written for the
//! purpose: every string is length-prefixed (no separator inside a label value can make two
//! identities one), every variant has a fixed tag, and collections are in their sorted order.
//! Changing it renames kernel objects: `tests` pin the names of a fixture's objects.

use std::fmt::Write as _;

use policy_compiler::ir::{AllowSetKey, NamedPort, PodPeer};
use policy_compiler::model::{Direction, IpBlock, NamespaceScope};
use policy_compiler::nat::{Backend, ServicePortKey};
use policy_compiler::selector::{Operator, Selector};
use policy_compiler::{ObjectKey, Protocol};

/// Something that names a kernel object.
pub trait Identity {
    /// Appends the canonical encoding to `out`.
    fn encode(&self, out: &mut String);

    /// The canonical encoding.
    fn identity(&self) -> String {
        let mut out = String::new();
        self.encode(&mut out);
        out
    }
}

/// `<len>:<text>`: unambiguous whatever the text holds.
fn text(out: &mut String, s: &str) {
    let _ = write!(out, "{}:{s}", s.len());
}

impl Identity for str {
    fn encode(&self, out: &mut String) {
        text(out, self);
    }
}

impl Identity for Direction {
    fn encode(&self, out: &mut String) {
        out.push_str(match self {
            Direction::Ingress => "in",
            Direction::Egress => "eg",
        });
    }
}

impl Identity for Protocol {
    fn encode(&self, out: &mut String) {
        out.push_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        });
    }
}

impl Identity for ObjectKey {
    fn encode(&self, out: &mut String) {
        text(out, &self.namespace);
        text(out, &self.name);
    }
}

impl Identity for ServicePortKey {
    fn encode(&self, out: &mut String) {
        out.push_str("svcport(");
        self.service.encode(out);
        self.protocol.encode(out);
        let _ = write!(out, "{})", self.port);
    }
}

impl Identity for Backend {
    fn encode(&self, out: &mut String) {
        let _ = write!(out, "backend({})", self);
    }
}

impl Identity for Selector {
    fn encode(&self, out: &mut String) {
        let _ = write!(out, "sel{}(", self.requirements().len());
        for req in self.requirements() {
            text(out, &req.key);
            let values = match &req.op {
                Operator::In(values) => Some(("in", values)),
                Operator::NotIn(values) => Some(("notin", values)),
                Operator::Exists => {
                    out.push_str("exists");
                    None
                }
                Operator::DoesNotExist => {
                    out.push_str("absent");
                    None
                }
            };
            if let Some((tag, values)) = values {
                let _ = write!(out, "{tag}{}", values.len());
                values.iter().for_each(|v| text(out, v));
            }
        }
        out.push(')');
    }
}

impl Identity for NamespaceScope {
    fn encode(&self, out: &mut String) {
        match self {
            NamespaceScope::Named(ns) => {
                out.push_str("ns=");
                text(out, ns);
            }
            NamespaceScope::Selected(sel) => {
                out.push_str("ns~");
                sel.encode(out);
            }
        }
    }
}

impl Identity for PodPeer {
    fn encode(&self, out: &mut String) {
        out.push_str("pods(");
        self.namespaces.encode(out);
        self.pods.encode(out);
        out.push(')');
    }
}

impl Identity for IpBlock {
    fn encode(&self, out: &mut String) {
        out.push_str("block(");
        text(out, &self.cidr.to_string());
        let _ = write!(out, "except{}", self.except.len());
        self.except.iter().for_each(|e| text(out, &e.to_string()));
        out.push(')');
    }
}

impl Identity for NamedPort {
    fn encode(&self, out: &mut String) {
        out.push_str("named-port(");
        self.direction.encode(out);
        self.protocol.encode(out);
        text(out, &self.name);
        out.push(')');
    }
}

impl Identity for AllowSetKey {
    fn encode(&self, out: &mut String) {
        out.push_str("allow-set(");
        self.direction.encode(out);
        let _ = write!(out, "{}", self.policies.len());
        self.policies.iter().for_each(|p| p.encode(out));
        out.push(')');
    }
}

#[cfg(test)]
mod tests {
    use super::Identity;
    use policy_compiler::ir::{AllowSetKey, NamedPort, PodPeer};
    use policy_compiler::model::{Direction, NamespaceScope};
    use policy_compiler::selector::{Operator, Requirement, Selector};
    use policy_compiler::{ObjectKey, Protocol};

    fn sel(reqs: &[(&str, &[&str])]) -> Selector {
        Selector::from_requirements(
            reqs.iter()
                .map(|(k, vs)| Requirement {
                    key: (*k).to_string(),
                    op: Operator::In(vs.iter().map(|v| (*v).to_string()).collect()),
                })
                .collect(),
        )
    }

    fn key(ns: &str, name: &str) -> ObjectKey {
        ObjectKey {
            namespace: ns.to_string(),
            name: name.to_string(),
        }
    }

    #[test]
    fn separators_inside_text_cannot_make_two_identities_one() {
        // Each pair would collide under a naive join of the parts.
        let pairs = [
            (sel(&[("a", &["b,c"])]), sel(&[("a", &["b", "c"])])),
            (sel(&[("a=b", &["c"])]), sel(&[("a", &["b=c"])])),
            (sel(&[("a", &["1"]), ("b", &["2"])]), sel(&[("a", &["1)b2"])])),
        ];
        for (x, y) in pairs {
            assert_ne!(x, y);
            assert_ne!(x.identity(), y.identity(), "{x:?} vs {y:?}");
        }
        let k = |p: &[ObjectKey]| {
            AllowSetKey {
                direction: Direction::Ingress,
                policies: p.to_vec(),
            }
            .identity()
        };
        assert_ne!(k(&[key("a", "b/c")]), k(&[key("a/b", "c")]));
        assert_ne!(k(&[key("a", "b"), key("c", "d")]), k(&[key("a", "b5:c1:d")]));
        let named = NamespaceScope::Named("x".to_string());
        let selected = NamespaceScope::Selected(sel(&[("kubernetes.io/metadata.name", &["x"])]));
        assert_ne!(named.identity(), selected.identity());
    }

    #[test]
    fn encodings_are_pinned() {
        // These strings are what kernel names are hashed from: a change here renames every
        // object of that kind on every node at upgrade. Change them only on purpose.
        let peer = PodPeer {
            namespaces: NamespaceScope::Named("shop".to_string()),
            pods: sel(&[("app", &["db", "web"])]),
        };
        expect_test::expect!["pods(ns=4:shopsel1(3:appin22:db3:web))"].assert_eq(&peer.identity());
        let port = NamedPort {
            direction: Direction::Egress,
            protocol: Protocol::Udp,
            name: "dns".to_string(),
        };
        expect_test::expect!["named-port(egudp3:dns)"].assert_eq(&port.identity());
        let set = AllowSetKey {
            direction: Direction::Ingress,
            policies: vec![key("shop", "a"), key("shop", "b")],
        };
        expect_test::expect!["allow-set(in24:shop1:a4:shop1:b)"].assert_eq(&set.identity());
    }
}
