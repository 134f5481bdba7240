//! Input variables: `variable "NAME" { ... }` declarations, their types (`types.rs`), where
//! their values come from (defaults < `KILN_VAR_NAME` < `--var-file` < `--var`) and their
//! `validation` rules. It fills the loader's table of variables; locals are `locals.rs`.

mod types;

use std::collections::HashMap;

use hcl::Value;
use hcl::edit::Span;
use hcl::edit::structure::{Attribute, Block, Body, Structure};
use hcl::eval::Evaluate;

use crate::diag::Diagnostic;
use crate::expr::{self, Root, describe, kind_of, render};
use crate::load::hints::suggest;
use crate::load::options::ENV_PREFIX;
use crate::load::schema::Schema;
use crate::load::scope::{Bad, Loader, Scope};
use crate::load::source::{SourceFile, header_span, value_span};

pub(super) use types::{Seg, span_at};
use types::{VarType, mismatch_summary, parse_type, shown};

/// Declares every variable, gives each its value, and runs the validation rules; fills the
/// loader's variable table (unusable variables are declared without a value).
pub(super) fn variables(
    loader: &mut Loader<'_>,
    blocks: &[(&SourceFile, &Block)],
    var_files: &[(SourceFile, Body)],
) {
    Vars { loader }.run(blocks, var_files);
}

/// The variables' pass over the loader.
struct Vars<'l, 'd> {
    loader: &'l mut Loader<'d>,
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

impl Vars<'_, '_> {
    /// Declares every variable, gives each its value, and runs the validation rules; fills
    /// the loader's variable table (unusable variables are declared without a value).
    fn run(&mut self, blocks: &[(&SourceFile, &Block)], var_files: &[(SourceFile, Body)]) {
        let mut sites = HashMap::new();
        let mut decls = Vec::new();
        for &(src, block) in blocks {
            let Some(name) = self.loader.unique_name(src, block, &VARIABLE, &mut sites) else {
                continue;
            };
            // Declared from here on, so that references to it are not "undeclared" even
            // when its declaration is broken.
            self.loader.declare_var(name);
            if hcl::edit::Ident::try_new(name).is_err() {
                let label = block.labels.first().and_then(|l| l.span());
                self.loader.push(
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
        self.loader.check_body(src, body, &VARIABLE);
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
                self.loader.push(diagnostic);
                ok = false;
                VarType::Any
            }
        };
        if let Some(attr) = body.get_attribute("description")
            && let Some(value) = self.literal(src, attr)
            && !value.is_string()
        {
            ok = false;
            self.loader.bad_value(
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
                    self.loader.bad_value(
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
                        self.loader.push(src.error(
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
            if !self.loader.check_labels(src, rule, &VALIDATION) {
                ok = false;
                continue;
            }
            self.loader.check_body(src, &rule.body, &VALIDATION);
            let condition = rule.body.get_attribute("condition");
            let error_message = rule.body.get_attribute("error_message");
            for (attr, example) in [
                (condition, format!("condition = var.{name} != \"\"")),
                (error_message, "error_message = \"...\"".to_owned()),
            ] {
                if attr.is_none() {
                    let missing = example.split(' ').next().unwrap_or_default();
                    self.loader.push(
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
                self.loader.push(
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
        self.loader
            .evaluate(src, &attr.value, attr.key.as_str(), Scope::Literal)
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
                    Structure::Block(block) => self.loader.push(
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
                        if self.loader.var_declared(name) {
                            from_files.insert(name.to_owned(), (src, attr));
                        } else if self.loader.complete() {
                            let diagnostic = src.error(
                                attr.key.span(),
                                format!("Value for undeclared variable {name:?}"),
                            );
                            let diagnostic = self.undeclared_var_hint(diagnostic, name);
                            self.loader.push(diagnostic);
                        }
                    }
                }
            }
        }

        let mut from_cli: HashMap<&str, &str> = HashMap::new();
        let opts = self.loader.options();
        for (name, value) in &opts.vars {
            if self.loader.var_declared(name) {
                from_cli.insert(name, value);
            } else if self.loader.complete() {
                let diagnostic = Diagnostic::file_error(
                    self.loader.dir(),
                    format!("Value for undeclared variable {name:?} given with `--var {name}=...`"),
                );
                let diagnostic = self.undeclared_var_hint(diagnostic, name);
                self.loader.push(diagnostic);
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
                self.loader.define_var(name, value.clone(), decl.sensitive);
                origins.insert(
                    decl.name.clone(),
                    Origin(format!(
                        "the default at {}",
                        decl.src.location(value_span(attr))
                    )),
                );
                continue;
            } else {
                self.loader.push(
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
                    self.loader.define_var(name, value, decl.sensitive);
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
                    self.loader.push(diagnostic);
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
            let prepared = expr::prepare(&expr, &self.loader.base);
            prepared.expr.evaluate(self.loader.functions()).ok()
        });
        // A value that parses is kept even when it has the wrong type, so that the error
        // names what it is (`--var epochs=true` is a bool, not the string "true").
        parsed.unwrap_or_else(|| Value::String(raw.to_owned()))
    }

    /// `KILN_VAR_NAME` from the explicit entries, else (when enabled) the process environment.
    fn env_value(&mut self, env_name: &str) -> Option<String> {
        let opts = self.loader.options();
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
                self.loader.push(Diagnostic::file_error(
                    self.loader.dir(),
                    format!("The environment variable `{env_name}` is not valid UTF-8"),
                ));
                None
            }
        }
    }

    fn undeclared_var_hint(&self, diagnostic: Diagnostic, name: &str) -> Diagnostic {
        let names = self.loader.var_names();
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
            let Some(value) = self.loader.var_value(&decl.name).cloned() else {
                continue;
            };
            for rule in &decl.validations {
                let src = decl.src;
                let Some(result) = self.loader.evaluate(
                    src,
                    &rule.condition.value,
                    "condition",
                    Scope::Validation,
                ) else {
                    continue;
                };
                match result.value {
                    Value::Bool(true) => continue,
                    Value::Bool(false) => {}
                    other => {
                        self.loader.push(src.error(
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
                    .any(|r| r.root == Root::Var && self.loader.var_sensitive(&r.name));
                let message = if refers_to_sensitive {
                    "(The error message is not shown: it refers to a sensitive value.)".to_owned()
                } else {
                    let Some(message) = self.loader.evaluate(
                        src,
                        &rule.error_message.value,
                        "error_message",
                        Scope::Validation,
                    ) else {
                        continue;
                    };
                    let Value::String(message) = message.value else {
                        self.loader.bad_value(
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
                self.loader.push(
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
            self.loader.poison_var(&name);
        }
    }
}
