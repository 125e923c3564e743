//! From a config to the parts of a run: datasets, pipelines, loaders, the model
//! and its optimizer groups. The trainer, `compare`, `wise-ft` and the CLI build
//! with these.

use std::path::Path;

use tch::nn;

use clip_data::{Dataset, Loader, LoaderConfig, MixConfig, Normalize, Pipeline};
use clip_model::{
    ClipClassifier, ClipConfig, ClipTokenizer, HeadConfig, HeadInit, ModelFiles, ParamReport, Tower,
};
use clip_optim::{GroupReport, ParamGroup, TensorRow};
use serde::Serialize;

use crate::config::RunConfig;
use crate::error::{Result, TrainError};
use crate::policies::apply_unfreeze;

/// Warns about the files a source left out (not images, link loops, links counted
/// elsewhere, broken links), naming the first ones with the reason.
fn report_skipped(key: &str, ds: &Dataset) {
    let skipped = ds.summary().skipped;
    if skipped.is_empty() {
        return;
    }
    const SHOWN: usize = 10;
    let lines: Vec<String> = skipped
        .iter()
        .take(SHOWN)
        .map(|(p, why)| format!("  {}: {why}", p.display()))
        .collect();
    let more = skipped.len().saturating_sub(SHOWN);
    tracing::warn!(
        "{key}: {} file(s) left out:\n{}{}",
        skipped.len(),
        lines.join("\n"),
        if more > 0 {
            format!("\n  ... and {more} more")
        } else {
            String::new()
        }
    );
}

/// Errors for one image listed with two labels in `ds`; a warning with the count
/// for entries listed more than once with the same label (and caption).
fn report_repeats(key: &str, ds: &Dataset) -> Result<()> {
    let r = ds.repeats(key)?;
    if r.extra > 0 {
        let shown: Vec<String> = r
            .examples
            .iter()
            .map(|names| match names.iter().all(|n| *n == names[0]) {
                true => format!("  {} ({} times)", names[0], names.len()),
                false => format!("  {}", names.join(" = ")),
            })
            .collect();
        tracing::warn!(
            "{key}: {} entr{} repeat an image listed before (each copy counts as one more sample):\n{}{}",
            r.extra,
            if r.extra == 1 { "y" } else { "ies" },
            shown.join("\n"),
            if r.extra > shown.len() { "\n  ..." } else { "" }
        );
    }
    Ok(())
}

/// A warning when validation images are training images (the same file, shard
/// member or row, or the same bytes): validation accuracy then overstates.
fn report_overlap(train: &Dataset, val: &Dataset, split: bool) -> Result<()> {
    let o = train.overlap(val, clip_data::OVERLAP_READ_BUDGET)?;
    if o.total() > 0 {
        let shown: Vec<String> = o
            .examples
            .iter()
            .map(|(v, t)| match v == t {
                true => format!("  {v}"),
                false => format!("  {v} = {t}"),
            })
            .collect();
        tracing::warn!(
            "{} of the {} validation images are training images ({} the same file, {} the same bytes){}: validation figures will overstate accuracy on unseen images:\n{}{}",
            o.total(),
            val.len(),
            o.same_place,
            o.same_bytes,
            if split {
                " (data.train lists them twice, and data.val_fraction put the copies on both sides)"
            } else {
                ""
            },
            shown.join("\n"),
            if o.total() > shown.len() {
                "\n  ..."
            } else {
                ""
            }
        );
    }
    if let Some(why) = o.bytes_unchecked {
        tracing::debug!(
            "validation images compared with the training images by file only, not by content: {why}"
        );
    }
    Ok(())
}

