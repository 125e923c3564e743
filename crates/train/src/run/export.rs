//! Exports in the Hugging Face layout: a checkpoint (or a run folder's best)
//! written as a folder transformers' `pipeline` loads, with its model card.

use std::path::{Path, PathBuf};

use serde_json::json;
use tch::nn;

use clip_data::{Normalize, Pipeline};
use clip_model::{ClipClassifier, ModelFiles, save_peft_adapter, write_atomic};

use crate::config::RunConfig;
use crate::error::{Result, TrainError};
use crate::eval::EvalReport;
use crate::run::checkpoint::measured;
use crate::run::locate::{classifier_dir, load_classifier_from, run_config_of};
use crate::run::output::OutputDir;

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

/// What an export says of its weights: where they come from (the end of the
/// card's first sentence) and their measured figures.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    /// e.g. "fine-tuned with clip-finetune from `openai/clip-vit-base-patch32`: the checkpoint of step 600".
    pub origin: String,
    /// A heading ("Validation (step 600, 1000 images)") and the figures.
    pub validation: Option<(String, EvalReport)>,
    pub test: Option<(String, EvalReport)>,
    /// Said where validation is missing.
    pub unmeasured: Option<String>,
}

/// Exports a checkpoint (or a run folder's best checkpoint) as a Hugging Face
/// folder: `config.json` (with `id2label`), `model.safetensors` (head included),
/// `preprocessor_config.json`, and the tokenizer files of the pretrained model
/// the run started from when they can be found. Returns the files written.
/// The output folder is checked as [`OutputDir`] says (`overwrite` replaces an
/// earlier export there).
pub fn export(checkpoint: &Path, output: &Path, ema: bool, overwrite: bool) -> Result<Vec<String>> {
    let model_dir = classifier_dir(checkpoint)?;
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let mut model = load_classifier_from(&vs, &model_dir, ema)?;
    // The run's config, two levels above the checkpoint, says where the weights
    // came from (for the tokenizer) and how images were normalised.
    let run_cfg = run_config_of(&model_dir).ok().flatten();
    let provenance = checkpoint_provenance(&model_dir, run_cfg.as_ref(), ema);
    let tokenizer = tokenizer_for(&model_dir, run_cfg.as_ref());
    let mut inputs = vec![checkpoint, model_dir.as_path()];
    inputs.extend(tokenizer.as_deref());
    let out = OutputDir::prepare(output, "export", &inputs, overwrite)?;
    let written = write_export(
        &mut model,
        out.path(),
        run_cfg.as_ref(),
        tokenizer.as_deref(),
        &provenance,
        true,
    );
    finish(out, written)
}

/// Where the tokenizer of the model in `model_dir` is: that folder when it holds
/// one (an export), else the pretrained model the run (`run_cfg`) started from;
/// `None`, with a warning, when neither can be found.
pub(crate) fn tokenizer_for(model_dir: &Path, run_cfg: Option<&RunConfig>) -> Option<PathBuf> {
    if model_dir.join("tokenizer.json").is_file() {
        return Some(model_dir.to_path_buf());
    }
    let spec = run_cfg.and_then(|c| c.model.pretrained.as_ref())?;
    match ModelFiles::resolve(spec) {
        Ok(files) => Some(files.dir),
        Err(e) => {
            tracing::warn!("tokenizer not exported: {e}");
            None
        }
    }
}

/// Commits `out` when `written` succeeded, else drops it; `written` either way.
pub(crate) fn finish(out: OutputDir, written: Result<Vec<String>>) -> Result<Vec<String>> {
    match written {
        Ok(files) => {
            out.commit()?;
            Ok(files)
        }
        Err(e) => {
            out.abandon();
            Err(e)
        }
    }
}

