//! What goes wrong, and how it is reported: specs that do not compile (with field paths and
//! positions), filters and templates that fail on a particular event (as values, never panics).

use serde_json::json;
use strapi_webhook_operator::{
    api::StrapiWebhookSpec,
    config::{CompiledWebhook, InMemorySecrets, Reason, ValidationErrors, compile_webhook},
    event::EventBody,
    routing::{
        CompiledRoute, FilterError, PathTemplate, Payload, PayloadTemplate, RenderError,
        RouteConfig, RouteMatch,
    },
};

fn spec(yaml: &str) -> StrapiWebhookSpec {
    serde_saphyr::from_str(yaml).unwrap_or_else(|error| panic!("{error}\n{yaml}"))
}

fn secrets() -> InMemorySecrets {
    let mut secrets = InMemorySecrets::new();
    secrets
        .insert("web", "site", "secret", "s3cret")
        .insert(
            "web",
            "slack",
            "url",
            "https://hooks.slack.com/services/T0/B0/X",
        )
        .insert("web", "crm", "token", "t0ken")
        .insert("web", "crm", "signing", "not-a-whsec-secret");
    secrets
}

fn errors(yaml: &str) -> ValidationErrors {
    compile_webhook("web", "hook", 3, &spec(yaml), &secrets()).unwrap_err()
}

/// Field path, reason and message of every problem.
fn listed(errors: &ValidationErrors) -> Vec<(String, Reason, String)> {
    errors
        .iter()
        .map(|error| (error.field.clone(), error.reason, error.message.clone()))
        .collect()
}

const SINKS: &str = r#"
instanceRef: {name: cms}
events: [entry.create, entry.update, entry.publish]
sinks:
  - name: site
    nextjs:
      url: http://127.0.0.1:3000/api/revalidate
      secretRef: {name: site, key: secret}
      mode: Revalidate
  - name: chat
    slack:
      webhookUrlSecretRef: {name: slack, key: url}
"#;

#[test]
fn filter_and_template_syntax_errors_name_the_field_and_position() {
    let errors = errors(&format!(
        r#"{SINKS}
routes:
  - name: ok
    sink: site
    nextjs: {{tags: ["{{{{ model }}}}"]}}
  - name: broken
    sink: site
    filter: "event == 'entry.publish' &&"
    nextjs:
      tags: ["{{{{ model }}}}"]
      paths:
        - path: /articles
        - path: "/articles/{{{{ entry.slug "
  - name: chat
    sink: chat
    filter: "entry.slug != '' && sluggish"
    slack:
      text: "{{% if entry.author %}}New comment"
"#
    ));
    let listed = listed(&errors);
    assert_eq!(
        listed
            .iter()
            .map(|(field, reason, _)| (field.as_str(), *reason))
            .collect::<Vec<_>>(),
        [
            ("spec.routes[1].filter", Reason::RouteInvalid),
            ("spec.routes[1].nextjs.paths[1].path", Reason::RouteInvalid),
            ("spec.routes[2].filter", Reason::RouteInvalid),
            ("spec.routes[2].slack.text", Reason::RouteInvalid),
        ],
        "{errors}"
    );
    // The CEL parser points at the end of the dangling `&&`.
    assert!(
        listed[0].2.starts_with("line 1, column "),
        "{}",
        listed[0].2
    );
    assert!(
        listed[1].2.starts_with("line 1, column "),
        "{}",
        listed[1].2
    );
    // An unknown variable is located where it is used.
    assert_eq!(
        listed[2].2,
        "line 1, column 21: unknown variable `sluggish`; a filter can use event, model, uid, entry, media, createdAt"
    );
    assert!(listed[3].2.contains("line 1"), "{}", listed[3].2);
}

#[test]
fn routes_must_name_an_existing_sink_of_the_right_kind_and_subscribed_events() {
    let errors = errors(&format!(
        r#"{SINKS}
routes:
  - name: nowhere
    sink: website
  - name: wrong-kind
    sink: chat
    nextjs: {{tags: [x]}}
  - name: no-text
    sink: chat
  - name: unsubscribed
    sink: site
    match: {{events: [entry.delete]}}
    nextjs: {{tags: [x]}}
  - name: unsubscribed
    sink: site
    nextjs: {{tags: [x]}}
"#
    ));
    assert_eq!(
        listed(&errors)
            .into_iter()
            .map(|(field, reason, _)| (field, reason))
            .collect::<Vec<_>>(),
        [
            ("spec.routes[0].sink".to_owned(), Reason::SinkUnresolved),
            ("spec.routes[1].nextjs".to_owned(), Reason::RouteInvalid),
            ("spec.routes[2].slack".to_owned(), Reason::RouteInvalid),
            (
                "spec.routes[3].match.events".to_owned(),
                Reason::RouteInvalid
            ),
            ("spec.routes[4].name".to_owned(), Reason::DuplicateName),
        ],
        "{errors}"
    );
    assert!(
        errors
            .to_string()
            .contains("entry.delete is not in spec.events"),
        "{errors}"
    );
}

