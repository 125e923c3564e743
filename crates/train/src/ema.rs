//! Exponential moving average of the trained weights, evaluated beside them and
//! saved with each checkpoint.

use std::path::Path;

use tch::Tensor;

use clip_model::{ClipClassifier, Tower, read_safetensors};

use crate::error::{Result, TrainError};

/// Exponential moving average of the optimised parameters.
pub(crate) struct Ema {
    decay: f64,
    params: Vec<(String, Tensor, Tensor)>,
}

impl Ema {
    pub(crate) fn new(decay: f64, model: &ClipClassifier, towers: &[Tower]) -> Self {
        let params = model
            .params()
            .select(|t| towers.contains(&t.tower))
            .map(|p| {
                (
                    p.name.clone(),
                    p.tensor.shallow_clone(),
                    p.tensor.detach().copy(),
                )
            })
            .collect();
        Self { decay, params }
    }

    pub(crate) fn update(&self) {
        tch::no_grad(|| {
            for (_, p, e) in &self.params {
                let _ = e.shallow_clone().lerp_(p, 1.0 - self.decay);
            }
        });
    }

    /// Swaps the model's weights with the averages (call twice to swap back).
    pub(crate) fn swap(&self) {
        tch::no_grad(|| {
            for (_, p, e) in &self.params {
                let tmp = p.detach().copy();
                p.shallow_clone().copy_(e);
                e.shallow_clone().copy_(&tmp);
            }
        });
    }

    pub(crate) fn tensors(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .map(|(n, _, e)| (n.clone(), e.shallow_clone()))
            .collect()
    }

    pub(crate) fn load(&self, path: &Path) -> Result<()> {
        let saved: std::collections::HashMap<String, Tensor> =
            read_safetensors(path)?.into_iter().collect();
        for (name, _, e) in &self.params {
            let t = saved.get(name).ok_or_else(|| TrainError::Resume {
                path: path.to_path_buf(),
                reason: format!("the EMA file has no `{name}`"),
            })?;
            tch::no_grad(|| e.shallow_clone().f_copy_(t))?;
        }
        Ok(())
    }
}
