//! Typed parameter tags, assigned when each parameter is created.
//!
//! Every tensor gets its tower, depth, module and decay class from the [`Scope`]
//! that creates it; optimizers, freezing and reports read these tags and never
//! parse names.

use std::cell::RefCell;
use std::ops::RangeInclusive;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use tch::{Tensor, nn};

/// Which part of the network a parameter belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tower {
    Vision,
    Text,
    /// The classification head.
    Head,
    /// Parameters of the joint model (`logit_scale`).
    Shared,
}

impl Tower {
    /// The lower-case name used in configs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Tower::Vision => "vision",
            Tower::Text => "text",
            Tower::Head => "head",
            Tower::Shared => "shared",
        }
    }
}

/// `"3"` for a single depth, `"1-12"` for a range (reports).
pub fn depth_label(min: u32, max: u32) -> String {
    if min == max {
        min.to_string()
    } else {
        format!("{min}-{max}")
    }
}

/// What a parameter is inside its tower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Module {
    Embeddings,
    /// `pre_layrnorm`.
    PreNorm,
    Block,
    /// `post_layernorm` / `final_layer_norm`.
    PostNorm,
    /// `visual_projection` / `text_projection`.
    Projection,
    Head,
    LogitScale,
    /// LoRA adapter matrices.
    Adapter,
}

/// Whether weight decay applies under the usual rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecayClass {
    /// Matrices and convolution kernels: decayed.
    Weight,
    Bias,
    Norm,
    /// Token, position and class embeddings.
    Embedding,
    LogitScale,
}

impl DecayClass {
    /// `true` for the classes that `no_decay = "auto"` exempts.
    pub fn is_no_decay(self) -> bool {
        self != DecayClass::Weight
    }
}

/// The tag of one parameter. Depth: embeddings and pre-LN are 0, block `i` is
/// `i + 1`, post-LN, projection and head are `num_blocks + 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct ParamTag {
    pub tower: Tower,
    pub depth: u32,
    pub module: Module,
    pub decay: DecayClass,
}

/// One named, tagged parameter. The tensor shares storage with the VarStore's.
#[derive(Debug)]
pub struct Param {
    pub name: String,
    pub tag: ParamTag,
    pub tensor: Tensor,
}

impl Param {
    pub fn numel(&self) -> i64 {
        self.tensor.size().iter().product()
    }
}

type Registry = Rc<RefCell<Vec<Param>>>;

/// A [`nn::Path`] that also knows the tower, depth and module of what it creates.
#[derive(Debug, Clone)]
pub struct Scope<'a> {
    path: nn::Path<'a>,
    tower: Tower,
    depth: u32,
    module: Module,
    registry: Registry,
}

impl<'a> Scope<'a> {
    /// A root scope over `path`; parameters start in the shared tower at depth 0.
    pub fn new(path: nn::Path<'a>) -> Self {
        Self {
            path,
            tower: Tower::Shared,
            depth: 0,
            module: Module::LogitScale,
            registry: Rc::default(),
        }
    }

    /// A child path (`name` must not contain `.`).
    pub fn sub(&self, name: impl ToString) -> Self {
        Self {
            path: self.path.sub(name),
            ..self.clone()
        }
    }

    pub fn tower(&self, tower: Tower) -> Self {
        Self {
            tower,
            ..self.clone()
        }
    }

    pub fn depth(&self, depth: u32) -> Self {
        Self {
            depth,
            ..self.clone()
        }
    }

    pub fn module(&self, module: Module) -> Self {
        Self {
            module,
            ..self.clone()
        }
    }

    pub fn device(&self) -> tch::Device {
        self.path.device()
    }

    /// Creates a trainable parameter with the given decay class.
    pub fn param(&self, name: &str, dims: &[i64], init: nn::Init, decay: DecayClass) -> Tensor {
        let tensor = self.path.var(name, dims, init);
        self.registry.borrow_mut().push(Param {
            name: self.path.path(name),
            tag: ParamTag {
                tower: self.tower,
                depth: self.depth,
                module: self.module,
                decay,
            },
            tensor: tensor.shallow_clone(),
        });
        tensor
    }

    /// Takes the parameters registered through this scope and its children.
    pub fn into_params(self) -> Vec<Param> {
        std::mem::take(&mut *self.registry.borrow_mut())
    }
}

/// The tagged parameters of a model, with selection and freezing by tag.
#[derive(Debug, Default)]
pub struct ParamTable {
    params: Vec<Param>,
}

