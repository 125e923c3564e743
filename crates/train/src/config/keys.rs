//! Every config key with its type and one-line meaning: the source of
//! `train-cli config` (`--defaults`, `--explain KEY`) and of the README's key
//! table (a test checks that they agree, and that every key of the schema is
//! here). Defaults come from [`RunConfig::default`], never from this text.

use std::collections::BTreeMap;

use crate::config::RunConfig;

/// One documented key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyDoc {
    /// Dotted, as `--set` takes it.
    pub key: &'static str,
    pub kind: &'static str,
    pub meaning: &'static str,
}

const fn k(key: &'static str, kind: &'static str, meaning: &'static str) -> KeyDoc {
    KeyDoc { key, kind, meaning }
}

/// A source table (`data.train`, `data.val`, `data.test`, `data.retrieval`).
const SOURCE: &str = "table";

/// Every key, section by section.
pub const KEYS: &[KeyDoc] = &[
    // [run]
    k(
        "run.name",
        "string",
        "The run's name: its folder is `run.output_dir/run.name`.",
    ),
    k(
        "run.output_dir",
        "path",
        "The folder that holds run folders.",
    ),
    k(
        "run.seed",
        "integer",
        "Seed of the weights' initialisation, the split, the shuffling and the augmentation.",
    ),
    k(
        "run.device",
        "\"auto\" | \"cpu\" | \"cuda\" | \"cuda:N\"",
        "Where the run computes; `auto` takes the GPU when there is one; a device that is not there is an error.",
    ),
    k(
        "run.overwrite",
        "bool",
        "Replace an existing run folder instead of refusing to touch it.",
    ),
    k(
        "run.threads",
        "integer",
        "libtorch intra-op threads (0 = libtorch's default).",
    ),
    k(
        "run.dist_backend",
        "\"auto\" | \"gloo\" | \"nccl\"",
        "The c10d backend under torchrun / srun (`auto`: Gloo on the CPU, NCCL on CUDA).",
    ),
    k(
        "run.dist_timeout_s",
        "seconds",
        "A collective that does not complete in this time ends every rank with an error naming the failed one.",
    ),
    k(
        "run.ddp_bucket_mb",
        "MB",
        "Gradient bucket size of DDP's Reducer (`bucket_cap_mb`).",
    ),
    k(
        "run.grad_sync",
        "\"reducer\" | \"after_backward\"",
        "Data-parallel gradient synchronisation: DDP's Reducer overlapping the backward, or one all-reduce after it.",
    ),
    k(
        "run.silence_advice",
        "[\"small_data\" | \"high_lr\" | \"gpu_memory\"]",
        "Advice not to warn about at the start of a run: full fine-tuning on under ~1,000 images, a learning rate above ~1e-4 on a pretrained vision tower, no gradient checkpointing on a GPU whose memory the run's estimate (`--dry-run` prints it) exceeds.",
    ),
    // [model]
    k(
        "model.pretrained",
        "string",
        "A hub id (`openai/clip-vit-base-patch32`) or a Hugging Face-layout folder; excludes `model.architecture`.",
    ),
    k(
        "model.architecture",
        "table",
        "Train from random weights with this architecture instead of `model.pretrained`.",
    ),
    k(
        "model.architecture.preset",
        "\"vit-b-32\" | \"vit-b-16\" | \"vit-l-14\" | \"tiny\"",
        "The architecture's starting point.",
    ),
    k(
        "model.architecture.vision",
        "table",
        "Vision tower fields replacing the preset's (transformers' `CLIPVisionConfig` names: `image_size`, `patch_size`, `hidden_size`, ...).",
    ),
    k(
        "model.architecture.text",
        "table",
        "Text tower fields replacing the preset's (transformers' `CLIPTextConfig` names: `vocab_size`, `hidden_size`, ...).",
    ),
    k(
        "model.architecture.projection_dim",
        "integer",
        "Size of the shared image-text embedding.",
    ),
    k(
        "model.tokenizer",
        "path",
        "A `tokenizer.json` for a randomly initialised model's text tower (pretrained models bring their own).",
    ),
    k(
        "model.head.kind",
        "\"cosine\" | \"hf\"",
        "`cosine`: a linear head on normalised image embeddings (zero-shot compatible); `hf`: transformers' `CLIPForImageClassification`.",
    ),
    k(
        "model.head.init",
        "\"random\" | \"zero_shot\"",
        "`zero_shot` starts the head from the text embeddings of the class names in `model.head.templates`.",
    ),
    k("model.head.bias", "bool", "Whether the head has a bias."),
    k(
        "model.head.dropout",
        "float in [0, 1)",
        "Dropout on the features before the head.",
    ),
    k(
        "model.head.scale",
        "float",
        "Multiplier of the cosine head's logits (unset: the model's `exp(logit_scale)`).",
    ),
    k(
        "model.head.templates",
        "[string]",
        "Prompt templates for zero-shot heads and captions, `{}` standing for the class name.",
    ),
    k(
        "model.regularization.attention_dropout",
        "float in [0, 1)",
        "Dropout on the attention weights of both towers.",
    ),
    k(
        "model.regularization.residual_dropout",
        "float in [0, 1)",
        "Dropout on each block's residual branches.",
    ),
    k(
        "model.regularization.drop_path",
        "float in [0, 1)",
        "Stochastic depth: the largest rate, rising linearly over the blocks.",
    ),
    k(
        "model.lora",
        "table",
        "Train LoRA adapters (and the head) instead of the weights; exported as a PEFT adapter.",
    ),
    k("model.lora.r", "integer", "LoRA rank."),
    k(
        "model.lora.alpha",
        "float",
        "LoRA scaling numerator (the update is scaled by `alpha / r`).",
    ),
    k(
        "model.lora.dropout",
        "float in [0, 1)",
        "Dropout on the adapters' input.",
    ),
    k(
        "model.lora.target_modules",
        "[string]",
        "Linear layers that get adapters (`q_proj`, `k_proj`, `v_proj`, `out_proj`, `fc1`, `fc2`).",
    ),
    k(
        "model.lora.towers",
        "[\"vision\" | \"text\"]",
        "Towers whose blocks get adapters.",
    ),
    // [data]
    k(
        "data.train",
        SOURCE,
        "Training source: `{ kind = \"image_folder\", path }` (root/<class>/*.jpg), `{ kind = \"csv\", path, image_column = \"path\", label_column = \"label\", caption_column, delimiter = \",\" }` (image paths relative to the CSV), `{ kind = \"idx\", images, labels, class_names }`, `{ kind = \"webdataset\", path, class_names, caption_extension }` or `{ kind = \"parquet\", path, image_column = \"image\", label_column = \"label\", caption_column, class_names }`.",
    ),
    k(
        "data.val",
        SOURCE,
        "Validation source (as `data.train`); without one, `data.val_fraction` of the training data is split off.",
    ),
    k(
        "data.test",
        SOURCE,
        "A held-out test source, evaluated once at the end with the selected checkpoint (`<run>/test.json`); never used for selection.",
    ),
    k(
        "data.retrieval",
        SOURCE,
        "Image-caption pairs on which every evaluation also measures image <-> text retrieval.",
    ),
    k(
        "data.eval_sets",
        "table of sources",
        "Named evaluation sets (e.g. `{ sketch = { kind = \"image_folder\", path = \"...\" } }`) evaluated at every evaluation beside `data.val`, classes matched by name; reported per set; selection uses one only when `train.checkpoints.metric` names it.",
    ),
    k(
        "data.val_fraction",
        "float in [0, 1)",
        "Share of the training data split off (stratified, by `run.seed`) for validation when `data.val` is not given.",
    ),
    k(
        "data.train_limit",
        "integer",
        "Use only the first N training images (after the split): quick runs.",
    ),
    k(
        "data.val_limit",
        "integer",
        "Use only the first N validation images.",
    ),
    k(
        "data.train_transforms",
        "[table]",
        "The training augmentation, torchvision's ops in order (`{ op = \"random_resized_crop\", size, scale, ratio }`, `random_horizontal_flip`, `color_jitter`, `random_rotation`, `trivial_augment_wide`, `rand_augment`, `random_erasing`, `normalize`, ...); default: the tutorial's.",
    ),
    k(
        "data.eval_transforms",
        "[table]",
        "Evaluation preprocessing (`resize`, `center_crop`, `normalize`); default: CLIP's image processor.",
    ),
    k(
        "data.eval_batch_size",
        "integer",
        "Evaluation batch size (default: twice `data.loader.batch_size`).",
    ),
    k(
        "data.loader.batch_size",
        "integer",
        "Images per micro-batch (per rank).",
    ),
    k(
        "data.loader.shuffle",
        "bool",
        "Shuffle the training data every epoch.",
    ),
    k(
        "data.loader.balanced",
        "bool",
        "Draw classes uniformly (with replacement) instead of the data's mix.",
    ),
    k(
        "data.loader.drop_last",
        "bool",
        "Drop the last incomplete batch of an epoch.",
    ),
    k(
        "data.loader.threads",
        "integer",
        "Decoding and augmentation threads (0 = all cores).",
    ),
    k(
        "data.loader.prefetch",
        "integer",
        "Batches prepared ahead of the training step.",
    ),
    k(
        "data.loader.on_corrupt",
        "\"error\" | \"skip\"",
        "An unreadable image stops the run (naming it), or is replaced and counted.",
    ),
    k(
        "data.loader.max_corrupt_share",
        "float",
        "With `on_corrupt = \"skip\"`: fail once more than this share of the images is unreadable.",
    ),
    k(
        "data.loader.output",
        "\"f32\" | \"u8\"",
        "Batches normalised on the CPU (`f32`) or as bytes normalised on the device (`u8`).",
    ),
    k(
        "data.loader.decode",
        "\"exact\" | \"draft\"",
        "JPEG decoding at full size (as PIL's) or at a reduced scale when the pipeline shrinks the image anyway.",
    ),
    k(
        "data.loader.exif_orientation",
        "\"ignore\" | \"apply\"",
        "Images as stored (PIL, torchvision) or turned upright by their EXIF orientation (transformers' `load_image`).",
    ),
    k(
        "data.loader.max_image_pixels",
        "integer",
        "An image whose header says it has more pixels is refused before decoding, naming the file (a small file can hold a huge image); default PIL's decompression-bomb threshold, 0 for no limit.",
    ),
    k(
        "data.loader.mix.mixup_alpha",
        "float",
        "MixUp's Beta parameter (0 = off; MixUp / CutMix are off unless an alpha is set).",
    ),
    k(
        "data.loader.mix.cutmix_alpha",
        "float",
        "CutMix's Beta parameter (0 = off).",
    ),
    k(
        "data.loader.mix.prob",
        "float in [0, 1]",
        "Probability that a batch is mixed at all.",
    ),
    k(
        "data.loader.mix.switch_prob",
        "float in [0, 1]",
        "With both on: the probability of CutMix rather than MixUp.",
    ),
    k(
        "data.loader.mix.label_smoothing",
        "float in [0, 1)",
        "Label smoothing folded into the mixed targets.",
    ),
    // [optim]
    k(
        "optim.lr",
        "float",
        "Base learning rate (the top vision block's under LLRD).",
    ),
    k(
        "optim.weight_decay",
        "float",
        "AdamW's decoupled weight decay (not on biases, norms, embeddings under `no_decay = \"auto\"`).",
    ),
    k("optim.betas", "[float, float]", "AdamW's betas."),
    k("optim.eps", "float", "AdamW's epsilon."),
    k("optim.amsgrad", "bool", "AdamW's AMSGrad variant."),
    k(
        "optim.no_decay",
        "\"auto\" | [string]",
        "Parameters without weight decay: `auto` (biases, norms, embeddings, logit scale) or name patterns.",
    ),
    k(
        "optim.lr_policy",
        "table",
        "How groups get their LR: `{ kind = \"llrd\", decay, head_lr }` (layer-wise decay), `{ kind = \"tutorial_llrd\", decay }`, `{ kind = \"discriminative\", bottom, middle, top, head }` or `{ kind = \"uniform\", head_lr }`.",
    ),
    k(
        "optim.frozen_towers",
        "[\"vision\" | \"text\" | \"shared\"]",
        "Towers never trained (by default the text tower and the logit scale).",
    ),
    k(
        "optim.schedule.kind",
        "\"cosine\" | \"linear\" | \"constant\"",
        "The LR schedule after warmup (transformers' `get_*_schedule_with_warmup`).",
    ),
    k(
        "optim.schedule.warmup",
        "float | integer | table",
        "Linear warmup: a fraction of the run (`0.1`, rounded up), whole steps (`500`), or `{ fraction, round = \"down\" }`.",
    ),
    k(
        "optim.schedule.min_lr_ratio",
        "float in [0, 1]",
        "Cosine only: the floor the LR decays to, as a share of the base LR.",
    ),
    k(
        "optim.max_grad_norm",
        "float",
        "Clip the global gradient norm to this value (0 disables).",
    ),
    k(
        "optim.scaler.init_scale",
        "float",
        "fp16 GradScaler: the starting loss scale.",
    ),
    k(
        "optim.scaler.growth_factor",
        "float",
        "fp16 GradScaler: the scale's growth after `growth_interval` good steps.",
    ),
    k(
        "optim.scaler.backoff_factor",
        "float",
        "fp16 GradScaler: the scale's cut after an overflow.",
    ),
    k(
        "optim.scaler.growth_interval",
        "integer",
        "fp16 GradScaler: good steps before the scale grows.",
    ),
    // [train]
    k("train.epochs", "integer", "Passes over the training data."),
    k(
        "train.max_steps",
        "integer",
        "Stop after this many optimizer steps instead (the schedule spans them).",
    ),
    k(
        "train.grad_accum",
        "integer",
        "Micro-batches per optimizer step.",
    ),
    k(
        "train.precision",
        "\"fp32\" | \"bf16\" | \"fp16\"",
        "Autocast precision of forward and backward (fp16 with the GradScaler).",
    ),
    k(
        "train.precision_on_cpu",
        "\"fp32\" | \"bf16\" | \"fp16\"",
        "The precision used instead when the run lands on the CPU.",
    ),
    k(
        "train.tf32",
        "bool",
        "CUDA: let fp32 matmuls use TF32 tensor cores.",
    ),
    k(
        "train.gradient_checkpointing",
        "bool",
        "Recompute block activations in the backward to save memory.",
    ),
    k(
        "train.label_smoothing",
        "float in [0, 1)",
        "Label smoothing of the cross-entropy.",
    ),
    k(
        "train.unfreeze",
        "table",
        "What trains when: `{ kind = \"all\" }`, `{ kind = \"head_only\" }`, `{ kind = \"progressive\", min_blocks, open_post_layers = false }` (the top vision blocks open epoch by epoch, as the tutorial; `open_post_layers` also trains the post-layernorm and projection once a block is open) or `{ kind = \"lp_ft\", probe_epochs }` (linear probe, then everything).",
    ),
    k(
        "train.ema",
        "table",
        "Keep an exponential moving average of the weights (evaluated and exportable with `--ema`).",
    ),
    k(
        "train.ema.decay",
        "float",
        "The EMA's decay per optimizer step.",
    ),
    k(
        "train.eval_every_steps",
        "integer",
        "Also evaluate every N optimizer steps (besides each epoch's end).",
    ),
    k(
        "train.log_every_steps",
        "integer",
        "A step line (console, metrics.jsonl, trackers) every N optimizer steps.",
    ),
    k(
        "train.early_stopping",
        "table",
        "Stop when `metric` has not improved by `min_delta` for `patience` evaluations.",
    ),
    k(
        "train.early_stopping.metric",
        "\"accuracy\" | \"top5\" | \"loss\" | \"mean_recall\" | \"eval_sets.NAME.accuracy\"",
        "What early stopping watches: a figure on `data.val`, or on one of `data.eval_sets` (`eval_sets.NAME.` + `accuracy`, `top5` or `loss`).",
    ),
    k(
        "train.early_stopping.patience",
        "integer",
        "Evaluations without improvement before stopping.",
    ),
    k(
        "train.early_stopping.min_delta",
        "float",
        "The least change that counts as an improvement.",
    ),
    k(
        "train.checkpoints.keep_last",
        "integer",
        "The most recent N checkpoints kept (at least 1: resuming needs it).",
    ),
    k(
        "train.checkpoints.keep_best",
        "integer",
        "The best K checkpoints by `metric` kept besides.",
    ),
    k(
        "train.checkpoints.metric",
        "\"accuracy\" | \"top5\" | \"loss\" | \"mean_recall\" | \"eval_sets.NAME.accuracy\"",
        "What selects the best checkpoint (the one exports, `eval` and the test set use): a figure on `data.val`, or on one of `data.eval_sets` (`eval_sets.NAME.` + `accuracy`, `top5` or `loss`), e.g. to select for a target distribution.",
    ),
    k(
        "train.checkpoints.at_every_evaluation",
        "bool",
        "Write a checkpoint at every evaluation, mid-epoch ones (`train.eval_every_steps`) included, so that the best evaluation can be the selected checkpoint.",
    ),
    k(
        "train.checkpoints.every_steps",
        "integer",
        "Also write a checkpoint every N optimizer steps (besides each epoch's end).",
    ),
    k(
        "train.report_to",
        "[\"tensorboard\" | \"mlflow\"]",
        "Trackers that get the step and evaluation figures besides metrics.jsonl: TensorBoard event files in the run folder; an MLflow run in the file store or on the tracking server `MLFLOW_TRACKING_URI` names (default `./mlruns`; `http://host:5000` through the REST API; experiment `MLFLOW_EXPERIMENT_NAME`).",
    ),
    k(
        "train.objective",
        "\"cross_entropy\" | \"contrastive\"",
        "What training minimises: the classifier's cross-entropy, or CLIP's contrastive loss on captions (FLYP).",
    ),
    // [compare]
    k(
        "compare.methods",
        "[string]",
        "The rows of `train-cli compare`, in order: `zero_shot`, `linear_probe`, `lora_r8`, `lora_r16`, `full`, `wise_ft` (after `full`), `flyp`, and `soup` (the uniform and greedy soups of the training rows before it; not in the default list).",
    ),
    k(
        "compare.lora_lr",
        "float",
        "Base LR of the LoRA rows (default 10 x `optim.lr`).",
    ),
    k(
        "compare.probe_lr",
        "float",
        "Head LR of the linear probe (default the config's head LR).",
    ),
    k(
        "compare.wise_alphas",
        "[float]",
        "WiSE-FT mixing coefficients of the `wise_ft` row.",
    ),
    k(
        "compare.templates",
        "[string]",
        "Prompt templates of the zero-shot classifier.",
    ),
];

