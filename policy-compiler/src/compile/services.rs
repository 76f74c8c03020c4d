//! The compiler's service half: Services, EndpointSlices and ServiceCIDRs in, the ruleset's
//! [`ServiceRules`](crate::nat::ServiceRules) out. A change to a service or one of its slices
//! recomputes that service's entries only; a change to a Node recomputes the node-wide fields.

use std::collections::BTreeSet;

use ipnet::IpNet;

use super::Compiler;
use crate::model::ObjectKey;
use crate::nat::{self, ServicePortKey};
use crate::service::{EndpointSlice, Service};

impl Compiler {
    pub fn service(&self, key: &ObjectKey) -> Option<&Service> {
        self.services.get(key)
    }

    pub fn service_keys(&self) -> impl Iterator<Item = &ObjectKey> {
        self.services.keys()
    }

    pub fn slice_keys(&self) -> impl Iterator<Item = &ObjectKey> {
        self.slices.keys()
    }

    pub fn service_cidr_names(&self) -> impl Iterator<Item = &str> {
        self.service_cidrs.keys().map(String::as_str)
    }

    pub fn apply_service(&mut self, service: Service) {
        let key = service.key.clone();
        self.services.insert(key.clone(), service);
        self.refresh_service(&key);
    }

    pub fn delete_service(&mut self, key: &ObjectKey) {
        self.services.remove(key);
        self.refresh_service(key);
    }

    pub fn apply_slice(&mut self, slice: EndpointSlice) {
        let old = self.slices.insert(slice.key.clone(), slice.clone());
        if let Some(old) = old.filter(|o| o.service != slice.service) {
            self.refresh_service(&old.service_key());
        }
        self.refresh_service(&slice.service_key());
    }

    pub fn delete_slice(&mut self, key: &ObjectKey) {
        if let Some(old) = self.slices.remove(key) {
            self.refresh_service(&old.service_key());
        }
    }

    pub fn apply_service_cidr(&mut self, name: &str, cidrs: Vec<IpNet>) {
        self.service_cidrs.insert(name.to_string(), cidrs);
        self.refresh_service_cidrs();
    }

    pub fn delete_service_cidr(&mut self, name: &str) {
        self.service_cidrs.remove(name);
        self.refresh_service_cidrs();
    }

    pub(super) fn refresh_service_cidrs(&mut self) {
        self.ir.services.cidrs = self.service_cidrs.values().flatten().copied().collect();
    }

    /// This node's NodePort addresses and every node's pod CIDRs; and local endpoints, which
    /// are named by node, do not change with a Node object.
    pub(super) fn refresh_node_services(&mut self) {
        let rules = &mut self.ir.services;
        rules.nodeport_addrs = self
            .nodes
            .get(&self.ir.node)
            .map(|n| n.internal_ips.iter().copied().collect())
            .unwrap_or_default();
        rules.pod_cidrs = self
            .nodes
            .values()
            .flat_map(|n| n.pod_cidrs.iter().copied())
            .collect::<BTreeSet<_>>();
    }

    /// Replaces the IR entries of one service with what it and its slices give now.
    fn refresh_service(&mut self, key: &ObjectKey) {
        let rules = &mut self.ir.services;
        let first = ServicePortKey {
            service: key.clone(),
            protocol: crate::Protocol::Tcp,
            port: 0,
        };
        let stale: Vec<ServicePortKey> = rules
            .ports
            .range(first..)
            .take_while(|(k, _)| k.service == *key)
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            rules.ports.remove(&k);
        }
        rules.cluster_ips.remove(key);
        let Some(service) = self.services.get(key) else {
            return;
        };
        let slices: Vec<&EndpointSlice> = self
            .slices
            .range(ObjectKey::new(&key.namespace, "")..)
            .take_while(|(k, _)| k.namespace == key.namespace)
            .map(|(_, s)| s)
            .filter(|s| s.service == key.name)
            .collect();
        let (ips, ports) = nat::service_entries(service, &slices, &self.ir.node);
        if let Some(ips) = ips {
            rules.cluster_ips.insert(key.clone(), ips);
        }
        rules.ports.extend(ports);
    }
}
