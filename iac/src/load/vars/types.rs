//! Variable types: what `type = list(number)` declares, printing it back, and checking a
//! value against it without converting (a string is never read as a number).

use std::fmt;
use std::ops::Range;

use hcl::Value;
use hcl::edit::Span;
use hcl::edit::expr::{Expression, ObjectKey};

use crate::expr::{describe, kind_of};
use crate::load::hints::suggest;

const TYPE_NAMES: &[&str] = &["any", "bool", "list", "map", "number", "object", "string"];

/// A variable's declared `type`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum VarType {
    Any,
    String,
    Number,
    Bool,
    List(Box<VarType>),
    Map(Box<VarType>),
    Object(Vec<(String, VarType)>),
}

impl fmt::Display for VarType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VarType::Any => f.write_str("any"),
            VarType::String => f.write_str("string"),
            VarType::Number => f.write_str("number"),
            VarType::Bool => f.write_str("bool"),
            VarType::List(element) => write!(f, "list({element})"),
            VarType::Map(element) => write!(f, "map({element})"),
            VarType::Object(fields) => {
                f.write_str("object({")?;
                for (i, (name, ty)) in fields.iter().enumerate() {
                    let sep = if i == 0 { " " } else { ", " };
                    write!(f, "{sep}{name} = {ty}")?;
                }
                f.write_str(if fields.is_empty() { "})" } else { " })" })
            }
        }
    }
}

/// A type expression that is not one.
pub(crate) struct TypeError {
    pub(super) span: Option<Range<usize>>,
    pub(super) summary: String,
    pub(super) hint: Option<String>,
}

impl TypeError {
    fn new(span: Option<Range<usize>>, summary: impl Into<String>) -> TypeError {
        TypeError {
            span,
            summary: summary.into(),
            hint: None,
        }
    }

    fn hint(mut self, hint: impl Into<String>) -> TypeError {
        self.hint = Some(hint.into());
        self
    }
}

fn type_name_hint(name: &str) -> String {
    match suggest(name, TYPE_NAMES.iter().copied()) {
        Some(close) => format!("did you mean `{close}`?"),
        None => "the types are `string`, `number`, `bool`, `any`, `list(TYPE)`, `map(TYPE)` and `object({ NAME = TYPE, ... })`".to_owned(),
    }
}

/// Reads a type expression: `string`, `list(number)`, `object({ a = bool })`, ...
pub(crate) fn parse_type(expr: &Expression) -> Result<VarType, TypeError> {
    match expr {
        Expression::Variable(ident) => match ident.as_str() {
            "any" => Ok(VarType::Any),
            "string" => Ok(VarType::String),
            "number" => Ok(VarType::Number),
            "bool" => Ok(VarType::Bool),
            name @ ("list" | "map") => Err(TypeError::new(
                ident.span(),
                format!("`{name}` needs an element type"),
            )
            .hint(format!("write e.g. `{name}(string)`"))),
            "object" => Err(TypeError::new(ident.span(), "`object` needs its attributes")
                .hint("write e.g. `object({ name = string, size = number })`")),
            other => Err(TypeError::new(ident.span(), format!("Unknown type `{other}`"))
                .hint(type_name_hint(other))),
        },
        Expression::FuncCall(call) => {
            let name = call.name.name.as_str();
            let span = call.name.name.span();
            let args: Vec<&Expression> = call.args.iter().collect();
            match (name, &args[..]) {
                ("list", [element]) => Ok(VarType::List(Box::new(parse_type(element)?))),
                ("map", [element]) => Ok(VarType::Map(Box::new(parse_type(element)?))),
                ("object", [Expression::Object(object)]) => {
                    let mut fields: Vec<(String, VarType)> = Vec::new();
                    for (key, value) in object.iter() {
                        let Some(field) = object_key(key) else {
                            return Err(TypeError::new(
                                key.span(),
                                "An object type's attribute names must be written out",
                            ));
                        };
                        if fields.iter().any(|(name, _)| *name == field) {
                            return Err(TypeError::new(
                                key.span(),
                                format!("Duplicate attribute `{field}` in an object type"),
                            ));
                        }
                        fields.push((field.to_owned(), parse_type(value.expr())?));
                    }
                    Ok(VarType::Object(fields))
                }
                ("object", _) => Err(TypeError::new(
                    call.span(),
                    "`object(...)` takes one `{ NAME = TYPE, ... }` argument",
                )
                .hint("write e.g. `object({ name = string, size = number })`")),
                ("list" | "map", _) => Err(TypeError::new(
                    call.span(),
                    format!("`{name}(...)` takes exactly one element type"),
                )
                .hint(format!("write e.g. `{name}(string)`"))),
                (other, _) => Err(TypeError::new(span, format!("Unknown type `{other}(...)`"))
                    .hint(type_name_hint(other))),
            }
        }
        Expression::String(text) => Err(TypeError::new(
            expr.span(),
            "A type is a keyword, not a string",
        )
        .hint(format!("write `type = {}`, without quotes", text.value()))),
        _ => Err(TypeError::new(expr.span(), "Invalid type expression").hint(
            "the types are `string`, `number`, `bool`, `any`, `list(TYPE)`, `map(TYPE)` and `object({ NAME = TYPE, ... })`",
        )),
    }
}