#[test]
fn a_type_on_a_templated_literal_path_is_a_warning_naming_the_field() {
    let compiled = compile_webhook(
        "web",
        "hook",
        3,
        &spec(&format!(
            r#"{SINKS}
routes:
  - name: site
    sink: site
    nextjs:
      paths:
        - {{path: "/articles/{{{{ entry.slug }}}}", type: page}}
        - {{path: "/articles/{{{{ entry.slug }}}}"}}
        - {{path: "/articles/[slug]", type: page}}
        - {{path: "/", type: layout}}
        - {{path: "/{{{{ entry.locale }}}}/[slug]", type: page}}
        - {{path: "/{{{{ entry.slugs[0] }}}}", type: layout}}
"#
        )),
        &secrets(),
    )
    .expect("a warning does not stop the webhook from compiling");
    let warned: Vec<(&str, Reason)> = compiled
        .warnings
        .iter()
        .map(|warning| (warning.field.as_str(), warning.reason))
        .collect();
    assert_eq!(
        warned,
        [
            (
                "spec.routes[0].nextjs.paths[0].type",
                Reason::PathTypeIgnored
            ),
            (
                "spec.routes[0].nextjs.paths[5].type",
                Reason::PathTypeIgnored
            ),
        ]
    );
    let message = compiled.warnings[0].to_string();
    assert!(
        message.contains("literal path") && message.contains("remove type"),
        "{message}"
    );
}

#[test]
fn sink_problems_are_reported_without_leaking_secret_values() {
    let errors = errors(
        r#"
instanceRef: {name: cms}
events: [entry.create]
sinks:
  - name: crm
    http:
      url: "ftp://crm.example.com"
      headers:
        - name: Authorization
          valueFrom:
            secretKeyRef: {name: crm, key: token}
            prefix: "Bearer "
        - name: X-Missing
          valueFrom:
            secretKeyRef: {name: crm, key: absent}
      signing:
        secretRef: {name: crm, key: signing}
    delivery:
      maxAttempts: 0
      backoff: {initial: 10s, max: 1s}
  - name: ghost
    slack:
      webhookUrlSecretRef: {name: nope, key: url}
routes:
  - name: all
    sink: crm
"#,
    );
    assert_eq!(
        listed(&errors)
            .into_iter()
            .map(|(field, reason, _)| (field, reason))
            .collect::<Vec<_>>(),
        [
            ("spec.sinks[0].http.url".to_owned(), Reason::SinkInvalid),
            (
                "spec.sinks[0].http.headers[1].valueFrom.secretKeyRef".to_owned(),
                Reason::SecretMissing
            ),
            (
                "spec.sinks[0].http.signing.secretRef".to_owned(),
                Reason::SinkInvalid
            ),
            (
                "spec.sinks[1].slack.webhookUrlSecretRef".to_owned(),
                Reason::SecretMissing
            ),
        ],
        "{errors}"
    );
    let text = errors.to_string();
    assert!(
        !text.contains("not-a-whsec-secret") && !text.contains("t0ken"),
        "{text}"
    );
    assert!(text.contains("whsec_"), "{text}");
}

#[test]
fn delivery_policies_are_checked() {
    let errors = errors(&format!(
        r#"{SINKS}
    delivery:
      maxAttempts: 0
      timeout: 0s
      backoff: {{initial: 10s, max: 1s}}
routes:
  - name: chat
    sink: chat
    slack: {{text: hi}}
"#
    ));
    assert_eq!(
        listed(&errors)
            .into_iter()
            .map(|(field, reason, _)| (field, reason))
            .collect::<Vec<_>>(),
        [
            (
                "spec.sinks[1].delivery.maxAttempts".to_owned(),
                Reason::DeliveryInvalid
            ),
            (
                "spec.sinks[1].delivery.timeout".to_owned(),
                Reason::DeliveryInvalid
            ),
            (
                "spec.sinks[1].delivery.backoff".to_owned(),
                Reason::DeliveryInvalid
            ),
        ],
        "{errors}"
    );
}

#[test]
fn compiled_webhooks_can_be_shared_across_tasks() {
    fn shareable<T: Send + Sync>() {}
    shareable::<CompiledWebhook>();
}

fn route(filter: Option<&str>, payload: PayloadTemplate) -> CompiledRoute {
    CompiledRoute::compile(&RouteConfig {
        name: "r".to_owned(),
        sink: "s".to_owned(),
        matches: RouteMatch::default(),
        filter: filter.map(str::to_owned),
        payload,
    })
    .unwrap()
}

