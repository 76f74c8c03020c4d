//! A fake Kubernetes API server for the agent's tests: plain HTTP, the real list and watch wire
//! format, driven by the test.
//!
//! It serves cluster-wide lists (`limit` and `continue` paging, the list's `resourceVersion`)
//! and watches from a resource version (ADDED, MODIFIED and DELETED events as chunked JSON
//! lines, a BOOKMARK each second a watch is idle when asked for bookmarks). The test changes
//! objects, drops every open watch, compacts the history so a resumed watch gets the ERROR
//! event with status 410 (Gone) a real server sends, refuses a resource with 503 or by closing
//! its connections unanswered, and stops and restarts listening (the API server going away). Each listener lives in a network namespace the test made.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netfence_netns::in_netns;
use serde_json::{json, Value};

/// The resources served, by plural, with their API group path and list kind.
const RESOURCES: [(&str, &str, &str); 4] = [
    ("namespaces", "/api/v1", "NamespaceList"),
    ("pods", "/api/v1", "PodList"),
    ("nodes", "/api/v1", "NodeList"),
    (
        "networkpolicies",
        "/apis/networking.k8s.io/v1",
        "NetworkPolicyList",
    ),
];

#[derive(Default)]
struct Resource {
    objects: BTreeMap<String, Value>,
    /// (resource version, event type, object), oldest first.
    events: Vec<(u64, &'static str, Value)>,
    /// A watch from a version below this one is answered 410 Gone.
    oldest: u64,
}

#[derive(Default)]
struct State {
    rv: u64,
    /// Bumped to end every open watch.
    epoch: u64,
    resources: BTreeMap<&'static str, Resource>,
    /// (plural, "list" or "watch") of every request served.
    requests: Vec<(String, &'static str)>,
    bookmarks: usize,
    /// Resources whose requests are refused, and how.
    refused: Vec<(String, Refusal)>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

struct Listener {
    netns: String,
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// How requests for a resource are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `503 Service Unavailable`, as an overloaded server answers (kube's client retries these
    /// itself, with its own backoff, before the watcher sees an error).
    Unavailable,
    /// The connection is closed without an answer, as a crashing server or a load balancer
    /// with no backend does: the watcher sees the error at once.
    Reset,
}

/// The server. Dropping it stops every listener and ends every watch.
pub struct FakeApi {
    shared: Arc<Shared>,
    listeners: Vec<Listener>,
}

impl std::fmt::Debug for FakeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeApi")
            .field("listeners", &self.listeners.len())
            .finish()
    }
}

fn plural_of(object: &Value) -> Option<&'static str> {
    match object["kind"].as_str()? {
        "Namespace" => Some("namespaces"),
        "Pod" => Some("pods"),
        "Node" => Some("nodes"),
        "NetworkPolicy" => Some("networkpolicies"),
        _ => None,
    }
}

fn key_of(object: &Value) -> String {
    let ns = object["metadata"]["namespace"].as_str().unwrap_or("");
    let name = object["metadata"]["name"].as_str().unwrap_or("");
    format!("{ns}/{name}")
}

fn bind_in(netns: &str, port: u16) -> std::io::Result<TcpListener> {
    in_netns(netns, move || TcpListener::bind(("127.0.0.1", port))).map_err(std::io::Error::other)?
}

impl Default for FakeApi {
    fn default() -> Self {
        FakeApi::new()
    }
}

