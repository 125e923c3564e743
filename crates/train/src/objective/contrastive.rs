//! Contrastive fine-tuning (`train.objective = "contrastive"`, FLYP): CLIP's own
//! loss between the images and their captions (each image's caption in
//! image-caption data, else its class name in a template), over the global batch
//! of a data-parallel run (both embeddings all-gathered with their gradient). The
//! classifier's head is the zero-shot head of the text tower as it is, remade
//! before every evaluation and checkpoint; CLIP's temperature is clamped at 100
//! after each step, as open_clip does.

use std::sync::Arc;

use tch::{Device, Kind, Tensor};

use clip_data::{Batch, Dataset, SampleRng};
use clip_model::{ClipClassifier, ClipTokenizer, GradTape, Pass};

use super::classification::{Targets, cross_entropy};
use super::{MicroBatch, Objective};
use crate::captions::caption_ids;
use crate::ema::Ema;
use crate::error::Result;

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

/// The captions a contrastive run trains on.
enum Captions {
    /// FLYP: every class name in every template, tokenized once
    /// (`[classes * templates, context]`, row `class * templates + template`); a
    /// sample's template is drawn from its own stream of `(seed, epoch, index)`.
    Templates { count: usize, ids: Tensor },
    /// Image-caption data: each image's own caption.
    Data,
}

/// The random stream of a sample's caption template (apart from its
/// augmentation's `(seed, epoch, index)` stream).
const CAPTION_STREAM: u64 = 1 << 62;

/// FLYP's objective; see the module docs.
pub(crate) struct Contrastive {
    captions: Captions,
    tokenizer: Arc<ClipTokenizer>,
    templates: Vec<String>,
    label_smoothing: f64,
    seed: u64,
    /// The step whose weights the heads were last made from (an evaluation and
    /// the checkpoint after it share them).
    heads_at: Option<u64>,
}

impl Contrastive {
    /// The objective for `model` trained on `train` (its captions, else the class
    /// names in `templates`).
    pub(crate) fn new(
        model: &ClipClassifier,
        train: &Dataset,
        tokenizer: Arc<ClipTokenizer>,
        templates: &[String],
        label_smoothing: f64,
        seed: u64,
        device: Device,
    ) -> Result<Self> {
        let captions = match train.has_captions() {
            true => Captions::Data,
            false => {
                let prompts: Vec<String> = model
                    .class_names()
                    .iter()
                    .flat_map(|c| templates.iter().map(move |t| t.replace("{}", c)))
                    .collect();
                let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
                Captions::Templates {
                    count: templates.len(),
                    ids: tokenizer.encode(&refs)?.to_device(device),
                }
            }
        };
        Ok(Self {
            captions,
            tokenizer,
            templates: templates.to_vec(),
            label_smoothing,
            seed,
            heads_at: None,
        })
    }

    /// The token ids of the batch's captions (`data`: the training data).
    fn caption_ids(&self, batch: &Batch, data: &Dataset, device: Device) -> Result<Tensor> {
        match &self.captions {
            Captions::Templates { count, ids } => {
                let t = *count as i64;
                let rows: Vec<i64> = batch
                    .labels
                    .iter()
                    .zip(&batch.indices)
                    .map(|(&label, &i)| {
                        let mut rng =
                            SampleRng::new(self.seed, batch.epoch, CAPTION_STREAM | i as u64);
                        label * t + rng.int_range(0, t - 1)
                    })
                    .collect();
                let rows = Tensor::from_slice(&rows).to_device(ids.device());
                Ok(ids.index_select(0, &rows))
            }
            Captions::Data => caption_ids(data, &batch.indices, &self.tokenizer, device),
        }
    }
}

/// The head's multiplier becomes the logit scale of the weights in the model
/// (the trained ones or, swapped in, the EMA's), as CLIP's zero-shot logits are.
pub(crate) fn scale_from_logit_scale(model: &mut ClipClassifier) {
    let scale = model.clip.logit_scale_value().exp();
    model.set_scale(scale);
}

impl Objective for Contrastive {
    /// Every rank computes the loss of the whole global batch (gathered
    /// embeddings): each micro-batch is weighted as in one process, its loss
    /// reported once.
    fn weights(&self, _batch: &Batch, n: usize, world: usize) -> (f64, f64) {
        (1.0 / n as f64, 1.0 / world as f64)
    }

    fn loss<'m>(
        &self,
        model: &'m ClipClassifier,
        m: &MicroBatch,
        tape: &mut GradTape<'m>,
    ) -> Result<Tensor> {
        let (batch, x) = (&m.batch.batch, &m.batch.images);
        let ids = self.caption_ids(batch, m.data, x.device())?;
        let clip = &model.clip;
        let out = clip.forward(x, &ids, Pass::train().tape(tape))?;
        // The other ranks' embeddings are this rank's negatives too; a stand-in
        // image (no share of the batch) is no pair (its zero rows still give every
        // parameter its zero gradient). Both embeddings go in one gather, side by
        // side (one process: the gather is the embeddings themselves).
        let rows = if batch.placeholder {
            0
        } else {
            batch.len() as i64
        };
        let dim = out.image_embeds.size()[1];
        let all = m.parallel.gather_with_grad(&Tensor::cat(
            &[
                out.image_embeds.narrow(0, 0, rows),
                out.text_embeds.narrow(0, 0, rows),
            ],
            1,
        ))?;
        let image = all.narrow(1, 0, dim).contiguous();
        let text = all.narrow(1, dim, all.size()[1] - dim).contiguous();
        contrastive_loss(&image, &text, &clip.logit_scale, self.label_smoothing)
    }

    /// CLIP's temperature stays at most 100 (open_clip clamps it so).
    fn after_step(&self, model: &ClipClassifier) {
        tch::no_grad(|| {
            let _ = model
                .clip
                .logit_scale
                .shallow_clone()
                .clamp_(0.0, 100f64.ln());
        });
    }

    /// The head becomes the zero-shot classifier of the text tower as it is now,
    /// for the trained weights and for their EMA; the logit scale is the trained
    /// weights'.
    fn prepare_heads(
        &mut self,
        model: &mut ClipClassifier,
        ema: Option<&Ema>,
        step: u64,
    ) -> Result<()> {
        if self.heads_at == Some(step) {
            return Ok(());
        }
        if let Some(e) = ema {
            // The EMA's head from the EMA's text tower.
            e.swap();
            let made = model.init_zero_shot(&self.tokenizer, &self.templates);
            e.swap();
            made?;
        }
        model.init_zero_shot(&self.tokenizer, &self.templates)?;
        self.heads_at = Some(step);
        Ok(())
    }

    fn weights_swapped(&self, model: &mut ClipClassifier) {
        scale_from_logit_scale(model);
    }
}
