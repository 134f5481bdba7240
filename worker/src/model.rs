//! The models a job can train, built from its spec, and the bridge between Burn's per-parameter
//! gradients and the flat buffer the collective reduces.
//!
//! Parameters are visited in module order, which is the same on every rank (parameter ids are
//! random per process and are not), so "the i-th float of the buffer" means the same thing
//! everywhere.

use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::Linear;
use burn::optim::GradientsParams;
use burn::tensor::activation::relu;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use kiln_proto::v1::ModelSpec;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Uniform};

/// A multi-layer perceptron classifier: Linear → ReLU → … → Linear (logits).
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    layers: Vec<Linear<B>>,
}

impl<B: Backend> Mlp<B> {
    /// Builds the model of `spec` with parameters drawn from `seed`.
    ///
    /// Initialisation uses our own seeded generator, not the backend's, so every rank (and every
    /// backend) starts from bit-identical parameters without a broadcast. The distribution is
    /// Burn's default for `Linear`: U(-k, k), k = 1/sqrt(fan_in).
    pub fn new(spec: &ModelSpec, seed: u64, device: &B::Device) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let widths: Vec<usize> = std::iter::once(spec.inputs)
            .chain(spec.hidden.iter().copied())
            .chain(std::iter::once(spec.classes))
            .map(|w| w as usize)
            .collect();
        let layers = widths
            .windows(2)
            .map(|w| {
                let (fan_in, fan_out) = (w[0], w[1]);
                let k = 1.0 / (fan_in as f32).sqrt();
                let dist = Uniform::new_inclusive(-k, k).expect("k is finite and positive");
                let mut draw =
                    |n: usize| -> Vec<f32> { (0..n).map(|_| dist.sample(&mut rng)).collect() };
                let weight = Tensor::from_data(
                    TensorData::new(draw(fan_in * fan_out), [fan_in, fan_out]),
                    device,
                );
                let bias = Tensor::from_data(TensorData::new(draw(fan_out), [fan_out]), device);
                Linear {
                    weight: Param::from_tensor(weight),
                    bias: Some(Param::from_tensor(bias)),
                }
            })
            .collect();
        Self { layers }
    }

    /// Logits `[batch, classes]` for inputs `[batch, inputs]`.
    pub fn forward(&self, mut x: Tensor<B, 2>) -> Tensor<B, 2> {
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

/// Every parameter's values, concatenated in visit order.
pub fn flatten_params<B: Backend, M: Module<B>>(module: &M) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl<B: Backend> ModuleVisitor<B> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            extend_with(&mut self.0, param.val());
        }
    }
    let mut c = Collect(Vec::new());
    module.visit(&mut c);
    c.0
}

/// Appends every parameter's gradient to `out` in visit order, zeros where a parameter got no
/// gradient (e.g. on a rank whose slice of the batch is empty).
pub fn flatten_grads<B: AutodiffBackend, M: Module<B>>(
    module: &M,
    grads: &GradientsParams,
    out: &mut Vec<f32>,
) {
    struct Flatten<'a> {
        grads: &'a GradientsParams,
        out: &'a mut Vec<f32>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Flatten<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            match self.grads.get::<B::InnerBackend, D>(param.id) {
                Some(grad) => extend_with(self.out, grad),
                None => {
                    let n = param.val().shape().num_elements();
                    self.out.extend(std::iter::repeat_n(0.0, n));
                }
            }
        }
    }
    module.visit(&mut Flatten { grads, out });
}

/// Rebuilds per-parameter gradients from a flat buffer laid out by [`flatten_grads`].
pub fn unflatten_grads<B: AutodiffBackend, M: Module<B>>(
    module: &M,
    flat: &[f32],
    device: &B::Device,
) -> GradientsParams {
    struct Unflatten<'a, B: AutodiffBackend> {
        flat: &'a [f32],
        device: &'a B::Device,
        grads: GradientsParams,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Unflatten<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let shape = param.val().shape();
            let (head, rest) = self.flat.split_at(shape.num_elements());
            self.flat = rest;
            let grad = Tensor::<B::InnerBackend, D>::from_data(
                TensorData::new(head.to_vec(), shape),
                self.device,
            );
            self.grads.register(param.id, grad);
        }
    }
    let mut u = Unflatten::<B> {
        flat,
        device,
        grads: GradientsParams::new(),
    };
    module.visit(&mut u);
    u.grads
}

fn extend_with<B: Backend, const D: usize>(out: &mut Vec<f32>, t: Tensor<B, D>) {
    out.extend(t.into_data().iter::<f32>());
}
