//! The agent's index: the cluster as the compiler reads it, changed one watch event at a time.
//!
//! Synchronous and free of I/O: the watchers turn events into [`Change`]s, the writer applies
//! them here and reads the compiled ruleset. The index keeps only lowered objects (the model's
//! few fields per pod, namespace, policy and node), never the API objects themselves.

use std::collections::BTreeSet;

use policy_compiler::model::{Namespace, Node, Pod, Policy};
use policy_compiler::{Compiler, ObjectKey, Ruleset, Snapshot};

/// The kinds the agent watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Namespace,
    Pod,
    Policy,
    Node,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Namespace, Kind::Pod, Kind::Policy, Kind::Node];

    /// The name used in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "namespaces",
            Kind::Pod => "pods",
            Kind::Policy => "networkpolicies",
            Kind::Node => "nodes",
        }
    }
}

/// One object's identity.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    Namespace(String),
    Pod(ObjectKey),
    Policy(ObjectKey),
    Node(String),
}

impl Key {
    pub fn kind(&self) -> Kind {
        match self {
            Key::Namespace(_) => Kind::Namespace,
            Key::Pod(_) => Kind::Pod,
            Key::Policy(_) => Kind::Policy,
            Key::Node(_) => Kind::Node,
        }
    }
}

/// One lowered object.
#[derive(Clone, Debug)]
pub enum Object {
    Namespace(Namespace),
    Pod(Pod),
    Policy(Policy),
    Node(Node),
}

impl Object {
    pub fn key(&self) -> Key {
        match self {
            Object::Namespace(ns) => Key::Namespace(ns.name.clone()),
            Object::Pod(pod) => Key::Pod(pod.key.clone()),
            Object::Policy(policy) => Key::Policy(policy.key.clone()),
            Object::Node(node) => Key::Node(node.name.clone()),
        }
    }
}

/// What a watch event asks of the index.
#[derive(Clone, Debug)]
pub enum Change {
    /// An object was added or changed.
    Apply(Object),
    /// An object was removed.
    Delete(Key),
    /// A complete list of one kind (a watch's first list, or a re-list after 410 Gone):
    /// it replaces every object of the kind, and marks the kind as synced.
    Reset(Kind, Vec<Object>),
}

/// The compiler and the keys it holds, per kind.
#[derive(Debug)]
pub struct Index {
    compiler: Compiler,
    keys: BTreeSet<Key>,
    synced: BTreeSet<Kind>,
}

impl Index {
    pub fn new(node: &str) -> Index {
        Index {
            compiler: Compiler::new(node, Snapshot::default()),
            keys: BTreeSet::new(),
            synced: BTreeSet::new(),
        }
    }

    /// Whether every kind has delivered its first complete list.
    pub fn is_synced(&self) -> bool {
        Kind::ALL.iter().all(|k| self.synced.contains(k))
    }

    pub fn ruleset(&self) -> &Ruleset {
        self.compiler.ruleset()
    }

    /// How many objects of `kind` the index holds.
    pub fn count(&self, kind: Kind) -> usize {
        self.keys.iter().filter(|k| k.kind() == kind).count()
    }

    pub fn apply(&mut self, change: Change) {
        match change {
            Change::Apply(object) => self.put(object),
            Change::Delete(key) => self.remove(&key),
            Change::Reset(kind, objects) => {
                let listed: BTreeSet<Key> = objects.iter().map(Object::key).collect();
                let gone: Vec<Key> = self
                    .keys
                    .iter()
                    .filter(|k| k.kind() == kind && !listed.contains(k))
                    .cloned()
                    .collect();
                for key in &gone {
                    self.remove(key);
                }
                for object in objects {
                    self.put(object);
                }
                self.synced.insert(kind);
            }
        }
    }

    fn put(&mut self, object: Object) {
        self.keys.insert(object.key());
        match object {
            Object::Namespace(ns) => self.compiler.apply_namespace(ns),
            Object::Pod(pod) => self.compiler.apply_pod(pod),
            Object::Policy(policy) => self.compiler.apply_policy(policy),
            Object::Node(node) => self.compiler.apply_node(node),
        }
    }