/// A classifier needs two classes or more, each with images: a class without any
/// (an empty or non-image folder, IDX labels that skip numbers) would get a head
/// row that never trains, and one class makes every accuracy 100 %.
fn check_classes(key: &str, ds: &Dataset) -> Result<()> {
    let summary = ds.summary();
    if summary.classes < 2 {
        return Err(TrainError::config(
            key,
            format!(
                "holds {} class(es) {:?}: classification needs at least 2",
                summary.classes,
                ds.classes()
            ),
        ));
    }
    let empty: Vec<&String> = summary
        .per_class
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(c, _)| c)
        .collect();
    if !empty.is_empty() {
        return Err(TrainError::config(
            key,
            format!(
                "{} of its {} classes have no images: {:?}{} (an empty or non-image folder, or IDX labels without `class_names` that skip numbers)",
                empty.len(),
                summary.classes,
                &empty[..empty.len().min(10)],
                if empty.len() > 10 { " ..." } else { "" }
            ),
        ));
    }
    Ok(())
}

/// The datasets of a config: `(train, val)`.
pub fn load_datasets(cfg: &RunConfig) -> Result<(Dataset, Dataset)> {
    let d = &cfg.data;
    let train_src = d
        .train
        .as_ref()
        .ok_or_else(|| TrainError::config("data.train", "is required"))?;
    train_src.check_exists("data.train")?;
    if let Some(v) = &d.val {
        v.check_exists("data.val")?;
    }
    let all = Dataset::load(train_src, "data.train")?;
    report_skipped("data.train", &all);
    report_repeats("data.train", &all)?;
    if all.has_labels() {
        check_classes("data.train", &all)?;
    } else if cfg.train.objective.needs_labels() {
        return Err(TrainError::config(
            "data.train",
            "holds image-caption pairs without labels: train them with \
             train.objective = \"contrastive\" (cross-entropy needs a label per image)",
        ));
    }
    let (train, val) = match &d.val {
        Some(v) => {
            let val = Dataset::load(v, "data.val")?;
            report_skipped("data.val", &val);
            report_repeats("data.val", &val)?;
            if !val.has_labels() {
                return Err(TrainError::config(
                    "data.val",
                    "has no labels: a run is evaluated (and its checkpoints chosen) by \
                     classifying labelled validation images; image-caption pairs without \
                     labels go in data.retrieval (retrieval is measured on them besides)",
                ));
            }
            let val = match all.has_labels() {
                // Matched by name: the same classes in another order, or a subset.
                true => val.with_classes(all.classes(), "data.val")?,
                // Image-caption training: the classes are the validation data's.
                false => {
                    check_classes("data.val", &val)?;
                    val
                }
            };
            (all, val)
        }
        None if !all.has_labels() => {
            return Err(TrainError::config(
                "data.val",
                "is required: data.train holds image-caption pairs without labels, and the \
                 classes the fine-tuned model classifies come from labelled validation data",
            ));
        }
        None => all.split_stratified(d.val_fraction, cfg.run.seed)?,
    };
    let train = d.train_limit.map_or(train.clone(), |n| train.take(n));
    let val = d.val_limit.map_or(val.clone(), |n| val.take(n));
    report_overlap(&train, &val, d.val.is_none())?;
    if train.is_empty() || val.is_empty() {
        return Err(TrainError::config(
            "data",
            format!(
                "{} training and {} validation images: both need at least one",
                train.len(),
                val.len()
            ),
        ));
    }
    Ok((train, val))
}

/// The image-caption pairs retrieval is measured on (`data.retrieval`), if any.
/// `data.eval_sets`, each labelled with `classes` (matched by name, a subset is
/// fine), by name.
pub fn load_eval_sets(cfg: &RunConfig, classes: &[String]) -> Result<Vec<(String, Dataset)>> {
    let mut sets = Vec::new();
    for (name, src) in &cfg.data.eval_sets {
        let key = format!("data.eval_sets.{name}");
        src.check_exists(&key)?;
        let ds = Dataset::load(src, &key)?;
        report_skipped(&key, &ds);
        let ds = ds.with_classes(classes, &key)?;
        if ds.is_empty() {
            return Err(TrainError::config(key, "holds no image"));
        }
        sets.push((name.clone(), ds));
    }
    Ok(sets)
}

