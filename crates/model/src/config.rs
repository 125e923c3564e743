//! CLIP configuration in Hugging Face's `config.json` format.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// The MLP activation of the encoder blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `x * sigmoid(1.702 x)`, OpenAI CLIP's.
    QuickGelu,
    /// Exact (erf) GELU.
    Gelu,
    /// tanh-approximated GELU.
    #[serde(alias = "gelu_new", alias = "gelu_pytorch_tanh")]
    GeluTanh,
}

/// The most parameters a model may have: 20 billion (80 GB of fp32 weights; the
/// largest CLIPs, ViT-bigG/14, have 2.5 billion).
pub const MAX_PARAMETERS: u128 = 20_000_000_000;

/// The most positions of either tower's sequence (ViT-L/14 at 336 px has 577).
pub const MAX_POSITIONS: i64 = 65_536;

/// transformers' `CLIPTextConfig` (the fields the model uses).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TextConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub max_position_embeddings: i64,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
    pub attention_dropout: f64,
    pub pad_token_id: i64,
    pub bos_token_id: i64,
    pub eos_token_id: i64,
}

impl Default for TextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
            attention_dropout: 0.0,
            pad_token_id: 1,
            bos_token_id: 49406,
            eos_token_id: 49407,
        }
    }
}

/// transformers' `CLIPVisionConfig` (the fields the model uses).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VisionConfig {
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub num_channels: i64,
    pub image_size: i64,
    pub patch_size: i64,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
    pub attention_dropout: f64,
}

impl Default for VisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
            attention_dropout: 0.0,
        }
    }
}

impl VisionConfig {
    /// Patches per side.
    pub fn grid(&self) -> i64 {
        self.image_size / self.patch_size
    }
}

/// transformers' `CLIPConfig`. Unknown keys of a Hugging Face `config.json` are
/// ignored, missing ones take transformers' defaults, and the legacy
/// `text_config_dict` / `vision_config_dict` keys are read when the modern ones are
/// absent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClipConfig {
    pub text_config: TextConfig,
    pub vision_config: VisionConfig,
    pub projection_dim: i64,
    pub logit_scale_init_value: f64,
}

#[derive(Deserialize)]
#[serde(default)]
struct RawConfig {
    text_config: Option<TextConfig>,
    vision_config: Option<VisionConfig>,
    text_config_dict: Option<TextConfig>,
    vision_config_dict: Option<VisionConfig>,
    projection_dim: i64,
    logit_scale_init_value: f64,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            text_config: None,
            vision_config: None,
            text_config_dict: None,
            vision_config_dict: None,
            projection_dim: 512,
            logit_scale_init_value: 2.6592,
        }
    }
}

impl<'de> Deserialize<'de> for ClipConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawConfig::deserialize(d)?;
        Ok(ClipConfig {
            text_config: raw.text_config.or(raw.text_config_dict).unwrap_or_default(),
            vision_config: raw
                .vision_config
                .or(raw.vision_config_dict)
                .unwrap_or_default(),
            projection_dim: raw.projection_dim,
            logit_scale_init_value: raw.logit_scale_init_value,
        })
    }
}

impl Default for ClipConfig {
    fn default() -> Self {
        Self::vit_b_32()
    }
}

impl ClipConfig {
    /// `openai/clip-vit-base-patch32`.
    pub fn vit_b_32() -> Self {
        Self {
            text_config: TextConfig::default(),
            vision_config: VisionConfig::default(),
            projection_dim: 512,
            logit_scale_init_value: 2.6592,
        }
    }

    /// `openai/clip-vit-base-patch16`.
    pub fn vit_b_16() -> Self {
        let mut c = Self::vit_b_32();
        c.vision_config.patch_size = 16;
        c
    }

    /// `openai/clip-vit-large-patch14`.
    pub fn vit_l_14() -> Self {
        Self {
            text_config: TextConfig {
                hidden_size: 768,
                intermediate_size: 3072,
                num_attention_heads: 12,
                ..TextConfig::default()
            },
            vision_config: VisionConfig {
                hidden_size: 1024,
                intermediate_size: 4096,
                num_hidden_layers: 24,
                num_attention_heads: 16,
                patch_size: 14,
                ..VisionConfig::default()
            },
            projection_dim: 768,
            logit_scale_init_value: 2.6592,
        }
    }

    /// A CLIP small enough for unit tests and CPU demos (32x32 images, two blocks
    /// per tower, CLIP's 49,408-token vocabulary).
    pub fn tiny() -> Self {
        Self {
            text_config: TextConfig {
                hidden_size: 32,
                intermediate_size: 64,
                num_hidden_layers: 2,
                num_attention_heads: 4,
                ..TextConfig::default()
            },
            vision_config: VisionConfig {
                hidden_size: 32,
                intermediate_size: 64,
                num_hidden_layers: 2,
                num_attention_heads: 4,
                image_size: 32,
                patch_size: 8,
                ..VisionConfig::default()
            },
            projection_dim: 16,
            logit_scale_init_value: 2.6592,
        }
    }

