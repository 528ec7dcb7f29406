//! What the API server answers when an object of the operator's kinds is applied, checked
//! offline: the CRD's OpenAPI schema (`jsonschema`), its CEL rules (`x-kubernetes-validations`,
//! through kube's CEL validator), and strict field validation, which refuses a field the schema
//! does not have (`kubectl apply` does so by default since Kubernetes 1.27). Without the last, a
//! misspelt `matsh:` would be pruned and the route would match every event.

use std::sync::LazyLock;

use kube::core::cel::Validator;
use serde_json::Value;

/// One reason the API server would refuse an object.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct AdmissionError {
    /// The field, as `spec.routes[0].match` (empty for the object itself).
    pub field: String,
    /// What is wrong, in the words of the check that found it.
    pub message: String,
}

/// The fields of `metadata` (ObjectMeta); the CRD schema leaves them to the API server.
const OBJECT_META_FIELDS: [&str; 15] = [
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

struct Kind {
    name: String,
    schema: Value,
    validator: jsonschema::Validator,
}

static KINDS: LazyLock<Vec<Kind>> = LazyLock::new(|| {
    crate::api::crds()
        .into_iter()
        .filter_map(|crd| {
            let version = crd.spec.versions.first()?;
            let schema = version.schema.clone()?.open_api_v3_schema?;
            let schema = serde_json::to_value(schema).ok()?;
            Some(Kind {
                name: crd.spec.names.kind,
                validator: jsonschema::validator_for(&schema).ok()?,
                schema,
            })
        })
        .collect()
});

/// The OpenAPI v3 schema of one of the operator's kinds, as its CRD declares it.
pub fn schema_of(kind: &str) -> Option<&'static Value> {
    KINDS
        .iter()
        .find(|known| known.name == kind)
        .map(|known| &known.schema)
}

/// Every reason the API server would refuse `object` of `kind`: schema errors, unknown fields,
/// then the CEL rules. Empty when it would be admitted (or `kind` is not the operator's).
pub fn admission_errors(kind: &str, object: &Value) -> Vec<AdmissionError> {
    let Some(known) = KINDS.iter().find(|known| known.name == kind) else {
        return Vec::new();
    };
    let mut errors: Vec<AdmissionError> = known
        .validator
        .iter_errors(object)
        .map(|error| AdmissionError {
            field: field_of_pointer(&error.instance_path().to_string()),
            message: error.to_string(),
        })
        .collect();
    unknown_fields(&known.schema, object, "", &mut errors);
    if let Err(cel_errors) = Validator::new().validate(&known.schema, object, None) {
        errors.extend(
            cel_errors
                .into_vec()
                .into_iter()
                .map(|error| AdmissionError {
                    field: error.field_path,
                    message: error.message,
                }),
        );
    }
    errors
}

/// `/spec/routes/0/match` → `spec.routes[0].match`.
fn field_of_pointer(pointer: &str) -> String {
    let mut field = String::new();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if segment.parse::<usize>().is_ok() && !field.is_empty() {
            field.push_str(&format!("[{segment}]"));
        } else {
            if !field.is_empty() {
                field.push('.');
            }
            field.push_str(&segment);
        }
    }
    field
}

/// Fields of `value` that `schema` does not declare, as strict field validation reports them.
fn unknown_fields(schema: &Value, value: &Value, path: &str, errors: &mut Vec<AdmissionError>) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        Value::Object(fields) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|v| v.is_object());
            for (key, child) in fields {
                let field = join(key);
                match (properties.and_then(|p| p.get(key)), additional) {
                    (Some(child_schema), _) => unknown_fields(child_schema, child, &field, errors),
                    (None, Some(child_schema)) => {
                        unknown_fields(child_schema, child, &field, errors);
                    }
                    (None, None) if path.is_empty() && key == "metadata" => {
                        unknown_meta_fields(child, errors);
                    }
                    (None, None) if path.is_empty() && known_at_top(key) => {}
                    (None, None) => errors.push(AdmissionError {
                        message: format!("unknown field {field:?}"),
                        field,
                    }),
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (index, item) in items.iter().enumerate() {
                    unknown_fields(item_schema, item, &format!("{path}[{index}]"), errors);
                }
            }
        }
        _ => {}
    }
}

/// Fields every object has that the CRD schema does not spell out.
fn known_at_top(key: &str) -> bool {
    matches!(key, "apiVersion" | "kind" | "status")
}

/// Fields of `metadata` that ObjectMeta does not have.
fn unknown_meta_fields(meta: &Value, errors: &mut Vec<AdmissionError>) {
    for key in meta
        .as_object()
        .into_iter()
        .flat_map(|fields| fields.keys())
    {
        if !OBJECT_META_FIELDS.contains(&key.as_str()) {
            let field = format!("metadata.{key}");
            errors.push(AdmissionError {
                message: format!("unknown field {field:?}"),
                field,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_become_field_paths() {
        assert_eq!(field_of_pointer(""), "");
        assert_eq!(
            field_of_pointer("/spec/routes/0/match"),
            "spec.routes[0].match"
        );
        assert_eq!(field_of_pointer("/spec/events/1"), "spec.events[1]");
    }

    #[test]
    fn a_misspelt_field_is_unknown_at_its_path() {
        let object = serde_json::json!({
            "apiVersion": "webhooks.strapi-operator.dev/v1alpha1",
            "kind": "StrapiWebhook",
            "metadata": {"name": "site", "namespace": "web", "labelz": {}},
            "spec": {
                "instanceRef": {"name": "cms"},
                "events": ["entry.publish"],
                "sinks": [{"name": "web", "nextjs": {"url": "http://web/api/revalidate"}}],
                "routes": [{"name": "pages", "sink": "web", "matsh": {"events": ["entry.publish"]}}],
            },
        });
        let unknown: Vec<String> = admission_errors("StrapiWebhook", &object)
            .into_iter()
            .map(|error| error.to_string())
            .collect();
        assert_eq!(
            unknown,
            [
                "metadata.labelz: unknown field \"metadata.labelz\"",
                "spec.routes[0].matsh: unknown field \"spec.routes[0].matsh\"",
            ]
        );
    }
}
