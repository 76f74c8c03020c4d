//! The pod index: every pod of the cluster, with lookups by namespace, label, port name and
//! address, so that resolving a selector touches the pods that can match rather than all of them.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use crate::model::{ObjectKey, Pod};
use crate::selector::Selector;

pub type PodId = u32;

#[derive(Debug, Default)]
struct NamespacePods {
    all: BTreeSet<PodId>,
    /// label key, then value, to the pods carrying it.
    by_label: HashMap<String, HashMap<String, BTreeSet<PodId>>>,
}

/// Pods by id. Only enforced pods (SPEC 2.10, 2.11) are indexed and claim addresses; the others
/// are stored so that a later update can find and replace them.
#[derive(Debug, Default)]
pub struct PodIndex {
    slots: Vec<Option<Pod>>,
    free: Vec<PodId>,
    ids: HashMap<ObjectKey, PodId>,
    namespaces: HashMap<String, NamespacePods>,
    by_port_name: HashMap<String, BTreeSet<PodId>>,
    /// The enforced pods that list each address; usually one.
    claims: HashMap<IpAddr, Vec<PodId>>,
}

impl PodIndex {
    pub fn get(&self, id: PodId) -> &Pod {
        self.slots[id as usize].as_ref().expect("live pod id")
    }

    /// Every pod's key, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &ObjectKey> {
        self.ids.keys()
    }

    pub fn id_of(&self, key: &ObjectKey) -> Option<PodId> {
        self.ids.get(key).copied()
    }

    /// Adds a pod (none with its key may be present) and returns its id.
    pub fn insert(&mut self, pod: Pod) -> PodId {
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.slots.push(None);
                PodId::try_from(self.slots.len() - 1).expect("fewer than 2^32 pods")
            }
        };
        if pod.is_enforced() {
            let ns = self.namespaces.entry(pod.key.namespace.clone()).or_default();
            ns.all.insert(id);
            for (k, v) in &pod.labels {
                ns.by_label
                    .entry(k.clone())
                    .or_default()
                    .entry(v.clone())
                    .or_default()
                    .insert(id);
            }
            for name in pod.ports.iter().filter_map(|p| p.name.as_ref()) {
                self.by_port_name.entry(name.clone()).or_default().insert(id);
            }
            for ip in &pod.ips {
                self.claims.entry(*ip).or_default().push(id);
            }
        }
        self.ids.insert(pod.key.clone(), id);
        self.slots[id as usize] = Some(pod);
        id
    }

    /// Removes a pod and returns it.
    pub fn remove(&mut self, key: &ObjectKey) -> Option<Pod> {
        let id = self.ids.remove(key)?;
        let pod = self.slots[id as usize].take().expect("indexed pod");
        self.free.push(id);
        if pod.is_enforced() {
            if let Some(ns) = self.namespaces.get_mut(&pod.key.namespace) {
                ns.all.remove(&id);
                for (k, v) in &pod.labels {
                    if let Some(values) = ns.by_label.get_mut(k) {
                        if let Some(ids) = values.get_mut(v) {
                            ids.remove(&id);
                            if ids.is_empty() {
                                values.remove(v);
                            }
                        }
                        if values.is_empty() {
                            ns.by_label.remove(k);
                        }
                    }
                }
                if ns.all.is_empty() {
                    self.namespaces.remove(&pod.key.namespace);
                }
            }
            for name in pod.ports.iter().filter_map(|p| p.name.as_ref()) {
                if let Some(ids) = self.by_port_name.get_mut(name) {
                    ids.remove(&id);
                    if ids.is_empty() {
                        self.by_port_name.remove(name);
                    }
                }
            }
            for ip in &pod.ips {
                if let Some(ids) = self.claims.get_mut(ip) {
                    ids.retain(|c| *c != id);
                    if ids.is_empty() {
                        self.claims.remove(ip);
                    }
                }
            }
        }
        Some(pod)
    }

    /// The pod that owns an address: of several claiming it, the first by key (SPEC: an address
    /// belongs to one pod; the model's `Snapshot::owner_of` states the same rule).
    pub fn owner(&self, addr: IpAddr) -> Option<PodId> {
        let ids = self.claims.get(&addr)?;
        ids.iter()
            .copied()
            .min_by(|a, b| self.get(*a).key.cmp(&self.get(*b).key))
    }

    /// Every enforced pod that lists the address, owner or not.
    pub fn claimants(&self, addr: IpAddr) -> impl Iterator<Item = PodId> + '_ {
        self.claims.get(&addr).into_iter().flatten().copied()
    }

    /// The addresses of a pod that it owns.
    pub fn owned_addrs(&self, id: PodId) -> impl Iterator<Item = IpAddr> + '_ {
        self.get(id)
            .ips
            .iter()
            .copied()
            .filter(move |ip| self.owner(*ip) == Some(id))
    }

    /// Addresses claimed by more than one pod, with the claimants' keys.
    pub fn contested(&self) -> Vec<(IpAddr, Vec<ObjectKey>)> {
        let mut out: Vec<(IpAddr, Vec<ObjectKey>)> = self
            .claims
            .iter()
            .filter(|(_, ids)| ids.len() > 1)
            .map(|(ip, ids)| {
                let mut keys: Vec<ObjectKey> = ids.iter().map(|id| self.get(*id).key.clone()).collect();
                keys.sort();
                (*ip, keys)
            })
            .collect();
        out.sort();
        out
    }

    /// Namespaces that hold at least one enforced pod.
    pub fn namespaces(&self) -> impl Iterator<Item = &str> {
        self.namespaces.keys().map(String::as_str)
    }

    /// Enforced pods of a namespace that match a selector, found through the narrowest label.
    pub fn select(&self, namespace: &str, selector: &Selector) -> Vec<PodId> {
        let Some(ns) = self.namespaces.get(namespace) else {
            return Vec::new();
        };
        let candidates: Vec<PodId> = match selector.narrowest_in() {
            Some((key, values)) => {
                let Some(by_value) = ns.by_label.get(key) else {
                    return Vec::new();
                };
                let mut ids: Vec<PodId> = values
                    .iter()
                    .filter_map(|v| by_value.get(v))
                    .flatten()
                    .copied()
                    .collect();
                ids.sort_unstable();
                ids.dedup();
                ids
            }
            None => ns.all.iter().copied().collect(),
        };
        candidates
            .into_iter()
            .filter(|id| selector.matches(&self.get(*id).labels))
            .collect()
    }

    /// Enforced pods that declare a container port with this name (any protocol).
    pub fn with_port_name(&self, name: &str) -> impl Iterator<Item = PodId> + '_ {
        self.by_port_name.get(name).into_iter().flatten().copied()
    }
}