fn object_key(key: &ObjectKey) -> Option<&str> {
    match key {
        ObjectKey::Ident(ident) => Some(ident.as_str()),
        ObjectKey::Expression(Expression::String(s)) => Some(s.value()),
        ObjectKey::Expression(_) => None,
    }
}

/// One step into a value: a list element or an object attribute.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Seg {
    Index(usize),
    Key(String),
}

/// Where in a value it does not fit its type, and how.
#[derive(Debug)]
pub(crate) struct Mismatch {
    pub(crate) path: Vec<Seg>,
    pub(crate) message: String,
}

/// How a value is shown in a message: itself, or only its kind when it is sensitive.
pub(super) fn shown(value: &Value, sensitive: bool) -> String {
    if sensitive {
        format!("{} (sensitive)", kind_of(value))
    } else {
        describe(value)
    }
}

impl VarType {
    /// Checks `value` against the type (no conversion: `"3"` is not a number).
    pub(crate) fn check(&self, value: &Value, sensitive: bool) -> Result<(), Mismatch> {
        let mut path = Vec::new();
        self.check_at(value, sensitive, &mut path)
            .map_err(|message| Mismatch { path, message })
    }

    fn check_at(&self, value: &Value, sensitive: bool, path: &mut Vec<Seg>) -> Result<(), String> {
        let expected =
            |what: &str| Err(format!("expected {what}, got {}", shown(value, sensitive)));
        match (self, value) {
            (VarType::Any, _)
            | (VarType::String, Value::String(_))
            | (VarType::Number, Value::Number(_))
            | (VarType::Bool, Value::Bool(_)) => Ok(()),
            (VarType::List(element), Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(Seg::Index(i));
                    element.check_at(item, sensitive, path)?;
                    path.pop();
                }
                Ok(())
            }
            (VarType::Map(element), Value::Object(map)) => {
                for (key, item) in map {
                    path.push(Seg::Key(key.clone()));
                    element.check_at(item, sensitive, path)?;
                    path.pop();
                }
                Ok(())
            }
            (VarType::Object(fields), Value::Object(map)) => {
                if let Some(extra) = map.keys().find(|k| !fields.iter().any(|(f, _)| f == *k)) {
                    let known = fields.iter().map(|(f, _)| f.as_str());
                    let close = suggest(extra, known)
                        .map(|c| format!("; did you mean `{c}`?"))
                        .unwrap_or_default();
                    path.push(Seg::Key(extra.clone()));
                    return Err(format!(
                        "attribute `{extra}` is not in the type {self}{close}"
                    ));
                }
                for (field, ty) in fields {
                    let Some(item) = map.get(field) else {
                        return Err(format!("missing attribute `{field}` (the type is {self})"));
                    };
                    path.push(Seg::Key(field.clone()));
                    ty.check_at(item, sensitive, path)?;
                    path.pop();
                }
                Ok(())
            }
            (VarType::String, _) => expected("a string"),
            (VarType::Number, _) => expected("a number"),
            (VarType::Bool, _) => expected("a bool"),
            (VarType::List(_), _) => expected(&format!("a list ({self})")),
            (VarType::Map(_), _) => expected(&format!("a map ({self})")),
            (VarType::Object(_), _) => expected(&format!("an object ({self})")),
        }
    }
}