/// The provenance of a checkpoint's model folder: the figures of exactly the
/// weights exported (this checkpoint's evaluation, its EMA's when the EMA is
/// exported, and the test result measured with it).
fn checkpoint_provenance(model_dir: &Path, run_cfg: Option<&RunConfig>, ema: bool) -> Provenance {
    let base = run_cfg.and_then(|c| c.model.pretrained.clone());
    let measured = measured(model_dir);
    let eval = measured.as_ref().and_then(|m| m.eval.as_ref());
    let val = eval.and_then(|e| if ema { e.ema.as_ref() } else { Some(&e.val) });
    Provenance {
        origin: format!(
            "fine-tuned with clip-finetune from {}{}{}",
            base.as_deref()
                .map_or("a randomly initialised CLIP".to_string(), |b| format!(
                    "`{b}`"
                )),
            measured
                .as_ref()
                .map(|m| format!(": the checkpoint of step {}", m.step))
                .unwrap_or_default(),
            if ema {
                " (the exponential moving average of its weights)"
            } else {
                ""
            }
        ),
        validation: eval.zip(val).map(|(e, v)| {
            (
                format!("Validation (step {}, {} images)", e.step, v.images),
                v.clone(),
            )
        }),
        test: measured
            .as_ref()
            .and_then(|m| m.test.clone())
            .filter(|_| !ema)
            .map(|t| {
                (
                    format!("Test (once, with this checkpoint, {} images)", t.images),
                    t,
                )
            }),
        unmeasured: measured.as_ref().filter(|_| val.is_none()).map(|m| {
            format!(
                "The {}weights of this checkpoint (step {}) were not evaluated during training (it was saved between evaluations{}); `train-cli eval --model <this folder> --data <images>` measures them.",
                if ema { "EMA " } else { "" },
                m.step,
                if ema { ", or the run evaluated no EMA" } else { "" }
            )
        }),
    }
}

