//! `model "mlp"`: a multi-layer perceptron, Linear → ReLU → … → Linear (logits).

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use serde_json::json;

use super::{AttrError, AttrSchema, AttrType, Attrs, Classifier, DataShape, Init, ModelKind};

/// The configuration of `model "mlp"`: the layer widths, inputs first, classes last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlpKind {
    widths: Vec<usize>,
}

/// The MLP module.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    layers: Vec<Linear<B>>,
}

impl<B: Backend> Classifier<B> for Mlp<B> {
    fn forward(&self, mut x: Tensor<B, 2>) -> Tensor<B, 2> {
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if i < last {
                x = relu(x);
            }
        }
        x
    }
}

/// Attribute `name`, which must equal the data's `want` (`what`: "feature count", "class
/// count"); a located error with a hint otherwise. For kinds whose `inputs` and `classes`
/// restate the dataset's.
pub fn check_size(attrs: &Attrs, name: &str, want: usize, what: &str) -> Result<usize, AttrError> {
    let value = attrs.integer(name)?;
    if value == want {
        Ok(value)
    } else {
        Err(AttrError::at(
            name,
            format!("Model `{name}` ({value}) does not match the dataset's {what} ({want})"),
        )
        .with_hint(format!("set `{name} = {want}`")))
    }
}

impl ModelKind for MlpKind {
    const NAME: &'static str = "mlp";
    const DOC: &'static str =
        "A multi-layer perceptron: fully connected layers with ReLU between them.";
    type Model<B: Backend> = Mlp<B>;

    fn attributes() -> Vec<AttrSchema> {
        vec![
            AttrSchema::required(
                "inputs",
                AttrType::Integer,
                "Features per sample; equals the dataset's.",
            ),
            AttrSchema::optional(
                "hidden",
                AttrType::IntegerList,
                json!([]),
                "Widths of the hidden layers, in order.",
            ),
            AttrSchema::required(
                "classes",
                AttrType::Integer,
                "Output classes; equals the dataset's.",
            ),
        ]
    }

    fn configure(attrs: &Attrs, data: DataShape) -> Result<Self, AttrError> {
        let inputs = check_size(attrs, "inputs", data.features, "feature count")?;
        let hidden = attrs.integers("hidden")?;
        if hidden.contains(&0) {
            return Err(AttrError::at(
                "hidden",
                format!("`hidden` = {hidden:?} has a layer of 0 units; each needs at least 1"),
            ));
        }
        let classes = check_size(attrs, "classes", data.classes, "class count")?;
        let widths = std::iter::once(inputs)
            .chain(hidden)
            .chain(std::iter::once(classes))
            .collect();
        Ok(Self { widths })
    }

    fn init<B: Backend>(&self, init: &mut Init<'_, B>) -> Mlp<B> {
        let layers = self
            .widths
            .windows(2)
            .map(|w| init.linear(w[0], w[1]))
            .collect();
        Mlp { layers }
    }

    fn parameters(&self) -> u64 {
        self.widths
            .windows(2)
            .map(|w| {
                (w[0] as u64)
                    .saturating_mul(w[1] as u64)
                    .saturating_add(w[1] as u64)
            })
            .fold(0, u64::saturating_add)
    }

    fn activations_per_sample(&self) -> u64 {
        2 * self.widths.iter().map(|&w| w as u64).sum::<u64>()
    }
}

/// The wire spec of an MLP `inputs → hidden… → classes`, for benchmarks and tests that build
/// jobs without HCL.
pub fn spec(inputs: u32, hidden: &[u32], classes: u32) -> kiln_proto::v1::ModelSpec {
    kiln_proto::v1::ModelSpec {
        kind: MlpKind::NAME.to_owned(),
        attributes: json!({"inputs": inputs, "hidden": hidden, "classes": classes}).to_string(),
    }
}
