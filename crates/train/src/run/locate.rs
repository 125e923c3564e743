//! How other commands find what a run left behind: the model folder a spec
//! names (an export, a checkpoint or a run folder), the run it lies in, its
//! placement, tokenizer and evaluation preprocessing, and the classifier itself
//! (its EMA weights on request).

use std::path::{Path, PathBuf};

use tch::nn;

use clip_data::{Normalize, Pipeline};
use clip_model::{ClipClassifier, ClipModel, ClipTokenizer, ModelFiles, ParamReport};

use crate::config::{DeviceChoice, RunConfig};
use crate::device::Placement;
use crate::error::{Result, TrainError};
use crate::precision::Precision;
use crate::run::checkpoint::{CHECKPOINTS_DIR, MODEL_DIR, ema_beside, selected_model_dir};
use crate::run::folder::CONFIG_FILE;

/// The folder holding a classifier's `config.json`: `spec` itself (an export),
/// `spec/model` (a checkpoint), or a run folder's best (else latest) checkpoint.
pub fn classifier_dir(spec: &Path) -> Result<PathBuf> {
    if spec.join("config.json").is_file() {
        return Ok(spec.to_path_buf());
    }
    if spec.join(MODEL_DIR).join("config.json").is_file() {
        return Ok(spec.join(MODEL_DIR));
    }
    if spec.join(CHECKPOINTS_DIR).is_dir() {
        return selected_model_dir(spec);
    }
    Err(TrainError::NotAModel {
        path: spec.to_path_buf(),
    })
}

/// The resolved config of the run a model folder lies in (a checkpoint's
/// `model/` is two levels below it), if it lies in one.
pub(crate) fn run_config_of(model_dir: &Path) -> Result<Option<RunConfig>> {
    model_dir
        .ancestors()
        .map(|p| p.join(CONFIG_FILE))
        .find(|p| p.is_file())
        .map(|p| RunConfig::load(&p, &[]))
        .transpose()
}

/// The resolved config of the run the model `spec` lies in, when `spec` is a
/// path inside a run folder (a hub id or an export outside one: none).
fn run_of_spec(spec: &str) -> Result<Option<RunConfig>> {
    match Path::new(spec).exists() {
        true => run_config_of(Path::new(spec)),
        false => Ok(None),
    }
}

impl Placement {
    /// `device` / `precision` when given (`--device`, `--precision`), else the
    /// settings of the run `spec` lies in (a run folder or one of its
    /// checkpoints), else `auto` and fp32. A device that is not there is an error.
    pub fn for_model(
        spec: &str,
        device: Option<DeviceChoice>,
        precision: Option<Precision>,
    ) -> Result<Self> {
        let Some(cfg) = run_of_spec(spec)? else {
            return Ok(Self {
                device: device.unwrap_or_default().resolve("--device")?,
                precision: precision.unwrap_or_default(),
            });
        };
        let mut p = match device {
            Some(d) => {
                let device = d.resolve("--device")?;
                Self {
                    device,
                    precision: cfg.train.precision_on(device),
                }
            }
            None => Self::of_run(&cfg)?,
        };
        if let Some(given) = precision {
            p.precision = given;
        }
        Ok(p)
    }
}

/// The tokenizer of the model `spec` names (an export, a checkpoint, a run
/// folder, a pretrained folder or hub id): its `tokenizer.json`, else its run's
/// `model.tokenizer`; an error saying so when there is none. For retrieval on
/// data with captions.
pub fn model_tokenizer(spec: &str, model: &ClipClassifier) -> Result<ClipTokenizer> {
    let dir = classifier_dir(Path::new(spec)).ok();
    let file = match dir.as_ref().map(|d| d.join("tokenizer.json")) {
        Some(f) if f.is_file() => Some(f),
        _ => match dir.as_deref().map(run_config_of).transpose()?.flatten() {
            Some(cfg) => return crate::assembly::run_tokenizer(&cfg, model),
            None => ModelFiles::resolve(spec).ok().and_then(|f| f.tokenizer),
        },
    };
    let file = file.ok_or_else(|| {
        TrainError::config(
            "--data",
            format!(
                "has captions: image <-> text retrieval needs the text tower's tokenizer.json, \
                 and {spec} has none (copy it into the model folder)"
            ),
        )
    })?;
    let text = &model.clip.config().text_config;
    let tok = ClipTokenizer::from_file(&file, text.max_position_embeddings as usize)?;
    tok.check_end_of_text(text.eos_token_id)?;
    Ok(tok)
}

/// The evaluation preprocessing a model was trained for: an export's
/// `preprocessor_config.json` (mean / std), else the run's `data.eval_transforms`
/// (a checkpoint inside a run folder), else CLIP's image processor.
pub fn eval_pipeline_for(model_dir: &Path, image_size: usize) -> Result<Pipeline> {
    let pre = model_dir.join("preprocessor_config.json");
    if pre.is_file() {
        let text = std::fs::read_to_string(&pre).map_err(TrainError::io("cannot read", &pre))?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            TrainError::config(
                "preprocessor_config.json",
                format!("{}: {e}", pre.display()),
            )
        })?;
        let triple = |key: &str| -> Option<[f32; 3]> {
            let v: Vec<f32> = json
                .get(key)?
                .as_array()?
                .iter()
                .filter_map(|x| x.as_f64().map(|f| f as f32))
                .collect();
            v.try_into().ok()
        };
        let norm = match (triple("image_mean"), triple("image_std")) {
            (Some(mean), Some(std)) => Normalize { mean, std },
            _ => Normalize::clip(),
        };
        // Validated: the statistics come from a file (a zero std is an error).
        let ops = Pipeline::clip_processor(image_size, norm).ops().to_vec();
        return Ok(Pipeline::new(ops, "preprocessor_config.json")?);
    }
    match run_config_of(model_dir)? {
        Some(cfg) => Ok(crate::assembly::pipelines(&cfg, image_size)?.1),
        None => Ok(Pipeline::clip_eval(image_size)),
    }
}

