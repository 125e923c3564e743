//! What a run leaves behind and how other commands find it: model folders,
//! checkpoints and run folders; data sources given as a path; exports in the
//! Hugging Face layout.

use std::path::{Path, PathBuf};

use serde_json::json;
use tch::nn;

use clip_data::{Normalize, Pipeline, SourceConfig};
use clip_model::{
    ClipClassifier, ClipModel, ClipTokenizer, HeadKind, ModelFiles, ParamReport, save_peft_adapter,
    write_atomic,
};

use crate::config::{DeviceChoice, Objective, RunConfig};
use crate::error::{Result, TrainError};
use crate::evaluation::EvalReport;
use crate::precision::Precision;
use crate::report::read_summary;
use crate::run_folder::latest_checkpoint;

/// The folder holding a classifier's `config.json`: `spec` itself (an export),
/// `spec/model` (a checkpoint), or a run folder's best (else latest) checkpoint.
pub fn classifier_dir(spec: &Path) -> Result<PathBuf> {
    if spec.join("config.json").is_file() {
        return Ok(spec.to_path_buf());
    }
    if spec.join("model").join("config.json").is_file() {
        return Ok(spec.join("model"));
    }
    if spec.join("checkpoints").is_dir() {
        let best = read_summary(spec)
            .and_then(|r| r.best.map(|b| b.checkpoint))
            .filter(|p| p.join("model").is_dir());
        let ckpt = match best {
            Some(p) => p,
            None => latest_checkpoint(spec)?,
        };
        return Ok(ckpt.join("model"));
    }
    Err(TrainError::NotAModel {
        path: spec.to_path_buf(),
    })
}

/// The resolved config of the run a model folder lies in (a checkpoint's
/// `model/` is two levels below it), if it lies in one.
fn run_config_of(model_dir: &Path) -> Result<Option<RunConfig>> {
    model_dir
        .ancestors()
        .map(|p| p.join("config.resolved.toml"))
        .find(|p| p.is_file())
        .map(|p| RunConfig::load(&p, &[]))
        .transpose()
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

/// Where and in which precision a command runs a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub device: tch::Device,
    pub precision: Precision,
}

impl Placement {
    /// A run's `run.device` and `train.precision` (`train.precision_on_cpu` on the
    /// CPU).
    pub fn of_run(cfg: &RunConfig) -> Result<Self> {
        let device = cfg.run.device.device()?;
        Ok(Self {
            device,
            precision: cfg.train.precision_on(device),
        })
    }

