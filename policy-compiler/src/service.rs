//! Model types for Service NAT (SPEC 5): the fields of Services, EndpointSlices and ServiceCIDRs
//! that NAT reads, and nothing else.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::{ObjectKey, Protocol};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Services with this label belong to another proxy (SPEC 5).
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// Services with this label are headless whatever their spec says.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// `sessionAffinityConfig.clientIP.timeoutSeconds` when absent.
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;

/// Why a Service gets no NAT rules although it is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Unproxied {
    ExternalName,
    Headless,
    /// Labelled `service.kubernetes.io/service-proxy-name`: another proxy owns it.
    OtherProxy,
    /// No clusterIP yet: the API server assigns one on create, so only offline input has
    /// such a service, and it has no address to answer on.
    Unallocated,
}

impl Unproxied {
    pub fn as_str(self) -> &'static str {
        match self {
            Unproxied::ExternalName => "is of type ExternalName",
            Unproxied::Headless => "is headless",
            Unproxied::OtherProxy => "belongs to another proxy (service-proxy-name)",
            Unproxied::Unallocated => "has no clusterIP",
        }
    }
}

/// A port of a Service. Its endpoints' port comes from the EndpointSlices (which hold
/// `targetPort` resolved per endpoint), matched by name and protocol.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePort {
    /// `""` when the service has one unnamed port.
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    pub target: TargetPort,
    pub node_port: Option<u16>,
}

/// `targetPort`: only read when endpoints are derived from a selector (offline input without
/// EndpointSlices); defaults to `port`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub key: ObjectKey,
    /// `None`: netfence proxies it.
    pub unproxied: Option<Unproxied>,
    pub cluster_ips: Vec<IpAddr>,
    pub external_ips: Vec<IpAddr>,
    /// LoadBalancer ingress IPs, without those in `ipMode: Proxy`.
    pub lb_ips: Vec<IpAddr>,
    /// `loadBalancerSourceRanges`; empty: every source.
    pub source_ranges: Vec<IpNet>,
    pub ports: Vec<ServicePort>,
    /// `externalTrafficPolicy: Local` (only read for NodePort and LoadBalancer services).
    pub external_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// `sessionAffinity: ClientIP`: the timeout in seconds.
    pub affinity: Option<u32>,
    pub publish_not_ready: bool,
    /// `spec.selector`, for deriving endpoints when the input has no EndpointSlice for it.
    pub selector: Option<crate::model::Labels>,
}

/// One port of an EndpointSlice: the service port's name and the number its endpoints serve on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlicePort {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

/// One endpoint of a slice, with its conditions already defaulted (SPEC 5).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    /// The first address (the only one kube-proxy reads).
    pub addr: IpAddr,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub node: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSlice {
    pub key: ObjectKey,
    /// The service's name (label `kubernetes.io/service-name`), in the slice's namespace.
    pub service: String,
    pub ports: Vec<SlicePort>,
    pub endpoints: Vec<Endpoint>,
}

impl EndpointSlice {
    pub fn service_key(&self) -> ObjectKey {
        ObjectKey::new(&self.key.namespace, &self.service)
    }
}