fn event(value: serde_json::Value) -> (EventBody, Vec<u8>) {
    let raw = serde_json::to_vec(&value).unwrap();
    (EventBody::parse(&raw).unwrap(), raw)
}

#[test]
fn filters_decide_and_report_failures_as_values() {
    let (published, _) = event(json!({
        "event": "entry.publish", "model": "article", "uid": "api::article.article",
        "entry": {"slug": "hello", "tags": ["rust"], "views": 3}
    }));
    let (null_entry, _) =
        event(json!({"event": "entry.publish", "model": "article", "entry": null}));
    let guarded = route(
        Some("entry != null && entry.slug != '' && 'rust' in entry.tags"),
        PayloadTemplate::Forward,
    );
    assert_eq!(guarded.matches(&published), Ok(true));
    assert_eq!(guarded.matches(&null_entry), Ok(false));

    // cel reads a field of a null map as null, so a null entry simply does not match...
    let on_null = route(Some("entry.slug == 'hello'"), PayloadTemplate::Forward);
    assert_eq!(on_null.matches(&null_entry), Ok(false));
    // ...while a key the entry lacks is an error the receiver reports, not a panic.
    let missing_key = route(Some("entry.title != ''"), PayloadTemplate::Forward);
    assert_eq!(
        missing_key.matches(&published),
        Err(FilterError::Evaluation("no such key `title`".to_owned()))
    );
    let not_bool = route(Some("entry.views + 1"), PayloadTemplate::Forward);
    assert_eq!(
        not_bool.matches(&published),
        Err(FilterError::NotBoolean("number 4".to_owned()))
    );
}

#[test]
fn match_lists_need_the_field_to_be_present() {
    let models = CompiledRoute::compile(&RouteConfig {
        name: "r".to_owned(),
        sink: "s".to_owned(),
        matches: RouteMatch {
            models: Some(vec!["article".to_owned()]),
            uids: None,
            events: Some(vec!["entry.update".to_owned(), "media.create".to_owned()]),
        },
        filter: None,
        payload: PayloadTemplate::Forward,
    })
    .unwrap();
    let (media, _) = event(json!({"event": "media.create", "media": {"id": 1}}));
    let (update, _) = event(json!({"event": "entry.update", "model": "article", "entry": {}}));
    let (publish, _) = event(json!({"event": "entry.publish", "model": "article", "entry": {}}));
    assert_eq!(models.matches(&media), Ok(false));
    assert_eq!(models.matches(&update), Ok(true));
    assert_eq!(models.matches(&publish), Ok(false));
}