    /// `device` / `precision` when given (`--device`, `--precision`), else the
    /// settings of the run `spec` lies in (a run folder or one of its
    /// checkpoints), else `auto` and fp32. A device that is not there is an error.
    pub fn for_model(
        spec: &str,
        device: Option<DeviceChoice>,
        precision: Option<Precision>,
    ) -> Result<Self> {
        let run = if Path::new(spec).exists() {
            run_config_of(Path::new(spec))?
        } else {
            None
        };
        let Some(cfg) = run else {
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

    /// `cpu, fp32`, `cuda:1, bf16`.
    pub fn describe(&self) -> String {
        let device = match self.device {
            tch::Device::Cuda(n) => format!("cuda:{n}"),
            other => format!("{other:?}").to_lowercase(),
        };
        format!("{device}, {}", self.precision)
    }
}

/// The test source `src` (`data.test`), labelled with `classes` (matched by
/// name: another order or a subset is fine, a class not among them an error).
pub fn test_set(src: &SourceConfig, classes: &[String]) -> Result<clip_data::Dataset> {
    Ok(clip_data::Dataset::load(src, "data.test")?.with_classes(classes, "data.test")?)
}

/// Evaluates the run in `run_dir` once on `cfg.data.test` with the checkpoint its
/// validation selected (else the latest), on the run's device and precision, and
/// writes `<run>/test.json`; `None` without a test source. The test set's
/// classes are matched to the model's by name.
pub fn evaluate_test(run_dir: &Path, cfg: &RunConfig) -> Result<Option<EvalReport>> {
    let Some(src) = &cfg.data.test else {
        return Ok(None);
    };
    let place = Placement::of_run(cfg)?;
    let vs = nn::VarStore::new(place.device);
    let dir = classifier_dir(run_dir)?;
    let model = load_classifier_from(&vs, &dir, false)?;
    let ds = test_set(src, model.class_names())?;
    let size = model.clip.config().vision_config.image_size as usize;
    let loader = crate::assembly::eval_loader(cfg, ds, eval_pipeline_for(&dir, size)?)?;
    let report = crate::evaluation::evaluate(
        &model,
        &loader,
        place.precision,
        place.device,
        |_, _| Ok(()),
    )?;
    let record = serde_json::json!({ "checkpoint": dir.parent().unwrap_or(&dir), "test": report });
    crate::run_folder::write_json(&run_dir.join("test.json"), &record)?;
    Ok(Some(report))
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
    let path = dir
        .parent()
        .map(|c| c.join("ema.safetensors"))
        .filter(|p| p.is_file())
        .ok_or_else(|| {
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
    if run_config_of(dir)?.is_some_and(|c| c.train.objective == Objective::Contrastive) {
        // FLYP: the head's multiplier is the logit scale of the weights in use
        // (the EMA's), as the run evaluated its EMA.
        model.set_scale(model.clip.logit_scale_value().exp());
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

/// A data source from a path, or from a source table as a config writes it
/// (`{ kind = "idx", ... }`): `*.parquet` Parquet files, `*.tar` (or a brace range or glob of them)
/// WebDataset shards, a folder an image folder, `*.csv` a manifest,
/// an IDX images file (`*-images-idx3-ubyte[.gz]`) takes its labels file beside it
/// (`*-labels-idx1-ubyte[.gz]`); Fashion-MNIST's files get its class names.
pub fn source_from_path(path: &Path) -> Result<SourceConfig> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let text = path.to_string_lossy();
    // A source written as in a config: `{ kind = "idx", images = ..., class_names = [...] }`.
    if text.trim_start().starts_with('{') {
        #[derive(serde::Deserialize)]
        struct Wrapper {
            data: SourceConfig,
        }
        return toml::from_str::<Wrapper>(&format!("data = {text}"))
            .map(|w| w.data)
            .map_err(|e| {
                TrainError::config(
                    "--data",
                    format!("{text} is not a data source table: {}", e.message()),
                )
            });
    }
    // Parquet files: one, or a brace range / glob of them.
    if name.ends_with(".parquet") {
        return Ok(SourceConfig::Parquet {
            path: text.to_string(),
            image_column: "image".into(),
            label_column: "label".into(),
            caption_column: None,
            class_names: None,
        });
    }
    // WebDataset shards: one `.tar`, or a brace range / glob of them.
    if name.ends_with(".tar") || (!path.exists() && text.contains(['{', '*', '?'])) {
        return Ok(SourceConfig::Webdataset {
            path: text.to_string(),
            class_names: None,
            caption_extension: None,
        });
    }
    if path.is_dir() {
        return Ok(SourceConfig::ImageFolder { path: path.into() });
    }
    if !path.exists() {
        return Err(TrainError::config(
            "--data",
            format!("{} does not exist", path.display()),
        ));
    }
    if name.ends_with(".csv") {
        return Ok(SourceConfig::csv(path));
    }
    if name.contains("images-idx3-ubyte") {
        let labels = path.with_file_name(name.replace("images-idx3-ubyte", "labels-idx1-ubyte"));
        let fashion = path.to_string_lossy().contains("fashion");
        return Ok(SourceConfig::Idx {
            images: path.into(),
            labels,
            class_names: fashion.then(|| {
                clip_data::FASHION_MNIST_CLASSES
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            }),
        });
    }
    Err(TrainError::config(
        "--data",
        format!(
            "{}: expected an image folder, a .csv manifest or an IDX images file (*-images-idx3-ubyte[.gz])",
            path.display()
        ),
    ))
}

/// `preprocessor_config.json` of transformers' `CLIPImageProcessor`.
pub fn preprocessor_json(image_size: i64, norm: &Normalize) -> serde_json::Value {
    json!({
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": true,
        "size": { "shortest_edge": image_size },
        "resample": 3,
        "do_center_crop": true,
        "crop_size": { "height": image_size, "width": image_size },
        "do_rescale": true,
        "rescale_factor": 1.0 / 255.0,
        "do_normalize": true,
        "image_mean": norm.mean,
        "image_std": norm.std,
        "do_convert_rgb": true
    })
}

const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
];

/// Exports a checkpoint (or a run folder's best checkpoint) as a Hugging Face
/// folder: `config.json` (with `id2label`), `model.safetensors` (head included),
/// `preprocessor_config.json`, and the tokenizer files of the pretrained model
/// the run started from when they can be found. Returns the files written.
pub fn export(checkpoint: &Path, output: &Path, ema: bool) -> Result<Vec<String>> {
    let model_dir = classifier_dir(checkpoint)?;
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let mut model = load_classifier_from(&vs, &model_dir, ema)?;
    std::fs::create_dir_all(output).map_err(TrainError::io("cannot create", output))?;
    // The run's config, two levels above the checkpoint, says where the weights
    // came from (for the tokenizer) and how images were normalised.
    let run_cfg = run_config_of(&model_dir).ok().flatten();
    let mut written = vec!["config.json".to_string(), "model.safetensors".to_string()];
    match model.clip.lora().cloned() {
        // LoRA: the merged model (a plain CLIP + head) and the PEFT adapter.
        Some(lora) => {
            model.save_merged(output)?;
            let base = run_cfg.as_ref().and_then(|c| c.model.pretrained.as_deref());
            save_peft_adapter(
                &output.join("adapter"),
                &lora,
                &model.clip.adapter_tensors(),
                base,
            )?;
            written.push("adapter/adapter_config.json".into());
            written.push("adapter/adapter_model.safetensors".into());
        }
        None => model.save_pretrained(output)?,
    }
    // The hf head is transformers' own CLIPForImageClassification (config.json
    // says so). Our cosine head loads in transformers' Auto classes and pipeline
    // through a small modeling file (`trust_remote_code=True`); CLIPModel still
    // loads it.
    if model.kind() == HeadKind::Cosine {
        let config_path = output.join("config.json");
        let text = std::fs::read_to_string(&config_path)
            .map_err(TrainError::io("cannot read", &config_path))?;
        let mut config: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            TrainError::config("config.json", format!("{}: {e}", config_path.display()))
        })?;
        config["auto_map"] = json!({
            "AutoModelForImageClassification": "modeling_clip_finetune.CLIPFinetuneForImageClassification"
        });
        let text = serde_json::to_string_pretty(&config).unwrap_or_default();
        write_atomic(&config_path, text.as_bytes())?;
        write_atomic(&output.join(MODELING_FILE), MODELING_SOURCE.as_bytes())?;
        written.push(MODELING_FILE.into());
    }
    let norm = run_cfg
        .as_ref()
        .and_then(|c| c.data.eval_transforms.as_ref())
        .and_then(|ops| {
            ops.iter().find_map(|op| match op {
                clip_data::TransformConfig::Normalize { mean, std } => Some(Normalize {
                    mean: *mean,
                    std: *std,
                }),
                _ => None,
            })
        })
        .unwrap_or_else(Normalize::clip);
    let size = model.clip.config().vision_config.image_size;
    if let Some(ops) = run_cfg
        .as_ref()
        .and_then(|c| c.data.eval_transforms.as_ref())
        && ops.as_slice() != Pipeline::clip_processor(size as usize, norm.clone()).ops()
    {
        tracing::warn!(
            "the run evaluated with its own data.eval_transforms; preprocessor_config.json can only \
             describe CLIPImageProcessor (bicubic resize, centre crop at (size - crop) // 2) with \
             their mean and std, so transformers will preprocess slightly differently"
        );
    }
    let pre = serde_json::to_string_pretty(&preprocessor_json(size, &norm)).unwrap_or_default();
    write_atomic(&output.join("preprocessor_config.json"), pre.as_bytes())?;
    written.push("preprocessor_config.json".into());
    if let Some(spec) = run_cfg.as_ref().and_then(|c| c.model.pretrained.as_ref()) {
        match ModelFiles::resolve(spec) {
            Ok(files) => {
                for f in TOKENIZER_FILES {
                    let src = files.dir.join(f);
                    if src.is_file() {
                        std::fs::copy(&src, output.join(f))
                            .map_err(TrainError::io("cannot copy", &src))?;
                        written.push((*f).into());
                    }
                }
            }
            Err(e) => tracing::warn!("tokenizer not exported: {e}"),
        }
    }
    let card = model_card(&model, &model_dir, run_cfg.as_ref(), ema);
    write_atomic(&output.join("README.md"), card.as_bytes())?;
    written.push("README.md".into());
    Ok(written)
}

/// The modeling file an export carries for transformers' Auto classes.
const MODELING_FILE: &str = "modeling_clip_finetune.py";
const MODELING_SOURCE: &str = include_str!("modeling_clip_finetune.py");

/// A string as a YAML / JSON scalar (JSON strings are valid YAML).
fn quoted(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// The export's model card (`README.md`, Hugging Face's metadata block first):
/// base model, classes, the run's validation metrics, its config, and how to load
/// the classifier with transformers (our head on CLIPModel's image features).
fn model_card(
    model: &ClipClassifier,
    model_dir: &Path,
    run_cfg: Option<&RunConfig>,
    ema: bool,
) -> String {
    let name = run_cfg.map_or("clip-classifier".to_string(), |c| c.run.name.clone());
    let base = run_cfg.and_then(|c| c.model.pretrained.clone());
    // The checkpoint's run: its summary (metrics of the best checkpoint's run).
    let summary = model_dir.ancestors().find_map(read_summary);
    let eval = summary.as_ref().and_then(|s| s.last_eval.as_ref());
    let val = eval.map(|e| {
        if ema {
            e.ema.as_ref().unwrap_or(&e.val)
        } else {
            &e.val
        }
    });
    let mut s =
        String::from("---\nlibrary_name: transformers\npipeline_tag: image-classification\n");
    s.push_str("tags:\n- clip\n- image-classification\n- clip-finetune\n");
    if let Some(b) = base.as_deref().filter(|b| !Path::new(b).exists()) {
        s.push_str(&format!("base_model: {}\n", quoted(b)));
    }
    if let Some(v) = val {
        // The training data, as the metadata's `dataset` (required there).
        let (dataset, kind) = match run_cfg.and_then(|c| c.data.train.as_ref()) {
            Some(SourceConfig::ImageFolder { path }) => (path.display().to_string(), "imagefolder"),
            Some(SourceConfig::Csv { path, .. }) => (path.display().to_string(), "csv"),
            Some(SourceConfig::Idx { images, .. }) => (images.display().to_string(), "idx"),
            Some(SourceConfig::Webdataset { path, .. }) => (path.clone(), "webdataset"),
            Some(SourceConfig::Parquet { path, .. }) => (path.clone(), "parquet"),
            None => ("unknown".to_string(), "unknown"),
        };
        s.push_str(&format!(
            "model-index:\n- name: {}\n  results:\n  - task:\n      type: image-classification\n      name: Image Classification\n    dataset:\n      name: {}\n      type: {}\n      split: validation\n    metrics:\n    - type: accuracy\n      value: {}\n      name: Validation accuracy\n    - type: f1\n      value: {}\n      name: Validation macro F1\n",
            quoted(&name),
            quoted(&dataset),
            quoted(kind),
            v.accuracy,
            v.macro_f1
        ));
    }
    s.push_str("---\n\n");
    s.push_str(&format!("# {name}\n\n"));
    s.push_str(&format!(
        "A CLIP image classifier fine-tuned with clip-finetune from {}{}.\n\n",
        base.as_deref()
            .map_or("a randomly initialised CLIP".to_string(), |b| format!(
                "`{b}`"
            )),
        if ema {
            " (the exponential moving average of its weights)"
        } else {
            ""
        }
    ));
    s.push_str(&format!("## Classes ({})\n\n", model.class_names().len()));
    for (i, c) in model.class_names().iter().enumerate() {
        s.push_str(&format!("{i}. {c}\n"));
    }
    if let (Some(v), Some(e)) = (val, eval) {
        s.push_str(&format!(
            "\n## Validation (step {}, {} images)\n\n| accuracy | top-5 | macro F1 | loss |\n|---:|---:|---:|---:|\n| {:.2}% | {:.2}% | {:.2}% | {:.4} |\n",
            e.step,
            v.images,
            v.accuracy * 100.0,
            v.top5 * 100.0,
            v.macro_f1 * 100.0,
            v.loss
        ));
    }
    match model.kind() {
        HeadKind::Hf => s.push_str("\n## How to load\n\nWith transformers, which knows this model as `CLIPForImageClassification`:\n\n```python\nfrom transformers import pipeline\n\nclassifier = pipeline(\"image-classification\", model=\"path/to/this/folder\")\nprint(classifier(\"image.jpg\"))\n```\n\nor `AutoModelForImageClassification.from_pretrained(path)`; or with clip-finetune:\n`train-cli predict --model path/to/this/folder image.jpg`.\n"),
        HeadKind::Cosine => s.push_str(&format!(
        "\n## How to load\n\nWith transformers (the folder carries its modeling file, `modeling_clip_finetune.py`):\n\n```python\nfrom transformers import pipeline\n\nclassifier = pipeline(\"image-classification\", model=\"path/to/this/folder\", trust_remote_code=True)\nprint(classifier(\"image.jpg\"))\n```\n\n`AutoModelForImageClassification.from_pretrained(path, trust_remote_code=True)` gives the same\nmodel; without remote code, the weights are a `CLIPModel` plus a linear head `classification_head`; the logits are\n`scale * (W @ normalize(image_features) + b)` with `scale = {}` (`clip_classifier` in config.json):\n\n```python\nimport torch\nfrom PIL import Image\nfrom safetensors.torch import load_file\nfrom transformers import CLIPImageProcessor, CLIPModel\n\npath = \"path/to/this/folder\"\nmodel = CLIPModel.from_pretrained(path).eval()\nprocessor = CLIPImageProcessor.from_pretrained(path)\nhead = load_file(f\"{{path}}/model.safetensors\")\nW, b = head[\"classification_head.weight\"], head.get(\"classification_head.bias\")\nscale = model.config.to_dict()[\"clip_classifier\"][\"scale\"]\n\nwith torch.no_grad():\n    pixels = processor(images=Image.open(\"image.jpg\"), return_tensors=\"pt\").pixel_values\n    features = model.get_image_features(pixel_values=pixels)\n    features = getattr(features, \"pooler_output\", features)\n    logits = torch.nn.functional.normalize(features, dim=-1) @ W.T\n    logits = scale * (logits + b if b is not None else logits)\nprint(model.config.id2label[int(logits.argmax())])\n```\n\nor with clip-finetune: `train-cli predict --model path/to/this/folder image.jpg`.\n",
        model.scale()
    )),
    }
    if let Some(c) = run_cfg {
        s.push_str(&format!(
            "\n## Training config\n\n```toml\n{}```\n",
            c.to_toml()
        ));
    }
    s
}
