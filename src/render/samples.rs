//! Built-in sample events for `render --event <name>`: `entry.update:article`,
//! `media.create`, `releases.publish`, ... Content events exist for every content type of the
//! test Strapi (`tests/strapi/src/api`); where Strapi's real payload was recorded
//! (`tests/fixtures/strapi-events`) the sample is that recording, otherwise it is built from the
//! content type's schema the way Strapi 5 fills an entry.

use serde_json::{Map, Value, json};

use crate::api::StrapiEvent;

/// Strapi's recorded payloads, by `<event>-<model>`.
const RECORDED: [(&str, &str); 15] = [
    (
        "entry.create-article",
        include_str!("../../tests/fixtures/strapi-events/entry.create-article.json"),
    ),
    (
        "entry.create-comment",
        include_str!("../../tests/fixtures/strapi-events/entry.create-comment.json"),
    ),
    (
        "entry.create-lead",
        include_str!("../../tests/fixtures/strapi-events/entry.create-lead.json"),
    ),
    (
        "entry.create-settings",
        include_str!("../../tests/fixtures/strapi-events/entry.create-settings.json"),
    ),
    (
        "entry.delete-article",
        include_str!("../../tests/fixtures/strapi-events/entry.delete-article.json"),
    ),
    (
        "entry.delete-comment",
        include_str!("../../tests/fixtures/strapi-events/entry.delete-comment.json"),
    ),
    (
        "entry.delete-lead",
        include_str!("../../tests/fixtures/strapi-events/entry.delete-lead.json"),
    ),
    (
        "entry.delete-settings",
        include_str!("../../tests/fixtures/strapi-events/entry.delete-settings.json"),
    ),
    (
        "entry.publish-article",
        include_str!("../../tests/fixtures/strapi-events/entry.publish-article.json"),
    ),
    (
        "entry.publish-settings",
        include_str!("../../tests/fixtures/strapi-events/entry.publish-settings.json"),
    ),
    (
        "entry.unpublish-article",
        include_str!("../../tests/fixtures/strapi-events/entry.unpublish-article.json"),
    ),
    (
        "entry.unpublish-settings",
        include_str!("../../tests/fixtures/strapi-events/entry.unpublish-settings.json"),
    ),
    (
        "entry.update-article",
        include_str!("../../tests/fixtures/strapi-events/entry.update-article.json"),
    ),
    (
        "entry.update-comment",
        include_str!("../../tests/fixtures/strapi-events/entry.update-comment.json"),
    ),
    (
        "entry.update-lead",
        include_str!("../../tests/fixtures/strapi-events/entry.update-lead.json"),
    ),
];

/// The test Strapi's content types, by model name.
const CONTENT_TYPES: [(&str, &str); 8] = [
    (
        "article",
        include_str!("../../tests/strapi/src/api/article/content-types/article/schema.json"),
    ),
    (
        "category",
        include_str!("../../tests/strapi/src/api/category/content-types/category/schema.json"),
    ),
    (
        "comment",
        include_str!("../../tests/strapi/src/api/comment/content-types/comment/schema.json"),
    ),
    (
        "global",
        include_str!("../../tests/strapi/src/api/global/content-types/global/schema.json"),
    ),
    (
        "homepage",
        include_str!("../../tests/strapi/src/api/homepage/content-types/homepage/schema.json"),
    ),
    (
        "lead",
        include_str!("../../tests/strapi/src/api/lead/content-types/lead/schema.json"),
    ),
    (
        "page",
        include_str!("../../tests/strapi/src/api/page/content-types/page/schema.json"),
    ),
    (
        "settings",
        include_str!("../../tests/strapi/src/api/settings/content-types/settings/schema.json"),
    ),
];

const CREATED_AT: &str = "2026-01-01T12:00:00.000Z";

/// Every sample name, for `--help` and the error on an unknown one.
pub fn names() -> Vec<String> {
    let mut names = Vec::new();
    for event in StrapiEvent::ALL {
        if takes_model(event) {
            names.extend(
                CONTENT_TYPES
                    .iter()
                    .map(|(model, _)| format!("{}:{model}", event.as_str())),
            );
        } else {
            names.push(event.as_str().to_owned());
        }
    }
    names
}

/// The body of sample `name`, or `None` if there is no such sample.
pub fn sample(name: &str) -> Option<Vec<u8>> {
    let (event_name, model) = match name.split_once(':') {
        Some((event, model)) => (event, Some(model)),
        None => (name, None),
    };
    let event = StrapiEvent::from_wire(event_name)?;
    let body = match (takes_model(event), model) {
        (true, Some(model)) => content_event(event, model)?,
        (false, None) => other_event(event),
        _ => return None,
    };
    serde_json::to_vec_pretty(&body).ok()
}

