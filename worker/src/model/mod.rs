//! The model API: what a model kind is ([`ModelKind`]), the classifier it builds
//! ([`Classifier`]), the attributes it is configured from ([`Attrs`]) and the seeded
//! initialiser every rank builds it with ([`Init`]). The built-in kinds ([`mlp`], [`cnn`]) use
//! this API like any user's kind; a worker binary offers the kinds of its [`Registry`].
//!
//! A kind is a plain configuration struct: [`ModelKind::configure`] reads and checks the
//! `model` block's attributes against the dataset's shape (no tensors: `kiln validate` runs it
//! too), and [`ModelKind::init`] builds the Burn module from it.

pub mod cnn;
pub mod mlp;
pub mod params;
mod registry;
pub mod restore;

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, PaddingConfig2d};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
pub use kiln_proto::models::{AttrSchema, AttrType};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Uniform};
use serde_json::{Map, Value};

pub use registry::{CpuBackend, Registry, Trainable, TrainsOn};

/// A Burn module that maps a batch of samples `[batch, features]` to logits
/// `[batch, classes]`. Inputs arrive flat, as the dataset stores them; a model of images
/// reshapes them itself.
pub trait Classifier<B: Backend>: Module<B> {
    /// Logits for a batch.
    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2>;
}

/// The shape of the data a model trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataShape {
    /// Features per sample (for images: channels × height × width).
    pub features: usize,
    /// Classes.
    pub classes: usize,
}

/// A model kind: the `model "NAME" { … }` block a worker binary understands.
///
/// `Self` is the kind's configuration, read from the block's attributes. Building must be a
/// function of the configuration and the [`Init`]'s seed alone, so that every rank of a job
/// starts from bit-identical parameters without a broadcast.
pub trait ModelKind: Sized + Send + Sync + 'static {
    /// The label in `model "NAME"`.
    const NAME: &'static str;
    /// One line on what the model is.
    const DOC: &'static str;
    /// The Burn module this kind builds, for any backend.
    type Model<B: Backend>: Classifier<B>;

    /// The attributes the block accepts.
    fn attributes() -> Vec<AttrSchema>;

    /// Reads the (schema-checked, defaults-filled) attributes and checks them against the
    /// data. Runs at `kiln validate` too, so it must not allocate tensors.
    fn configure(attrs: &Attrs, data: DataShape) -> Result<Self, AttrError>;

    /// Builds the module, drawing every initial value from `init`.
    fn init<B: Backend>(&self, init: &mut Init<'_, B>) -> Self::Model<B>;

    /// Trainable parameters, for `kiln validate`'s memory estimate. The default builds the
    /// model on the CPU and counts; kinds whose models are large say it without building.
    fn parameters(&self) -> u64 {
        let device = Default::default();
        let model = self.init::<burn::backend::NdArray>(&mut Init::new(0, &device));
        model.num_params() as u64
    }

    /// Floats of activations one sample holds during a training step (forward values and
    /// their gradients), for the same estimate; 0 when the kind does not say.
    fn activations_per_sample(&self) -> u64 {
        0
    }
}

/// The schema of kind `K`, as `models --json` shows it.
pub fn schema<K: ModelKind>() -> kiln_proto::models::KindSchema {
    kiln_proto::models::KindSchema {
        name: K::NAME.to_owned(),
        doc: K::DOC.to_owned(),
        attributes: K::attributes(),
    }
}

/// Checks `attributes` against `K`'s schema, fills in its defaults, and configures `K` for
/// `data`.
pub fn configure<K: ModelKind>(
    attributes: &Map<String, Value>,
    data: DataShape,
) -> Result<K, AttrError> {
    let complete = schema::<K>()
        .complete(attributes)
        .map_err(|message| AttrError {
            attribute: None,
            message,
            hint: None,
        })?;
    K::configure(&Attrs::new(complete), data)
}

/// A model that cannot be built from its attributes; `kiln validate` shows it at the
/// attribute.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AttrError {
    /// The attribute at fault, if one is.
    pub attribute: Option<String>,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

impl AttrError {
    /// A problem with `attribute`.
    pub fn at(attribute: &str, message: impl Into<String>) -> Self {
        Self {
            attribute: Some(attribute.to_owned()),
            message: message.into(),
            hint: None,
        }
    }

