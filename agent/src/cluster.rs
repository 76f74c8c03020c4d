//! The agent's view of the cluster: the objects as the compiler reads them, changed one watch
//! event at a time.
//!
//! Synchronous and free of I/O: the watchers turn events into [`Change`]s, the writer applies
//! them here and reads the compiled ruleset. It keeps only lowered objects (the model's
//! few fields per pod, namespace, policy and node), never the API objects themselves.

use std::collections::{BTreeMap, BTreeSet};

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

/// What a watch event asks of the cluster state.
#[derive(Clone, Debug)]
pub enum Change {
    /// An object was added or changed.
    Apply(Object),
    /// An object was removed.
    Delete(Key),
    /// A complete list of one kind begins (a watch's first list, or a re-list after 410
    /// Gone or a broken watch).
    ListStart(Kind),
    /// One object of that list: applied at once, so a list of 150k pods is never held twice.
    Listed(Object),
    /// The list is complete: objects of the kind it did not name are gone, and the kind is
    /// synced.
    ListDone(Kind),
}

/// The compiler, and what the lists under way have named.
#[derive(Debug)]
pub struct Cluster {
    compiler: Compiler,
    /// Per kind with a list under way: the keys it has named so far. Only a re-list needs
    /// them (to drop what it no longer names); a kind's first list starts from nothing, so
    /// its keys are not kept twice.
    listing: BTreeMap<Kind, Option<BTreeSet<Key>>>,
    synced: BTreeSet<Kind>,
}

impl Cluster {
    pub fn new(node: &str) -> Cluster {
        Cluster {
            compiler: Compiler::new(node, Snapshot::default()),
            listing: BTreeMap::new(),
            synced: BTreeSet::new(),
        }
    }

    /// Whether every kind has delivered its first complete list.
    pub fn is_synced(&self) -> bool {
        Kind::ALL.iter().all(|k| self.synced.contains(k))
    }

    /// Whether a list is under way: until it completes, the cluster state may still hold objects that
    /// are gone, so the writer waits for it.
    pub fn is_listing(&self) -> bool {
        !self.listing.is_empty()
    }

    pub fn ruleset(&self) -> &Ruleset {
        self.compiler.ruleset()
    }

    /// The keys of every object of `kind` the cluster state holds.
    fn keys(&self, kind: Kind) -> Vec<Key> {
        let c = &self.compiler;
        match kind {
            Kind::Namespace => c
                .namespace_names()
                .map(|n| Key::Namespace(n.to_string()))
                .collect(),
            Kind::Pod => c.pod_keys().map(|k| Key::Pod(k.clone())).collect(),
            Kind::Policy => c.policy_keys().map(|k| Key::Policy(k.clone())).collect(),
            Kind::Node => c.node_names().map(|n| Key::Node(n.to_string())).collect(),
        }
    }

    /// How many objects of `kind` the cluster state holds.
    pub fn count(&self, kind: Kind) -> usize {
        let c = &self.compiler;
        match kind {
            Kind::Namespace => c.namespace_names().count(),
            Kind::Pod => c.pod_keys().count(),
            Kind::Policy => c.policy_keys().count(),
            Kind::Node => c.node_names().count(),
        }
    }

    /// Whether the cluster state holds this very object already (a status update that changes
    /// nothing policy reads: pod conditions, node heartbeats).
    fn holds(&self, object: &Object) -> bool {
        let c = &self.compiler;
        match object {
            Object::Namespace(ns) => c.namespace(&ns.name) == Some(ns),
            Object::Pod(pod) => c.pod(&pod.key) == Some(pod),
            Object::Policy(policy) => c.policy(&policy.key) == Some(policy),
            Object::Node(node) => c.node(&node.name) == Some(node),
        }
    }

    /// Applies a change; false when it changed nothing the compiler reads, so there is
    /// nothing to program for it.
    pub fn apply(&mut self, change: Change) -> bool {
        match change {
            Change::Apply(object) if self.holds(&object) => false,
            Change::Apply(object) => {
                self.put(object);
                true
            }
            Change::Delete(key) => {
                let held = self.holds_key(&key);
                self.remove(&key);
                held
            }
            Change::ListStart(kind) => {
                let relist = self.synced.contains(&kind) || self.count(kind) > 0;
                self.listing.insert(kind, relist.then(BTreeSet::new));
                false
            }
            Change::Listed(object) => {
                if let Some(Some(seen)) = self.listing.get_mut(&object.key().kind()) {
                    seen.insert(object.key());
                }
                if self.holds(&object) {
                    return false;
                }
                self.put(object);
                true
            }
            Change::ListDone(kind) => {
                let mut changed = !self.synced.contains(&kind);
                if let Some(Some(seen)) = self.listing.remove(&kind) {
                    for key in self.keys(kind).into_iter().filter(|k| !seen.contains(k)) {
                        self.remove(&key);
                        changed = true;
                    }
                }
                self.synced.insert(kind);
                changed
            }
        }
    }