pub fn load_retrieval(cfg: &RunConfig) -> Result<Option<Dataset>> {
    let Some(src) = &cfg.data.retrieval else {
        return Ok(None);
    };
    src.check_exists("data.retrieval")?;
    let ds = Dataset::load(src, "data.retrieval")?;
    report_skipped("data.retrieval", &ds);
    if !ds.has_captions() {
        return Err(TrainError::config(
            "data.retrieval",
            "has no captions: give its caption column (`caption_column`, or \
             `caption_extension` for shards)",
        ));
    }
    if ds.is_empty() {
        return Err(TrainError::config(
            "data.retrieval",
            "holds no image-caption pair",
        ));
    }
    Ok(Some(ds))
}

/// The classes a run's model classifies: the training data's, or for
/// image-caption training data without labels the validation data's.
pub fn run_classes(train: &Dataset, val: &Dataset) -> Vec<String> {
    match train.has_labels() {
        true => train.classes().to_vec(),
        false => val.classes().to_vec(),
    }
}

/// The training and evaluation pipelines, checked against the model's image size.
pub fn pipelines(cfg: &RunConfig, image_size: usize) -> Result<(Pipeline, Pipeline)> {
    let d = &cfg.data;
    let train = match &d.train_transforms {
        Some(ops) => Pipeline::new(ops.clone(), "data.train_transforms")?,
        None => Pipeline::tutorial_train(image_size, Normalize::clip()),
    };
    let eval = match &d.eval_transforms {
        Some(ops) => Pipeline::new(ops.clone(), "data.eval_transforms")?,
        None => Pipeline::clip_eval(image_size),
    };
    for (key, p) in [
        ("data.train_transforms", &train),
        ("data.eval_transforms", &eval),
    ] {
        let produces = match p.output_size() {
            Some((h, w)) if (h, w) == (image_size, image_size) => continue,
            Some((h, w)) => format!("{w}x{h} images"),
            None => "images whose size depends on the input".to_string(),
        };
        return Err(TrainError::config(
            key,
            format!(
                "produces {produces} but the model takes {image_size}x{image_size}: end with a crop of size {image_size}"
            ),
        ));
    }
    Ok((train, eval))
}

/// The evaluation loader for `dataset` under a run config (its loader settings,
/// `data.eval_batch_size` or twice the training batch).
pub fn eval_loader(cfg: &RunConfig, dataset: Dataset, pipeline: Pipeline) -> Result<Loader> {
    let batch = cfg.data.eval_batch();
    ordered_loader(&cfg.data.loader, dataset, pipeline, batch, cfg.run.seed)
}

/// An in-order loader without shuffling, balancing or mixing, batches of
/// `batch_size` (at least 1), the other settings from `base`: what evaluation and
/// prediction read images with.
pub fn ordered_loader(
    base: &LoaderConfig,
    dataset: Dataset,
    pipeline: Pipeline,
    batch_size: usize,
    seed: u64,
) -> Result<Loader> {
    let config = LoaderConfig {
        batch_size: batch_size.max(1),
        shuffle: false,
        balanced: false,
        drop_last: false,
        mix: MixConfig::default(),
        ..base.clone()
    };
    Ok(Loader::new(dataset, pipeline, config, seed)?)
}

/// The image size of the model a config trains (from its architecture, or the
/// pretrained model's config.json; no weights are read).
pub fn image_size_of(cfg: &RunConfig) -> Result<usize> {
    let vision = match (&cfg.model.architecture, &cfg.model.pretrained) {
        (Some(a), _) => a.config()?.vision_config,
        (None, Some(spec)) => {
            ClipConfig::from_json_file(&ModelFiles::resolve(spec)?.config)?.vision_config
        }
        (None, None) => {
            return Err(TrainError::config(
                "model",
                "set `model.pretrained` or `model.architecture`",
            ));
        }
    };
    Ok(vision.image_size as usize)
}

