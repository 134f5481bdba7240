//! The bridge between Burn's per-parameter gradients and the flat buffer the collective
//! reduces.
//!
//! Parameters are visited in module order, which is the same on every rank (parameter ids are
//! random per process and are not), so "the i-th float of the buffer" means the same thing
//! everywhere.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};

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
/// gradient (e.g. on a rank whose slice of the batch is empty). The gradients are taken out of
/// `grads`: a tensor nothing else holds reads out as one copy, a shared one element by element.
pub fn flatten_grads<B: AutodiffBackend, M: Module<B>>(
    module: &M,
    mut grads: GradientsParams,
    out: &mut Vec<f32>,
) {
    struct Flatten<'a> {
        grads: &'a mut GradientsParams,
        out: &'a mut Vec<f32>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Flatten<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            match self.grads.remove::<B::InnerBackend, D>(param.id) {
                Some(grad) => extend_with(self.out, grad),
                None => {
                    let n = param.val().shape().num_elements();
                    self.out.extend(std::iter::repeat_n(0.0, n));
                }
            }
        }
    }
    module.visit(&mut Flatten {
        grads: &mut grads,
        out,
    });
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

/// Appends the values of `t`: one slice copy (element-wise iteration over `TensorData` is
/// many times slower and dominated the training step).
fn extend_with<B: Backend, const D: usize>(out: &mut Vec<f32>, t: Tensor<B, D>) {
    let data = t.into_data();
    match data.as_slice::<f32>() {
        Ok(values) => out.extend_from_slice(values),
        // Another float type (a half-precision backend): convert element by element.
        Err(_) => out.extend(data.iter::<f32>()),
    }
}
