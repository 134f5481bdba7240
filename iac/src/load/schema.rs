//! What each block accepts (its labels, attributes and nested blocks), the closed lists of
//! kinds, and the checks that report unknown, misplaced and duplicate names with hints.

use std::collections::HashMap;

use hcl::edit::Span;
use hcl::edit::structure::{Block, Body, Structure};

use crate::diag::Diagnostic;

use super::hints::{code_list, suggest};
use super::scope::Loader;
use super::source::{SourceFile, header_span};

pub(super) const PROVIDERS: &[&str] = &["local", "ssh", "slurm"];
pub(super) const STATE_BACKENDS: &[&str] = &["embedded", "etcd"];
pub(super) const OPTIMIZERS: &[&str] = &["sgd", "adam", "adamw"];
pub(super) const SCHEDULES: &[&str] = &["constant", "step", "cosine"];
pub(super) const DATASET_FORMATS: &[&str] = &["csv", "idx", "npy"];
pub(super) const SYNTHETIC_SOURCES: &[&str] = &["blobs"];
pub(super) const BACKENDS: &[&str] = &["cpu", "cuda"];
pub(super) const COLLECTIVES: &[&str] = &["ring", "nccl"];

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
    pub(super) fn usage(&self) -> String {
        let mut usage = self.ident.to_owned();
        for label in self.labels {
            usage.push_str(&format!(" \"{label}\""));
        }
        usage.push_str(" { ... }");
        usage
    }
}

pub(super) const CLUSTER: Schema = Schema {
    ident: "cluster",
    labels: &["NAME"],
    attrs: &["provider"],
    blocks: &["node_pool", "storage", "state", "coordinator", "worker"],
};
pub(super) const WORKER: Schema = Schema {
    ident: "worker",
    labels: &[],
    attrs: &["binary", "env"],
    blocks: &[],
};
pub(super) const NODE_POOL: Schema = Schema {
    ident: "node_pool",
    labels: &["NAME"],
    attrs: &[
        "count",
        "cpus_per_node",
        "memory_gb",
        "gpus_per_node",
        "gpu_type",
        "labels",
        // provider = "ssh"
        "hosts",
        "user",
        "port",
        "identity_file",
        "known_hosts_file",
        "worker_path",
        "remote_dir",
        "connect_timeout",
        // provider = "slurm"
        "partition",
        "time_limit",
    ],
    blocks: &[],
};
pub(super) const STORAGE: Schema = Schema {
    ident: "storage",
    labels: &[],
    attrs: &[
        "url",
        "endpoint",
        "region",
        "access_key_id_file",
        "secret_access_key_file",
    ],
    blocks: &[],
};
pub(super) const STATE: Schema = Schema {
    ident: "state",
    labels: &[],
    attrs: &["backend", "path", "endpoints", "prefix"],
    blocks: &[],
};
pub(super) const COORDINATOR: Schema = Schema {
    ident: "coordinator",
    labels: &[],
    attrs: &[
        "listen",
        "advertise",
        "join_token_file",
        "heartbeat_interval",
        "lease_ttl",
        "replicas",
        "http_listen",
    ],
    blocks: &["tls"],
};
pub(super) const TLS: Schema = Schema {
    ident: "tls",
    labels: &[],
    attrs: &["cert_file", "key_file", "ca_file"],
    blocks: &[],
};
pub(super) const JOB: Schema = Schema {
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
/// The attributes of a `model` block are those of its kind, which the worker binary reports.
pub(super) const MODEL: Schema = Schema {
    ident: "model",
    labels: &["KIND"],
    attrs: &[],
    blocks: &[],
};
pub(super) const DATASET: Schema = Schema {
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
        "labels",
    ],
    blocks: &[],
};
pub(super) const TRAINING: Schema = Schema {
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
        "bucket_mb",
        "clip_grad_norm",
    ],
    blocks: &["optimizer", "lr_schedule"],
};
/// Every attribute any optimizer takes; [`optimizer_attrs`] says which one takes which.
pub(super) const OPTIMIZER: Schema = Schema {
    ident: "optimizer",
    labels: &["KIND"],
    attrs: &[
        "learning_rate",
        "momentum",
        "nesterov",
        "weight_decay",
        "betas",
    ],
    blocks: &[],
};
pub(super) const LR_SCHEDULE: Schema = Schema {
    ident: "lr_schedule",
    labels: &[],
    attrs: &[
        "kind",
        "warmup_steps",
        "step_size",
        "gamma",
        "min_lr",
        "decay_steps",
    ],
    blocks: &[],
};

/// The attributes optimizer `kind` takes.
pub(super) fn optimizer_attrs(kind: &str) -> &'static [&'static str] {
    match kind {
        "sgd" => &["learning_rate", "momentum", "nesterov", "weight_decay"],
        "adamw" => &["learning_rate", "betas", "weight_decay"],
        _ => &["learning_rate", "betas"],
    }
}
pub(super) const CHECKPOINT: Schema = Schema {
    ident: "checkpoint",
    labels: &[],
    attrs: &["every_steps", "keep"],
    blocks: &[],
};
pub(super) const RESTART: Schema = Schema {
    ident: "restart",
    labels: &[],
    attrs: &["max_restarts", "backoff"],
    blocks: &[],
};
pub(super) const DEPLOY: Schema = Schema {
    ident: "deploy",
    labels: &[],
    attrs: &["alias", "model"],
    blocks: &["gate", "serve"],
};
pub(super) const SERVE: Schema = Schema {
    ident: "serve",
    labels: &[],
    attrs: &["listen", "max_batch_size", "max_delay", "watch_interval"],
    blocks: &["monitor"],
};
pub(super) const MONITOR: Schema = Schema {
    ident: "monitor",
    labels: &[],
    attrs: &["enabled", "psi_threshold", "window", "min_samples"],
    blocks: &[],
};
pub(super) const GATE: Schema = Schema {
    ident: "gate",
    labels: &[],
    attrs: &[
        "metric",
        "threshold",
        "min_absolute_change",
        "min_relative_change",
        "min_val_accuracy",
    ],
    blocks: &[],
};
impl<'d> Loader<'d> {
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
        self.check_names(src, body, schema, schema.attrs);
    }

    /// Reports attributes not in `attrs` and blocks not in the schema: for blocks whose
    /// attributes are known only at run time (a model kind's).
    pub(crate) fn check_names(
        &mut self,
        src: &SourceFile,
        body: &Body,
        schema: &Schema,
        attrs: &[&str],
    ) {
        for structure in body.iter() {
            match structure {
                Structure::Attribute(attr) => {
                    let name = attr.key.as_str();
                    if attrs.contains(&name) {
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
                        self.unknown(diagnostic, name, attrs, schema, "attributes")
                    };
                    self.push(diagnostic);
                }
                Structure::Block(block) => {
                    let name = block.ident.as_str();
                    if schema.blocks.contains(&name) {
                        continue;
                    }
                    let diagnostic = if attrs.contains(&name) {
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
    pub(super) fn unknown(
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::hints::suggest;

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
}
