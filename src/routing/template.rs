//! Payload templates: minijinja with strict undefined, compiled once per route.
//!
//! Strict undefined turns `{{ entry.slgu }}` into an error instead of an empty string, and
//! printing a `null` field is an error too, so a typo or a missing value is reported (a path is
//! skipped with the reason, any other template dead-letters its delivery) rather than producing
//! `/articles/none` or an empty Slack message. Besides minijinja's built-ins (`default`, `lower`,
//! `replace`, ...) templates get `truncate`, `slack_escape` and a `tojson` that rejects missing
//! fields.
//!
//! Printed values are escaped for where they land ([`escaping_for`]), because entry data is
//! written by whoever edits content in Strapi: a JSON template prints every value as JSON, so a
//! name like `Bob", "admin": true` stays one string; Slack text escapes `&`, `<` and `>`, so
//! entry data cannot mention `<!channel>` or forge links. `| safe` opts one value out.

use minijinja::{
    AutoEscape, Environment, Error, ErrorKind, Output, State, UndefinedBehavior, Value,
    value::Kwargs,
};

use super::{CompileError, Position};

/// A route's templates, each registered under the field it came from (e.g. `slack.text`).
#[derive(Debug)]
pub(crate) struct Templates {
    env: Environment<'static>,
}

impl Templates {
    pub(crate) fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.add_filter("truncate", truncate);
        env.add_filter("tojson", strict_tojson);
        env.add_filter("slack_escape", |text: &str| slack_escape(text));
        env.set_auto_escape_callback(escaping_for);
        env.set_formatter(refuse_null);
        Self { env }
    }

    /// Compiles `source` and keeps it under `field`.
    pub(crate) fn add(&mut self, field: &str, source: &str) -> Result<(), CompileError> {
        self.env
            .add_template_owned(field.to_owned(), source.to_owned())
            .map_err(|error| CompileError {
                field: field.to_owned(),
                position: position(source, &error),
                message: error
                    .detail()
                    .map_or_else(|| error.kind().to_string(), str::to_owned),
            })
    }

    /// Renders the template kept under `field` (registered by [`Templates::add`]).
    pub(crate) fn render(&self, field: &str, context: &Value) -> Result<String, String> {
        let template = self
            .env
            .get_template(field)
            .map_err(|error| error.to_string())?;
        template
            .render(context)
            .map_err(|error| match error.detail() {
                Some(detail) => format!("{}: {detail}", error.kind()),
                None => error.kind().to_string(),
            })
    }
}

fn position(source: &str, error: &minijinja::Error) -> Option<Position> {
    match error.range() {
        Some(range) => Some(Position::of_offset(source, range.start)),
        None => error.line().map(|line| Position { line, column: 1 }),
    }
}

// The escaping of Slack text, which minijinja's own formatter does not know.
const SLACK_TEXT: AutoEscape = AutoEscape::Custom("slack");

/// How a template's printed values are escaped, by the route field it came from.
fn escaping_for(field: &str) -> AutoEscape {
    match field {
        "http.body" | "slack.blocks" => AutoEscape::Json,
        "slack.text" => SLACK_TEXT,
        _ => AutoEscape::None,
    }
}

/// Slack's escaping of message text: `&`, `<` and `>` are its control characters (mentions such
/// as `<!channel>`, links `<url|label>`), so data must reach Slack as `&amp;`, `&lt;`, `&gt;`.
pub(crate) fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Prints values escaped as [`escaping_for`] says, except `null`: Strapi sends unset fields as
/// `null`, and `/articles/none` or "New comment from none" is never what a template meant.
fn refuse_null(out: &mut Output, state: &State, value: &Value) -> Result<(), Error> {
    if value.is_none() {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "a null field was printed; write `{{ field or '' }}` where null is expected",
        ));
    }
    if state.auto_escape() == SLACK_TEXT && !value.is_safe() {
        return out
            .write_str(&slack_escape(&value.to_string()))
            .map_err(Error::from);
    }
    minijinja::escape_formatter(out, state, value)
}

/// minijinja's `tojson`, except that a missing field is an error rather than `null`: strict
/// undefined lets filters see undefined values, and a CRM receiving `"email": null` because of a
/// misspelt field is exactly the silent failure strict mode is for.
fn strict_tojson(value: &Value, indent: Option<Value>, args: Kwargs) -> Result<Value, Error> {
    if value.is_undefined() {
        return Err(Error::new(
            ErrorKind::UndefinedError,
            "tojson got a missing field; write `| default(none) | tojson` to send null",
        ));
    }
    minijinja::filters::tojson(value, indent, args)
}

/// `truncate(length=255, end="...")`: the first `length` characters, plus `end` when something
/// was cut. Counts characters, not bytes, so it never splits a UTF-8 sequence.
fn truncate(value: &str, length: Option<usize>, end: Option<&str>) -> String {
    let length = length.unwrap_or(255);
    match value.char_indices().nth(length) {
        Some((cut, _)) => format!("{}{}", &value[..cut], end.unwrap_or("...")),
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_counts_characters_and_marks_the_cut() {
        assert_eq!(truncate("héllo wörld", Some(5), None), "héllo...");
        assert_eq!(truncate("héllo", Some(5), None), "héllo");
        assert_eq!(truncate("abcdef", Some(2), Some("…")), "ab…");
    }

    #[test]
    fn values_are_escaped_for_json_and_slack_unless_marked_safe() {
        let mut templates = Templates::new();
        templates
            .add(
                "http.body",
                r#"{"name": {{ name }}, "raw": {{ raw | safe }}}"#,
            )
            .unwrap();
        templates
            .add(
                "slack.text",
                "<https://cms|CMS>: {{ name }} {{ raw | safe }}",
            )
            .unwrap();
        let context =
            minijinja::context! { name => r#"Bob", "admin": true, "x": "<!channel>"#, raw => "1" };
        let body = templates.render("http.body", &context).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["name"], r#"Bob", "admin": true, "x": "<!channel>"#);
        assert_eq!(parsed.get("admin"), None);
        assert_eq!(parsed["raw"], 1);
        assert_eq!(
            templates.render("slack.text", &context).unwrap(),
            r#"<https://cms|CMS>: Bob", "admin": true, "x": "&lt;!channel&gt; 1"#
        );
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let mut templates = Templates::new();
        let error = templates
            .add("slack.text", "line one\nhello {{ entry. }}")
            .unwrap_err();
        assert_eq!(error.field, "slack.text");
        let position = error.position.expect("a syntax error has a position");
        assert_eq!(position.line, 2);
        assert!(position.column > 1, "{position:?}");
    }
}
