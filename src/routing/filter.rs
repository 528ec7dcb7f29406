//! CEL route filters: compiled once when a route is loaded, evaluated per event.
//!
//! A filter sees the event as the variables `event`, `model`, `uid`, `entry`, `media` and
//! `createdAt` (absent fields are `null`). Compilation rejects syntax errors and variables outside
//! that set, with the line and column, so a typo surfaces in the resource's status instead of as
//! a route that silently never matches.

use std::{collections::HashMap, sync::Arc};

use cel::{
    Context, ExecutionError, IdedExpr, Program, Value,
    common::ast::{EntryExpr, Expr, LiteralValue},
};
use serde_json::Value as Json;

use super::{CompileError, EventVars, Position};

/// The variables a filter may use, in the order the CRD documents them.
pub const FILTER_VARIABLES: [&str; 6] = ["event", "model", "uid", "entry", "media", "createdAt"];

/// Longest filter, in characters (the CRD's limit too): it bounds the parser's work and the
/// depth of the expression tree it builds.
pub const MAX_FILTER_CHARS: usize = 2048;
/// Most levels of nested expressions in a filter.
pub const MAX_FILTER_DEPTH: usize = 250;
/// Most evaluation steps a filter may be estimated to take on any event, like the API server's
/// cost budget for CRD validation rules; a filter over it is refused when it is loaded.
pub const FILTER_COST_BUDGET: u64 = 1_000_000;
/// How many elements a list, map or string taken from the event counts as when estimating.
pub const ASSUMED_EVENT_LIST_LENGTH: u64 = 1_000;

/// A compiled CEL filter.
#[derive(Debug)]
pub(crate) struct Filter {
    program: Program,
    // Kept for tenant processes, which compile it again on their side.
    source: String,
}

/// Why a filter could not decide on an event. The delivery is not created and the receiver
/// reports the error; it never panics.
#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
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
        let refuse = |message: String| {
            vec![CompileError {
                field: field.to_owned(),
                position: None,
                message,
            }]
        };
        let length = source.chars().count();
        if length > MAX_FILTER_CHARS {
            return Err(refuse(format!(
                "is {length} characters long; the limit is {MAX_FILTER_CHARS}"
            )));
        }
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
        let mut free = Vec::new();
        free_variables(program.expression(), &mut Vec::new(), &mut free);
        let unknown: Vec<CompileError> = free
            .into_iter()
            .filter(|name| !FILTER_VARIABLES.contains(&name.as_str()))
            .map(|name| CompileError::unknown_variable(field, source, &name, "filter", ""))
            .collect();
        if !unknown.is_empty() {
            return Err(unknown);
        }
        match estimate(program.expression(), 0) {
            Err(depth) => Err(refuse(format!(
                "nests expressions deeper than {depth} levels (the limit)"
            ))),
            Ok(estimate) if estimate.cost > FILTER_COST_BUDGET => Err(refuse(format!(
                "estimated cost {} exceeds the budget of {FILTER_COST_BUDGET} evaluation steps \
                 (lists from the event count as {ASSUMED_EVENT_LIST_LENGTH} elements); \
                 nest fewer macros such as all() or exists() over long lists",
                estimate.cost
            ))),
            Ok(_) => Ok(Self {
                program,
                source: source.to_owned(),
            }),
        }
    }

    /// Evaluates the filter against one event.
    /// Evaluates the filter: in a tenant process once one is installed ([`super::sandbox`]),
    /// otherwise here.
    pub(crate) fn evaluate(&self, vars: &EventVars) -> Result<bool, FilterError> {
        super::sandbox::filter(&self.source, vars).unwrap_or_else(|| self.evaluate_here(vars))
    }

    /// Evaluates the filter in the calling thread.
    pub(crate) fn evaluate_here(&self, vars: &EventVars) -> Result<bool, FilterError> {
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

/// The identifiers `expr` reads that no enclosing macro binds, each once, in order of first use.
/// `cel`'s own `references()` lists a macro's loop variable too (`t` in
/// `entry.tags.exists(t, t == "x")`), which is bound, not read from the event.
fn free_variables(expr: &IdedExpr, bound: &mut Vec<String>, free: &mut Vec<String>) {
    let mut visit = |expr: &IdedExpr, bound: &mut Vec<String>| free_variables(expr, bound, free);
    match &expr.expr {
        Expr::Ident(name) => {
            if !bound.contains(name) && !free.contains(name) {
                free.push(name.clone());
            }
        }
        Expr::Select(select) => visit(&select.operand, bound),
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                visit(target, bound);
            }
            call.args.iter().for_each(|part| visit(part, bound));
        }
        Expr::List(list) => list.elements.iter().for_each(|item| visit(item, bound)),
        Expr::Map(map) => map_entries(&map.entries, bound, &mut visit),
        Expr::Struct(structure) => map_entries(&structure.entries, bound, &mut visit),
        Expr::Comprehension(comprehension) => {
            visit(&comprehension.iter_range, bound);
            visit(&comprehension.accu_init, bound);
            let depth = bound.len();
            bound.push(comprehension.accu_var.clone());
            bound.push(comprehension.iter_var.clone());
            bound.extend(comprehension.iter_var2.clone());
            for part in [
                &comprehension.loop_cond,
                &comprehension.loop_step,
                &comprehension.result,
            ] {
                visit(part, bound);
            }
            bound.truncate(depth);
        }
        Expr::Literal(_) | Expr::Unspecified => {}
    }
}

