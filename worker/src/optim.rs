//! What turns an all-reduced gradient into new parameters: the optimizer (sgd, adam, adamw,
//! Burn's implementations), the learning-rate schedule and clipping by global norm.
//!
//! The schedule is a pure function of the step, and the step is in the checkpoint, so a
//! resumed run continues the same curve; the optimizer's state (moments, momentum) is in the
//! checkpoint's `optimizer.bin`. Clipping acts on the flat, already averaged buffer, so every
//! rank scales by the same factor.

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{
    Adam, AdamConfig, AdamW, AdamWConfig, GradientsParams, Optimizer, Sgd, SgdConfig,
};
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder, RecorderError};
use burn::tensor::backend::AutodiffBackend;
use kiln_proto::v1;

type Rec = BinBytesRecorder<FullPrecisionSettings>;

/// One of the optimizers, for model `M`.
pub enum Optim<B: AutodiffBackend, M: AutodiffModule<B>> {
    /// Stochastic gradient descent, with optional momentum and L2 penalty.
    Sgd(OptimizerAdaptor<Sgd<B::InnerBackend>, M, B>),
    /// Adam.
    Adam(OptimizerAdaptor<Adam, M, B>),
    /// Adam with decoupled weight decay.
    AdamW(OptimizerAdaptor<AdamW, M, B>),
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> Optim<B, M> {
    /// The optimizer `spec` declares.
    pub fn new(spec: &v1::OptimizerSpec) -> Result<Self, String> {
        let (beta1, beta2) = (spec.beta1 as f32, spec.beta2 as f32);
        Ok(match spec.kind.as_str() {
            "sgd" => {
                let momentum = (spec.momentum > 0.0).then_some(MomentumConfig {
                    momentum: spec.momentum,
                    // PyTorch's default: the gradient enters the momentum undamped.
                    dampening: 0.0,
                    nesterov: spec.nesterov,
                });
                let decay = (spec.weight_decay > 0.0).then_some(WeightDecayConfig {
                    penalty: spec.weight_decay as f32,
                });
                Optim::Sgd(
                    SgdConfig::new()
                        .with_momentum(momentum)
                        .with_weight_decay(decay)
                        .init(),
                )
            }
            "adam" | "" => Optim::Adam(
                AdamConfig::new()
                    .with_beta_1(beta1)
                    .with_beta_2(beta2)
                    .init(),
            ),
            "adamw" => Optim::AdamW(
                AdamWConfig::new()
                    .with_beta_1(beta1)
                    .with_beta_2(beta2)
                    .with_weight_decay(spec.weight_decay as f32)
                    .init(),
            ),
            other => return Err(format!("optimizer {other:?} is not built")),
        })
    }

    /// One step at learning rate `lr`.
    pub fn step(&mut self, lr: f64, model: M, grads: GradientsParams) -> M {
        match self {
            Optim::Sgd(o) => o.step(lr, model, grads),
            Optim::Adam(o) => o.step(lr, model, grads),
            Optim::AdamW(o) => o.step(lr, model, grads),
        }
    }

    /// The state as the checkpoint's bytes; the encoding runs in `encode`, off the training
    /// thread, over a snapshot taken now.
    pub fn snapshot(&self) -> impl FnOnce() -> Result<Vec<u8>, RecorderError> + Send + 'static
    where
        M: 'static,
    {
        let record = match self {
            Optim::Sgd(o) => Snapshot::<B, M>::Sgd(o.to_record()),
            Optim::Adam(o) => Snapshot::<B, M>::Adam(o.to_record()),
            Optim::AdamW(o) => Snapshot::<B, M>::AdamW(o.to_record()),
        };
        move || match record {
            Snapshot::Sgd(r) => Rec::default().record(r, ()),
            Snapshot::Adam(r) => Rec::default().record(r, ()),
            Snapshot::AdamW(r) => Rec::default().record(r, ()),
        }
    }

    /// Restores the state a [`Optim::snapshot`] encoded.
    pub fn load(self, bytes: Vec<u8>, device: &B::Device) -> Result<Self, RecorderError> {
        Ok(match self {
            Optim::Sgd(o) => Optim::Sgd(o.load_record(Rec::default().load(bytes, device)?)),
            Optim::Adam(o) => Optim::Adam(o.load_record(Rec::default().load(bytes, device)?)),
            Optim::AdamW(o) => Optim::AdamW(o.load_record(Rec::default().load(bytes, device)?)),
        })
    }
}

/// Adam at `learning_rate` with the usual betas (0.9, 0.999): the default optimizer.
pub fn adam(learning_rate: f64) -> v1::OptimizerSpec {
    v1::OptimizerSpec {
        kind: "adam".into(),
        learning_rate,
        beta1: 0.9,
        beta2: 0.999,
        ..Default::default()
    }
}

type Record<O, M, B> = <OptimizerAdaptor<O, M, B> as Optimizer<M, B>>::Record;

enum Snapshot<B: AutodiffBackend, M: AutodiffModule<B>> {
    Sgd(Record<Sgd<B::InnerBackend>, M, B>),
    Adam(Record<Adam, M, B>),
    AdamW(Record<AdamW, M, B>),
}

/// The learning rate at each step.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    base: f64,
    spec: v1::LrSchedule,
}

