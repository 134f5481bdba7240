//! `model "resmlp"`: a residual MLP, which kiln's built-in kinds cannot express. The input is
//! projected to `width` units, then goes through `blocks` pre-norm residual blocks
//! (`h + fc2(relu(fc1(layer_norm(h))))`), then a linear head gives the logits.
//!
//! Everything a kind needs is here: its attributes ([`ModelKind::attributes`]), how they are
//! read and checked against the data ([`ModelKind::configure`], which `kiln validate` runs
//! through `resmlp-worker models check`), and how the module is built from kiln's seeded
//! initialiser ([`ModelKind::init`]), so that every rank starts bit-identical.

use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use kiln_worker::model::mlp::check_size;
use kiln_worker::model::{
    AttrError, AttrSchema, AttrType, Attrs, Classifier, DataShape, Init, ModelKind,
};
use serde_json::json;

/// The configuration of `model "resmlp"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResMlpKind {
    inputs: usize,
    width: usize,
    blocks: usize,
    classes: usize,
}

/// One pre-norm residual block.
#[derive(Module, Debug)]
pub struct Residual<B: Backend> {
    norm: LayerNorm<B>,
    fc1: Linear<B>,
    fc2: Linear<B>,
}

/// The residual MLP.
#[derive(Module, Debug)]
pub struct ResMlp<B: Backend> {
    embed: Linear<B>,
    blocks: Vec<Residual<B>>,
    head: Linear<B>,
}

impl<B: Backend> Classifier<B> for ResMlp<B> {
    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let mut h = self.embed.forward(x);
        for block in &self.blocks {
            let update = block
                .fc2
                .forward(relu(block.fc1.forward(block.norm.forward(h.clone()))));
            h = h + update;
        }
        self.head.forward(h)
    }
}

impl ModelKind for ResMlpKind {
    const NAME: &'static str = "resmlp";
    const DOC: &'static str =
        "A residual MLP: a projection, pre-norm residual blocks, a linear head.";
    type Model<B: Backend> = ResMlp<B>;

    fn attributes() -> Vec<AttrSchema> {
        vec![
            AttrSchema::required(
                "inputs",
                AttrType::Integer,
                "Features per sample; equals the dataset's.",
            ),
            AttrSchema::optional(
                "width",
                AttrType::Integer,
                json!(64),
                "Units of the residual stream.",
            ),
            AttrSchema::optional("blocks", AttrType::Integer, json!(2), "Residual blocks."),
            AttrSchema::required(
                "classes",
                AttrType::Integer,
                "Output classes; equals the dataset's.",
            ),
        ]
    }

    fn configure(attrs: &Attrs, data: DataShape) -> Result<Self, AttrError> {
        let inputs = check_size(attrs, "inputs", data.features, "feature count")?;
        let classes = check_size(attrs, "classes", data.classes, "class count")?;
        let width = attrs.integer("width")?;
        if width == 0 {
            return Err(AttrError::at("width", "`width` must be at least 1"));
        }
        let blocks = attrs.integer("blocks")?;
        Ok(Self {
            inputs,
            width,
            blocks,
            classes,
        })
    }

    fn init<B: Backend>(&self, init: &mut Init<'_, B>) -> ResMlp<B> {
        let embed = init.linear(self.inputs, self.width);
        let blocks = (0..self.blocks)
            .map(|_| Residual {
                norm: LayerNormConfig::new(self.width).init(init.device()),
                fc1: init.linear(self.width, self.width),
                fc2: init.linear(self.width, self.width),
            })
            .collect();
        let head = init.linear(self.width, self.classes);
        ResMlp {
            embed,
            blocks,
            head,
        }
    }
}
