//! The [`Loader`] every pass shares: the directory, the options, the values of variables and
//! locals, the diagnostics so far; evaluating an expression in it, and finishing the load
//! (sorting diagnostics, scrubbing secrets).

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use hcl::Value;
use hcl::edit::Span;
use hcl::edit::expr::Expression;
use hcl::edit::structure::Attribute;
use hcl::eval::{Context, Evaluate};

use crate::diag::{Diagnostic, Diagnostics, Severity};
use crate::expr;
use crate::expr::{FUNCTIONS, Problem, Root};
use crate::spec::Config;

use kiln_proto::store::{SCHEMES, scheme_list};

use super::hints::{code_list, suggest};
use super::options::LoadOptions;
use super::secrets::{scrub, secret_needles};
use super::source::SourceFile;

/// Why a value does not fit an attribute.
pub(crate) enum Bad {
    /// The wrong kind of value (a string where a number is expected, ...).
    Type(String),
    /// The right kind, but out of range or not one of the accepted values.
    Value(String),
}

/// A value a name resolves to, and whether it derives from a sensitive variable.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub(crate) value: Value,
    pub(crate) sensitive: bool,
}

/// What an expression may refer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Nothing: variable defaults, variable files, `--var` values (functions are fine).
    Literal,
    /// `var.NAME` only: validation rules.
    Validation,
    /// `var.NAME` and `local.NAME`: locals, clusters and jobs.
    Config,
}

/// Holds what the whole load shares: the directory, the options, the values of variables and
/// locals, and the diagnostics collected so far.
pub(crate) struct Loader<'d> {
    /// The directory as given (used to render paths).
    pub(super) dir: &'d Path,
    /// The directory canonicalized (used to resolve relative paths in the specs).
    pub(super) base: PathBuf,
    pub(super) opts: &'d LoadOptions,
    /// Every function declared; each evaluation adds the values it refers to.
    pub(super) funcs: Context<'static>,
    /// Declared variables; `None` while (or when) a variable has no usable value.
    pub(super) vars: BTreeMap<String, Option<Resolved>>,
    /// Declared locals; `None` while (or when) a local has no usable value.
    pub(super) locals: BTreeMap<String, Option<Resolved>>,
    /// Whether every file parsed: when not, an unknown name may be declared in a broken file,
    /// so it is not reported.
    pub(super) complete: bool,
    /// Values of sensitive variables and of what was computed from them: scrubbed from every
    /// diagnostic's text.
    pub(super) secrets: Vec<Value>,
    /// The files in load order, to sort diagnostics by file then position.
    pub(super) files: Vec<PathBuf>,
    pub(super) diags: Vec<Diagnostic>,
    /// The model kinds of each worker binary asked so far (`None`: it could not answer).
    pub(super) catalogs: BTreeMap<Option<PathBuf>, Option<kiln_proto::models::Catalog>>,
    /// The storage of the cluster of the job being decoded: where `kiln://` data is.
    pub(super) storage: Option<crate::spec::StorageSpec>,
    /// The dataset version files the dataset being decoded reads.
    pub(super) pins: Vec<crate::spec::DataPin>,
}

impl<'d> Loader<'d> {
    pub(super) fn new(dir: &'d Path, opts: &'d LoadOptions) -> Loader<'d> {
        Loader {
            dir,
            base: canonical(dir),
            opts,
            funcs: expr::functions(),
            vars: BTreeMap::new(),
            locals: BTreeMap::new(),
            complete: true,
            secrets: Vec::new(),
            files: Vec::new(),
            diags: Vec::new(),
            catalogs: BTreeMap::new(),
            storage: None,
            pins: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, diagnostic: Diagnostic) {
        self.diags.push(diagnostic);
    }

