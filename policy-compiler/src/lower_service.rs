//! Lowering of Services, EndpointSlices and ServiceCIDRs (SPEC 5). An object that breaks a rule
//! of the API becomes a diagnostic naming it and the field, and is left out: its addresses get
//! no NAT (they fall to the drop and reject cases) and nothing else is affected.

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1 as k8s_core;
use k8s_openapi::api::discovery::v1 as k8s_discovery;
use k8s_openapi::api::networking::v1 as k8s_net;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as k8s_meta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::diagnostic::Diagnostic;
use crate::model::{ObjectKey, Protocol, Snapshot};
use crate::service::{
    Endpoint, EndpointSlice, Service, ServicePort, SlicePort, TargetPort, Unproxied,
    DEFAULT_AFFINITY_TIMEOUT, HEADLESS_LABEL, SERVICE_NAME_LABEL, SERVICE_PROXY_NAME_LABEL,
};

/// Lowers services, slices and service CIDRs into the snapshot; what cannot be lowered is
/// reported and left out.
pub fn add_services(
    snap: &mut Snapshot,
    services: &[k8s_core::Service],
    slices: &[k8s_discovery::EndpointSlice],
    cidrs: &[k8s_net::ServiceCIDR],
) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    for s in services {
        match service(s) {
            Ok(svc) => {
                snap.services.insert(svc.key.clone(), svc);
            }
            Err(d) => diags.push(d),
        }
    }
    for s in slices {
        match endpoint_slice(s) {
            Ok(slice) => {
                snap.slices.insert(slice.key.clone(), slice);
            }
            Err(d) => diags.push(d),
        }
    }
    for c in cidrs {
        match service_cidr(c) {
            Ok((name, nets)) => {
                snap.service_cidrs.insert(name, nets);
            }
            Err(d) => diags.push(d),
        }
    }
    diags
}

fn key(kind: &str, meta: &k8s_meta::ObjectMeta) -> Result<ObjectKey, Diagnostic> {
    match meta.name.as_deref() {
        Some(name) if !name.is_empty() => Ok(ObjectKey::new(
            meta.namespace.clone().unwrap_or_else(|| "default".to_string()),
            name,
        )),
        _ => Err(Diagnostic::new(kind, "<unnamed>", "metadata.name is missing")),
    }
}

fn addr(field: &str, text: &str) -> Result<IpAddr, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{field}: {text:?} is not an IP address"))
}

fn number(field: &str, n: i32) -> Result<u16, String> {
    match u16::try_from(n) {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("{field}: {n} is not a port (1-65535)")),
    }
}

fn protocol(field: &str, text: Option<&str>) -> Result<Protocol, String> {
    let text = text.unwrap_or("TCP");
    Protocol::parse(text).ok_or_else(|| format!("{field}: unknown protocol {text:?} (TCP, UDP or SCTP)"))
}

/// Lowers one Service. A service that netfence does not proxy (ExternalName, headless, another
/// proxy's) is kept with the reason, so its addresses are known to be held by none.
pub fn service(s: &k8s_core::Service) -> Result<Service, Diagnostic> {
    let key = key("Service", &s.metadata)?;
    service_body(s, &key).map_err(|reason| {
        Diagnostic::new(
            "Service",
            &key.to_string(),
            &format!("invalid, not proxied: {reason}"),
        )
    })
}

