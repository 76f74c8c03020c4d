//! Reading cluster state from files: YAML (multi-document) or JSON, `kind: List`, directories and
//! stdin (SPEC 1). Objects are parsed into k8s-openapi types, addressed where they have no
//! address, and lowered into a snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1 as k8s_core;
use k8s_openapi::api::discovery::v1 as k8s_discovery;
use k8s_openapi::api::networking::v1 as k8s_net;
use policy_compiler::{endpoints, lower, lower_service, Diagnostic, Snapshot};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

/// What was read: the snapshot, the compiler's diagnostics, and notes for stderr (skipped
/// objects, addresses and nodes that were assigned).
#[derive(Debug)]
pub struct Input {
    pub snapshot: Snapshot,
    /// Problems lowering found in objects it kept or left out (invalid policies among them).
    pub diagnostics: Vec<Diagnostic>,
    pub notes: Vec<String>,
    /// Where each object was read: `"Kind object"` to `file:line` of its document.
    pub locations: BTreeMap<String, String>,
}

impl Input {
    /// A diagnostic with the place its object was read from, when known.
    pub fn locate(&self, d: &Diagnostic) -> String {
        match self.locations.get(&format!("{} {}", d.kind, d.object)) {
            Some(place) => format!("{place}: {d}"),
            None => d.to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Document { path: String, message: String },
    #[error("{path}:{line}:{column}: {kind} {name}: {message}")]
    Object {
        path: String,
        line: usize,
        column: usize,
        kind: String,
        name: String,
        message: String,
    },
    #[error("{0}")]
    Addressing(String),
}

#[derive(Debug, Default)]
struct Objects {
    namespaces: Vec<k8s_core::Namespace>,
    pods: Vec<k8s_core::Pod>,
    policies: Vec<k8s_net::NetworkPolicy>,
    nodes: Vec<k8s_core::Node>,
    services: Vec<k8s_core::Service>,
    slices: Vec<k8s_discovery::EndpointSlice>,
    service_cidrs: Vec<k8s_net::ServiceCIDR>,
    locations: BTreeMap<String, String>,
}

/// One document being read: its file, text, index among the file's YAML documents (`None` for
/// JSON) and the line it starts on.
struct Doc<'a> {
    path: &'a str,
    text: &'a str,
    index: Option<usize>,
    line: usize,
}

impl Doc<'_> {
    /// Where the parser places a type error in this document, by deserialising it again as
    /// `T` straight from the text (the generic first pass loses positions).
    fn typed_error<T: DeserializeOwned>(&self) -> Option<(usize, usize, String)> {
        match self.index {
            Some(i) => {
                let doc = serde_yaml_ng::Deserializer::from_str(self.text).nth(i)?;
                let err = T::deserialize(doc).err()?;
                let loc = err.location()?;
                Some((loc.line(), loc.column(), err.to_string()))
            }
            None => serde_json::from_str::<T>(self.text)
                .err()
                .map(|e| (e.line(), e.column(), e.to_string())),
        }
    }
}

/// The line each YAML document starts on: after each `---` separator, or line 1.
fn document_lines(text: &str) -> Vec<usize> {
    let separators: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with("---"))
        .map(|(i, _)| i + 1)
        .collect();
    let leading = text
        .lines()
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .is_some_and(|l| l.starts_with("---"));
    let mut starts: Vec<usize> = if leading { Vec::new() } else { vec![1] };
    starts.extend(separators.iter().map(|l| l + 1));
    starts
}

/// Reads every path (`-` is stdin) and lowers what they hold.
pub fn load(paths: &[PathBuf]) -> Result<Input, InputError> {
    let mut objects = Objects::default();
    let mut notes = Vec::new();
    for path in expand(paths)? {
        let (name, text) = if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|source| InputError::Read {
                    path: "<stdin>".into(),
                    source,
                })?;
            ("<stdin>".to_string(), text)
        } else {
            let name = path.display().to_string();
            let text = fs::read_to_string(&path).map_err(|source| InputError::Read {
                path: name.clone(),
                source,
            })?;
            (name, text)
        };
        parse_text(&name, &text, &mut objects, &mut notes)?;
    }
    finish(objects, notes)
}

