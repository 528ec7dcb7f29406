//! Routing: which events a route takes and what it sends. A [`CompiledRoute`] is built once from
//! a plain [`RouteConfig`] (no Kubernetes types), with its CEL filter and minijinja templates
//! compiled up front so every mistake is a [`CompileError`] with a position at load time. At
//! delivery time the receiver asks [`CompiledRoute::matches`] and [`CompiledRoute::render`];
//! both report failures as values and never panic.

mod filter;
pub mod sandbox;
mod template;

use std::{collections::HashMap, fmt};

use minijinja::Value as TemplateValue;
use serde::Serialize;
use serde_json::Value as Json;

use crate::event::EventBody;
use filter::Filter;
pub use filter::{
    ASSUMED_EVENT_LIST_LENGTH, FILTER_COST_BUDGET, FILTER_VARIABLES, FilterError, MAX_FILTER_CHARS,
    MAX_FILTER_DEPTH,
};
use template::Templates;
pub use template::{MAX_RENDERED_BYTES, TEMPLATE_FUEL};

/// A route as configured: where it sends, which events it takes and what it renders.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteConfig {
    /// Unique name within its webhook.
    pub name: String,
    /// Name of the sink the route delivers to.
    pub sink: String,
    /// Conditions on the event's name, model and uid.
    pub matches: RouteMatch,
    /// Optional CEL expression that must be true; see [`FILTER_VARIABLES`].
    pub filter: Option<String>,
    /// What is sent, which depends on the kind (and for Next.js the mode) of the sink.
    pub payload: PayloadTemplate,
}

/// Conditions on an event. A list that is set must contain the event's value; `None` matches
/// everything, including events that lack the field (media events have no model).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct RouteMatch {
    /// Model names as Strapi sends them, e.g. `article`.
    pub models: Option<Vec<String>>,
    /// Content-type uids, e.g. `api::article.article`.
    pub uids: Option<Vec<String>>,
    /// Event names, e.g. `entry.publish`.
    pub events: Option<Vec<String>>,
}

/// The templates of what a route sends.
#[derive(Clone, Debug, PartialEq)]
pub enum PayloadTemplate {
    /// Strapi's payload unchanged (Next.js `Forward` mode).
    Forward,
    /// Tags and paths for a Next.js sink in `Revalidate` mode; each string is a template.
    Revalidate {
        /// Tag templates.
        tags: Vec<String>,
        /// Path templates.
        paths: Vec<PathTemplate>,
    },
    /// A Slack message.
    Slack {
        /// Message text template.
        text: String,
        /// Optional template rendering to a JSON array of Block Kit blocks.
        blocks: Option<String>,
    },
    /// An HTTP request body.
    Http {
        /// Template rendering to the JSON body; `None` sends Strapi's payload unchanged.
        body: Option<String>,
    },
}

/// A path template for `revalidatePath`.
#[derive(Clone, Debug, PartialEq)]
pub struct PathTemplate {
    /// The template, e.g. `/articles/{{ entry.slug }}`.
    pub path: String,
    /// `None` for a literal path; page or layout for a route pattern.
    pub kind: Option<PathKind>,
}

/// The second argument of Next.js's `revalidatePath`, which only route patterns take.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum PathKind {
    /// Every page of a route pattern such as `/articles/[slug]`.
    Page,
    /// A layout and every page below it.
    Layout,
}

/// A rendered path, serialised as Next.js handlers expect: `{"path": "/articles/x"}` for a
/// literal path, `{"path": "/articles/[slug]", "type": "page"}` for a route pattern.
#[derive(Serialize, Clone, Debug, PartialEq, Eq, Hash)]
pub struct RevalidatePath {
    /// The path, starting with `/`.
    pub path: String,
    /// Sent only when set: Next.js ignores a literal path that comes with a type.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<PathKind>,
}

/// What one delivery sends, per sink kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    /// Strapi's bytes, unchanged.
    Forward(Vec<u8>),
    /// Next.js revalidation. Several of these for one sink may be merged into one call.
    Revalidate {
        /// Cache tags, deduplicated, in template order.
        tags: Vec<String>,
        /// Paths, deduplicated, in template order.
        paths: Vec<RevalidatePath>,
        /// Tags and paths left out for this event, each with the reason (e.g. a `null` entry).
        skipped: Vec<String>,
    },
    /// A Slack incoming-webhook message.
    Slack {
        /// Message text (the notification fallback when `blocks` is set).
        text: String,
        /// Block Kit blocks, a JSON array.
        blocks: Option<Json>,
    },
    /// An HTTP request body (JSON).
    Http {
        /// The body bytes.
        body: Vec<u8>,
    },
}

