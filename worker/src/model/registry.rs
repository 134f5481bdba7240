//! The kinds a worker binary offers, behind one object-safe face: the training loop is
//! generic over the model type, and each registered kind instantiates it for the backends
//! the binary trains on.

use std::marker::PhantomData;

use burn::backend::{Autodiff, NdArray};
use burn::module::AutodiffModule;
use kiln_proto::models::{AttrProblem, Catalog, CheckReport, CheckRequest, KindSchema};

use super::{AttrError, DataShape, Init, ModelKind, cnn::CnnKind, mlp::MlpKind};
use crate::train::{self, CheckpointMode, Context, Outcome, Task, TrainError};

/// The CPU training backend.
pub type CpuBackend = Autodiff<NdArray>;

/// The model kinds a worker binary can train, by name.
pub struct Registry {
    kinds: Vec<Box<dyn Kind>>,
}

impl Registry {
    /// A registry with no kinds.
    pub fn empty() -> Self {
        Self { kinds: Vec::new() }
    }

    /// The built-in kinds: `mlp` and `cnn`.
    pub fn builtin() -> Self {
        Self::empty().with::<MlpKind>().with::<CnnKind>()
    }

    /// Adds kind `K`; a kind of the same name is replaced.
    pub fn with<K: ModelKind>(mut self) -> Self
    where
        K::Model<CpuBackend>: AutodiffModule<CpuBackend, InnerModule = K::Model<NdArray>>,
    {
        self.kinds.retain(|k| k.name() != K::NAME);
        self.kinds.push(Box::new(Erased::<K>(PhantomData)));
        self
    }

    /// The names of the kinds, as workers advertise them when they register.
    pub fn names(&self) -> Vec<String> {
        self.kinds.iter().map(|k| k.name().to_owned()).collect()
    }

    /// Every kind and its attribute schema (`kiln-worker models --json`).
    pub fn catalog(&self) -> Catalog {
        Catalog {
            kinds: self.kinds.iter().map(|k| k.schema()).collect(),
        }
    }

    /// Whether the model of `request` can be built, and what it costs
    /// (`kiln-worker models check`).
    pub fn check(&self, request: &CheckRequest) -> CheckReport {
        let data = DataShape {
            features: request.features as usize,
            classes: request.classes as usize,
        };
        let outcome = self
            .kind(&request.kind)
            .ok_or_else(|| AttrError {
                attribute: None,
                message: format!(
                    "model kind {:?} is not offered by this worker binary",
                    request.kind
                ),
                hint: Some(format!("kinds offered: {}", self.names().join(", "))),
            })
            .and_then(|kind| kind.check(&request.attributes, data));
        match outcome {
            Ok((parameters, activations_per_sample)) => CheckReport {
                problem: None,
                parameters,
                activations_per_sample,
            },
            Err(e) => CheckReport {
                problem: Some(AttrProblem {
                    attribute: e.attribute,
                    message: e.message,
                    hint: e.hint,
                }),
                parameters: 0,
                activations_per_sample: 0,
            },
        }
    }

    /// Trains `task` with its kind on the CPU.
    pub fn train(
        &self,
        task: &Task,
        ctx: Context<'_, CpuBackend>,
        mode: CheckpointMode,
    ) -> Result<Outcome, TrainError> {
        let kind = self.kind(&task.spec.model_kind).ok_or_else(|| {
            TrainError::Spec(format!(
                "model kind {:?} is not offered by this worker binary (it offers {})",
                task.spec.model_kind,
                self.names().join(", ")
            ))
        })?;
        kind.train(task, ctx, mode)
    }

    /// Whether this binary offers `name`.
    pub fn offers(&self, name: &str) -> bool {
        self.kind(name).is_some()
    }

    fn kind(&self, name: &str) -> Option<&dyn Kind> {
        self.kinds.iter().find(|k| k.name() == name).map(|k| &**k)
    }
}

/// A kind with its types erased.
trait Kind: Send + Sync {
    fn name(&self) -> &'static str;
    fn schema(&self) -> KindSchema;
    /// The parameter count and activations per sample of a valid model.
    fn check(
        &self,
        attributes: &serde_json::Map<String, serde_json::Value>,
        data: DataShape,
    ) -> Result<(u64, u64), AttrError>;
    fn train(
        &self,
        task: &Task,
        ctx: Context<'_, CpuBackend>,
        mode: CheckpointMode,
    ) -> Result<Outcome, TrainError>;
}

struct Erased<K>(PhantomData<fn() -> K>);

impl<K: ModelKind> Kind for Erased<K>
where
    K::Model<CpuBackend>: AutodiffModule<CpuBackend, InnerModule = K::Model<NdArray>>,
{
    fn name(&self) -> &'static str {
        K::NAME
    }

    fn schema(&self) -> KindSchema {
        super::schema::<K>()
    }

    fn check(
        &self,
        attributes: &serde_json::Map<String, serde_json::Value>,
        data: DataShape,
    ) -> Result<(u64, u64), AttrError> {
        let kind = super::configure::<K>(attributes, data)?;
        Ok((kind.parameters(), kind.activations_per_sample()))
    }

    fn train(
        &self,
        task: &Task,
        ctx: Context<'_, CpuBackend>,
        mode: CheckpointMode,
    ) -> Result<Outcome, TrainError> {
        let spec = &task.spec;
        let data = DataShape {
            features: spec.dataset.features as usize,
            classes: spec.dataset.classes as usize,
        };
        let kind = super::configure::<K>(&spec.model_attributes, data)
            .map_err(|e| TrainError::Spec(format!("model {:?}: {e}", K::NAME)))?;
        let model = kind.init::<CpuBackend>(&mut Init::new(spec.seed, &ctx.device));
        train::train_with(task, ctx, mode, model)
    }
}
