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

/// [`flatten_grads`] on the device: every gradient reshaped to one dimension and concatenated
/// into one tensor (zeros where a parameter got none), with `extra` appended, so a collective
/// that reduces device memory (NCCL) never copies the gradients to the host.
pub fn flatten_grads_on_device<B: AutodiffBackend, M: Module<B>>(
    module: &M,
    mut grads: GradientsParams,
    extra: &[f32],
    device: &B::Device,
) -> Tensor<B::InnerBackend, 1> {
    struct Flatten<'a, B: AutodiffBackend> {
        grads: &'a mut GradientsParams,
        parts: Vec<Tensor<B::InnerBackend, 1>>,
        device: &'a B::Device,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Flatten<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let part = match self.grads.remove::<B::InnerBackend, D>(param.id) {
                Some(grad) => grad.reshape([-1]),
                None => Tensor::zeros([param.val().shape().num_elements()], self.device),
            };
            self.parts.push(part);
        }
    }
    let mut f = Flatten::<B> {
        grads: &mut grads,
        parts: Vec::new(),
        device,
    };
    module.visit(&mut f);
    let mut parts = f.parts;
    parts.push(Tensor::from_data(
        TensorData::new(extra.to_vec(), [extra.len()]),
        device,
    ));
    Tensor::cat(parts, 0)
}

/// [`unflatten_grads`] on the device: the gradients are slices of `flat` (laid out by
/// [`flatten_grads_on_device`]; what follows the last parameter is ignored), reshaped.
pub fn unflatten_grads_on_device<B: AutodiffBackend, M: Module<B>>(
    module: &M,
    flat: &Tensor<B::InnerBackend, 1>,
) -> GradientsParams {
    struct Unflatten<'a, B: AutodiffBackend> {
        flat: &'a Tensor<B::InnerBackend, 1>,
        at: usize,
        grads: GradientsParams,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Unflatten<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let shape = param.val().shape();
            let n = shape.num_elements();
            let grad: Tensor<B::InnerBackend, D> =
                self.flat.clone().slice(self.at..self.at + n).reshape(shape);
            self.at += n;
            self.grads.register(param.id, grad);
        }
    }
    let mut u = Unflatten::<B> {
        flat,
        at: 0,
        grads: GradientsParams::new(),
    };
    module.visit(&mut u);
    u.grads
}

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, NdArray};
    use burn::nn::{Linear, LinearConfig};

    use super::*;

    type B = Autodiff<NdArray>;

    #[test]
    fn the_device_layout_is_the_host_layout() {
        let device = Default::default();
        let model: Linear<B> = LinearConfig::new(3, 2).init(&device);
        let x = Tensor::<B, 2>::from_data([[1.0, -2.0, 0.5], [0.25, 3.0, -1.0]], &device);
        let grads =
            || GradientsParams::from_grads(model.forward(x.clone()).sum().backward(), &model);

        let mut host = Vec::new();
        flatten_grads(&model, grads(), &mut host);
        let flat = flatten_grads_on_device(&model, grads(), &[7.0, 1.0], &device);
        let on_device: Vec<f32> = flat.to_data().to_vec().expect("f32");
        assert_eq!(on_device[..host.len()], host[..]);
        assert_eq!(on_device[host.len()..], [7.0, 1.0]);

        let mut back = Vec::new();
        flatten_grads(&model, unflatten_grads_on_device(&model, &flat), &mut back);
        assert_eq!(back, host);
    }
}
