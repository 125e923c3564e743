//! Model soups (Wortsman et al. 2022, "Model soups: averaging weights of
//! multiple fine-tuned models improves accuracy without increasing inference
//! time"): the uniform soup averages every weight of the ingredients; the greedy
//! soup (the paper's Algorithm 1) takes the ingredients from the best held-out
//! accuracy down (ties: the lower loss first) and keeps each one only if the
//! soup's held-out accuracy does not drop. Ingredients are fine-tuned classifiers of one architecture, one class
//! list and one head kind; LoRA adapters are merged first; the logit scale is
//! averaged with the weights.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor, nn};

use clip_data::{Dataset, ExifOrientation, Pipeline};
use clip_model::{ClipClassifier, Module};

use crate::device::Placement;
use crate::error::{Result, TrainError};
use crate::eval::{EvalReport, evaluate_data};
use crate::observe::plots::{Mark, draw, line_chart};
use crate::report::write_json;
use crate::run::export::{Provenance, finish, tokenizer_for, write_export};
use crate::run::locate::{classifier_dir, eval_pipeline_for, load_classifier_from, run_config_of};
use crate::run::output::OutputDir;

/// One ingredient and its held-out figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ingredient {
    /// As given (`--models`).
    pub model: String,
    pub accuracy: f64,
    pub loss: f64,
    /// Whether the greedy soup kept it.
    pub in_greedy: bool,
    /// The accuracy on each evaluation set of the first ingredient's run
    /// (`data.eval_sets`), by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub eval_sets: BTreeMap<String, f64>,
}

/// A soup's held-out figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SoupFigures {
    pub accuracy: f64,
    pub top5: f64,
    pub loss: f64,
    /// The ingredients averaged (as given).
    pub ingredients: Vec<String>,
    /// The accuracy on each evaluation set, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub eval_sets: BTreeMap<String, f64>,
}

/// `soup.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SoupReport {
    /// The held-out data the figures were measured on.
    pub data: PathBuf,
    pub images: usize,
    /// In the order given.
    pub ingredients: Vec<Ingredient>,
    pub uniform: SoupFigures,
    pub greedy: SoupFigures,
}

/// The soups' weights and evaluations, to export.
pub struct Soups {
    pub report: SoupReport,
    /// The first ingredient, its weights set to each soup in turn by
    /// [`Soups::save`].
    model: ClipClassifier,
    _vs: nn::VarStore,
    uniform: (Weights, EvalReport),
    greedy: (Weights, EvalReport),
    /// The first ingredient's folder (preprocessing, tokenizer, run config).
    first_dir: PathBuf,
    inputs: Vec<PathBuf>,
}

/// Every weight of a classifier (adapters merged) and its logit scale.
struct Weights {
    tensors: HashMap<String, Tensor>,
    scale: f64,
}

impl Weights {
    /// A copy of `model`'s weights (in fp32): setting other weights into the
    /// model later leaves these as they were.
    fn of(model: &ClipClassifier) -> Self {
        let tensors = model
            .params()
            .select(|t| t.module != Module::Adapter)
            .map(|p| {
                (
                    p.name.clone(),
                    p.tensor.detach().to_kind(Kind::Float).copy(),
                )
            })
            .collect();
        Self {
            tensors,
            scale: model.scale(),
        }
    }

    /// The mean of `all`.
    fn mean(all: &[&Weights]) -> Self {
        let n = all.len() as f64;
        let tensors = all[0]
            .tensors
            .keys()
            .map(|k| {
                let sum = all[1..]
                    .iter()
                    .fold(all[0].tensors[k].copy(), |acc, w| acc + &w.tensors[k]);
                (k.clone(), sum / n)
            })
            .collect();
        Self {
            tensors,
            scale: all.iter().map(|w| w.scale).sum::<f64>() / n,
        }
    }

    /// Puts these weights into `model` (its own kinds kept).
    fn set(&self, model: &mut ClipClassifier) {
        tch::no_grad(|| {
            for p in model.params().select(|t| t.module != Module::Adapter) {
                if let Some(w) = self.tensors.get(&p.name) {
                    p.tensor.shallow_clone().copy_(w);
                }
            }
        });
        model.set_scale(self.scale);
    }
}

