//! The losses: cross-entropy with label smoothing on class indices or on soft
//! targets (MixUp / CutMix), as PyTorch's `nn.CrossEntropyLoss(label_smoothing=ls)`
//! computes both; and CLIP's symmetric contrastive loss (FLYP).

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

/// CLIP's contrastive loss (open_clip's `ClipLoss` on one process): with
/// `logits = exp(logit_scale) * image_embeds @ text_embeds.T` (embeddings already
/// L2-normalised), the mean of the cross-entropies of the rows (image -> text) and
/// of the columns (text -> image), each against the diagonal, with label smoothing
/// `ls`. Two images of one class with the same caption count as negatives of each
/// other, as in FLYP's and open_clip's training.
pub fn contrastive_loss(
    image_embeds: &Tensor,
    text_embeds: &Tensor,
    logit_scale: &Tensor,
    label_smoothing: f64,
) -> Result<Tensor> {
    let image = image_embeds.to_kind(Kind::Float);
    let text = text_embeds.to_kind(Kind::Float);
    let logits = image.f_matmul(&text.tr())? * logit_scale.to_kind(Kind::Float).exp();
    let n = logits.size()[0];
    let diagonal = Tensor::arange(n, (Kind::Int64, logits.device()));
    let per_image = cross_entropy(&logits, Targets::Classes(&diagonal), label_smoothing)?;
    let per_text = cross_entropy(&logits.tr(), Targets::Classes(&diagonal), label_smoothing)?;
    Ok((per_image + per_text) / 2.0)
}
