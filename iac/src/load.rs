//! Loading a configuration directory: reads every `*.hcl` file, parses it with `hcl::edit`
//! (which keeps byte spans), resolves input variables (`vars.rs`) and local values, evaluates
//! each attribute's expression to an `hcl::Value` (`expr.rs`), and decodes the values by hand
//! into the [`spec`](crate::spec) types, so that every mistake can be reported at its
//! `file:line:col`.
//!
//! It reports every mistake it can find (across all files) rather than stopping at the
//! first, and never panics. It does not provision anything and does not read datasets beyond
//! a CSV header.
//!
//! Why not `hcl::from_str` + serde: serde gives no locations for semantic errors, and
//! decoding an expression into a `String` silently stringifies it.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hcl::Value;
use hcl::edit::Span;
use hcl::edit::expr::Expression;
use hcl::edit::structure::{Attribute, Block, Body, Structure};
use hcl::eval::{Context, Evaluate};

use crate::diag::{Diagnostic, Diagnostics, Severity};
use crate::expr::{self, FUNCTIONS, Problem, Root, describe};
use crate::spec::{
    Backend, CheckpointSpec, ClusterSpec, Collective, Config, CoordinatorSpec, DataSource,
    DatasetSpec, DeploySpec, GateSpec, JobSpec, ModelSpec, NodePoolSpec, OptimizerSpec,
    ProviderKind, RestartSpec, StateSpec, StorageSpec, TrainingSpec,
};
use crate::vars::LoadOptions;

/// Loads every `*.hcl` file of `dir` (in file-name order) into one validated [`Config`], with
/// variable values from their defaults and the `KILN_VAR_NAME` environment variables.
///
/// Same as [`load_dir_with`] with [`LoadOptions::from_env`].
///
/// # Errors
///
/// See [`load_dir_with`].
pub fn load_dir(dir: &Path) -> Result<Config, Diagnostics> {
    load_dir_with(dir, &LoadOptions::from_env())
}

/// Loads every `*.hcl` file of `dir` (in file-name order) into one validated [`Config`],
/// with variable values from `options` (see [`LoadOptions`] for the precedence).
///
/// Relative paths inside the configuration (storage and state locations, CSV files,
/// `file()`) are resolved against the canonicalized `dir`, which is also [`Config::dir`].
/// Paths in diagnostics and [`JobSpec::file`] are `dir` as given joined with the file name,
/// so they render the way the user typed them. Values of `sensitive` variables, and of
/// anything computed from them, never appear in a diagnostic's text: they show as
/// `(sensitive)`.
///
/// # Errors
///
/// Every problem found in any of the files (and the variable files): unreadable or missing
/// directory, no `*.hcl` file, syntax errors, unknown or mistyped attributes, missing
/// required attributes or blocks, out-of-range values, duplicate names, references that do
/// not resolve, variables without a value or failing a `validation` rule, cycles between
/// locals, expressions that cannot be evaluated, and inconsistent settings.
pub fn load_dir_with(dir: &Path, options: &LoadOptions) -> Result<Config, Diagnostics> {
    let _base = expr::BaseDir::set(&canonical(dir));
    let mut loader = Loader::new(dir, options);
    let config = loader.load();
    loader.finish(config)
}

fn canonical(dir: &Path) -> PathBuf {
    dir.canonicalize()
        .or_else(|_| std::path::absolute(dir))
        .unwrap_or_else(|_| dir.to_path_buf())
}

/// Default `storage.url`.
const DEFAULT_STORAGE_URL: &str = "file://.kiln/store";
/// Default `state.path`.
const DEFAULT_STATE_PATH: &str = ".kiln/state";
/// Default `state.prefix` (etcd).
const DEFAULT_STATE_PREFIX: &str = "/kiln/";
/// Default `coordinator.listen`: an ephemeral loopback port.
const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);
/// Default `dataset.validation_split`.
const DEFAULT_VALIDATION_SPLIT: f64 = 0.1;
/// Default Adam learning rate.
const DEFAULT_LEARNING_RATE: f64 = 0.001;
/// Default `training.epochs` when `max_steps` is not given.
const DEFAULT_EPOCHS: u32 = 1;
/// Default `checkpoint.every_steps`.
const DEFAULT_EVERY_STEPS: u32 = 100;
/// Default `checkpoint.keep`.
const DEFAULT_KEEP: u32 = 3;
/// Default `restart.max_restarts`.
const DEFAULT_MAX_RESTARTS: u32 = 0;
/// Default `coordinator.heartbeat_interval`.
const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Default `coordinator.lease_ttl`.
const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(3);
/// Default `restart.backoff`.
const DEFAULT_BACKOFF: Duration = Duration::from_secs(5);
/// Longest `deploy.alias`.
const MAX_ALIAS_LEN: usize = 63;

const PROVIDERS: &[&str] = &["local"];
const STATE_BACKENDS: &[&str] = &["embedded", "etcd"];
const MODEL_KINDS: &[&str] = &["mlp"];
const OPTIMIZERS: &[&str] = &["adam"];
const DATASET_FORMATS: &[&str] = &["csv"];
const SYNTHETIC_SOURCES: &[&str] = &["blobs"];
const BACKENDS: &[&str] = &["cpu", "cuda"];
const COLLECTIVES: &[&str] = &["ring", "nccl"];

/// What a block looks like: its labels, and which attributes and nested blocks it accepts.
pub(crate) struct Schema {
    /// The block type, e.g. `node_pool`.
    pub(crate) ident: &'static str,
    /// What the labels mean, e.g. `["NAME"]`; empty for unlabeled blocks.
    pub(crate) labels: &'static [&'static str],
    pub(crate) attrs: &'static [&'static str],
    pub(crate) blocks: &'static [&'static str],
}

impl Schema {
    /// `node_pool "NAME" { ... }`, shown in hints.
    fn usage(&self) -> String {
        let mut usage = self.ident.to_owned();
        for label in self.labels {
            usage.push_str(&format!(" \"{label}\""));
        }
        usage.push_str(" { ... }");
        usage
    }
}

const CLUSTER: Schema = Schema {
    ident: "cluster",
    labels: &["NAME"],
    attrs: &["provider"],
    blocks: &["node_pool", "storage", "state", "coordinator"],
};
const NODE_POOL: Schema = Schema {
    ident: "node_pool",
    labels: &["NAME"],
    attrs: &[
        "count",
        "cpus_per_node",
        "memory_gb",
        "gpus_per_node",
        "gpu_type",
        "labels",
    ],
    blocks: &[],
};
const STORAGE: Schema = Schema {
    ident: "storage",
    labels: &[],
    attrs: &["url"],
    blocks: &[],
};
const STATE: Schema = Schema {
    ident: "state",
    labels: &[],
    attrs: &["backend", "path", "endpoints", "prefix"],
    blocks: &[],
};
const COORDINATOR: Schema = Schema {
    ident: "coordinator",
    labels: &[],
    attrs: &[
        "listen",
        "advertise",
        "join_token_file",
        "heartbeat_interval",
        "lease_ttl",
    ],
    blocks: &[],
};
const JOB: Schema = Schema {
    ident: "job",
    labels: &["NAME"],
    attrs: &["cluster"],
    blocks: &[
        "model",
        "dataset",
        "training",
        "checkpoint",
        "restart",
        "deploy",
    ],
};
const MODEL: Schema = Schema {
    ident: "model",
    labels: &["KIND"],
    attrs: &["inputs", "hidden", "classes"],
    blocks: &[],
};
const DATASET: Schema = Schema {
    ident: "dataset",
    labels: &["NAME"],
    attrs: &[
        "source",
        "samples",
        "features",
        "classes",
        "seed",
        "validation_split",
        "format",
        "label",
    ],
    blocks: &[],
};
const TRAINING: Schema = Schema {
    ident: "training",
    labels: &[],
    attrs: &[
        "workers",
        "min_workers",
        "max_workers",
        "batch_size",
        "epochs",
        "max_steps",
        "seed",
        "backend",
        "collective",
    ],
    blocks: &["optimizer"],
};
const OPTIMIZER: Schema = Schema {
    ident: "optimizer",
    labels: &["KIND"],
    attrs: &["learning_rate"],
    blocks: &[],
};
const CHECKPOINT: Schema = Schema {
    ident: "checkpoint",
    labels: &[],
    attrs: &["every_steps", "keep"],
    blocks: &[],
};
const RESTART: Schema = Schema {
    ident: "restart",
    labels: &[],
    attrs: &["max_restarts", "backoff"],
    blocks: &[],
};
const DEPLOY: Schema = Schema {
    ident: "deploy",
    labels: &[],
    attrs: &["alias"],
    blocks: &["gate"],
};
const GATE: Schema = Schema {
    ident: "gate",
    labels: &[],
    attrs: &["min_val_accuracy"],
    blocks: &[],
};
const TOP_LEVEL_BLOCKS: &[&str] = &["cluster", "job", "variable", "locals"];
const TOP_LEVEL_TEXT: &str =
    "Only `cluster`, `job`, `variable` and `locals` blocks may appear at the top level of a file.";

/// One parsed file, with what is needed to turn byte spans into lines and columns.
pub(crate) struct SourceFile {
    /// `dir` as given joined with the file name (or a variable file's path as given).
    pub(crate) path: PathBuf,
    text: String,
    /// Byte offset of the start of each line.
    line_starts: Vec<usize>,
}

impl SourceFile {
    fn new(path: PathBuf, text: String) -> SourceFile {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        SourceFile {
            path,
            text,
            line_starts,
        }
    }

    /// An error at `span` (byte offsets into the text; `None` points at the file start).
    pub(crate) fn error(
        &self,
        span: Option<Range<usize>>,
        summary: impl Into<String>,
    ) -> Diagnostic {
        let span = span.unwrap_or(0..0);
        let start = floor_char_boundary(&self.text, span.start);
        let line_index = self
            .line_starts
            .partition_point(|&s| s <= start)
            .saturating_sub(1);
        let line_start = self.line_starts.get(line_index).copied().unwrap_or(0);
        let line_end = self.text[line_start..]
            .find('\n')
            .map_or(self.text.len(), |i| line_start + i);
        let line_text = self.text[line_start..line_end].trim_end_matches('\r');
        // A span starting on a line's trailing `\r`s (not part of `line_text`) points just
        // past the line's end.
        let start = start.min(line_start + line_text.len());
        let end = floor_char_boundary(
            &self.text,
            span.end.clamp(start, line_start + line_text.len()),
        );
        Diagnostic {
            severity: Severity::Error,
            summary: summary.into(),
            detail: None,
            file: self.path.clone(),
            line: line_index + 1,
            col: self.text[line_start..start].chars().count() + 1,
            source_line: line_text.to_owned(),
            width: self.text[start..end].chars().count(),
            hint: None,
        }
    }

    /// `path:line:col` of `span`, for notes like "first declared at ...".
    pub(crate) fn location(&self, span: Option<Range<usize>>) -> String {
        self.error(span, "").location()
    }
}

