//! An in-memory Kubernetes API server behind `kube::Client`, just rich enough for the
//! controller's calls: GET of single objects, JSON patches (finalizers), merge patches
//! (Deployment restarts), server-side apply of objects and of `/status`, and Event creation.
//!
//! Copied from the controller tests' fake (tests/controller/fake_api.rs) and trimmed for the
//! scale benchmark: it counts requests instead of recording them, so its own memory stays flat
//! at 1,000 webhooks.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    sync::{Arc, Mutex},
};

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::client::Body;
use serde_json::{Value, json};

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    requests: u64,
}

/// The fake API server; clones share state.
#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
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

    /// Stores an object under `path`.
    pub fn put(&self, path: &str, object: Value) {
        self.state
            .lock()
            .unwrap()
            .objects
            .insert(path.to_owned(), object);
    }

    /// Stores a Secret with string data.
    pub fn put_secret(&self, namespace: &str, name: &str, data: &[(&str, &str)]) {
        let data: BTreeMap<String, ByteString> = data
            .iter()
            .map(|(key, value)| ((*key).to_owned(), ByteString(value.as_bytes().to_vec())))
            .collect();
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
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

    /// How many requests the controller made so far.
    pub fn requests(&self) -> u64 {
        self.state.lock().unwrap().requests
    }

    async fn handle(&self, request: Request<Body>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let path = parts.uri.path().to_owned();
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let mut state = self.state.lock().unwrap();
        state.requests += 1;
        let (status, answer) = match parts.method {
            Method::GET => match state.objects.get(&path) {
                Some(object) => (StatusCode::OK, object.clone()),
                None => not_found(&path),
            },
            Method::POST => (StatusCode::CREATED, body),
            Method::PATCH => {
                let (object_path, subresource) = match path.strip_suffix("/status") {
                    Some(object_path) => (object_path.to_owned(), true),
                    None => (path.clone(), false),
                };
                let existing = state.objects.get(&object_path).cloned();
                match patch(existing, &content_type, body, subresource) {
                    Ok(updated) => {
                        state.objects.insert(object_path, updated.clone());
                        (StatusCode::OK, updated)
                    }
                    Err(status) => not_found_or(status, &path),
                }
            }
            _ => (StatusCode::METHOD_NOT_ALLOWED, json!({})),
        };
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::to_vec(&answer).unwrap()))
            .unwrap()
    }
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
