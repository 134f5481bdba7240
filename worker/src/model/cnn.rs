//! `model "cnn"`: a convolutional classifier of images. Each entry of `channels` is a stage
//! conv (`kernel_size`, same padding) → ReLU → 2×2 max-pool; then the feature maps are
//! flattened and go through fully connected layers (`hidden`, ReLU between) to the logits.
//!
//! The convolutions run as one matrix product each (im2col: the k² shifted views of the
//! padded input side by side, times the kernels as a matrix), which the CPU backend computes
//! faster than its direct convolution loops, forward and backward; a test checks it against
//! Burn's own. The parameters are Burn's `Conv2d` weight and bias, laid out as Burn's
//! convolution reads them.

use burn::module::Module;
use burn::nn::Linear;
use burn::nn::conv::Conv2d;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use serde_json::json;

use super::mlp::check_size;
use super::{AttrError, AttrSchema, AttrType, Attrs, Classifier, DataShape, Init, ModelKind};

/// The configuration of `model "cnn"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CnnKind {
    input: [usize; 3],
    channels: Vec<usize>,
    kernel: usize,
    /// Fully connected widths: the flattened maps, `hidden`, the classes.
    dense: Vec<usize>,
}

/// The CNN module.
#[derive(Module, Debug)]
pub struct Cnn<B: Backend> {
    convs: Vec<Conv2d<B>>,
    pool: MaxPool2d,
    dense: Vec<Linear<B>>,
    channels: usize,
    height: usize,
    width: usize,
}

impl<B: Backend> Classifier<B> for Cnn<B> {
    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let batch = x.dims()[0];
        let mut maps = x.reshape([batch, self.channels, self.height, self.width]);
        for conv in &self.convs {
            maps = self.pool.forward(relu(convolve(conv, maps)));
        }
        let mut x: Tensor<B, 2> = maps.flatten(1, 3);
        let last = self.dense.len() - 1;
        for (i, layer) in self.dense.iter().enumerate() {
            x = layer.forward(x);
            if i < last {
                x = relu(x);
            }
        }
        x
    }
}

/// `conv`'s same-padded, stride-1 convolution of `x` `[batch, c, h, w]`, as one batched
/// matmul: `[out, c·k²]` kernels times each sample's `[c·k², h·w]` matrix of shifted views.
fn convolve<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    use burn::tensor::ops::PadMode;
    let [batch, channels, height, width] = x.dims();
    let [out, _, k, _] = conv.weight.val().dims();
    let pad = k / 2;
    let padded = x.pad((pad, pad, pad, pad), PadMode::Constant(0.0));
    // Row c·k² + i of a sample's matrix is channel c shifted by kernel position i, the order
    // of the weight's `[out, c, k, k]` layout.
    let views: Vec<Tensor<B, 5>> = (0..k * k)
        .map(|i| {
            let (dy, dx) = (i / k, i % k);
            padded
                .clone()
                .slice([0..batch, 0..channels, dy..dy + height, dx..dx + width])
                .unsqueeze_dim(2)
        })
        .collect();
    let columns: Tensor<B, 3> =
        Tensor::cat(views, 2).reshape([batch, channels * k * k, height * width]);
    let kernels: Tensor<B, 3> = conv.weight.val().reshape([1, out, channels * k * k]);
    let mut y = kernels.matmul(columns).reshape([batch, out, height, width]);
    if let Some(bias) = &conv.bias {
        y = y + bias.val().reshape([1, out, 1, 1]);
    }
    y
}

impl ModelKind for CnnKind {
    const NAME: &'static str = "cnn";
    const DOC: &'static str = "A convolutional network of images: conv → ReLU → 2×2 max-pool stages, then fully connected layers.";
    type Model<B: Backend> = Cnn<B>;

    fn attributes() -> Vec<AttrSchema> {
        vec![
            AttrSchema::required(
                "input_shape",
                AttrType::IntegerList,
                "[channels, height, width] of a sample; the product equals the dataset's features.",
            ),
            AttrSchema::required(
                "channels",
                AttrType::IntegerList,
                "Output channels of each conv → ReLU → 2×2 max-pool stage.",
            ),
            AttrSchema::optional(
                "kernel_size",
                AttrType::Integer,
                json!(3),
                "Side of the square convolution kernels (odd; same padding).",
            ),
            AttrSchema::optional(
                "hidden",
                AttrType::IntegerList,
                json!([]),
                "Widths of the fully connected layers after flattening.",
            ),
            AttrSchema::required(
                "classes",
                AttrType::Integer,
                "Output classes; equals the dataset's.",
            ),
        ]
    }