/// Parses one file's text, as JSON when it starts with `{` or `[`, else as YAML documents.
pub fn load_str(name: &str, text: &str) -> Result<Input, InputError> {
    let mut objects = Objects::default();
    let mut notes = Vec::new();
    parse_text(name, text, &mut objects, &mut notes)?;
    finish(objects, notes)
}

/// Addresses what has none, then lowers everything read.
fn finish(mut objects: Objects, mut notes: Vec<String>) -> Result<Input, InputError> {
    assign_addresses(&mut objects.pods, &objects.nodes, &mut notes)?;
    let (mut snapshot, mut diagnostics) = lower::snapshot(
        &objects.namespaces,
        &objects.pods,
        &objects.policies,
        &objects.nodes,
    );
    diagnostics.extend(lower_service::add_services(
        &mut snapshot,
        &objects.services,
        &objects.slices,
        &objects.service_cidrs,
    ));
    notes.extend(derive_slices(&mut snapshot));
    Ok(Input {
        snapshot,
        diagnostics,
        notes,
        locations: objects.locations,
    })
}

/// Offline input may have Services without their EndpointSlices: the endpoints a selector
/// implies are derived, as the endpoint slice controller would write them, and said so.
fn derive_slices(snapshot: &mut Snapshot) -> Vec<String> {
    let mut notes: Vec<String> = snapshot
        .services
        .values()
        .filter_map(|s| {
            let why = s.unproxied?;
            Some(format!(
                "service {}: {}, so netfence makes no NAT rules for it",
                s.key,
                why.as_str()
            ))
        })
        .collect();
    let missing: Vec<_> = snapshot
        .services
        .values()
        .filter(|s| s.unproxied.is_none() && snapshot.slices_of(&s.key).is_empty())
        .cloned()
        .collect();
    for service in missing {
        let slices = endpoints::derive_slices(&service, snapshot.pods.values());
        if slices.is_empty() {
            continue;
        }
        let n: usize = slices.iter().map(|s| s.endpoints.len()).sum();
        notes.push(format!(
            "service {}: no EndpointSlice given, {n} endpoints derived from its selector",
            service.key
        ));
        for slice in slices {
            snapshot.slices.insert(slice.key.clone(), slice);
        }
    }
    notes
}

