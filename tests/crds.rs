//! The CRDs as a real API server sees them: committed YAML in sync with the Rust types,
//! structural schemas, CEL rules that fit the cost budget, and rules that reject the mistakes
//! users make. No API server runs here, so each rule of `kubernetes-api-server-rules` that can be
//! checked offline has a test.

use std::path::{Path, PathBuf};

use kube::core::cel::{ScopeContext, WarningKind, analyze_rule, compile_schema};
use serde_json::{Value, json};
use strapi_webhook_operator::{
    api::{self, StrapiInstance, StrapiWebhook},
    manifests::admission,
    validate,
};

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn schema_of(kind: &str) -> Value {
    admission::schema_of(kind)
        .unwrap_or_else(|| panic!("no CRD for {kind}"))
        .clone()
}

#[test]
fn committed_crds_match_the_types() {
    for crd in api::crds() {
        let name = crd.metadata.name.clone().unwrap();
        let path = repo_path(&format!("crds/{name}.yaml"));
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("{}: {error}; run `make generate`", path.display()));
        assert_eq!(
            committed,
            api::crd_yaml(&crd).unwrap(),
            "{} is out of date; run `make generate` and commit the result",
            path.display()
        );
    }
}

/// Walks every schema node, calling `visit(path, node)`.
fn walk(path: &str, node: &Value, visit: &mut dyn FnMut(&str, &Value)) {
    visit(path, node);
    if let Some(properties) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in properties {
            walk(&format!("{path}.{name}"), child, visit);
        }
    }
    if let Some(items) = node.get("items") {
        walk(&format!("{path}[]"), items, visit);
    }
    if let Some(additional) = node
        .get("additionalProperties")
        .filter(|value| value.is_object())
    {
        walk(&format!("{path}{{}}"), additional, visit);
    }
    for junction in ["allOf", "anyOf", "oneOf"] {
        for (index, child) in node
            .get(junction)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            walk(&format!("{path}.{junction}[{index}]"), child, visit);
        }
    }
}

#[test]
fn schemas_are_structural() {
    for kind in ["StrapiInstance", "StrapiWebhook"] {
        let mut problems = Vec::new();
        walk(kind, &schema_of(kind), &mut |path, node| {
            let untyped_allowed = node.get("x-kubernetes-int-or-string") == Some(&json!(true))
                || node.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
            if node.get("type").is_none() && !untyped_allowed && !path.contains("Of[") {
                problems.push(format!("{path}: no type"));
            }
            if node.get("properties").is_some() && node.get("additionalProperties").is_some() {
                problems.push(format!(
                    "{path}: properties and additionalProperties together"
                ));
            }
            for junction in ["allOf", "anyOf", "oneOf", "not"] {
                for child in node
                    .get(junction)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    for forbidden in [
                        "type",
                        "description",
                        "default",
                        "additionalProperties",
                        "nullable",
                    ] {
                        if child.get(forbidden).is_some() {
                            problems.push(format!("{path}.{junction}: sets {forbidden}"));
                        }
                    }
                }
            }
            if path.ends_with(".metadata")
                && let Some(properties) = node.get("properties").and_then(Value::as_object)
                && properties
                    .keys()
                    .any(|key| key != "name" && key != "generateName")
            {
                problems.push(format!(
                    "{path}: metadata may only constrain name and generateName"
                ));
            }
        });
        assert!(
            problems.is_empty(),
            "{kind} is not structural:\n{}",
            problems.join("\n")
        );
    }
}

#[test]
fn defaults_validate_against_their_own_schema() {
    for kind in ["StrapiInstance", "StrapiWebhook"] {
        walk(kind, &schema_of(kind), &mut |path, node| {
            let Some(default) = node.get("default") else {
                return;
            };
            let mut schema = node.clone();
            schema.as_object_mut().unwrap().remove("default");
            let validator = jsonschema::validator_for(&schema).unwrap();
            assert!(
                validator.is_valid(default),
                "{path}: default {default} fails its own schema"
            );
        });
    }
}

/// Every CEL rule with the schema node it is attached to.
fn rules_of(kind: &str) -> Vec<(String, Value, String)> {
    let mut rules = Vec::new();
    walk(kind, &schema_of(kind), &mut |path, node| {
        for rule in node
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            rules.push((
                path.to_owned(),
                node.clone(),
                rule["rule"].as_str().unwrap().to_owned(),
            ));
        }
    });
    rules
}

fn cost_warnings(node: &Value, rule: &str) -> Vec<String> {
    analyze_rule(rule, &compile_schema(node), ScopeContext::CrdValidation)
        .into_iter()
        .filter(|warning| {
            matches!(
                warning.kind,
                WarningKind::CostExceeded | WarningKind::MissingBounds
            )
        })
        .map(|warning| warning.message)
        .collect()
}

