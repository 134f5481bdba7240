//! Loading a configuration directory: reads every `*.hcl` file, parses it with `hcl::edit`
//! (which keeps byte spans), resolves input variables and local values, evaluates each
//! attribute's expression to an `hcl::Value` (`expr`), and decodes the values by hand into
//! the [`spec`](crate::spec) types, so that every mistake can be reported at its
//! `file:line:col`.
//!
//! It reports every mistake it can find (across all files) rather than stopping at the
//! first, and never panics. It does not provision anything and does not read datasets beyond
//! a CSV header or an IDX/NPY header; it asks the cluster's worker binary (through the
//! options' `ModelCatalog`) which model kinds exist.
//!
//! Why not `hcl::from_str` + serde: serde gives no locations for semantic errors, and
//! decoding an expression into a `String` silently stringifies it.
//!
//! The rooms, from the bottom up: `source` (files and spans), `syntax` (syntax errors where their cause is), `hints` (typo
//! suggestions), `secrets` (scrubbing sensitive values), `options` and `defaults`, `scope`
//! (the [`Loader`] every pass shares, and evaluation), `schema` (which attributes and blocks
//! each block accepts), `getters` (typed attribute reads), `vars` and `locals`, then the
//! decoders `cluster`, `dataset`, `model` and `job`. This file only orders the passes.

mod cluster;
mod dataset;
mod defaults;
mod deploy;
mod getters;
mod gpu;
pub(crate) mod hints;
mod job;
mod locals;
mod model;
mod options;
mod placement;
mod schema;
mod scope;
mod secrets;
pub(crate) mod source;
pub(crate) mod syntax;
mod vars;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use hcl::edit::Span;
use hcl::edit::structure::{Body, Structure};

use crate::diag::{Diagnostic, Diagnostics};
use crate::spec::{ClusterSpec, Config};

pub use getters::parse_duration;
use hints::suggest;
pub use options::{ENV_PREFIX, LoadOptions, parse_var_arg};
use schema::{CLUSTER, JOB};
use scope::Loader;
use source::{SourceFile, hcl_files};
use syntax::syntax_error;

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
/// with variable values from `options` (see [`LoadOptions`] for the precedence). `model`
/// blocks are checked against the kinds `options.catalog` reports for each cluster's worker
/// binary; without a catalog they are carried unchecked.
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
    let mut loader = Loader::new(dir, options);
    let config = loader.load();
    loader.finish(config)
}

const TOP_LEVEL_BLOCKS: &[&str] = &["cluster", "job", "variable", "locals"];
const TOP_LEVEL_TEXT: &str =
    "Only `cluster`, `job`, `variable` and `locals` blocks may appear at the top level of a file.";

impl<'d> Loader<'d> {
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

        vars::variables(self, &variable_blocks, &var_files);
        locals::locals(self, &locals_blocks);

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
        let job_blocks = if self.opts.clusters_only {
            Vec::new()
        } else {
            job_blocks
        };
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
}
