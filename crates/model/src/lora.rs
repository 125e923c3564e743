//! LoRA as PEFT configures it: which blocks and linear layers of which towers get
//! an adapter ([`crate::adapter::LoraAdapter`], `scaling = alpha / r`), attaching
//! them (tagged `Module::Adapter` at their block's depth), and PEFT's
//! `adapter_config.json` / `adapter_model.safetensors`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::adapter::LoraAdapter;
use crate::encoder::EncoderLayer;
use crate::error::{ModelError, Result};
use crate::layers::Linear;
use crate::tags::{Module, Scope, Tower};

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

/// Adds adapters to every chosen layer of `layers` (an encoder's blocks).
pub(crate) fn attach(
    root: &Scope,
    tower: Tower,
    prefix: &str,
    layers: &mut [EncoderLayer],
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
            lin.lora = Some(LoraAdapter::new(
                &scope,
                in_dim,
                out_dim,
                cfg.r,
                cfg.scaling(),
                cfg.dropout,
            ));
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
