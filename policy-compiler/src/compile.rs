//! The compiler: cluster model in, one node's [`Ruleset`] out, kept up to date incrementally.
//!
//! [`Compiler`] is a synchronous state machine with `apply_*` / `delete_*` per kind. Each call
//! touches only what the change can affect: the pods it moves between allow-sets, the addresses
//! whose set memberships it changes. Shared pieces are reference counted: an allow-set lives while
//! a local pod uses it, and a pod set or named-port map while an allow-set uses it.
//!
//! Invariant: after any sequence of calls, `ruleset()` equals what [`compile`] builds from the
//! resulting snapshot (a property test checks it).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use crate::diagnostic::Diagnostic;
use crate::ir::{AllowSet, AllowSetKey, IrPeer, IrRule, LocalPod, NamedPort, PodPeer, Ruleset};
use crate::model::{
    Direction, Labels, Namespace, NamespaceScope, Node, ObjectKey, Pod, Policy, PolicyBody, PortMatch,
    Snapshot,
};
use crate::pod_index::{PodId, PodIndex};
use crate::service::{EndpointSlice, Service};

mod services;

/// Compiles one node's ruleset from a snapshot. Never fails: problems become diagnostics.
pub fn compile(snapshot: &Snapshot, node: &str) -> (Ruleset, Vec<Diagnostic>) {
    let compiler = Compiler::new(node, snapshot.clone());
    let diagnostics = compiler.diagnostics();
    (compiler.ir, diagnostics)
}

/// Compiles every node that the snapshot names.
pub fn compile_all(snapshot: &Snapshot) -> BTreeMap<String, Ruleset> {
    compile_all_reporting(snapshot).0
}

/// Compiles every node, with the diagnostics of all of them (each reported once).
pub fn compile_all_reporting(snapshot: &Snapshot) -> (BTreeMap<String, Ruleset>, Vec<Diagnostic>) {
    let mut rulesets = BTreeMap::new();
    let mut diagnostics = BTreeSet::new();
    for node in snapshot.node_names() {
        let (ruleset, diags) = compile(snapshot, &node);
        diagnostics.extend(diags);
        rulesets.insert(node, ruleset);
    }
    (rulesets, diagnostics.into_iter().collect())
}

#[derive(Debug)]
pub struct Compiler {
    namespaces: BTreeMap<String, Namespace>,
    policies: BTreeMap<ObjectKey, Policy>,
    nodes: BTreeMap<String, Node>,
    pods: PodIndex,
    /// Enforced pods on this node, owning an address or not.
    local: BTreeSet<ObjectKey>,
    ir: Ruleset,
    allow_refs: HashMap<AllowSetKey, usize>,
    pod_set_refs: HashMap<PodPeer, usize>,
    named_refs: HashMap<NamedPort, usize>,
    services: BTreeMap<ObjectKey, Service>,
    slices: BTreeMap<ObjectKey, EndpointSlice>,
    service_cidrs: BTreeMap<String, Vec<ipnet::IpNet>>,
}

fn namespace_range(ns: &str) -> std::ops::RangeFrom<ObjectKey> {
    ObjectKey::new(ns, "")..
}

impl Compiler {
    pub fn new(node: &str, snapshot: Snapshot) -> Compiler {
        let mut c = Compiler {
            namespaces: snapshot.namespaces,
            policies: snapshot.policies,
            nodes: BTreeMap::new(),
            pods: PodIndex::default(),
            local: BTreeSet::new(),
            ir: Ruleset {
                node: node.to_string(),
                ..Ruleset::default()
            },
            allow_refs: HashMap::new(),
            pod_set_refs: HashMap::new(),
            named_refs: HashMap::new(),
            services: BTreeMap::new(),
            slices: snapshot.slices,
            service_cidrs: snapshot.service_cidrs,
        };
        for n in snapshot.nodes.into_values() {
            c.apply_node(n);
        }
        c.refresh_service_cidrs();
        for service in snapshot.services.into_values() {
            c.apply_service(service);
        }
        for pod in snapshot.pods.into_values() {
            if c.is_local(&pod) {
                c.local.insert(pod.key.clone());
            }
            c.pods.insert(pod);
        }
        for key in c.local.clone() {
            c.attach(&key);
        }
        c
    }

