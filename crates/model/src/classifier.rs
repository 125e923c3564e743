//! `ClipClassifier`: the vision tower and a linear head, of one of two kinds:
//!
//! - `cosine` (default): `visual_projection`, L2 normalisation and a scaled linear
//!   head, which starts random or from zero-shot text embeddings of prompt
//!   templates (the starting point of WiSE-FT and FLYP); saved with the class names
//!   beside the whole CLIP's weights.
//! - `hf`: transformers' `CLIPForImageClassification`, a linear layer on the mean
//!   of the patch tokens of the vision tower's last hidden state (before
//!   `post_layernorm`); the text tower and projections are not part of it, and it
//!   is saved as transformers saves that class (`vision_model.*` + `classifier.*`).

use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor, nn};

use crate::clip::{ClipModel, l2_normalize};
use crate::config::ClipConfig;
use crate::dropout::dropout;
use crate::error::{ModelError, Result};
use crate::grad_checkpoint::Pass;
use crate::hub::ModelFiles;
use crate::layers::Linear;
use crate::lora::LoraConfig;
use crate::tags::{DecayClass, Module, ParamReport, ParamTable, Scope, Tower};
use crate::tokenizer::ClipTokenizer;
use crate::weights::{assign, read_weights};

/// How the head's weights start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadInit {
    /// PyTorch's `nn.Linear` initialisation.
    #[default]
    Random,
    /// Normalised text embeddings of the templates for each class name, averaged
    /// over templates; scale `exp(logit_scale)`, bias zero.
    ZeroShot,
}

/// Which head sits on the vision tower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadKind {
    /// `scale * (W normalize(visual_projection(pooled)) + b)`: CLIP's own embedding
    /// space, so it can start from zero-shot text embeddings.
    #[default]
    Cosine,
    /// transformers' `CLIPForImageClassification`: `W mean(patch tokens) + b`;
    /// exports load with `AutoModelForImageClassification` and no remote code.
    Hf,
}

/// What each head kind can do: every capability question about a head (can it
/// start zero-shot, be remade by FLYP, be mixed by WiSE-FT, carry text-tower
/// adapters, load in transformers without remote code) is answered here.
impl HeadKind {
    pub fn name(self) -> &'static str {
        match self {
            HeadKind::Cosine => "cosine",
            HeadKind::Hf => "hf",
        }
    }

    /// Whether the head lives in CLIP's joint embedding space (its rows are
    /// comparable with text embeddings): it can start from zero-shot prompts, be
    /// remade from the text tower (FLYP), and be interpolated with a zero-shot
    /// classifier (WiSE-FT).
    pub fn in_embedding_space(self) -> bool {
        match self {
            HeadKind::Cosine => true,
            HeadKind::Hf => false,
        }
    }

    /// Whether the classifier keeps CLIP's text tower and projections (trained,
    /// saved, and there for retrieval and text-tower adapters).
    pub fn keeps_text_tower(self) -> bool {
        match self {
            HeadKind::Cosine => true,
            HeadKind::Hf => false,
        }
    }

    /// transformers' own class for the classifier, when it has one (an export
    /// then loads without remote code).
    pub fn transformers_class(self) -> Option<&'static str> {
        match self {
            HeadKind::Cosine => None,
            HeadKind::Hf => Some("CLIPForImageClassification"),
        }
    }

    /// Whether its logits carry a multiplier (`model.head.scale`).
    pub fn has_scale(self) -> bool {
        match self {
            HeadKind::Cosine => true,
            HeadKind::Hf => false,
        }
    }

    /// Whether it may do without a bias.
    pub fn bias_optional(self) -> bool {
        match self {
            HeadKind::Cosine => true,
            HeadKind::Hf => false,
        }
    }
}