fn floor_char_boundary(text: &str, index: usize) -> usize {
    let mut index = index.min(text.len());
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

/// The byte offset of a syntax error.
///
/// hcl-edit clamps the offset of an error at the end of input to the last byte and adds
/// one to the column instead, which would put the caret after the last line's newline:
/// undo that, so that the error lands on the (empty) line after it, like any other.
fn syntax_error_offset(text: &str, location: &hcl::edit::parser::Location) -> usize {
    let offset = floor_char_boundary(text, location.offset());
    if offset + 1 == text.len() {
        let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
        if location.column() > text[line_start..].chars().count() {
            return text.len();
        }
    }
    offset
}

/// The `*.hcl` files of `dir`, sorted by name, as `dir` joined with the name (the file set of
/// a configuration directory, for the loader and `kiln fmt`). `None` when the directory
/// cannot be read or holds no such file; every problem is pushed to `diags`.
pub(crate) fn hcl_files(dir: &Path, diags: &mut Vec<Diagnostic>) -> Option<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => {
            let summary = match err.kind() {
                std::io::ErrorKind::NotFound => "Configuration directory not found",
                std::io::ErrorKind::NotADirectory => "The configuration path is not a directory",
                _ => "Cannot read the configuration directory",
            };
            diags.push(Diagnostic::file_error(dir, summary).with_detail(err.to_string()));
            return None;
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => {
                let name = entry.file_name();
                let path = dir.join(&name);
                // A broken link (dangling, a loop) is kept, so that reading it reports why.
                let broken_link = entry.file_type().is_ok_and(|t| t.is_symlink())
                    && std::fs::metadata(&path).is_err();
                if path.extension().is_some_and(|ext| ext == "hcl")
                    && (path.is_file() || broken_link)
                {
                    names.push(name);
                }
            }
            Err(err) => diags.push(
                Diagnostic::file_error(dir, "Cannot read the configuration directory")
                    .with_detail(err.to_string()),
            ),
        }
    }
    names.sort();
    if names.is_empty() {
        diags.push(
            Diagnostic::file_error(dir, "No configuration files")
                .with_detail("The directory contains no `*.hcl` file."),
        );
        return None;
    }
    Some(names.into_iter().map(|name| dir.join(name)).collect())
}

/// The diagnostic for a file `hcl::edit` cannot parse: located at the error, with a hint for
/// the common mistakes.
pub(crate) fn syntax_error(
    path: PathBuf,
    text: String,
    err: &hcl::edit::parser::Error,
) -> Diagnostic {
    let offset = syntax_error_offset(&text, err.location());
    let src = SourceFile::new(path, text);
    let diagnostic = src.error(
        Some(offset..offset + 1),
        format!("Syntax error: {}", err.message()),
    );
    if err.message().contains("redefined attribute") {
        redefined_attribute(&src, offset, diagnostic)
    } else if second_attribute_on_one_line(&diagnostic) {
        diagnostic.with_hint(
            "a block written on one line holds a single attribute; put each attribute on a line of its own",
        )
    } else {
        diagnostic
    }
}

/// hcl-edit refuses an attribute set twice in one body as a syntax error at the second key:
/// name the attribute, underline it, and point at the first one.
fn redefined_attribute(src: &SourceFile, offset: usize, diagnostic: Diagnostic) -> Diagnostic {
    let rest = &src.text[offset.min(src.text.len())..];
    let key_len = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(rest.len());
    let key = &rest[..key_len];
    if key.is_empty() {
        return diagnostic;
    }
    // The first definition: going up from the second one within the same block (best effort:
    // braces inside strings are counted too), the line that starts with `key =`.
    let line_start = src.text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let mut depth = 0i64;
    let mut first = None;
    for (index, line) in src.text[..line_start]
        .lines()
        .enumerate()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        depth += line.matches('}').count() as i64 - line.matches('{').count() as i64;
        if depth < 0 {
            break;
        }
        let trimmed = line.trim_start();
        let sets_key = trimmed
            .strip_prefix(key)
            .is_some_and(|after| after.trim_start().starts_with('='));
        if depth == 0 && sets_key {
            let col = line.len() - trimmed.len() + 1;
            first = Some(format!("{}:{}:{col}", src.path.display(), index + 1));
            break;
        }
    }
    let diagnostic = Diagnostic {
        summary: format!("Duplicate attribute `{key}`"),
        width: key.chars().count(),
        ..diagnostic
    };
    let diagnostic = match first {
        Some(first) => diagnostic.with_detail(format!("`{key}` is already set at {first}.")),
        None => diagnostic,
    };
    diagnostic.with_hint("an attribute can be set only once in a block; remove one of them")
}

/// Whether a syntax error looks like `name { a = 1  b = 2 }`, which HCL does not allow.
fn second_attribute_on_one_line(diagnostic: &Diagnostic) -> bool {
    let before: String = diagnostic
        .source_line
        .chars()
        .take(diagnostic.col.saturating_sub(1))
        .collect();
    let in_one_line_block = before
        .rfind('{')
        .is_some_and(|brace| before[brace..].contains('=') && !before[brace..].contains('}'));
    in_one_line_block && diagnostic.summary.contains("block body")
}

/// From the block type to its last label: where "missing attribute" errors point.
pub(crate) fn header_span(block: &Block) -> Option<Range<usize>> {
    let start = block.ident.span()?;
    let end = block
        .labels
        .last()
        .and_then(|label| label.span())
        .unwrap_or_else(|| start.clone());
    Some(start.start..end.end.max(start.end))
}

/// Where errors about an attribute's value point (the value, else the whole attribute).
pub(crate) fn value_span(attr: &Attribute) -> Option<Range<usize>> {
    attr.value.span().or_else(|| attr.span())
}

/// The closest candidate to `name`, if it is close enough to be a plausible typo.
pub(crate) fn suggest<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let name_lower = name.to_lowercase();
    candidates
        .into_iter()
        .map(|c| {
            (
                strsim::damerau_levenshtein(&name_lower, &c.to_lowercase()),
                c,
            )
        })
        .filter(|&(distance, c)| {
            let longest = name.chars().count().max(c.chars().count());
            distance <= (longest / 3).max(1)
        })
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, c)| c)
}

/// "`a`, `b`, `c`".
pub(crate) fn code_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    items
        .into_iter()
        .map(|item| format!("`{item}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Hint for a value that must be one of `known`: a suggestion when one is close, and the list.
fn one_of_hint(value: &str, known: &[&str], noun: &str) -> String {
    let list = code_list(known.iter().copied());
    let known_text = if known.len() == 1 {
        format!("the only known {noun} is {list}")
    } else {
        format!("known {noun}s: {list}")
    };
    match suggest(value, known.iter().copied()) {
        Some(close) if known.len() == 1 => format!("did you mean `{close}`?"),
        Some(close) => format!("did you mean `{close}`? ({known_text})"),
        None => known_text,
    }
}

/// The texts a sensitive value can appear as in a message: its strings (as written and
/// quoted) and numbers, longest first.
fn secret_needles(secrets: &[Value]) -> Vec<String> {
    fn leaves(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::String(s) if !s.is_empty() => {
                out.push(format!("{s:?}"));
                out.push(s.clone());
            }
            Value::Number(n) => out.push(n.to_string()),
            Value::Array(items) => items.iter().for_each(|item| leaves(item, out)),
            Value::Object(map) => map.values().for_each(|item| leaves(item, out)),
            _ => {}
        }
    }
    let mut needles = Vec::new();
    for secret in secrets {
        leaves(secret, &mut needles);
    }
    needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    needles.dedup();
    needles
}

/// Replaces every sensitive text in what a diagnostic says (not in the quoted source line,
/// which is the user's own file).
fn scrub(diagnostic: &mut Diagnostic, needles: &[String]) {
    if needles.is_empty() {
        return;
    }
    let scrub_text = |text: &str| -> String {
        needles
            .iter()
            .fold(text.to_owned(), |text, needle| replace_token(&text, needle))
    };
    let summary = scrub_text(&diagnostic.summary);
    diagnostic.summary = summary;
    diagnostic.detail = diagnostic.detail.as_deref().map(scrub_text);
    diagnostic.hint = diagnostic.hint.as_deref().map(scrub_text);
}

/// Replaces `needle` by `(sensitive)` where it stands alone (not inside a longer word or
/// number); a needle of four or more characters that is not a number is replaced anywhere.
fn replace_token(text: &str, needle: &str) -> String {
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == '.';
    let numeric = needle
        .chars()
        .all(|c| c.is_ascii_digit() || "-+.e".contains(c));
    let anywhere = needle.chars().count() >= 4 && !numeric;
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut previous: Option<char> = None;
    while let Some(i) = rest.find(needle) {
        let before = rest[..i].chars().next_back().or(previous);
        let after = &rest[i + needle.len()..];
        let continues = match after.chars().next() {
            Some('.') => after[1..].starts_with(|c: char| c.is_ascii_digit()),
            Some(c) => word(c),
            None => false,
        };
        out.push_str(&rest[..i]);
        if anywhere || !(before.is_some_and(word) || continues) {
            out.push_str("(sensitive)");
        } else {
            out.push_str(needle);
        }
        previous = needle.chars().next_back();
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Why a value does not fit an attribute.
pub(crate) enum Bad {
    /// The wrong kind of value (a string where a number is expected, ...).
    Type(String),
    /// The right kind, but out of range or not one of the accepted values.
    Value(String),
}

fn expect_string(value: &Value) -> Result<String, Bad> {
    match value {
        Value::String(s) => Ok(s.clone()),
        other => Err(Bad::Type(format!(
            "expected a string, got {}",
            describe(other)
        ))),
    }
}

fn non_empty_string(value: &Value) -> Result<String, Bad> {
    let s = expect_string(value)?;
    if s.trim().is_empty() {
        return Err(Bad::Value("must not be empty".to_owned()));
    }
    Ok(s)
}

/// Checks `HOST:PORT` (a name or an address, IPv6 in brackets; a port from 1 to 65535).
/// The error completes a sentence about the value.
fn check_host_port(text: &str) -> Result<(), String> {
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err("has no port".to_owned());
    };
    let host_ok = !host.is_empty()
        && (host.starts_with('[') && host.ends_with(']')
            || host
                .chars()
                .all(|c| c.is_alphanumeric() || "-._".contains(c)));
    if !host_ok {
        return Err("does not start with a host name or address".to_owned());
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(()),
        _ => Err(format!("has an invalid port {port:?}")),
    }
}

/// A duration such as `500ms`, `2s`, `1m30s`, `1.5h`: numbers with units `ms`, `s`, `m`, `h`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0f64;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit..];
        total += number * seconds;
    }
    Duration::try_from_secs_f64(total).ok()
}

fn expect_duration(value: &Value) -> Result<Duration, Bad> {
    let text = expect_string(value)?;
    parse_duration(&text).ok_or_else(|| {
        Bad::Value(format!(
            "{text:?} is not a duration such as \"500ms\", \"2s\", \"1m30s\" (units: ms, s, m, h)"
        ))
    })
}

fn expect_positive_duration(value: &Value) -> Result<Duration, Bad> {
    match expect_duration(value)? {
        d if d.is_zero() => Err(Bad::Value(
            "a zero duration; it must be positive".to_owned(),
        )),
        d => Ok(d),
    }
}