// The `cel` crate evaluates rules but does not compute the API server's cost estimate. kube-cel's
// analysis flags the shape the API server rejects ("estimated rule cost exceeds budget"): a rule
// that walks a list or string without maxItems/maxLength. Our lists and names are bounded by
// design (16 sinks, 64 routes, 63-character names); this test keeps it that way.
#[test]
fn cel_rules_walk_only_bounded_lists_and_strings() {
    let mut count = 0;
    for kind in ["StrapiInstance", "StrapiWebhook"] {
        for (path, node, rule) in rules_of(kind) {
            let warnings = cost_warnings(&node, &rule);
            assert!(warnings.is_empty(), "{path}: `{rule}`: {warnings:?}");
            count += 1;
        }
    }
    assert!(
        count >= 7,
        "expected every CEL rule to be checked, found {count}"
    );
}

#[test]
fn the_cost_check_catches_an_unbounded_list() {
    let spec = schema_of("StrapiWebhook")["properties"]["spec"].clone();
    let mut unbounded = spec.clone();
    unbounded["properties"]["sinks"]
        .as_object_mut()
        .unwrap()
        .remove("maxItems");
    unbounded["properties"]["routes"]
        .as_object_mut()
        .unwrap()
        .remove("maxItems");
    let rule = "self.routes.all(r, self.sinks.exists(s, s.name == r.sink))";
    assert!(cost_warnings(&spec, rule).is_empty());
    assert!(
        !cost_warnings(&unbounded, rule).is_empty(),
        "removing maxItems must be flagged"
    );
}

fn webhook(spec: Value) -> Value {
    json!({
        "apiVersion": "webhooks.strapi-operator.dev/v1alpha1",
        "kind": "StrapiWebhook",
        "metadata": {"name": "site", "namespace": "web"},
        "spec": spec,
    })
}

fn valid_webhook_spec() -> Value {
    json!({
        "instanceRef": {"name": "cms"},
        "events": ["entry.create", "entry.publish"],
        "sinks": [
            {"name": "web", "nextjs": {"url": "http://web/api/revalidate"}},
            {"name": "team", "slack": {"webhookUrlSecretRef": {"name": "slack", "key": "url"}}},
        ],
        "routes": [
            {"name": "pages", "sink": "web", "match": {"events": ["entry.publish"]}},
            {"name": "notify", "sink": "team", "slack": {"text": "New {{ model }}"}},
        ],
    })
}

