//! LoRA adapters (Hu et al. 2021) as PEFT implements them: on a linear layer
//! `y = x W^T + b`, add `scaling * dropout(x) A^T B^T` with `A` `[r, in]`
//! Kaiming-uniform (PEFT's `kaiming_uniform_(a=sqrt(5))`, i.e. U(-1/sqrt(in),
//! 1/sqrt(in))), `B` `[out, r]` zero and `scaling = alpha / r`. Adapters are
//! tagged `Module::Adapter` at their block's depth; merging folds them into `W`
//! (keeping the original for an exact unmerge).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{Tensor, nn};

use crate::error::{ModelError, Result};
use crate::layers::Linear;
use crate::tags::{DecayClass, Module, Scope, Tower};

/// A linear layer of a block that can carry an adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraTarget {
    QProj,
    KProj,
    VProj,
    OutProj,
    Fc1,
    Fc2,
}

impl LoraTarget {
    pub fn name(self) -> &'static str {
        match self {
            LoraTarget::QProj => "q_proj",
            LoraTarget::KProj => "k_proj",
            LoraTarget::VProj => "v_proj",
            LoraTarget::OutProj => "out_proj",
            LoraTarget::Fc1 => "fc1",
            LoraTarget::Fc2 => "fc2",
        }
    }

    fn parent(self) -> &'static str {
        match self {
            LoraTarget::Fc1 | LoraTarget::Fc2 => "mlp",
            _ => "self_attn",
        }
    }
}

/// `[model.lora]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraConfig {
    pub r: i64,
    pub alpha: f64,
    pub dropout: f64,
    pub target_modules: Vec<LoraTarget>,
    /// Towers whose blocks get adapters (`vision`, `text`).
    pub towers: Vec<Tower>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            r: 8,
            alpha: 16.0,
            dropout: 0.0,
            target_modules: vec![LoraTarget::QProj, LoraTarget::VProj],
            towers: vec![Tower::Vision],
        }
    }
}

impl LoraConfig {
    /// Every bad value, each naming its key under `prefix` (`model.lora` in a run
    /// config).
    pub fn problems(&self, prefix: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let mut bad =
            |key: &str, reason: String| problems.push(format!("`{prefix}.{key}` {reason}"));
        if self.r < 1 {
            bad("r", format!("must be at least 1, got {}", self.r));
        }
        if !(self.alpha > 0.0 && self.alpha.is_finite()) {
            bad("alpha", format!("must be positive, got {}", self.alpha));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            bad(
                "dropout",
                format!("must be in [0, 1), got {}", self.dropout),
            );
        }
        if self.target_modules.is_empty() {
            bad("target_modules", "is empty".into());
        }
        if self.towers.is_empty()
            || self
                .towers
                .iter()
                .any(|t| !matches!(t, Tower::Vision | Tower::Text))
        {
            bad(
                "towers",
                format!("must list `vision` and/or `text`, got {:?}", self.towers),
            );
        }
        problems
    }

    /// Every bad value at once (keys under `model.lora`).
    pub fn validate(&self) -> Result<()> {
        ModelError::from_problems("model.lora", self.problems("model.lora"))
    }

    pub fn scaling(&self) -> f64 {
        self.alpha / self.r as f64
    }

    /// PEFT's `target_modules` as a regular expression over module names, so only
    /// the chosen towers match.
    pub fn peft_target_regex(&self) -> String {
        let towers: Vec<&str> = self
            .towers
            .iter()
            .map(|t| {
                if *t == Tower::Text {
                    "text_model"
                } else {
                    "vision_model"
                }
            })
            .collect();
        let mods: Vec<&str> = self.target_modules.iter().map(|m| m.name()).collect();
        format!(
            r"({})\.encoder\.layers\.\d+\.(self_attn|mlp)\.({})",
            towers.join("|"),
            mods.join("|")
        )
    }
}

/// The adapter of one linear layer.
#[derive(Debug)]
pub struct LoraAdapter {
    pub a: Tensor,
    pub b: Tensor,
    pub scaling: f64,
    pub dropout: f64,
    /// The weight before merging, while merged.
    original: Option<Tensor>,
}

impl LoraAdapter {
    pub(crate) fn new(scope: &Scope, in_dim: i64, out_dim: i64, cfg: &LoraConfig) -> Self {
        let bound = (in_dim as f64).powf(-0.5);
        let a = scope.sub("lora_A").param(
            "weight",
            &[cfg.r, in_dim],
            nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
            DecayClass::Weight,
        );
        let b = scope.sub("lora_B").param(
            "weight",
            &[out_dim, cfg.r],
            nn::Init::Const(0.0),
            DecayClass::Weight,
        );
        Self {
            a,
            b,
            scaling: cfg.scaling(),
            dropout: cfg.dropout,
            original: None,
        }
    }

