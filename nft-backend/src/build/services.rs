//! The service NAT step of [`build`](super::build) (SPEC 5; layout in ARCHITECTURE.md): per
//! family, the frontend and NodePort verdict maps and the chains they jump to (an entry chain per
//! service port and path, an endpoint group with a random pick, a chain per endpoint that
//! DNATs), the no-endpoint, live-ClusterIP and service-CIDR checks of the filter hooks, the
//! source-range checks before DNAT, and masquerade by a mark bit.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use policy_compiler::nat::{Backend, ServicePortKey, ServicePortRules, ServiceRules};
use policy_compiler::Protocol;

use super::{family_set_name, split_family, Builder, NODE_SET};
use crate::identity::Identity;
use crate::interval;
use crate::names::comment;
use crate::nft::{Addr, Chain, Family, Frontend, MapTarget, Match, Rule, Set, SetKind, Verdict};

/// The mark bit that asks `nat-postrouting` to masquerade a connection (kube-proxy's default).
pub const MASQUERADE_MARK: u32 = 0x4000;
/// The chain every frontend walks first in the nat hooks.
pub const SERVICES_CHAIN: &str = "services";
/// The chain of the filter hooks that refuses or drops what NAT left untranslated.
pub const SERVICES_CHECK_CHAIN: &str = "services-check";
/// The chain the source-range hooks walk.
pub const FIREWALL_CHAIN: &str = "firewall";
const REJECT_CHAIN: &str = "refuse";
const POD_CIDRS: &str = "pod-cidrs";
const NODEPORT_ADDRS: &str = "nodeport-addrs";
const CLUSTER_IPS: &str = "cluster-ips";
const SERVICE_CIDRS: &str = "service-cidrs";
const FRONTENDS: &str = "frontends";
const NODEPORTS: &str = "nodeports";
const NO_ENDPOINTS: &str = "no-endpoints";
const NODEPORTS_NO_ENDPOINTS: &str = "nodeports-no-endpoints";
const FIREWALL: &str = "firewall";

fn rule(matches: Vec<Match>, verdict: Verdict) -> Rule {
    Rule {
        matches,
        verdict,
        comment: None,
    }
}

fn ranges_of(nets: impl Iterator<Item = IpNet>, family: Family) -> Vec<(IpAddr, IpAddr)> {
    let ranges = nets
        .filter(|n| Family::of(n.network()) == family)
        .map(|n| (n.network(), n.broadcast()))
        .collect();
    interval::union(ranges)
}

/// The maps' entries of one family, gathered while the chains are made.
#[derive(Default)]
struct Maps {
    frontends: Vec<(Frontend, MapTarget)>,
    nodeports: Vec<((Protocol, u16), MapTarget)>,
    no_endpoints: Vec<(Frontend, MapTarget)>,
    nodeports_no_endpoints: Vec<((Protocol, u16), MapTarget)>,
    firewall: Vec<(Frontend, MapTarget)>,
}