impl ParamTable {
    pub fn new(params: Vec<Param>) -> Self {
        Self { params }
    }

    /// Adds parameters created after the model (adapters).
    pub fn extend(&mut self, params: Vec<Param>) {
        self.params.extend(params);
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Param> {
        self.params.iter()
    }

    pub fn len(&self) -> usize {
        self.params.len()
    }

    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name == name)
    }

    /// The parameters whose tag satisfies `pred`.
    pub fn select(&self, pred: impl Fn(&ParamTag) -> bool) -> impl Iterator<Item = &Param> {
        self.params.iter().filter(move |p| pred(&p.tag))
    }

    /// Number of scalar parameters whose tag satisfies `pred`.
    pub fn count(&self, pred: impl Fn(&ParamTag) -> bool) -> i64 {
        self.select(pred).map(Param::numel).sum()
    }

    /// Number of scalar parameters that currently require gradients.
    pub fn trainable_count(&self) -> i64 {
        self.params
            .iter()
            .filter(|p| p.tensor.requires_grad())
            .map(Param::numel)
            .sum()
    }

    /// Sets `requires_grad` on the parameters whose tag satisfies `pred`; returns how
    /// many tensors changed state.
    pub fn set_trainable(&self, trainable: bool, pred: impl Fn(&ParamTag) -> bool) -> usize {
        let mut changed = 0;
        for p in self.select(pred) {
            if p.tensor.requires_grad() != trainable {
                let _ = p.tensor.shallow_clone().set_requires_grad(trainable);
                changed += 1;
            }
        }
        changed
    }

    /// Freezes or unfreezes a tower's parameters whose depth is in `depths`.
    pub fn set_tower_trainable(
        &self,
        tower: Tower,
        depths: RangeInclusive<u32>,
        trainable: bool,
    ) -> usize {
        self.set_trainable(trainable, |t| t.tower == tower && depths.contains(&t.depth))
    }

    /// One row per (tower, module, depth range, decay class) with tensor and
    /// parameter counts, in creation order.
    pub fn report(&self) -> ParamReport {
        let mut rows: Vec<ReportRow> = Vec::new();
        for p in &self.params {
            let t = p.tag;
            let trainable = p.tensor.requires_grad();
            let numel = p.numel();
            match rows.iter_mut().find(|r| {
                r.tower == t.tower
                    && r.module == t.module
                    && r.no_decay == t.decay.is_no_decay()
                    && r.trainable == trainable
            }) {
                Some(r) => {
                    r.depth_min = r.depth_min.min(t.depth);
                    r.depth_max = r.depth_max.max(t.depth);
                    r.tensors += 1;
                    r.parameters += numel;
                }
                None => rows.push(ReportRow {
                    tower: t.tower,
                    module: t.module,
                    depth_min: t.depth,
                    depth_max: t.depth,
                    no_decay: t.decay.is_no_decay(),
                    trainable,
                    tensors: 1,
                    parameters: numel,
                }),
            }
        }
        ParamReport {
            total: self.count(|_| true),
            trainable: self.trainable_count(),
            rows,
        }
    }
}

/// One line of a [`ParamReport`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportRow {
    pub tower: Tower,
    pub module: Module,
    pub depth_min: u32,
    pub depth_max: u32,
    pub no_decay: bool,
    pub trainable: bool,
    pub tensors: usize,
    pub parameters: i64,
}

/// Parameter counts by tag, as a table ([`std::fmt::Display`]) or JSON (serde).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamReport {
    pub total: i64,
    pub trainable: i64,
    pub rows: Vec<ReportRow>,
}

impl std::fmt::Display for ParamReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<8} {:<12} {:>7} {:>8} {:>9} {:>7} {:>14}",
            "tower", "module", "depth", "no-decay", "trainable", "tensors", "parameters"
        )?;
        for r in &self.rows {
            let depth = depth_label(r.depth_min, r.depth_max);
            writeln!(
                f,
                "{:<8} {:<12} {:>7} {:>8} {:>9} {:>7} {:>14}",
                r.tower.name(),
                format!("{:?}", r.module).to_lowercase(),
                depth,
                if r.no_decay { "yes" } else { "no" },
                if r.trainable { "yes" } else { "no" },
                r.tensors,
                r.parameters
            )?;
        }
        let share = if self.total > 0 {
            100.0 * self.trainable as f64 / self.total as f64
        } else {
            0.0
        };
        write!(
            f,
            "total {} parameters, {} trainable ({share:.2}%)",
            self.total, self.trainable
        )
    }
}
