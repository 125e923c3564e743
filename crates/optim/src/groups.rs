//! Parameter groups from `clip-model`'s tags: layer-wise LR decay (standard and
//! the tutorial's form), discriminative bands, no-decay classes and frozen towers.

use serde::{Deserialize, Serialize};

use clip_model::{ParamTable, ParamTag, Tower};

use crate::OptimError;
use crate::error::problems_to_result;

/// How learning rates vary across the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LrPolicy {
    /// Every group at `optim.lr` (the head at `head_lr` if set).
    Uniform {
        #[serde(default)]
        head_lr: Option<f64>,
    },
    /// BEiT / open_clip: a parameter at depth `d` of a tower with `L` blocks gets
    /// `lr * decay^(L + 1 - d)`; the head gets `head_lr`, or `lr`.
    Llrd {
        decay: f64,
        #[serde(default)]
        head_lr: Option<f64>,
    },
    /// The tutorial's `get_parameter_groups`: vision block `i` gets
    /// `lr * decay^(L - 1 - i)`, every other parameter `lr`. The tutorial's code
    /// also leaves the text encoder's blocks out of the optimizer (their names
    /// contain "encoder.layers"); here they get `lr` when the text tower is not in
    /// `frozen_towers`. For classification this is the same training: the text
    /// tower gets no gradient.
    TutorialLlrd { decay: f64 },
    /// The tutorial's discriminative fine-tuning: bottom / middle / top thirds of
    /// each tower's blocks (embeddings with the bottom, post-norm and projection with
    /// the top) and the head.
    Discriminative {
        #[serde(default = "d_bottom")]
        bottom: f64,
        #[serde(default = "d_middle")]
        middle: f64,
        #[serde(default = "d_top")]
        top: f64,
        #[serde(default = "d_head")]
        head: f64,
    },
}

fn d_bottom() -> f64 {
    1e-6
}
fn d_middle() -> f64 {
    5e-6
}
fn d_top() -> f64 {
    1e-5
}
fn d_head() -> f64 {
    1e-4
}

impl LrPolicy {
    /// The head's learning rate under this policy, with base LR `lr`.
    pub fn head_lr(&self, lr: f64) -> f64 {
        match self {
            LrPolicy::Uniform { head_lr } | LrPolicy::Llrd { head_lr, .. } => head_lr.unwrap_or(lr),
            LrPolicy::TutorialLlrd { .. } => lr,
            LrPolicy::Discriminative { head, .. } => *head,
        }
    }
}

impl Default for LrPolicy {
    fn default() -> Self {
        LrPolicy::Llrd {
            decay: 0.95,
            head_lr: None,
        }
    }
}

/// Which parameters are exempt from weight decay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoDecay {
    /// Biases, norms, embeddings and `logit_scale` (by their tags).
    #[default]
    Auto,
    /// Decay everything, as the tutorial's single `weight_decay=0.01` does.
    None,
}

/// The `[optim]` section (without the schedule, which has its own type).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupConfig {
    pub lr: f64,
    pub weight_decay: f64,
    pub no_decay: NoDecay,
    pub lr_policy: LrPolicy,
    /// Towers that get no optimizer state at all (the text tower and `logit_scale`
    /// by default: classification does not use them).
    pub frozen_towers: Vec<Tower>,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            lr: 1e-5,
            weight_decay: 0.01,
            no_decay: NoDecay::Auto,
            lr_policy: LrPolicy::default(),
            frozen_towers: vec![Tower::Text, Tower::Shared],
        }
    }
}

/// One parameter group: its tensors share lr and weight decay.
#[derive(Debug)]
pub struct ParamGroup {
    pub name: String,
    pub tower: Tower,
    pub depth_min: u32,
    pub depth_max: u32,
    /// LR before the schedule's factor.
    pub base_lr: f64,
    pub weight_decay: f64,
    /// `(name, tensor)` of each parameter (tensors share storage with the model).
    pub params: Vec<(String, tch::Tensor)>,
}

impl ParamGroup {
    pub fn numel(&self) -> i64 {
        self.params.iter().map(|(_, t)| t.numel() as i64).sum()
    }
}