/// The head section of a config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeadConfig {
    pub kind: HeadKind,
    pub init: HeadInit,
    pub bias: bool,
    /// Dropout on the normalised features before the head.
    pub dropout: f64,
    /// Multiplier of the logits; `None` takes `exp(logit_scale)` of the model.
    pub scale: Option<f64>,
    /// Prompt templates for `zero_shot`, `{}` standing for the class name.
    pub templates: Vec<String>,
}

impl Default for HeadConfig {
    fn default() -> Self {
        Self {
            kind: HeadKind::Cosine,
            init: HeadInit::Random,
            bias: true,
            dropout: 0.0,
            scale: None,
            templates: vec!["a photo of a {}.".into()],
        }
    }
}

impl HeadConfig {
    /// Every bad value, each naming its key under `prefix` (`model.head` in a run
    /// config).
    pub fn problems(&self, prefix: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if !(0.0..1.0).contains(&self.dropout) {
            problems.push(format!(
                "`{prefix}.dropout` must be in [0, 1), got {}",
                self.dropout
            ));
        }
        if let Some(s) = self.scale.filter(|s| !(*s > 0.0 && s.is_finite())) {
            problems.push(format!(
                "`{prefix}.scale` must be a positive number, got {s}"
            ));
        }
        if self.init == HeadInit::ZeroShot
            && (self.templates.is_empty() || self.templates.iter().any(|t| !t.contains("{}")))
        {
            problems.push(format!(
                "`{prefix}.templates`: zero_shot needs at least one template, each containing `{{}}`"
            ));
        }
        let head = match self.kind.transformers_class() {
            Some(class) => format!("the {} head (transformers' {class})", self.kind.name()),
            None => format!("the {} head", self.kind.name()),
        };
        if self.init == HeadInit::ZeroShot && !self.kind.in_embedding_space() {
            problems.push(format!(
                "`{prefix}.init = \"zero_shot\"` needs the cosine head: {head} sits on the \
                 vision tower's hidden size, not CLIP's embedding space"
            ));
        }
        if self.scale.is_some() && !self.kind.has_scale() {
            problems.push(format!(
                "`{prefix}.scale`: {head} has no logit scale; remove the key"
            ));
        }
        if !self.bias && !self.kind.bias_optional() {
            problems.push(format!("`{prefix}.bias = false`: {head} always has a bias"));
        }
        problems
    }

    /// Every bad value at once (keys under `model.head`).
    pub fn validate(&self) -> Result<()> {
        ModelError::from_problems("model.head", self.problems("model.head"))
    }
}

/// What is stored in `config.json` beside the CLIP config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredHead {
    #[serde(default)]
    kind: HeadKind,
    bias: bool,
    scale: f64,
    dropout: f64,
    /// The adapters stored beside the weights (unmerged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lora: Option<LoraConfig>,
}

/// CLIP image classifier: `scale * head(dropout(normalize(visual_projection(pooled))))`
/// (cosine) or `head(dropout(mean(patch tokens)))` (hf).
#[derive(Debug)]
pub struct ClipClassifier {
    /// For the hf head, the text tower and projections are built but are not in
    /// `clip.params()`: not trained, loaded or saved.
    pub clip: ClipModel,
    pub head: Linear,
    kind: HeadKind,
    scale: f64,
    dropout: f64,
    class_names: Vec<String>,
}

