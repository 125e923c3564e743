//! What a training step minimises, as one seam: the loop hands each micro-batch
//! to an [`Objective`] and carries out what it says, without knowing which one it
//! is. Two exist: classification ([`classification`]: cross-entropy on the
//! classifier's logits, MixUp / CutMix targets) and contrastive fine-tuning
//! ([`contrastive`]: FLYP, CLIP's loss between images and captions, gathered over
//! the ranks).
//!
//! Adding an objective (a sigmoid loss, say): a file here implementing
//! [`Objective`], a `train.objective` value in the config, and its arm in
//! [`build`] and in the capability methods below.

pub(crate) mod classification;
pub(crate) mod contrastive;

use std::sync::Arc;

use tch::{Device, Tensor};

use clip_data::{Batch, Dataset, DeviceBatch};
use clip_model::{ClipClassifier, ClipTokenizer, GradTape};

use crate::config::{self, RunConfig};
use crate::ema::Ema;
use crate::error::{Result, TrainError};
use crate::parallel::Strategy;

pub use classification::{Targets, cross_entropy};
pub use contrastive::contrastive_loss;

/// One micro-batch, as an objective sees it.
pub(crate) struct MicroBatch<'a> {
    pub batch: &'a DeviceBatch,
    /// The training data the batch comes from (captions).
    pub data: &'a Dataset,
    /// The run's data-parallel strategy (collectives a loss may need).
    pub parallel: &'a dyn Strategy,
}

/// A training objective; see the module docs.
pub(crate) trait Objective {
    /// `(weight, share)` of a micro-batch of a step of `n` micro-batches on
    /// `world` ranks: the factor its loss's gradient gets, and its share of the
    /// step's reported loss (summed over the ranks).
    fn weights(&self, batch: &Batch, n: usize, world: usize) -> (f64, f64);

    /// The micro-batch's loss (unweighted), its forward recorded on `tape`.
    fn loss<'m>(
        &self,
        model: &'m ClipClassifier,
        m: &MicroBatch,
        tape: &mut GradTape<'m>,
    ) -> Result<Tensor>;

    /// After an optimizer step that was applied.
    fn after_step(&self, _model: &ClipClassifier) {}

    /// Before an evaluation or a checkpoint at optimizer step `step`: brings the
    /// heads the evaluation reads (the model's and, with `ema`, the EMA's) up to
    /// date with the weights.
    fn prepare_heads(
        &mut self,
        _model: &mut ClipClassifier,
        _ema: Option<&Ema>,
        _step: u64,
    ) -> Result<()> {
        Ok(())
    }

    /// After other weights (the EMA's, or the trained ones back) were put in the
    /// model.
    fn weights_swapped(&self, _model: &mut ClipClassifier) {}
}

/// The objective `cfg.train.objective` names for `model` trained on `train`;
/// `tokenizer` is the run's (needed when [`config::Objective::needs_tokenizer`]).
pub(crate) fn build(
    cfg: &RunConfig,
    model: &ClipClassifier,
    train: &Dataset,
    tokenizer: Option<Arc<ClipTokenizer>>,
    device: Device,
) -> Result<Box<dyn Objective>> {
    let ls = cfg.train.label_smoothing;
    Ok(match cfg.train.objective {
        config::Objective::CrossEntropy => Box::new(classification::Classification::new(ls)),
        config::Objective::Contrastive => {
            let tokenizer = tokenizer.ok_or_else(|| {
                TrainError::config("model.tokenizer", "a contrastive run needs one")
            })?;
            if cfg.optim.frozen_towers.contains(&clip_model::Tower::Text) {
                tracing::warn!(
                    "train.objective = \"contrastive\" with the text tower in optim.frozen_towers: \
                     only the image side trains (FLYP trains both: optim.frozen_towers = [])"
                );
            }
            Box::new(contrastive::Contrastive::new(
                model,
                train,
                tokenizer,
                &cfg.model.head.templates,
                ls,
                cfg.run.seed,
                device,
            )?)
        }
    })
}

/// What each objective needs and does, for the code around the loop (data
/// checks, loading a model).
impl config::Objective {
    /// Whether every training image needs a label (cross-entropy); contrastive
    /// runs train on captions, or on their class names in templates.
    pub(crate) fn needs_labels(self) -> bool {
        match self {
            config::Objective::CrossEntropy => true,
            config::Objective::Contrastive => false,
        }
    }

    /// Whether the objective runs the text tower (it then needs a tokenizer).
    pub(crate) fn needs_tokenizer(self) -> bool {
        match self {
            config::Objective::CrossEntropy => false,
            config::Objective::Contrastive => true,
        }
    }

    /// What a run of this objective does after other weights (a checkpoint's
    /// EMA) were put in its model, so that the model computes as the run
    /// evaluated it.
    pub(crate) fn weights_swapped(self, model: &mut ClipClassifier) {
        match self {
            config::Objective::CrossEntropy => {}
            config::Objective::Contrastive => contrastive::scale_from_logit_scale(model),
        }
    }
}
