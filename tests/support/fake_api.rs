//! An in-memory Kubernetes API server behind `kube::Client`, just rich enough for the
//! controller's calls: GET of single objects, JSON patches (finalizers), merge patches
//! (Deployment restarts), server-side apply of objects and of `/status`, and Event creation —
//! and for reflectors (the receiver's configuration source, the controller's view of the
//! receiver's EndpointSlices): lists with a label selector, and watches that stream every later
//! change from the list's `resourceVersion`.
//!
//! The same fake answers a `kube::Client` in the test process ([`FakeApi::client`]) and, over
//! loopback, a real binary given a kubeconfig ([`FakeApi::serve_loopback`]); its lists can be
//! held back ([`FakeApi::hold_lists`]), as a slow or unreachable API server holds them.
//!
//! It keeps state instead of scripting an exact request sequence (tower-test's style), so the
//! tests assert on outcomes — objects, statuses, Events — and survive harmless reordering of
//! calls inside a reconcile. Every request is recorded for assertions.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    sync::{Arc, Mutex},
};

use axum::body::{Body as ResponseBody, Bytes};
use http::{Method, Request, Response, StatusCode};
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::watch;

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    /// The query string as sent, e.g. `labelSelector=...` of a list.
    pub query: String,
    pub body: Value,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    requests: Vec<Recorded>,
    revision: u64,
    // The last change of each object: its revision and whether it was added or modified. A
    // watch sends the object as it is now, so intermediate versions are skipped, as a compacted
    // watch cache does; keeping no history keeps the benchmark's memory honest.
    changes: BTreeMap<String, (u64, &'static str)>,
}

impl State {
    /// Stores `object` under `path` with the next `resourceVersion`, for lists and watches.
    fn store(&mut self, path: &str, mut object: Value) -> Value {
        self.revision += 1;
        if object.is_object() {
            object["metadata"]["resourceVersion"] = json!(self.revision.to_string());
        }
        let kind = match self.objects.insert(path.to_owned(), object.clone()) {
            Some(_) => "MODIFIED",
            None => "ADDED",
        };
        self.changes.insert(path.to_owned(), (self.revision, kind));
        object
    }

    /// The earliest change after `seen` that `path` and `query` select: its revision, kind
    /// and the object now.
    fn next_change(
        &self,
        seen: u64,
        path: &str,
        query: &Query,
    ) -> Option<(u64, &'static str, Value)> {
        self.changes
            .iter()
            .filter(|(_, (revision, _))| *revision > seen)
            .filter(|(object_path, _)| in_collection(object_path, path))
            .filter_map(|(object_path, (revision, kind))| {
                let object = self.objects.get(object_path)?;
                query
                    .selects(object)
                    .then(|| (*revision, *kind, object.clone()))
            })
            .min_by_key(|(revision, _, _)| *revision)
    }
}

/// The fake API server; clones share state.
#[derive(Clone)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
    revisions: Arc<watch::Sender<u64>>,
    // False while lists are held back: they are answered once it is true again.
    lists_open: Arc<watch::Sender<bool>>,
}

impl Default for FakeApi {
    fn default() -> Self {
        FakeApi {
            state: Arc::default(),
            revisions: Arc::new(watch::Sender::new(0)),
            lists_open: Arc::new(watch::Sender::new(true)),
        }
    }
}

