//! The kinds a worker binary offers, behind one object-safe face: the training loop is
//! generic over the model type, and each registered kind instantiates it for the backends
//! the binary trains on.

use std::marker::PhantomData;

use burn::backend::{Autodiff, NdArray};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use kiln_proto::models::{AttrProblem, Catalog, CheckReport, CheckRequest, KindSchema};

use burn::module::Module;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};

use super::restore::{Restored, RestoredModel};
use super::{AttrError, Classifier, DataShape, Init, ModelKind, cnn::CnnKind, mlp::MlpKind};
use crate::spec::TrainSpec;
use crate::train::{self, CheckpointMode, Context, Outcome, Task, TrainError};

/// The CPU training backend.
pub type CpuBackend = Autodiff<NdArray>;

/// A kind whose model trains on backend `B`: every kind whose model is a derived Burn
/// module, on every backend (the blanket implementation), so nothing needs implementing.
pub trait TrainsOn<B: AutodiffBackend>: ModelKind {
    /// Builds the model from the task's seed on `ctx.device` and trains it.
    fn train_on(
        &self,
        task: &Task,
        ctx: Context<'_, B>,
        mode: CheckpointMode,
    ) -> Result<Outcome, TrainError>;
}

impl<K: ModelKind, B: AutodiffBackend> TrainsOn<B> for K
where
    K::Model<B>: AutodiffModule<B> + 'static,
    <K::Model<B> as AutodiffModule<B>>::InnerModule: Classifier<B::InnerBackend>,
{
    fn train_on(
        &self,
        task: &Task,
        ctx: Context<'_, B>,
        mode: CheckpointMode,
    ) -> Result<Outcome, TrainError> {
        let model = self.init::<B>(&mut Init::new(task.spec.seed, &ctx.device));
        train::train_with(task, ctx, mode, model)
    }
}

/// A kind this binary can train on each backend it was built with: the CPU, and with the
/// `cuda` feature the GPU.
#[cfg(not(feature = "cuda"))]
pub trait Trainable: TrainsOn<CpuBackend> {}
#[cfg(not(feature = "cuda"))]
impl<K: TrainsOn<CpuBackend>> Trainable for K {}

/// A kind this binary can train on each backend it was built with: the CPU, and with the
/// `cuda` feature the GPU.
#[cfg(feature = "cuda")]
pub trait Trainable: TrainsOn<CpuBackend> + TrainsOn<crate::gpu::GpuBackend> {}
#[cfg(feature = "cuda")]
impl<K: TrainsOn<CpuBackend> + TrainsOn<crate::gpu::GpuBackend>> Trainable for K {}

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
    pub fn with<K: Trainable>(mut self) -> Self {
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
            backends: crate::resources::backends(),
            collectives: crate::resources::collectives(),
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
        self.kind_of(&task.spec)?.train(task, ctx, mode)
    }

    /// Trains `task` with its kind on the GPU `ctx.device`.
    #[cfg(feature = "cuda")]
    pub fn train_on_gpu(
        &self,
        task: &Task,
        ctx: Context<'_, crate::gpu::GpuBackend>,
        mode: CheckpointMode,
    ) -> Result<Outcome, TrainError> {
        self.kind_of(&task.spec)?.train_on_gpu(task, ctx, mode)
    }

    /// The model `spec` trains, with the parameters of the checkpoint's model `record`.
    pub fn restore(
        &self,
        spec: &TrainSpec,
        record: Vec<u8>,
    ) -> Result<Box<dyn Restored>, TrainError> {
        self.kind_of(spec)?.restore(spec, record)
    }

    /// The spec's model attributes with the kind's defaults filled in, as the model was built.
    pub fn complete_attributes(
        &self,
        spec: &TrainSpec,
    ) -> Result<serde_json::Map<String, serde_json::Value>, TrainError> {
        self.kind_of(spec)?
            .schema()
            .complete(&spec.model_attributes)
            .map_err(TrainError::Spec)
    }

    fn kind_of(&self, spec: &TrainSpec) -> Result<&dyn Kind, TrainError> {
        self.kind(&spec.model_kind).ok_or_else(|| {
            TrainError::Spec(format!(
                "model kind {:?} is not offered by this worker binary (it offers {})",
                spec.model_kind,
                self.names().join(", ")
            ))
        })
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
    #[cfg(feature = "cuda")]
    fn train_on_gpu(
        &self,
        task: &Task,
        ctx: Context<'_, crate::gpu::GpuBackend>,
        mode: CheckpointMode,
    ) -> Result<Outcome, TrainError>;
    fn restore(&self, spec: &TrainSpec, record: Vec<u8>) -> Result<Box<dyn Restored>, TrainError>;
}

struct Erased<K>(PhantomData<fn() -> K>);

impl<K: Trainable> Kind for Erased<K> {
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
        TrainsOn::<CpuBackend>::train_on(&configured::<K>(&task.spec)?, task, ctx, mode)
    }

    #[cfg(feature = "cuda")]
    fn train_on_gpu(
        &self,
        task: &Task,
        ctx: Context<'_, crate::gpu::GpuBackend>,
        mode: CheckpointMode,
    ) -> Result<Outcome, TrainError> {
        TrainsOn::<crate::gpu::GpuBackend>::train_on(&configured::<K>(&task.spec)?, task, ctx, mode)
    }

    fn restore(&self, spec: &TrainSpec, record: Vec<u8>) -> Result<Box<dyn Restored>, TrainError> {
        let device = Default::default();
        let model = configured::<K>(spec)?.init::<NdArray>(&mut Init::new(spec.seed, &device));
        let record = BinBytesRecorder::<FullPrecisionSettings>::default()
            .load(record, &device)
            .map_err(|e| TrainError::Spec(format!("the checkpoint's model record: {e}")))?;
        Ok(Box::new(RestoredModel {
            model: model.load_record(record),
        }))
    }
}

/// Kind `K` configured from the spec's model attributes and data.
fn configured<K: ModelKind>(spec: &TrainSpec) -> Result<K, TrainError> {
    let data = DataShape {
        features: spec.dataset.features as usize,
        classes: spec.dataset.classes as usize,
    };
    super::configure::<K>(&spec.model_attributes, data)
        .map_err(|e| TrainError::Spec(format!("model {:?}: {e}", K::NAME)))
}