fn service_body(s: &k8s_core::Service, key: &ObjectKey) -> Result<Service, String> {
    let spec = s.spec.clone().unwrap_or_default();
    let labels = s.metadata.labels.clone().unwrap_or_default();
    let type_ = spec.type_.as_deref().unwrap_or("ClusterIP");
    let ip_texts = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.clone(),
        _ => spec.cluster_ip.clone().into_iter().collect(),
    };
    let headless = ip_texts.iter().any(|t| t == "None");
    let unproxied = if type_ == "ExternalName" {
        Some(Unproxied::ExternalName)
    } else if labels.contains_key(SERVICE_PROXY_NAME_LABEL) {
        Some(Unproxied::OtherProxy)
    } else if headless || labels.contains_key(HEADLESS_LABEL) {
        Some(Unproxied::Headless)
    } else if ip_texts.iter().all(|t| t.trim().is_empty()) {
        Some(Unproxied::Unallocated)
    } else {
        None
    };
    let mut svc = Service {
        key: key.clone(),
        unproxied,
        cluster_ips: Vec::new(),
        external_ips: Vec::new(),
        lb_ips: Vec::new(),
        source_ranges: Vec::new(),
        ports: Vec::new(),
        external_local: spec.external_traffic_policy.as_deref() == Some("Local"),
        internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
        affinity: None,
        publish_not_ready: spec.publish_not_ready_addresses.unwrap_or(false),
        selector: spec.selector.clone(),
    };
    if svc.unproxied.is_some() {
        return Ok(svc);
    }
    for (i, t) in ip_texts.iter().enumerate() {
        svc.cluster_ips.push(addr(&format!("spec.clusterIPs[{i}]"), t)?);
    }
    for (i, t) in spec.external_ips.iter().flatten().enumerate() {
        svc.external_ips.push(addr(&format!("spec.externalIPs[{i}]"), t)?);
    }
    let load_balancer = type_ == "LoadBalancer";
    if load_balancer {
        let ingress = s
            .status
            .as_ref()
            .and_then(|st| st.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        for (i, ing) in ingress.into_iter().flatten().enumerate() {
            if ing.ip_mode.as_deref() == Some("Proxy") {
                continue;
            }
            if let Some(t) = &ing.ip {
                svc.lb_ips
                    .push(addr(&format!("status.loadBalancer.ingress[{i}].ip"), t)?);
            }
        }
        for (i, t) in spec.load_balancer_source_ranges.iter().flatten().enumerate() {
            let net: IpNet = t
                .trim()
                .parse()
                .map_err(|_| format!("spec.loadBalancerSourceRanges[{i}]: {t:?} is not a CIDR"))?;
            svc.source_ranges.push(net.trunc());
        }
    }
    let node_ports = type_ == "NodePort" || load_balancer;
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let field = format!("spec.ports[{i}]");
        let port = number(&format!("{field}.port"), p.port)?;
        let target = match &p.target_port {
            None => TargetPort::Number(port),
            Some(IntOrString::Int(n)) => TargetPort::Number(number(&format!("{field}.targetPort"), *n)?),
            Some(IntOrString::String(name)) if name.is_empty() => {
                return Err(format!("{field}.targetPort: empty name"));
            }
            Some(IntOrString::String(name)) => TargetPort::Name(name.clone()),
        };
        let node_port = match p.node_port {
            Some(n) if node_ports => Some(number(&format!("{field}.nodePort"), n)?),
            _ => None,
        };
        svc.ports.push(ServicePort {
            name: p.name.clone().unwrap_or_default(),
            protocol: protocol(&format!("{field}.protocol"), p.protocol.as_deref())?,
            port,
            target,
            node_port,
        });
    }
    if spec.session_affinity.as_deref() == Some("ClientIP") {
        let timeout = spec
            .session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds);
        svc.affinity = Some(match timeout {
            None => DEFAULT_AFFINITY_TIMEOUT,
            Some(t @ 1..=86400) => t as u32,
            Some(t) => {
                return Err(format!(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds: {t} is not within 1-86400"
                ))
            }
        });
    }
    Ok(svc)
}

/// Lowers one EndpointSlice. FQDN slices are reported and left out: NAT has no address for them.
pub fn endpoint_slice(s: &k8s_discovery::EndpointSlice) -> Result<EndpointSlice, Diagnostic> {
    let key = key("EndpointSlice", &s.metadata)?;
    slice_body(s, &key)
        .map_err(|reason| Diagnostic::new("EndpointSlice", &key.to_string(), &format!("ignored: {reason}")))
}

fn slice_body(s: &k8s_discovery::EndpointSlice, key: &ObjectKey) -> Result<EndpointSlice, String> {
    let service = s
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("metadata.labels: no {SERVICE_NAME_LABEL} label"))?;
    let v4 = match s.address_type.as_str() {
        "IPv4" => true,
        "IPv6" => false,
        other => {
            return Err(format!(
                "addressType: {other:?} (only IPv4 and IPv6 slices are proxied)"
            ))
        }
    };
    let mut ports = Vec::new();
    for (i, p) in s.ports.iter().flatten().enumerate() {
        let field = format!("ports[{i}]");
        let Some(n) = p.port else {
            return Err(format!("{field}.port: missing"));
        };
        ports.push(SlicePort {
            name: p.name.clone().unwrap_or_default(),
            protocol: protocol(&format!("{field}.protocol"), p.protocol.as_deref())?,
            port: number(&format!("{field}.port"), n)?,
        });
    }
    let mut endpoints = Vec::new();
    for (i, e) in s.endpoints.iter().enumerate() {
        let field = format!("endpoints[{i}].addresses[0]");
        let Some(text) = e.addresses.first() else {
            return Err(format!("{field}: missing"));
        };
        let a = addr(&field, text)?;
        if a.is_ipv4() != v4 {
            return Err(format!(
                "{field}: {a} disagrees with addressType {}",
                s.address_type
            ));
        }
        let c = e.conditions.clone().unwrap_or_default();
        let ready = c.ready.unwrap_or(true);
        endpoints.push(Endpoint {
            addr: a,
            ready,
            serving: c.serving.unwrap_or(ready),
            terminating: c.terminating.unwrap_or(false),
            node: e.node_name.clone(),
        });
    }
    Ok(EndpointSlice {
        key: key.clone(),
        service: service.clone(),
        ports,
        endpoints,
    })
}

/// Lowers one ServiceCIDR: its name and CIDRs.
pub fn service_cidr(c: &k8s_net::ServiceCIDR) -> Result<(String, Vec<IpNet>), Diagnostic> {
    let name = match c.metadata.name.as_deref() {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => {
            return Err(Diagnostic::new(
                "ServiceCIDR",
                "<unnamed>",
                "metadata.name is missing",
            ))
        }
    };
    let mut nets = Vec::new();
    for (i, t) in c.spec.iter().flat_map(|s| s.cidrs.iter().flatten()).enumerate() {
        match t.trim().parse::<IpNet>() {
            Ok(n) => nets.push(n.trunc()),
            Err(_) => {
                return Err(Diagnostic::new(
                    "ServiceCIDR",
                    &name,
                    &format!("ignored: spec.cidrs[{i}]: {t:?} is not a CIDR"),
                ))
            }
        }
    }
    Ok((name, nets))
}