/// Where in a template or filter a problem is; both 1-based.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` in `source`.
    pub fn of_offset(source: &str, offset: usize) -> Self {
        // Offsets come from parsers that report char boundaries; clamp rather than panic anyway.
        let before = source.get(..offset).unwrap_or(source);
        let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
        Self {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }

    /// The first place `name` appears in `source` as a whole identifier.
    pub fn of_identifier(source: &str, name: &str) -> Option<Self> {
        let is_ident = |c: char| c.is_alphanumeric() || c == '_';
        source
            .match_indices(name)
            .find(|(start, _)| {
                let before = source[..*start].chars().next_back();
                let after = source[start + name.len()..].chars().next();
                !before.is_some_and(|c| is_ident(c) || c == '.') && !after.is_some_and(is_ident)
            })
            .map(|(start, _)| Self::of_offset(source, start))
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// A filter or template that does not compile.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{field}{}: {message}", .position.map(|p| format!(" at {p}")).unwrap_or_default())]
pub struct CompileError {
    /// The route field, as in the CRD: `filter`, `slack.text`, `nextjs.paths[1].path`, ...
    pub field: String,
    /// Where in the field's text, when known.
    pub position: Option<Position>,
    /// What is wrong.
    pub message: String,
}

impl CompileError {
    /// `name`, used in `source` (the text of `field`), is none of the variables filters and
    /// templates can use; `user` says which of them used it, and `also` what else it may use.
    pub(crate) fn unknown_variable(
        field: &str,
        source: &str,
        name: &str,
        user: &str,
        also: &str,
    ) -> Self {
        CompileError {
            field: field.to_owned(),
            position: Position::of_identifier(source, name),
            message: format!(
                "unknown variable `{name}`; a {user} can use {}{also}",
                filter::FILTER_VARIABLES.join(", ")
            ),
        }
    }
}

/// Why a route could not produce a payload for an event; the delivery is dead-lettered with it.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RenderError {
    /// A template failed on this event, e.g. it used a field the entry lacks.
    #[error("template {field} failed: {message}")]
    Template {
        /// The route field whose template failed.
        field: String,
        /// minijinja's reason.
        message: String,
    },
    /// `slack.blocks` or `http.body` rendered to something that is not the JSON it must be.
    #[error("template {field} did not render {expected}: {message}")]
    NotJson {
        /// The route field.
        field: String,
        /// What it must render to.
        expected: &'static str,
        /// The parse error.
        message: String,
    },
    /// Slack rejects a message without text, so it is never sent.
    #[error("template slack.text rendered an empty message")]
    EmptyText,
    /// Every tag and path was skipped for this event, so there is nothing to revalidate.
    #[error("nothing to revalidate: {}", .skipped.join("; "))]
    NothingToRevalidate {
        /// Why each tag and path was left out.
        skipped: Vec<String>,
    },
}

/// A route ready to match and render events. Build it with [`CompiledRoute::compile`].
#[derive(Debug)]
pub struct CompiledRoute {
    name: String,
    sink: String,
    matches: RouteMatch,
    filter: Option<Filter>,
    payload: PayloadTemplate,
    templates: Templates,
}

impl CompiledRoute {
    /// Compiles the filter and every template; returns every problem found, not just the first.
    pub fn compile(config: &RouteConfig) -> Result<Self, Vec<CompileError>> {
        let mut errors = Vec::new();
        let filter = match config
            .filter
            .as_deref()
            .map(|source| Filter::compile("filter", source))
        {
            Some(Ok(filter)) => Some(filter),
            Some(Err(mut found)) => {
                errors.append(&mut found);
                None
            }
            None => None,
        };
        let mut templates = Templates::new();
        for (field, source) in template_fields(&config.payload) {
            if let Err(error) = templates.add(&field, source) {
                errors.push(error);
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            name: config.name.clone(),
            sink: config.sink.clone(),
            matches: config.matches.clone(),
            filter,
            payload: config.payload.clone(),
            templates,
        })
    }

    /// The route's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name of the sink it delivers to.
    pub fn sink(&self) -> &str {
        &self.sink
    }

    /// True when the route has a CEL filter (tenant code, see [`CompiledRoute::matches`]).
    pub fn has_filter(&self) -> bool {
        self.filter.is_some()
    }

    /// True when rendering runs templates (tenant code, see [`CompiledRoute::render`]).
    pub fn has_templates(&self) -> bool {
        !template_fields(&self.payload).is_empty()
    }

    /// True when the event passes the match lists (the filter aside); cheap.
    pub fn listed(&self, event: &EventBody) -> bool {
        let listed = |list: &Option<Vec<String>>, value: Option<&str>| match list {
            None => true,
            Some(list) => value.is_some_and(|value| list.iter().any(|item| item == value)),
        };
        listed(&self.matches.events, Some(&event.event))
            && listed(&self.matches.models, event.model.as_deref())
            && listed(&self.matches.uids, event.uid.as_deref())
    }

    /// True when the event passes the match lists and the filter.
    pub fn matches(&self, event: &EventBody) -> Result<bool, FilterError> {
        if !self.listed(event) {
            return Ok(false);
        }
        match &self.filter {
            Some(filter) => filter.evaluate(&EventVars::new(event)),
            None => Ok(true),
        }
    }

    /// Renders what this route sends for `event`; `raw` is the body exactly as Strapi sent it.
    pub fn render(&self, event: &EventBody, raw: &[u8]) -> Result<Payload, RenderError> {
        let context = EventVars::new(event).template_context();
        // Every template of the payload at once: in a tenant process, a delivery is one round
        // trip, not one per tag or path.
        let mut rendered: HashMap<&str, Result<String, String>> =
            self.templates.render_all(&context).into_iter().collect();
        let mut take = |field: &str| {
            rendered
                .remove(field)
                .unwrap_or_else(|| Err(format!("{field} was not rendered")))
        };
        let mut render = |field: &str| {
            take(field).map_err(|message| RenderError::Template {
                field: field.to_owned(),
                message,
            })
        };
        match &self.payload {
            PayloadTemplate::Forward => Ok(Payload::Forward(raw.to_vec())),
            PayloadTemplate::Http { body: None } => Ok(Payload::Http { body: raw.to_vec() }),
            PayloadTemplate::Http { body: Some(_) } => {
                let body = render("http.body")?;
                parse_json("http.body", "a JSON document", &body)?;
                Ok(Payload::Http {
                    body: body.into_bytes(),
                })
            }
            PayloadTemplate::Slack { blocks, .. } => {
                let text = render("slack.text")?;
                if text.trim().is_empty() {
                    return Err(RenderError::EmptyText);
                }
                let blocks = match blocks {
                    Some(_) => {
                        let blocks =
                            parse_json("slack.blocks", "a JSON array", &render("slack.blocks")?)?;
                        if !blocks.is_array() {
                            return Err(RenderError::NotJson {
                                field: "slack.blocks".to_owned(),
                                expected: "a JSON array",
                                message: format!("got {}", json_kind(&blocks)),
                            });
                        }
                        Some(blocks)
                    }
                    None => None,
                };
                Ok(Payload::Slack { text, blocks })
            }
            PayloadTemplate::Revalidate { tags, paths } => {
                Self::render_revalidation(event, &mut take, tags.len(), paths)
            }
        }
    }

    /// The revalidation of `event`, from its tags and paths as `rendered` gives them.
    fn render_revalidation(
        event: &EventBody,
        rendered: &mut impl FnMut(&str) -> Result<String, String>,
        tag_count: usize,
        paths: &[PathTemplate],
    ) -> Result<Payload, RenderError> {
        // A null entry (strapi/strapi#25387) makes every entry-based template fail; say so
        // instead of repeating minijinja's generic "undefined value".
        let no_entry = matches!(event.entry, None | Some(Json::Null));
        let mut skipped = Vec::new();
        let mut skip = |field: &str, why: String| skipped.push(format!("{field}: {why}"));
        let mut rendered_tags: Vec<String> = Vec::new();
        for index in 0..tag_count {
            let field = format!("nextjs.tags[{index}]");
            match rendered(&field) {
                Ok(tag) if tag.trim().is_empty() => skip(&field, "rendered empty".to_owned()),
                Ok(tag) => push_unique(&mut rendered_tags, tag.trim().to_owned()),
                Err(_) if no_entry => skip(&field, NO_ENTRY.to_owned()),
                Err(message) => skip(&field, message),
            }
        }
        let mut rendered_paths: Vec<RevalidatePath> = Vec::new();
        for (index, template) in paths.iter().enumerate() {
            let field = format!("nextjs.paths[{index}].path");
            match rendered(&field) {
                Ok(path) => match check_path(path.trim()) {
                    Ok(()) => push_unique(
                        &mut rendered_paths,
                        RevalidatePath {
                            path: path.trim().to_owned(),
                            kind: template.kind,
                        },
                    ),
                    Err(why) => skip(&field, format!("rendered {path:?}, {why}")),
                },
                Err(_) if no_entry => skip(&field, NO_ENTRY.to_owned()),
                Err(message) => skip(&field, message),
            }
        }
        if rendered_tags.is_empty() && rendered_paths.is_empty() {
            return Err(RenderError::NothingToRevalidate { skipped });
        }
        Ok(Payload::Revalidate {
            tags: rendered_tags,
            paths: rendered_paths,
            skipped,
        })
    }
}

const NO_ENTRY: &str = "the event has no entry (Strapi sent `entry: null`, strapi/strapi#25387)";

// An empty segment means a field rendered empty: revalidating `/articles/` would be wrong.
// Entry data must not steer the path elsewhere: no `..` (even percent-encoded), no query or
// fragment, no backslash (some routers read it as `/`), and `//host` is an empty segment.
fn check_path(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        Err("which does not start with / (a URL with a scheme is not a path)")
    } else if path.len() > 1 && (path.contains("//") || path.ends_with('/')) {
        Err("which has an empty segment")
    } else if path.contains(['?', '#']) {
        Err("which has a query (?) or a fragment (#)")
    } else if path.contains('\\') {
        Err("which has a backslash")
    } else if path.split('/').any(|segment| {
        let segment = segment.to_ascii_lowercase().replace("%2e", ".");
        segment == ".." || segment == "."
    }) {
        Err("which has a . or .. segment")
    } else {
        Ok(())
    }
}

