//! Input variables and local values: `variable "NAME" { ... }` declarations, their types,
//! where their values come from (defaults < `KILN_VAR_NAME` < `--var-file` < `--var`),
//! their `validation` rules, and `locals { ... }` blocks evaluated in dependency order.
//!
//! This module fills the loader's tables of values; it does not decode clusters or jobs.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use hcl::Value;
use hcl::edit::Span;
use hcl::edit::expr::{Expression, ObjectKey};
use hcl::edit::structure::{Attribute, Block, Body, Structure};
use hcl::eval::Evaluate;

use crate::diag::Diagnostic;
use crate::expr::{self, Root, describe, kind_of, render};
use crate::load::{Bad, Loader, Schema, Scope, SourceFile, header_span, suggest, value_span};

/// Prefix of the environment variables that set input variables: `KILN_VAR_workers`.
pub const ENV_PREFIX: &str = "KILN_VAR_";

/// Where variable values come from, besides the declarations' defaults.
///
/// Precedence, lowest first: `default` < environment (`KILN_VAR_NAME`) < `var_files` (in
/// order) < `vars` (in order). A later source replaces an earlier one; values are not merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// `--var NAME=VALUE`, in command-line order (the last one for a name wins). A value is
    /// read as an HCL expression when it is a valid one of the declared type, else as a
    /// string; for `type = string` it is always the string as written.
    pub vars: Vec<(String, String)>,
    /// `--var-file FILE`: HCL files of `NAME = VALUE` lines, in order (a later file wins).
    /// Relative paths are relative to the current directory, like any command-line path.
    pub var_files: Vec<PathBuf>,
    /// Whether to read `KILN_VAR_NAME` from the process environment.
    pub env: bool,
    /// Environment entries such as `("KILN_VAR_workers", "3")`, read as if they were in the
    /// process environment (and taking precedence over it): for embedding and tests, which
    /// cannot safely change the process environment.
    pub env_vars: Vec<(String, String)>,
}

impl LoadOptions {
    /// Defaults and the process environment: what [`load_dir`](crate::load_dir) uses.
    pub fn from_env() -> LoadOptions {
        LoadOptions {
            env: true,
            ..LoadOptions::default()
        }
    }
}

/// Splits a `--var` argument `NAME=VALUE` at the first `=` (usable as a clap value parser).
///
/// # Errors
///
/// A message when there is no `=` or the name is empty.
pub fn parse_var_arg(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("expected NAME=VALUE, got {arg:?}")),
    }
}