    fn holds_key(&self, key: &Key) -> bool {
        let c = &self.compiler;
        match key {
            Key::Namespace(name) => c.namespace(name).is_some(),
            Key::Pod(key) => c.pod(key).is_some(),
            Key::Policy(key) => c.policy(key).is_some(),
            Key::Node(name) => c.node(name).is_some(),
        }
    }

    fn put(&mut self, object: Object) {
        match object {
            Object::Namespace(ns) => self.compiler.apply_namespace(ns),
            Object::Pod(pod) => self.compiler.apply_pod(pod),
            Object::Policy(policy) => self.compiler.apply_policy(policy),
            Object::Node(node) => self.compiler.apply_node(node),
        }
    }

    fn remove(&mut self, key: &Key) {
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

    fn list(cluster: &mut Cluster, kind: Kind, objects: &[Object]) {
        cluster.apply(Change::ListStart(kind));
        for o in objects.iter().filter(|o| o.key().kind() == kind) {
            cluster.apply(Change::Listed(o.clone()));
        }
        cluster.apply(Change::ListDone(kind));
    }

    fn synced(cluster: &mut Cluster, objects: Vec<Object>) {
        for kind in Kind::ALL {
            list(cluster, kind, &objects);
        }
    }

    /// The cluster state's ruleset equals a fresh compile of the same objects.
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
        let mut cluster = Cluster::new("node-0");
        for kind in [Kind::Namespace, Kind::Pod, Kind::Policy] {
            list(&mut cluster, kind, &[]);
            assert!(!cluster.is_synced(), "{kind:?}");
        }
        cluster.apply(Change::ListStart(Kind::Node));
        assert!(cluster.is_listing() && !cluster.is_synced());
        cluster.apply(Change::ListDone(Kind::Node));
        assert!(cluster.is_synced() && !cluster.is_listing());
    }

    #[test]
    fn a_relist_removes_what_it_lacks() {
        let mut cluster = Cluster::new("node-0");
        let first = vec![
            pod("a", "x", "10.0.0.1", "x"),
            pod("a", "y", "10.0.0.2", "y"),
            deny_all("a"),
        ];
        synced(&mut cluster, first.clone());
        assert_eq!(cluster.ruleset(), &fresh(&first));
        assert_eq!(cluster.count(Kind::Pod), 2);
        // A re-list after 410 Gone: y and the policy are gone, z is new.
        let second = vec![pod("a", "x", "10.0.0.1", "x"), pod("a", "z", "10.0.0.3", "z")];
        list(&mut cluster, Kind::Pod, &second);
        list(&mut cluster, Kind::Policy, &[]);
        assert_eq!(cluster.ruleset(), &fresh(&second));
        assert_eq!(cluster.count(Kind::Pod), 2);
        assert_eq!(cluster.count(Kind::Policy), 0);
    }

    #[test]
    fn a_change_that_changes_nothing_says_so() {
        let mut cluster = Cluster::new("node-0");
        synced(&mut cluster, vec![pod("a", "x", "10.0.0.1", "x")]);
        assert!(
            !cluster.apply(Change::Apply(pod("a", "x", "10.0.0.1", "x"))),
            "same pod again"
        );
        assert!(
            cluster.apply(Change::Apply(pod("a", "x", "10.0.0.1", "y"))),
            "relabelled"
        );
        assert!(!cluster.apply(Change::Delete(Key::Pod(ObjectKey::new("a", "never")))));
        assert!(cluster.apply(Change::Delete(Key::Pod(ObjectKey::new("a", "x")))));
        // A re-list naming what is held changes nothing; one that drops an object does.
        list(&mut cluster, Kind::Pod, &[]);
        cluster.apply(Change::Apply(pod("a", "y", "10.0.0.2", "y")));
        cluster.apply(Change::ListStart(Kind::Pod));
        assert!(!cluster.apply(Change::Listed(pod("a", "y", "10.0.0.2", "y"))));
        assert!(!cluster.apply(Change::ListDone(Kind::Pod)));
        cluster.apply(Change::ListStart(Kind::Pod));
        assert!(cluster.apply(Change::ListDone(Kind::Pod)), "y is gone");
    }

    #[test]
    fn events_match_a_fresh_compile() {
        let mut cluster = Cluster::new("node-0");
        synced(&mut cluster, vec![pod("a", "x", "10.0.0.1", "x")]);
        cluster.apply(Change::Apply(deny_all("a")));
        cluster.apply(Change::Apply(pod("a", "y", "10.0.0.2", "y")));
        cluster.apply(Change::Apply(pod("a", "x", "10.0.0.1", "moved")));
        let want = [
            pod("a", "x", "10.0.0.1", "moved"),
            pod("a", "y", "10.0.0.2", "y"),
            deny_all("a"),
        ];
        assert_eq!(cluster.ruleset(), &fresh(&want));
        cluster.apply(Change::Delete(Key::Policy(ObjectKey::new("a", "deny"))));
        // Deleting what is not there changes nothing.
        cluster.apply(Change::Delete(Key::Pod(ObjectKey::new("a", "never"))));
        assert_eq!(cluster.ruleset(), &fresh(&want[..2]));
        assert_ne!(fresh(&want[..2]), fresh(&want), "the policy made a difference");
    }
}
