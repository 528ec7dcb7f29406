//! The statuses the controller writes, read as the GitOps tools read them: Argo CD's health
//! check (`deploy/argocd/health.lua`, run with Debian's `lua5.1`, as Argo CD runs it with
//! gopher-lua, a Lua 5.1) and Flux's kstatus readiness rule (`Ready` with `observedGeneration`
//! equal to `metadata.generation`).

use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
};

use serde_json::Value;

use crate::support::fake_api::FakeApi;

fn repo(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// `value` as a Lua expression: objects become tables with string keys, arrays sequences,
/// `null` nil (as Argo CD's conversion leaves absent fields).
fn lua(value: &Value) -> String {
    match value {
        Value::Null => "nil".to_owned(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => number.to_string(),
        Value::String(text) => lua_string(text),
        Value::Array(items) => format!(
            "{{{}}}",
            items.iter().map(lua).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(fields) => format!(
            "{{{}}}",
            fields
                .iter()
                .filter(|(_, value)| !value.is_null())
                .map(|(key, value)| format!("[{}] = {}", lua_string(key), lua(value)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn lua_string(text: &str) -> String {
    let mut quoted = String::from("\"");
    for character in text.chars() {
        match character {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            other => quoted.push(other),
        }
    }
    quoted.push('"');
    quoted
}

/// Argo CD's verdict on `object`: its health status and message.
pub fn argo_health(object: &Value) -> (String, String) {
    let script = format!(
        "obj = {}\nlocal function health()\n{}\nend\nlocal hs = health()\nio.write(hs.status, \"\\n\", hs.message or \"\")\n",
        lua(object),
        repo("deploy/argocd/health.lua")
    );
    let mut child = Command::new("lua5.1")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("lua5.1 is installed by scripts/test-deps.sh");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "lua5.1 failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let (status, message) = text.split_once('\n').unwrap_or((&text, ""));
    (status.to_owned(), message.to_owned())
}

/// Asserts Argo CD's health of `object` is `expected`.
pub fn assert_argo_health(object: &Value, expected: &str) {
    let (status, message) = argo_health(object);
    assert_eq!(status, expected, "{message}\n{:#}", object["status"]);
}

/// Flux's readiness rule over every status the controller wrote through `api`: each has a
/// `Ready` condition, and it and the status carry the object's current `metadata.generation`.
pub fn assert_flux_ready_rule(api: &FakeApi) {
    let writes: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|request| request.path.ends_with("/status") && request.body.get("status").is_some())
        .collect();
    assert!(!writes.is_empty(), "the controller wrote no status");
    for write in writes {
        let object = api.get(
            write
                .path
                .trim_end_matches("/status")
                .split('?')
                .next()
                .unwrap(),
        );
        let Some(object) = object else { continue };
        let generation = &object["metadata"]["generation"];
        let status = &write.body["status"];
        let ready = status["conditions"]
            .as_array()
            .and_then(|conditions| {
                conditions
                    .iter()
                    .find(|condition| condition["type"] == "Ready")
            })
            .unwrap_or_else(|| panic!("{}: no Ready condition in {status:#}", write.path));
        assert_eq!(
            &ready["observedGeneration"], generation,
            "{}: {ready:#}",
            write.path
        );
        assert_eq!(
            &status["observedGeneration"], generation,
            "{}: {status:#}",
            write.path
        );
    }
}

#[test]
fn the_health_check_in_argocd_cm_is_the_tested_script() {
    let script = repo("deploy/argocd/health.lua");
    let config: Value = serde_saphyr::from_str(&repo("deploy/argocd/argocd-cm.yaml")).unwrap();
    for kind in ["StrapiInstance", "StrapiWebhook"] {
        let key = format!("resource.customizations.health.webhooks.strapi-operator.dev_{kind}");
        assert_eq!(
            config["data"][&key].as_str(),
            Some(script.as_str()),
            "{key}"
        );
    }
}

#[test]
fn an_object_without_a_status_or_with_an_old_one_is_progressing() {
    let object = serde_json::json!({"metadata": {"name": "x", "generation": 2}});
    assert_argo_health(&object, "Progressing");
    let old = serde_json::json!({
        "metadata": {"name": "x", "generation": 2},
        "status": {"observedGeneration": 1, "conditions": [
            {"type": "Ready", "status": "True", "reason": "Ready", "message": "ok", "observedGeneration": 1}
        ]}
    });
    assert_argo_health(&old, "Progressing");
}