    fn configure(attrs: &Attrs, data: DataShape) -> Result<Self, AttrError> {
        let shape = attrs.integers("input_shape")?;
        let [c, h, w] = shape[..] else {
            return Err(AttrError::at(
                "input_shape",
                format!(
                    "`input_shape` has {} entries; it takes 3: [channels, height, width]",
                    shape.len()
                ),
            )
            .with_hint("for 28×28 greyscale images: `input_shape = [1, 28, 28]`"));
        };
        if c * h * w != data.features {
            return Err(AttrError::at(
                "input_shape",
                format!("`input_shape` {c}×{h}×{w} = {} features, but the dataset has {}", c * h * w, data.features),
            )
            .with_hint("the product of [channels, height, width] must equal the dataset's features per sample"));
        }
        if c == 0 {
            return Err(AttrError::at(
                "input_shape",
                "an image needs at least 1 channel",
            ));
        }
        let kernel = attrs.integer("kernel_size")?;
        if kernel == 0 || kernel.is_multiple_of(2) {
            return Err(AttrError::at(
                "kernel_size",
                format!("`kernel_size` must be odd for same padding, got {kernel}"),
            )
            .with_hint("use 3 or 5"));
        }
        let channels = attrs.integers("channels")?;
        if channels.contains(&0) {
            return Err(AttrError::at(
                "channels",
                "a convolution needs at least 1 output channel",
            ));
        }
        let (mut side_h, mut side_w) = (h, w);
        for (stage, _) in channels.iter().enumerate() {
            if side_h < 2 || side_w < 2 {
                return Err(AttrError::at(
                    "channels",
                    format!("stage {} would pool a {side_h}×{side_w} map below 1×1: a {h}×{w} input allows {stage} stage(s)", stage + 1),
                )
                .with_hint("use fewer entries in `channels`, or larger inputs"));
            }
            side_h /= 2;
            side_w /= 2;
        }
        let hidden = attrs.integers("hidden")?;
        if hidden.contains(&0) {
            return Err(AttrError::at(
                "hidden",
                "a hidden layer needs at least 1 unit",
            ));
        }
        let classes = check_size(attrs, "classes", data.classes, "class count")?;
        let flat = channels.last().copied().unwrap_or(c) * side_h * side_w;
        let dense = std::iter::once(flat)
            .chain(hidden)
            .chain(std::iter::once(classes))
            .collect();
        Ok(Self {
            input: [c, h, w],
            channels,
            kernel,
            dense,
        })
    }

    fn init<B: Backend>(&self, init: &mut Init<'_, B>) -> Cnn<B> {
        let [c, h, w] = self.input;
        let mut inputs = c;
        let convs = self
            .channels
            .iter()
            .map(|&out| {
                let conv = init.conv2d(inputs, out, self.kernel);
                inputs = out;
                conv
            })
            .collect();
        let dense = self
            .dense
            .windows(2)
            .map(|d| init.linear(d[0], d[1]))
            .collect();
        Cnn {
            convs,
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            dense,
            channels: c,
            height: h,
            width: w,
        }
    }

    fn parameters(&self) -> u64 {
        let mut inputs = self.input[0] as u64;
        let k2 = (self.kernel * self.kernel) as u64;
        let mut total = 0u64;
        for &out in &self.channels {
            total += out as u64 * (inputs * k2 + 1);
            inputs = out as u64;
        }
        total
            + self
                .dense
                .windows(2)
                .map(|d| (d[0] as u64 + 1) * d[1] as u64)
                .sum::<u64>()
    }

    fn activations_per_sample(&self) -> u64 {
        let [_, mut h, mut w] = self.input;
        let mut floats = self.input.iter().product::<usize>() as u64;
        for &out in &self.channels {
            // Conv output and its ReLU at full size, then the pooled map.
            floats += 2 * (out * h * w) as u64;
            h /= 2;
            w /= 2;
            floats += (out * h * w) as u64;
        }
        floats += self.dense.iter().map(|&d| d as u64).sum::<u64>();
        2 * floats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    #[test]
    fn the_matmul_convolution_is_burns_convolution() {
        let device = Default::default();
        let mut init = Init::<NdArray>::new(3, &device);
        for (c, out, k) in [(1, 4, 3), (3, 5, 5), (2, 2, 1)] {
            let conv = init.conv2d(c, out, k);
            let x = init.uniform([2, c, 7, 6], 1.0);
            let ours = convolve(&conv, x.clone()).into_data();
            let burns = conv.forward(x).into_data();
            assert_eq!(ours.shape, burns.shape);
            ours.assert_approx_eq::<f32>(&burns, burn::tensor::Tolerance::absolute(1e-5));
        }
    }

    #[test]
    fn shape_mistakes_name_their_attribute() {
        let attrs = |v: serde_json::Value| Attrs::new(v.as_object().cloned().unwrap_or_default());
        let data = DataShape {
            features: 64,
            classes: 10,
        };
        let base = json!({"input_shape": [1, 8, 8], "channels": [4, 8, 16], "kernel_size": 3, "hidden": [], "classes": 10});
        assert!(CnnKind::configure(&attrs(base.clone()), data).is_ok());
        let mut deep = base.clone();
        deep["channels"] = json!([4, 4, 4, 4]);
        let err = CnnKind::configure(&attrs(deep), data).expect_err("too deep");
        assert_eq!(err.attribute.as_deref(), Some("channels"));
        assert!(
            err.message.contains("stage 4 would pool a 1×1 map"),
            "{}",
            err.message
        );
        let mut wrong = base.clone();
        wrong["input_shape"] = json!([1, 8, 9]);
        let err = CnnKind::configure(&attrs(wrong), data).expect_err("product");
        assert_eq!(err.attribute.as_deref(), Some("input_shape"));
        let mut even = base;
        even["kernel_size"] = json!(4);
        let err = CnnKind::configure(&attrs(even), data).expect_err("even kernel");
        assert_eq!(err.attribute.as_deref(), Some("kernel_size"));
    }
}
