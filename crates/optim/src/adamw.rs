//! AdamW with decoupled weight decay, exactly as `torch.optim.AdamW`, updating
//! each group's tensors with libtorch's fused multi-tensor kernel. Its state
//! (moments and step per parameter) saves to and loads from safetensors.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::OptimError;
use crate::error::problems_to_result;
use crate::groups::ParamGroup;
use crate::kernels::{AdamWHyper, AdamWLists, fused_adamw, grad_to_none};

/// AdamW hyper-parameters shared by all groups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    pub betas: [f64; 2],
    pub eps: f64,
    pub amsgrad: bool,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            betas: [0.9, 0.999],
            eps: 1e-8,
            amsgrad: false,
        }
    }
}

impl AdamWConfig {
    /// Every bad value, each naming its key under `prefix` (`optim` in a run
    /// config).
    pub fn problems(&self, prefix: &str) -> Vec<String> {
        let mut problems = Vec::new();
        for (i, b) in self.betas.iter().enumerate() {
            if !(0.0..1.0).contains(b) {
                problems.push(format!("`{prefix}.betas[{i}]` must be in [0, 1), got {b}"));
            }
        }
        if !(self.eps > 0.0 && self.eps.is_finite()) {
            problems.push(format!(
                "`{prefix}.eps` must be a positive number, got {}",
                self.eps
            ));
        }
        problems
    }

    /// Every bad value at once (keys under `optim`).
    pub fn validate(&self) -> Result<(), OptimError> {
        problems_to_result("optim", self.problems("optim"))
    }
}

#[derive(Debug)]
struct ParamState {
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    max_exp_avg_sq: Option<Tensor>,
    /// Steps taken by this parameter, a float scalar as PyTorch keeps it.
    step: Tensor,
}

/// The optimizer. Parameters join the state on their first step with a gradient
/// (zero moments), so tensors unfrozen mid-run start fresh while the others keep
/// their moments; parameters without a gradient are skipped, as in PyTorch.
#[derive(Debug)]
pub struct AdamW {
    groups: Vec<ParamGroup>,
    lrs: Vec<f64>,
    config: AdamWConfig,
    state: Vec<Vec<Option<ParamState>>>,
}

impl AdamW {
    pub fn new(groups: Vec<ParamGroup>, config: AdamWConfig) -> Result<Self, OptimError> {
        config.validate()?;
        Ok(Self {
            lrs: groups.iter().map(|g| g.base_lr).collect(),
            state: groups
                .iter()
                .map(|g| g.params.iter().map(|_| None).collect())
                .collect(),
            groups,
            config,
        })
    }

    pub fn groups(&self) -> &[ParamGroup] {
        &self.groups
    }

    /// The current LR of each group.
    pub fn lrs(&self) -> &[f64] {
        &self.lrs
    }

    /// Sets every group's LR to its base LR times `factor` (the schedule's value).
    pub fn set_lr_factor(&mut self, factor: f64) {
        for (lr, g) in self.lrs.iter_mut().zip(&self.groups) {
            *lr = g.base_lr * factor;
        }
    }

    /// Parameters that currently hold optimizer state.
    pub fn state_len(&self) -> usize {
        self.state.iter().flatten().filter(|s| s.is_some()).count()
    }

    /// The defined gradients of all parameters (for clipping and unscaling).
    pub fn grads(&self) -> Vec<Tensor> {
        self.groups
            .iter()
            .flat_map(|g| &g.params)
            .map(|(_, t)| t.grad())
            .filter(Tensor::defined)
            .collect()
    }

    /// Resets every gradient to undefined, as `zero_grad(set_to_none=True)`.
    pub fn zero_grad(&self) -> Result<(), OptimError> {
        for (_, t) in self.groups.iter().flat_map(|g| &g.params) {
            grad_to_none(t)?;
        }
        Ok(())
    }

