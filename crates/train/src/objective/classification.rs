//! Classification (`train.objective = "cross_entropy"`): the classifier's logits
//! against the labels, or against MixUp / CutMix's soft targets, with label
//! smoothing, as PyTorch's `nn.CrossEntropyLoss(label_smoothing=ls)` computes
//! both.

use tch::{Kind, Tensor};

use clip_data::Batch;
use clip_model::{ClipClassifier, GradTape, Pass};

use super::{MicroBatch, Objective};
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

/// Cross-entropy on the classifier's logits.
pub(crate) struct Classification {
    label_smoothing: f64,
}

impl Classification {
    pub(crate) fn new(label_smoothing: f64) -> Self {
        Self { label_smoothing }
    }
}

impl Objective for Classification {
    /// This rank's share of the global micro-batch: its images over the global
    /// micro-batch's, times the world size (DDP averages the ranks' gradients),
    /// over the step's `n` micro-batches. Integer products keep the
    /// single-process weights bit for bit (`1 / n`).
    fn weights(&self, batch: &Batch, n: usize, world: usize) -> (f64, f64) {
        let counted = batch.counted();
        (
            (world * counted) as f64 / (batch.global_len * n) as f64,
            counted as f64 / batch.global_len.max(1) as f64,
        )
    }

    fn loss<'m>(
        &self,
        model: &'m ClipClassifier,
        m: &MicroBatch,
        tape: &mut GradTape<'m>,
    ) -> Result<Tensor> {
        let b = m.batch;
        let logits = model.forward(&b.images, Pass::train().tape(tape))?;
        let ls = self.label_smoothing;
        match &b.batch.targets {
            Some(t) => {
                let k = logits.size()[1];
                let t = Tensor::from_slice(t)
                    .view([-1, k])
                    .to_device(logits.device());
                cross_entropy(&logits, Targets::Soft(&t), ls)
            }
            None => cross_entropy(&logits, Targets::Classes(&b.labels), ls),
        }
    }
}
