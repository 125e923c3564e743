//! A LoRA adapter on one linear layer (Hu et al. 2021), as PEFT computes it:
//! `scaling * dropout(x) A^T B^T` with `A` `[r, in]` Kaiming-uniform (PEFT's
//! `kaiming_uniform_(a=sqrt(5))`, i.e. U(-1/sqrt(in), 1/sqrt(in))), `B` `[out, r]`
//! zero. Merging folds it into the layer's weight, keeping the original for an
//! exact unmerge. Which layers get one is [`crate::lora`]'s business.

use tch::{Tensor, nn};

use crate::dropout::dropout;
use crate::tags::{DecayClass, Scope};

/// The adapter of one linear layer.
#[derive(Debug)]
pub struct LoraAdapter {
    pub a: Tensor,
    pub b: Tensor,
    pub scaling: f64,
    pub dropout: f64,
    /// The weight before merging, while merged.
    original: Option<Tensor>,
}

impl LoraAdapter {
    /// An adapter of rank `r` for a linear layer `in_dim -> out_dim`, its term
    /// scaled by `scaling` (`alpha / r`).
    pub(crate) fn new(
        scope: &Scope,
        in_dim: i64,
        out_dim: i64,
        r: i64,
        scaling: f64,
        dropout: f64,
    ) -> Self {
        let bound = (in_dim as f64).powf(-0.5);
        let a = scope.sub("lora_A").param(
            "weight",
            &[r, in_dim],
            nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
            DecayClass::Weight,
        );
        let b = scope.sub("lora_B").param(
            "weight",
            &[out_dim, r],
            nn::Init::Const(0.0),
            DecayClass::Weight,
        );
        Self {
            a,
            b,
            scaling,
            dropout,
            original: None,
        }
    }

    pub fn is_merged(&self) -> bool {
        self.original.is_some()
    }

    /// The adapter's term, zero while merged.
    pub(crate) fn delta(&self, x: &Tensor, train: bool) -> Option<Tensor> {
        if self.is_merged() {
            return None;
        }
        let x = dropout(x.shallow_clone(), self.dropout, train);
        Some(x.matmul(&self.a.tr()).matmul(&self.b.tr()) * self.scaling)
    }

    pub(crate) fn merge(&mut self, weight: &Tensor) {
        if self.is_merged() {
            return;
        }
        tch::no_grad(|| {
            self.original = Some(weight.detach().copy());
            let delta = self.b.matmul(&self.a) * self.scaling;
            let _ = weight.shallow_clone().g_add_(&delta.to_kind(weight.kind()));
        });
    }

    pub(crate) fn unmerge(&mut self, weight: &Tensor) {
        if let Some(orig) = self.original.take() {
            tch::no_grad(|| weight.shallow_clone().copy_(&orig));
        }
    }
}