impl ClipClassifier {
    fn build(
        path: &nn::Path,
        config: &ClipConfig,
        class_names: Vec<String>,
        kind: HeadKind,
        bias: bool,
        dropout: f64,
        scale: Option<f64>,
    ) -> Result<Self> {
        config.validate()?;
        if class_names.is_empty() {
            return Err(ModelError::config(
                "class_names",
                "a classifier needs at least one class",
            ));
        }
        let scope = Scope::new(path.clone());
        let mut clip = ClipModel::build(&scope, config);
        let h = scope
            .tower(Tower::Head)
            .depth(config.vision_config.num_hidden_layers as u32 + 1)
            .module(Module::Head);
        let n = class_names.len() as i64;
        let head = match kind {
            // nn.Linear's initialisation.
            HeadKind::Cosine => {
                let proj = config.projection_dim;
                let bound = (proj as f64).powf(-0.5);
                let h = h.sub("classification_head");
                let init = nn::Init::Uniform {
                    lo: -bound,
                    up: bound,
                };
                Linear {
                    lora: None,
                    weight: h.param("weight", &[n, proj], init, DecayClass::Weight),
                    bias: bias.then(|| h.param("bias", &[n], init, DecayClass::Bias)),
                }
            }
            // transformers' `_init_weights` for CLIPForImageClassification
            // (`initializer_factor` 1, its default).
            HeadKind::Hf => {
                let hidden = config.vision_config.hidden_size;
                let h = h.sub("classifier");
                let stdev = (hidden as f64).powf(-0.5);
                Linear {
                    lora: None,
                    weight: h.param(
                        "weight",
                        &[n, hidden],
                        nn::Init::Randn { mean: 0.0, stdev },
                        DecayClass::Weight,
                    ),
                    bias: Some(h.param("bias", &[n], nn::Init::Const(0.0), DecayClass::Bias)),
                }
            }
        };
        let mut params = scope.into_params();
        if !kind.keeps_text_tower() {
            params.retain(|p| is_hf_classifier_param(&p.name));
        }
        *clip.params_mut() = ParamTable::new(params);
        let scale = match kind.has_scale() {
            true => scale.unwrap_or_else(|| clip.logit_scale_value().exp()),
            false => 1.0,
        };
        Ok(Self {
            clip,
            head,
            kind,
            scale,
            dropout,
            class_names,
        })
    }

    /// A randomly initialised classifier.
    pub fn new(
        path: &nn::Path,
        config: &ClipConfig,
        class_names: Vec<String>,
        head: &HeadConfig,
    ) -> Result<Self> {
        head.validate()?;
        if head.init == HeadInit::ZeroShot {
            return Err(ModelError::config(
                "model.head.init",
                "zero_shot needs pretrained weights and a tokenizer (from_clip)",
            ));
        }
        Self::build(
            path,
            config,
            class_names,
            head.kind,
            head.bias,
            head.dropout,
            head.scale,
        )
    }

    /// A classifier on pretrained CLIP weights, its head initialised as `head.init`
    /// says (`zero_shot` needs the tokenizer); a folder that already holds a head
    /// (a fine-tuned export) gives its CLIP weights only.
    pub fn from_clip(
        path: &nn::Path,
        files: &ModelFiles,
        class_names: Vec<String>,
        head: &HeadConfig,
        tokenizer: Option<&ClipTokenizer>,
    ) -> Result<Self> {
        head.validate()?;
        let config = ClipConfig::from_json_file(&files.config)?;
        let mut model = Self::build(
            path,
            &config,
            class_names,
            head.kind,
            head.bias,
            head.dropout,
            head.scale,
        )?;
        let mut weights = read_weights(&files.weights)?;
        // A folder that already holds a head (a fine-tuned export) gives its CLIP
        // weights: the head is built new, as `head` says.
        weights.retain(|name, _| {
            !name.starts_with("classification_head.") && !name.starts_with("classifier.")
        });
        if !head.kind.keeps_text_tower() {
            // The pretrained CLIP's text tower and projections are not part of it.
            weights.retain(|name, _| is_hf_classifier_param(name));
        }
        assign(model.clip.params(), weights, &files.weights[0], |p| {
            p.tag.tower == Tower::Head
        })?;
        if head.scale.is_none() && head.kind.has_scale() {
            model.scale = model.clip.logit_scale_value().exp();
        }
        if head.init == HeadInit::ZeroShot {
            let tok = tokenizer.ok_or_else(|| {
                ModelError::config(
                    "model.head.init",
                    "zero_shot needs the model's tokenizer.json",
                )
            })?;
            model.init_zero_shot(tok, &head.templates)?;
        }
        Ok(model)
    }