/// Files in the order given; directories recursively, their `*.yaml`, `*.yml`, `*.json` sorted.
fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, InputError> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            walk(path, &mut out)?;
        } else {
            out.push(path.clone());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), InputError> {
    let read_err = |source| InputError::Read {
        path: dir.display().to_string(),
        source,
    };
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(read_err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

fn parse_text(
    path: &str,
    text: &str,
    objects: &mut Objects,
    notes: &mut Vec<String>,
) -> Result<(), InputError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let value: Value = serde_json::from_str(text).map_err(|e| InputError::Syntax {
            path: path.to_string(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        return add_value(
            &Doc {
                path,
                text,
                index: None,
                line: 1,
            },
            value,
            objects,
            notes,
        );
    }
    let starts = document_lines(text);
    for (i, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value: Value = Deserialize::deserialize(document).map_err(|e| match e.location() {
            Some(loc) => InputError::Syntax {
                path: path.to_string(),
                line: loc.line(),
                column: loc.column(),
                message: e.to_string(),
            },
            None => InputError::Document {
                path: path.to_string(),
                message: e.to_string(),
            },
        })?;
        let line = starts.get(i).copied().unwrap_or(1);
        add_value(
            &Doc {
                path,
                text,
                index: Some(i),
                line,
            },
            value,
            objects,
            notes,
        )?;
    }
    Ok(())
}

fn add_value(
    doc: &Doc,
    value: Value,
    objects: &mut Objects,
    notes: &mut Vec<String>,
) -> Result<(), InputError> {
    if value.is_null() {
        return Ok(());
    }
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>")
        .to_string();
    let namespace = value
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let object = match kind.as_str() {
        "Pod" | "NetworkPolicy" | "Service" | "EndpointSlice" => format!("{namespace}/{name}"),
        _ => name.clone(),
    };
    let object_err = |(line, column, message): (usize, usize, String)| InputError::Object {
        path: doc.path.to_string(),
        line,
        column,
        kind: kind.clone(),
        name: object.clone(),
        message,
    };
    // A type error: where the typed parser puts it, or else the document's first line.
    fn typed<T: DeserializeOwned>(doc: &Doc, value: Value) -> Result<T, (usize, usize, String)> {
        serde_json::from_value(value)
            .map_err(|e| doc.typed_error::<T>().unwrap_or((doc.line, 1, e.to_string())))
    }
    objects
        .locations
        .insert(format!("{kind} {object}"), format!("{}:{}", doc.path, doc.line));
    match kind.as_str() {
        "List" | "NamespaceList" | "PodList" | "NetworkPolicyList" | "NodeList" | "ServiceList"
        | "EndpointSliceList" | "ServiceCIDRList" => {
            let items = match value.get("items") {
                Some(Value::Array(items)) => items.clone(),
                Some(Value::Null) | None => Vec::new(),
                Some(_) => return Err(object_err((doc.line, 1, "items is not a list".to_string()))),
            };
            let item_kind = kind
                .strip_suffix("List")
                .filter(|k| !k.is_empty())
                .map(str::to_string);
            // Items have no document of their own: errors point at the list.
            let list_doc = Doc {
                path: doc.path,
                text: doc.text,
                index: None,
                line: doc.line,
            };
            for mut item in items {
                if let (Some(k), Some(obj)) = (&item_kind, item.as_object_mut()) {
                    obj.entry("kind").or_insert_with(|| Value::String(k.clone()));
                    let version = match k.as_str() {
                        "NetworkPolicy" | "ServiceCIDR" => "networking.k8s.io/v1",
                        "EndpointSlice" => "discovery.k8s.io/v1",
                        _ => "v1",
                    };
                    obj.entry("apiVersion")
                        .or_insert_with(|| Value::String(version.to_string()));
                }
                add_value(&list_doc, item, objects, notes)?;
            }
        }
        "Namespace" => objects.namespaces.push(typed(doc, value).map_err(object_err)?),
        "Pod" => objects.pods.push(typed(doc, value).map_err(object_err)?),
        "NetworkPolicy" => objects.policies.push(typed(doc, value).map_err(object_err)?),
        "Node" => objects.nodes.push(typed(doc, value).map_err(object_err)?),
        "Service" => objects.services.push(typed(doc, value).map_err(object_err)?),
        "EndpointSlice" => objects.slices.push(typed(doc, value).map_err(object_err)?),
        "ServiceCIDR" => objects.service_cidrs.push(typed(doc, value).map_err(object_err)?),
        "" => {
            return Err(InputError::Document {
                path: format!("{}:{}", doc.path, doc.line),
                message: format!("object {name:?} has no kind"),
            })
        }
        other => notes.push(format!(
            "{}:{}: skipping {other} {name}: netfence does not read this kind",
            doc.path, doc.line
        )),
    }
    Ok(())
}

/// Gives pods without `status.podIPs` deterministic addresses: 10.244.N.0/24 for the N-th node
/// (in order of appearance) that has such pods, and fd00:10:244:N::/64 too when the cluster is dual-stack (SPEC 1).
/// The addresses a pod's status lists (`podIPs`, and `podIP`).
fn pod_ips(p: &k8s_core::Pod) -> Vec<String> {
    let status = p.status.as_ref();
    let mut ips: Vec<String> = status
        .and_then(|s| s.pod_ips.as_ref())
        .into_iter()
        .flatten()
        .map(|ip| ip.ip.clone())
        .collect();
    ips.extend(status.and_then(|s| s.pod_ip.clone()));
    ips
}

/// The pod's node: `spec.nodeName`, or the default node (said in a note).
fn node_of(pod: &k8s_core::Pod, name: &str, notes: &mut Vec<String>) -> String {
    match pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
        Some(node) if !node.is_empty() => node,
        _ => {
            notes.push(format!(
                "pod {name}: no spec.nodeName, placed on {}",
                lower::DEFAULT_NODE
            ));
            lower::DEFAULT_NODE.to_string()
        }
    }
}

/// Hands out addresses to pods without any: per node, in order of appearance, a /24 of
/// 10.244.0.0/16 (and a /64 of fd00:10:244::/48 when the cluster is dual-stack), skipping
/// addresses some pod already has. Only nodes with such pods take a /24.
struct Allocator {
    used: BTreeSet<IpAddr>,
    dual_stack: bool,
    node_index: BTreeMap<String, u8>,
    next_host: BTreeMap<String, u16>,
}

impl Allocator {
    fn assign(&mut self, node: &str) -> Result<Vec<IpAddr>, InputError> {
        let count = self.node_index.len();
        if !self.node_index.contains_key(node) && count >= 255 {
            return Err(InputError::Addressing(
                "pods without addresses are spread over more than 255 nodes; give them status.podIPs"
                    .to_string(),
            ));
        }
        let index = *self.node_index.entry(node.to_string()).or_insert(count as u8);
        let host = self.next_host.entry(node.to_string()).or_insert(2);
        let v4 = loop {
            if *host > 254 {
                return Err(InputError::Addressing(format!(
                    "node {node}: more than 253 pods without addresses; give some pods status.podIPs"
                )));
            }
            let candidate = IpAddr::V4(Ipv4Addr::new(10, 244, index, *host as u8));
            *host += 1;
            if self.used.insert(candidate) {
                break candidate;
            }
        };
        let mut ips = vec![v4];
        if self.dual_stack {
            let v6 = Ipv6Addr::new(0xfd00, 0x10, 0x244, u16::from(index), 0, 0, 0, *host - 1);
            if self.used.insert(IpAddr::V6(v6)) {
                ips.push(IpAddr::V6(v6));
            }
        }
        Ok(ips)
    }
}

/// Writes the addresses into the pod's status, as the API server would have.
fn set_pod_ips(pod: &mut k8s_core::Pod, texts: &[String]) {
    let status = pod.status.get_or_insert_with(Default::default);
    status.pod_ips = Some(
        texts
            .iter()
            .map(|ip| k8s_core::PodIP { ip: ip.clone() })
            .collect(),
    );
    status.pod_ip = texts.first().cloned();
}

fn assign_addresses(
    pods: &mut [k8s_core::Pod],
    nodes: &[k8s_core::Node],
    notes: &mut Vec<String>,
) -> Result<(), InputError> {
    let used: BTreeSet<IpAddr> = pods
        .iter()
        .flat_map(pod_ips)
        .filter_map(|ip| ip.parse().ok())
        .collect();
    let dual_stack = used.iter().any(IpAddr::is_ipv6)
        || nodes
            .iter()
            .flat_map(|n| n.spec.iter().flat_map(|s| s.pod_cidrs.iter().flatten()))
            .any(|c| c.contains(':'));
    let mut allocator = Allocator {
        used,
        dual_stack,
        node_index: BTreeMap::new(),
        next_host: BTreeMap::new(),
    };
    for pod in pods.iter_mut() {
        let name = format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or("default"),
            pod.metadata.name.as_deref().unwrap_or("<unnamed>")
        );
        let node = node_of(pod, &name, notes);
        let host_network = pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
        if host_network || !pod_ips(pod).is_empty() {
            continue;
        }
        let texts: Vec<String> = allocator.assign(&node)?.iter().map(ToString::to_string).collect();
        notes.push(format!(
            "pod {name}: no status.podIPs, assigned {}",
            texts.join(", ")
        ));
        set_pod_ips(pod, &texts);
    }
    Ok(())
}