    fn remove(&mut self, key: &Key) {
        if !self.keys.remove(key) {
            return;
        }
        match key {
            Key::Namespace(name) => self.compiler.delete_namespace(name),
            Key::Pod(key) => self.compiler.delete_pod(key),
            Key::Policy(key) => self.compiler.delete_policy(key),
            Key::Node(name) => self.compiler.delete_node(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use policy_compiler::model::{Directions, Phase, PolicyBody};
    use policy_compiler::selector::Selector;

    fn pod(ns: &str, name: &str, ip: &str, app: &str) -> Object {
        Object::Pod(Pod {
            key: ObjectKey::new(ns, name),
            uid: format!("{ns}-{name}"),
            labels: [("app".to_string(), app.to_string())].into(),
            node: "node-0".to_string(),
            host_network: false,
            phase: Phase::Running,
            ips: vec![ip.parse().unwrap()],
            ports: vec![],
        })
    }

    fn deny_all(ns: &str) -> Object {
        Object::Policy(Policy {
            key: ObjectKey::new(ns, "deny"),
            pod_selector: Selector::everything(),
            directions: Directions {
                ingress: true,
                egress: false,
            },
            body: PolicyBody::Valid {
                ingress: vec![],
                egress: vec![],
            },
        })
    }

    fn synced(index: &mut Index, objects: Vec<Object>) {
        for kind in Kind::ALL {
            let of_kind = objects
                .iter()
                .filter(|o| o.key().kind() == kind)
                .cloned()
                .collect();
            index.apply(Change::Reset(kind, of_kind));
        }
    }

    /// The index's ruleset equals a fresh compile of the same objects.
    fn fresh(objects: &[Object]) -> Ruleset {
        let mut snap = Snapshot::default();
        for o in objects {
            match o.clone() {
                Object::Namespace(ns) => {
                    snap.namespaces.insert(ns.name.clone(), ns);
                }
                Object::Pod(p) => {
                    snap.pods.insert(p.key.clone(), p);
                }
                Object::Policy(p) => {
                    snap.policies.insert(p.key.clone(), p);
                }
                Object::Node(n) => {
                    snap.nodes.insert(n.name.clone(), n);
                }
            }
        }
        policy_compiler::compile(&snap, "node-0").0
    }

    #[test]
    fn synced_only_when_every_kind_listed() {
        let mut index = Index::new("node-0");
        for kind in [Kind::Namespace, Kind::Pod, Kind::Policy] {
            index.apply(Change::Reset(kind, vec![]));
            assert!(!index.is_synced(), "{kind:?}");
        }
        index.apply(Change::Reset(Kind::Node, vec![]));
        assert!(index.is_synced());
    }

    #[test]
    fn reset_removes_what_the_new_list_lacks() {
        let mut index = Index::new("node-0");
        let first = vec![
            pod("a", "x", "10.0.0.1", "x"),
            pod("a", "y", "10.0.0.2", "y"),
            deny_all("a"),
        ];
        synced(&mut index, first.clone());
        assert_eq!(index.ruleset(), &fresh(&first));
        assert_eq!(index.count(Kind::Pod), 2);
        // A re-list after 410 Gone: y and the policy are gone, z is new.
        let second = vec![pod("a", "x", "10.0.0.1", "x"), pod("a", "z", "10.0.0.3", "z")];
        index.apply(Change::Reset(Kind::Pod, second[..2].to_vec()));
        index.apply(Change::Reset(Kind::Policy, vec![]));
        assert_eq!(index.ruleset(), &fresh(&second));
        assert_eq!(index.count(Kind::Pod), 2);
        assert_eq!(index.count(Kind::Policy), 0);
    }

    #[test]
    fn events_match_a_fresh_compile() {
        let mut index = Index::new("node-0");
        synced(&mut index, vec![pod("a", "x", "10.0.0.1", "x")]);
        index.apply(Change::Apply(deny_all("a")));
        index.apply(Change::Apply(pod("a", "y", "10.0.0.2", "y")));
        index.apply(Change::Apply(pod("a", "x", "10.0.0.1", "moved")));
        let want = [
            pod("a", "x", "10.0.0.1", "moved"),
            pod("a", "y", "10.0.0.2", "y"),
            deny_all("a"),
        ];
        assert_eq!(index.ruleset(), &fresh(&want));
        index.apply(Change::Delete(Key::Policy(ObjectKey::new("a", "deny"))));
        // Deleting what is not there changes nothing.
        index.apply(Change::Delete(Key::Pod(ObjectKey::new("a", "never"))));
        assert_eq!(index.ruleset(), &fresh(&want[..2]));
        assert_ne!(fresh(&want[..2]), fresh(&want), "the policy made a difference");
    }
}