fn expect_number(value: &Value) -> Result<f64, Bad> {
    match value {
        Value::Number(n) => n
            .as_f64()
            .filter(|x| x.is_finite())
            .ok_or_else(|| Bad::Value(format!("expected a finite number, got `{n}`"))),
        other => Err(Bad::Type(format!(
            "expected a number, got {}",
            describe(other)
        ))),
    }
}

/// A whole number in `min..=max`. Numbers written with a fraction that is zero (`2.0`)
/// count as whole, as in HCL's own number model.
fn expect_int(value: &Value, min: u64, max: u64) -> Result<u64, Bad> {
    let Value::Number(n) = value else {
        return Err(Bad::Type(format!(
            "expected a whole number, got {}",
            describe(value)
        )));
    };
    let whole: i128 = if let Some(u) = n.as_u64() {
        i128::from(u)
    } else if let Some(i) = n.as_i64() {
        i128::from(i)
    } else {
        match n.as_f64() {
            // Beyond 2^100 the exact value does not matter: it is out of range anyway.
            Some(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e30 => f as i128,
            _ => {
                return Err(Bad::Type(format!("expected a whole number, got `{n}`")));
            }
        }
    };
    if whole < i128::from(min) {
        return Err(Bad::Value(format!("must be at least {min}, got {n}")));
    }
    u64::try_from(whole)
        .ok()
        .filter(|&w| w <= max)
        .ok_or_else(|| Bad::Value(format!("must be at most {max}, got {n}")))
}

fn expect_u32(value: &Value, min: u32) -> Result<u32, Bad> {
    expect_int(value, min.into(), u32::MAX.into()).map(|n| u32::try_from(n).unwrap_or(u32::MAX))
}

/// The outcome of reading one attribute.
enum Get<'b, T> {
    /// Not written.
    Missing,
    /// Written but unusable; already reported.
    Invalid,
    /// Written and valid.
    Found(T, &'b Attribute),
}

/// Why [`Get`] found no value.
enum Absent {
    Missing,
    Invalid,
}

impl<T> From<Absent> for Get<'_, T> {
    fn from(absent: Absent) -> Self {
        match absent {
            Absent::Missing => Get::Missing,
            Absent::Invalid => Get::Invalid,
        }
    }
}

impl<T> Get<'_, T> {
    /// The value, `default` when absent, `None` when invalid (already reported).
    fn or(self, default: T) -> Option<T> {
        match self {
            Get::Missing => Some(default),
            Get::Invalid => None,
            Get::Found(value, _) => Some(value),
        }
    }

    /// `Some(None)` when absent, `None` when invalid (already reported).
    fn optional(self) -> Option<Option<T>> {
        match self {
            Get::Missing => Some(None),
            Get::Invalid => None,
            Get::Found(value, _) => Some(Some(value)),
        }
    }
}

/// A decoded `model` block, with the attributes the job-level cross-checks point at.
struct DecodedModel<'b> {
    spec: ModelSpec,
    block: &'b Block,
    inputs: &'b Attribute,
    classes: &'b Attribute,
}

/// A decoded `dataset` block, with where its feature and class counts come from.
struct DecodedDataset {
    spec: DatasetSpec,
    features_origin: String,
    classes_origin: String,
}

/// A decoded `training` block, with the attributes the job-level cross-checks point at.
struct DecodedTraining<'b> {
    spec: TrainingSpec,
    workers: &'b Attribute,
    backend: Option<&'b Attribute>,
}

/// How many of `samples` stay for training after `validation_split` is taken out: the
/// worker's split, which rounds the validation share.
fn training_rows(samples: u64, validation_split: f64) -> u64 {
    let validation = ((samples as f64) * validation_split).round() as u64;
    samples - validation.min(samples)
}

/// What a `source` string names.
enum SourceKind {
    Blobs,
    Csv { path: String },
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
    dir: &'d Path,
    /// The directory canonicalized (used to resolve relative paths in the specs).
    base: PathBuf,
    opts: &'d LoadOptions,
    /// Every function declared; each evaluation adds the values it refers to.
    funcs: Context<'static>,
    /// Declared variables; `None` while (or when) a variable has no usable value.
    vars: BTreeMap<String, Option<Resolved>>,
    /// Declared locals; `None` while (or when) a local has no usable value.
    locals: BTreeMap<String, Option<Resolved>>,
    /// Whether every file parsed: when not, an unknown name may be declared in a broken file,
    /// so it is not reported.
    complete: bool,
    /// Values of sensitive variables and of what was computed from them: scrubbed from every
    /// diagnostic's text.
    secrets: Vec<Value>,
    /// The files in load order, to sort diagnostics by file then position.
    files: Vec<PathBuf>,
    diags: Vec<Diagnostic>,
}

impl<'d> Loader<'d> {
    fn new(dir: &'d Path, opts: &'d LoadOptions) -> Loader<'d> {
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

