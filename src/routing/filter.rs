//! CEL route filters: compiled once when a route is loaded, evaluated per event.
//!
//! A filter sees the event as the variables `event`, `model`, `uid`, `entry`, `media` and
//! `createdAt` (absent fields are `null`). Compilation rejects syntax errors and variables outside
//! that set, with the line and column, so a typo surfaces in the resource's status instead of as
//! a route that silently never matches.

use std::{collections::HashMap, sync::Arc};

use cel::{Context, ExecutionError, Program, Value};
use serde_json::Value as Json;

use super::{CompileError, EventVars, Position};

/// The variables a filter may use, in the order the CRD documents them.
pub const FILTER_VARIABLES: [&str; 6] = ["event", "model", "uid", "entry", "media", "createdAt"];

/// A compiled CEL filter.
#[derive(Debug)]
pub(crate) struct Filter {
    program: Program,
}

/// Why a filter could not decide on an event. The delivery is not created and the receiver
/// reports the error; it never panics.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FilterError {
    /// The expression failed on this event, e.g. it read a field of a `null` entry.
    #[error("filter failed on this event: {0}")]
    Evaluation(String),
    /// The expression produced something other than `true` or `false`.
    #[error("filter must evaluate to a bool, got {0}")]
    NotBoolean(String),
}

impl Filter {
    /// Compiles `source`; `field` names it in errors (e.g. `filter`).
    pub(crate) fn compile(field: &str, source: &str) -> Result<Self, Vec<CompileError>> {
        let program = Program::compile(source).map_err(|errors| {
            errors
                .errors
                .into_iter()
                .map(|error| CompileError {
                    field: field.to_owned(),
                    // cel reports 1-based lines and 0-based columns.
                    position: Some(Position {
                        line: usize::try_from(error.pos.0).unwrap_or(1).max(1),
                        column: usize::try_from(error.pos.1).unwrap_or(0) + 1,
                    }),
                    message: error.msg,
                })
                .collect::<Vec<_>>()
        })?;
        let unknown: Vec<CompileError> = program
            .references()
            .variables()
            .into_iter()
            .filter(|name| !FILTER_VARIABLES.contains(name))
            .map(|name| CompileError {
                field: field.to_owned(),
                position: Position::of_identifier(source, name),
                message: format!(
                    "unknown variable `{name}`; a filter can use {}",
                    FILTER_VARIABLES.join(", ")
                ),
            })
            .collect();
        if !unknown.is_empty() {
            return Err(unknown);
        }
        Ok(Self { program })
    }

    /// Evaluates the filter against one event.
    pub(crate) fn evaluate(&self, vars: &EventVars) -> Result<bool, FilterError> {
        let mut context = Context::default();
        for (variable, value) in vars.iter() {
            context.add_variable_from_value(variable, to_cel(value));
        }
        match self.program.execute(&context) {
            Ok(Value::Bool(matched)) => Ok(matched),
            Ok(other) => Err(FilterError::NotBoolean(describe(&other))),
            Err(error) => Err(FilterError::Evaluation(explain(error))),
        }
    }
}

// Not `cel::to_value`: serde hands positive JSON integers over as `uint`, and CEL does not mix
// `uint` with the `int` literals users write (`entry.views + 1` would fail). Integers that fit
// become `int`, like CEL's own literals.
fn to_cel(value: &Json) -> Value {
    match value {
        Json::Null => Value::Null,
        Json::Bool(flag) => Value::Bool(*flag),
        Json::Number(number) => match (number.as_i64(), number.as_u64()) {
            (Some(int), _) => Value::Int(int),
            (None, Some(uint)) => Value::UInt(uint),
            (None, None) => Value::Float(number.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(text) => Value::String(Arc::new(text.clone())),
        Json::Array(items) => Value::List(Arc::new(items.iter().map(to_cel).collect())),
        Json::Object(fields) => Value::Map(
            fields
                .iter()
                .map(|(key, value)| (key.clone(), to_cel(value)))
                .collect::<HashMap<String, Value>>()
                .into(),
        ),
    }
}

fn describe(value: &Value) -> String {
    match value.json() {
        Ok(json) => format!("{} {json}", json_type(&json)),
        Err(_) => format!("{value:?}"),
    }
}

fn json_type(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "bool",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "list",
        Json::Object(_) => "map",
    }
}

// cel's own messages for the common mistakes name Rust types; say it in the user's terms.
fn explain(error: ExecutionError) -> String {
    match error {
        ExecutionError::NoSuchKey(key) => format!("no such key `{key}`"),
        ExecutionError::NoSuchOverload => {
            "no such overload (an operand has an unexpected type, e.g. a field of a null entry)"
                .to_owned()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_expressions_are_errors_with_positions_not_panics() {
        for source in [
            "",
            "(((",
            "entry.slug ==",
            "'open",
            "[1, 2",
            "{",
            "event ? :",
            "a.b(",
        ] {
            let errors = Filter::compile("filter", source)
                .err()
                .unwrap_or_else(|| panic!("{source:?} compiled"));
            assert!(!errors.is_empty(), "{source:?}");
            for error in errors {
                assert_eq!(error.field, "filter");
                assert!(!error.message.is_empty(), "{source:?}");
                assert!(error.position.is_some(), "{source:?}: {error}");
            }
        }
    }
}