/// The key `key` (exact), or the keys under it (`data.loader` lists its keys).
pub fn explain(key: &str) -> Vec<KeyDoc> {
    let key = key.trim();
    let exact: Vec<KeyDoc> = KEYS.iter().filter(|d| d.key == key).copied().collect();
    if !exact.is_empty() {
        return exact;
    }
    let prefix = format!("{key}.");
    KEYS.iter()
        .filter(|d| d.key.starts_with(&prefix))
        .copied()
        .collect()
}

/// The keys a command-line flag that does not exist may have meant: `--epochs`,
/// `--batch-size`, `--lr=3e-4` or `--train.epochs` name `train.epochs`,
/// `data.loader.batch_size`, `optim.lr` and `train.epochs` (the whole key, or
/// its last part with `-` for `_`).
pub fn keys_for_flag(flag: &str) -> Vec<&'static str> {
    let name = flag.trim_start_matches('-');
    let name = name
        .split_once('=')
        .map_or(name, |(n, _)| n)
        .replace('-', "_");
    if name.is_empty() {
        return Vec::new();
    }
    KEYS.iter()
        .map(|d| d.key)
        .filter(|k| *k == name || k.rsplit('.').next() == Some(name.as_str()))
        .collect()
}

/// Every default of [`RunConfig::default`] by dotted key (tables flattened, but
/// for the documented table keys such as `optim.lr_policy`).
pub fn defaults() -> BTreeMap<String, toml::Value> {
    super::flatten_toml(&RunConfig::default().to_toml(), &|key| {
        KEYS.iter().any(|d| d.key == key)
    })
}