/// A kubeconfig whose one context reaches the fake served at `server`
/// ([`FakeApi::serve_loopback`]), for a real binary to watch it.
pub fn kubeconfig(server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\n\
         clusters: [{{ name: fake, cluster: {{ server: \"{server}\" }} }}]\n\
         users: [{{ name: fake, user: {{ token: fake }} }}]\n\
         contexts: [{{ name: fake, context: {{ cluster: fake, user: fake }} }}]\n\
         current-context: fake\n"
    )
}

/// The API path of a namespaced object (`/api/v1/...` for core kinds).
pub fn path_of(api_version: &str, plural: &str, namespace: &str, name: &str) -> String {
    let prefix = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    format!("{prefix}/namespaces/{namespace}/{plural}/{name}")
}

impl FakeApi {
    /// A client whose requests this fake answers.
    pub fn client(&self) -> kube::Client {
        let fake = self.clone();
        let service = tower::service_fn(move |request: Request<Body>| {
            let fake = fake.clone();
            async move { Ok::<_, Infallible>(fake.handle(request).await) }
        });
        kube::Client::new(service, "default")
    }

    /// Serves this fake on a loopback port for the life of the test's runtime; returns its base
    /// URL, for a kubeconfig's `server`.
    pub async fn serve_loopback(&self) -> String {
        let fake = self.clone();
        let app = axum::Router::new().fallback(move |request: Request<ResponseBody>| {
            let fake = fake.clone();
            async move {
                let (parts, body) = request.into_parts();
                let bytes = axum::body::to_bytes(body, usize::MAX)
                    .await
                    .unwrap_or_default();
                fake.answer(parts, bytes).await
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{address}")
    }

    /// Holds every list back (`true`) until released (`false`); watches are not held.
    pub fn hold_lists(&self, held: bool) {
        self.lists_open.send_replace(!held);
    }

    /// Stores an object under `path`.
    pub fn put(&self, path: &str, object: Value) {
        let revision = {
            let mut state = self.state.lock().unwrap();
            state.store(path, object);
            state.revision
        };
        self.revisions.send_replace(revision);
    }

    /// Stores a Secret with string data.
    pub fn put_secret(&self, namespace: &str, name: &str, data: &[(&str, &str)]) {
        self.put_labelled_secret(namespace, name, &[], data);
    }

    /// Stores a Secret with labels and string data.
    pub fn put_labelled_secret(
        &self,
        namespace: &str,
        name: &str,
        labels: &[(&str, &str)],
        data: &[(&str, &str)],
    ) {
        let data: BTreeMap<String, ByteString> = data
            .iter()
            .map(|(key, value)| ((*key).to_owned(), ByteString(value.as_bytes().to_vec())))
            .collect();
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                labels: (!labels.is_empty()).then(|| {
                    labels
                        .iter()
                        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                        .collect()
                }),
                ..Default::default()
            },
            data: Some(data),
            ..Default::default()
        };
        self.put(
            &path_of("v1", "secrets", namespace, name),
            serde_json::to_value(secret).unwrap(),
        );
    }

    /// The object stored under `path`.
    pub fn get(&self, path: &str) -> Option<Value> {
        self.state.lock().unwrap().objects.get(path).cloned()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The reason of every Event occurrence so far: creations, and the patches with which
    /// kube's recorder counts repeats of a recent Event.
    pub fn event_reasons(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|request| request.path.contains("/events"))
            .filter(|request| request.method == Method::POST || request.method == Method::PATCH)
            .filter_map(|request| request.body["reason"].as_str().map(str::to_owned))
            .collect()
    }

    async fn handle(&self, request: Request<Body>) -> Response<ResponseBody> {
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.unwrap_or_default();
        self.answer(parts, bytes).await
    }

    async fn answer(&self, parts: http::request::Parts, bytes: Bytes) -> Response<ResponseBody> {
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let path = parts.uri.path().to_owned();
        let raw_query = parts.uri.query().unwrap_or_default().to_owned();
        let query = Query::parse(&raw_query);
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if parts.method == Method::GET && query.watch {
            return self.watch(path, query);
        }
        if parts.method == Method::GET && is_collection(&path) {
            let _ = self.lists_open.subscribe().wait_for(|open| *open).await;
        }
        let (status, answer, revision) = {
            let mut state = self.state.lock().unwrap();
            state.requests.push(Recorded {
                method: parts.method.clone(),
                path: path.clone(),
                query: raw_query,
                body: body.clone(),
            });
            let (status, answer) = match parts.method {
                Method::GET => match state.objects.get(&path) {
                    Some(object) => (StatusCode::OK, object.clone()),
                    None if is_collection(&path) => (StatusCode::OK, list(&state, &path, &query)),
                    None => not_found(&path),
                },
                Method::POST => {
                    let name = body["metadata"]["name"].as_str().unwrap_or_default();
                    let stored = state.store(&format!("{path}/{name}"), body.clone());
                    (StatusCode::CREATED, stored)
                }
                Method::PATCH => {
                    let (object_path, subresource) = match path.strip_suffix("/status") {
                        Some(object_path) => (object_path.to_owned(), true),
                        None => (path.clone(), false),
                    };
                    let existing = state.objects.get(&object_path).cloned();
                    match patch(existing, &content_type, body, subresource) {
                        Ok(updated) => (StatusCode::OK, state.store(&object_path, updated)),
                        Err(status) => not_found_or(status, &path),
                    }
                }
                _ => (StatusCode::METHOD_NOT_ALLOWED, json!({})),
            };
            (status, answer, state.revision)
        };
        self.revisions.send_replace(revision);
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(ResponseBody::from(serde_json::to_vec(&answer).unwrap()))
            .unwrap()
    }

    /// A watch of the collection at `path`: every change after the query's `resourceVersion`
    /// that matches its label selector, as JSON lines, and the stream stays open.
    fn watch(&self, path: String, query: Query) -> Response<ResponseBody> {
        let from: u64 = query.resource_version.parse().unwrap_or_default();
        let state = Arc::clone(&self.state);
        let revisions = self.revisions.subscribe();
        let lines = futures::stream::unfold((from, revisions), move |(mut seen, mut revisions)| {
            let (state, path, query) = (Arc::clone(&state), path.clone(), query.clone());
            async move {
                loop {
                    let next = {
                        let state = state.lock().unwrap();
                        state.next_change(seen, &path, &query).ok_or(state.revision)
                    };
                    match next {
                        Ok((revision, kind, object)) => {
                            let mut line = json!({ "type": kind, "object": object }).to_string();
                            line.push('\n');
                            let chunk = Ok::<_, Infallible>(Bytes::from(line));
                            return Some((chunk, (revision, revisions)));
                        }
                        Err(latest) => {
                            seen = seen.max(latest);
                            if *revisions.borrow_and_update() <= seen
                                && revisions.changed().await.is_err()
                            {
                                return None;
                            }
                        }
                    }
                }
            }
        });
        Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(ResponseBody::from_stream(lines))
            .unwrap()
    }
}

/// What a list or watch asks for.
#[derive(Clone, Debug, Default)]
struct Query {
    watch: bool,
    resource_version: String,
    labels: Vec<(String, Option<String>)>,
}

impl Query {
    fn parse(query: &str) -> Self {
        let mut parsed = Query::default();
        for (key, value) in form_urlencoded(query) {
            match key.as_str() {
                "watch" => parsed.watch = value == "true" || value == "1",
                "resourceVersion" => parsed.resource_version = value,
                "labelSelector" => {
                    parsed.labels = value
                        .split(',')
                        .filter(|term| !term.is_empty())
                        .map(|term| match term.split_once('=') {
                            Some((key, value)) => (
                                key.to_owned(),
                                Some(value.trim_start_matches('=').to_owned()),
                            ),
                            None => (term.to_owned(), None),
                        })
                        .collect();
                }
                _ => {}
            }
        }
        parsed
    }

    /// True when `object` has every label the selector asks for (`key` or `key=value`).
    fn selects(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        self.labels.iter().all(|(key, value)| match value {
            None => labels.get(key).is_some(),
            Some(value) => labels[key] == json!(value),
        })
    }
}

fn form_urlencoded(query: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://fake/?{query}"))
        .map(|url| url.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

/// Splits an API path into its group-version prefix and the rest.
fn split_path(path: &str) -> Option<(&str, Vec<&str>)> {
    let prefix_segments = if path.starts_with("/apis/") { 3 } else { 2 };
    let mut cut = 0;
    for _ in 0..=prefix_segments {
        cut += path[cut..].find('/').map(|found| found + 1)?;
    }
    let (prefix, rest) = path.split_at(cut - 1);
    Some((
        prefix,
        rest.split('/').filter(|part| !part.is_empty()).collect(),
    ))
}

/// `/api/v1/secrets` or `/api/v1/namespaces/web/secrets`, not an object's path.
fn is_collection(path: &str) -> bool {
    match split_path(path) {
        Some((_, rest)) => rest.len() == 1 || (rest.len() == 3 && rest[0] == "namespaces"),
        None => false,
    }
}

/// True when the object stored at `object_path` is listed by `collection`.
fn in_collection(object_path: &str, collection: &str) -> bool {
    let (Some((prefix, rest)), Some((wanted_prefix, wanted))) =
        (split_path(object_path), split_path(collection))
    else {
        return false;
    };
    if prefix != wanted_prefix {
        return false;
    }
    match (rest.as_slice(), wanted.as_slice()) {
        (["namespaces", namespace, plural, _], ["namespaces", wanted_namespace, wanted_plural]) => {
            namespace == wanted_namespace && plural == wanted_plural
        }
        (["namespaces", _, plural, _], [wanted_plural]) => plural == wanted_plural,
        ([plural, _], [wanted_plural]) => plural == wanted_plural,
        _ => false,
    }
}

fn list(state: &State, path: &str, query: &Query) -> Value {
    let items: Vec<&Value> = state
        .objects
        .iter()
        .filter(|(object_path, object)| in_collection(object_path, path) && query.selects(object))
        .map(|(_, object)| object)
        .collect();
    json!({ "metadata": { "resourceVersion": state.revision.to_string() }, "items": items })
}

fn not_found(path: &str) -> (StatusCode, Value) {
    not_found_or(StatusCode::NOT_FOUND, path)
}

fn not_found_or(status: StatusCode, path: &str) -> (StatusCode, Value) {
    let status_object = json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": format!("{path} answered {status}"), "reason": "NotFound", "code": status.as_u16(),
    });
    (status, status_object)
}

fn patch(
    existing: Option<Value>,
    content_type: &str,
    body: Value,
    subresource: bool,
) -> Result<Value, StatusCode> {
    match content_type {
        "application/json-patch+json" => {
            let mut object = existing.ok_or(StatusCode::NOT_FOUND)?;
            // The API server tests an absent list as null; kube's finalizer helper relies on it.
            if object["metadata"].get("finalizers").is_none() {
                object["metadata"]["finalizers"] = Value::Null;
            }
            let operations: json_patch::Patch =
                serde_json::from_value(body).map_err(|_| StatusCode::BAD_REQUEST)?;
            json_patch::patch(&mut object, &operations)
                .map_err(|_| StatusCode::UNPROCESSABLE_ENTITY)?;
            Ok(object)
        }
        "application/merge-patch+json" => {
            let mut object = existing.ok_or(StatusCode::NOT_FOUND)?;
            json_patch::merge(&mut object, &body);
            Ok(object)
        }
        "application/apply-patch+yaml" if subresource => {
            let mut object = existing.ok_or(StatusCode::NOT_FOUND)?;
            object["status"] = body["status"].clone();
            Ok(object)
        }
        "application/apply-patch+yaml" => {
            let mut applied = secret_string_data_as_data(body);
            let Some(mut object) = existing else {
                return Ok(applied);
            };
            if applied.get("data").is_some() {
                // Apply owns the whole data map of a Secret it sets.
                object["data"] = applied["data"].take();
            }
            json_patch::merge(&mut object, &applied);
            Ok(object)
        }
        _ => Err(StatusCode::UNSUPPORTED_MEDIA_TYPE),
    }
}

// The API server turns `stringData` into base64 `data`; so does the fake.
fn secret_string_data_as_data(mut body: Value) -> Value {
    if body["kind"] == "Secret"
        && let Some(string_data) = body
            .as_object_mut()
            .and_then(|object| object.remove("stringData"))
    {
        let secret: Secret = serde_json::from_value(json!({"stringData": string_data})).unwrap();
        let data: BTreeMap<String, ByteString> = secret
            .string_data
            .unwrap_or_default()
            .into_iter()
            .map(|(key, value)| (key, ByteString(value.into_bytes())))
            .collect();
        body["data"] = serde_json::to_value(data).unwrap();
    }
    body
}
