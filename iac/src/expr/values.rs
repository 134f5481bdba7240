//! Values in words, for messages (`number `3``, `a list`), and HCL's number syntax.

use std::fmt::Write as _;

use hcl::{Number, Value};

/// `number `3``, `string "x"`, `a list`, ... for messages.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("bool `{b}`"),
        Value::Number(n) => format!("number `{n}`"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// The kind of a value without the value: `a string`, `a number`, ...
pub(crate) fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A value written compactly as HCL (strings quoted), cut after about 200 characters.
pub(crate) fn render(value: &Value) -> String {
    let mut out = String::new();
    render_into(&mut out, value);
    if out.chars().count() > 200 {
        out = out.chars().take(200).collect::<String>() + "…";
    }
    out
}

fn render_into(out: &mut String, value: &Value) {
    // Bounded: a value nested deeper than this is not read by anyone.
    if out.len() > 400 {
        return;
    }
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => {
            let _ = write!(out, "{s:?}");
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                render_into(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            if map.is_empty() {
                out.push_str("{}");
                return;
            }
            out.push_str("{ ");
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                if hcl::edit::Ident::try_new(key.as_str()).is_ok() {
                    out.push_str(key);
                } else {
                    let _ = write!(out, "{key:?}");
                }
                out.push_str(" = ");
                render_into(out, item);
            }
            out.push_str(" }");
        }
    }
}

/// A decimal number as HCL reads it (`3`, `-2`, `0.5`, `1e3`).
pub(crate) fn parse_number(text: &str) -> Option<Number> {
    if let Ok(u) = text.parse::<u64>() {
        return Some(Number::from(u));
    }
    if let Ok(i) = text.parse::<i64>() {
        return Some(Number::from(i));
    }
    // Rust also reads "inf" and "NaN"; HCL numbers start with a digit or a minus sign.
    let digits = text.strip_prefix('-').unwrap_or(text);
    if !digits.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    text.parse::<f64>().ok().and_then(Number::from_f64)
}
