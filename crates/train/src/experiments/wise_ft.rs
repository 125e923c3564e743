//! WiSE-FT (Wortsman et al. 2022): interpolate every weight between a zero-shot
//! classifier (its head from text embeddings) and a fine-tuned one,
//! `theta(alpha) = (1 - alpha) theta_zs + alpha theta_ft`, and evaluate each alpha.
//! The logit scale is interpolated the same way; LoRA adapters are merged first.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor, nn};

use clip_data::{Dataset, LoaderConfig, Pipeline};
use clip_model::{ClipClassifier, ModelFiles, Module, write_atomic};

use crate::assembly::{ordered_loader, zero_shot_classifier};
use crate::device::Placement;
use crate::error::{Result, TrainError};
use crate::eval::{EvalReport, evaluate};
use crate::observe::plots::{Mark, Series, draw, line_chart};
use crate::run::export::{Provenance, finish, write_export};
use crate::run::locate::{classifier_dir, run_config_of};
use crate::run::output::OutputDir;

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
    /// The accuracy on each evaluation set (distribution shifts), by name.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub eval_sets: std::collections::BTreeMap<String, f64>,
}

impl WisePoint {
    /// The mean accuracy over the evaluation sets (`None` without sets).
    pub fn shifted_accuracy(&self) -> Option<f64> {
        super::mean_accuracy(&self.eval_sets)
    }
}

/// The sweep's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WiseReport {
    pub points: Vec<WisePoint>,
    pub best_alpha: f64,
    pub best_accuracy: f64,
    /// The best alpha's whole evaluation (for the export's card).
    #[serde(skip)]
    pub best_eval: Option<EvalReport>,
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

