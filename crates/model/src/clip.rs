//! The joint CLIP model: both towers, their projections and `logit_scale`.

use std::collections::BTreeMap;
use std::path::Path;

use tch::{Kind, Tensor, nn};

use crate::config::ClipConfig;
use crate::encoder::Regularization;
use crate::error::{ModelError, Result};
use crate::grad_checkpoint::Pass;
use crate::hub::ModelFiles;
use crate::layers::Linear;
use crate::lora::{self, LoraConfig};
use crate::tags::{DecayClass, Module, Param, ParamReport, ParamTable, Scope, Tower};
use crate::text::{TextOutput, TextTransformer};
use crate::vision::{VisionOutput, VisionTransformer};
use crate::weights::{assign, read_weights, write_atomic, write_safetensors};

/// What the joint model computes, as transformers' `CLIPOutput`.
#[derive(Debug)]
pub struct ClipOutput {
    /// Projected, L2-normalised image embeddings `[images, projection_dim]`.
    pub image_embeds: Tensor,
    /// Projected, L2-normalised text embeddings `[texts, projection_dim]`.
    pub text_embeds: Tensor,
    /// `exp(logit_scale) * image_embeds @ text_embeds^T`.
    pub logits_per_image: Tensor,
    /// The transpose of `logits_per_image`.
    pub logits_per_text: Tensor,
    pub vision: VisionOutput,
    pub text: TextOutput,
}

/// CLIP with every tensor named as its Hugging Face key.
#[derive(Debug)]
pub struct ClipModel {
    pub vision_model: VisionTransformer,
    pub text_model: TextTransformer,
    pub visual_projection: Linear,
    pub text_projection: Linear,
    pub logit_scale: Tensor,
    config: ClipConfig,
    params: ParamTable,
    regularization: Regularization,
    gradient_checkpointing: bool,
    lora: Option<LoraConfig>,
}

/// Divides each row by its L2 norm.
pub fn l2_normalize(x: &Tensor) -> Tensor {
    x / x.norm_scalaropt_dim(2.0, [-1], true)
}

impl ClipModel {
    /// A randomly initialised CLIP (transformers' initialisation) in `path`'s VarStore.
    pub fn new(path: &nn::Path, config: &ClipConfig) -> Result<Self> {
        config.validate()?;
        let scope = Scope::new(path.clone());
        let mut model = Self::build(&scope, config);
        model.params = ParamTable::new(scope.into_params());
        Ok(model)
    }

    /// Builds into an existing scope (whose owner collects the parameters).
    pub(crate) fn build(scope: &Scope, config: &ClipConfig) -> Self {
        let (v, t) = (&config.vision_config, &config.text_config);
        let vision_model = VisionTransformer::new(&scope.sub("vision_model"), v);
        let text_model = TextTransformer::new(&scope.sub("text_model"), t);
        let vp = scope
            .tower(Tower::Vision)
            .depth(v.num_hidden_layers as u32 + 1)
            .module(Module::Projection);
        let tp = scope
            .tower(Tower::Text)
            .depth(t.num_hidden_layers as u32 + 1)
            .module(Module::Projection);
        Self {
            visual_projection: Linear::new(
                &vp.sub("visual_projection"),
                v.hidden_size,
                config.projection_dim,
                false,
                (v.hidden_size as f64).powf(-0.5),
            ),
            text_projection: Linear::new(
                &tp.sub("text_projection"),
                t.hidden_size,
                config.projection_dim,
                false,
                (t.hidden_size as f64).powf(-0.5),
            ),
            logit_scale: scope
                .tower(Tower::Shared)
                .depth(0)
                .module(Module::LogitScale)
                .param(
                    "logit_scale",
                    &[],
                    nn::Init::Const(config.logit_scale_init_value),
                    DecayClass::LogitScale,
                ),
            vision_model,
            text_model,
            config: config.clone(),
            params: ParamTable::default(),
            regularization: Regularization::default(),
            gradient_checkpointing: false,
            lora: None,
        }
    }