    /// One update of every parameter that has a gradient; returns how many tensors
    /// were updated.
    pub fn step(&mut self) -> Result<usize, OptimError> {
        let amsgrad = self.config.amsgrad;
        let mut updated = 0;
        for ((group, states), &lr) in self.groups.iter().zip(self.state.iter_mut()).zip(&self.lrs) {
            let mut idx = Vec::new();
            let mut grads = Vec::new();
            for (i, (_, p)) in group.params.iter().enumerate() {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let s = states[i].get_or_insert_with(|| ParamState {
                    exp_avg: p.zeros_like(),
                    exp_avg_sq: p.zeros_like(),
                    max_exp_avg_sq: amsgrad.then(|| p.zeros_like()),
                    step: Tensor::zeros([], (Kind::Float, p.device())),
                });
                let _ = s.step.f_add_scalar_(1.0)?;
                idx.push(i);
                grads.push(g);
            }
            if idx.is_empty() {
                continue;
            }
            let st: Vec<&ParamState> = idx.iter().filter_map(|&i| states[i].as_ref()).collect();
            let lists = AdamWLists {
                params: idx.iter().map(|&i| &group.params[i].1).collect(),
                grads,
                exp_avgs: st.iter().map(|s| &s.exp_avg).collect(),
                exp_avg_sqs: st.iter().map(|s| &s.exp_avg_sq).collect(),
                max_exp_avg_sqs: st
                    .iter()
                    .filter_map(|s| s.max_exp_avg_sq.as_ref())
                    .collect(),
                steps: st.iter().map(|s| &s.step).collect(),
            };
            let hyper = AdamWHyper {
                lr,
                beta1: self.config.betas[0],
                beta2: self.config.betas[1],
                weight_decay: group.weight_decay,
                eps: self.config.eps,
                amsgrad,
            };
            tch::no_grad(|| fused_adamw(&lists, &hyper))?;
            updated += idx.len();
        }
        Ok(updated)
    }

    /// Writes moments and steps of every parameter with state (safetensors, atomic).
    pub fn save(&self, path: &Path) -> Result<(), OptimError> {
        let mut tensors = Vec::new();
        for (group, states) in self.groups.iter().zip(&self.state) {
            for ((name, _), s) in group.params.iter().zip(states) {
                if let Some(s) = s {
                    tensors.push((format!("{name}.exp_avg"), s.exp_avg.shallow_clone()));
                    tensors.push((format!("{name}.exp_avg_sq"), s.exp_avg_sq.shallow_clone()));
                    tensors.push((format!("{name}.step"), s.step.shallow_clone()));
                    if let Some(m) = &s.max_exp_avg_sq {
                        tensors.push((format!("{name}.max_exp_avg_sq"), m.shallow_clone()));
                    }
                }
            }
        }
        let meta = BTreeMap::from([("optimizer".to_string(), "adamw".to_string())]);
        clip_model::write_safetensors(path, &tensors, meta)?;
        Ok(())
    }

    /// Restores the state written by [`AdamW::save`]. A tensor for a parameter this
    /// optimizer does not hold, or of the wrong shape, is an error naming it.
    pub fn load(&mut self, path: &Path) -> Result<(), OptimError> {
        let mut saved: HashMap<String, Tensor> =
            clip_model::read_safetensors(path)?.into_iter().collect();
        let bad = |reason: String| OptimError::State {
            path: path.to_path_buf(),
            reason,
        };
        let amsgrad = self.config.amsgrad;
        let mut state = Vec::with_capacity(self.groups.len());
        for group in &self.groups {
            let mut states = Vec::with_capacity(group.params.len());
            for (name, p) in &group.params {
                let Some(step) = saved.remove(&format!("{name}.step")) else {
                    states.push(None);
                    continue;
                };
                let mut take = |what: &str| -> Result<Tensor, OptimError> {
                    let t = saved
                        .remove(&format!("{name}.{what}"))
                        .ok_or_else(|| bad(format!("`{name}.{what}` is missing")))?;
                    if t.size() != p.size() {
                        return Err(bad(format!(
                            "`{name}.{what}` has shape {:?}, the parameter {:?}",
                            t.size(),
                            p.size()
                        )));
                    }
                    Ok(t.to_device(p.device()))
                };
                states.push(Some(ParamState {
                    exp_avg: take("exp_avg")?,
                    exp_avg_sq: take("exp_avg_sq")?,
                    max_exp_avg_sq: if amsgrad {
                        Some(take("max_exp_avg_sq")?)
                    } else {
                        None
                    },
                    step: step.to_kind(Kind::Float).to_device(p.device()),
                }));
            }
            state.push(states);
        }
        if !saved.is_empty() {
            let mut extra: Vec<String> = saved.into_keys().collect();
            extra.sort();
            return Err(bad(format!(
                "holds state for parameters this optimizer does not train: {}",
                extra.join(", ")
            )));
        }
        self.state = state;
        Ok(())
    }
}
