//! Decoding `job` blocks: model, training, optimizer, checkpoint, restart and deploy, and
//! the checks across them (cluster reference, workers, backend, model memory).

use std::collections::BTreeMap;

use hcl::edit::Span;
use hcl::edit::structure::{Attribute, Block};

use crate::spec::{
    Backend, CheckpointSpec, ClusterSpec, Collective, JobSpec, LrScheduleSpec, OptimizerSpec,
    ProviderKind, RestartSpec, ScheduleKind, TrainingSpec,
};

use super::defaults::{
    DEFAULT_BACKOFF, DEFAULT_BETAS, DEFAULT_BUCKET_MB, DEFAULT_EPOCHS, DEFAULT_EVERY_STEPS,
    DEFAULT_KEEP, DEFAULT_LEARNING_RATE, DEFAULT_MAX_RESTARTS,
};
use super::getters::{Get, expect_bool, expect_duration, fraction, non_negative, positive_number};
use super::hints::{code_list, suggest};
use super::model::DecodedModel;
use super::schema::{
    BACKENDS, CHECKPOINT, COLLECTIVES, DATASET, DEPLOY, JOB, LR_SCHEDULE, MODEL, OPTIMIZER,
    OPTIMIZERS, RESTART, SCHEDULES, TRAINING, optimizer_attrs,
};
use super::scope::Loader;
use super::source::{SourceFile, header_span, value_span};

/// A decoded `training` block, with the attributes the job-level cross-checks point at.
pub(super) struct DecodedTraining<'b> {
    pub(super) spec: TrainingSpec,
    pub(super) workers: &'b Attribute,
    pub(super) backend: Option<&'b Attribute>,
}

impl<'d> Loader<'d> {
    pub(super) fn job(
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
            .and_then(|model| self.model(src, model, cluster_spec));
        self.storage = cluster_spec.map(|c| c.storage.clone());
        self.pins.clear();
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
            Some(deploy) => {
                let split = dataset.as_ref().map(|d| d.spec.validation_split);
                self.deploy(src, deploy, split).map(Some)
            }
            None => Some(None),
        };