    pub(crate) fn params_mut(&mut self) -> &mut ParamTable {
        &mut self.params
    }

    /// Attaches LoRA adapters (in `root`'s VarStore, where the model lives) to the
    /// chosen layers of the chosen towers; returns the adapter parameter count.
    /// Adapters start as PEFT's (B = 0), so the model's outputs do not change.
    pub fn add_lora(&mut self, root: &nn::Path, cfg: &LoraConfig) -> Result<i64> {
        cfg.validate()?;
        if self.lora.is_some() {
            return Err(ModelError::config(
                "model.lora",
                "the model already has adapters",
            ));
        }
        let scope = Scope::new(root.clone());
        for (tower, prefix, layers) in [
            (
                Tower::Vision,
                "vision_model",
                &mut self.vision_model.encoder.layers,
            ),
            (
                Tower::Text,
                "text_model",
                &mut self.text_model.encoder.layers,
            ),
        ] {
            if cfg.towers.contains(&tower) {
                lora::attach(&scope, tower, prefix, layers, cfg)?;
            }
        }
        let added = scope.into_params();
        let count = added.iter().map(Param::numel).sum();
        self.params.extend(added);
        self.lora = Some(cfg.clone());
        Ok(count)
    }

    /// The adapters' settings, when the model has adapters.
    pub fn lora(&self) -> Option<&LoraConfig> {
        self.lora.as_ref()
    }

    fn all_linears_mut(&mut self) -> impl Iterator<Item = &mut Linear> {
        self.vision_model
            .encoder
            .layers
            .iter_mut()
            .chain(self.text_model.encoder.layers.iter_mut())
            .flat_map(|l| l.linears_mut())
    }

    /// Folds every adapter into its base weight (forward then ignores adapters).
    pub fn merge_lora(&mut self) {
        self.all_linears_mut().for_each(Linear::merge);
    }

    /// Undoes [`ClipModel::merge_lora`], restoring the base weights bit for bit.
    pub fn unmerge_lora(&mut self) {
        self.all_linears_mut().for_each(Linear::unmerge);
    }

    /// `(name, tensor)` of every adapter matrix.
    pub fn adapter_tensors(&self) -> Vec<(String, Tensor)> {
        self.params
            .select(|t| t.module == Module::Adapter)
            .map(|p| (p.name.clone(), p.tensor.shallow_clone()))
            .collect()
    }

    /// Loads a model from a folder or hub id (see [`ModelFiles::resolve`]).
    pub fn from_pretrained(path: &nn::Path, spec: &str) -> Result<Self> {
        Self::from_files(path, &ModelFiles::resolve(spec)?)
    }

    /// Loads `config.json` and the weights; every parameter must be present.
    pub fn from_files(path: &nn::Path, files: &ModelFiles) -> Result<Self> {
        let config = ClipConfig::from_json_file(&files.config)?;
        let model = Self::new(path, &config)?;
        let tensors = read_weights(&files.weights)?;
        assign(&model.params, tensors, &files.weights[0], |_| false)?;
        Ok(model)
    }

    /// Writes `config.json` and `model.safetensors` in Hugging Face's layout.
    pub fn save_pretrained(&self, dir: &Path) -> Result<()> {
        self.save_with(dir, self.config.to_hf_json(), true)
    }

    /// Writes the weights (adapters only when `adapters`) and `config_json`.
    pub(crate) fn save_with(
        &self,
        dir: &Path,
        config_json: serde_json::Value,
        adapters: bool,
    ) -> Result<()> {
        let tensors: Vec<(String, Tensor)> = self
            .params
            .iter()
            .filter(|p| adapters || p.tag.module != Module::Adapter)
            .map(|p| (p.name.clone(), p.tensor.shallow_clone()))
            .collect();
        write_safetensors(&dir.join("model.safetensors"), &tensors, BTreeMap::new())?;
        let text = serde_json::to_string_pretty(&config_json).map_err(|source| {
            ModelError::ConfigParse {
                path: dir.join("config.json"),
                source,
            }
        })?;
        write_atomic(&dir.join("config.json"), text.as_bytes())
    }

    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    /// The tagged parameters (names equal Hugging Face keys).
    pub fn params(&self) -> &ParamTable {
        &self.params
    }