    /// The same problem, with a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// A `model` block's attributes, checked against the kind's schema with defaults filled in.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Attrs(Map<String, Value>);

impl Attrs {
    /// Wraps attributes already checked against the schema.
    pub fn new(values: Map<String, Value>) -> Self {
        Self(values)
    }

    fn value(&self, name: &str) -> Result<&Value, AttrError> {
        self.0
            .get(name)
            .ok_or_else(|| AttrError::at(name, format!("`{name}` is not set")))
    }

    /// A whole number.
    pub fn integer(&self, name: &str) -> Result<usize, AttrError> {
        self.value(name)?
            .as_u64()
            .map(|v| v as usize)
            .ok_or_else(|| AttrError::at(name, format!("`{name}` must be a whole number")))
    }

    /// A list of whole numbers.
    pub fn integers(&self, name: &str) -> Result<Vec<usize>, AttrError> {
        let list = self.value(name)?.as_array();
        list.and_then(|l| l.iter().map(|v| v.as_u64().map(|v| v as usize)).collect())
            .ok_or_else(|| AttrError::at(name, format!("`{name}` must be a list of whole numbers")))
    }

    /// A number.
    pub fn number(&self, name: &str) -> Result<f64, AttrError> {
        self.value(name)?
            .as_f64()
            .ok_or_else(|| AttrError::at(name, format!("`{name}` must be a number")))
    }

    /// `true` or `false`.
    pub fn bool(&self, name: &str) -> Result<bool, AttrError> {
        self.value(name)?
            .as_bool()
            .ok_or_else(|| AttrError::at(name, format!("`{name}` must be true or false")))
    }

    /// A string.
    pub fn string(&self, name: &str) -> Result<&str, AttrError> {
        self.value(name)?
            .as_str()
            .ok_or_else(|| AttrError::at(name, format!("`{name}` must be a string")))
    }
}

/// The seeded source of a model's initial parameters.
///
/// Values come from kiln's own generator (ChaCha8, seeded by the job's seed), not the
/// backend's, so every rank and every backend draws the same ones. Layers are drawn in the
/// order they are created.
pub struct Init<'a, B: Backend> {
    rng: ChaCha8Rng,
    device: &'a B::Device,
}

impl<'a, B: Backend> Init<'a, B> {
    /// An initialiser for `device`, seeded by `seed`.
    pub fn new(seed: u64, device: &'a B::Device) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            device,
        }
    }

    /// The device the model is built on.
    pub fn device(&self) -> &B::Device {
        self.device
    }

    /// A tensor of `shape` with values drawn from U(-k, k).
    pub fn uniform<const D: usize>(&mut self, shape: [usize; D], k: f32) -> Tensor<B, D> {
        let n = shape.iter().product();
        let values: Vec<f32> = match Uniform::new_inclusive(-k, k) {
            Ok(dist) => (0..n).map(|_| dist.sample(&mut self.rng)).collect(),
            // k = 0 (or not finite): a constant tensor.
            Err(_) => vec![0.0; n],
        };
        Tensor::from_data(TensorData::new(values, shape), self.device)
    }

    /// A fully connected layer `fan_in → fan_out` with Burn's (and PyTorch's) default
    /// distribution: weight and bias from U(-k, k), k = 1/√fan_in.
    pub fn linear(&mut self, fan_in: usize, fan_out: usize) -> Linear<B> {
        let k = 1.0 / (fan_in as f32).sqrt();
        let weight = self.uniform([fan_in, fan_out], k);
        let bias = self.uniform([fan_out], k);
        Linear {
            weight: Param::from_tensor(weight),
            bias: Some(Param::from_tensor(bias)),
        }
    }

    /// A 2-D convolution `channels_in → channels_out` with a square, odd `kernel` and same
    /// padding; weight and bias from U(-k, k), k = 1/√(channels_in·kernel²).
    pub fn conv2d(&mut self, channels_in: usize, channels_out: usize, kernel: usize) -> Conv2d<B> {
        let mut conv = Conv2dConfig::new([channels_in, channels_out], [kernel, kernel])
            .with_padding(PaddingConfig2d::Same)
            .init::<B>(self.device);
        let k = 1.0 / ((channels_in * kernel * kernel) as f32).sqrt();
        conv.weight =
            Param::from_tensor(self.uniform([channels_out, channels_in, kernel, kernel], k));
        conv.bias = Some(Param::from_tensor(self.uniform([channels_out], k)));
        conv
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}