fn map_entries(
    entries: &[cel::common::ast::IdedEntryExpr],
    bound: &mut Vec<String>,
    visit: &mut impl FnMut(&IdedExpr, &mut Vec<String>),
) {
    for entry in entries {
        match &entry.expr {
            EntryExpr::StructField(field) => visit(&field.value, bound),
            EntryExpr::MapEntry(pair) => {
                visit(&pair.key, bound);
                visit(&pair.value, bound);
            }
        }
    }
}

/// A worst-case estimate of an expression: evaluation steps, and the length of its value when
/// it is a list, map or string (what a macro over it iterates).
#[derive(Clone, Copy)]
struct Estimate {
    cost: u64,
    size: u64,
}

/// Estimates `expr`, or returns the depth limit it exceeds. Macros (`all`, `exists`, `map`,
/// `filter`) are comprehensions: their body runs once per element of the range.
fn estimate(expr: &IdedExpr, depth: usize) -> Result<Estimate, usize> {
    if depth >= MAX_FILTER_DEPTH {
        return Err(MAX_FILTER_DEPTH);
    }
    let sub = |expr: &IdedExpr| estimate(expr, depth + 1);
    let sum = |parts: &[Estimate]| {
        parts
            .iter()
            .fold(1u64, |total, part| total.saturating_add(part.cost))
    };
    let from_event = |cost| Estimate {
        cost,
        size: ASSUMED_EVENT_LIST_LENGTH,
    };
    Ok(match &expr.expr {
        Expr::Literal(LiteralValue::String(text)) => Estimate {
            cost: 1,
            size: u64::try_from(text.inner().len()).unwrap_or(u64::MAX),
        },
        Expr::Literal(_) | Expr::Unspecified => Estimate { cost: 1, size: 1 },
        Expr::Ident(_) => from_event(1),
        Expr::Select(select) => from_event(sub(&select.operand)?.cost.saturating_add(1)),
        Expr::List(list) => {
            let items = list
                .elements
                .iter()
                .map(sub)
                .collect::<Result<Vec<_>, _>>()?;
            Estimate {
                cost: sum(&items),
                size: u64::try_from(items.len()).unwrap_or(u64::MAX),
            }
        }
        Expr::Map(map) => entries(&map.entries, sub)?,
        Expr::Struct(structure) => entries(&structure.entries, sub)?,
        Expr::Call(call) => {
            let parts = call
                .target
                .iter()
                .map(|target| sub(target))
                .chain(call.args.iter().map(sub))
                .collect::<Result<Vec<_>, _>>()?;
            let size = if call.func_name == "_+_" {
                parts
                    .iter()
                    .fold(0u64, |total, part| total.saturating_add(part.size))
            } else {
                ASSUMED_EVENT_LIST_LENGTH
            };
            Estimate {
                cost: sum(&parts),
                size,
            }
        }
        Expr::Comprehension(comprehension) => {
            let range = sub(&comprehension.iter_range)?;
            let per_element = sub(&comprehension.loop_cond)?
                .cost
                .saturating_add(sub(&comprehension.loop_step)?.cost);
            Estimate {
                cost: range
                    .cost
                    .saturating_add(sub(&comprehension.accu_init)?.cost)
                    .saturating_add(range.size.saturating_mul(per_element))
                    .saturating_add(sub(&comprehension.result)?.cost),
                size: range.size,
            }
        }
    })
}