/// A value as one line of TOML.
fn inline(v: &toml::Value) -> String {
    match v {
        toml::Value::Table(t) => {
            let fields: Vec<String> = t
                .iter()
                .map(|(k, v)| format!("{k} = {}", inline(v)))
                .collect();
            format!("{{ {} }}", fields.join(", "))
        }
        toml::Value::Array(a) => {
            format!("[{}]", a.iter().map(inline).collect::<Vec<_>>().join(", "))
        }
        other => other.to_string(),
    }
}

/// The default of `key` as TOML, when it has one.
pub fn default_of(key: &str) -> Option<String> {
    defaults().get(key).map(inline)
}

/// Every key as a TOML file users can start from: each table once, each key
/// with its type and meaning above it and its default (keys without one, and
/// tables none of whose keys has one, commented out).
pub fn defaults_toml() -> String {
    let mut s = String::from(
        "# Every key of a run config with its default (train-cli config --defaults).\n\
         # Keys without a default are commented out; `model.pretrained` or\n\
         # `model.architecture`, and `data.train`, are required.\n",
    );
    let mut tables: Vec<(&str, Vec<&KeyDoc>)> = Vec::new();
    for d in KEYS {
        let table = d.key.rsplit_once('.').map_or("", |(t, _)| t);
        match tables.iter_mut().find(|(t, _)| *t == table) {
            Some((_, keys)) => keys.push(d),
            None => tables.push((table, vec![d])),
        }
    }
    for (table, keys) in tables {
        let set = keys.iter().any(|d| default_of(d.key).is_some());
        s.push_str(&format!("\n{}[{table}]\n", if set { "" } else { "# " }));
        for d in keys {
            let name = d.key.rsplit_once('.').map_or(d.key, |(_, n)| n);
            s.push_str(&format!("# {} ({})\n", d.meaning, d.kind));
            match default_of(d.key) {
                Some(v) => s.push_str(&format!("{name} = {v}\n")),
                None => s.push_str(&format!("# {name} =\n")),
            }
        }
    }
    s
}

