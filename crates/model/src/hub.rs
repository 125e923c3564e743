//! Finding a model's files: a local Hugging Face-layout folder, or a hub id
//! resolved through the Hugging Face cache (`HF_HOME`, `HF_HUB_OFFLINE`) and
//! downloaded when online, as transformers' `from_pretrained` does.

use std::path::{Path, PathBuf};

use crate::error::{ModelError, Result};
use crate::weights::weight_files;

/// The files of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFiles {
    /// The folder holding them (a cache snapshot for hub ids).
    pub dir: PathBuf,
    pub config: PathBuf,
    /// `model.safetensors`, or every shard of a sharded checkpoint.
    pub weights: Vec<PathBuf>,
    pub tokenizer: Option<PathBuf>,
}

impl ModelFiles {
    /// Resolves `spec`: an existing folder, else a hub id such as
    /// `openai/clip-vit-base-patch32`.
    pub fn resolve(spec: &str) -> Result<Self> {
        let path = Path::new(spec);
        if path.is_dir() {
            return Self::from_dir(path);
        }
        if path.exists() {
            return Err(ModelError::NotFound {
                model: spec.into(),
                reason: "is a file; give the model's folder (config.json + model.safetensors) or a hub id".into(),
            });
        }
        if !looks_like_hub_id(spec) {
            return Err(ModelError::NotFound {
                model: spec.into(),
                reason: "no such folder, and not a hub id of the form `owner/name`".into(),
            });
        }
        Self::from_hub(spec, &hf_hub::Cache::from_env(), is_offline())
    }

    /// The files of a local folder; `config.json` and the weights must exist.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let config = dir.join("config.json");
        if !config.is_file() {
            return Err(ModelError::NotFound {
                model: dir.display().to_string(),
                reason: "the folder has no config.json (a Hugging Face CLIP folder holds config.json and model.safetensors)".into(),
            });
        }
        let tokenizer = Some(dir.join("tokenizer.json")).filter(|p| p.is_file());
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            weights: weight_files(dir)?,
            tokenizer,
        })
    }

    /// Resolves a hub id in `cache`; downloads what is missing unless `offline`.
    pub fn from_hub(id: &str, cache: &hf_hub::Cache, offline: bool) -> Result<Self> {
        let repo = cache.model(id.to_string());
        let fetch = |file: &str, required: bool| -> Result<Option<PathBuf>> {
            if let Some(p) = repo.get(file) {
                return Ok(Some(p));
            }
            if offline {
                if !required {
                    return Ok(None);
                }
                return Err(ModelError::NotFound {
                    model: id.into(),
                    reason: format!(
                        "`{file}` is not in the Hugging Face cache ({}) and HF_HUB_OFFLINE is set; download it on a machine \
                         with internet (`huggingface-cli download {id}`) and copy the cache, or give a local folder",
                        cache.path().display()
                    ),
                });
            }
            let api = hf_hub::api::sync::ApiBuilder::from_cache(cache.clone())
                .with_progress(true)
                .build()
                .map_err(|e| ModelError::NotFound {
                    model: id.into(),
                    reason: format!("cannot reach the Hugging Face hub: {e}"),
                })?;
            match api.model(id.to_string()).get(file) {
                Ok(p) => Ok(Some(p)),
                Err(_) if !required => Ok(None),
                Err(e) => Err(ModelError::NotFound {
                    model: id.into(),
                    reason: format!(
                        "downloading `{file}` failed: {e} (check the id, your network, and HF_TOKEN for gated models)"
                    ),
                }),
            }
        };
        let config = fetch("config.json", true)?.ok_or_else(|| ModelError::NotFound {
            model: id.into(),
            reason: "no config.json".into(),
        })?;
        // safetensors first; PyTorch's `.bin` (older repositories) otherwise.
        let mut weights = None;
        for (single, index) in [
            ("model.safetensors", "model.safetensors.index.json"),
            ("pytorch_model.bin", "pytorch_model.bin.index.json"),
        ] {
            if let Some(w) = fetch(single, false)? {
                weights = Some(vec![w]);
                break;
            }
            if let Some(index) = fetch(index, false)? {
                let dir = index.parent().map(Path::to_path_buf).unwrap_or_default();
                let shards = weight_files(&dir)?;
                for shard in &shards {
                    if let Some(name) = shard.file_name().and_then(|n| n.to_str()) {
                        fetch(name, true)?;
                    }
                }
                weights = Some(shards);
                break;
            }
        }
        let weights = weights.ok_or_else(|| ModelError::NotFound {
            model: id.into(),
            reason: "none of model.safetensors, model.safetensors.index.json, pytorch_model.bin, \
                     pytorch_model.bin.index.json"
                .into(),
        })?;
        let tokenizer = fetch("tokenizer.json", false)?;
        let dir = config.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(Self {
            dir,
            config,
            weights,
            tokenizer,
        })
    }
}

fn is_offline() -> bool {
    ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"].iter().any(|k| {
        std::env::var(k)
            .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
    })
}

fn looks_like_hub_id(spec: &str) -> bool {
    let mut parts = spec.split('/');
    let ok = |s: Option<&str>| {
        s.is_some_and(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}