impl FakeApi {
    pub fn new() -> FakeApi {
        let mut state = State::default();
        for (plural, _, _) in RESOURCES {
            state.resources.insert(plural, Resource::default());
        }
        FakeApi {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                changed: Condvar::new(),
            }),
            listeners: Vec::new(),
        }
    }

    /// Listens on 127.0.0.1 inside `netns`; returns the port.
    pub fn listen(&mut self, netns: &str) -> u16 {
        let listener = bind_in(netns, 0).unwrap_or_else(|e| panic!("listen in {netns}: {e}"));
        let port = listener.local_addr().expect("bound").port();
        let mut l = Listener {
            netns: netns.to_string(),
            port,
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        };
        l.thread = Some(self.accept(listener, Arc::clone(&l.stop)));
        self.listeners.push(l);
        port
    }

    fn accept(&self, listener: TcpListener, stop: Arc<AtomicBool>) -> JoinHandle<()> {
        listener.set_nonblocking(true).expect("nonblocking");
        let shared = Arc::clone(&self.shared);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let shared = Arc::clone(&shared);
                        let stop = Arc::clone(&stop);
                        std::thread::spawn(move || {
                            let _ = serve(stream, &shared, &stop);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        })
    }

    /// The server goes away: listeners close (connections are refused), open watches end.
    pub fn stop(&mut self) {
        for l in &mut self.listeners {
            l.stop.store(true, Ordering::Relaxed);
            if let Some(t) = l.thread.take() {
                let _ = t.join();
            }
        }
        self.drop_watches();
    }

    /// The server comes back on the same ports.
    pub fn restart(&mut self) {
        for i in 0..self.listeners.len() {
            let (netns, port) = (self.listeners[i].netns.clone(), self.listeners[i].port);
            let listener = bind_in(&netns, port).unwrap_or_else(|e| panic!("listen again in {netns}: {e}"));
            let stop = Arc::new(AtomicBool::new(false));
            let thread = self.accept(listener, Arc::clone(&stop));
            self.listeners[i].stop = stop;
            self.listeners[i].thread = Some(thread);
        }
    }

    /// A kubeconfig that points at the listener on `port`.
    pub fn kubeconfig(port: u16) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{port}\nusers:\n- name: fake\n  user:\n    token: fake-token\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\ncurrent-context: fake\n"
        )
    }

    /// Creates or replaces an object (its `kind` says which resource); returns its version.
    pub fn apply(&self, mut object: Value) -> u64 {
        let plural = plural_of(&object).unwrap_or_else(|| panic!("unknown kind in {object}"));
        let mut state = self.shared.state.lock().expect("state");
        state.rv += 1;
        let rv = state.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let resource = state.resources.get_mut(plural).expect("resource");
        let kind = if resource.objects.insert(key_of(&object), object.clone()).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        resource.events.push((rv, kind, object));
        drop(state);
        self.shared.changed.notify_all();
        rv
    }

    /// Deletes an object by kind (`Pod`, ...), namespace ("" for cluster-scoped) and name.
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) {
        let plural = plural_of(&json!({"kind": kind})).unwrap_or_else(|| panic!("unknown kind {kind}"));
        let mut state = self.shared.state.lock().expect("state");
        state.rv += 1;
        let rv = state.rv;
        let resource = state.resources.get_mut(plural).expect("resource");
        if let Some(mut object) = resource.objects.remove(&format!("{namespace}/{name}")) {
            object["metadata"]["resourceVersion"] = json!(rv.to_string());
            resource.events.push((rv, "DELETED", object));
        }
        drop(state);
        self.shared.changed.notify_all();
    }

    /// Ends every open watch; clients resume from their last version.
    pub fn drop_watches(&self) {
        self.shared.state.lock().expect("state").epoch += 1;
        self.shared.changed.notify_all();
    }

    /// Forgets the history (as etcd compaction does) and ends every watch: a client resuming
    /// from any version it holds gets 410 Gone and must list again.
    pub fn expire(&self) {
        let mut state = self.shared.state.lock().expect("state");
        let rv = state.rv + 1;
        for resource in state.resources.values_mut() {
            resource.events.clear();
            resource.oldest = rv;
        }
        state.rv = rv;
        state.epoch += 1;
        drop(state);
        self.shared.changed.notify_all();
    }

    /// How many requests of `verb` ("list" or "watch") were served for `plural`.
    pub fn requests(&self, plural: &str, verb: &str) -> usize {
        let state = self.shared.state.lock().expect("state");
        state
            .requests
            .iter()
            .filter(|(p, v)| p == plural && *v == verb)
            .count()
    }

    /// Answers every request for `plural` with 503 (or serves it again, with `false`).
    pub fn refuse(&self, plural: &str, refuse: bool) {
        self.refuse_with(plural, refuse.then_some(Refusal::Unavailable));
    }

    /// Refuses every request for `plural` this way, or serves it again (`None`).
    pub fn refuse_with(&self, plural: &str, how: Option<Refusal>) {
        let mut state = self.shared.state.lock().expect("state");
        state.refused.retain(|(p, _)| p != plural);
        if let Some(how) = how {
            state.refused.push((plural.to_string(), how));
        }
    }

    /// How many BOOKMARK events were sent.
    pub fn bookmarks(&self) -> usize {
        self.shared.state.lock().expect("state").bookmarks
    }

    /// The current resource version.
    pub fn version(&self) -> u64 {
        self.shared.state.lock().expect("state").rv
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.stop();
    }
}

fn query(target: &str) -> (String, BTreeMap<String, String>) {
    let (path, q) = target.split_once('?').unwrap_or((target, ""));
    let params = q
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (path.to_string(), params)
}