/// The size `preview-augment` draws at: the augmentation's own output size when
/// it fixes one (no model files needed: a hub id need not be downloaded to
/// preview its augmentation), else the model's image size.
pub fn augmentation_size(cfg: &RunConfig) -> Result<usize> {
    let fixed = cfg
        .data
        .train_transforms
        .as_ref()
        .and_then(|ops| Pipeline::new(ops.clone(), "data.train_transforms").ok())
        .and_then(|p| p.output_size())
        .filter(|(h, w)| h == w);
    match fixed {
        Some((h, _)) => Ok(h),
        None => image_size_of(cfg),
    }
}

/// Builds the model a fresh run starts from.
pub fn build_model(
    cfg: &RunConfig,
    vs: &nn::VarStore,
    classes: Vec<String>,
) -> Result<ClipClassifier> {
    let m = &cfg.model;
    let mut model = match (&m.pretrained, &m.architecture) {
        (Some(spec), _) => classifier_from_pretrained(
            vs,
            &ModelFiles::resolve(spec)?,
            classes,
            &m.head,
            m.tokenizer.as_deref(),
        )?,
        (None, Some(a)) => {
            let mut model = ClipClassifier::new(
                &vs.root(),
                &a.config()?,
                classes,
                &HeadConfig {
                    init: HeadInit::Random,
                    ..m.head.clone()
                },
            )?;
            if m.head.init == HeadInit::ZeroShot {
                let path = m.tokenizer.as_ref().ok_or_else(|| {
                    TrainError::config("model.tokenizer", "zero_shot heads need a tokenizer.json")
                })?;
                let context = model.clip.config().text_config.max_position_embeddings as usize;
                let tok = ClipTokenizer::from_file(path, context)?;
                model.init_zero_shot(&tok, &m.head.templates)?;
            }
            model
        }
        (None, None) => {
            return Err(TrainError::config(
                "model",
                "set `model.pretrained` or `model.architecture`",
            ));
        }
    };
    if let Some(lora) = &m.lora {
        model.clip.add_lora(&vs.root(), lora)?;
    }
    model.clip.set_regularization(m.regularization)?;
    model
        .clip
        .set_gradient_checkpointing(cfg.train.gradient_checkpointing);
    Ok(model)
}

/// The run's tokenizer: `model.tokenizer`, else the pretrained model folder's
/// `tokenizer.json`, at `model`'s text context length.
pub fn run_tokenizer(cfg: &RunConfig, model: &ClipClassifier) -> Result<ClipTokenizer> {
    let m = &cfg.model;
    let path = match (&m.tokenizer, &m.pretrained) {
        (Some(t), _) => t.clone(),
        (None, Some(spec)) => ModelFiles::resolve(spec)?.tokenizer.ok_or_else(|| {
            TrainError::config(
                "model.tokenizer",
                format!("{spec} has no tokenizer.json: give one in `model.tokenizer`"),
            )
        })?,
        (None, None) => {
            return Err(TrainError::config(
                "model.tokenizer",
                "is needed (a randomly initialised model has no tokenizer)",
            ));
        }
    };
    let text = &model.clip.config().text_config;
    let tok = ClipTokenizer::from_file(&path, text.max_position_embeddings as usize)?;
    tok.check_end_of_text(text.eos_token_id)
        .map_err(|e| match e {
            clip_model::ModelError::Config { reason, .. } => {
                TrainError::config("model.tokenizer", reason)
            }
            other => other.into(),
        })?;
    Ok(tok)
}

/// A classifier on pretrained weights. A `zero_shot` head reads its prompts with
/// `tokenizer`, else the model folder's `tokenizer.json`, at the text tower's
/// context length.
pub fn classifier_from_pretrained(
    vs: &nn::VarStore,
    files: &ModelFiles,
    classes: Vec<String>,
    head: &HeadConfig,
    tokenizer: Option<&Path>,
) -> Result<ClipClassifier> {
    let tok = match head.init {
        HeadInit::Random => None,
        HeadInit::ZeroShot => {
            let path = tokenizer
                .map(Path::to_path_buf)
                .or_else(|| files.tokenizer.clone())
                .ok_or_else(|| {
                    TrainError::config(
                        "tokenizer",
                        format!(
                            "{} has no tokenizer.json: zero-shot heads need one (model.tokenizer, or --tokenizer)",
                            files.dir.display()
                        ),
                    )
                })?;
            let context = ClipConfig::from_json_file(&files.config)?
                .text_config
                .max_position_embeddings as usize;
            Some(ClipTokenizer::from_file(&path, context)?)
        }
    };
    Ok(ClipClassifier::from_clip(
        &vs.root(),
        files,
        classes,
        head,
        tok.as_ref(),
    )?)
}

