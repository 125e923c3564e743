//! WiSE-FT (Wortsman et al. 2022): interpolate every weight between a zero-shot
//! classifier (its head from text embeddings) and a fine-tuned one,
//! `theta(alpha) = (1 - alpha) theta_zs + alpha theta_ft`, and evaluate each alpha.
//! The logit scale is interpolated the same way; LoRA adapters are merged first.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor, nn};

use clip_data::{Dataset, LoaderConfig, Pipeline};
use clip_model::{ClipClassifier, Module};

use crate::assembly::{ordered_loader, zero_shot_classifier};
use crate::device::Placement;
use crate::error::{Result, TrainError};
use crate::eval::{EvalReport, evaluate};

/// Why a model with transformers' head cannot be interpolated.
pub const HF_HEAD_NO_WISE: &str = "WiSE-FT mixes the fine-tuned model with a zero-shot classifier, \
    whose head lives in CLIP's embedding space: it needs the cosine head (`model.head.kind = \"cosine\"`), \
    not hf";

/// One point of the sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WisePoint {
    pub alpha: f64,
    pub accuracy: f64,
    pub top5: f64,
    pub loss: f64,
}

/// The sweep's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WiseReport {
    pub points: Vec<WisePoint>,
    pub best_alpha: f64,
    pub best_accuracy: f64,
}

/// The zero-shot classifier of the CLIP `spec` for the fine-tuned model's classes,
/// with the fine-tuned head's shape (bias or not). `tokenizer` overrides the
/// model folder's.
pub fn zero_shot_like(
    vs: &nn::VarStore,
    spec: &str,
    fine_tuned: &ClipClassifier,
    templates: &[String],
    tokenizer: Option<&Path>,
) -> Result<ClipClassifier> {
    zero_shot_classifier(
        vs,
        spec,
        fine_tuned.class_names().to_vec(),
        templates,
        fine_tuned.head.bias.is_some(),
        tokenizer,
    )
}

/// Sweeps `alphas` on `data`; leaves `fine_tuned` at the best alpha's weights
/// (merged, without adapters) and returns the curve.
pub fn wise_ft(
    zero_shot: &ClipClassifier,
    fine_tuned: &mut ClipClassifier,
    alphas: &[f64],
    data: Dataset,
    batch_size: usize,
    placement: Placement,
) -> Result<WiseReport> {
    if !fine_tuned.kind().in_embedding_space() {
        return Err(TrainError::config("model.head.kind", HF_HEAD_NO_WISE));
    }
    if zero_shot.clip.config() != fine_tuned.clip.config() {
        return Err(TrainError::config(
            "--zero-shot",
            "the zero-shot and fine-tuned models have different architectures",
        ));
    }
    if let Some(a) = alphas.iter().find(|a| !(0.0..=1.0).contains(*a)) {
        return Err(TrainError::config(
            "--alphas",
            format!("{a} is outside [0, 1]"),
        ));
    }
    fine_tuned.clip.merge_lora();
    let zs: HashMap<String, Tensor> = zero_shot
        .params()
        .iter()
        .map(|p| (p.name.clone(), p.tensor.detach().to_kind(Kind::Float)))
        .collect();
    let ft: Vec<(String, Tensor, Tensor)> = fine_tuned
        .params()
        .select(|t| t.module != Module::Adapter)
        .map(|p| {
            (
                p.name.clone(),
                p.tensor.shallow_clone(),
                p.tensor.detach().copy(),
            )
        })
        .collect();
    for (name, _, _) in &ft {
        if !zs.contains_key(name) {
            return Err(TrainError::config(
                "--zero-shot",
                format!("has no `{name}`"),
            ));
        }
    }
    let (s0, s1) = (zero_shot.scale(), fine_tuned.scale());
    let size = fine_tuned.clip.config().vision_config.image_size as usize;
    let loader = ordered_loader(
        &LoaderConfig::default(),
        data,
        Pipeline::clip_eval(size),
        batch_size,
        0,
    )?;
    let set = |model: &mut ClipClassifier, alpha: f64| {
        tch::no_grad(|| {
            for (name, p, b) in &ft {
                let a = &zs[name];
                p.shallow_clone().copy_(&(a * (1.0 - alpha) + b * alpha));
            }
        });
        model.set_scale(s0 * (1.0 - alpha) + s1 * alpha);
    };
    let mut points = Vec::new();
    let mut reports: Vec<EvalReport> = Vec::new();
    for &alpha in alphas {
        set(fine_tuned, alpha);
        let r = evaluate(
            fine_tuned,
            &loader,
            placement.precision,
            placement.device,
            |_, _| Ok(()),
        )?;
        points.push(WisePoint {
            alpha,
            accuracy: r.accuracy,
            top5: r.top5,
            loss: r.loss,
        });
        reports.push(r);
    }
    let best = points
        .iter()
        .fold(None::<&WisePoint>, |b, p| match b {
            Some(b) if b.accuracy >= p.accuracy => Some(b),
            _ => Some(p),
        })
        .cloned()
        .ok_or_else(|| TrainError::config("--alphas", "is empty"))?;
    set(fine_tuned, best.alpha);
    Ok(WiseReport {
        best_alpha: best.alpha,
        best_accuracy: best.accuracy,
        points,
    })
}

/// Saves a sweep's best mix (`fine_tuned` after [`wise_ft`]) to `dir/model` and
/// the curve to `dir/wise_ft.json`.
pub fn save_wise_ft(dir: &Path, fine_tuned: &ClipClassifier, report: &WiseReport) -> Result<()> {
    fine_tuned.save_pretrained(&dir.join("model"))?;
    let path = dir.join("wise_ft.json");
    let text = serde_json::to_string_pretty(report).map_err(|e| TrainError::Io {
        action: "cannot serialise",
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    std::fs::write(&path, text).map_err(TrainError::io("cannot write", &path))
}