fn takes_model(event: StrapiEvent) -> bool {
    event.as_str().starts_with("entry.") || event == StrapiEvent::ReviewWorkflowsUpdateEntryStage
}

fn content_event(event: StrapiEvent, model: &str) -> Option<Value> {
    let recorded = format!("{}-{model}", event.as_str());
    if let Some((_, text)) = RECORDED.iter().find(|(name, _)| *name == recorded) {
        return serde_json::from_str(text).ok();
    }
    let (_, schema) = CONTENT_TYPES.iter().find(|(name, _)| *name == model)?;
    let schema: Value = serde_json::from_str(schema).ok()?;
    let mut entry = Map::new();
    entry.insert("id".into(), json!(1));
    entry.insert("documentId".into(), json!("sampledocument0000000001"));
    for (field, attribute) in schema["attributes"].as_object()? {
        entry.insert(field.clone(), sample_value(model, field, attribute));
    }
    entry.insert("createdAt".into(), json!(CREATED_AT));
    entry.insert("updatedAt".into(), json!(CREATED_AT));
    let drafts = schema["options"]["draftAndPublish"] == json!(true);
    let published = drafts && event == StrapiEvent::EntryPublish;
    entry.insert(
        "publishedAt".into(),
        if published || !drafts {
            json!(CREATED_AT)
        } else {
            Value::Null
        },
    );
    let mut body = json!({
        "event": event.as_str(),
        "createdAt": CREATED_AT,
        "model": model,
        "uid": format!("api::{model}.{model}"),
        "entry": entry,
    });
    if event == StrapiEvent::ReviewWorkflowsUpdateEntryStage {
        body["workflow"] = json!({"id": 1, "stages": {"from": {"id": 1, "name": "To do"}, "to": {"id": 2, "name": "In progress"}}});
    }
    Some(body)
}

/// A value of the attribute's type, as an editor might have written it.
fn sample_value(model: &str, field: &str, attribute: &Value) -> Value {
    match attribute["type"].as_str().unwrap_or_default() {
        "uid" => json!(format!("sample-{model}")),
        "email" => json!(format!("sample@{model}.example")),
        "integer" | "biginteger" | "decimal" | "float" => json!(1),
        "boolean" => json!(true),
        "date" => json!("2026-01-01"),
        "datetime" => json!(CREATED_AT),
        "json" => json!({}),
        "relation" | "media" | "component" | "dynamiczone" => Value::Null,
        _ => json!(format!("Sample {field}")),
    }
}

fn other_event(event: StrapiEvent) -> Value {
    let media = json!({
        "id": 1,
        "documentId": "samplemedia0000000000001",
        "name": "sample.png",
        "alternativeText": null,
        "caption": null,
        "width": 640,
        "height": 480,
        "hash": "sample_0123456789",
        "ext": ".png",
        "mime": "image/png",
        "size": 12.34,
        "url": "/uploads/sample_0123456789.png",
        "provider": "local",
        "createdAt": CREATED_AT,
        "updatedAt": CREATED_AT,
    });
    match event {
        StrapiEvent::ReleasesPublish => json!({
            "event": event.as_str(),
            "createdAt": CREATED_AT,
            "release": {"id": 1, "documentId": "samplerelease00000000001", "name": "Sample release", "releasedAt": CREATED_AT, "status": "done"},
        }),
        _ => json!({"event": event.as_str(), "createdAt": CREATED_AT, "media": media}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_parses_as_an_event_of_its_name() {
        let names = names();
        assert!(names.contains(&"entry.update:article".to_owned()));
        assert!(names.contains(&"media.create".to_owned()));
        for name in names {
            let body = sample(&name).unwrap_or_else(|| panic!("{name}"));
            let event = crate::event::EventBody::parse(&body).unwrap();
            assert_eq!(event.event, name.split(':').next().unwrap());
            if let Some((_, model)) = name.split_once(':') {
                assert_eq!(event.model.as_deref(), Some(model), "{name}");
                assert!(event.entry.is_some_and(|entry| entry.is_object()), "{name}");
            }
        }
        assert!(sample("entry.update").is_none());
        assert!(sample("entry.update:nothing").is_none());
        assert!(sample("media.create:article").is_none());
    }
}