fn positive(key: &str, v: f64, problems: &mut Vec<String>) {
    if !(v > 0.0 && v.is_finite()) {
        problems.push(format!("`{key}` must be a positive number, got {v}"));
    }
}

impl GroupConfig {
    /// Every bad value, each naming its key under `prefix` (`optim` in a run
    /// config).
    pub fn problems(&self, prefix: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let key = |k: &str| format!("{prefix}.{k}");
        positive(&key("lr"), self.lr, &mut problems);
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            problems.push(format!(
                "`{}` must be >= 0, got {}",
                key("weight_decay"),
                self.weight_decay
            ));
        }
        let decay_in_range = |decay: f64, problems: &mut Vec<String>| {
            if !(decay > 0.0 && decay <= 1.0) {
                problems.push(format!(
                    "`{}` must be in (0, 1], got {decay}",
                    key("lr_policy.decay")
                ));
            }
        };
        match &self.lr_policy {
            LrPolicy::Uniform { head_lr } => head_lr
                .iter()
                .for_each(|h| positive(&key("lr_policy.head_lr"), *h, &mut problems)),
            LrPolicy::Llrd { decay, head_lr } => {
                decay_in_range(*decay, &mut problems);
                head_lr
                    .iter()
                    .for_each(|h| positive(&key("lr_policy.head_lr"), *h, &mut problems));
            }
            LrPolicy::TutorialLlrd { decay } => decay_in_range(*decay, &mut problems),
            LrPolicy::Discriminative {
                bottom,
                middle,
                top,
                head,
            } => {
                for (k, v) in [
                    ("bottom", bottom),
                    ("middle", middle),
                    ("top", top),
                    ("head", head),
                ] {
                    positive(&key(&format!("lr_policy.{k}")), *v, &mut problems);
                }
            }
        }
        problems
    }

    /// Every bad value at once (keys under `optim`).
    pub fn validate(&self) -> Result<(), OptimError> {
        problems_to_result("optim", self.problems("optim"))
    }

    /// The learning rate of a parameter with tag `t`, in a model whose towers have
    /// `blocks(tower)` encoder blocks.
    pub fn lr_for(&self, t: &ParamTag, blocks: impl Fn(Tower) -> u32) -> f64 {
        let lr = self.lr;
        let l = blocks(t.tower) as i32;
        let d = t.depth as i32;
        match &self.lr_policy {
            _ if t.tower == Tower::Head => self.lr_policy.head_lr(lr),
            LrPolicy::Uniform { .. } => lr,
            LrPolicy::Llrd { decay, .. } => match t.tower {
                Tower::Shared => lr,
                _ => lr * decay.powi(l + 1 - d),
            },
            LrPolicy::TutorialLlrd { decay } => {
                if t.tower == Tower::Vision && t.module == clip_model::Module::Block {
                    lr * decay.powi(l - d) // block i = depth - 1: decay^(L - 1 - i)
                } else {
                    lr
                }
            }
            LrPolicy::Discriminative {
                bottom,
                middle,
                top,
                ..
            } => match t.tower {
                Tower::Shared => *top,
                _ if d == 0 => *bottom,
                _ if d > l => *top,
                // Block i = d - 1 of L: thirds by i * 3 / L.
                _ => match (d - 1) * 3 / l.max(1) {
                    0 => *bottom,
                    1 => *middle,
                    _ => *top,
                },
            },
        }
    }

    /// Groups the parameters of `table` (those not in a frozen tower) by tower, depth
    /// and decay; `blocks(tower)` is the number of encoder blocks of that tower.
    pub fn build(
        &self,
        table: &ParamTable,
        blocks: impl Fn(Tower) -> u32,
    ) -> Result<Vec<ParamGroup>, OptimError> {
        self.validate()?;
        let mut groups: Vec<ParamGroup> = Vec::new();
        for p in table.select(|t| !self.frozen_towers.contains(&t.tower)) {
            let t = &p.tag;
            let decayed = self.no_decay == NoDecay::None || !t.decay.is_no_decay();
            let wd = if decayed { self.weight_decay } else { 0.0 };
            let lr = self.lr_for(t, &blocks);
            let name = format!(
                "{}.d{}.{}",
                t.tower.name(),
                t.depth,
                if decayed { "decay" } else { "no_decay" }
            );
            match groups.iter_mut().find(|g| g.name == name) {
                Some(g) => g.params.push((p.name.clone(), p.tensor.shallow_clone())),
                None => groups.push(ParamGroup {
                    name,
                    tower: t.tower,
                    depth_min: t.depth,
                    depth_max: t.depth,
                    base_lr: lr,
                    weight_decay: wd,
                    params: vec![(p.name.clone(), p.tensor.shallow_clone())],
                }),
            }
        }
        if groups.is_empty() {
            return Err(OptimError::config(
                "optim.frozen_towers",
                "freezes every parameter: nothing to optimize",
            ));
        }
        Ok(groups)
    }
}