/// A zero-shot classifier on the pretrained CLIP `spec` (hub id or folder): the
/// head holds the normalised text embeddings of `templates` for each class name
/// (averaged over templates), scale `exp(logit_scale)`, a zero bias if `bias`.
/// Every command and comparison row that needs one builds it here.
pub fn zero_shot_classifier(
    vs: &nn::VarStore,
    spec: &str,
    classes: Vec<String>,
    templates: &[String],
    bias: bool,
    tokenizer: Option<&Path>,
) -> Result<ClipClassifier> {
    let head = HeadConfig {
        init: HeadInit::ZeroShot,
        bias,
        templates: templates.to_vec(),
        ..HeadConfig::default()
    };
    classifier_from_pretrained(vs, &ModelFiles::resolve(spec)?, classes, &head, tokenizer)
}

/// The optimizer's parameter groups for `model` under `cfg`, and the towers
/// they cover (those not in `optim.frozen_towers`).
pub fn param_groups(
    cfg: &RunConfig,
    model: &ClipClassifier,
) -> Result<(Vec<ParamGroup>, Vec<Tower>)> {
    let groups_cfg = cfg.optim.groups();
    let c = model.clip.config();
    let (vision, text) = (
        c.vision_config.num_hidden_layers as u32,
        c.text_config.num_hidden_layers as u32,
    );
    let groups = groups_cfg.build(model.params(), |t| match t {
        Tower::Vision => vision,
        Tower::Text => text,
        _ => 0,
    })?;
    let trained = [Tower::Vision, Tower::Text, Tower::Shared, Tower::Head]
        .into_iter()
        .filter(|t| !groups_cfg.frozen_towers.contains(t))
        .collect();
    Ok((groups, trained))
}

/// What `train-cli inspect --config` shows: the model's parameters, the
/// optimizer's groups (base LRs, first epoch's trainable flags) and every tensor
/// with its group.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub parameters: ParamReport,
    pub groups: GroupReport,
    pub tensors: Vec<TensorRow>,
    /// What a training step would keep in device memory (per rank).
    pub memory: crate::memory_estimate::MemoryEstimate,
}

/// Builds the model and groups a config would train, without training.
pub fn inspect_config(cfg: &RunConfig) -> Result<Inspection> {
    Ok(inspect_with_data(cfg)?.0)
}

/// [`inspect_config`], with the datasets it read and the model's image size.
pub(crate) fn inspect_with_data(
    cfg: &RunConfig,
) -> Result<(Inspection, clip_data::Dataset, clip_data::Dataset, usize)> {
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let (train, val) = load_datasets(cfg)?;
    let model = build_model(cfg, &vs, run_classes(&train, &val))?;
    let (groups, trained) = param_groups(cfg, &model)?;
    let layers = model.clip.config().vision_config.num_hidden_layers as u32;
    apply_unfreeze(
        model.params(),
        cfg.train.unfreeze,
        &trained,
        0,
        cfg.train.epochs.max(1),
        layers,
    );
    let lrs: Vec<f64> = groups.iter().map(|g| g.base_lr).collect();
    let inspection = Inspection {
        parameters: model.report(),
        groups: GroupReport::new(&groups, &lrs),
        tensors: TensorRow::list(model.params(), &groups, &lrs),
        memory: crate::memory_estimate::for_run(
            cfg,
            &model,
            &groups,
            &trained,
            cfg.train.gradient_checkpointing,
        ),
    };
    let size = model.clip.config().vision_config.image_size as usize;
    Ok((inspection, train, val, size))
}