    pub(crate) fn dir(&self) -> &'d Path {
        self.dir
    }

    pub(crate) fn options(&self) -> &'d LoadOptions {
        self.opts
    }

    pub(crate) fn functions(&self) -> &Context<'static> {
        &self.funcs
    }

    pub(crate) fn complete(&self) -> bool {
        self.complete
    }

    pub(crate) fn declare_var(&mut self, name: &str) {
        self.vars.insert(name.to_owned(), None);
    }

    pub(crate) fn var_declared(&self, name: &str) -> bool {
        self.vars.contains_key(name)
    }

    pub(crate) fn var_names(&self) -> Vec<String> {
        self.vars.keys().cloned().collect()
    }

    pub(crate) fn var_sensitive(&self, name: &str) -> bool {
        self.vars
            .get(name)
            .is_some_and(|r| r.as_ref().is_some_and(|r| r.sensitive))
    }

    pub(crate) fn var_value(&self, name: &str) -> Option<&Value> {
        self.vars.get(name)?.as_ref().map(|r| &r.value)
    }

    pub(crate) fn define_var(&mut self, name: &str, value: Value, sensitive: bool) {
        if sensitive {
            self.secrets.push(value.clone());
        }
        self.vars
            .insert(name.to_owned(), Some(Resolved { value, sensitive }));
    }

    pub(crate) fn poison_var(&mut self, name: &str) {
        self.vars.insert(name.to_owned(), None);
    }

    pub(crate) fn declare_local(&mut self, name: &str) {
        self.locals.insert(name.to_owned(), None);
    }

    pub(crate) fn define_local(&mut self, name: &str, value: Resolved) {
        self.locals.insert(name.to_owned(), Some(value));
    }

    pub(super) fn finish(self, config: Option<Config>) -> Result<Config, Diagnostics> {
        let mut diags = self.diags;
        let rank = |file: &Path| {
            self.files
                .iter()
                .position(|f| f == file)
                .map_or(0, |i| i + 1)
        };
        diags.sort_by_key(|d| (rank(&d.file), d.line, d.col));
        let has_errors = diags.iter().any(|d| d.severity == Severity::Error);
        match config {
            Some(config) if !has_errors => Ok(Config {
                warnings: diags,
                ..config
            }),
            _ => {
                if !has_errors {
                    diags.push(Diagnostic::file_error(
                        self.dir,
                        "The configuration could not be loaded",
                    ));
                }
                let needles = secret_needles(&self.secrets);
                for diagnostic in &mut diags {
                    scrub(diagnostic, &needles);
                }
                Err(Diagnostics(diags))
            }
        }
    }

    /// Evaluates an attribute's expression (which may refer to variables and locals); `None`
    /// (reported) when it cannot be evaluated.
    pub(super) fn eval(&mut self, src: &SourceFile, attr: &Attribute) -> Option<Value> {
        self.evaluate(src, &attr.value, attr.key.as_str(), Scope::Config)
            .map(|resolved| resolved.value)
    }

    /// Evaluates `expr` (the value of `what`) in `scope`. `None` when it cannot be evaluated:
    /// reported, unless it refers to something that has no value because of a mistake
    /// reported elsewhere.
    pub(crate) fn evaluate(
        &mut self,
        src: &SourceFile,
        expr: &Expression,
        what: &str,
        scope: Scope,
    ) -> Option<Resolved> {
        let walk = expr::walk(expr);
        let mut ok = true;
        // A bare word as the whole value is most likely a string without its quotes.
        let quote_hint = match expr {
            Expression::Variable(word) => {
                Some(format!("strings must be quoted: `\"{}\"`", word.as_str()))
            }
            _ => None,
        };
        for problem in &walk.problems {
            ok = false;
            let diagnostic = match problem {
                Problem::BareRoot { root, span } => src
                    .error(
                        span.clone(),
                        format!("Invalid reference `{}` in `{what}`", root.keyword()),
                    )
                    .with_detail(format!(
                        "`{0}` must be followed by a name, as in `{0}.NAME`.",
                        root.keyword()
                    )),
                Problem::UnknownName { name, span } => src
                    .error(span.clone(), format!("Unknown name `{name}` in `{what}`"))
                    .with_detail(
                        "An expression can refer to `var.NAME`, `local.NAME`, and the names bound by an enclosing `for`.",
                    ),
                Problem::UnknownFunction { name, span } => {
                    let diagnostic = src.error(span.clone(), format!("Unknown function `{name}`"));
                    let diagnostic = match suggest(name, FUNCTIONS.iter().copied()) {
                        Some(close) => diagnostic.with_hint(format!("did you mean `{close}`?")),
                        None => diagnostic.with_detail(format!(
                            "The functions are {}.",
                            code_list(FUNCTIONS.iter().copied())
                        )),
                    };
                    self.push(diagnostic);
                    continue;
                }
            };
            self.push(match &quote_hint {
                Some(hint) => diagnostic.with_hint(hint.clone()),
                None => diagnostic,
            });
        }

        let mut sensitive = false;
        let mut vars = hcl::Map::new();
        let mut locals = hcl::Map::new();
        for reference in &walk.refs {
            let name = &reference.name;
            let keyword = reference.root.keyword();
            let not_here = match (scope, reference.root) {
                (Scope::Literal, _) => Some((
                    "Variables and locals are not allowed here",
                    "A variable's `default`, `description` and `sensitive`, and the values in variable files and on the command line, cannot refer to variables or locals (functions are fine).",
                )),
                (Scope::Validation, Root::Local) => Some((
                    "Locals are not allowed in a validation rule",
                    "A validation rule can refer to variables only.",
                )),
                _ => None,
            };
            if let Some((summary, detail)) = not_here {
                ok = false;
                self.push(
                    src.error(
                        reference.span.clone(),
                        format!("{summary}: `{keyword}.{name}`"),
                    )
                    .with_detail(detail),
                );
                continue;
            }
            let table = match reference.root {
                Root::Var => &self.vars,
                Root::Local => &self.locals,
            };
            match table.get(name) {
                Some(Some(resolved)) => {
                    sensitive |= resolved.sensitive;
                    let value = resolved.value.clone();
                    match reference.root {
                        Root::Var => vars.insert(name.clone(), value),
                        Root::Local => locals.insert(name.clone(), value),
                    };
                }
                // Declared, but without a value because of a mistake reported elsewhere.
                Some(None) => ok = false,
                None => {
                    ok = false;
                    if !self.complete {
                        continue;
                    }
                    let (noun, declare) = match reference.root {
                        Root::Var => (
                            "variable",
                            format!("declare it with `variable \"{name}\" {{ ... }}`"),
                        ),
                        Root::Local => (
                            "local value",
                            format!("define it in a `locals {{ ... }}` block: `{name} = ...`"),
                        ),
                    };
                    let diagnostic = src.error(
                        reference.span.clone(),
                        format!("Undeclared {noun} `{keyword}.{name}`"),
                    );
                    let diagnostic = match suggest(name, table.keys().map(String::as_str)) {
                        Some(close) => {
                            diagnostic.with_hint(format!("did you mean `{keyword}.{close}`?"))
                        }
                        None => diagnostic.with_hint(declare),
                    };
                    self.push(diagnostic);
                }
            }
        }
        if !ok {
            return None;
        }

        let prepared = expr::prepare(expr, &self.base);
        let mut ctx = self.funcs.clone();
        ctx.declare_var("var", Value::Object(vars));
        ctx.declare_var("local", Value::Object(locals));
        match prepared.expr.evaluate(&ctx) {
            Ok(value) => {
                if sensitive {
                    self.secrets.push(value.clone());
                }
                Some(Resolved { value, sensitive })
            }
            Err(err) => {
                let (span, message) = expr::locate(&err, &prepared);
                self.push(src.error(
                    span.or_else(|| expr.span()),
                    format!("Cannot evaluate `{what}`: {message}"),
                ));
                None
            }
        }
    }

    pub(crate) fn bad_value(
        &mut self,
        src: &SourceFile,
        span: Option<Range<usize>>,
        name: &str,
        bad: Bad,
    ) {
        let summary = match bad {
            Bad::Type(message) => format!("Wrong type for `{name}`: {message}"),
            Bad::Value(message) => format!("Invalid value for `{name}`: {message}"),
        };
        self.push(src.error(span, summary));
    }

    /// A path from the configuration, made absolute against the configuration directory.
    pub(super) fn resolve_path(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        let joined = if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base.join(path)
        };
        // Drops `.` components; `..` is kept (the target need not exist, so no canonicalize).
        joined.components().collect()
    }

    /// A storage URL: relative `file://` paths are made absolute, other schemes pass through.
    /// The error is a summary and a hint.
    pub(super) fn resolve_url(&self, url: &str) -> Result<String, (String, String)> {
        if let Some(path) = url.strip_prefix("file://") {
            if path.trim().is_empty() {
                return Err((
                    "Invalid value for `url`: empty `file://` path".to_owned(),
                    "write `file://PATH`; a relative PATH is resolved against the configuration directory".to_owned(),
                ));
            }
            return Ok(format!("file://{}", self.resolve_path(path).display()));
        }
        let scheme = url.split_once("://").map(|(scheme, _)| scheme);
        let valid_scheme = scheme.is_some_and(|s| {
            s.starts_with(|c: char| c.is_ascii_alphabetic())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        });
        match scheme {
            Some(scheme) if valid_scheme && !SCHEMES.contains(&scheme) => Err((
                format!("Invalid value for `url`: this build of kiln cannot open `{scheme}://` storage"),
                format!(
                    "the schemes it can open: {}; write `file://PATH` for a local directory (relative to the configuration directory)",
                    scheme_list()
                ),
            )),
            _ if valid_scheme => Ok(url.to_owned()),
            _ => Err((
                format!("Invalid value for `url`: {url:?} has no scheme"),
                "write `file://PATH` for a local directory (relative to the configuration directory)".to_owned(),
            )),
        }
    }
}

fn canonical(dir: &Path) -> PathBuf {
    dir.canonicalize()
        .or_else(|_| std::path::absolute(dir))
        .unwrap_or_else(|_| dir.to_path_buf())
}
