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

use std::io;

use minijinja::{
    AutoEscape, Environment, Error, ErrorKind, Output, State, UndefinedBehavior, Value,
    machinery::{Token, WhitespaceConfig, tokenize},
    syntax::SyntaxConfig,
    value::Kwargs,
};

use super::{CompileError, Position, filter::FILTER_VARIABLES};

/// Instructions one render may run (minijinja's fuel): far above what a payload template
/// needs, far below a loop that would hold a worker for seconds.
pub const TEMPLATE_FUEL: u64 = 100_000;
/// Largest text one template may render.
pub const MAX_RENDERED_BYTES: usize = 256 * 1024;

/// A route's templates, each registered under the field it came from (e.g. `slack.text`).
#[derive(Debug)]
pub(crate) struct Templates {
    env: Environment<'static>,
    // (field, source) of every template added, for tenant processes, which compile them again.
    sources: Vec<(String, String)>,
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
        env.set_fuel(Some(TEMPLATE_FUEL));
        Self {
            env,
            sources: Vec::new(),
        }
    }

    /// Compiles `source` and keeps it under `field`.
    pub(crate) fn add(&mut self, field: &str, source: &str) -> Result<(), CompileError> {
        refuse_multiplication(source).map_err(|offset| CompileError {
            field: field.to_owned(),
            position: Some(Position::of_offset(source, offset)),
            message: "uses `*`, which templates may not: repeating a string can exhaust the \
                      receiver's memory (even while loading the template)"
                .to_owned(),
        })?;
        self.env
            .add_template_owned(field.to_owned(), source.to_owned())
            .map_err(|error| CompileError {
                field: field.to_owned(),
                position: position(source, &error),
                message: error
                    .detail()
                    .map_or_else(|| error.kind().to_string(), str::to_owned),
            })?;
        if let Some(error) = self.unknown_names(field, source).into_iter().next() {
            return Err(error);
        }
        self.sources.push((field.to_owned(), source.to_owned()));
        Ok(())
    }

    /// Variables the event context does not have (`{{ author }}` for `{{ entry.author }}`) and
    /// filters or tests the environment does not know: minijinja only notices either when a
    /// render reaches them, which would be at the first event.
    fn unknown_names(&self, field: &str, source: &str) -> Vec<CompileError> {
        let Ok(template) = self.env.get_template(field) else {
            return Vec::new();
        };
        let globals: Vec<&str> = self.env.globals().map(|(name, _)| name).collect();
        let mut variables: Vec<String> = template
            .undeclared_variables(false)
            .into_iter()
            .filter(|name| !FILTER_VARIABLES.contains(&name.as_str()))
            .filter(|name| !globals.contains(&name.as_str()))
            .collect();
        variables.sort();
        let mut errors: Vec<CompileError> = variables
            .into_iter()
            .map(|name| {
                CompileError::unknown_variable(
                    field,
                    source,
                    &name,
                    "template",
                    " (and names it sets)",
                )
            })
            .collect();
        for (kind, name, offset) in filters_and_tests(source) {
            if !self.knows(kind, name) {
                errors.push(CompileError {
                    field: field.to_owned(),
                    position: Some(Position::of_offset(source, offset)),
                    message: format!("unknown {kind} `{name}`"),
                });
            }
        }
        errors
    }

    /// Whether the environment has this filter or test. minijinja keeps its registry private,
    /// so this asks it the way a template would and looks for its "unknown" error.
    fn knows(&self, kind: &str, name: &str) -> bool {
        let probe = match kind {
            "filter" => format!("{{{{ none | {name} }}}}"),
            _ => format!("{{{{ none is {name} }}}}"),
        };
        match self.env.render_str(&probe, ()) {
            Ok(_) => true,
            Err(error) => !matches!(
                error.kind(),
                ErrorKind::UnknownFilter | ErrorKind::UnknownTest
            ),
        }
    }

    /// Renders every template kept (registered by [`Templates::add`]), each on its own, one
    /// result per field in the order added: in one request to a tenant process once one is
    /// installed ([`super::sandbox`]), otherwise here.
    pub(crate) fn render_all(&self, context: &Value) -> Vec<(&str, Result<String, String>)> {
        if self.sources.is_empty() {
            return Vec::new();
        }
        let fields: Vec<String> = self
            .sources
            .iter()
            .map(|(field, _)| field.clone())
            .collect();
        let results =
            super::sandbox::templates(&self.sources, &fields, context).unwrap_or_else(|| {
                fields
                    .iter()
                    .map(|field| self.render_here(field, context))
                    .collect()
            });
        self.sources
            .iter()
            .map(|(field, _)| field.as_str())
            .zip(results)
            .collect()
    }

    /// Renders the template kept under `field` in the calling thread.
    pub(crate) fn render_here(&self, field: &str, context: &Value) -> Result<String, String> {
        let template = self
            .env
            .get_template(field)
            .map_err(|error| error.to_string())?;
        let mut output = Capped::default();
        match template.render_captured_to(context, &mut output) {
            Ok(_) => String::from_utf8(output.bytes).map_err(|error| error.to_string()),
            Err(_) if output.overflowed => Err(format!(
                "exceeded the output limit of {MAX_RENDERED_BYTES} bytes"
            )),
            Err(error) if error.kind() == ErrorKind::OutOfFuel => Err(format!(
                "exceeded the CPU limit of {TEMPLATE_FUEL} instructions (minijinja fuel)"
            )),
            Err(error) => Err(match error.detail() {
                Some(detail) => format!("{}: {detail}", error.kind()),
                None => error.kind().to_string(),
            }),
        }
    }
}

