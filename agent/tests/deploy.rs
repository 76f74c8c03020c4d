//! The deployment manifests: every document parses into its k8s-openapi type with nothing
//! left over (a misspelt field fails), and they agree with each other and with the agent: the
//! role grants exactly what the agent reads, the DaemonSet runs it with NET_ADMIN only, on the
//! host network, with the node name from the downward API and probes on the agent's port.
//! The Containerfile installs the shared libraries the built agent links.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

fn deploy() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy"))
}

/// Every document of every manifest, by kind.
fn documents() -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(deploy()).expect("deploy/") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("manifest");
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let value: Value =
                serde::Deserialize::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let kind = value["kind"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: no kind", path.display()))
                .to_string();
            assert!(out.insert(kind.clone(), value).is_none(), "{kind} twice");
        }
    }
    out
}

/// Parses into `T` and back: a field the type does not know would be lost on the way.
fn typed<T: DeserializeOwned + Serialize>(value: &Value) -> T {
    let object: T =
        serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{}: {e}", value["kind"]));
    let back = serde_json::to_value(&object).expect("serialises");
    assert_eq!(
        &back, value,
        "{} has fields its type does not know, or wrong values",
        value["kind"]
    );
    object
}

#[test]
fn manifests_parse_and_agree() {
    let docs = documents();
    assert_eq!(
        docs.keys().map(String::as_str).collect::<Vec<_>>(),
        ["ClusterRole", "ClusterRoleBinding", "DaemonSet", "ServiceAccount"]
    );
    let sa: ServiceAccount = typed(&docs["ServiceAccount"]);
    let role: ClusterRole = typed(&docs["ClusterRole"]);
    let binding: ClusterRoleBinding = typed(&docs["ClusterRoleBinding"]);
    let ds: DaemonSet = typed(&docs["DaemonSet"]);

    // The role: list and watch (SPEC 6; the watchers never get a single object) on exactly
    // the four resources the agent watches.
    let mut granted = Vec::new();
    for rule in role.rules.as_deref().unwrap_or_default() {
        assert_eq!(rule.verbs, ["list", "watch"]);
        for group in rule.api_groups.as_deref().unwrap_or_default() {
            for resource in rule.resources.as_deref().unwrap_or_default() {
                granted.push(format!("{group}/{resource}"));
            }
        }
    }
    granted.sort();
    assert_eq!(
        granted,
        [
            "/namespaces",
            "/nodes",
            "/pods",
            "networking.k8s.io/networkpolicies"
        ]
    );

    // The binding ties that role to the service account the DaemonSet runs as.
    let sa_name = sa.metadata.name.as_deref().expect("name");
    let sa_ns = sa.metadata.namespace.as_deref().expect("namespace");
    assert_eq!(binding.role_ref.name, role.metadata.name.clone().expect("name"));
    let subjects = binding.subjects.expect("subjects");
    assert_eq!(
        (subjects[0].name.as_str(), subjects[0].namespace.as_deref()),
        (sa_name, Some(sa_ns))
    );
    assert_eq!(ds.metadata.namespace.as_deref(), Some(sa_ns));

    let spec = ds.spec.expect("spec").template.spec.expect("pod spec");
    assert_eq!(spec.service_account_name.as_deref(), Some(sa_name));
    assert_eq!(spec.host_network, Some(true));
    let c = &spec.containers[0];
    let caps = c
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref())
        .expect("capabilities");
    assert_eq!(caps.add.as_deref(), Some(&["NET_ADMIN".to_string()][..]));
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    let env = c.env.as_deref().expect("env");
    let node = env.iter().find(|e| e.name == "NODE_NAME").expect("NODE_NAME");
    let field = node
        .value_from
        .as_ref()
        .and_then(|v| v.field_ref.as_ref())
        .expect("downward API");
    assert_eq!(field.field_path, "spec.nodeName");
    for e in env {
        assert!(
            e.name == "NODE_NAME" || e.name == "RUST_LOG" || e.name.starts_with("NETFENCE_"),
            "{}",
            e.name
        );
    }
    let requests = c
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .expect("requests");
    assert!(requests.contains_key("cpu") && requests.contains_key("memory"));

    // The probes hit the agent's endpoints on the port it serves.
    let addr = env
        .iter()
        .find(|e| e.name == "NETFENCE_METRICS_ADDR")
        .and_then(|e| e.value.clone())
        .expect("address");
    let port: i32 = addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    for (probe, path) in [(&c.liveness_probe, "/healthz"), (&c.readiness_probe, "/readyz")] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("httpGet probe");
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(
            get.port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(port)
        );
    }
}

#[test]
fn the_image_installs_what_the_agent_links() {
    let containerfile = std::fs::read_to_string(deploy().join("Containerfile")).expect("Containerfile");
    let ldd = std::process::Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_netfence-agent"))
        .output()
        .expect("ldd runs");
    let linked = String::from_utf8_lossy(&ldd.stdout);
    // Debian names a library's package after its soname: libnftnl.so.11 is in libnftnl11.
    for (soname, package) in [("libnftnl.so.11", "libnftnl11"), ("libmnl.so.0", "libmnl0")] {
        assert!(linked.contains(soname), "the agent links {soname}: {linked}");
        assert!(containerfile.contains(package), "the image installs {package}");
    }
    assert!(containerfile.contains("-p netfence-agent"));
    assert!(containerfile.contains("ENTRYPOINT [\"/usr/local/bin/netfence-agent\"]"));
}