/// Sweeps `alphas` on `data` (the best alpha is chosen there) and on each of
/// `sets` (evaluation sets: distribution shifts, as the WiSE-FT paper reports);
/// leaves `fine_tuned` at the best alpha's weights (merged, without adapters)
/// and returns the curve.
pub fn wise_ft(
    zero_shot: &ClipClassifier,
    fine_tuned: &mut ClipClassifier,
    alphas: &[f64],
    data: Dataset,
    sets: &[(String, Dataset)],
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
    let loader_of = |data: Dataset| {
        ordered_loader(
            &LoaderConfig::default(),
            data,
            Pipeline::clip_eval(size),
            batch_size,
            0,
        )
    };
    let loader = loader_of(data)?;
    let set_loaders = sets
        .iter()
        .map(|(name, ds)| Ok((name.clone(), loader_of(ds.clone())?)))
        .collect::<Result<Vec<_>>>()?;
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
        let mut eval_sets = std::collections::BTreeMap::new();
        for (name, l) in &set_loaders {
            let s = evaluate(
                fine_tuned,
                l,
                placement.precision,
                placement.device,
                |_, _| Ok(()),
            )?;
            eval_sets.insert(name.clone(), s.accuracy);
        }
        points.push(WisePoint {
            alpha,
            accuracy: r.accuracy,
            top5: r.top5,
            loss: r.loss,
            eval_sets,
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
    let best_eval = points
        .iter()
        .position(|p| p.alpha == best.alpha)
        .map(|i| reports.swap_remove(i));
    Ok(WiseReport {
        best_alpha: best.alpha,
        best_accuracy: best.accuracy,
        points,
        best_eval,
    })
}

/// What a WiSE-FT mix was made from, for its export.
#[derive(Debug, Clone, Copy)]
pub struct WiseSources<'a> {
    /// The zero-shot CLIP (hub id or folder).
    pub zero_shot: &'a str,
    /// The fine-tuned model (export, checkpoint or run folder).
    pub fine_tuned: &'a str,
    /// The data the sweep evaluated on.
    pub data: &'a Path,
    /// The tokenizer.json given instead of the zero-shot model's.
    pub tokenizer: Option<&'a Path>,
}

/// Saves a sweep's best mix (`fine_tuned` after [`wise_ft`]) into `dir` as a
/// full export (as `train-cli export` writes: transformers' `pipeline` loads it;
/// dense weights, adapters folded in), with `wise_ft.json` (the curve) and
/// `wise_ft.png` (accuracy against alpha). Returns the files written.
pub fn save_wise_ft(
    dir: &Path,
    fine_tuned: &mut ClipClassifier,
    report: &WiseReport,
    from: WiseSources,
    overwrite: bool,
) -> Result<Vec<String>> {
    // The run the fine-tuned model lies in says how its images were normalised
    // and which CLIP it started from.
    let run_cfg = if Path::new(from.fine_tuned).exists() {
        run_config_of(&classifier_dir(Path::new(from.fine_tuned))?)?
    } else {
        None
    };
    let tokenizer = match from.tokenizer {
        Some(t) => Some(t.to_path_buf()),
        None => ModelFiles::resolve(from.zero_shot).ok().map(|f| f.dir),
    };
    let provenance = Provenance {
        origin: format!(
            "made by WiSE-FT: the weights of the fine-tuned `{}` mixed with the zero-shot `{}` at alpha {:.2} (`(1 - alpha) * zero_shot + alpha * fine_tuned`), the best of the sweep",
            from.fine_tuned, from.zero_shot, report.best_alpha
        ),
        validation: report.best_eval.clone().map(|r| {
            (
                format!(
                    "Evaluation at alpha {:.2} on `{}` ({} images)",
                    report.best_alpha,
                    from.data.display(),
                    r.images
                ),
                r,
            )
        }),
        test: None,
        unmeasured: None,
    };
    let mut inputs: Vec<&Path> = [from.fine_tuned, from.zero_shot]
        .into_iter()
        .map(Path::new)
        .filter(|p| p.exists())
        .collect();
    inputs.push(from.data);
    inputs.extend(tokenizer.as_deref());
    let out = OutputDir::prepare(dir, "wise-ft", &inputs, overwrite)?;
    let written = write_export(
        fine_tuned,
        out.path(),
        run_cfg.as_ref(),
        tokenizer.as_deref(),
        &provenance,
        false,
    )
    .and_then(|files| write_curve(out.path(), report).map(|more| [files, more].concat()));
    finish(out, written)
}

/// `wise_ft.json` and `wise_ft.png` of a sweep into `dir`.
fn write_curve(dir: &Path, report: &WiseReport) -> Result<Vec<String>> {
    let mut written = Vec::new();
    let path = dir.join("wise_ft.json");
    let text = serde_json::to_string_pretty(report).map_err(|e| TrainError::Io {
        action: "cannot serialise",
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    write_atomic(&path, text.as_bytes())?;
    written.push("wise_ft.json".into());
    let curve: Series = report
        .points
        .iter()
        .map(|p| (p.alpha, p.accuracy * 100.0))
        .collect();
    let best = Mark {
        label: format!("best alpha {:.2}", report.best_alpha),
        at: (report.best_alpha, report.best_accuracy * 100.0),
        color: plotters::style::RED,
    };
    let drawn = draw(&dir.join("wise_ft.png"), |path| {
        line_chart(
            path,
            "WiSE-FT: accuracy against alpha (0 = zero-shot, 1 = fine-tuned)",
            "alpha",
            "accuracy %",
            &[("accuracy", curve, plotters::style::BLUE)],
            std::slice::from_ref(&best),
        )
    });
    if drawn {
        written.push("wise_ft.png".into());
    }
    // The WiSE-FT paper's picture: in-distribution against shifted accuracy,
    // one point per alpha, the zero-shot and fine-tuned ends labelled.
    let robust: Vec<(f64, f64, f64)> = report
        .points
        .iter()
        .filter_map(|p| Some((p.alpha, p.accuracy * 100.0, p.shifted_accuracy()? * 100.0)))
        .collect();
    if !robust.is_empty() {
        let curve: Series = robust.iter().map(|&(_, x, y)| (x, y)).collect();
        let ends: Vec<Mark> = robust
            .iter()
            .filter(|(a, _, _)| *a == 0.0 || *a == 1.0)
            .map(|&(a, x, y)| match a == 0.0 {
                true => Mark {
                    label: "zero-shot (alpha 0)".into(),
                    at: (x, y),
                    color: plotters::style::RED,
                },
                false => Mark {
                    label: "fine-tuned (alpha 1)".into(),
                    at: (x, y),
                    color: plotters::style::GREEN,
                },
            })
            .collect();
        let drawn = draw(&dir.join("wise_ft_robustness.png"), |path| {
            line_chart(
                path,
                "WiSE-FT: in-distribution vs shifted accuracy, one point per alpha",
                "accuracy on the data %",
                "mean accuracy on the evaluation sets %",
                &[("alpha 0 .. 1", curve, plotters::style::BLUE)],
                &ends,
            )
        });
        if drawn {
            written.push("wise_ft_robustness.png".into());
        }
    }
    Ok(written)
}