/// Whether the IR has anything for NAT to do (a node without services gets no NAT objects).
impl Builder<'_> {
    /// The NAT step: made only when the IR has services or service CIDRs.
    pub(super) fn services(&mut self) {
        let rules = &self.ruleset.services;
        if !rules.has_services() {
            return;
        }
        self.service_sets(rules);
        self.chains.push(Chain {
            name: REJECT_CHAIN.to_string(),
            hook: None,
            rules: vec![
                rule(vec![Match::Protocol(Protocol::Tcp)], Verdict::RejectTcpReset),
                rule(vec![], Verdict::RejectPortUnreachable),
            ],
            comment: "refuse a new connection: TCP reset, else ICMP port unreachable".to_string(),
        });
        for family in Family::BOTH {
            let mut maps = Maps::default();
            // The first service port by key wins a frontend two of them claim.
            let mut taken: BTreeSet<Frontend> = BTreeSet::new();
            let mut taken_nodeports: BTreeSet<(Protocol, u16)> = BTreeSet::new();
            for (key, port) in &rules.ports {
                self.service_port(key, port, family, &mut maps, &mut taken, &mut taken_nodeports);
            }
            self.service_maps(family, maps);
        }
        self.service_chains();
    }

    fn service_sets(&mut self, rules: &ServiceRules) {
        let cluster_ips: Vec<IpAddr> = rules
            .cluster_ips
            .values()
            .flatten()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for family in Family::BOTH {
            let sets = [
                (
                    POD_CIDRS,
                    SetKind::Ranges(ranges_of(rules.pod_cidrs.iter().copied(), family)),
                    "every node's pod CIDRs",
                ),
                (
                    NODEPORT_ADDRS,
                    SetKind::Addrs(split_family(rules.nodeport_addrs.iter().copied(), family)),
                    "this node's NodePort addresses",
                ),
                (
                    CLUSTER_IPS,
                    SetKind::Addrs(split_family(cluster_ips.iter().copied(), family)),
                    "ClusterIPs of proxied services",
                ),
                (
                    SERVICE_CIDRS,
                    SetKind::Ranges(ranges_of(rules.cidrs.iter().copied(), family)),
                    "service CIDRs",
                ),
            ];
            for (base, kind, text) in sets {
                self.sets.push(Set::new(
                    family_set_name(base, family),
                    family,
                    kind,
                    text.to_string(),
                ));
            }
        }
    }

    /// The chains of one service port in one family, and its map entries.
    fn service_port(
        &mut self,
        key: &ServicePortKey,
        port: &ServicePortRules,
        family: Family,
        maps: &mut Maps,
        taken: &mut BTreeSet<Frontend>,
        taken_nodeports: &mut BTreeSet<(Protocol, u16)>,
    ) {
        let of_family = |addrs: &[IpAddr]| -> Vec<IpAddr> { split_family(addrs.iter().copied(), family) };
        let cluster_ips = of_family(&port.cluster_ips);
        let mut external: Vec<IpAddr> = of_family(&port.external_ips);
        external.extend(of_family(&port.lb_ips));
        let node_port = port.node_port.filter(|_| {
            self.ruleset
                .services
                .nodeport_addrs
                .iter()
                .any(|a| Family::of(*a) == family)
        });
        if cluster_ips.is_empty() && external.is_empty() && node_port.is_none() {
            return;
        }
        let hint = format!("{}-{}", key.service.name, key.port);
        let identity = format!("{}{}", key.identity(), family.suffix());
        let cluster = self.endpoint_group("cl", &hint, &identity, key, &port.cluster, family);
        let local = if port.internal_local || port.external_local {
            self.endpoint_group("lo", &hint, &identity, key, &port.local, family)
        } else {
            None
        };
        let comment_text = comment(&format!("{key}"));
        // ClusterIPs: pod traffic as it is, other sources masqueraded.
        let internal = if port.internal_local { &local } else { &cluster };
        let internal_target = internal.as_ref().map(|group| {
            let (name, _) = self.names.claim("svc", &hint, &format!("svc{identity}"));
            let mut rules = Vec::new();
            if self.has_pod_cidrs(family) {
                rules.push(rule(
                    vec![Match::AddrNotIn {
                        family,
                        addr: Addr::Saddr,
                        set: family_set_name(POD_CIDRS, family),
                    }],
                    Verdict::Mark(MASQUERADE_MARK),
                ));
            }
            rules.push(rule(vec![], Verdict::Jump(group.clone())));
            self.chains.push(Chain {
                name: name.clone(),
                hook: None,
                rules,
                comment: comment_text.clone(),
            });
            MapTarget::Jump(name)
        });
        let internal_miss = if port.internal_local {
            MapTarget::Drop
        } else {
            self.reject()
        };
        for addr in cluster_ips {
            let fe = (addr, key.protocol, key.port);
            if !taken.insert(fe) {
                continue;
            }
            match &internal_target {
                Some(t) => maps.frontends.push((fe, t.clone())),
                None => maps.no_endpoints.push((fe, internal_miss.clone())),
            }
        }
        // External addresses and NodePorts.
        let external_target =
            self.external_chain(&hint, &identity, port, family, &cluster, &local, &comment_text);
        let external_complete = if port.external_local {
            local.is_some()
        } else {
            cluster.is_some()
        };
        let external_miss = if port.external_local {
            MapTarget::Drop
        } else {
            self.reject()
        };
        for addr in external {
            let fe = (addr, key.protocol, key.port);
            if !taken.insert(fe) {
                continue;
            }
            if port.lb_ips.contains(&addr) && !port.source_ranges.is_empty() {
                let fw = self.firewall_chain(&hint, &identity, port, family);
                maps.firewall.push((fe, MapTarget::Jump(fw)));
            }
            if let Some(t) = &external_target {
                maps.frontends.push((fe, t.clone()));
            }
            if !external_complete {
                maps.no_endpoints.push((fe, external_miss.clone()));
            }
        }
        if let Some(np) = node_port {
            if taken_nodeports.insert((key.protocol, np)) {
                if let Some(t) = &external_target {
                    maps.nodeports.push(((key.protocol, np), t.clone()));
                }
                if !external_complete {
                    maps.nodeports_no_endpoints
                        .push(((key.protocol, np), external_miss));
                }
            }
        }
    }

    fn reject(&self) -> MapTarget {
        MapTarget::Jump(REJECT_CHAIN.to_string())
    }

    fn has_pod_cidrs(&self, family: Family) -> bool {
        self.ruleset
            .services
            .pod_cidrs
            .iter()
            .any(|c| Family::of(c.network()) == family)
    }

    /// The entry chain of external frontends. `Cluster`: masquerade, any endpoint. `Local`:
    /// pods reach any endpoint as they are, the node itself masqueraded, external clients keep
    /// their address and reach local endpoints only (what finds no chain here falls to the
    /// no-endpoint drop of the filter hooks).
    #[allow(clippy::too_many_arguments)]
    fn external_chain(
        &mut self,
        hint: &str,
        identity: &str,
        port: &ServicePortRules,
        family: Family,
        cluster: &Option<String>,
        local: &Option<String>,
        comment_text: &str,
    ) -> Option<MapTarget> {
        let mark = || rule(vec![], Verdict::Mark(MASQUERADE_MARK));
        let mut rules = Vec::new();
        if !port.external_local {
            let group = cluster.as_ref()?;
            rules.push(mark());
            rules.push(rule(vec![], Verdict::Jump(group.clone())));
        } else {
            if cluster.is_none() && local.is_none() {
                return None;
            }
            if let Some(group) = cluster {
                let from = |base: &str| Match::AddrIn {
                    family,
                    addr: Addr::Saddr,
                    set: family_set_name(base, family),
                };
                rules.push(rule(vec![from(POD_CIDRS)], Verdict::Jump(group.clone())));
                rules.push(rule(vec![from(NODE_SET)], Verdict::Mark(MASQUERADE_MARK)));
                rules.push(rule(vec![from(NODE_SET)], Verdict::Jump(group.clone())));
            }
            if let Some(group) = local {
                rules.push(rule(vec![], Verdict::Jump(group.clone())));
            }
        }
        let (name, _) = self.names.claim("ext", hint, &format!("ext{identity}"));
        self.chains.push(Chain {
            name: name.clone(),
            hook: None,
            rules,
            comment: comment_text.to_string(),
        });
        Some(MapTarget::Jump(name))
    }

    /// A chain that lets the LoadBalancer's source ranges through and drops the rest.
    fn firewall_chain(
        &mut self,
        hint: &str,
        identity: &str,
        port: &ServicePortRules,
        family: Family,
    ) -> String {
        let (name, fresh) = self.names.claim("fw", hint, &format!("fw{identity}"));
        if fresh {
            let (set, _) = self.names.claim("src", hint, &format!("src{identity}"));
            self.sets.push(Set::new(
                set.clone(),
                family,
                SetKind::Ranges(ranges_of(port.source_ranges.iter().copied(), family)),
                comment(&format!("loadBalancerSourceRanges of {hint}")),
            ));
            self.chains.push(Chain {
                name: name.clone(),
                hook: None,
                rules: vec![
                    rule(
                        vec![Match::AddrIn {
                            family,
                            addr: Addr::Saddr,
                            set,
                        }],
                        Verdict::Return,
                    ),
                    rule(vec![], Verdict::Drop),
                ],
                comment: comment(&format!("source ranges of {hint}")),
            });
        }
        name
    }

    /// An endpoint group: a chain per endpoint (hairpin masquerade, then DNAT) and the chain
    /// that picks one at random. `None` when no endpoint of the family is left.
    fn endpoint_group(
        &mut self,
        prefix: &str,
        hint: &str,
        identity: &str,
        key: &ServicePortKey,
        backends: &[Backend],
        family: Family,
    ) -> Option<String> {
        let backends: Vec<&Backend> = backends.iter().filter(|b| Family::of(b.addr) == family).collect();
        if backends.is_empty() {
            return None;
        }
        let mut targets = Vec::new();
        for b in &backends {
            let (name, fresh) =
                self.names
                    .claim("ep", hint, &format!("ep{}{}", key.identity(), b.identity()));
            if fresh {
                self.chains.push(Chain {
                    name: name.clone(),
                    hook: None,
                    rules: vec![
                        rule(
                            vec![Match::AddrIs {
                                family,
                                addr: Addr::Saddr,
                                value: b.addr,
                            }],
                            Verdict::Mark(MASQUERADE_MARK),
                        ),
                        // nft maps a port only after a transport protocol match.
                        rule(
                            vec![Match::Protocol(key.protocol)],
                            Verdict::Dnat {
                                addr: b.addr,
                                port: b.port,
                            },
                        ),
                    ],
                    comment: comment(&format!("{key} endpoint {b}")),
                });
            }
            targets.push(name);
        }
        let (name, _) = self.names.claim(prefix, hint, &format!("{prefix}{identity}"));
        let verdict = match targets.as_slice() {
            [one] => Verdict::Jump(one.clone()),
            _ => Verdict::RandomJump(targets),
        };
        self.chains.push(Chain {
            name: name.clone(),
            hook: None,
            rules: vec![rule(vec![], verdict)],
            comment: comment(&format!(
                "{key} {} endpoints",
                if prefix == "cl" { "cluster" } else { "local" }
            )),
        });
        Some(name)
    }

    fn service_maps(&mut self, family: Family, maps: Maps) {
        let mut push = |base: &str, kind: SetKind, text: &str| {
            self.sets.push(Set::new(
                family_set_name(base, family),
                family,
                kind,
                text.to_string(),
            ));
        };
        let sorted = |mut v: Vec<(Frontend, MapTarget)>| {
            v.sort();
            v
        };
        let sorted_np = |mut v: Vec<((Protocol, u16), MapTarget)>| {
            v.sort();
            v
        };
        push(
            FRONTENDS,
            SetKind::Frontends(sorted(maps.frontends)),
            "service frontends",
        );
        push(
            NODEPORTS,
            SetKind::NodePorts(sorted_np(maps.nodeports)),
            "NodePorts",
        );
        push(
            NO_ENDPOINTS,
            SetKind::Frontends(sorted(maps.no_endpoints)),
            "frontends without an endpoint",
        );
        push(
            NODEPORTS_NO_ENDPOINTS,
            SetKind::NodePorts(sorted_np(maps.nodeports_no_endpoints)),
            "NodePorts without an endpoint",
        );
        push(
            FIREWALL,
            SetKind::Frontends(sorted(maps.firewall)),
            "LoadBalancer IPs with source ranges",
        );
    }

    /// The chains that read the maps: DNAT lookups, the filter checks and the source ranges.
    fn service_chains(&mut self) {
        let mut services = Vec::new();
        let mut check = Vec::new();
        let mut firewall = Vec::new();
        for family in Family::BOTH {
            let map = |base: &str| family_set_name(base, family);
            let at_nodeport = || Match::AddrIn {
                family,
                addr: Addr::Daddr,
                set: map(NODEPORT_ADDRS),
            };
            services.push(rule(
                vec![],
                Verdict::FrontendDispatch {
                    family,
                    map: map(FRONTENDS),
                },
            ));
            services.push(rule(
                vec![at_nodeport()],
                Verdict::NodePortDispatch { map: map(NODEPORTS) },
            ));
            check.push(rule(
                vec![],
                Verdict::FrontendDispatch {
                    family,
                    map: map(NO_ENDPOINTS),
                },
            ));
            check.push(rule(
                vec![at_nodeport()],
                Verdict::NodePortDispatch {
                    map: map(NODEPORTS_NO_ENDPOINTS),
                },
            ));
            let to = |base: &str| Match::AddrIn {
                family,
                addr: Addr::Daddr,
                set: map(base),
            };
            let mut live = rule(vec![to(CLUSTER_IPS)], Verdict::Jump(REJECT_CHAIN.to_string()));
            live.comment = Some("a live ClusterIP on a port it does not serve".to_string());
            check.push(live);
            let mut unheld = rule(vec![to(SERVICE_CIDRS)], Verdict::Drop);
            unheld.comment = Some("a service CIDR address no service holds".to_string());
            check.push(unheld);
            firewall.push(rule(
                vec![],
                Verdict::FrontendDispatch {
                    family,
                    map: map(FIREWALL),
                },
            ));
        }
        for (name, rules, text) in [
            (
                SERVICES_CHAIN,
                services,
                "service frontends and NodePorts to their DNAT chains",
            ),
            (
                SERVICES_CHECK_CHAIN,
                check,
                "refuse or drop what DNAT left addressed to a service",
            ),
            (
                FIREWALL_CHAIN,
                firewall,
                "LoadBalancer source ranges, before DNAT",
            ),
        ] {
            self.chains.push(Chain {
                name: name.to_string(),
                hook: None,
                rules,
                comment: text.to_string(),
            });
        }
    }
}
