//! The classification loss: cross-entropy with label smoothing on class indices
//! or on soft targets (MixUp / CutMix), as PyTorch's
//! `nn.CrossEntropyLoss(label_smoothing=ls)` computes both.

use tch::{Kind, Tensor};

use crate::error::Result;

/// What the logits are scored against.
#[derive(Debug, Clone, Copy)]
pub enum Targets<'a> {
    /// Class indices (`batch`, int64).
    Classes(&'a Tensor),
    /// Class probabilities (`batch x classes`, rows summing to 1).
    Soft(&'a Tensor),
}

/// Mean cross-entropy of `logits` (`batch x classes`, computed in fp32) against
/// `targets`, each target smoothed to `(1 - ls) * target + ls / classes`.
pub fn cross_entropy(logits: &Tensor, targets: Targets, label_smoothing: f64) -> Result<Tensor> {
    let logits = logits.to_kind(Kind::Float);
    Ok(match targets {
        Targets::Classes(y) => logits.f_cross_entropy_loss::<Tensor>(
            y,
            None,
            tch::Reduction::Mean,
            -100,
            label_smoothing,
        )?,
        Targets::Soft(t) => {
            let (_, k) = logits.size2()?;
            let t = t.to_kind(Kind::Float) * (1.0 - label_smoothing) + label_smoothing / k as f64;
            -(t * logits.log_softmax(-1, Kind::Float))
                .sum_dim_intlist(-1, false, Kind::Float)
                .mean(Kind::Float)
        }
    })
}
