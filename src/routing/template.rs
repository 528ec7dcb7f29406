//! Payload templates: minijinja with strict undefined, compiled once per route.
//!
//! Strict undefined turns `{{ entry.slgu }}` into an error instead of an empty string, and
//! printing a `null` field is an error too, so a typo or a missing value is reported (a path is
//! skipped with the reason, any other template dead-letters its delivery) rather than producing
//! `/articles/none` or an empty Slack message. Besides minijinja's built-ins (`default`, `lower`,
//! `replace`, ...) templates get `truncate` and a `tojson` that rejects missing fields.

use minijinja::{
    Environment, Error, ErrorKind, Output, State, UndefinedBehavior, Value, value::Kwargs,
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

/// Prints values as minijinja does, except `null`: Strapi sends unset fields as `null`, and
/// `/articles/none` or "New comment from none" is never what a template meant.
fn refuse_null(out: &mut Output, state: &State, value: &Value) -> Result<(), Error> {
    if value.is_none() {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "a null field was printed; write `{{ field or '' }}` where null is expected",
        ));
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