    pub fn report(&self) -> ParamReport {
        self.params.report()
    }

    pub fn regularization(&self) -> Regularization {
        self.regularization
    }

    /// Sets dropout and drop-path (all off by default).
    pub fn set_regularization(&mut self, reg: Regularization) -> Result<()> {
        reg.validate("model.regularization.")?;
        self.vision_model
            .encoder
            .set_regularization(&reg, self.config.vision_config.attention_dropout);
        self.text_model
            .encoder
            .set_regularization(&reg, self.config.text_config.attention_dropout);
        self.regularization = reg;
        Ok(())
    }

    /// Switches per-block gradient checkpointing for [`ClipModel::forward_train`]-style
    /// passes (the `tape` argument); changes memory, not results.
    pub fn set_gradient_checkpointing(&mut self, on: bool) {
        self.gradient_checkpointing = on;
    }

    pub fn gradient_checkpointing(&self) -> bool {
        self.gradient_checkpointing
    }

    /// The vision tower's output. Pass a tape to checkpoint blocks when gradient
    /// checkpointing is on (then call [`GradTape::backward`] instead of `backward`).
    pub fn vision<'m>(&'m self, pixel_values: &Tensor, pass: Pass<'_, 'm>) -> Result<VisionOutput> {
        let (train, with_hidden) = (pass.train, pass.hidden_states);
        let tape = pass.tape.filter(|_| self.gradient_checkpointing);
        self.vision_model
            .forward(pixel_values, train, tape, with_hidden)
    }

    /// The text tower's output.
    pub fn text<'m>(&'m self, input_ids: &Tensor, pass: Pass<'_, 'm>) -> Result<TextOutput> {
        let (train, with_hidden) = (pass.train, pass.hidden_states);
        let tape = pass.tape.filter(|_| self.gradient_checkpointing);
        self.text_model.forward(input_ids, train, tape, with_hidden)
    }

    /// Projected (not normalised) image features, as `get_image_features`.
    pub fn image_features(&self, pixel_values: &Tensor) -> Result<Tensor> {
        Ok(self
            .visual_projection
            .forward(&self.vision(pixel_values, Pass::eval())?.pooled))
    }

    /// Projected (not normalised) text features, as `get_text_features`.
    pub fn text_features(&self, input_ids: &Tensor) -> Result<Tensor> {
        Ok(self
            .text_projection
            .forward(&self.text(input_ids, Pass::eval())?.pooled))
    }

    /// The full forward of transformers' `CLIPModel`.
    pub fn forward<'m>(
        &'m self,
        pixel_values: &Tensor,
        input_ids: &Tensor,
        mut pass: Pass<'_, 'm>,
    ) -> Result<ClipOutput> {
        let vision = self.vision(
            pixel_values,
            Pass {
                tape: pass.tape.as_deref_mut(),
                ..pass
            },
        )?;
        let text = self.text(input_ids, pass)?;
        let image_embeds = l2_normalize(&self.visual_projection.forward(&vision.pooled));
        let text_embeds = l2_normalize(&self.text_projection.forward(&text.pooled));
        let logits_per_text = text_embeds.matmul(&image_embeds.tr()) * self.logit_scale.exp();
        Ok(ClipOutput {
            logits_per_image: logits_per_text.tr(),
            logits_per_text,
            image_embeds,
            text_embeds,
            vision,
            text,
        })
    }

    /// Scalar parameters per tower as transformers counts them (`vision_model.*`,
    /// `text_model.*`), i.e. without the projections.
    pub fn tower_size(&self, tower: Tower) -> i64 {
        self.params
            .count(|t| t.tower == tower && t.module != Module::Projection)
    }

    /// `logit_scale` as a number (the logits are multiplied by its exp).
    pub fn logit_scale_value(&self) -> f64 {
        self.logit_scale.to_kind(Kind::Double).double_value(&[])
    }
}
