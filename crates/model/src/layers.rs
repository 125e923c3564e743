//! The small building blocks: linear layers (with an optional LoRA adapter),
//! layer norms and activations.

use tch::{Tensor, nn};

use crate::adapter::LoraAdapter;
use crate::config::Activation;
use crate::tags::{DecayClass, Scope};

/// `y = x W^T + b`, with Hugging Face's `weight` / `bias` names.
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    /// A LoRA adapter, when one is attached.
    pub lora: Option<LoraAdapter>,
}

impl Linear {
    /// A linear layer `in_dim -> out_dim` whose weight is drawn from N(0, std²).
    pub fn new(scope: &Scope, in_dim: i64, out_dim: i64, bias: bool, std: f64) -> Self {
        let weight = scope.param(
            "weight",
            &[out_dim, in_dim],
            nn::Init::Randn {
                mean: 0.0,
                stdev: std,
            },
            DecayClass::Weight,
        );
        let bias =
            bias.then(|| scope.param("bias", &[out_dim], nn::Init::Const(0.0), DecayClass::Bias));
        Self {
            weight,
            bias,
            lora: None,
        }
    }

    /// Inference forward (adapter dropout off).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.forward_t(x, false)
    }

    /// Forward with the adapter's dropout active when `train`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let y = x.linear(&self.weight, self.bias.as_ref());
        match self.lora.as_ref().and_then(|l| l.delta(x, train)) {
            Some(d) => y + d,
            None => y,
        }
    }

    /// Folds the adapter into the weight (no-op without one).
    pub fn merge(&mut self) {
        if let Some(l) = self.lora.as_mut() {
            l.merge(&self.weight);
        }
    }

    /// Restores the weight from before [`Linear::merge`], bit for bit.
    pub fn unmerge(&mut self) {
        if let Some(l) = self.lora.as_mut() {
            l.unmerge(&self.weight);
        }
    }
}

/// Layer normalisation over the last dimension.
#[derive(Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    eps: f64,
    dim: i64,
}

impl LayerNorm {
    pub fn new(scope: &Scope, dim: i64, eps: f64) -> Self {
        Self {
            weight: scope.param("weight", &[dim], nn::Init::Const(1.0), DecayClass::Norm),
            bias: scope.param("bias", &[dim], nn::Init::Const(0.0), DecayClass::Norm),
            eps,
            dim,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.layer_norm(
            [self.dim],
            Some(&self.weight),
            Some(&self.bias),
            self.eps,
            true,
        )
    }
}

pub(crate) fn activate(x: &Tensor, act: Activation) -> Tensor {
    match act {
        Activation::QuickGelu => x * (x * 1.702).sigmoid(),
        Activation::Gelu => x.gelu("none"),
        Activation::GeluTanh => x.gelu("tanh"),
    }
}