    pub fn is_merged(&self) -> bool {
        self.original.is_some()
    }

    /// The adapter's term, zero while merged.
    pub(crate) fn delta(&self, x: &Tensor, train: bool) -> Option<Tensor> {
        if self.is_merged() {
            return None;
        }
        let x = crate::layers::dropout(x.shallow_clone(), self.dropout, train);
        Some(x.matmul(&self.a.tr()).matmul(&self.b.tr()) * self.scaling)
    }

    pub(crate) fn merge(&mut self, weight: &Tensor) {
        if self.is_merged() {
            return;
        }
        tch::no_grad(|| {
            self.original = Some(weight.detach().copy());
            let delta = self.b.matmul(&self.a) * self.scaling;
            let _ = weight.shallow_clone().g_add_(&delta.to_kind(weight.kind()));
        });
    }

    pub(crate) fn unmerge(&mut self, weight: &Tensor) {
        if let Some(orig) = self.original.take() {
            tch::no_grad(|| weight.shallow_clone().copy_(&orig));
        }
    }
}

/// Adds adapters to every chosen layer of `layers` (an encoder's blocks).
pub(crate) fn attach(
    root: &Scope,
    tower: Tower,
    prefix: &str,
    layers: &mut [crate::encoder::EncoderLayer],
    cfg: &LoraConfig,
) -> Result<()> {
    for (i, layer) in layers.iter_mut().enumerate() {
        let s = root
            .sub(prefix)
            .sub("encoder")
            .sub("layers")
            .sub(i)
            .tower(tower)
            .depth(i as u32 + 1)
            .module(Module::Adapter);
        for &target in &cfg.target_modules {
            let lin: &mut Linear = match target {
                LoraTarget::QProj => &mut layer.self_attn.q_proj,
                LoraTarget::KProj => &mut layer.self_attn.k_proj,
                LoraTarget::VProj => &mut layer.self_attn.v_proj,
                LoraTarget::OutProj => &mut layer.self_attn.out_proj,
                LoraTarget::Fc1 => &mut layer.fc1,
                LoraTarget::Fc2 => &mut layer.fc2,
            };
            if lin.lora.is_some() {
                return Err(ModelError::config(
                    "model.lora",
                    format!(
                        "{prefix} block {i} {} already has an adapter",
                        target.name()
                    ),
                ));
            }
            let (out_dim, in_dim) = lin.weight.size2().map_err(ModelError::Torch)?;
            let scope = s.sub(target.parent()).sub(target.name());
            lin.lora = Some(LoraAdapter::new(&scope, in_dim, out_dim, cfg));
        }
    }
    Ok(())
}

/// `adapter_config.json` as PEFT writes it.
pub fn peft_adapter_config(cfg: &LoraConfig, base_model: Option<&str>) -> serde_json::Value {
    serde_json::json!({
        "peft_type": "LORA",
        "task_type": null,
        "base_model_name_or_path": base_model,
        "r": cfg.r,
        "lora_alpha": cfg.alpha,
        "lora_dropout": cfg.dropout,
        "target_modules": cfg.peft_target_regex(),
        "bias": "none",
        "fan_in_fan_out": false,
        "init_lora_weights": true,
        "inference_mode": true,
        "modules_to_save": null,
        "layers_to_transform": null,
        "layers_pattern": null,
        "rank_pattern": {},
        "alpha_pattern": {},
        "use_rslora": false,
        "use_dora": false,
        "revision": null
    })
}

/// Writes `adapter_config.json` and `adapter_model.safetensors` (PEFT's key names:
/// `base_model.model.<module>.lora_A.weight`).
pub fn save_peft_adapter(
    dir: &Path,
    cfg: &LoraConfig,
    adapters: &[(String, Tensor)],
    base_model: Option<&str>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io("cannot create", dir, e))?;
    let tensors: Vec<(String, Tensor)> = adapters
        .iter()
        .map(|(n, t)| (format!("base_model.model.{n}"), t.shallow_clone()))
        .collect();
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    crate::weights::write_safetensors(&dir.join("adapter_model.safetensors"), &tensors, meta)?;
    let text =
        serde_json::to_string_pretty(&peft_adapter_config(cfg, base_model)).map_err(|source| {
            ModelError::ConfigParse {
                path: dir.join("adapter_config.json"),
                source,
            }
        })?;
    crate::weights::write_atomic(&dir.join("adapter_config.json"), text.as_bytes())
}