/// One line of a [`GroupReport`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupRow {
    pub group: String,
    pub tower: Tower,
    pub depth_min: u32,
    pub depth_max: u32,
    pub tensors: usize,
    pub parameters: i64,
    /// Tensors that currently require gradients.
    pub trainable_tensors: usize,
    pub lr: f64,
    pub weight_decay: f64,
}

/// The optimizer's groups as a table ([`std::fmt::Display`]) or JSON (serde).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupReport {
    pub rows: Vec<GroupRow>,
}

impl GroupReport {
    /// Rows for `groups` at the LRs `lrs` (e.g. `AdamW::lrs()`, or base LRs).
    pub fn new(groups: &[ParamGroup], lrs: &[f64]) -> Self {
        let rows = groups
            .iter()
            .zip(lrs)
            .map(|(g, &lr)| GroupRow {
                group: g.name.clone(),
                tower: g.tower,
                depth_min: g.depth_min,
                depth_max: g.depth_max,
                tensors: g.params.len(),
                parameters: g.numel(),
                trainable_tensors: g.params.iter().filter(|(_, t)| t.requires_grad()).count(),
                lr,
                weight_decay: g.weight_decay,
            })
            .collect();
        Self { rows }
    }
}

/// One tensor of a model, by its Hugging Face name, with the group that optimises
/// it: what `train-cli inspect --json` lists so a config can be checked against
/// another script tensor by tensor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorRow {
    pub name: String,
    pub shape: Vec<i64>,
    pub tower: Tower,
    pub depth: u32,
    /// `None`: in a frozen tower, so not in the optimizer at all.
    pub group: Option<String>,
    pub lr: Option<f64>,
    pub weight_decay: Option<f64>,
    /// Whether it currently requires gradients.
    pub trainable: bool,
}

impl TensorRow {
    /// Every tensor of `table` in model order, placed in `groups` (at the LRs
    /// `lrs`, one per group).
    pub fn list(table: &ParamTable, groups: &[ParamGroup], lrs: &[f64]) -> Vec<TensorRow> {
        let placed: std::collections::HashMap<&str, (&ParamGroup, f64)> = groups
            .iter()
            .zip(lrs)
            .flat_map(|(g, &lr)| g.params.iter().map(move |(n, _)| (n.as_str(), (g, lr))))
            .collect();
        table
            .iter()
            .map(|p| {
                let g = placed.get(p.name.as_str());
                TensorRow {
                    name: p.name.clone(),
                    shape: p.tensor.size(),
                    tower: p.tag.tower,
                    depth: p.tag.depth,
                    group: g.map(|(g, _)| g.name.clone()),
                    lr: g.map(|&(_, lr)| lr),
                    weight_decay: g.map(|(g, _)| g.weight_decay),
                    trainable: p.tensor.requires_grad(),
                }
            })
            .collect()
    }
}

impl std::fmt::Display for GroupReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<24} {:<7} {:>5} {:>7} {:>12} {:>9} {:>10} {:>6}",
            "group", "tower", "depth", "tensors", "parameters", "trainable", "lr", "wd"
        )?;
        for r in &self.rows {
            let depth = clip_model::depth_label(r.depth_min, r.depth_max);
            writeln!(
                f,
                "{:<24} {:<7} {:>5} {:>7} {:>12} {:>9} {:>10.3e} {:>6}",
                r.group,
                r.tower.name(),
                depth,
                r.tensors,
                r.parameters,
                format!("{}/{}", r.trainable_tensors, r.tensors),
                r.lr,
                r.weight_decay
            )?;
        }
        Ok(())
    }
}