#[test]
fn render_failures_say_which_template_and_why() {
    let (lead, raw) =
        event(json!({"event": "entry.create", "model": "lead", "entry": {"name": "Ada"}}));
    let missing_field = route(
        None,
        PayloadTemplate::Http {
            body: Some(r#"{"email": {{ entry.email | tojson }}}"#.to_owned()),
        },
    );
    let Err(RenderError::Template { field, message }) = missing_field.render(&lead, &raw) else {
        panic!("a missing field must fail under strict undefined")
    };
    assert_eq!(field, "http.body");
    assert!(message.contains("missing field"), "{message}");
    let explicit_null = route(
        None,
        PayloadTemplate::Http {
            body: Some(r#"{"email": {{ entry.email | default(none) | tojson }}}"#.to_owned()),
        },
    );
    assert_eq!(
        explicit_null.render(&lead, &raw),
        Ok(Payload::Http {
            body: br#"{"email": null}"#.to_vec()
        })
    );

    // Values print as JSON, so quoting them again makes the body invalid.
    let not_json = route(
        None,
        PayloadTemplate::Http {
            body: Some(r#"{"name": "{{ entry.name }}"}"#.to_owned()),
        },
    );
    assert!(matches!(
        not_json.render(&lead, &raw),
        Err(RenderError::NotJson { field, .. }) if field == "http.body"
    ));

    let blocks_object = route(
        None,
        PayloadTemplate::Slack {
            text: "{{ entry.name }}".to_owned(),
            blocks: Some(r#"{"type": "section"}"#.to_owned()),
        },
    );
    assert!(matches!(
        blocks_object.render(&lead, &raw),
        Err(RenderError::NotJson { field, expected: "a JSON array", .. }) if field == "slack.blocks"
    ));

    let empty = route(
        None,
        PayloadTemplate::Slack {
            text: "{{ entry.name | default('') }}{{ '' }}".replace("entry.name", "entry.nickname"),
            blocks: None,
        },
    );
    assert_eq!(empty.render(&lead, &raw), Err(RenderError::EmptyText));
}

#[test]
fn a_revalidation_with_nothing_left_is_an_error_with_every_reason() {
    let (null_entry, raw) =
        event(json!({"event": "entry.publish", "model": "article", "entry": null}));
    let entry_only = route(
        None,
        PayloadTemplate::Revalidate {
            tags: vec!["article-{{ entry.id }}".to_owned()],
            paths: vec![strapi_webhook_operator::routing::PathTemplate {
                path: "/articles/{{ entry.slug }}".to_owned(),
                kind: None,
            }],
        },
    );
    let Err(RenderError::NothingToRevalidate { skipped }) = entry_only.render(&null_entry, &raw)
    else {
        panic!("nothing can be revalidated without an entry")
    };
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(
        skipped
            .iter()
            .all(|reason| reason.contains("strapi/strapi#25387"))
    );

    let (empty_slug, raw) =
        event(json!({"event": "entry.update", "model": "article", "entry": {"slug": ""}}));
    let Err(RenderError::NothingToRevalidate { skipped }) = entry_only.render(&empty_slug, &raw)
    else {
        panic!("an empty slug must not revalidate /articles/")
    };
    assert!(
        skipped
            .iter()
            .any(|reason| reason.contains("empty segment")),
        "{skipped:?}"
    );
}

#[test]
fn entry_data_cannot_escape_a_json_body() {
    let name = r#"Bob", "admin": true, "x": ""#;
    let (lead, raw) =
        event(json!({"event": "entry.create", "model": "lead", "entry": {"name": name}}));
    let body = |template: &str| {
        route(
            None,
            PayloadTemplate::Http {
                body: Some(template.to_owned()),
            },
        )
        .render(&lead, &raw)
    };
    // Printed values are JSON: the name stays one string.
    let Ok(Payload::Http { body: sent }) = body(r#"{"name": {{ entry.name }}, "role": "user"}"#)
    else {
        panic!("the body renders")
    };
    let sent: serde_json::Value = serde_json::from_slice(&sent).unwrap();
    assert_eq!(sent, json!({"name": name, "role": "user"}));
    // Quoting a printed value (the habit from unescaped templates) is refused, never sent.
    assert!(matches!(
        body(r#"{"name": "{{ entry.name }}", "role": "user"}"#),
        Err(RenderError::NotJson { .. })
    ));
}

#[test]
fn entry_data_cannot_mention_or_link_in_slack_text() {
    let (comment, raw) = event(json!({"event": "entry.create", "model": "comment",
        "entry": {"author": "<!channel> & <https://evil.example|your bank>"}}));
    let slack = route(
        None,
        PayloadTemplate::Slack {
            text: "<https://cms.example/admin|New comment> from {{ entry.author }}".to_owned(),
            blocks: Some(
                r#"[{"type": "section", "text": {"type": "mrkdwn", "text": {{ entry.author | slack_escape }}}}]"#
                    .to_owned(),
            ),
        },
    );
    let Ok(Payload::Slack { text, blocks }) = slack.render(&comment, &raw) else {
        panic!("the message renders")
    };
    assert_eq!(
        text,
        "<https://cms.example/admin|New comment> from &lt;!channel&gt; &amp; \
         &lt;https://evil.example|your bank&gt;"
    );
    assert_eq!(
        blocks.unwrap()[0]["text"]["text"],
        "&lt;!channel&gt; &amp; &lt;https://evil.example|your bank&gt;"
    );
}

#[test]
fn rendered_paths_cannot_leave_their_segment() {
    for slug in [
        "../../admin",
        "..",
        "%2E%2E",
        "x?preview=1",
        "x#top",
        "x\\..\\admin",
    ] {
        let (article, raw) = event(json!({"event": "entry.publish", "model": "article",
            "entry": {"slug": slug}}));
        let revalidate = route(
            None,
            PayloadTemplate::Revalidate {
                tags: Vec::new(),
                paths: vec![PathTemplate {
                    path: "/articles/{{ entry.slug }}".to_owned(),
                    kind: None,
                }],
            },
        );
        match revalidate.render(&article, &raw) {
            Err(RenderError::NothingToRevalidate { skipped }) => assert!(
                skipped[0].starts_with("nextjs.paths[0].path: rendered"),
                "{slug}: {skipped:?}"
            ),
            other => panic!("{slug}: {other:?}"),
        }
    }
    let (article, raw) = event(json!({"event": "entry.publish", "model": "article",
        "entry": {"slug": "https://evil.example/x"}}));
    let absolute = route(
        None,
        PayloadTemplate::Revalidate {
            tags: Vec::new(),
            paths: vec![PathTemplate {
                path: "{{ entry.slug }}".to_owned(),
                kind: None,
            }],
        },
    );
    assert!(matches!(
        absolute.render(&article, &raw),
        Err(RenderError::NothingToRevalidate { .. })
    ));
}