    fn finish(self, config: Option<Config>) -> Result<Config, Diagnostics> {
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

    /// The `*.hcl` files of the directory, sorted by name, as `dir` joined with the name.
    fn list_files(&mut self) -> Option<Vec<PathBuf>> {
        hcl_files(self.dir, &mut self.diags)
    }

    /// Reads and parses one file; `None` (reported) when it cannot be read or parsed.
    /// `what` names the kind of file in messages.
    fn parse_file(&mut self, path: PathBuf, what: &str) -> Option<(SourceFile, Body)> {
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) => {
                self.push(
                    Diagnostic::file_error(&path, format!("Cannot read {what}"))
                        .with_detail(err.to_string()),
                );
                return None;
            }
        };
        match hcl::edit::parser::parse_body(&text) {
            Ok(body) => Some((SourceFile::new(path, text), body)),
            Err(err) => {
                self.push(syntax_error(path, text, &err));
                None
            }
        }
    }

    fn load(&mut self) -> Option<Config> {
        let paths = self.list_files()?;
        self.files.clone_from(&paths);
        self.files.extend(self.opts.var_files.iter().cloned());
        let mut files = Vec::new();
        for path in paths {
            match self.parse_file(path, "configuration file") {
                Some(file) => files.push(file),
                None => self.complete = false,
            }
        }
        let mut var_files = Vec::new();
        for path in &self.opts.var_files {
            if let Some(file) = self.parse_file(path.clone(), "variable file") {
                var_files.push(file);
            }
        }

        // Sorted by kind first: variables, then locals, then clusters (jobs refer to them).
        let mut variable_blocks = Vec::new();
        let mut locals_blocks = Vec::new();
        let mut cluster_blocks = Vec::new();
        let mut job_blocks = Vec::new();
        for (src, body) in &files {
            for structure in body.iter() {
                let block = match structure {
                    Structure::Block(block) => block,
                    Structure::Attribute(attr) => {
                        self.push(
                            src.error(
                                attr.key.span(),
                                format!(
                                    "Unexpected attribute `{}` at the top level",
                                    attr.key.as_str()
                                ),
                            )
                            .with_detail(TOP_LEVEL_TEXT),
                        );
                        continue;
                    }
                };
                match block.ident.as_str() {
                    "variable" => variable_blocks.push((src, block)),
                    "locals" => locals_blocks.push((src, block)),
                    "cluster" => cluster_blocks.push((src, block)),
                    "job" => job_blocks.push((src, block)),
                    other => {
                        let mut diagnostic =
                            src.error(block.ident.span(), format!("Unknown block type `{other}`"));
                        diagnostic = match suggest(other, TOP_LEVEL_BLOCKS.iter().copied()) {
                            Some(close) => diagnostic.with_hint(format!("did you mean `{close}`?")),
                            None => diagnostic.with_detail(TOP_LEVEL_TEXT),
                        };
                        self.push(diagnostic);
                    }
                }
            }
        }

        self.variables(&variable_blocks, &var_files);
        self.locals(&locals_blocks);

        let mut clusters: BTreeMap<String, Option<ClusterSpec>> = BTreeMap::new();
        // References to clusters can be checked only if every cluster's name is known.
        let mut all_clusters_named = self.complete;
        let mut cluster_sites: HashMap<String, String> = HashMap::new();
        for (src, block) in cluster_blocks {
            all_clusters_named &= block.labels.len() == 1;
            let Some(name) = self.unique_name(src, block, &CLUSTER, &mut cluster_sites) else {
                continue;
            };
            let spec = self.cluster(src, block, name);
            clusters.insert(name.to_owned(), spec);
        }

        let mut jobs = BTreeMap::new();
        let mut job_sites = HashMap::new();
        for (src, block) in job_blocks {
            let Some(name) = self.unique_name(src, block, &JOB, &mut job_sites) else {
                continue;
            };
            // With a file that did not parse, an unknown cluster may just be declared there.
            if let Some(job) = self.job(src, block, name, &clusters, all_clusters_named) {
                jobs.insert(name.to_owned(), job);
            }
        }

        Some(Config {
            dir: self.base.clone(),
            clusters: clusters
                .into_iter()
                .filter_map(|(name, spec)| Some((name, spec?)))
                .collect(),
            jobs,
            // Filled in by `finish`, from the diagnostics.
            warnings: Vec::new(),
        })
    }

    /// The label of a top-level block, checked unique among the blocks of its type
    /// (`sites` maps each name to where it was first declared).
    pub(crate) fn unique_name<'b>(
        &mut self,
        src: &SourceFile,
        block: &'b Block,
        schema: &Schema,
        sites: &mut HashMap<String, String>,
    ) -> Option<&'b str> {
        if !self.check_labels(src, block, schema) {
            // Still report what is wrong inside.
            self.check_body(src, &block.body, schema);
            return None;
        }
        let label = block.labels.first()?;
        let name = label.as_str();
        if let Some(first) = sites.get(name) {
            self.push(
                src.error(
                    label.span(),
                    format!("Duplicate {} {name:?}", schema.ident),
                )
                .with_detail(format!(
                    "A {} named {name:?} is already declared at {first}.",
                    schema.ident
                ))
                .with_hint(format!("rename one of them; {} names must be unique across the files of the directory", schema.ident)),
            );
            return None;
        }
        sites.insert(name.to_owned(), src.location(label.span()));
        Some(name)
    }

    /// Checks the number of labels (reported when wrong; empty labels are refused too).
    pub(crate) fn check_labels(
        &mut self,
        src: &SourceFile,
        block: &Block,
        schema: &Schema,
    ) -> bool {
        let (want, got) = (schema.labels.len(), block.labels.len());
        if want == got {
            if let Some(empty) = block
                .labels
                .iter()
                .find(|label| label.as_str().trim().is_empty())
            {
                self.push(
                    src.error(
                        empty.span(),
                        format!("Empty label on `{}` block", schema.ident),
                    )
                    .with_hint(format!("write `{}`", schema.usage())),
                );
                return false;
            }
            return true;
        }
        let span = match block.labels.get(want) {
            Some(extra) => extra.span(),
            None => header_span(block),
        };
        let expected = match want {
            0 => "no label".to_owned(),
            1 => format!("1 label ({})", schema.labels.join(", ")),
            n => format!("{n} labels ({})", schema.labels.join(", ")),
        };
        self.push(
            src.error(
                span,
                format!(
                    "Wrong number of labels on `{}` block: expected {expected}, found {got}",
                    schema.ident
                ),
            )
            .with_hint(format!("write `{}`", schema.usage())),
        );
        false
    }

    /// Reports attributes and blocks the schema does not know.
    pub(crate) fn check_body(&mut self, src: &SourceFile, body: &Body, schema: &Schema) {
        for structure in body.iter() {
            match structure {
                Structure::Attribute(attr) => {
                    let name = attr.key.as_str();
                    if schema.attrs.contains(&name) {
                        continue;
                    }
                    let diagnostic = if schema.blocks.contains(&name) {
                        src.error(
                            attr.key.span(),
                            format!("`{name}` is a block, not an attribute"),
                        )
                        .with_hint(format!("write `{name} {{ ... }}`"))
                    } else {
                        let diagnostic =
                            src.error(attr.key.span(), format!("Unknown attribute `{name}`"));
                        self.unknown(diagnostic, name, schema.attrs, schema, "attributes")
                    };
                    self.push(diagnostic);
                }
                Structure::Block(block) => {
                    let name = block.ident.as_str();
                    if schema.blocks.contains(&name) {
                        continue;
                    }
                    let diagnostic = if schema.attrs.contains(&name) {
                        src.error(
                            block.ident.span(),
                            format!("`{name}` is an attribute, not a block"),
                        )
                        .with_hint(format!("write `{name} = ...`"))
                    } else {
                        let diagnostic =
                            src.error(block.ident.span(), format!("Unknown block `{name}`"));
                        self.unknown(diagnostic, name, schema.blocks, schema, "blocks")
                    };
                    self.push(diagnostic);
                }
            }
        }
    }

    /// Adds a "did you mean" hint, or the list of what is accepted.
    fn unknown(
        &self,
        diagnostic: Diagnostic,
        name: &str,
        known: &[&str],
        schema: &Schema,
        what: &str,
    ) -> Diagnostic {
        match suggest(name, known.iter().copied()) {
            Some(close) => diagnostic.with_hint(format!("did you mean `{close}`?")),
            None if known.is_empty() => {
                diagnostic.with_detail(format!("A `{}` block has no nested {what}.", schema.ident))
            }
            None => diagnostic.with_detail(format!(
                "A `{}` block accepts the {what} {}.",
                schema.ident,
                code_list(known.iter().copied())
            )),
        }
    }

    /// Evaluates an attribute's expression (which may refer to variables and locals); `None`
    /// (reported) when it cannot be evaluated.
    fn eval(&mut self, src: &SourceFile, attr: &Attribute) -> Option<Value> {
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

        let prepared = expr::prepare(expr);
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

    /// Attribute `name` of `body` and its value, unless it is not written, is `null` (as in
    /// Terraform, "not set": `x = cond ? 1 : null`), or failed to evaluate (already reported).
    fn eval_set<'b>(
        &mut self,
        src: &SourceFile,
        body: &'b Body,
        name: &str,
    ) -> Result<(&'b Attribute, Value), Absent> {
        let attr = body.get_attribute(name).ok_or(Absent::Missing)?;
        let value = self.eval(src, attr).ok_or(Absent::Invalid)?;
        if value.is_null() {
            return Err(Absent::Missing);
        }
        Ok((attr, value))
    }

    /// Reads attribute `name` of `body` through `convert` (errors reported at the value).
    fn get<'b, T>(
        &mut self,
        src: &SourceFile,
        body: &'b Body,
        name: &str,
        convert: impl FnOnce(&Value) -> Result<T, Bad>,
    ) -> Get<'b, T> {
        let (attr, value) = match self.eval_set(src, body, name) {
            Ok(found) => found,
            Err(absent) => return absent.into(),
        };
        match convert(&value) {
            Ok(value) => Get::Found(value, attr),
            Err(bad) => {
                self.bad_value(src, value_span(attr), name, bad);
                Get::Invalid
            }
        }
    }

    fn get_u32<'b>(
        &mut self,
        src: &SourceFile,
        body: &'b Body,
        name: &str,
        min: u32,
    ) -> Get<'b, u32> {
        self.get(src, body, name, |v| expect_u32(v, min))
    }

    fn get_u64<'b>(
        &mut self,
        src: &SourceFile,
        body: &'b Body,
        name: &str,
        min: u64,
    ) -> Get<'b, u64> {
        self.get(src, body, name, |v| expect_int(v, min, u64::MAX))
    }

    fn get_string<'b>(&mut self, src: &SourceFile, body: &'b Body, name: &str) -> Get<'b, String> {
        self.get(src, body, name, expect_string)
    }

    /// A list of whole numbers; a bad element is reported at the element when the list is
    /// written literally.
    fn get_u32_list<'b>(
        &mut self,
        src: &SourceFile,
        body: &'b Body,
        name: &str,
        min: u32,
    ) -> Get<'b, Vec<u32>> {
        self.get_list(src, body, name, "whole numbers", |v| expect_u32(v, min))
    }

    /// A list of `what`; a bad element is reported at the element when the list is written
    /// literally.
    fn get_list<'b, T>(
        &mut self,
        src: &SourceFile,
        body: &'b Body,
        name: &str,
        what: &str,
        convert: impl Fn(&Value) -> Result<T, Bad>,
    ) -> Get<'b, Vec<T>> {
        let (attr, value) = match self.eval_set(src, body, name) {
            Ok(found) => found,
            Err(absent) => return absent.into(),
        };
        let Value::Array(items) = &value else {
            let bad = Bad::Type(format!(
                "expected a list of {what}, got {}",
                describe(&value)
            ));
            self.bad_value(src, value_span(attr), name, bad);
            return Get::Invalid;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match convert(item) {
                Ok(item) => out.push(item),
                Err(bad) => {
                    let span = crate::vars::span_at(&attr.value, &[crate::vars::Seg::Index(i)]);
                    self.bad_value(src, span, &format!("{name}[{i}]"), bad);
                    ok = false;
                }
            }
        }
        if ok {
            Get::Found(out, attr)
        } else {
            Get::Invalid
        }
    }

    /// A map (an object) of `what`; a bad element is reported at the element when the map is
    /// written literally.
    fn get_map<'b, T>(
        &mut self,
        src: &SourceFile,
        body: &'b Body,
        name: &str,
        what: &str,
        convert: impl Fn(&Value) -> Result<T, Bad>,
    ) -> Get<'b, BTreeMap<String, T>> {
        let (attr, value) = match self.eval_set(src, body, name) {
            Ok(found) => found,
            Err(absent) => return absent.into(),
        };
        let Value::Object(map) = &value else {
            let bad = Bad::Type(format!(
                "expected a map of {what}, got {}",
                describe(&value)
            ));
            self.bad_value(src, value_span(attr), name, bad);
            return Get::Invalid;
        };
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (key, item) in map {
            match convert(item) {
                Ok(item) => {
                    out.insert(key.clone(), item);
                }
                Err(bad) => {
                    let span =
                        crate::vars::span_at(&attr.value, &[crate::vars::Seg::Key(key.clone())]);
                    self.bad_value(src, span, &format!("{name}[{key:?}]"), bad);
                    ok = false;
                }
            }
        }
        if ok {
            Get::Found(out, attr)
        } else {
            Get::Invalid
        }
    }

    /// A required attribute: reported at the block header when missing.
    fn required<'b, T>(
        &mut self,
        src: &SourceFile,
        block: &Block,
        name: &str,
        example: &str,
        got: Get<'b, T>,
    ) -> Option<(T, &'b Attribute)> {
        match got {
            Get::Found(value, attr) => Some((value, attr)),
            Get::Invalid => None,
            Get::Missing => {
                self.push(
                    src.error(
                        header_span(block),
                        format!(
                            "Missing required attribute `{name}` in `{}` block",
                            block.ident.as_str()
                        ),
                    )
                    .with_hint(format!("add `{example}`")),
                );
                None
            }
        }
    }

    /// A string attribute that must be one of `known` (reported at the value otherwise).
    fn one_of(
        &mut self,
        src: &SourceFile,
        got: Get<'_, String>,
        default: &str,
        known: &[&str],
        noun: &str,
    ) -> Option<String> {
        match got {
            Get::Missing => Some(default.to_owned()),
            Get::Invalid => None,
            Get::Found(value, _) if known.contains(&value.as_str()) => Some(value),
            Get::Found(value, attr) => {
                self.push(
                    src.error(value_span(attr), format!("Unknown {noun} {value:?}"))
                        .with_hint(one_of_hint(&value, known, noun)),
                );
                None
            }
        }
    }

    /// The block label naming a kind (`model "mlp"`), checked against `known`.
    fn kind_label<'b>(
        &mut self,
        src: &SourceFile,
        block: &'b Block,
        schema: &Schema,
        known: &[&str],
        noun: &str,
    ) -> Option<&'b str> {
        if !self.check_labels(src, block, schema) {
            return None;
        }
        let label = block.labels.first()?;
        let kind = label.as_str();
        if known.contains(&kind) {
            return Some(kind);
        }
        self.push(
            src.error(label.span(), format!("Unknown {noun} {kind:?}"))
                .with_hint(one_of_hint(kind, known, noun)),
        );
        None
    }

    /// The only `schema` block in `body`, if any; further ones are reported.
    fn at_most_one<'b>(
        &mut self,
        src: &SourceFile,
        body: &'b Body,
        schema: &Schema,
        parent: &Schema,
    ) -> Option<&'b Block> {
        let mut blocks = body.get_blocks(schema.ident);
        let first = blocks.next()?;
        for duplicate in blocks {
            self.push(
                src.error(
                    header_span(duplicate),
                    format!("Duplicate `{}` block", schema.ident),
                )
                .with_detail(format!(
                    "A `{}` block takes one `{}` block; the first one is at {}.",
                    parent.ident,
                    schema.ident,
                    src.location(header_span(first))
                )),
            );
        }
        Some(first)
    }

    /// The `schema` block of `parent_block`, which must have exactly one.
    fn exactly_one<'b>(
        &mut self,
        src: &SourceFile,
        parent_block: &'b Block,
        schema: &Schema,
        parent: &Schema,
    ) -> Option<&'b Block> {
        let found = self.at_most_one(src, &parent_block.body, schema, parent);
        if found.is_none() {
            self.push(
                src.error(
                    header_span(parent_block),
                    format!(
                        "Missing `{}` block in `{}` block",
                        schema.ident, parent.ident
                    ),
                )
                .with_hint(format!("add `{}`", schema.usage())),
            );
        }
        found
    }

    /// A path from the configuration, made absolute against the configuration directory.
    fn resolve_path(&self, path: &str) -> PathBuf {
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
    fn resolve_url(&self, url: &str) -> Result<String, (String, &'static str)> {
        if let Some(path) = url.strip_prefix("file://") {
            if path.trim().is_empty() {
                return Err((
                    "Invalid value for `url`: empty `file://` path".to_owned(),
                    "write `file://PATH`; a relative PATH is resolved against the configuration directory",
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
        if valid_scheme {
            Ok(url.to_owned())
        } else {
            Err((
                format!("Invalid value for `url`: {url:?} has no scheme"),
                "write `file://PATH` for a local directory (relative to the configuration directory) or e.g. `s3://BUCKET/PREFIX`",
            ))
        }
    }

    fn cluster(&mut self, src: &SourceFile, block: &Block, name: &str) -> Option<ClusterSpec> {
        let body = &block.body;
        self.check_body(src, body, &CLUSTER);

        let provider = self.get_string(src, body, "provider");
        let provider = self
            .required(src, block, "provider", "provider = \"local\"", provider)
            .and_then(|(value, attr)| {
                self.one_of(src, Get::Found(value, attr), "", PROVIDERS, "provider")
            })
            .map(|_| ProviderKind::Local);

        let mut pools = Vec::new();
        let mut pools_ok = true;
        let mut pool_sites: HashMap<&str, String> = HashMap::new();
        for pool in body.get_blocks(NODE_POOL.ident) {
            if !self.check_labels(src, pool, &NODE_POOL) {
                self.check_body(src, &pool.body, &NODE_POOL);
                pools_ok = false;
                continue;
            }
            let Some(label) = pool.labels.first() else {
                continue;
            };
            let pool_name = label.as_str();
            if let Some(first) = pool_sites.get(pool_name) {
                self.push(
                    src.error(
                        label.span(),
                        format!("Duplicate node pool {pool_name:?} in cluster {name:?}"),
                    )
                    .with_detail(format!(
                        "The first node pool named {pool_name:?} is at {first}."
                    )),
                );
                pools_ok = false;
                continue;
            }
            pool_sites.insert(pool_name, src.location(label.span()));
            match self.node_pool(src, pool, pool_name) {
                Some(spec) => pools.push(spec),
                None => pools_ok = false,
            }
        }
        if body.get_blocks(NODE_POOL.ident).next().is_none() {
            self.push(
                src.error(
                    header_span(block),
                    format!("Cluster {name:?} has no `node_pool` block"),
                )
                .with_hint("add e.g. `node_pool \"default\" { count = 1 }`"),
            );
            pools_ok = false;
        }
        let total: u64 = pools.iter().map(|p| u64::from(p.count)).sum();
        if total > u64::from(u32::MAX) {
            self.push(src.error(
                header_span(block),
                format!(
                    "Cluster {name:?} has {total} nodes; at most {} are supported",
                    u32::MAX
                ),
            ));
            pools_ok = false;
        }

        let storage = match self.at_most_one(src, body, &STORAGE, &CLUSTER) {
            Some(storage) => self.storage(src, storage),
            None => self
                .resolve_url(DEFAULT_STORAGE_URL)
                .ok()
                .map(|url| StorageSpec { url }),
        };
        let state = match self.at_most_one(src, body, &STATE, &CLUSTER) {
            Some(state) => self.state(src, state),
            None => Some(StateSpec::Embedded {
                path: self.resolve_path(DEFAULT_STATE_PATH),
            }),
        };
        let coordinator = match self.at_most_one(src, body, &COORDINATOR, &CLUSTER) {
            Some(coordinator) => self.coordinator(src, coordinator),
            None => Some(CoordinatorSpec {
                listen: DEFAULT_LISTEN,
                advertise: None,
                join_token_file: None,
                heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
                lease_ttl: DEFAULT_LEASE_TTL,
            }),
        };

        Some(ClusterSpec {
            name: name.to_owned(),
            provider: provider?,
            node_pools: pools_ok.then_some(pools)?,
            storage: storage?,
            state: state?,
            coordinator: coordinator?,
        })
    }

    fn node_pool(&mut self, src: &SourceFile, block: &Block, name: &str) -> Option<NodePoolSpec> {
        let body = &block.body;
        self.check_body(src, body, &NODE_POOL);
        let count = self.get_u32(src, body, "count", 1);
        let count = self.required(src, block, "count", "count = 1", count);
        let cpus_per_node = self.get_u32(src, body, "cpus_per_node", 1).or(1);
        let memory_gb = self.get_u32(src, body, "memory_gb", 1).optional();
        let gpus_per_node = self.get_u32(src, body, "gpus_per_node", 0).or(0);
        let gpu_type = match self.get(src, body, "gpu_type", non_empty_string) {
            Get::Found(_, attr) if gpus_per_node == Some(0) => {
                self.push(
                    src.error(
                        attr.key.span(),
                        format!("`gpu_type` is set but node pool {name:?} has no GPUs"),
                    )
                    .with_hint("set `gpus_per_node` to at least 1, or remove `gpu_type`"),
                );
                None
            }
            got => got.optional(),
        };
        let labels = match self.get_map(src, body, "labels", "strings", expect_string) {
            Get::Missing => Some(BTreeMap::new()),
            Get::Invalid => None,
            Get::Found(labels, attr) => match labels.keys().find(|k| k.trim().is_empty()) {
                Some(_) => {
                    self.bad_value(
                        src,
                        value_span(attr),
                        "labels",
                        Bad::Value("label names must not be empty".to_owned()),
                    );
                    None
                }
                None => Some(labels),
            },
        };
        Some(NodePoolSpec {
            name: name.to_owned(),
            count: count?.0,
            cpus_per_node: cpus_per_node?,
            memory_gb: memory_gb?,
            gpus_per_node: gpus_per_node?,
            gpu_type: gpu_type?,
            labels: labels?,
        })
    }

    fn storage(&mut self, src: &SourceFile, block: &Block) -> Option<StorageSpec> {
        let labels_ok = self.check_labels(src, block, &STORAGE);
        self.check_body(src, &block.body, &STORAGE);
        let url = match self.get_string(src, &block.body, "url") {
            Get::Missing => self.resolve_url(DEFAULT_STORAGE_URL).ok(),
            Get::Invalid => None,
            Get::Found(url, attr) => match self.resolve_url(&url) {
                Ok(url) => Some(url),
                Err((summary, hint)) => {
                    self.push(src.error(value_span(attr), summary).with_hint(hint));
                    None
                }
            },
        };
        labels_ok.then_some(StorageSpec { url: url? })
    }

    fn state(&mut self, src: &SourceFile, block: &Block) -> Option<StateSpec> {
        let labels_ok = self.check_labels(src, block, &STATE);
        let body = &block.body;
        self.check_body(src, body, &STATE);
        let backend = self.get_string(src, body, "backend");
        let backend = self.one_of(src, backend, "embedded", STATE_BACKENDS, "state backend")?;
        let (foreign, other): (&[&str], &str) = if backend == "etcd" {
            (&["path"], "embedded")
        } else {
            (&["endpoints", "prefix"], "etcd")
        };
        let mut ok = labels_ok;
        for attr_name in foreign {
            if let Some(attr) = body.get_attribute(attr_name) {
                ok = false;
                self.push(
                    src.error(
                        attr.key.span(),
                        format!("`{attr_name}` does not apply to the `{backend}` state backend"),
                    )
                    .with_hint(format!(
                        "remove it; it only applies to `backend = \"{other}\"`"
                    )),
                );
            }
        }
        if backend == "etcd" {
            let endpoints = self.get_list(src, body, "endpoints", "strings", |value| {
                let endpoint = expect_string(value)?;
                check_host_port(
                    endpoint
                        .strip_prefix("http://")
                        .or_else(|| endpoint.strip_prefix("https://"))
                        .unwrap_or(&endpoint),
                )
                .map_err(|why| {
                    Bad::Value(format!(
                        "{endpoint:?} {why}; write `HOST:PORT` or `http://HOST:PORT`"
                    ))
                })?;
                Ok(endpoint)
            });
            let endpoints = match endpoints {
                Get::Found(endpoints, attr) if endpoints.is_empty() => {
                    self.bad_value(
                        src,
                        value_span(attr),
                        "endpoints",
                        Bad::Value("at least one endpoint is needed".to_owned()),
                    );
                    None
                }
                got => self
                    .required(
                        src,
                        block,
                        "endpoints",
                        "endpoints = [\"127.0.0.1:2379\"]",
                        got,
                    )
                    .map(|(endpoints, _)| endpoints),
            };
            let prefix = self
                .get(src, body, "prefix", non_empty_string)
                .or(DEFAULT_STATE_PREFIX.to_owned());
            return ok.then_some(StateSpec::Etcd {
                endpoints: endpoints?,
                prefix: prefix?,
            });
        }
        let path = match self.get(src, body, "path", non_empty_string) {
            Get::Missing => Some(self.resolve_path(DEFAULT_STATE_PATH)),
            Get::Invalid => None,
            Get::Found(path, _) => Some(self.resolve_path(&path)),
        };
        ok.then_some(StateSpec::Embedded { path: path? })
    }

    fn coordinator(&mut self, src: &SourceFile, block: &Block) -> Option<CoordinatorSpec> {
        let labels_ok = self.check_labels(src, block, &COORDINATOR);
        let body = &block.body;
        self.check_body(src, body, &COORDINATOR);
        let listen = self
            .get(src, body, "listen", |value| {
                let listen = expect_string(value)?;
                listen.parse::<SocketAddr>().map_err(|_| {
                    Bad::Value(format!(
                        "{listen:?} is not an IP address and port, such as \"0.0.0.0:7070\""
                    ))
                })
            })
            .or(DEFAULT_LISTEN);
        let advertise = self
            .get(src, body, "advertise", |value| {
                let advertise = expect_string(value)?;
                let (scheme, rest) = match advertise.split_once("://") {
                    Some((scheme @ ("http" | "https"), rest)) => (scheme, rest),
                    Some((scheme, _)) => {
                        return Err(Bad::Value(format!(
                            "{advertise:?} has the scheme `{scheme}`; the coordinator speaks `http` or `https`"
                        )));
                    }
                    None => ("http", advertise.as_str()),
                };
                check_host_port(rest).map_err(|why| {
                    Bad::Value(format!(
                        "{advertise:?} {why}; write `HOST:PORT` or `http://HOST:PORT`"
                    ))
                })?;
                Ok(format!("{scheme}://{rest}"))
            })
            .optional();
        let join_token_file = match self.get(src, body, "join_token_file", non_empty_string) {
            Get::Missing => Some(None),
            Get::Invalid => None,
            Get::Found(path, _) => Some(Some(self.resolve_path(&path))),
        };
        let heartbeat_interval = self
            .get(src, body, "heartbeat_interval", expect_positive_duration)
            .or(DEFAULT_HEARTBEAT_INTERVAL);
        let lease_ttl = match self.get(src, body, "lease_ttl", expect_positive_duration) {
            Get::Found(ttl, attr) => Some((ttl, Some(attr))),
            Get::Missing => Some((DEFAULT_LEASE_TTL, None)),
            Get::Invalid => None,
        };
        let mut ok = labels_ok;
        if let (Some(interval), Some((ttl, ttl_attr))) = (heartbeat_interval, lease_ttl)
            && ttl <= interval
        {
            ok = false;
            self.push(
                src.error(
                    ttl_attr.and_then(value_span).or_else(|| header_span(block)),
                    format!(
                        "`lease_ttl` ({ttl:?}) is not longer than `heartbeat_interval` ({interval:?})"
                    ),
                )
                .with_detail("A worker whose lease is not renewed within `lease_ttl` is declared dead; with a TTL this short one late heartbeat would do it.")
                .with_hint("make `lease_ttl` at least two or three heartbeat intervals"),
            );
        }
        ok.then_some(CoordinatorSpec {
            listen: listen?,
            advertise: advertise?,
            join_token_file: join_token_file?,
            heartbeat_interval: heartbeat_interval?,
            lease_ttl: lease_ttl?.0,
        })
    }

    fn job(
        &mut self,
        src: &SourceFile,
        block: &Block,
        name: &str,
        clusters: &BTreeMap<String, Option<ClusterSpec>>,
        check_refs: bool,
    ) -> Option<JobSpec> {
        let body = &block.body;
        self.check_body(src, body, &JOB);
        // Job names travel to the coordinator and into object-store paths.
        let name_ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            self.push(
                src.error(
                    block.labels.first().and_then(|l| l.span()),
                    format!("Invalid job name {name:?}"),
                )
                .with_hint("a job name uses only ASCII letters, digits, `-` and `_`"),
            );
        }

        let cluster = self.get_string(src, body, "cluster");
        let cluster = self.required(src, block, "cluster", "cluster = \"NAME\"", cluster);
        let mut cluster_spec = None;
        let mut cluster_ok = cluster.is_some();
        if let Some((cluster_name, attr)) = &cluster {
            match clusters.get(cluster_name) {
                Some(spec) => cluster_spec = spec.as_ref(),
                None => {
                    cluster_ok = false;
                    if check_refs {
                        let mut diagnostic = src.error(
                            value_span(attr),
                            format!("Unknown cluster {cluster_name:?}"),
                        );
                        diagnostic =
                            match suggest(cluster_name, clusters.keys().map(String::as_str)) {
                                Some(close) => {
                                    diagnostic.with_hint(format!("did you mean `{close}`?"))
                                }
                                None if clusters.is_empty() => diagnostic
                                    .with_detail("No cluster is declared in this directory.")
                                    .with_hint("declare one with `cluster \"NAME\" { ... }`"),
                                None => diagnostic.with_detail(format!(
                                    "Declared clusters: {}.",
                                    code_list(clusters.keys().map(String::as_str))
                                )),
                            };
                        self.push(diagnostic);
                    }
                }
            }
        }

        let model = self
            .exactly_one(src, block, &MODEL, &JOB)
            .and_then(|model| self.model(src, model));
        let dataset = self
            .exactly_one(src, block, &DATASET, &JOB)
            .and_then(|dataset| self.dataset(src, dataset));
        let training = self
            .exactly_one(src, block, &TRAINING, &JOB)
            .and_then(|training| self.training(src, training));
        let checkpoint = match self.at_most_one(src, body, &CHECKPOINT, &JOB) {
            Some(checkpoint) => self.checkpoint(src, checkpoint),
            None => Some(CheckpointSpec {
                every_steps: DEFAULT_EVERY_STEPS,
                keep: DEFAULT_KEEP,
            }),
        };
        let restart = match self.at_most_one(src, body, &RESTART, &JOB) {
            Some(restart) => self.restart(src, restart),
            None => Some(RestartSpec {
                max_restarts: DEFAULT_MAX_RESTARTS,
                backoff: DEFAULT_BACKOFF,
            }),
        };
        let deploy = match self.at_most_one(src, body, &DEPLOY, &JOB) {
            Some(deploy) => self.deploy(src, deploy).map(Some),
            None => Some(None),
        };

        // Cross-checks, each reported where the fix most likely goes.
        let mut consistent = name_ok;
        if let (Some(training), Some(cluster)) = (&training, cluster_spec)
            && training.spec.backend == Backend::Cuda
            && cluster
                .node_pools
                .iter()
                .all(|pool| pool.gpus_per_node == 0)
        {
            consistent = false;
            let pools = cluster
                .node_pools
                .iter()
                .map(|p| format!("{:?} (gpus_per_node = {})", p.name, p.gpus_per_node))
                .collect::<Vec<_>>()
                .join(", ");
            self.push(
                src.error(
                    training.backend.and_then(value_span),
                    format!(
                        "Job {name:?} uses `backend = \"cuda\"` but cluster {:?} has no GPUs",
                        cluster.name
                    ),
                )
                .with_detail(format!(
                    "Node pools of cluster {:?}: {pools}.",
                    cluster.name
                ))
                .with_hint(format!(
                    "set `gpus_per_node` on a node pool of cluster {:?}, or use `backend = \"cpu\"`",
                    cluster.name
                )),
            );
        }
        if let (Some(training), Some(cluster)) = (&training, cluster_spec) {
            let workers = training.workers;
            let training = &training.spec;
            let nodes = cluster.node_count();
            if training.workers > nodes {
                consistent = false;
                let plural = |n: u32| if n == 1 { "" } else { "s" };
                let pools = cluster
                    .node_pools
                    .iter()
                    .map(|p| format!("{:?} ({} node{})", p.name, p.count, plural(p.count)))
                    .collect::<Vec<_>>()
                    .join(", ");
                self.push(
                    src.error(
                        workers.span(),
                        format!(
                            "Job {name:?} needs {} workers but cluster {:?} has {nodes} node{}",
                            training.workers,
                            cluster.name,
                            plural(nodes)
                        ),
                    )
                    .with_detail(format!(
                        "Node pools of cluster {:?}: {pools}.\n\
                         Each worker needs a node of its own; a job starts only when all its workers have one.",
                        cluster.name
                    ))
                    .with_hint(format!(
                        "set `workers` to at most {nodes}, or add nodes to cluster {:?}",
                        cluster.name
                    )),
                );
            }
        }
        if let (Some(model), Some(training), Some(cluster)) = (&model, &training, cluster_spec)
            && !self.model_fits(src, name, model, &training.spec, cluster)
        {
            consistent = false;
        }
        if let (Some(model), Some(dataset)) = (&model, &dataset) {
            if model.spec.inputs != dataset.spec.features {
                consistent = false;
                self.push(
                    src.error(
                        value_span(model.inputs),
                        format!(
                            "Model `inputs` ({}) does not match the dataset's feature count ({})",
                            model.spec.inputs, dataset.spec.features
                        ),
                    )
                    .with_detail(format!("The {}.", dataset.features_origin))
                    .with_hint(format!("set `inputs = {}`", dataset.spec.features)),
                );
            }
            if model.spec.classes != dataset.spec.classes {
                consistent = false;
                self.push(
                    src.error(
                        value_span(model.classes),
                        format!(
                            "Model `classes` ({}) does not match the dataset's class count ({})",
                            model.spec.classes, dataset.spec.classes
                        ),
                    )
                    .with_detail(format!("The {}.", dataset.classes_origin))
                    .with_hint(format!("set `classes = {}`", dataset.spec.classes)),
                );
            }
        }

        if !(consistent && cluster_ok) {
            return None;
        }
        Some(JobSpec {
            name: name.to_owned(),
            file: src.path.clone(),
            cluster: cluster?.0,
            model: model?.spec,
            dataset: dataset?.spec,
            training: training?.spec,
            checkpoint: checkpoint?,
            restart: restart?,
            deploy: deploy?,
        })
    }

    /// Whether one worker can hold the model while training it: an error when a node pool's
    /// `memory_gb` is smaller than the estimate, a warning when the local provider's workers
    /// together need more than this machine has.
    fn model_fits(
        &mut self,
        src: &SourceFile,
        job: &str,
        model: &DecodedModel<'_>,
        training: &TrainingSpec,
        cluster: &ClusterSpec,
    ) -> bool {
        use crate::footprint::{Footprint, PARAMETER_COPIES, grouped, human_bytes};
        let need = Footprint::of_mlp(&model.spec, training.batch_size);
        let detail = format!(
            "{} parameters; each worker holds {PARAMETER_COPIES} f32 copies of them (the parameters, their gradients, Adam's two moments, the all-reduce buffer and a checkpoint snapshot) and the activations of a batch of {}.",
            grouped(need.parameters),
            training.batch_size
        );
        let smallest = cluster
            .node_pools
            .iter()
            .filter_map(|p| Some((p, u64::from(p.memory_gb?) << 30)))
            .min_by_key(|(_, bytes)| *bytes);
        if let Some((pool, limit)) = smallest
            && need.bytes > limit
        {
            self.push(
                src.error(
                    header_span(model.block),
                    format!(
                        "The model of job {job:?} needs about {} per worker; node pool {:?} has {} (`memory_gb = {}`)",
                        human_bytes(need.bytes),
                        pool.name,
                        human_bytes(limit),
                        pool.memory_gb.unwrap_or_default()
                    ),
                )
                .with_detail(detail)
                .with_hint("make the model smaller (`hidden`), or give the pool more `memory_gb`"),
            );
            return false;
        }
        let on_this_machine = match cluster.provider {
            ProviderKind::Local => u64::from(training.workers),
        };
        if let Some(total) = crate::footprint::machine_memory()
            && need.bytes.saturating_mul(on_this_machine) > total
        {
            let mut warning = src
                .error(
                    header_span(model.block),
                    format!(
                        "The model of job {job:?} needs about {} per worker, {} for its {on_this_machine} local worker{}: more than this machine's {}",
                        human_bytes(need.bytes),
                        human_bytes(need.bytes.saturating_mul(on_this_machine)),
                        if on_this_machine == 1 { "" } else { "s" },
                        human_bytes(total)
                    ),
                )
                .with_detail(detail)
                .with_hint("the workers will likely die for want of memory; make the model smaller (`hidden`)");
            warning.severity = crate::Severity::Warning;
            self.push(warning);
        }
        true
    }

    fn model<'b>(&mut self, src: &SourceFile, block: &'b Block) -> Option<DecodedModel<'b>> {
        // The attributes depend on the kind: with an unknown kind, there is nothing to check.
        self.kind_label(src, block, &MODEL, MODEL_KINDS, "model kind")?;
        let body = &block.body;
        self.check_body(src, body, &MODEL);
        let inputs = self.get_u32(src, body, "inputs", 1);
        let inputs = self.required(src, block, "inputs", "inputs = 32", inputs);
        let hidden = self.get_u32_list(src, body, "hidden", 1).or(Vec::new());
        let classes = self.get_u32(src, body, "classes", 2);
        let classes = self.required(src, block, "classes", "classes = 2", classes);
        let ((inputs, inputs_attr), hidden, (classes, classes_attr)) = (inputs?, hidden?, classes?);
        Some(DecodedModel {
            spec: ModelSpec {
                inputs,
                hidden,
                classes,
            },
            block,
            inputs: inputs_attr,
            classes: classes_attr,
        })
    }

    fn source_kind(
        &mut self,
        src: &SourceFile,
        source: &str,
        attr: &Attribute,
    ) -> Option<SourceKind> {
        if let Some(generator) = source.strip_prefix("synthetic:") {
            if SYNTHETIC_SOURCES.contains(&generator) {
                return Some(SourceKind::Blobs);
            }
            self.push(
                src.error(
                    value_span(attr),
                    format!("Unknown synthetic dataset {source:?}"),
                )
                .with_hint(one_of_hint(
                    generator,
                    SYNTHETIC_SOURCES,
                    "synthetic dataset",
                )),
            );
            return None;
        }
        if let Some(path) = source.strip_prefix("file://")
            && !path.trim().is_empty()
        {
            return Some(SourceKind::Csv {
                path: path.to_owned(),
            });
        }
        self.push(
            src.error(value_span(attr), format!("Unsupported dataset source {source:?}"))
                .with_detail(
                    "Accepted forms:\n  \"synthetic:blobs\"  Gaussian blobs generated from `seed`\n  \"file://PATH.csv\"  a CSV file; a relative PATH is resolved against the configuration directory",
                ),
        );
        None
    }

    fn dataset(&mut self, src: &SourceFile, block: &Block) -> Option<DecodedDataset> {
        let labels_ok = self.check_labels(src, block, &DATASET);
        let name = block.labels.first().map_or("", |label| label.as_str());
        let body = &block.body;
        self.check_body(src, body, &DATASET);

        let source = self.get_string(src, body, "source");
        let source = self.required(src, block, "source", "source = \"synthetic:blobs\"", source);
        let kind = source
            .as_ref()
            .and_then(|(source, attr)| self.source_kind(src, source, attr));

        // Attributes that only make sense for the other kind of source.
        let foreign: &[&str] = match &kind {
            Some(SourceKind::Blobs) => &["format", "label"],
            Some(SourceKind::Csv { .. }) => &["samples", "seed"],
            None => &[],
        };
        for attr_name in foreign {
            if let Some(attr) = body.get_attribute(attr_name) {
                let (this, other) = match &kind {
                    Some(SourceKind::Blobs) => ("a `synthetic:blobs`", "`file://` datasets"),
                    _ => ("a `file://`", "`synthetic:blobs` datasets"),
                };
                self.push(
                    src.error(
                        attr.key.span(),
                        format!("`{attr_name}` does not apply to {this} dataset"),
                    )
                    .with_hint(format!("remove it; it only applies to {other}")),
                );
            }
        }
        let applies = |attr_name: &str| !foreign.contains(&attr_name);

        let features = self.get_u32(src, body, "features", 1);
        let classes = self.get_u32(src, body, "classes", 2);
        let classes = self.required(src, block, "classes", "classes = 2", classes);
        let validation_split = self
            .get(src, body, "validation_split", |value| {
                let split = expect_number(value)?;
                if (0.0..1.0).contains(&split) {
                    Ok(split)
                } else {
                    Err(Bad::Value(format!(
                        "must be at least 0 and less than 1, got {split}"
                    )))
                }
            })
            .or(DEFAULT_VALIDATION_SPLIT);
        let samples = if applies("samples") {
            self.get_u64(src, body, "samples", 1)
        } else {
            Get::Missing
        };
        let seed = if applies("seed") {
            self.get_u64(src, body, "seed", 0)
        } else {
            Get::Missing
        };
        let format = if applies("format") {
            self.get_string(src, body, "format")
        } else {
            Get::Missing
        };
        let label = if applies("label") {
            self.get_string(src, body, "label")
        } else {
            Get::Missing
        };

        let classes_origin = classes.as_ref().map(|(count, attr)| {
            format!(
                "dataset {name:?} declares `classes = {count}` at {}",
                src.location(attr.span())
            )
        });

        let (source, features, features_origin) = match kind? {
            SourceKind::Blobs => {
                let samples = self.required(src, block, "samples", "samples = 1000", samples);
                let features = self.required(src, block, "features", "features = 2", features);
                let seed = seed.or(0);
                let (features, features_attr) = features?;
                let origin = format!(
                    "dataset {name:?} declares `features = {features}` at {}",
                    src.location(features_attr.span())
                );
                let (samples, samples_attr) = samples?;
                if let Some(split) = validation_split
                    && training_rows(samples, split) == 0
                {
                    self.push(
                        src.error(
                            value_span(samples_attr),
                            format!(
                                "`samples = {samples}` leaves no training data after `validation_split = {split}`"
                            ),
                        )
                        .with_hint("raise `samples`, or lower `validation_split`"),
                    );
                    return None;
                }
                (
                    DataSource::Blobs {
                        samples,
                        seed: seed?,
                    },
                    features,
                    origin,
                )
            }
            SourceKind::Csv { path } => {
                let format = self.one_of(src, format, "csv", DATASET_FORMATS, "dataset format");
                let label = self.required(src, block, "label", "label = \"COLUMN\"", label);
                let source_attr = source.as_ref()?.1;
                let shown = self.dir.join(&path);
                let absolute = self.resolve_path(&path);
                let header = self.csv_header(
                    src,
                    &shown,
                    &absolute,
                    source_attr,
                    validation_split.ok_or(()),
                )?;
                format?;
                let (label, label_attr) = label?;
                if !header.contains(&label) {
                    let mut diagnostic = src
                        .error(
                            value_span(label_attr),
                            format!(
                                "Column {label:?} is not in the header of `{}`",
                                shown.display()
                            ),
                        )
                        .with_detail(format!(
                            "The header has the columns {}.",
                            code_list(header.iter().map(String::as_str))
                        ));
                    if let Some(close) = suggest(&label, header.iter().map(String::as_str)) {
                        diagnostic = diagnostic.with_hint(format!("did you mean `{close}`?"));
                    }
                    self.push(diagnostic);
                    return None;
                }
                let columns = header.len() - 1;
                let Some(from_header) = u32::try_from(columns).ok().filter(|&n| n >= 1) else {
                    self.push(src.error(
                        value_span(source_attr),
                        format!(
                            "`{}` has {} feature columns; at least 1 is needed besides the label",
                            shown.display(),
                            columns
                        ),
                    ));
                    return None;
                };
                match features {
                    Get::Found(declared, attr) if declared != from_header => {
                        self.push(
                            src.error(
                                value_span(attr),
                                format!(
                                    "`features = {declared}` does not match the header of `{}`, which has {from_header} feature column{}",
                                    shown.display(),
                                    if from_header == 1 { "" } else { "s" }
                                ),
                            )
                            .with_detail(format!(
                                "The header has {} columns, one of which is the label {label:?}.",
                                header.len()
                            ))
                            .with_hint(format!("set `features = {from_header}`, or leave it out")),
                        );
                        return None;
                    }
                    Get::Invalid => return None,
                    _ => {}
                }
                let origin = format!(
                    "dataset {name:?} has {from_header} feature column{} in the header of `{}` ({} columns minus the label {label:?})",
                    if from_header == 1 { "" } else { "s" },
                    shown.display(),
                    header.len()
                );
                (
                    DataSource::Csv {
                        path: absolute,
                        label,
                    },
                    from_header,
                    origin,
                )
            }
        };

        let (classes, _) = classes?;
        let spec = DatasetSpec {
            name: name.to_owned(),
            source,
            features,
            classes,
            validation_split: validation_split?,
        };
        labels_ok.then_some(DecodedDataset {
            spec,
            features_origin,
            classes_origin: classes_origin?,
        })
    }

    /// The header row of a CSV file (columns trimmed); `None` (reported at `source`) when
    /// the file cannot be read, is empty, or has too few rows to leave a training split after
    /// `validation_split` (`Err` when that is unknown) is taken out.
    fn csv_header(
        &mut self,
        src: &SourceFile,
        shown: &Path,
        absolute: &Path,
        source_attr: &Attribute,
        validation_split: Result<f64, ()>,
    ) -> Option<Vec<String>> {
        let problem = |summary: String, detail: Option<String>| {
            let mut diagnostic = src.error(value_span(source_attr), summary);
            diagnostic.detail = detail;
            diagnostic
        };
        let file =
            match std::fs::File::open(absolute) {
                Ok(file) => file,
                Err(err) => {
                    let diagnostic = problem(
                        format!("Cannot open CSV file `{}`", shown.display()),
                        Some(err.to_string()),
                    );
                    self.push(diagnostic.with_hint(
                        "a relative path is resolved against the configuration directory",
                    ));
                    return None;
                }
            };
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(file);
        let mut record = csv::StringRecord::new();
        match reader.read_record(&mut record) {
            Ok(true) => {
                let header = record.iter().map(str::to_owned).collect();
                let split = validation_split.unwrap_or(0.0);
                // Enough rows that a training split certainly remains; no need to read on.
                let enough = (1.0 / (1.0 - split)).ceil() as u64 + 1;
                let mut rows = 0;
                while rows < enough && matches!(reader.read_record(&mut record), Ok(true)) {
                    rows += 1;
                }
                if rows < enough && training_rows(rows, split) == 0 {
                    let detail = match rows {
                        0 => "It has a header and no data rows.".to_owned(),
                        n => format!(
                            "It has {n} data row{}; `validation_split = {split}` takes {} of them for validation.",
                            if n == 1 { "" } else { "s" },
                            n - training_rows(n, split)
                        ),
                    };
                    self.push(
                        problem(
                            format!("CSV file `{}` leaves no training data", shown.display()),
                            Some(detail),
                        )
                        .with_hint("add rows, or lower `validation_split`"),
                    );
                    return None;
                }
                Some(header)
            }
            Ok(false) => {
                let diagnostic = problem(format!("CSV file `{}` is empty", shown.display()), None)
                    .with_hint("the first line must be a header naming the columns");
                self.push(diagnostic);
                None
            }
            Err(err) => {
                let diagnostic = problem(
                    format!("Cannot read the header of CSV file `{}`", shown.display()),
                    Some(err.to_string()),
                );
                self.push(diagnostic);
                None
            }
        }
    }

    fn training<'b>(&mut self, src: &SourceFile, block: &'b Block) -> Option<DecodedTraining<'b>> {
        let labels_ok = self.check_labels(src, block, &TRAINING);
        let body = &block.body;
        self.check_body(src, body, &TRAINING);
        let workers = self.get_u32(src, body, "workers", 1);
        let workers = self.required(src, block, "workers", "workers = 1", workers);
        let min_workers = self.get_u32(src, body, "min_workers", 1);
        let max_workers = self.get_u32(src, body, "max_workers", 1);
        let batch_size = self.get_u32(src, body, "batch_size", 1);
        let batch_size = self.required(src, block, "batch_size", "batch_size = 32", batch_size);
        let epochs = self.get_u32(src, body, "epochs", 1);
        let max_steps = self.get_u64(src, body, "max_steps", 1);
        let seed = self.get_u64(src, body, "seed", 0).or(0);
        let backend_attr = body.get_attribute("backend");
        let backend = self.get_string(src, body, "backend");
        let backend = self
            .one_of(src, backend, "cpu", BACKENDS, "backend")
            .map(|b| {
                if b == "cuda" {
                    Backend::Cuda
                } else {
                    Backend::Cpu
                }
            });
        let collective_attr = body.get_attribute("collective");
        let collective = self.get_string(src, body, "collective");
        let collective = self
            .one_of(src, collective, "ring", COLLECTIVES, "collective")
            .map(|c| {
                if c == "nccl" {
                    Collective::Nccl
                } else {
                    Collective::Ring
                }
            });
        let optimizer = match self.at_most_one(src, body, &OPTIMIZER, &TRAINING) {
            Some(optimizer) => self.optimizer(src, optimizer),
            None => Some(OptimizerSpec::Adam {
                learning_rate: DEFAULT_LEARNING_RATE,
            }),
        };

        // Stop at whichever of `epochs` and `max_steps` comes first; neither: one epoch.
        let (epochs, max_steps) = match (epochs, max_steps) {
            (Get::Invalid, _) | (_, Get::Invalid) => (None, None),
            (Get::Missing, Get::Missing) => (Some(Some(DEFAULT_EPOCHS)), Some(None)),
            (epochs, max_steps) => (epochs.optional(), max_steps.optional()),
        };

        let mut ok = labels_ok;
        let (workers, workers_attr) = workers?;
        let min = match min_workers {
            Get::Found(n, attr) => Some((n, Some(attr))),
            Get::Missing => Some((workers, None)),
            Get::Invalid => None,
        };
        let max = match max_workers {
            Get::Found(n, attr) => Some((n, Some(attr))),
            Get::Missing => Some((workers, None)),
            Get::Invalid => None,
        };
        if let (Some((min, min_attr)), Some((max, max_attr))) = (min, max) {
            let problem = match (min_attr, max_attr) {
                (Some(min_attr), Some(_)) if min > max => Some((
                    value_span(min_attr),
                    format!("`min_workers` ({min}) is greater than `max_workers` ({max})"),
                    "lower `min_workers` or raise `max_workers`".to_owned(),
                )),
                _ if workers < min => Some((
                    value_span(workers_attr),
                    format!("`workers` ({workers}) is below `min_workers` ({min})"),
                    format!("set `workers` to at least {min}, or lower `min_workers`"),
                )),
                _ if workers > max => Some((
                    value_span(workers_attr),
                    format!("`workers` ({workers}) is above `max_workers` ({max})"),
                    format!("set `workers` to at most {max}, or raise `max_workers`"),
                )),
                _ => None,
            };
            if let Some((span, summary, hint)) = problem {
                ok = false;
                self.push(
                    src.error(span, summary)
                        .with_detail("A job starts with `workers` ranks and may run with any number from `min_workers` to `max_workers` (both default to `workers`).")
                        .with_hint(hint),
                );
            }
        }
        if collective == Some(Collective::Nccl) && backend == Some(Backend::Cpu) {
            ok = false;
            self.push(
                src.error(
                    collective_attr.and_then(value_span),
                    "`collective = \"nccl\"` needs `backend = \"cuda\"`",
                )
                .with_detail("NCCL all-reduces GPU memory; the CPU backend uses the ring.")
                .with_hint("set `backend = \"cuda\"`, or use `collective = \"ring\"`"),
            );
        }
        if backend == Some(Backend::Cuda) {
            // Declared and checked, but no worker can train on a GPU yet: say so now.
            let mut warning = src
                .error(
                    backend_attr.and_then(value_span),
                    "`backend = \"cuda\"` is not built yet: kiln-worker trains on the CPU only, so this job fails when it starts",
                )
                .with_hint("use `backend = \"cpu\"` (and `collective = \"ring\"`) until the CUDA backend lands");
            warning.severity = crate::Severity::Warning;
            self.push(warning);
        }

        let spec = TrainingSpec {
            workers,
            min_workers: min?.0,
            max_workers: max?.0,
            batch_size: batch_size?.0,
            epochs: epochs?,
            max_steps: max_steps?,
            seed: seed?,
            backend: backend?,
            collective: collective?,
            optimizer: optimizer?,
        };
        ok.then_some(DecodedTraining {
            spec,
            workers: workers_attr,
            backend: backend_attr,
        })
    }

    fn optimizer(&mut self, src: &SourceFile, block: &Block) -> Option<OptimizerSpec> {
        self.kind_label(src, block, &OPTIMIZER, OPTIMIZERS, "optimizer")?;
        let body = &block.body;
        self.check_body(src, body, &OPTIMIZER);
        let learning_rate = self
            .get(src, body, "learning_rate", |value| {
                let rate = expect_number(value)?;
                if rate > 0.0 {
                    Ok(rate)
                } else {
                    Err(Bad::Value(format!("must be greater than 0, got {rate}")))
                }
            })
            .or(DEFAULT_LEARNING_RATE)?;
        Some(OptimizerSpec::Adam { learning_rate })
    }

    fn checkpoint(&mut self, src: &SourceFile, block: &Block) -> Option<CheckpointSpec> {
        let labels_ok = self.check_labels(src, block, &CHECKPOINT);
        let body = &block.body;
        self.check_body(src, body, &CHECKPOINT);
        let every_steps = self
            .get_u32(src, body, "every_steps", 1)
            .or(DEFAULT_EVERY_STEPS);
        let keep = self.get_u32(src, body, "keep", 1).or(DEFAULT_KEEP);
        labels_ok.then_some(CheckpointSpec {
            every_steps: every_steps?,
            keep: keep?,
        })
    }

    fn restart(&mut self, src: &SourceFile, block: &Block) -> Option<RestartSpec> {
        let labels_ok = self.check_labels(src, block, &RESTART);
        let body = &block.body;
        self.check_body(src, body, &RESTART);
        let max_restarts = self
            .get_u32(src, body, "max_restarts", 0)
            .or(DEFAULT_MAX_RESTARTS);
        let backoff = self
            .get(src, body, "backoff", expect_duration)
            .or(DEFAULT_BACKOFF);
        labels_ok.then_some(RestartSpec {
            max_restarts: max_restarts?,
            backoff: backoff?,
        })
    }

    fn deploy(&mut self, src: &SourceFile, block: &Block) -> Option<DeploySpec> {
        let labels_ok = self.check_labels(src, block, &DEPLOY);
        let body = &block.body;
        self.check_body(src, body, &DEPLOY);
        let alias = self.get(src, body, "alias", |value| {
            let alias = expect_string(value)?;
            let valid = alias.len() <= MAX_ALIAS_LEN
                && alias.starts_with(|c: char| c.is_ascii_alphanumeric())
                && alias
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if valid {
                Ok(alias)
            } else {
                Err(Bad::Value(format!(
                    "{alias:?} is not an alias: use ASCII letters, digits, `-`, `_` and `.`, starting with a letter or digit, at most {MAX_ALIAS_LEN} characters"
                )))
            }
        });
        let alias = self.required(src, block, "alias", "alias = \"production\"", alias);
        let gate = match self.at_most_one(src, body, &GATE, &DEPLOY) {
            Some(gate) => self.gate(src, gate).map(Some),
            None => Some(None),
        };
        labels_ok.then_some(DeploySpec {
            alias: alias?.0,
            gate: gate?,
        })
    }

    fn gate(&mut self, src: &SourceFile, block: &Block) -> Option<GateSpec> {
        let labels_ok = self.check_labels(src, block, &GATE);
        let body = &block.body;
        self.check_body(src, body, &GATE);
        let accuracy = self.get(src, body, "min_val_accuracy", |value| {
            let accuracy = expect_number(value)?;
            if (0.0..=1.0).contains(&accuracy) {
                Ok(accuracy)
            } else {
                Err(Bad::Value(format!(
                    "must be between 0 and 1, got {accuracy}"
                )))
            }
        });
        let accuracy = self.required(
            src,
            block,
            "min_val_accuracy",
            "min_val_accuracy = 0.9",
            accuracy,
        );
        labels_ok.then_some(GateSpec {
            min_val_accuracy: accuracy?.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_only_plausible_typos() {
        assert_eq!(
            suggest("gpus_per_nod", NODE_POOL.attrs.iter().copied()),
            Some("gpus_per_node")
        );
        assert_eq!(suggest("LOCAL", PROVIDERS.iter().copied()), Some("local"));
        assert_eq!(
            suggest("lable", DATASET.attrs.iter().copied()),
            Some("label")
        );
        assert_eq!(suggest("shuffle", TRAINING.attrs.iter().copied()), None);
        assert_eq!(suggest("aws", PROVIDERS.iter().copied()), None);
    }

    #[test]
    fn locations_count_characters_and_stop_at_the_line_end() {
        let src = SourceFile::new("f.hcl".into(), "a = 1\r\n  é = \"xy\nz\"\n".into());
        let at = |start: usize, end: usize| {
            let d = src.error(Some(start..end), "x");
            (d.line, d.col, d.source_line, d.width)
        };
        // `é` is two bytes but one column.
        let value = src.text.find('"').expect("quote");
        assert_eq!(at(value, value + 6), (2, 7, "  é = \"xy".to_owned(), 3));
        assert_eq!(at(0, 1), (1, 1, "a = 1".to_owned(), 1));
        // An offset inside a multibyte character is moved to its start.
        let e = src.text.find('é').expect("é");
        assert_eq!(at(e + 1, e + 2).1, 3);
        // Past the end: the empty last line.
        let len = src.text.len();
        assert_eq!(at(len, len + 1), (4, 1, String::new(), 0));
    }

    #[test]
    fn syntax_errors_at_end_of_input_land_after_the_last_newline() {
        let text = "job \"x\" {\n  a = 1\n";
        let err = hcl::edit::parser::parse_body(text).expect_err("unclosed block");
        let offset = syntax_error_offset(text, err.location());
        assert_eq!(offset, text.len());
        let d = SourceFile::new("f.hcl".into(), text.into()).error(Some(offset..offset + 1), "x");
        assert_eq!((d.line, d.col), (3, 1));
    }

    #[test]
    fn integers_must_be_whole_and_in_range() {
        let number = |text: &str| hcl::from_str::<Value>(&format!("x = {text}")).expect("parse");
        let int = |text: &str| {
            let Value::Object(map) = number(text) else {
                panic!("not an object")
            };
            expect_int(&map["x"], 1, u64::from(u32::MAX)).map_err(|bad| match bad {
                Bad::Type(m) | Bad::Value(m) => m,
            })
        };
        assert_eq!(int("2").ok(), Some(2));
        assert_eq!(int("2.0").ok(), Some(2));
        assert_eq!(
            int("2.5").err().as_deref(),
            Some("expected a whole number, got `2.5`")
        );
        assert_eq!(int("0").err().as_deref(), Some("must be at least 1, got 0"));
        assert_eq!(
            int("4294967296").err().as_deref(),
            Some("must be at most 4294967295, got 4294967296")
        );
        assert_eq!(
            int("\"2\"").err().as_deref(),
            Some("expected a whole number, got string \"2\"")
        );
    }

    #[test]
    fn one_line_block_hint_needs_an_attribute_before_the_error() {
        let mut d = Diagnostic::file_error("f", "Syntax error: invalid block body; expected `}`");
        d.source_line = "  checkpoint { every_steps = 100  keep = 3 }".into();
        d.col = 35;
        assert!(second_attribute_on_one_line(&d));
        d.source_line = "  checkpoint {".into();
        d.col = 15;
        assert!(!second_attribute_on_one_line(&d));
    }
}