/// A render target that refuses to grow past [`MAX_RENDERED_BYTES`].
#[derive(Default)]
struct Capped {
    bytes: Vec<u8>,
    overflowed: bool,
}

impl io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.bytes.len() + buf.len() > MAX_RENDERED_BYTES {
            self.overflowed = true;
            return Err(io::Error::other("output limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Every filter (`| name`, `{% filter name %}`) and test (`is name`, `is not name`) a template
/// applies, with the byte offset of its name.
fn filters_and_tests(source: &str) -> Vec<(&'static str, &str, usize)> {
    let tokens: Vec<(Token, usize)> =
        tokenize(source, false, SyntaxConfig, WhitespaceConfig::default())
            .map_while(Result::ok)
            .map(|(token, span)| (token, usize::try_from(span.start_offset).unwrap_or(0)))
            .collect();
    let mut found = Vec::new();
    for (index, (token, _)) in tokens.iter().enumerate() {
        let next = |skip: usize| match tokens.get(index + skip) {
            Some((Token::Ident(name), offset)) => Some((*name, *offset)),
            _ => None,
        };
        let applied = match token {
            Token::Pipe => next(1).map(|(name, offset)| ("filter", name, offset)),
            Token::BlockStart if next(1).is_some_and(|(word, _)| word == "filter") => {
                next(2).map(|(name, offset)| ("filter", name, offset))
            }
            Token::Ident("is") => match next(1) {
                Some(("not", _)) => next(2),
                other => other,
            }
            .map(|(name, offset)| ("test", name, offset)),
            _ => None,
        };
        found.extend(applied);
    }
    found
}

/// Refuses the `*` operator, returning its byte offset. On a string it repeats it: minijinja
/// folds constant expressions while compiling, so `"a" * 100000000` allocates its result when
/// the route is loaded, and at render time `entry.title * 10000000` allocates up to 100 MB in
/// one instruction, before fuel or the output limit can stop it. Payload templates format
/// data; they have no need to repeat or multiply. A template that does not tokenize is left
/// for minijinja to report.
fn refuse_multiplication(source: &str) -> Result<(), usize> {
    let tokens = tokenize(source, false, SyntaxConfig, WhitespaceConfig::default());
    for token in tokens {
        match token {
            Ok((Token::Mul, span)) => return Err(usize::try_from(span.start_offset).unwrap_or(0)),
            Ok(_) => {}
            Err(_) => return Ok(()),
        }
    }
    Ok(())
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
                r#"{"name": {{ entry.name }}, "raw": {{ entry.raw | safe }}}"#,
            )
            .unwrap();
        templates
            .add(
                "slack.text",
                "<https://cms|CMS>: {{ entry.name }} {{ entry.raw | safe }}",
            )
            .unwrap();
        let context = minijinja::context! { entry => minijinja::context! { name => r#"Bob", "admin": true, "x": "<!channel>"#, raw => "1" } };
        let body = templates.render_here("http.body", &context).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["name"], r#"Bob", "admin": true, "x": "<!channel>"#);
        assert_eq!(parsed.get("admin"), None);
        assert_eq!(parsed["raw"], 1);
        assert_eq!(
            templates.render_here("slack.text", &context).unwrap(),
            r#"<https://cms|CMS>: Bob", "admin": true, "x": "&lt;!channel&gt; 1"#
        );
    }

    #[test]
    fn unknown_variables_filters_and_tests_are_refused_at_compile_time() {
        let error = Templates::new()
            .add("slack.text", "New comment by {{ author }}")
            .unwrap_err();
        assert!(
            error.message.contains("unknown variable `author`"),
            "{error}"
        );
        assert_eq!(
            error.position,
            Some(Position {
                line: 1,
                column: 19
            })
        );
        let error = Templates::new()
            .add("slack.text", "{{ entry.title | shout }}")
            .unwrap_err();
        assert_eq!(error.message, "unknown filter `shout`");
        let error = Templates::new()
            .add(
                "slack.text",
                "{% if entry.title is not shouting %}x{% endif %}",
            )
            .unwrap_err();
        assert_eq!(error.message, "unknown test `shouting`");
        // Loop variables, `set`, globals, our own and built-in filters and tests are known.
        for fine in [
            "{% for tag in entry.tags %}{{ tag | upper }}{% endfor %}",
            "{% set title = entry.title | truncate(10) %}{{ title | slack_escape }}",
            "{% for i in range(3) %}{{ loop.index }}{% endfor %}",
            "{{ entry.title | default('x') }}{% if entry.slug is defined %}y{% endif %}",
            "{% filter upper %}{{ model }}{% endfilter %}{{ entry | tojson }}",
        ] {
            Templates::new()
                .add("slack.text", fine)
                .unwrap_or_else(|error| panic!("{fine}: {error}"));
        }
    }

    #[test]
    fn repetition_is_refused_at_compile_time() {
        for bomb in [
            r#"{{ "a"*100000000 ~ "b"*100000000 ~ "c"*100000000 }}"#,
            r#"{% for i in range(100000) %}{{ "x" * 100000000 }}{% endfor %}"#,
            "{{ entry.title * 10000000 }}",
        ] {
            let error = Templates::new().add("http.body", bomb).unwrap_err();
            assert!(error.message.contains("uses `*`"), "{bomb}: {error}");
            assert!(error.position.is_some(), "{bomb}");
        }
        for fine in ["{{ entry.views ** 2 }}", "{# a * b #}{{ '*' }}"] {
            Templates::new().add("http.body", fine).unwrap();
        }
    }

    #[test]
    fn a_runaway_loop_runs_out_of_fuel() {
        let mut templates = Templates::new();
        let cpu_bomb =
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{}";
        templates.add("http.body", cpu_bomb).unwrap();
        let error = templates
            .render_here("http.body", &Value::UNDEFINED)
            .unwrap_err();
        assert!(error.contains("CPU limit"), "{error}");
    }

    #[test]
    fn output_past_the_limit_is_refused() {
        let mut templates = Templates::new();
        templates
            .add(
                "http.body",
                "{% for i in range(5000) %}{{ entry }}{% endfor %}",
            )
            .unwrap();
        let context = Value::from_serialize(serde_json::json!({ "entry": "x".repeat(1000) }));
        let error = templates.render_here("http.body", &context).unwrap_err();
        assert!(error.contains("output limit"), "{error}");
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