/// How the ingredient `b` (named `name`) differs from the first, `a`, in what a
/// soup needs to be the same; `None` when it does not.
fn difference(a: &ClipClassifier, b: &ClipClassifier) -> Option<String> {
    if a.clip.config() != b.clip.config() {
        return Some("its architecture (config.json's text_config / vision_config) differs".into());
    }
    if a.class_names() != b.class_names() {
        return Some(format!(
            "its classes {:?} differ from {:?}",
            b.class_names(),
            a.class_names()
        ));
    }
    if a.kind() != b.kind() || a.head.bias.is_some() != b.head.bias.is_some() {
        return Some(format!(
            "its head ({:?}, bias {}) differs from {:?}, bias {}",
            b.kind(),
            b.head.bias.is_some(),
            a.kind(),
            a.head.bias.is_some()
        ));
    }
    None
}

/// The held-out data a soup is selected and measured on.
pub enum SoupData<'a> {
    /// A source as `eval --data` takes it (its classes matched to the models' by
    /// name).
    Source(&'a Path),
    /// Data already loaded with the models' classes (`compare`'s validation
    /// split), and what reports call it.
    Loaded { data: Dataset, label: PathBuf },
}

/// Makes the uniform and the greedy soup of `models` (exports, checkpoints or
/// run folders), measuring every ingredient and soup on `data` (held-out,
/// labelled).
pub fn soup(
    models: &[String],
    data: SoupData<'_>,
    batch_size: usize,
    placement: Placement,
) -> Result<Soups> {
    if models.len() < 2 {
        return Err(TrainError::config(
            "--models",
            "a soup needs at least two models",
        ));
    }
    let mut dirs = Vec::new();
    let mut weights = Vec::new();
    // The first ingredient, kept whole: the model every soup is measured and
    // saved as (its weights set to each in turn).
    let mut first: Option<(nn::VarStore, ClipClassifier)> = None;
    for spec in models {
        let dir = classifier_dir(Path::new(spec))?;
        let vs = nn::VarStore::new(placement.device);
        let mut m = load_classifier_from(&vs, &dir, false)?;
        m.clip.merge_lora();
        if let Some((_, f)) = &first
            && let Some(d) = difference(f, &m)
        {
            return Err(TrainError::config(
                "--models",
                format!("{spec} cannot go into a soup with {}: {d}", models[0]),
            ));
        }
        weights.push(Weights::of(&m));
        if first.is_none() {
            first = Some((vs, m));
        }
        dirs.push(dir);
    }
    let (vs, mut model) = first.ok_or_else(|| TrainError::config("--models", "is empty"))?;
    let names: Vec<&String> = weights[0].tensors.keys().collect();
    for (spec, w) in models.iter().zip(&weights).skip(1) {
        if let Some(k) = names.iter().find(|k| !w.tensors.contains_key(k.as_str())) {
            return Err(TrainError::config(
                "--models",
                format!(
                    "{spec} has no `{k}` (its weights differ from {}'s)",
                    models[0]
                ),
            ));
        }
    }
    let size = model.clip.config().vision_config.image_size as usize;
    let pipeline = eval_pipeline_for(&dirs[0], size)?;
    let (ds, data_label, data_file) = match data {
        SoupData::Source(path) => (
            crate::eval::data_for(path, model.class_names())?,
            path.to_path_buf(),
            Some(path),
        ),
        SoupData::Loaded { data, label } => (data, label, None),
    };
    // The evaluation sets (distribution shifts) of the first ingredient's run.
    let sets = match run_config_of(&dirs[0]).ok().flatten() {
        Some(cfg) => {
            crate::assembly::load_eval_sets(&cfg, model.class_names()).unwrap_or_else(|e| {
                tracing::warn!(
                    "the evaluation sets of {}'s run are not measured: {e}",
                    models[0]
                );
                Vec::new()
            })
        }
        None => Vec::new(),
    };
    let measure = |model: &mut ClipClassifier, w: &Weights| -> Result<EvalReport> {
        w.set(model);
        measure_on(model, &pipeline, &ds, batch_size, placement)
    };
    // On the evaluation sets, with the weights `measure` set last.
    let on_sets = |model: &ClipClassifier| -> Result<BTreeMap<String, f64>> {
        sets.iter()
            .map(|(name, set)| {
                let r = measure_on(model, &pipeline, set, batch_size, placement)?;
                Ok((name.clone(), r.accuracy))
            })
            .collect()
    };
    let pct = |a: f64| format!("{:.2}%", a * 100.0);
    let mut ingredients = Vec::new();
    for (i, (spec, w)) in models.iter().zip(&weights).enumerate() {
        let r = measure(&mut model, w)?;
        tracing::info!(
            "soup: ingredient {}/{}: {} on the held-out data: {spec}",
            i + 1,
            models.len(),
            pct(r.accuracy)
        );
        ingredients.push(Ingredient {
            model: spec.clone(),
            accuracy: r.accuracy,
            loss: r.loss,
            in_greedy: false,
            eval_sets: on_sets(&model)?,
        });
    }
    let all: Vec<&Weights> = weights.iter().collect();
    let uniform = Weights::mean(&all);
    let uniform_eval = measure(&mut model, &uniform)?;
    let uniform_sets = on_sets(&model)?;
    tracing::info!("soup: the uniform soup: {}", pct(uniform_eval.accuracy));
    // Greedy (Algorithm 1): best first, each kept if the soup does not get worse.
    let mut order: Vec<usize> = (0..models.len()).collect();
    // Ties on accuracy go to the lower loss.
    order.sort_by(|&a, &b| {
        let (x, y) = (&ingredients[a], &ingredients[b]);
        y.accuracy
            .total_cmp(&x.accuracy)
            .then(x.loss.total_cmp(&y.loss))
    });
    let mut kept = vec![order[0]];
    let mut greedy = Weights::mean(&[&weights[order[0]]]);
    let mut greedy_eval = measure(&mut model, &greedy)?;
    for &i in &order[1..] {
        let with: Vec<&Weights> = kept.iter().chain([&i]).map(|&k| &weights[k]).collect();
        let candidate = Weights::mean(&with);
        let r = measure(&mut model, &candidate)?;
        let keep = r.accuracy >= greedy_eval.accuracy;
        tracing::info!(
            "soup: greedy: with {} {} ({} before): {}",
            models[i],
            pct(r.accuracy),
            pct(greedy_eval.accuracy),
            if keep { "kept" } else { "left out" }
        );
        if keep {
            kept.push(i);
            greedy = candidate;
            greedy_eval = r;
        }
    }
    for &k in &kept {
        ingredients[k].in_greedy = true;
    }
    greedy.set(&mut model);
    let greedy_sets = on_sets(&model)?;
    let figures = |r: &EvalReport, of: Vec<String>, eval_sets| SoupFigures {
        accuracy: r.accuracy,
        top5: r.top5,
        loss: r.loss,
        ingredients: of,
        eval_sets,
    };
    let report = SoupReport {
        data: data_label,
        images: ds.len(),
        uniform: figures(&uniform_eval, models.to_vec(), uniform_sets),
        greedy: figures(
            &greedy_eval,
            kept.iter().map(|&k| models[k].clone()).collect(),
            greedy_sets,
        ),
        ingredients,
    };
    let mut inputs: Vec<PathBuf> = models.iter().map(PathBuf::from).collect();
    inputs.extend(dirs.iter().cloned());
    inputs.extend(data_file.map(Path::to_path_buf));
    Ok(Soups {
        report,
        model,
        _vs: vs,
        uniform: (uniform, uniform_eval),
        greedy: (greedy, greedy_eval),
        first_dir: dirs.swap_remove(0),
        inputs,
    })
}