/// The span of the part of a literal `expr` at `path` (as deep as the literal goes).
pub(crate) fn span_at(expr: &Expression, path: &[Seg]) -> Option<Range<usize>> {
    let mut current = expr;
    let mut span = expr.span();
    for seg in path {
        let next = match (seg, current) {
            (Seg::Index(i), Expression::Array(array)) => array.get(*i),
            (Seg::Key(key), Expression::Object(object)) => object
                .iter()
                .find(|(k, _)| object_key(k) == Some(key.as_str()))
                .map(|(_, value)| value.expr()),
            _ => None,
        };
        match next {
            Some(next) => {
                current = next;
                if let Some(s) = next.span() {
                    span = Some(s);
                }
            }
            None => break,
        }
    }
    span
}

/// `name[1]["a b"].c`.
fn path_text(name: &str, path: &[Seg]) -> String {
    let mut text = name.to_owned();
    for seg in path {
        match seg {
            Seg::Index(i) => text.push_str(&format!("[{i}]")),
            Seg::Key(key) if hcl::edit::Ident::try_new(key.as_str()).is_ok() => {
                text.push('.');
                text.push_str(key);
            }
            Seg::Key(key) => text.push_str(&format!("[{key:?}]")),
        }
    }
    text
}

pub(super) fn mismatch_summary(name: &str, mismatch: &Mismatch) -> String {
    if mismatch.path.is_empty() {
        format!("Wrong type for variable {name:?}: {}", mismatch.message)
    } else {
        format!(
            "Wrong type for variable {name:?}: `{}`: {}",
            path_text(name, &mismatch.path),
            mismatch.message
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hcl::eval::Evaluate;

    fn ty(text: &str) -> Result<VarType, String> {
        let expr = hcl::edit::parser::parse_expr(text).expect("parses");
        parse_type(&expr).map_err(|e| e.summary)
    }

    #[test]
    fn types_parse_and_print() {
        for text in [
            "string",
            "list(number)",
            "map(list(bool))",
            "object({ a = string, b = list(any) })",
        ] {
            assert_eq!(ty(text).map(|t| t.to_string()).as_deref(), Ok(text));
        }
        assert_eq!(ty("strng").err().as_deref(), Some("Unknown type `strng`"));
        assert_eq!(
            ty("list").err().as_deref(),
            Some("`list` needs an element type")
        );
        assert_eq!(
            ty("\"string\"").err().as_deref(),
            Some("A type is a keyword, not a string")
        );
        assert!(ty("set(string)").is_err());
    }

    #[test]
    fn values_are_checked_without_conversion() {
        let value = |text: &str| {
            let expr = hcl::edit::parser::parse_expr(text).expect("parses");
            hcl::Expression::from(expr)
                .evaluate(&hcl::eval::Context::new())
                .expect("evaluates")
        };
        let check = |t: &str, v: &str| {
            ty(t).expect("type").check(&value(v), false).map_err(|m| {
                let path: Vec<String> = m.path.iter().map(|s| format!("{s:?}")).collect();
                format!("{}: {}", path.join("/"), m.message)
            })
        };
        assert!(check("number", "3").is_ok());
        assert_eq!(
            check("number", "\"3\"").err().as_deref(),
            Some(": expected a number, got string \"3\"")
        );
        assert_eq!(
            check("list(string)", "[\"a\", 1]").err().as_deref(),
            Some("Index(1): expected a string, got number `1`")
        );
        assert_eq!(
            check("object({ name = string })", "{ name = \"x\", nmae = 2 }")
                .err()
                .as_deref(),
            Some(
                "Key(\"nmae\"): attribute `nmae` is not in the type object({ name = string }); did you mean `name`?"
            )
        );
        assert_eq!(
            check("object({ a = number })", "{}").err().as_deref(),
            Some(": missing attribute `a` (the type is object({ a = number }))")
        );
        assert!(check("map(number)", "{ x = 1 }").is_ok());
        let sensitive = ty("number")
            .expect("type")
            .check(&value("\"hunter2\""), true)
            .expect_err("mismatch");
        assert_eq!(
            sensitive.message,
            "expected a number, got a string (sensitive)"
        );
    }
}