fn entries(
    entries: &[cel::common::ast::IdedEntryExpr],
    sub: impl Fn(&IdedExpr) -> Result<Estimate, usize>,
) -> Result<Estimate, usize> {
    let mut cost = 1u64;
    for entry in entries {
        let parts = match &entry.expr {
            EntryExpr::StructField(field) => [sub(&field.value)?.cost, 0],
            EntryExpr::MapEntry(pair) => [sub(&pair.key)?.cost, sub(&pair.value)?.cost],
        };
        cost = parts
            .iter()
            .fold(cost, |total, part| total.saturating_add(*part));
    }
    Ok(Estimate {
        cost,
        size: u64::try_from(entries.len()).unwrap_or(u64::MAX),
    })
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

    fn list(length: usize) -> String {
        format!("[{}]", vec!["1"; length].join(", "))
    }

    #[test]
    fn nested_macros_over_long_lists_exceed_the_cost_budget() {
        let l = list(100);
        let bomb = format!(
            "{l}.all(event, {l}.all(model, {l}.all(uid, {l}.all(media, event + model + uid + media >= 0))))"
        );
        assert!(bomb.len() < MAX_FILTER_CHARS, "{}", bomb.len());
        let errors = Filter::compile("filter", &bomb).unwrap_err();
        assert!(
            errors[0].message.contains("exceeds the budget"),
            "{errors:?}"
        );
        // A macro over the event's own list, or two nested over short literals, are fine.
        Filter::compile("filter", "entry.tags.exists(uid, uid == 'news')").unwrap();
        let two = format!("{l}.all(uid, {}.exists(media, uid == media))", list(10));
        Filter::compile("filter", &two).unwrap();
    }

    #[test]
    fn macro_loop_variables_are_bound_not_unknown() {
        Filter::compile("filter", "entry.tags.exists(t, t == 'x')").unwrap();
        Filter::compile("filter", "entry.tags.all(t, ['a', 'b'].exists(i, i == t))").unwrap();
        Filter::compile("filter", "entry.tags.map(t, t + 'x').size() > 0").unwrap();
        // The loop variable is bound only inside its macro.
        let errors =
            Filter::compile("filter", "entry.tags.exists(t, t == 'x') && t == 'y'").unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].message.contains("unknown variable `t`"),
            "{errors:?}"
        );
        // Still refused: a name the event does not have.
        let errors = Filter::compile("filter", "author == 'x'").unwrap_err();
        assert!(
            errors[0].message.contains("unknown variable `author`"),
            "{errors:?}"
        );
    }

    #[test]
    fn long_or_deeply_nested_filters_are_refused_not_a_stack_overflow() {
        let long = format!("entry{} == 1", ".a".repeat(32_000));
        let errors = Filter::compile("filter", &long).unwrap_err();
        assert!(
            errors[0].message.contains("the limit is 2048"),
            "{errors:?}"
        );
        let deep = format!("entry{} == 1", ".a".repeat(500));
        let errors = Filter::compile("filter", &deep).unwrap_err();
        assert!(errors[0].message.contains("deeper than"), "{errors:?}");
    }

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