    /// A preset by name: `vit-b-32`, `vit-b-16`, `vit-l-14` or `tiny`.
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "vit-b-32" => Ok(Self::vit_b_32()),
            "vit-b-16" => Ok(Self::vit_b_16()),
            "vit-l-14" => Ok(Self::vit_l_14()),
            "tiny" => Ok(Self::tiny()),
            other => Err(ModelError::config(
                "preset",
                format!("{other:?} is unknown; expected vit-b-32, vit-b-16, vit-l-14 or tiny"),
            )),
        }
    }

    /// Parses a Hugging Face `config.json` and validates it.
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ModelError::io("cannot read", path, e))?;
        let cfg: ClipConfig =
            serde_json::from_str(&text).map_err(|source| ModelError::ConfigParse {
                path: path.to_path_buf(),
                source,
            })?;
        // The file's name, not "config": the user has to find the wrong value.
        cfg.validate().map_err(|e| match e {
            ModelError::Config { reason, .. } => {
                ModelError::config(path.display().to_string(), reason)
            }
            other => other,
        })?;
        Ok(cfg)
    }

    /// The `config.json` transformers' `CLIPModel.from_pretrained` reads.
    pub fn to_hf_json(&self) -> serde_json::Value {
        let mut text = serde_json::to_value(&self.text_config).unwrap_or_default();
        text["model_type"] = "clip_text_model".into();
        text["projection_dim"] = self.projection_dim.into();
        let mut vision = serde_json::to_value(&self.vision_config).unwrap_or_default();
        vision["model_type"] = "clip_vision_model".into();
        vision["projection_dim"] = self.projection_dim.into();
        serde_json::json!({
            "architectures": ["CLIPModel"],
            "model_type": "clip",
            "projection_dim": self.projection_dim,
            "logit_scale_init_value": self.logit_scale_init_value,
            "text_config": text,
            "vision_config": vision,
        })
    }

    /// The number of parameters of a `CLIPModel` of this config, computed in
    /// `u128` so that no absurd dimension overflows (the bound check uses it
    /// before anything is allocated).
    pub fn parameter_count(&self) -> u128 {
        let (t, v) = (&self.text_config, &self.vision_config);
        let n = |x: i64| u128::try_from(x.max(0)).unwrap_or(0);
        // q, k, v, out projections with biases, the MLP, two layer norms.
        let block = |h: u128, i: u128| 4 * (h * h + h) + (h * i + i) + (i * h + h) + 4 * h;
        let (th, vh) = (n(t.hidden_size), n(v.hidden_size));
        let text = n(t.vocab_size) * th
            + n(t.max_position_embeddings) * th
            + n(t.num_hidden_layers) * block(th, n(t.intermediate_size))
            + 2 * th;
        let positions = n(v.grid()) * n(v.grid()) + 1;
        let vision = n(v.num_channels) * n(v.patch_size) * n(v.patch_size) * vh
            + vh
            + positions * vh
            + 4 * vh
            + n(v.num_hidden_layers) * block(vh, n(v.intermediate_size));
        let projections = (th + vh) * n(self.projection_dim) + 1;
        text + vision + projections
    }

    /// Reports every value that cannot work, each naming its key.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        let mut positive = |key: &str, v: i64| {
            if v <= 0 {
                problems.push(format!("`{key}` must be positive, got {v}"));
            }
        };
        let (t, v) = (&self.text_config, &self.vision_config);
        for (key, value) in [
            ("text_config.vocab_size", t.vocab_size),
            ("text_config.hidden_size", t.hidden_size),
            ("text_config.intermediate_size", t.intermediate_size),
            ("text_config.num_hidden_layers", t.num_hidden_layers),
            ("text_config.num_attention_heads", t.num_attention_heads),
            (
                "text_config.max_position_embeddings",
                t.max_position_embeddings,
            ),
            ("vision_config.hidden_size", v.hidden_size),
            ("vision_config.intermediate_size", v.intermediate_size),
            ("vision_config.num_hidden_layers", v.num_hidden_layers),
            ("vision_config.num_attention_heads", v.num_attention_heads),
            ("vision_config.num_channels", v.num_channels),
            ("vision_config.image_size", v.image_size),
            ("vision_config.patch_size", v.patch_size),
            ("projection_dim", self.projection_dim),
        ] {
            positive(key, value);
        }
        if t.num_attention_heads > 0 && t.hidden_size % t.num_attention_heads != 0 {
            problems.push(format!(
                "`text_config.hidden_size` ({}) is not divisible by `text_config.num_attention_heads` ({})",
                t.hidden_size, t.num_attention_heads
            ));
        }
        if v.num_attention_heads > 0 && v.hidden_size % v.num_attention_heads != 0 {
            problems.push(format!(
                "`vision_config.hidden_size` ({}) is not divisible by `vision_config.num_attention_heads` ({})",
                v.hidden_size, v.num_attention_heads
            ));
        }
        if v.patch_size > 0 && v.image_size % v.patch_size != 0 {
            problems.push(format!(
                "`vision_config.image_size` ({}) is not divisible by `vision_config.patch_size` ({})",
                v.image_size, v.patch_size
            ));
        }
        for (key, eps) in [
            ("text_config.layer_norm_eps", t.layer_norm_eps),
            ("vision_config.layer_norm_eps", v.layer_norm_eps),
        ] {
            if !(eps > 0.0 && eps.is_finite()) {
                problems.push(format!("`{key}` must be a positive number, got {eps}"));
            }
        }
        for (key, p) in [
            ("text_config.attention_dropout", t.attention_dropout),
            ("vision_config.attention_dropout", v.attention_dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                problems.push(format!("`{key}` must be in [0, 1), got {p}"));
            }
        }
        // Absurd sizes are refused here, before a tensor exists (they otherwise
        // reach libtorch's allocator after minutes, or overflow its sizes).
        for (key, value, most) in [
            (
                "text_config.max_position_embeddings",
                t.max_position_embeddings,
                MAX_POSITIONS,
            ),
            (
                "vision_config.image_size / patch_size squared",
                v.grid().saturating_mul(v.grid()),
                MAX_POSITIONS,
            ),
        ] {
            if value > most {
                problems.push(format!(
                    "`{key}` = {value} positions is more than {most}, the most this tool accepts"
                ));
            }
        }
        if problems.is_empty() {
            let count = self.parameter_count();
            if count > MAX_PARAMETERS {
                problems.push(format!(
                    "the model would have {count} parameters ({:.1} GB in fp32), more than the {} billion this tool accepts: check the dimensions (`text_config.*`, `vision_config.*`, `projection_dim`)",
                    count as f64 * 4e-9,
                    MAX_PARAMETERS / 1_000_000_000
                ));
            }
        }
        if !self.logit_scale_init_value.is_finite() {
            problems.push("`logit_scale_init_value` must be finite".to_string());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ModelError::config(
                "config",
                format!("has {} problem(s): {}", problems.len(), problems.join("; ")),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_differ() {
        for name in ["vit-b-32", "vit-b-16", "vit-l-14", "tiny"] {
            ClipConfig::preset(name).unwrap().validate().unwrap();
        }
        assert_eq!(ClipConfig::vit_b_16().vision_config.grid(), 14);
        assert_eq!(ClipConfig::vit_l_14().vision_config.num_hidden_layers, 24);
        assert!(
            ClipConfig::preset("vit-h-14")
                .unwrap_err()
                .to_string()
                .contains("vit-h-14")
        );
    }

    #[test]
    fn missing_fields_take_transformers_defaults_and_legacy_keys_are_read() {
        let cfg: ClipConfig = serde_json::from_str(
            r#"{"text_config_dict": {"hidden_size": 64, "num_attention_heads": 4, "foo": 1},
                "vision_config": {"patch_size": 16}, "unknown_top_level": true}"#,
        )
        .unwrap();
        assert_eq!(cfg.text_config.hidden_size, 64);
        assert_eq!(cfg.text_config.vocab_size, 49408);
        assert_eq!(cfg.vision_config.patch_size, 16);
        assert_eq!(cfg.vision_config.hidden_size, 768);
        assert_eq!(cfg.projection_dim, 512);
        assert_eq!(cfg.logit_scale_init_value, 2.6592);
    }

    #[test]
    fn impossible_configs_name_every_bad_field() {
        let mut cfg = ClipConfig::tiny();
        cfg.vision_config.hidden_size = 30;
        cfg.vision_config.image_size = 30;
        cfg.text_config.num_hidden_layers = 0;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("vision_config.hidden_size"), "{err}");
        assert!(err.contains("vision_config.image_size"), "{err}");
        assert!(err.contains("text_config.num_hidden_layers"), "{err}");
        assert!(err.contains("3 problem(s)"), "{err}");
    }

    /// The estimate the bound uses is the parameter count of the model built.
    #[test]
    fn parameter_count_is_the_built_models_and_absurd_sizes_are_refused() {
        for cfg in [ClipConfig::tiny(), {
            let mut c = ClipConfig::tiny();
            c.vision_config.num_channels = 1;
            c.text_config.intermediate_size = 48;
            c
        }] {
            let vs = tch::nn::VarStore::new(tch::Device::Cpu);
            crate::ClipModel::new(&vs.root(), &cfg).unwrap();
            let built: i64 = vs.variables().values().map(|t| t.numel() as i64).sum();
            assert_eq!(cfg.parameter_count(), built as u128);
        }
        assert_eq!(ClipConfig::vit_b_32().parameter_count(), 151_277_313);
        let mut cfg = ClipConfig::tiny();
        cfg.text_config.hidden_size = 4_000_000;
        cfg.text_config.num_attention_heads = 1;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("billion this tool accepts"), "{err}");
        let mut cfg = ClipConfig::tiny();
        cfg.vision_config.image_size = 8 * 1000;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("`vision_config.image_size / patch_size squared` = 1000000"),
            "{err}"
        );
        cfg.vision_config.image_size = i64::MAX / 8 * 8;
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn hf_json_round_trips() {
        let cfg = ClipConfig::vit_l_14();
        let back: ClipConfig = serde_json::from_value(cfg.to_hf_json()).unwrap();
        assert_eq!(back, cfg);
    }
}