/// `model` (with its weights set) on `data`.
fn measure_on(
    model: &ClipClassifier,
    pipeline: &Pipeline,
    data: &Dataset,
    batch_size: usize,
    placement: Placement,
) -> Result<EvalReport> {
    evaluate_data(
        model,
        pipeline.clone(),
        data.clone(),
        None,
        batch_size,
        ExifOrientation::Ignore,
        placement.precision,
        placement.device,
        |_, _, _| Ok(()),
    )
}

impl Soups {
    /// Writes both soups into `dir` as full exports (`uniform/`, `greedy/`, as
    /// `train-cli export` writes them: transformers' `pipeline` loads each), and
    /// `soup.json` beside them. Returns the files written.
    pub fn save(&mut self, dir: &Path, overwrite: bool) -> Result<Vec<String>> {
        let run_cfg = run_config_of(&self.first_dir).ok().flatten();
        let tokenizer = tokenizer_for(&self.first_dir, run_cfg.as_ref());
        let mut inputs: Vec<&Path> = self.inputs.iter().map(PathBuf::as_path).collect();
        inputs.extend(tokenizer.as_deref());
        let out = OutputDir::prepare(dir, "soup", &inputs, overwrite)?;
        let data = self.report.data.display().to_string();
        let mut written = Vec::new();
        let result = (|| -> Result<()> {
            for (name, (weights, eval), figures) in [
                ("uniform", &self.uniform, &self.report.uniform),
                ("greedy", &self.greedy, &self.report.greedy),
            ] {
                weights.set(&mut self.model);
                let provenance = Provenance {
                    origin: format!(
                        "made by a {name} model soup: the mean of the weights of {} fine-tuned models ({})",
                        figures.ingredients.len(),
                        figures
                            .ingredients
                            .iter()
                            .map(|m| format!("`{m}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    validation: Some((
                        format!("Held-out evaluation on `{data}` ({} images)", eval.images),
                        eval.clone(),
                    )),
                    test: None,
                    unmeasured: None,
                };
                let files = write_export(
                    &mut self.model,
                    &out.path().join(name),
                    run_cfg.as_ref(),
                    tokenizer.as_deref(),
                    &provenance,
                    false,
                )?;
                written.extend(files.into_iter().map(|f| format!("{name}/{f}")));
            }
            write_json(&out.path().join("soup.json"), &self.report)?;
            written.push("soup.json".into());
            if robustness_plot(&out.path().join("soup_robustness.png"), &self.report) {
                written.push("soup_robustness.png".into());
            }
            Ok(())
        })();
        finish(out, result.map(|()| written))
    }
}

/// The WiSE-FT / soups papers' picture: accuracy on the held-out data against
/// the mean accuracy on the evaluation sets, each ingredient and both soups a
/// point; whether it was drawn (not without evaluation sets).
fn robustness_plot(path: &Path, r: &SoupReport) -> bool {
    let point = |accuracy: f64, sets: &BTreeMap<String, f64>| {
        super::mean_accuracy(sets).map(|y| (accuracy * 100.0, y * 100.0))
    };
    let mut marks: Vec<Mark> = r
        .ingredients
        .iter()
        .enumerate()
        .filter_map(|(i, g)| {
            let name = Path::new(&g.model)
                .file_name()
                .map_or(g.model.clone(), |n| n.to_string_lossy().into_owned());
            let name: String = name.chars().take(36).collect();
            Some(Mark {
                label: format!("{}: {name}", i + 1),
                at: point(g.accuracy, &g.eval_sets)?,
                color: plotters::style::BLUE,
            })
        })
        .collect();
    for (label, f, color) in [
        ("uniform soup", &r.uniform, plotters::style::RED),
        ("greedy soup", &r.greedy, plotters::style::GREEN),
    ] {
        marks.extend(point(f.accuracy, &f.eval_sets).map(|at| Mark {
            label: label.into(),
            at,
            color,
        }));
    }
    if marks.is_empty() {
        return false;
    }
    draw(path, |path| {
        line_chart(
            path,
            "Soups: held-out vs shifted accuracy",
            "accuracy on the held-out data %",
            "mean accuracy on the evaluation sets %",
            &[],
            &marks,
        )
    })
}