    pub fn ruleset(&self) -> &Ruleset {
        &self.ir
    }

    pub fn node_name(&self) -> &str {
        &self.ir.node
    }

    /// The pod the compiler holds under `key`.
    pub fn pod(&self, key: &ObjectKey) -> Option<&Pod> {
        self.pods.id_of(key).map(|id| self.pods.get(id))
    }

    pub fn policy(&self, key: &ObjectKey) -> Option<&Policy> {
        self.policies.get(key)
    }

    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        self.namespaces.get(name)
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.get(name)
    }

    /// The pods the compiler holds, in no particular order.
    pub fn pod_keys(&self) -> impl Iterator<Item = &ObjectKey> {
        self.pods.keys()
    }

    pub fn policy_keys(&self) -> impl Iterator<Item = &ObjectKey> {
        self.policies.keys()
    }

    pub fn namespace_names(&self) -> impl Iterator<Item = &str> {
        self.namespaces.keys().map(String::as_str)
    }

    pub fn node_names(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }

    /// Problems found while compiling: contested addresses, and local pods that only invalid
    /// policies isolate (they allow nothing in that direction). Lowering reports the rest.
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        for (addr, keys) in self.pods.contested() {
            let names: Vec<String> = keys.iter().map(ToString::to_string).collect();
            out.push(Diagnostic::new(
                "Pod",
                &names[0],
                &format!(
                    "address {addr} is also listed by {}; it belongs to {} only",
                    names[1..].join(", "),
                    names[0]
                ),
            ));
        }
        for (key, pod) in &self.ir.pods {
            for direction in Direction::BOTH {
                let Some(set) = pod.isolation(direction) else {
                    continue;
                };
                let all_invalid = set.policies.iter().all(|p| {
                    matches!(
                        self.policies.get(p).map(|p| &p.body),
                        Some(PolicyBody::Invalid { .. })
                    )
                });
                if all_invalid {
                    out.push(Diagnostic::new(
                        "Pod",
                        &key.to_string(),
                        &format!(
                            "isolated for {} only by invalid policies ({}): no {} traffic is allowed",
                            direction.as_str(),
                            set.policies
                                .iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join(", "),
                            direction.as_str()
                        ),
                    ));
                }
            }
        }
        out
    }

    fn is_local(&self, pod: &Pod) -> bool {
        pod.node == self.ir.node && pod.is_enforced()
    }

    fn namespace_labels(namespaces: &BTreeMap<String, Namespace>, name: &str) -> Labels {
        match namespaces.get(name) {
            Some(ns) => ns.labels.clone(),
            None => Namespace::new(name, Labels::new()).labels,
        }
    }

    // ---- Updates -------------------------------------------------------------------------

    pub fn apply_pod(&mut self, pod: Pod) {
        let key = pod.key.clone();
        self.replace_pod(&key, Some(pod));
    }

    pub fn delete_pod(&mut self, key: &ObjectKey) {
        self.replace_pod(key, None);
    }

    fn replace_pod(&mut self, key: &ObjectKey, new: Option<Pod>) {
        let mut addrs: BTreeSet<IpAddr> = BTreeSet::new();
        if let Some(id) = self.pods.id_of(key) {
            addrs.extend(self.pods.get(id).ips.iter().copied());
        }
        if let Some(pod) = &new {
            addrs.extend(pod.ips.iter().copied());
        }
        // Local pods whose owned addresses may change: this one and every pod claiming one of
        // its addresses, before and after.
        let mut reattach: BTreeSet<ObjectKey> = BTreeSet::from([key.clone()]);
        reattach.extend(self.local_claimants(&addrs));
        for k in &reattach {
            self.detach(k);
        }

        self.local.remove(key);
        self.pods.remove(key);
        if let Some(pod) = new {
            if self.is_local(&pod) {
                self.local.insert(pod.key.clone());
            }
            self.pods.insert(pod);
        }

        for addr in &addrs {
            self.refresh_addr(*addr);
        }
        reattach.extend(self.local_claimants(&addrs));
        for k in &reattach {
            self.attach(k);
        }
        self.collect_garbage();
    }

    fn local_claimants(&self, addrs: &BTreeSet<IpAddr>) -> Vec<ObjectKey> {
        addrs
            .iter()
            .flat_map(|a| self.pods.claimants(*a))
            .map(|id| self.pods.get(id).key.clone())
            .filter(|k| self.local.contains(k))
            .collect()
    }

    pub fn apply_policy(&mut self, policy: Policy) {
        let key = policy.key.clone();
        self.replace_policy(&key, Some(policy));
    }

    pub fn delete_policy(&mut self, key: &ObjectKey) {
        self.replace_policy(key, None);
    }

    fn replace_policy(&mut self, key: &ObjectKey, new: Option<Policy>) {
        // Only the local pods that the old or the new version selects can change allow-set.
        let affected: Vec<ObjectKey> = self
            .local
            .range(namespace_range(&key.namespace))
            .take_while(|k| k.namespace == key.namespace)
            .filter(|k| {
                let labels = &self
                    .pods
                    .get(self.pods.id_of(k).expect("local pod is indexed"))
                    .labels;
                let old = self
                    .policies
                    .get(key)
                    .is_some_and(|p| p.pod_selector.matches(labels));
                let new = new.as_ref().is_some_and(|p| p.pod_selector.matches(labels));
                old || new
            })
            .cloned()
            .collect();
        for k in &affected {
            self.detach(k);
        }
        match new {
            Some(policy) => self.policies.insert(key.clone(), policy),
            None => self.policies.remove(key),
        };
        for k in &affected {
            self.attach(k);
        }
        self.collect_garbage();
    }

    pub fn apply_namespace(&mut self, namespace: Namespace) {
        let name = namespace.name.clone();
        let old = Self::namespace_labels(&self.namespaces, &name);
        self.namespaces.insert(name.clone(), namespace);
        self.relabel_namespace(&name, &old);
    }

    pub fn delete_namespace(&mut self, name: &str) {
        let old = Self::namespace_labels(&self.namespaces, name);
        self.namespaces.remove(name);
        self.relabel_namespace(name, &old);
    }

    fn relabel_namespace(&mut self, name: &str, old: &Labels) {
        let new = Self::namespace_labels(&self.namespaces, name);
        let Compiler { ir, pods, .. } = self;
        for (peer, set) in ir.pod_sets.iter_mut() {
            let NamespaceScope::Selected(sel) = &peer.namespaces else {
                continue;
            };
            let (was, now) = (sel.matches(old), sel.matches(&new));
            if was == now {
                continue;
            }
            for id in pods.select(name, &peer.pods) {
                for addr in pods.owned_addrs(id) {
                    if now {
                        set.insert(addr);
                    } else {
                        set.remove(&addr);
                    }
                }
            }
        }
    }

    pub fn apply_node(&mut self, node: Node) {
        if node.name == self.ir.node {
            self.ir.node_addrs = node.addrs.iter().copied().collect();
        }
        self.nodes.insert(node.name.clone(), node);
        self.refresh_node_services();
    }

    pub fn delete_node(&mut self, name: &str) {
        if name == self.ir.node {
            self.ir.node_addrs.clear();
        }
        self.nodes.remove(name);
        self.refresh_node_services();
    }

    // ---- Local pods and allow-sets ----------------------------------------------------------

    /// Puts a local pod into the ruleset with the allow-sets of the policies that select it.
    fn attach(&mut self, key: &ObjectKey) {
        if self.ir.pods.contains_key(key) || !self.local.contains(key) {
            return;
        }
        let id = self.pods.id_of(key).expect("local pod is indexed");
        let addrs: Vec<IpAddr> = self.pods.owned_addrs(id).collect();
        if addrs.is_empty() {
            return;
        }
        let labels = &self.pods.get(id).labels;
        let mut selecting: [Vec<ObjectKey>; 2] = [Vec::new(), Vec::new()];
        for (pkey, policy) in self.policies.range(namespace_range(&key.namespace)) {
            if pkey.namespace != key.namespace {
                break;
            }
            if !policy.pod_selector.matches(labels) {
                continue;
            }
            for (i, direction) in Direction::BOTH.into_iter().enumerate() {
                if policy.directions.has(direction) {
                    selecting[i].push(pkey.clone());
                }
            }
        }
        let [ingress, egress] = selecting;
        let ingress = self.acquire_allow_set(Direction::Ingress, ingress);
        let egress = self.acquire_allow_set(Direction::Egress, egress);
        self.ir.pods.insert(
            key.clone(),
            LocalPod {
                addrs,
                ingress,
                egress,
            },
        );
    }

    fn detach(&mut self, key: &ObjectKey) {
        let Some(pod) = self.ir.pods.remove(key) else {
            return;
        };
        for set in [pod.ingress, pod.egress].into_iter().flatten() {
            self.release_allow_set(&set);
        }
    }

    fn acquire_allow_set(&mut self, direction: Direction, policies: Vec<ObjectKey>) -> Option<AllowSetKey> {
        if policies.is_empty() {
            return None;
        }
        let key = AllowSetKey { direction, policies };
        let refs = self.allow_refs.entry(key.clone()).or_insert(0);
        *refs += 1;
        if *refs == 1 {
            let set = self.build_allow_set(&key);
            self.ir.allow_sets.insert(key.clone(), set);
        }
        Some(key)
    }

    fn release_allow_set(&mut self, key: &AllowSetKey) {
        let refs = self.allow_refs.get_mut(key).expect("allow-set in use");
        *refs -= 1;
        if *refs > 0 {
            return;
        }
        self.allow_refs.remove(key);
        let set = self.ir.allow_sets.remove(key).expect("allow-set present");
        for rule in &set.rules {
            for peer in rule.peers.iter().flatten() {
                if let IrPeer::Pods(p) = peer {
                    *self.pod_set_refs.get_mut(p).expect("pod set in use") -= 1;
                }
            }
            for named in Self::named_ports_of(rule, key.direction) {
                *self.named_refs.get_mut(&named).expect("named port in use") -= 1;
            }
        }
    }

    fn named_ports_of(rule: &IrRule, direction: Direction) -> impl Iterator<Item = NamedPort> + '_ {
        rule.ports.iter().flatten().filter_map(move |p| match &p.port {
            PortMatch::Named(name) => Some(NamedPort {
                direction,
                protocol: p.protocol,
                name: name.clone(),
            }),
            _ => None,
        })
    }

    fn build_allow_set(&mut self, key: &AllowSetKey) -> AllowSet {
        let mut rules = Vec::new();
        for pkey in &key.policies {
            let policy = &self.policies[pkey];
            for (index, rule) in policy.rules(key.direction).iter().enumerate() {
                rules.push(IrRule {
                    policy: pkey.clone(),
                    index,
                    peers: rule
                        .peers
                        .as_ref()
                        .map(|peers| peers.iter().map(IrPeer::from).collect()),
                    ports: rule.ports.clone(),
                });
            }
        }
        for rule in &rules {
            for peer in rule.peers.iter().flatten() {
                if let IrPeer::Pods(p) = peer {
                    self.acquire_pod_set(p);
                }
            }
            for named in Self::named_ports_of(rule, key.direction) {
                self.acquire_named_port(named);
            }
        }
        AllowSet { rules }
    }

    // ---- Shared address sets ------------------------------------------------------------------

    fn acquire_pod_set(&mut self, peer: &PodPeer) {
        *self.pod_set_refs.entry(peer.clone()).or_insert(0) += 1;
        if self.ir.pod_sets.contains_key(peer) {
            return;
        }
        let namespaces: Vec<String> = match &peer.namespaces {
            NamespaceScope::Named(ns) => vec![ns.clone()],
            NamespaceScope::Selected(sel) => self
                .pods
                .namespaces()
                .filter(|ns| sel.matches(&Self::namespace_labels(&self.namespaces, ns)))
                .map(str::to_string)
                .collect(),
        };
        let mut addrs = BTreeSet::new();
        for ns in &namespaces {
            for id in self.pods.select(ns, &peer.pods) {
                addrs.extend(self.pods.owned_addrs(id));
            }
        }
        self.ir.pod_sets.insert(peer.clone(), addrs);
    }

    fn acquire_named_port(&mut self, named: NamedPort) {
        if self.ir.named_ports.contains_key(&named) {
            *self.named_refs.entry(named).or_insert(0) += 1;
            return;
        }
        let holders: Vec<PodId> = match named.direction {
            Direction::Ingress => self.local.iter().filter_map(|k| self.pods.id_of(k)).collect(),
            Direction::Egress => self.pods.with_port_name(&named.name).collect(),
        };
        let mut entries: Vec<(IpAddr, u16)> = Vec::new();
        for id in holders {
            if let Some(number) = self.pods.get(id).named_port(&named.name, named.protocol) {
                entries.extend(self.pods.owned_addrs(id).map(|a| (a, number)));
            }
        }
        self.ir
            .named_ports
            .insert(named.clone(), entries.into_iter().collect());
        self.named_refs.insert(named, 1);
    }

    /// Drops shared sets that no allow-set uses any more. Run once per update, after the
    /// re-attach, so a set that one update releases and re-acquires is never rebuilt.
    fn collect_garbage(&mut self) {
        self.pod_set_refs.retain(|peer, refs| {
            if *refs == 0 {
                self.ir.pod_sets.remove(peer);
            }
            *refs > 0
        });
        self.named_refs.retain(|named, refs| {
            if *refs == 0 {
                self.ir.named_ports.remove(named);
            }
            *refs > 0
        });
    }

    /// Brings one address's memberships in every shared set in line with its current owner.
    fn refresh_addr(&mut self, addr: IpAddr) {
        let Compiler {
            ir,
            pods,
            namespaces,
            local,
            ..
        } = self;
        let owner: Option<&Pod> = pods.owner(addr).map(|id: PodId| pods.get(id));
        let owner_ns_labels = owner.map(|pod| Self::namespace_labels(namespaces, &pod.key.namespace));
        for (peer, set) in ir.pod_sets.iter_mut() {
            let matches = owner
                .zip(owner_ns_labels.as_ref())
                .is_some_and(|(pod, ns_labels)| {
                    let in_scope = match &peer.namespaces {
                        NamespaceScope::Named(ns) => *ns == pod.key.namespace,
                        NamespaceScope::Selected(sel) => sel.matches(ns_labels),
                    };
                    in_scope && peer.pods.matches(&pod.labels)
                });
            if matches {
                set.insert(addr);
            } else {
                set.remove(&addr);
            }
        }
        for (named, map) in ir.named_ports.iter_mut() {
            let resolves_here = |pod: &&Pod| named.direction == Direction::Egress || local.contains(&pod.key);
            match owner
                .filter(resolves_here)
                .and_then(|pod| pod.named_port(&named.name, named.protocol))
            {
                Some(number) => map.insert(addr, number),
                None => map.remove(&addr),
            };
        }
    }
}