/// The README's key table (Markdown).
pub fn markdown_table() -> String {
    let mut s = String::from("| key | type | default | meaning |\n|---|---|---|---|\n");
    let cell = |t: &str| t.replace('|', "\\|");
    for d in KEYS {
        s.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            d.key,
            cell(d.kind),
            default_of(d.key).map_or("—".to_string(), |v| format!("`{}`", cell(&v))),
            cell(d.meaning)
        ));
    }
    s
}

#[cfg(test)]
mod tests {

    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn flags_name_the_config_keys_they_meant() {
        assert_eq!(super::keys_for_flag("--epochs"), ["train.epochs"]);
        assert_eq!(
            super::keys_for_flag("--batch-size=64"),
            ["data.loader.batch_size"]
        );
        assert_eq!(super::keys_for_flag("--train.epochs"), ["train.epochs"]);
        assert_eq!(super::keys_for_flag("--lr"), ["optim.lr"]);
        assert!(super::keys_for_flag("--nonsense").is_empty());
        assert!(super::keys_for_flag("--").is_empty());
    }

    /// The TOML of `--defaults` is a config that loads (with the required keys
    /// added) and gives the defaults back.
    #[test]
    fn the_defaults_file_loads_as_the_default_config() {
        let text = defaults_toml().replace(
            "[run]\n",
            "[model.architecture]\npreset = \"tiny\"\n[data.train]\nkind = \"image_folder\"\npath = \"x\"\n[run]\n",
        );
        let cfg = RunConfig::from_toml(&text, "defaults.toml", &[]).unwrap();
        let mut want = RunConfig::default();
        want.model.architecture = cfg.model.architecture.clone();
        want.data.train = cfg.data.train.clone();
        assert_eq!(cfg, want);
    }

    #[test]
    fn explain_finds_a_key_or_the_keys_under_it() {
        let one = explain("train.max_steps");
        assert_eq!(one.len(), 1);
        assert!(one[0].meaning.contains("optimizer steps"));
        let loader = explain("data.loader");
        assert!(loader.len() > 10 && loader.iter().all(|d| d.key.starts_with("data.loader.")));
        assert!(explain("data.nope").is_empty());
        assert_eq!(default_of("optim.betas").as_deref(), Some("[0.9, 0.999]"));
    }
}