fn push_unique<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        list.push(item);
    }
}

fn parse_json(field: &str, expected: &'static str, text: &str) -> Result<Json, RenderError> {
    serde_json::from_str(text).map_err(|error| RenderError::NotJson {
        field: field.to_owned(),
        expected,
        message: error.to_string(),
    })
}

fn json_kind(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a bool",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// Every template of a payload, keyed by its route field name as in the CRD.
fn template_fields(payload: &PayloadTemplate) -> Vec<(String, &str)> {
    match payload {
        PayloadTemplate::Forward | PayloadTemplate::Http { body: None } => Vec::new(),
        PayloadTemplate::Http { body: Some(body) } => vec![("http.body".to_owned(), body.as_str())],
        PayloadTemplate::Slack { text, blocks } => {
            let mut fields = vec![("slack.text".to_owned(), text.as_str())];
            if let Some(blocks) = blocks {
                fields.push(("slack.blocks".to_owned(), blocks.as_str()));
            }
            fields
        }
        PayloadTemplate::Revalidate { tags, paths } => {
            tags.iter()
                .enumerate()
                .map(|(index, tag)| (format!("nextjs.tags[{index}]"), tag.as_str()))
                .chain(paths.iter().enumerate().map(|(index, path)| {
                    (format!("nextjs.paths[{index}].path"), path.path.as_str())
                }))
                .collect()
        }
    }
}

/// The variables filters and templates see, built once per evaluation from the parsed event.
pub(crate) struct EventVars {
    values: [(&'static str, Json); 6],
}

impl EventVars {
    pub(crate) fn new(event: &EventBody) -> Self {
        let text = |value: &Option<String>| value.clone().map_or(Json::Null, Json::String);
        let [event_name, model, uid, entry, media, created_at] = FILTER_VARIABLES;
        Self {
            values: [
                (event_name, Json::String(event.event.clone())),
                (model, text(&event.model)),
                (uid, text(&event.uid)),
                (entry, event.entry.clone().unwrap_or(Json::Null)),
                (media, event.media.clone().unwrap_or(Json::Null)),
                (created_at, text(&event.created_at)),
            ],
        }
    }

    /// The variables from their values in [`FILTER_VARIABLES`]' order (as [`EventVars::iter`]
    /// gives them); missing values are `null`.
    pub(crate) fn from_values(values: Vec<Json>) -> Self {
        let mut values = values.into_iter();
        Self {
            values: FILTER_VARIABLES.map(|name| (name, values.next().unwrap_or(Json::Null))),
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&'static str, &Json)> {
        self.values.iter().map(|(name, value)| (*name, value))
    }

    fn template_context(&self) -> TemplateValue {
        TemplateValue::from_serialize(
            self.values
                .iter()
                .map(|(name, value)| (*name, value))
                .collect::<std::collections::BTreeMap<_, _>>(),
        )
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn check_path_accepts_exactly_slash_separated_plain_segments(path in ".*") {
            let accepted = check_path(&path).is_ok();
            // A plain segment: not empty, no query, fragment or backslash, not `.` or `..` in
            // any spelling.
            let plain = |segment: &str| {
                let dots = segment.to_ascii_lowercase().replace("%2e", ".");
                !segment.is_empty() && !segment.contains(['?', '#', '\\']) && dots != "." && dots != ".."
            };
            let expected = path == "/" || path.strip_prefix('/').is_some_and(|rest| rest.split('/').all(plain));
            prop_assert_eq!(accepted, expected, "{:?}", path);
        }

        #[test]
        fn check_path_accepts_any_joined_plain_segments(
            segments in prop::collection::vec("[^/?#\\\\.%][^/?#\\\\]*", 1..6)
        ) {
            let path = format!("/{}", segments.join("/"));
            prop_assert!(check_path(&path).is_ok(), "{:?}", path);
        }
    }
}