impl Schedule {
    /// `spec` (absent: constant) around the optimizer's rate `base`.
    pub fn new(base: f64, spec: Option<&v1::LrSchedule>) -> Self {
        Self {
            base,
            spec: spec.cloned().unwrap_or_else(|| v1::LrSchedule {
                kind: "constant".into(),
                ..Default::default()
            }),
        }
    }

    /// Steps the cosine decays over: as declared, else the rest of the run after the
    /// warm-up (`total_steps`, as the first generation counted it).
    pub fn horizon(&self, total_steps: u64) -> u64 {
        self.spec
            .decay_steps
            .unwrap_or_else(|| total_steps.saturating_sub(self.spec.warmup_steps))
    }

    /// The rate of the update that completes step `step + 1`, for a decay of `horizon` steps.
    pub fn rate(&self, step: u64, horizon: u64) -> f64 {
        let s = &self.spec;
        if step < s.warmup_steps {
            return self.base * (step + 1) as f64 / s.warmup_steps as f64;
        }
        let after = step - s.warmup_steps;
        match s.kind.as_str() {
            "step" if s.step_size > 0 => {
                let exponent = i32::try_from(after / s.step_size).unwrap_or(i32::MAX);
                self.base * s.gamma.powi(exponent)
            }
            "cosine" if horizon > 0 => {
                let t = (after.min(horizon)) as f64 / horizon as f64;
                s.min_lr + (self.base - s.min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
            _ => self.base,
        }
    }
}

/// Scales `grads` down so their L2 norm is at most `max_norm`; returns the norm before.
/// Summed in f64, in buffer order, so every rank computes the same factor.
pub fn clip_global_norm(grads: &mut [f32], max_norm: f64) -> f64 {
    let norm = grads
        .iter()
        .map(|&g| f64::from(g) * f64::from(g))
        .sum::<f64>()
        .sqrt();
    if norm > max_norm && norm > 0.0 {
        let scale = (max_norm / norm) as f32;
        for g in grads.iter_mut() {
            *g *= scale;
        }
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(kind: &str, warmup: u64) -> Schedule {
        Schedule::new(
            1.0,
            Some(&v1::LrSchedule {
                kind: kind.into(),
                warmup_steps: warmup,
                step_size: 10,
                gamma: 0.5,
                min_lr: 0.1,
                decay_steps: None,
            }),
        )
    }

    #[test]
    fn warmup_then_each_kind() {
        let constant = schedule("constant", 4);
        assert_eq!(constant.rate(0, 0), 0.25);
        assert_eq!(constant.rate(3, 0), 1.0);
        assert_eq!(constant.rate(100, 0), 1.0);

        let step = schedule("step", 0);
        assert_eq!(step.rate(9, 0), 1.0);
        assert_eq!(step.rate(10, 0), 0.5);
        assert_eq!(step.rate(25, 0), 0.25);

        let cosine = schedule("cosine", 2);
        let horizon = cosine.horizon(102);
        assert_eq!(horizon, 100);
        assert_eq!(cosine.rate(2, horizon), 1.0);
        assert!((cosine.rate(52, horizon) - 0.55).abs() < 1e-12);
        assert!((cosine.rate(102, horizon) - 0.1).abs() < 1e-12);
        assert!((cosine.rate(500, horizon) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn clipping_bounds_the_norm_and_leaves_small_gradients() {
        let mut g = vec![3.0, 4.0];
        assert_eq!(clip_global_norm(&mut g, 1.0), 5.0);
        assert!((g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6);
        let mut small = vec![0.3, 0.4];
        clip_global_norm(&mut small, 1.0);
        assert_eq!(small, vec![0.3, 0.4]);
    }
}