/// Whether a command turns images by their EXIF orientation for the model
/// `spec`: `given` (`--exif-orientation`), else the setting of the run `spec`
/// lies in (`data.loader.exif_orientation`), else not (as PIL's `open`).
pub fn exif_orientation_for(
    spec: &str,
    given: Option<clip_data::ExifOrientation>,
) -> Result<clip_data::ExifOrientation> {
    if let Some(g) = given {
        return Ok(g);
    }
    Ok(run_of_spec(spec)?.map_or_else(Default::default, |c| c.data.loader.exif_orientation))
}

/// A fine-tuned model (see [`classifier_dir`]; its EMA weights with `ema`) and
/// the evaluation preprocessing it was trained for.
pub fn load_for_eval(
    vs: &nn::VarStore,
    spec: &str,
    ema: bool,
) -> Result<(ClipClassifier, Pipeline)> {
    let dir = classifier_dir(Path::new(spec))?;
    let model = load_classifier_from(vs, &dir, ema)?;
    let size = model.clip.config().vision_config.image_size as usize;
    Ok((model, eval_pipeline_for(&dir, size)?))
}

/// The tokenizer retrieval on `data` needs when it has captions (the model's,
/// see [`model_tokenizer`]); `None` for data without captions.
pub fn eval_tokenizer(
    spec: &str,
    model: &ClipClassifier,
    data: &clip_data::Dataset,
) -> Result<Option<ClipTokenizer>> {
    match data.has_captions() {
        true => Ok(Some(model_tokenizer(spec, model)?)),
        false => Ok(None),
    }
}

/// Loads a fine-tuned classifier from an export, a checkpoint or a run folder.
pub fn load_classifier(vs: &nn::VarStore, spec: &str) -> Result<ClipClassifier> {
    load_classifier_from(vs, &classifier_dir(Path::new(spec))?, false)
}

/// The classifier in `dir` (what [`classifier_dir`] gives), with the checkpoint's
/// EMA weights in place of its trained ones when `ema` (`--ema`): the
/// `ema.safetensors` beside the checkpoint's model. An export or a run without
/// `train.ema` has none: an error naming the folder.
pub fn load_classifier_from(vs: &nn::VarStore, dir: &Path, ema: bool) -> Result<ClipClassifier> {
    let mut model = ClipClassifier::load(&vs.root(), dir)?;
    if !ema {
        return Ok(model);
    }
    let path = ema_beside(dir).ok_or_else(|| {
            TrainError::config(
                "--ema",
                format!(
                    "{} has no EMA weights (no ema.safetensors beside it: the run needs `train.ema`, and exports hold the weights they were exported with)",
                    dir.display()
                ),
            )
        })?;
    let saved = clip_model::read_safetensors(&path)?;
    let params: std::collections::HashMap<&str, &tch::Tensor> = model
        .params()
        .iter()
        .map(|p| (p.name.as_str(), &p.tensor))
        .collect();
    for (name, t) in &saved {
        let p = params
            .get(name.as_str())
            .ok_or_else(|| TrainError::Resume {
                path: path.clone(),
                reason: format!("the EMA file's `{name}` is not a parameter of the model"),
            })?;
        tch::no_grad(|| p.shallow_clone().f_copy_(t))?;
    }
    tracing::info!(
        "EMA weights from {} ({} tensors)",
        path.display(),
        saved.len()
    );
    if let Some(c) = run_config_of(dir)? {
        // As the run evaluated its EMA (FLYP: the head's multiplier is the logit
        // scale of the weights in use).
        c.train.objective.weights_swapped(&mut model);
    }
    Ok(model)
}

/// The parameter report of a fine-tuned classifier (export, checkpoint or run
/// folder), else of a plain CLIP (hub id or folder). A model inside a run folder
/// shows what that run trained at its last epoch (its frozen towers, adapters and
/// unfreezing); an export or a plain CLIP has every parameter trainable.
pub fn model_report(spec: &str) -> Result<ParamReport> {
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let loaded = classifier_dir(Path::new(spec))
        .and_then(|dir| Ok((load_classifier_from(&vs, &dir, false)?, dir)));
    let Ok((m, dir)) = loaded else {
        return Ok(ClipModel::from_pretrained(&vs.root(), spec)?.report());
    };
    if let Some(cfg) = run_config_of(&dir)? {
        let (_, trained) = crate::assembly::param_groups(&cfg, &m)?;
        let epochs = cfg.train.epochs.max(1);
        crate::policies::apply_unfreeze(
            m.params(),
            cfg.train.unfreeze,
            &trained,
            epochs - 1,
            epochs,
            m.clip.config().vision_config.num_hidden_layers as u32,
        );
    }
    Ok(m.report())
}