fn respond(stream: &mut TcpStream, status: &str, body: &Value) -> std::io::Result<()> {
    let body = body.to_string();
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

fn chunk(stream: &mut TcpStream, line: &Value) -> std::io::Result<()> {
    let data = format!("{line}\n");
    write!(stream, "{:x}\r\n{data}\r\n", data.len())?;
    stream.flush()
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn serve(stream: TcpStream, shared: &Shared, stop: &AtomicBool) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut stream = stream;
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let (path, params) = query(&target);
    let resource = RESOURCES
        .iter()
        .find(|(plural, prefix, _)| path == format!("{prefix}/{plural}"));
    let Some(&(plural, prefix, list_kind)) = resource else {
        return respond(
            &mut stream,
            "404 Not Found",
            &status(404, "NotFound", &format!("no resource at {path}")),
        );
    };
    let watching = params.get("watch").is_some_and(|v| v == "true" || v == "1");
    shared
        .state
        .lock()
        .expect("state")
        .requests
        .push((plural.to_string(), if watching { "watch" } else { "list" }));
    let refusal = shared
        .state
        .lock()
        .expect("state")
        .refused
        .iter()
        .find(|(p, _)| p == plural)
        .map(|(_, how)| *how);
    match refusal {
        Some(Refusal::Unavailable) => {
            let busy = status(
                503,
                "ServiceUnavailable",
                &format!("{plural} are not served right now"),
            );
            return respond(&mut stream, "503 Service Unavailable", &busy);
        }
        Some(Refusal::Reset) => {
            return stream.shutdown(std::net::Shutdown::Both);
        }
        None => {}
    }
    if !watching {
        let state = shared.state.lock().expect("state");
        let objects = &state.resources[plural].objects;
        let start: usize = params.get("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
        let limit: usize = params
            .get("limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(usize::MAX);
        let items: Vec<&Value> = objects.values().skip(start).take(limit).collect();
        let next = start + items.len();
        let mut metadata = json!({"resourceVersion": state.rv.to_string()});
        if next < objects.len() {
            metadata["continue"] = json!(next.to_string());
        }
        let api_version = prefix.trim_start_matches("/apis/").trim_start_matches("/api/");
        let body =
            json!({"apiVersion": api_version, "kind": list_kind, "metadata": metadata, "items": items});
        drop(state);
        return respond(&mut stream, "200 OK", &body);
    }
    let from: u64 = params
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = params.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )?;
    let mut state = shared.state.lock().expect("state");
    if from < state.resources[plural].oldest {
        drop(state);
        let gone = status(410, "Expired", &format!("too old resource version: {from}"));
        chunk(&mut stream, &json!({"type": "ERROR", "object": gone}))?;
        return write!(stream, "0\r\n\r\n");
    }
    let epoch = state.epoch;
    let mut cursor = from;
    let mut idle_since = Instant::now();
    loop {
        if state.epoch != epoch || stop.load(Ordering::Relaxed) {
            drop(state);
            return write!(stream, "0\r\n\r\n");
        }
        let pending: Vec<(u64, &'static str, Value)> = state.resources[plural]
            .events
            .iter()
            .filter(|(rv, _, _)| *rv > cursor)
            .cloned()
            .collect();
        if let Some((rv, _, _)) = pending.last() {
            cursor = *rv;
        }
        let idle = pending.is_empty() && idle_since.elapsed() >= Duration::from_secs(1);
        let bookmark_rv = state.rv;
        drop(state);
        for (_, kind, object) in pending.iter() {
            chunk(&mut stream, &json!({"type": kind, "object": object}))?;
            idle_since = Instant::now();
        }
        if idle && bookmarks {
            let kind = list_kind.trim_end_matches("List");
            let api_version = prefix.trim_start_matches("/apis/").trim_start_matches("/api/");
            let object = json!({"kind": kind, "apiVersion": api_version,
                                "metadata": {"resourceVersion": bookmark_rv.to_string()}});
            chunk(&mut stream, &json!({"type": "BOOKMARK", "object": object}))?;
            shared.state.lock().expect("state").bookmarks += 1;
            cursor = cursor.max(bookmark_rv);
            idle_since = Instant::now();
        }
        state = shared.state.lock().expect("state");
        if state.resources[plural]
            .events
            .last()
            .is_none_or(|(rv, _, _)| *rv <= cursor)
        {
            state = shared
                .changed
                .wait_timeout(state, Duration::from_millis(250))
                .expect("state")
                .0;
        }
    }
}

/// `GET path` on 127.0.0.1:`port` inside `netns`: the status code and the body, or `None`
/// when nothing answers.
pub fn get(netns: &str, port: u16, path: &str) -> Option<(u16, String)> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    in_netns(netns, move || -> Option<(u16, String)> {
        let mut stream =
            TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(2))
                .ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        stream.write_all(request.as_bytes()).ok()?;
        let mut response = String::new();
        std::io::Read::read_to_string(&mut stream, &mut response).ok()?;
        let code = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
        Some((code, body))
    })
    .ok()
    .flatten()
}
