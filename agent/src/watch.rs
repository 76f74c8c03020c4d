//! The watchers: one kube-rs watcher per kind, cluster-wide, feeding the writer.
//!
//! Objects arrive untyped and are read one at a time, so one malformed object is logged and
//! skipped instead of failing the list it came in. Each is lowered at once into the compiler's
//! model (the few fields policy needs); the API object, with its managed fields and
//! annotations, is dropped. A watch's first list, and every re-list (after 410 Gone or a
//! broken watch), is passed on object by object between a start and an end, so the cluster state
//! can drop what the list no longer names. Errors are
//! retried with exponential backoff and jitter ([`Retry`]), never by flushing anything.

use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::networking::v1 as net;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::watcher::{self, Event};
use kube::Client;
use policy_compiler::lower;
use policy_compiler::model::{Directions, Policy, PolicyBody};
use policy_compiler::selector::Selector;
use policy_compiler::ObjectKey;

use crate::cluster::{Change, Key, Kind, Object};
use crate::metrics::Metrics;
use crate::writer::Stamped;

/// The first wait after a failure.
const FIRST_WAIT: Duration = Duration::from_millis(100);

/// What a watcher's event says about the connection to the API server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A list is about to be requested (kube's `Init`): nothing has succeeded yet.
    Listing,
    /// A list completed (`InitDone`) or a watch delivered an event: the server answers.
    Succeeded,
    /// An object of a list in progress: says nothing yet about the list.
    Progress,
    /// A list or a watch failed.
    Failed,
}

/// Backoff between failed lists and watches: 100 ms doubling to `max`, each wait drawn from
/// its upper half (jitter, so the agents of a cluster do not retry in step), back to the start
/// only once the server has answered (a list completed, or a watch delivered an event). A list
/// that is started and then fails is a failure: the watcher's `Init` comes before its list
/// request, and resetting on it would retry a failing list every 100 ms forever.
#[derive(Debug)]
pub struct Retry {
    next: Duration,
    max: Duration,
    rng: fastrand::Rng,
}