const VARIABLE: Schema = Schema {
    ident: "variable",
    labels: &["NAME"],
    attrs: &["type", "default", "description", "sensitive"],
    blocks: &["validation"],
};
const VALIDATION: Schema = Schema {
    ident: "validation",
    labels: &[],
    attrs: &["condition", "error_message"],
    blocks: &[],
};
const LOCALS: Schema = Schema {
    ident: "locals",
    labels: &[],
    attrs: &[],
    blocks: &[],
};

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
    span: Option<Range<usize>>,
    summary: String,
    hint: Option<String>,
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
fn shown(value: &Value, sensitive: bool) -> String {
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

fn mismatch_summary(name: &str, mismatch: &Mismatch) -> String {
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

struct Validation<'f> {
    condition: &'f Attribute,
    error_message: &'f Attribute,
}

/// A declared variable (its declaration is valid when it is in the list at all).
struct VarDecl<'f> {
    name: String,
    src: &'f SourceFile,
    block: &'f Block,
    ty: VarType,
    type_attr: Option<&'f Attribute>,
    sensitive: bool,
    default: Option<(Value, &'f Attribute)>,
    validations: Vec<Validation<'f>>,
}

/// Where a variable's value came from, in words (without the value when it is sensitive).
struct Origin(String);

impl<'d> Loader<'d> {
    /// Declares every variable, gives each its value, and runs the validation rules; fills
    /// the loader's variable table (unusable variables are declared without a value).
    pub(crate) fn variables(
        &mut self,
        blocks: &[(&SourceFile, &Block)],
        var_files: &[(SourceFile, Body)],
    ) {
        let mut sites = HashMap::new();
        let mut decls = Vec::new();
        for &(src, block) in blocks {
            let Some(name) = self.unique_name(src, block, &VARIABLE, &mut sites) else {
                continue;
            };
            // Declared from here on, so that references to it are not "undeclared" even
            // when its declaration is broken.
            self.declare_var(name);
            if hcl::edit::Ident::try_new(name).is_err() {
                let label = block.labels.first().and_then(|l| l.span());
                self.push(
                    src.error(label, format!("Invalid variable name {name:?}"))
                        .with_hint("a variable name starts with a letter or `_` and goes on with letters, digits, `_` and `-`, so that it can be written `var.NAME`"),
                );
                continue;
            }
            if let Some(decl) = self.declare(src, block, name) {
                decls.push(decl);
            }
        }
        let origins = self.assign(&decls, var_files);
        self.validate(&decls, &origins);
    }

    fn declare<'f>(
        &mut self,
        src: &'f SourceFile,
        block: &'f Block,
        name: &str,
    ) -> Option<VarDecl<'f>> {
        let body = &block.body;
        self.check_body(src, body, &VARIABLE);
        let mut ok = true;
        let type_attr = body.get_attribute("type");
        let ty = match type_attr.map(|attr| parse_type(&attr.value)) {
            None => VarType::Any,
            Some(Ok(ty)) => ty,
            Some(Err(err)) => {
                let mut diagnostic = src.error(
                    err.span.or_else(|| type_attr.and_then(value_span)),
                    err.summary,
                );
                if let Some(hint) = err.hint {
                    diagnostic = diagnostic.with_hint(hint);
                }
                self.push(diagnostic);
                ok = false;
                VarType::Any
            }
        };
        if let Some(attr) = body.get_attribute("description")
            && let Some(value) = self.literal(src, attr)
            && !value.is_string()
        {
            ok = false;
            self.bad_value(
                src,
                value_span(attr),
                "description",
                Bad::Type(format!("expected a string, got {}", describe(&value))),
            );
        }
        let sensitive = match body.get_attribute("sensitive") {
            None => false,
            Some(attr) => match self.literal(src, attr) {
                Some(Value::Bool(b)) => b,
                Some(other) => {
                    self.bad_value(
                        src,
                        value_span(attr),
                        "sensitive",
                        Bad::Type(format!("expected a bool, got {}", describe(&other))),
                    );
                    return None;
                }
                None => return None,
            },
        };
        let default = match body.get_attribute("default") {
            None => None,
            Some(attr) => match self.literal(src, attr) {
                None => {
                    ok = false;
                    None
                }
                Some(value) => match ty.check(&value, sensitive) {
                    Ok(()) => Some((value, attr)),
                    Err(mismatch) => {
                        ok = false;
                        self.push(src.error(
                            span_at(&attr.value, &mismatch.path),
                            mismatch_summary(name, &mismatch),
                        ));
                        None
                    }
                },
            },
        };
        let mut validations = Vec::new();
        for rule in body.get_blocks(VALIDATION.ident) {
            if !self.check_labels(src, rule, &VALIDATION) {
                ok = false;
                continue;
            }
            self.check_body(src, &rule.body, &VALIDATION);
            let condition = rule.body.get_attribute("condition");
            let error_message = rule.body.get_attribute("error_message");
            for (attr, example) in [
                (condition, format!("condition = var.{name} != \"\"")),
                (error_message, "error_message = \"...\"".to_owned()),
            ] {
                if attr.is_none() {
                    let missing = example.split(' ').next().unwrap_or_default();
                    self.push(
                        src.error(
                            header_span(rule),
                            format!("Missing required attribute `{missing}` in `validation` block"),
                        )
                        .with_hint(format!("add `{example}`")),
                    );
                    ok = false;
                }
            }
            let (Some(condition), Some(error_message)) = (condition, error_message) else {
                continue;
            };
            let refers = expr::walk(&condition.value)
                .refs
                .iter()
                .any(|r| r.root == Root::Var && r.name == name);
            if !refers {
                ok = false;
                self.push(
                    src.error(
                        value_span(condition),
                        format!("The validation rule of variable {name:?} does not refer to `var.{name}`"),
                    )
                    .with_hint(format!("a condition checks the variable's value, e.g. `var.{name} != \"\"`")),
                );
                continue;
            }
            validations.push(Validation {
                condition,
                error_message,
            });
        }
        ok.then(|| VarDecl {
            name: name.to_owned(),
            src,
            block,
            ty,
            type_attr,
            sensitive,
            default,
            validations,
        })
    }

    /// Evaluates an attribute that may not refer to anything (functions are fine).
    fn literal(&mut self, src: &SourceFile, attr: &Attribute) -> Option<Value> {
        self.evaluate(src, &attr.value, attr.key.as_str(), Scope::Literal)
            .map(|resolved| resolved.value)
    }

    /// Gives every declared variable its value; returns where each came from.
    fn assign<'f>(
        &mut self,
        decls: &[VarDecl<'f>],
        var_files: &'f [(SourceFile, Body)],
    ) -> HashMap<String, Origin> {
        let mut origins = HashMap::new();
        let mut from_files: HashMap<String, (&SourceFile, &Attribute)> = HashMap::new();
        for (src, body) in var_files {
            for structure in body.iter() {
                match structure {
                    Structure::Block(block) => self.push(
                        src.error(
                            block.ident.span(),
                            format!(
                                "Unexpected block `{}` in a variable file",
                                block.ident.as_str()
                            ),
                        )
                        .with_detail("A variable file holds only `NAME = VALUE` lines."),
                    ),
                    Structure::Attribute(attr) => {
                        let name = attr.key.as_str();
                        if self.var_declared(name) {
                            from_files.insert(name.to_owned(), (src, attr));
                        } else if self.complete() {
                            let diagnostic = src.error(
                                attr.key.span(),
                                format!("Value for undeclared variable {name:?}"),
                            );
                            let diagnostic = self.undeclared_var_hint(diagnostic, name);
                            self.push(diagnostic);
                        }
                    }
                }
            }
        }

        let mut from_cli: HashMap<&str, &str> = HashMap::new();
        let opts = self.options();
        for (name, value) in &opts.vars {
            if self.var_declared(name) {
                from_cli.insert(name, value);
            } else if self.complete() {
                let diagnostic = Diagnostic::file_error(
                    self.dir(),
                    format!("Value for undeclared variable {name:?} given with `--var {name}=...`"),
                );
                let diagnostic = self.undeclared_var_hint(diagnostic, name);
                self.push(diagnostic);
            }
        }

        for decl in decls {
            let name = decl.name.as_str();
            let env_name = format!("{ENV_PREFIX}{name}");
            let (value, origin, literal) = if let Some(raw) = from_cli.get(name) {
                let shown = if decl.sensitive { "..." } else { raw };
                (
                    Some(self.value_from_text(raw, &decl.ty)),
                    format!("set by `--var {name}={shown}`"),
                    None,
                )
            } else if let Some((src, attr)) = from_files.get(name) {
                let value = self.literal(src, attr);
                (
                    value,
                    format!("set at {}", src.location(value_span(attr))),
                    Some((*src, *attr)),
                )
            } else if let Some(raw) = self.env_value(&env_name) {
                (
                    Some(self.value_from_text(&raw, &decl.ty)),
                    format!("set by the environment variable `{env_name}`"),
                    None,
                )
            } else if let Some((value, attr)) = &decl.default {
                self.define_var(name, value.clone(), decl.sensitive);
                origins.insert(
                    decl.name.clone(),
                    Origin(format!(
                        "the default at {}",
                        decl.src.location(value_span(attr))
                    )),
                );
                continue;
            } else {
                self.push(
                    decl.src
                        .error(
                            header_span(decl.block),
                            format!("No value for required variable {name:?}"),
                        )
                        .with_detail("The variable has no `default`, and no value was given for it.")
                        .with_hint(format!(
                            "give it a value with `--var {name}=VALUE`, a `--var-file`, or the environment variable `{env_name}`; or add a `default`"
                        )),
                );
                continue;
            };
            let Some(value) = value else {
                continue;
            };
            match decl.ty.check(&value, decl.sensitive) {
                Ok(()) => {
                    self.define_var(name, value, decl.sensitive);
                    origins.insert(decl.name.clone(), Origin(origin));
                }
                Err(mismatch) => {
                    let summary = mismatch_summary(name, &mismatch);
                    let diagnostic = match literal {
                        Some((src, attr)) => src
                            .error(span_at(&attr.value, &mismatch.path), summary)
                            .with_detail(format!(
                                "The variable is declared with `type = {}` at {}.",
                                decl.ty,
                                decl.src.location(header_span(decl.block))
                            )),
                        None => decl
                            .src
                            .error(
                                decl.type_attr
                                    .and_then(value_span)
                                    .or_else(|| header_span(decl.block)),
                                summary,
                            )
                            .with_detail(format!("The value was {origin}.")),
                    };
                    self.push(diagnostic);
                }
            }
        }
        origins
    }

    /// A value given as text (`--var`, environment): an HCL expression when it is one, else
    /// the text as a string (always the string for `type = string`).
    fn value_from_text(&self, raw: &str, ty: &VarType) -> Value {
        if *ty == VarType::String {
            return Value::String(raw.to_owned());
        }
        let parsed = hcl::edit::parser::parse_expr(raw).ok().and_then(|expr| {
            let walk = expr::walk(&expr);
            if !walk.problems.is_empty() || !walk.refs.is_empty() {
                return None;
            }
            let prepared = expr::prepare(&expr);
            prepared.expr.evaluate(self.functions()).ok()
        });
        // A value that parses is kept even when it has the wrong type, so that the error
        // names what it is (`--var epochs=true` is a bool, not the string "true").
        parsed.unwrap_or_else(|| Value::String(raw.to_owned()))
    }

    /// `KILN_VAR_NAME` from the explicit entries, else (when enabled) the process environment.
    fn env_value(&mut self, env_name: &str) -> Option<String> {
        let opts = self.options();
        if let Some((_, value)) = opts.env_vars.iter().rev().find(|(n, _)| n == env_name) {
            return Some(value.clone());
        }
        if !opts.env {
            return None;
        }
        match std::env::var(env_name) {
            Ok(value) => Some(value),
            Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(_)) => {
                self.push(Diagnostic::file_error(
                    self.dir(),
                    format!("The environment variable `{env_name}` is not valid UTF-8"),
                ));
                None
            }
        }
    }

    fn undeclared_var_hint(&self, diagnostic: Diagnostic, name: &str) -> Diagnostic {
        let names = self.var_names();
        match suggest(name, names.iter().map(String::as_str)) {
            Some(close) => diagnostic.with_hint(format!("did you mean `{close}`?")),
            None => {
                diagnostic.with_hint(format!("declare it with `variable \"{name}\" {{ ... }}`"))
            }
        }
    }

    /// Runs every validation rule of every variable that has a value; a variable that fails
    /// one loses its value (so that what uses it is not reported again).
    fn validate(&mut self, decls: &[VarDecl<'_>], origins: &HashMap<String, Origin>) {
        let mut failed = Vec::new();
        for decl in decls {
            let Some(value) = self.var_value(&decl.name).cloned() else {
                continue;
            };
            for rule in &decl.validations {
                let src = decl.src;
                let Some(result) =
                    self.evaluate(src, &rule.condition.value, "condition", Scope::Validation)
                else {
                    continue;
                };
                match result.value {
                    Value::Bool(true) => continue,
                    Value::Bool(false) => {}
                    other => {
                        self.push(src.error(
                            value_span(rule.condition),
                            format!(
                                "Invalid validation condition: expected true or false, got {}",
                                shown(&other, result.sensitive)
                            ),
                        ));
                        continue;
                    }
                }
                failed.push(decl.name.clone());
                // A message computed from a sensitive value would show it (or something
                // derived from it): such a message is not shown at all.
                let refers_to_sensitive = expr::walk(&rule.error_message.value)
                    .refs
                    .iter()
                    .any(|r| r.root == Root::Var && self.var_sensitive(&r.name));
                let message = if refers_to_sensitive {
                    "(The error message is not shown: it refers to a sensitive value.)".to_owned()
                } else {
                    let Some(message) = self.evaluate(
                        src,
                        &rule.error_message.value,
                        "error_message",
                        Scope::Validation,
                    ) else {
                        continue;
                    };
                    let Value::String(message) = message.value else {
                        self.bad_value(
                            src,
                            value_span(rule.error_message),
                            "error_message",
                            Bad::Type(format!(
                                "expected a string, got {}",
                                kind_of(&message.value)
                            )),
                        );
                        continue;
                    };
                    message
                };
                let shown_value = if decl.sensitive {
                    "(sensitive)".to_owned()
                } else {
                    render(&value)
                };
                let origin = origins.get(&decl.name).map_or("", |o| o.0.as_str());
                self.push(
                    src.error(
                        value_span(rule.condition),
                        format!("Invalid value for variable {:?}", decl.name),
                    )
                    .with_detail(format!(
                        "{message}\n\n`var.{}` is {shown_value} ({origin}).",
                        decl.name
                    )),
                );
            }
        }
        for name in failed {
            self.poison_var(&name);
        }
    }

    /// Collects every `locals` block's values and evaluates them in dependency order; a cycle
    /// is reported once, naming its members in order.
    pub(crate) fn locals(&mut self, blocks: &[(&SourceFile, &Block)]) {
        struct Local<'f> {
            src: &'f SourceFile,
            attr: &'f Attribute,
            deps: Vec<usize>,
        }
        let mut order: Vec<Local<'_>> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for &(src, block) in blocks {
            if !self.check_labels(src, block, &LOCALS) {
                continue;
            }
            for structure in block.body.iter() {
                match structure {
                    Structure::Block(nested) => self.push(
                        src.error(
                            nested.ident.span(),
                            format!("Unexpected block `{}` in `locals`", nested.ident.as_str()),
                        )
                        .with_detail("A `locals` block holds only `NAME = EXPRESSION` lines."),
                    ),
                    Structure::Attribute(attr) => {
                        let name = attr.key.as_str();
                        if let Some(&first) = index.get(name) {
                            let first: &Local<'_> = &order[first];
                            self.push(
                                src.error(attr.key.span(), format!("Duplicate local value {name:?}"))
                                    .with_detail(format!(
                                        "`local.{name}` is already defined at {}.",
                                        first.src.location(first.attr.key.span())
                                    ))
                                    .with_hint("rename one of them; local names must be unique across the files of the directory"),
                            );
                            continue;
                        }
                        index.insert(name, order.len());
                        order.push(Local {
                            src,
                            attr,
                            deps: Vec::new(),
                        });
                        self.declare_local(name);
                    }
                }
            }
        }
        for local in &mut order {
            let mut deps: Vec<usize> = expr::walk(&local.attr.value)
                .refs
                .iter()
                .filter(|r| r.root == Root::Local)
                .filter_map(|r| index.get(r.name.as_str()).copied())
                .collect();
            deps.sort_unstable();
            deps.dedup();
            local.deps = deps;
        }

        // Depth-first, in declaration order: post-order is an evaluation order, and a back
        // edge closes a cycle.
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Active,
            Done,
        }
        let n = order.len();
        let mut marks = vec![Mark::New; n];
        let mut in_cycle = vec![false; n];
        let mut evaluation = Vec::with_capacity(n);
        for start in 0..n {
            if marks[start] != Mark::New {
                continue;
            }
            marks[start] = Mark::Active;
            let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
            while let Some(&mut (node, ref mut next)) = stack.last_mut() {
                let Some(&dep) = order[node].deps.get(*next) else {
                    marks[node] = Mark::Done;
                    evaluation.push(node);
                    stack.pop();
                    continue;
                };
                *next += 1;
                match marks[dep] {
                    Mark::New => {
                        marks[dep] = Mark::Active;
                        stack.push((dep, 0));
                    }
                    Mark::Active => {
                        let from = stack.iter().position(|&(n, _)| n == dep).unwrap_or(0);
                        let cycle: Vec<usize> = stack[from..].iter().map(|&(n, _)| n).collect();
                        if cycle.iter().any(|&n| in_cycle[n]) {
                            continue;
                        }
                        for &member in &cycle {
                            in_cycle[member] = true;
                        }
                        let names: Vec<String> = cycle
                            .iter()
                            .chain(std::iter::once(&dep))
                            .map(|&n| format!("local.{}", order[n].attr.key.as_str()))
                            .collect();
                        let sites: Vec<String> = cycle
                            .iter()
                            .map(|&n| {
                                format!(
                                    "  local.{} at {}",
                                    order[n].attr.key.as_str(),
                                    order[n].src.location(order[n].attr.key.span())
                                )
                            })
                            .collect();
                        let first = &order[dep];
                        self.push(
                            first
                                .src
                                .error(
                                    first.attr.key.span(),
                                    format!("Cycle in local values: {}", names.join(" → ")),
                                )
                                .with_detail(format!(
                                    "Each of these refers to the next:\n{}",
                                    sites.join("\n")
                                ))
                                .with_hint("a local value cannot depend on itself, directly or through other locals"),
                        );
                    }
                    Mark::Done => {}
                }
            }
        }
        for node in evaluation {
            let local = &order[node];
            let name = local.attr.key.as_str();
            if in_cycle[node] {
                continue;
            }
            if let Some(value) = self.evaluate(local.src, &local.attr.value, name, Scope::Config) {
                self.define_local(name, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn var_arguments_split_at_the_first_equals_sign() {
        assert_eq!(
            parse_var_arg("a=b=c"),
            Ok(("a".to_owned(), "b=c".to_owned()))
        );
        assert!(parse_var_arg("a").is_err());
        assert!(parse_var_arg("=x").is_err());
    }
}