/// Writes `model` as a Hugging Face folder into `output` (see [`export`]): the
/// preprocessing of `run_cfg` (the run the weights come from, if any), the
/// tokenizer files found in `tokenizer` (a folder, or a `tokenizer.json`), and
/// the card with `provenance`; a LoRA model's PEFT adapter beside its merged
/// weights when `peft_adapter`. Returns the files written.
pub fn write_export(
    model: &mut ClipClassifier,
    output: &Path,
    run_cfg: Option<&RunConfig>,
    tokenizer: Option<&Path>,
    provenance: &Provenance,
    peft_adapter: bool,
) -> Result<Vec<String>> {
    std::fs::create_dir_all(output).map_err(TrainError::io("cannot create", output))?;
    let mut written = vec!["config.json".to_string(), "model.safetensors".to_string()];
    match model.clip.lora().cloned().filter(|_| peft_adapter) {
        // LoRA: the merged model (a plain CLIP + head) and the PEFT adapter.
        Some(lora) => {
            model.save_merged(output)?;
            let base = run_cfg.and_then(|c| c.model.pretrained.as_deref());
            save_peft_adapter(
                &output.join("adapter"),
                &lora,
                &model.clip.adapter_tensors(),
                base,
            )?;
            written.push("adapter/adapter_config.json".into());
            written.push("adapter/adapter_model.safetensors".into());
        }
        // Dense weights (adapters, if any, folded in).
        None => model.save_merged(output)?,
    }
    // The hf head is transformers' own CLIPForImageClassification (config.json
    // says so). Our cosine head loads in transformers' Auto classes and pipeline
    // through a small modeling file (`trust_remote_code=True`); CLIPModel still
    // loads it.
    if model.kind().transformers_class().is_none() {
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
    if let Some(ops) = run_cfg.and_then(|c| c.data.eval_transforms.as_ref())
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
    let tokenizer_files: Vec<PathBuf> = match tokenizer {
        Some(dir) if dir.is_dir() => TOKENIZER_FILES.iter().map(|f| dir.join(f)).collect(),
        Some(file) => vec![file.to_path_buf()],
        None => Vec::new(),
    };
    for src in tokenizer_files.iter().filter(|p| p.is_file()) {
        let Some(name) = src.file_name() else {
            continue;
        };
        std::fs::copy(src, output.join(name)).map_err(TrainError::io("cannot copy", src))?;
        written.push(name.to_string_lossy().into_owned());
    }
    let card = model_card(model, run_cfg, provenance);
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
/// base model, classes, the validation (and test) figures of the checkpoint
/// exported, its config, and how to load the classifier with transformers (our
/// head on CLIPModel's image features).
fn model_card(model: &ClipClassifier, run_cfg: Option<&RunConfig>, p: &Provenance) -> String {
    let name = run_cfg.map_or("clip-classifier".to_string(), |c| c.run.name.clone());
    let base = run_cfg.and_then(|c| c.model.pretrained.clone());
    let mut s =
        String::from("---\nlibrary_name: transformers\npipeline_tag: image-classification\n");
    s.push_str("tags:\n- clip\n- image-classification\n- clip-finetune\n");
    if let Some(b) = base.as_deref().filter(|b| !Path::new(b).exists()) {
        s.push_str(&format!("base_model: {}\n", quoted(b)));
    }
    let splits: Vec<(&str, &str, &EvalReport)> = [
        p.validation
            .as_ref()
            .map(|(_, v)| ("validation", "Validation", v)),
        p.test.as_ref().map(|(_, t)| ("test", "Test", t)),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !splits.is_empty() {
        // The training data, as the metadata's `dataset` (required there).
        let (dataset, kind) = match run_cfg.and_then(|c| c.data.train.as_ref()) {
            Some(src) => {
                let d = src.describe();
                (d.location, d.kind)
            }
            None => ("unknown".to_string(), "unknown"),
        };
        s.push_str(&format!(
            "model-index:\n- name: {}\n  results:\n",
            quoted(&name)
        ));
        for (split, title, r) in &splits {
            s.push_str(&format!(
                "  - task:\n      type: image-classification\n      name: Image Classification\n    dataset:\n      name: {}\n      type: {}\n      split: {split}\n    metrics:\n    - type: accuracy\n      value: {}\n      name: {title} accuracy\n    - type: f1\n      value: {}\n      name: {title} macro F1\n",
                quoted(&dataset),
                quoted(kind),
                r.accuracy,
                r.macro_f1
            ));
        }
    }
    s.push_str("---\n\n");
    s.push_str(&format!("# {name}\n\n"));
    s.push_str(&format!("A CLIP image classifier {}.\n\n", p.origin));
    s.push_str(&format!("## Classes ({})\n\n", model.class_names().len()));
    for (i, c) in model.class_names().iter().enumerate() {
        s.push_str(&format!("{i}. {c}\n"));
    }
    // One row for the data, one per evaluation set (distribution shifts).
    let table = |title: &str, r: &EvalReport| {
        let row = |name: &str, r: &EvalReport| {
            format!(
                "| {name} | {:.2}% | {:.2}% | {:.2}% | {:.4} | {} |\n",
                r.accuracy * 100.0,
                r.top5 * 100.0,
                r.macro_f1 * 100.0,
                r.loss,
                r.images
            )
        };
        let mut t = format!(
            "\n## {title}\n\n| data | accuracy | top-5 | macro F1 | loss | images |\n|---|---:|---:|---:|---:|---:|\n"
        );
        t.push_str(&row("this data", r));
        for (name, set) in &r.eval_sets {
            t.push_str(&row(&format!("eval set `{name}`"), set));
        }
        t
    };
    if let Some((title, v)) = &p.validation {
        s.push_str(&table(title, v));
    } else if let Some(why) = &p.unmeasured {
        s.push_str(&format!("\n## Validation\n\n{why}\n"));
    }
    if let Some((title, t)) = &p.test {
        s.push_str(&table(title, t));
    }
    match model.kind().transformers_class() {
        Some(class) => s.push_str(&format!("\n## How to load\n\nWith transformers, which knows this model as `{class}`:\n\n```python\nfrom transformers import pipeline\n\nclassifier = pipeline(\"image-classification\", model=\"path/to/this/folder\")\nprint(classifier(\"image.jpg\"))\n```\n\nor `AutoModelForImageClassification.from_pretrained(path)`; or with clip-finetune:\n`train-cli predict --model path/to/this/folder image.jpg`.\n")),
        None => s.push_str(&format!(
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