    /// Loads a classifier saved by [`ClipClassifier::save_pretrained`].
    pub fn load(path: &nn::Path, dir: &Path) -> Result<Self> {
        let files = ModelFiles::from_dir(dir)?;
        let text = std::fs::read_to_string(&files.config)
            .map_err(|e| ModelError::io("cannot read", &files.config, e))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| ModelError::ConfigParse {
                path: files.config.clone(),
                source,
            })?;
        let parse = |source| ModelError::ConfigParse {
            path: files.config.clone(),
            source,
        };
        let config: ClipConfig = serde_json::from_value(json.clone()).map_err(parse)?;
        let stored: StoredHead = serde_json::from_value(json.get("clip_classifier").cloned().ok_or_else(|| ModelError::NotFound {
            model: dir.display().to_string(),
            reason: "config.json has no `clip_classifier` section: this is a plain CLIP, not a saved classifier".into(),
        })?)
        .map_err(parse)?;
        let id2label: std::collections::BTreeMap<String, String> = match json.get("id2label") {
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
                ModelError::config(
                    format!("{}: id2label", files.config.display()),
                    format!("must map class ids to names: {e}"),
                )
            })?,
            None => {
                return Err(ModelError::config(
                    format!("{}: id2label", files.config.display()),
                    "is missing: a saved classifier names its classes there (`{\"0\": \"cat\", ...}`)",
                ));
            }
        };
        let mut names: Vec<(usize, String)> = id2label
            .into_iter()
            .map(|(k, v)| k.parse::<usize>().map(|i| (i, v)))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| ModelError::config("id2label", format!("has a non-integer id: {e}")))?;
        names.sort();
        let mut model = Self::build(
            path,
            &config,
            names.into_iter().map(|(_, n)| n).collect(),
            stored.kind,
            stored.bias,
            stored.dropout,
            Some(stored.scale),
        )?;
        if let Some(lora) = &stored.lora {
            model.clip.add_lora(path, lora)?;
        }
        assign(
            model.clip.params(),
            read_weights(&files.weights)?,
            &files.weights[0],
            |_| false,
        )?;
        Ok(model)
    }

    /// Writes the CLIP weights with the head (and unmerged adapters, if any), and a
    /// `config.json` that transformers' `CLIPModel` reads (with `id2label` /
    /// `label2id` and the head's settings).
    pub fn save_pretrained(&self, dir: &Path) -> Result<()> {
        self.save_impl(dir, self.clip.lora().cloned())
    }

    /// Writes the model with its adapters merged into the base weights: a plain
    /// CLIP (plus head) that loads without PEFT. The model itself is unchanged.
    pub fn save_merged(&mut self, dir: &Path) -> Result<()> {
        self.clip.merge_lora();
        let r = self.save_impl(dir, None);
        self.clip.unmerge_lora();
        r
    }

    fn save_impl(&self, dir: &Path, lora: Option<LoraConfig>) -> Result<()> {
        let adapters = lora.is_some();
        let mut json = self.clip.config().to_hf_json();
        if let Some(class) = self.kind.transformers_class() {
            json["architectures"] = serde_json::json!([class]);
        }
        json["id2label"] = self
            .class_names
            .iter()
            .enumerate()
            .map(|(i, n)| (i.to_string(), serde_json::Value::from(n.as_str())))
            .collect();
        json["label2id"] = self
            .class_names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), serde_json::Value::from(i)))
            .collect();
        json["clip_classifier"] = serde_json::to_value(StoredHead {
            kind: self.kind,
            bias: self.head.bias.is_some(),
            scale: self.scale,
            dropout: self.dropout,
            lora,
        })
        .unwrap_or_default();
        self.clip.save_with(dir, json, adapters)
    }

    /// Sets the head to the zero-shot classifier of `templates`.
    pub fn init_zero_shot(
        &mut self,
        tokenizer: &ClipTokenizer,
        templates: &[String],
    ) -> Result<()> {
        if !self.kind.in_embedding_space() {
            return Err(ModelError::config(
                "model.head.init",
                "zero_shot needs the cosine head (`model.head.kind = \"cosine\"`)",
            ));
        }
        let names: Vec<&str> = self.class_names.iter().map(String::as_str).collect();
        let weights = zero_shot_weights(&self.clip, tokenizer, &names, templates)?;
        tch::no_grad(|| -> Result<()> {
            self.head.weight.shallow_clone().f_copy_(&weights)?;
            if let Some(b) = &self.head.bias {
                let _ = b.shallow_clone().zero_();
            }
            Ok(())
        })?;
        self.scale = self.clip.logit_scale_value().exp();
        Ok(())
    }

    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    pub fn kind(&self) -> HeadKind {
        self.kind
    }

    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Sets the logit multiplier (WiSE-FT interpolates it with the weights).
    pub fn set_scale(&mut self, scale: f64) {
        self.scale = scale;
    }

    pub fn params(&self) -> &ParamTable {
        self.clip.params()
    }

    pub fn report(&self) -> ParamReport {
        self.clip.report()
    }

    /// Class logits `[batch, classes]`. With a tape and gradient checkpointing on,
    /// blocks are recomputed in [`GradTape::backward`].
    pub fn forward<'m>(&'m self, pixel_values: &Tensor, pass: Pass<'_, 'm>) -> Result<Tensor> {
        Ok(self.forward_with_embeds(pixel_values, pass)?.0)
    }

    /// The logits and, for the cosine head, the L2-normalised image embeddings
    /// they were computed from (CLIP's `image_embeds`: for retrieval).
    pub fn forward_with_embeds<'m>(
        &'m self,
        pixel_values: &Tensor,
        pass: Pass<'_, 'm>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let train = pass.train;
        let vision = self.clip.vision(
            pixel_values,
            Pass {
                hidden_states: false,
                ..pass
            },
        )?;
        match self.kind {
            HeadKind::Cosine => {
                let features = l2_normalize(&self.clip.visual_projection.forward(&vision.pooled));
                let logits =
                    self.head
                        .forward(&dropout(features.shallow_clone(), self.dropout, train))
                        * self.scale;
                Ok((logits, Some(features)))
            }
            HeadKind::Hf => {
                let tokens =
                    vision
                        .last_hidden_state
                        .narrow(1, 1, vision.last_hidden_state.size()[1] - 1);
                let features = tokens.mean_dim([1i64].as_slice(), false, None::<Kind>);
                Ok((
                    self.head.forward(&dropout(features, self.dropout, train)),
                    None,
                ))
            }
        }
    }
}