impl Retry {
    pub fn new(max: Duration, seed: u64) -> Retry {
        Retry {
            next: FIRST_WAIT.min(max),
            max,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// How long to wait before going on after this event, if at all.
    pub fn observe(&mut self, outcome: Outcome) -> Option<Duration> {
        match outcome {
            Outcome::Listing | Outcome::Progress => None,
            Outcome::Succeeded => {
                self.next = FIRST_WAIT.min(self.max);
                None
            }
            Outcome::Failed => {
                let ceiling = self.next;
                self.next = (self.next * 2).min(self.max);
                let low = ceiling / 2;
                let spread = u64::try_from((ceiling - low).as_micros()).unwrap_or(u64::MAX);
                Some(low + Duration::from_micros(self.rng.u64(0..=spread)))
            }
        }
    }
}

/// What an event of the watcher says about the connection.
fn outcome<K>(event: &Result<Event<K>, watcher::Error>) -> Outcome {
    match event {
        Ok(Event::Init) => Outcome::Listing,
        Ok(Event::InitApply(_)) => Outcome::Progress,
        Ok(Event::InitDone | Event::Apply(_) | Event::Delete(_)) => Outcome::Succeeded,
        Err(_) => Outcome::Failed,
    }
}

/// Why an object could not be read.
fn malformed(kind: Kind, obj: &DynamicObject, reason: impl std::fmt::Display) -> String {
    let ns = obj.metadata.namespace.as_deref().unwrap_or("");
    let name = obj.metadata.name.as_deref().unwrap_or("<unnamed>");
    let object = if ns.is_empty() {
        name.to_string()
    } else {
        format!("{ns}/{name}")
    };
    format!("{} {object}: {reason}", kind.as_str())
}

/// Reads one object into the model. A policy that cannot be read still isolates every pod of
/// its namespace in both directions and allows nothing (fail closed, SPEC 2.17): ignoring it
/// would open what it was meant to close.
pub fn convert(kind: Kind, mut obj: DynamicObject) -> Result<(Object, Vec<String>), String> {
    obj.metadata.managed_fields = None;
    obj.metadata.annotations = None;
    let value = serde_json::to_value(&obj).map_err(|e| malformed(kind, &obj, e))?;
    let notes = |d: Vec<policy_compiler::Diagnostic>| d.iter().map(ToString::to_string).collect();
    match kind {
        Kind::Namespace => {
            let ns: core::Namespace = serde_json::from_value(value).map_err(|e| malformed(kind, &obj, e))?;
            let ns = lower::namespace(&ns).map_err(|d| d.to_string())?;
            Ok((Object::Namespace(ns), vec![]))
        }
        Kind::Pod => {
            let pod: core::Pod = serde_json::from_value(value).map_err(|e| malformed(kind, &obj, e))?;
            let (pod, diags) = lower::pod(&pod).map_err(|d| d.to_string())?;
            Ok((Object::Pod(pod), notes(diags)))
        }
        Kind::Node => {
            let node: core::Node = serde_json::from_value(value).map_err(|e| malformed(kind, &obj, e))?;
            let (node, diags) = lower::node(&node).map_err(|d| d.to_string())?;
            Ok((Object::Node(node), notes(diags)))
        }
        Kind::Policy => {
            let read = serde_json::from_value::<net::NetworkPolicy>(value)
                .map_err(|e| malformed(kind, &obj, e))
                .and_then(|p| lower::policy(&p).map_err(|d| d.to_string()));
            match (read, &obj.metadata.namespace, &obj.metadata.name) {
                (Ok(policy), _, _) => {
                    let note = match &policy.body {
                        PolicyBody::Invalid { reason } => vec![format!(
                            "networkpolicies {}: {reason}; it isolates what it selects and allows nothing",
                            policy.key
                        )],
                        PolicyBody::Valid { .. } => vec![],
                    };
                    Ok((Object::Policy(policy), note))
                }
                (Err(reason), Some(ns), Some(name)) if !ns.is_empty() && !name.is_empty() => {
                    let policy = Policy {
                        key: ObjectKey::new(ns.as_str(), name.as_str()),
                        pod_selector: Selector::everything(),
                        directions: Directions {
                            ingress: true,
                            egress: true,
                        },
                        body: PolicyBody::Invalid {
                            reason: reason.clone(),
                        },
                    };
                    Ok((
                        Object::Policy(policy),
                        vec![format!("{reason}; every pod of namespace {ns} is isolated in both directions until it is fixed")],
                    ))
                }
                (Err(reason), _, _) => Err(reason),
            }
        }
    }
}

/// The identity of a deleted object, from its metadata alone.
fn key_of(kind: Kind, obj: &DynamicObject) -> Option<Key> {
    let name = obj.metadata.name.clone().filter(|n| !n.is_empty())?;
    let ns = || obj.metadata.namespace.clone().filter(|n| !n.is_empty());
    Some(match kind {
        Kind::Namespace => Key::Namespace(name),
        Kind::Node => Key::Node(name),
        Kind::Pod => Key::Pod(ObjectKey::new(ns()?, name)),
        Kind::Policy => Key::Policy(ObjectKey::new(ns()?, name)),
    })
}

fn resource(kind: Kind) -> ApiResource {
    match kind {
        Kind::Namespace => ApiResource::erase::<core::Namespace>(&()),
        Kind::Pod => ApiResource::erase::<core::Pod>(&()),
        Kind::Policy => ApiResource::erase::<net::NetworkPolicy>(&()),
        Kind::Node => ApiResource::erase::<core::Node>(&()),
    }
}

/// Watches one kind until the writer is gone. `seed` spreads the retries of this agent's
/// watches, and of the agents of different nodes, apart.
pub async fn watch(
    client: Client,
    kind: Kind,
    changes: Sender<Stamped>,
    metrics: Arc<Metrics>,
    max_backoff: Duration,
    seed: u64,
) {
    let api: Api<DynamicObject> = Api::all_with(client, &resource(kind));
    let mut stream = std::pin::pin!(watcher::watcher(api, watcher::Config::default()));
    let mut retry = Retry::new(max_backoff, seed);
    let read = |obj: DynamicObject| match convert(kind, obj) {
        Ok((object, notes)) => {
            for note in notes {
                tracing::warn!(resource = kind.as_str(), "{note}");
            }
            Some(object)
        }
        Err(reason) => {
            metrics
                .malformed_objects
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(
                resource = kind.as_str(),
                "skipping an object that cannot be read: {reason}"
            );
            None
        }
    };
    let mut listed = 0usize;
    while let Some(event) = stream.next().await {
        let wait = retry.observe(outcome(&event));
        let change = match event {
            Ok(Event::Init) => {
                tracing::info!(resource = kind.as_str(), "listing");
                listed = 0;
                Some(Change::ListStart(kind))
            }
            Ok(Event::InitApply(obj)) => {
                listed += 1;
                read(obj).map(Change::Listed)
            }
            Ok(Event::InitDone) => {
                tracing::info!(resource = kind.as_str(), objects = listed, "listed");
                Some(Change::ListDone(kind))
            }
            Ok(Event::Apply(obj)) => read(obj).map(Change::Apply),
            Ok(Event::Delete(obj)) => key_of(kind, &obj).map(Change::Delete),
            Err(e) => {
                metrics
                    .watch_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let retry_in_ms = wait.map_or(0, |w| w.as_millis());
                tracing::warn!(resource = kind.as_str(), error = %e, retry_in_ms, "watch failed; the table stays as it is, retrying");
                None
            }
        };
        if let Some(change) = change {
            metrics.watch_event(kind);
            let stamped = Stamped {
                change,
                received: Instant::now(),
            };
            if changes.send(stamped).is_err() {
                return;
            }
        }
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: serde_json::Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_pod_is_lowered_and_its_bulk_dropped() {
        let pod = object(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "a", "labels": {"app": "web"},
                         "annotations": {"big": "x"}, "managedFields": [{"manager": "kubectl"}]},
            "spec": {"nodeName": "node-0", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 80}]}]},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}]}
        }));
        let (Object::Pod(pod), notes) = convert(Kind::Pod, pod).unwrap() else {
            panic!("a pod")
        };
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(pod.key, ObjectKey::new("a", "web"));
        assert_eq!(pod.ips, vec!["10.0.0.5".parse::<std::net::IpAddr>().unwrap()]);
        assert_eq!(pod.named_port("http", policy_compiler::Protocol::Tcp), Some(80));
    }

    #[test]
    fn a_malformed_pod_is_an_error_naming_it() {
        let pod = object(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "bad", "namespace": "a"},
            "spec": {"containers": "not a list"}
        }));
        let err = convert(Kind::Pod, pod).unwrap_err();
        assert!(err.starts_with("pods a/bad: "), "{err}");
    }

    #[test]
    fn a_malformed_policy_fails_closed() {
        let policy = object(serde_json::json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "broken", "namespace": "b"},
            "spec": {"podSelector": {}, "ingress": "everything"}
        }));
        let (Object::Policy(policy), notes) = convert(Kind::Policy, policy).unwrap() else {
            panic!("a policy")
        };
        assert_eq!(policy.key, ObjectKey::new("b", "broken"));
        assert!(policy.pod_selector.is_everything());
        assert_eq!(
            policy.directions,
            Directions {
                ingress: true,
                egress: true
            }
        );
        assert!(matches!(policy.body, PolicyBody::Invalid { .. }));
        assert!(notes[0].contains("networkpolicies b/broken"), "{notes:?}");
    }

    #[test]
    fn deletions_need_only_names() {
        let gone = object(
            serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x", "namespace": "a"}}),
        );
        assert_eq!(key_of(Kind::Pod, &gone), Some(Key::Pod(ObjectKey::new("a", "x"))));
        let unnamed = object(serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {}}));
        assert_eq!(key_of(Kind::Pod, &unnamed), None);
    }

    /// The waits after `n` failures, each list started before it fails.
    fn failed_lists(retry: &mut Retry, n: usize) -> Vec<Duration> {
        (0..n)
            .map(|_| {
                assert_eq!(retry.observe(Outcome::Listing), None);
                retry.observe(Outcome::Failed).expect("a failure waits")
            })
            .collect()
    }

    #[test]
    fn failed_lists_back_off_though_each_starts_anew() {
        // Regression: the watcher's Init came before each failing list and reset the backoff,
        // so an unreachable server was asked for lists every 100 ms forever.
        let mut retry = Retry::new(Duration::from_millis(1600), 7);
        let waits = failed_lists(&mut retry, 8);
        let ceilings = [100, 200, 400, 800, 1600, 1600, 1600, 1600];
        for (wait, ceiling) in waits.iter().zip(ceilings) {
            let ms = wait.as_secs_f64() * 1000.0;
            assert!(
                ms >= f64::from(ceiling) / 2.0 && ms <= f64::from(ceiling),
                "{waits:?}"
            );
        }
        // Objects of a list in progress do not reset it; a completed list does.
        assert_eq!(retry.observe(Outcome::Progress), None);
        assert!(retry.observe(Outcome::Failed).unwrap() >= Duration::from_millis(800));
        assert_eq!(retry.observe(Outcome::Succeeded), None);
        assert!(retry.observe(Outcome::Failed).unwrap() <= Duration::from_millis(100));
    }

    #[test]
    fn waits_are_jittered_per_seed() {
        let waits = |seed| failed_lists(&mut Retry::new(Duration::from_secs(5), seed), 10);
        let (a, b) = (waits(1), waits(2));
        assert_ne!(a, b, "two agents do not retry in step");
        assert_eq!(a, waits(1), "a seed gives one sequence");
        let distinct: std::collections::BTreeSet<_> = a[6..].iter().collect();
        assert!(distinct.len() > 1, "waits at the bound still vary: {a:?}");
    }
}