        // Cross-checks, each reported where the fix most likely goes.
        let mut consistent = name_ok;
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
        // The worker binary checks the model against the data; then whether a node holds it,
        // and whether the binary trains on GPUs when the job asks for them.
        let mut footprint = None;
        if let (Some(m), Some(d), Some(c)) = (&model, &dataset, cluster_spec) {
            match self.check_model(src, m, d, c) {
                Some(report) => {
                    if let Some(training) = &training {
                        let need = crate::footprint::Footprint::of(
                            report.parameters,
                            report.activations_per_sample,
                            training.spec.batch_size,
                        );
                        footprint = Some(need);
                        if !self.model_fits(src, name, m, need, &training.spec, c) {
                            consistent = false;
                        }
                    }
                }
                None if self.opts.catalog.is_some() => consistent = false,
                None => {}
            }
        }
        if let (Some(training), Some(c)) = (&training, cluster_spec)
            && !self.check_gpus(src, name, training, c)
        {
            consistent = false;
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
            footprint,
        })
    }

    /// Whether one worker can hold the model while training it: an error when a node pool's
    /// `memory_gb` is smaller than the estimate, a warning when the local provider's workers
    /// together need more than this machine has.
    pub(super) fn model_fits(
        &mut self,
        src: &SourceFile,
        job: &str,
        model: &DecodedModel<'_>,
        need: crate::footprint::Footprint,
        training: &TrainingSpec,
        cluster: &ClusterSpec,
    ) -> bool {
        use crate::footprint::{PARAMETER_COPIES, grouped, human_bytes};
        let detail = format!(
            "{} parameters; each worker holds {PARAMETER_COPIES} f32 copies of them (the parameters, their gradients, the optimizer's two moments, the all-reduce buffer and a checkpoint snapshot) and the activations of a batch of {}.",
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
                .with_hint("make the model smaller, or give the pool more `memory_gb`"),
            );
            return false;
        }
        let on_this_machine = match cluster.provider {
            ProviderKind::Local => u64::from(training.workers),
            ProviderKind::Ssh | ProviderKind::Slurm => 0,
        };
        if let Some(total) = crate::footprint::machine_memory()
            && need.bytes.saturating_mul(on_this_machine) > total
        {
            let warning = src
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
                .with_hint("the workers will likely die for want of memory; make the model smaller");
            self.push(warning.as_warning());
        }
        true
    }

    pub(super) fn training<'b>(
        &mut self,
        src: &SourceFile,
        block: &'b Block,
    ) -> Option<DecodedTraining<'b>> {
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
                betas: DEFAULT_BETAS,
            }),
        };
        let lr_schedule = match self.at_most_one(src, body, &LR_SCHEDULE, &TRAINING) {
            Some(schedule) => self.lr_schedule(src, schedule).map(Some),
            None => Some(None),
        };
        let clip_grad_norm = self
            .get(src, body, "clip_grad_norm", positive_number)
            .optional();

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
        let bucket_mb = match self.get_u32(src, body, "bucket_mb", 1) {
            Get::Found(mb, attr) => {
                if collective != Some(Collective::Nccl) {
                    self.push(
                        src.error(value_span(attr), "`bucket_mb` has no effect without `collective = \"nccl\"`")
                            .with_detail("The ring all-reduces the whole gradient at once; only NCCL splits it into buckets.")
                            .with_hint("remove `bucket_mb`, or set `collective = \"nccl\"`")
                            .as_warning(),
                    );
                }
                Some(mb)
            }
            Get::Missing => Some(DEFAULT_BUCKET_MB),
            Get::Invalid => None,
        };

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
            lr_schedule: lr_schedule?,
            clip_grad_norm: clip_grad_norm?,
            bucket_mb: bucket_mb?,
        };
        ok.then_some(DecodedTraining {
            spec,
            workers: workers_attr,
            backend: backend_attr,
        })
    }

    pub(super) fn optimizer(&mut self, src: &SourceFile, block: &Block) -> Option<OptimizerSpec> {
        let kind = self.kind_label(src, block, &OPTIMIZER, OPTIMIZERS, "optimizer")?;
        let body = &block.body;
        self.check_names(src, body, &OPTIMIZER, optimizer_attrs(kind));
        let learning_rate = self
            .get(src, body, "learning_rate", positive_number)
            .or(DEFAULT_LEARNING_RATE);
        match kind {
            "sgd" => {
                let momentum = self.get(src, body, "momentum", fraction).or(0.0);
                let nesterov = self.get(src, body, "nesterov", expect_bool).or(false);
                let weight_decay = self.get(src, body, "weight_decay", non_negative).or(0.0);
                let (momentum, nesterov) = (momentum?, nesterov?);
                if nesterov && momentum == 0.0 {
                    self.push(
                        src.error(
                            header_span(block),
                            "`nesterov = true` needs `momentum` above 0",
                        )
                        .with_hint("set e.g. `momentum = 0.9`"),
                    );
                    return None;
                }
                Some(OptimizerSpec::Sgd {
                    learning_rate: learning_rate?,
                    momentum,
                    nesterov,
                    weight_decay: weight_decay?,
                })
            }
            _ => {
                let betas = self
                    .get_list(src, body, "betas", "numbers", fraction)
                    .or(DEFAULT_BETAS.to_vec());
                let betas = match betas?[..] {
                    [b1, b2] => [b1, b2],
                    ref other => {
                        let attr = body.get_attribute("betas");
                        self.push(
                            src.error(
                                attr.and_then(value_span),
                                format!("`betas` takes 2 numbers, got {}", other.len()),
                            )
                            .with_hint("write e.g. `betas = [0.9, 0.999]`"),
                        );
                        return None;
                    }
                };
                if kind == "adamw" {
                    let weight_decay = self.get(src, body, "weight_decay", non_negative).or(0.01);
                    Some(OptimizerSpec::AdamW {
                        learning_rate: learning_rate?,
                        betas,
                        weight_decay: weight_decay?,
                    })
                } else {
                    Some(OptimizerSpec::Adam {
                        learning_rate: learning_rate?,
                        betas,
                    })
                }
            }
        }
    }

    pub(super) fn lr_schedule(
        &mut self,
        src: &SourceFile,
        block: &Block,
    ) -> Option<LrScheduleSpec> {
        let labels_ok = self.check_labels(src, block, &LR_SCHEDULE);
        let body = &block.body;
        self.check_body(src, body, &LR_SCHEDULE);
        let kind = self.get_string(src, body, "kind");
        let kind = self.one_of(src, kind, "constant", SCHEDULES, "schedule kind")?;
        let only = |name: &str| match kind.as_str() {
            "step" => ["step_size", "gamma"].contains(&name),
            "cosine" => ["min_lr", "decay_steps"].contains(&name),
            _ => false,
        };
        for name in ["step_size", "gamma", "min_lr", "decay_steps"] {
            if !only(name)
                && let Some(attr) = body.get_attribute(name)
            {
                self.push(
                    src.error(
                        attr.key.span(),
                        format!("`{name}` does not apply to `kind = \"{kind}\"`"),
                    )
                    .with_hint(if ["step_size", "gamma"].contains(&name) {
                        "it belongs to `kind = \"step\"`"
                    } else {
                        "it belongs to `kind = \"cosine\"`"
                    }),
                );
                return None;
            }
        }
        let warmup_steps = self.get_u64(src, body, "warmup_steps", 0).or(0);
        let kind = match kind.as_str() {
            "step" => {
                let step_size = self.get_u64(src, body, "step_size", 1);
                let step_size =
                    self.required(src, block, "step_size", "step_size = 1000", step_size);
                let gamma = self.get(src, body, "gamma", positive_number).or(0.1);
                ScheduleKind::Step {
                    step_size: step_size?.0,
                    gamma: gamma?,
                }
            }
            "cosine" => {
                let min_lr = self.get(src, body, "min_lr", non_negative).or(0.0);
                let decay_steps = self.get_u64(src, body, "decay_steps", 1).optional();
                ScheduleKind::Cosine {
                    min_lr: min_lr?,
                    decay_steps: decay_steps?,
                }
            }
            _ => ScheduleKind::Constant,
        };
        labels_ok.then_some(LrScheduleSpec {
            warmup_steps: warmup_steps?,
            kind,
        })
    }

    pub(super) fn checkpoint(&mut self, src: &SourceFile, block: &Block) -> Option<CheckpointSpec> {
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

    pub(super) fn restart(&mut self, src: &SourceFile, block: &Block) -> Option<RestartSpec> {
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
}