/// What the API server would answer: schema validation, unknown fields, then the CEL rules
/// (the library's check, which `validate`, local mode and the receiver's file source run).
fn admission_errors(kind: &str, object: &Value) -> Vec<String> {
    admission::admission_errors(kind, object)
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// Refused with `expected` by the admission check, and by `validate` on a file holding the
/// object: the same message, at a line of the file.
fn assert_rejected(kind: &str, object: &Value, expected: &str) {
    let errors = admission_errors(kind, object);
    assert!(
        errors.iter().any(|error| error.contains(expected)),
        "expected an error containing {expected:?}, got {errors:#?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("object.yaml");
    // JSON is YAML; pretty-printed, every field has a line of its own.
    std::fs::write(&file, serde_json::to_string_pretty(object).unwrap()).unwrap();
    let report = validate::validate(&[file]);
    assert!(
        report.errors.iter().any(|problem| {
            let line = problem.to_string();
            problem.line.is_some_and(|line| line > 1)
                && (line.contains(expected)
                    || format!(
                        "{}: {}",
                        problem.field.clone().unwrap_or_default(),
                        problem.reason
                    )
                    .contains(expected))
        }),
        "validate: expected an error containing {expected:?} at a line, got {:#?}",
        report.errors
    );
}

#[test]
fn a_valid_webhook_is_admitted_and_parses() {
    let object = webhook(valid_webhook_spec());
    assert_eq!(
        admission_errors("StrapiWebhook", &object),
        Vec::<String>::new()
    );
    let parsed: StrapiWebhook = serde_json::from_value(object).unwrap();
    assert!(parsed.spec.enabled, "enabled defaults to true");
}

#[test]
fn a_sink_with_two_kinds_is_rejected() {
    let mut spec = valid_webhook_spec();
    spec["sinks"][0]["slack"] = json!({"webhookUrlSecretRef": {"name": "slack", "key": "url"}});
    assert_rejected(
        "StrapiWebhook",
        &webhook(spec),
        "set exactly one of nextjs, slack and http",
    );
}

#[test]
fn a_sink_with_no_kind_is_rejected() {
    let mut spec = valid_webhook_spec();
    spec["sinks"][0].as_object_mut().unwrap().remove("nextjs");
    assert_rejected(
        "StrapiWebhook",
        &webhook(spec),
        "set exactly one of nextjs, slack and http",
    );
}

#[test]
fn a_route_to_an_unknown_sink_is_rejected() {
    let mut spec = valid_webhook_spec();
    spec["routes"][0]["sink"] = json!("crm");
    assert_rejected(
        "StrapiWebhook",
        &webhook(spec),
        "every route's sink must name an entry of sinks",
    );
}

#[test]
fn a_route_whose_payload_does_not_fit_its_sink_is_rejected() {
    let mut spec = valid_webhook_spec();
    spec["routes"][0]["slack"] = json!({"text": "wrong sink"});
    assert_rejected(
        "StrapiWebhook",
        &webhook(spec),
        "must match the kind of the sink",
    );
}

#[test]
fn a_route_matching_an_unsubscribed_event_is_rejected() {
    let mut spec = valid_webhook_spec();
    spec["routes"][0]["match"]["events"] = json!(["entry.delete"]);
    assert_rejected(
        "StrapiWebhook",
        &webhook(spec),
        "a route can only match events listed in spec.events",
    );
}

#[test]
fn an_unknown_event_is_rejected() {
    let mut spec = valid_webhook_spec();
    spec["events"] = json!(["entry.create", "entry.explode"]);
    assert_rejected("StrapiWebhook", &webhook(spec), "spec.events[1]: ");
}

#[test]
fn an_invalid_sink_name_is_rejected() {
    let mut spec = valid_webhook_spec();
    spec["sinks"][0]["name"] = json!("Web_Site");
    assert_rejected("StrapiWebhook", &webhook(spec), "spec.sinks[0].name: ");
}

#[test]
fn a_header_with_both_a_value_and_a_secret_is_rejected() {
    let mut spec = valid_webhook_spec();
    spec["sinks"][1] = json!({"name": "team", "http": {"url": "http://crm", "headers": [
        {"name": "Authorization", "value": "x", "valueFrom": {"secretKeyRef": {"name": "crm", "key": "token"}}}
    ]}});
    spec["routes"][1] = json!({"name": "notify", "sink": "team"});
    assert_rejected(
        "StrapiWebhook",
        &webhook(spec),
        "set exactly one of value and valueFrom",
    );
}

fn instance(spec: Value) -> Value {
    json!({
        "apiVersion": "webhooks.strapi-operator.dev/v1alpha1",
        "kind": "StrapiInstance",
        "metadata": {"name": "cms", "namespace": "web"},
        "spec": spec,
    })
}

#[test]
fn an_instance_needs_exactly_one_kind_of_auth() {
    let valid =
        json!({"url": "http://strapi:1337", "auth": {"credentials": {"secretName": "admin"}}});
    assert_eq!(
        admission_errors("StrapiInstance", &instance(valid.clone())),
        Vec::<String>::new()
    );
    let parsed: StrapiInstance = serde_json::from_value(instance(valid)).unwrap();
    assert_eq!(
        parsed.spec.resync_interval,
        std::time::Duration::from_secs(300)
    );

    let both = json!({"url": "http://strapi:1337", "auth": {
        "credentials": {"secretName": "admin"},
        "apiToken": {"name": "token", "key": "token"},
    }});
    assert_rejected(
        "StrapiInstance",
        &instance(both),
        "set exactly one of apiToken and credentials",
    );
    let neither = json!({"url": "http://strapi:1337", "auth": {}});
    assert_rejected(
        "StrapiInstance",
        &instance(neither),
        "set exactly one of apiToken and credentials",
    );
}

#[test]
fn a_namespace_selector_is_required_for_from_selector() {
    let spec = json!({
        "url": "http://strapi:1337",
        "auth": {"apiToken": {"name": "token", "key": "token"}},
        "allowedNamespaces": {"from": "Selector"},
    });
    assert_rejected(
        "StrapiInstance",
        &instance(spec),
        "selector is required when from is Selector",
    );
}

#[test]
fn an_instance_url_must_be_http() {
    let spec = json!({"url": "strapi:1337", "auth": {"apiToken": {"name": "t", "key": "t"}}});
    assert_rejected("StrapiInstance", &instance(spec), "spec.url: ");
}

/// Every document of our kinds in `examples/`, with the file it came from.
fn example_documents() -> Vec<(String, Value)> {
    let mut documents = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(repo_path("examples"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "yaml")
        })
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let parsed: Vec<Value> = serde_saphyr::from_str_multiple(&text)
            .unwrap_or_else(|error| panic!("{}: {error}", file.display()));
        for document in parsed {
            documents.push((file.display().to_string(), document));
        }
    }
    documents
}

#[test]
fn every_example_is_admitted_by_the_crds() {
    let documents = example_documents();
    let mut checked = 0;
    for (file, document) in &documents {
        let kind = document["kind"].as_str().unwrap_or_default();
        match kind {
            "StrapiInstance" => {
                serde_json::from_value::<StrapiInstance>(document.clone())
                    .unwrap_or_else(|error| panic!("{file}: {error}"));
            }
            "StrapiWebhook" => {
                serde_json::from_value::<StrapiWebhook>(document.clone())
                    .unwrap_or_else(|error| panic!("{file}: {error}"));
            }
            _ => continue,
        }
        let errors = admission_errors(kind, document);
        assert!(
            errors.is_empty(),
            "{file}: {kind} {} rejected: {errors:#?}",
            document["metadata"]["name"]
        );
        checked += 1;
    }
    assert!(
        checked >= 4,
        "expected the instance and the three integrations, checked {checked}"
    );
}