/// Whether a parameter belongs to transformers' `CLIPForImageClassification`: the
/// vision tower (its adapters included) and the head, not the text tower, the
/// projections or the logit scale.
fn is_hf_classifier_param(name: &str) -> bool {
    name.starts_with("vision_model.") || name.starts_with("classifier.")
}

/// Zero-shot classifier weights `[classes, projection_dim]`: for each class, the
/// normalised text embeddings of every template, averaged and renormalised.
pub fn zero_shot_weights(
    clip: &ClipModel,
    tokenizer: &ClipTokenizer,
    class_names: &[&str],
    templates: &[String],
) -> Result<Tensor> {
    tokenizer.check_end_of_text(clip.config().text_config.eos_token_id)?;
    tch::no_grad(|| {
        let device = clip.logit_scale.device();
        let mut rows = Vec::with_capacity(class_names.len());
        for name in class_names {
            let prompts: Vec<String> = templates.iter().map(|t| t.replace("{}", name)).collect();
            let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
            let ids = tokenizer.encode(&refs)?.to_device(device);
            let emb = l2_normalize(&clip.text_features(&ids)?.to_kind(Kind::Float));
            rows.push(l2_normalize(&emb.mean_dim(
                [0i64].as_slice(),
                false,
                Kind::Float,
            )));
        }
        Ok(Tensor::stack(&rows, 0))
    })
}
