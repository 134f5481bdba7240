//! A trained model rebuilt from a checkpoint's model record, on the CPU, for what comes after
//! training: its parameters by stable name (the export) and its logits (predictions).
//!
//! A parameter's name is its path in the module tree, the fields and `Vec` indices joined by
//! `.` (`layers.0.weight`): a function of the model's structure alone, unlike Burn's
//! parameter ids, which are random per process.

use burn::backend::NdArray;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData};

use super::Classifier;

/// One parameter: its name, shape and values (row-major, float32).
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// Its path in the module tree.
    pub name: String,
    /// Its dimensions, as the module holds it.
    pub shape: Vec<usize>,
    /// Its values, row-major.
    pub values: Vec<f32>,
}

/// A model restored from its record.
pub trait Restored: Send {
    /// Every parameter, in the order the module visits them (the forward order of the
    /// built-in kinds).
    fn weights(&self) -> Vec<NamedTensor>;
    /// The logits `[rows, classes]` (row-major) of `rows` samples `x` (row-major).
    fn logits(&self, x: Vec<f32>, rows: usize) -> Vec<f32>;
}

/// A restored model of type `M`.
pub(super) struct RestoredModel<M> {
    pub(super) model: M,
}

impl<M: Classifier<NdArray>> Restored for RestoredModel<M> {
    fn weights(&self) -> Vec<NamedTensor> {
        named(&self.model)
    }

    fn logits(&self, x: Vec<f32>, rows: usize) -> Vec<f32> {
        if rows == 0 {
            return Vec::new();
        }
        let features = x.len() / rows;
        let device = Default::default();
        let input = Tensor::<NdArray, 2>::from_data(TensorData::new(x, [rows, features]), &device);
        self.model
            .forward(input)
            .into_data()
            .into_vec::<f32>()
            .unwrap_or_default()
    }
}

/// The float parameters of `module` with their paths.
pub fn named<M: Module<NdArray>>(module: &M) -> Vec<NamedTensor> {
    struct Names {
        path: Vec<String>,
        out: Vec<NamedTensor>,
    }
    impl ModuleVisitor<NdArray> for Names {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_owned());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<NdArray, D>>) {
            let tensor = param.val();
            self.out.push(NamedTensor {
                name: self.path.join("."),
                shape: tensor.dims().to_vec(),
                values: tensor.into_data().into_vec::<f32>().unwrap_or_default(),
            });
        }
    }
    let mut names = Names {
        path: Vec::new(),
        out: Vec::new(),
    };
    module.visit(&mut names);
    names.out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DataShape, Init, ModelKind, configure};

    fn names(
        kind: &str,
        attributes: serde_json::Value,
        features: usize,
    ) -> Vec<(String, Vec<usize>)> {
        let attributes = attributes.as_object().cloned().unwrap_or_default();
        let data = DataShape {
            features,
            classes: 3,
        };
        let device = Default::default();
        let weights = match kind {
            "mlp" => {
                let k = configure::<crate::model::mlp::MlpKind>(&attributes, data).expect("mlp");
                named(&k.init::<NdArray>(&mut Init::new(1, &device)))
            }
            _ => {
                let k = configure::<crate::model::cnn::CnnKind>(&attributes, data).expect("cnn");
                named(&k.init::<NdArray>(&mut Init::new(1, &device)))
            }
        };
        weights.into_iter().map(|t| (t.name, t.shape)).collect()
    }

    #[test]
    fn parameters_are_named_by_their_path() {
        let mlp = names(
            "mlp",
            serde_json::json!({"inputs": 4, "hidden": [5], "classes": 3}),
            4,
        );
        assert_eq!(
            mlp,
            [
                ("layers.0.weight".to_owned(), vec![4, 5]),
                ("layers.0.bias".to_owned(), vec![5]),
                ("layers.1.weight".to_owned(), vec![5, 3]),
                ("layers.1.bias".to_owned(), vec![3]),
            ]
        );
        let cnn = names(
            "cnn",
            serde_json::json!({"input_shape": [1, 4, 4], "channels": [2], "classes": 3}),
            16,
        );
        let cnn: Vec<&str> = cnn.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            cnn,
            [
                "convs.0.weight",
                "convs.0.bias",
                "dense.0.weight",
                "dense.0.bias"
            ]
        );
    }
}
