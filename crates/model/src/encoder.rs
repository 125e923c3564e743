//! Pre-LN transformer blocks and the encoder stack, with per-block gradient
//! checkpointing through a [`GradTape`].

use tch::Tensor;

use crate::attention::Attention;
use crate::config::Activation;
use crate::dropout::{drop_path, dropout};
use crate::grad_checkpoint::{Block, GradTape};
use crate::layers::{LayerNorm, Linear, activate};
use crate::tags::{Module, Scope};

/// Dropout and stochastic-depth settings, all off by default so the model computes
/// exactly what transformers computes.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Regularization {
    /// Dropout on attention probabilities (overrides the config's `attention_dropout` when > 0).
    pub attention_dropout: f64,
    /// Dropout on the output of each residual branch (attention and MLP).
    pub residual_dropout: f64,
    /// Stochastic depth: drop-path rate of the last block, rising linearly from 0 at the first.
    pub drop_path: f64,
}

impl Regularization {
    /// Every bad value, each naming `{prefix}<key>` (`model.regularization.` in a
    /// run config).
    pub fn problems(&self, prefix: &str) -> Vec<String> {
        [
            ("attention_dropout", self.attention_dropout),
            ("residual_dropout", self.residual_dropout),
            ("drop_path", self.drop_path),
        ]
        .into_iter()
        .filter(|(_, p)| !(0.0..1.0).contains(p))
        .map(|(key, p)| format!("`{prefix}{key}` must be in [0, 1), got {p}"))
        .collect()
    }

    pub fn validate(&self, prefix: &str) -> crate::Result<()> {
        crate::ModelError::from_problems(prefix.trim_end_matches('.'), self.problems(prefix))
    }
}

/// `x + attn(ln1(x))`, then `x + mlp(ln2(x))`.
#[derive(Debug)]
pub struct EncoderLayer {
    pub self_attn: Attention,
    pub layer_norm1: LayerNorm,
    pub fc1: Linear,
    pub fc2: Linear,
    pub layer_norm2: LayerNorm,
    act: Activation,
    residual_dropout: f64,
    drop_path: f64,
    causal: bool,
}

impl EncoderLayer {
    /// Whether a forward in training mode draws random numbers.
    /// The block's linear layers.
    pub(crate) fn linears(&self) -> [&Linear; 6] {
        let a = &self.self_attn;
        [
            &a.q_proj,
            &a.k_proj,
            &a.v_proj,
            &a.out_proj,
            &self.fc1,
            &self.fc2,
        ]
    }

    /// The block's linear layers, mutably (for adapters).
    pub(crate) fn linears_mut(&mut self) -> [&mut Linear; 6] {
        let a = &mut self.self_attn;
        [
            &mut a.q_proj,
            &mut a.k_proj,
            &mut a.v_proj,
            &mut a.out_proj,
            &mut self.fc1,
            &mut self.fc2,
        ]
    }

    pub(crate) fn is_stochastic(&self) -> bool {
        let lora = self
            .linears()
            .iter()
            .any(|l| l.lora.as_ref().is_some_and(|a| a.dropout > 0.0));
        self.self_attn.dropout > 0.0 || self.residual_dropout > 0.0 || self.drop_path > 0.0 || lora
    }

    /// This block's stochastic-depth rate.
    pub fn drop_path_rate(&self) -> f64 {
        self.drop_path
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let branch = |h: Tensor| {
            drop_path(
                dropout(h, self.residual_dropout, train),
                self.drop_path,
                train,
            )
        };
        let h = self
            .self_attn
            .forward(&self.layer_norm1.forward(x), self.causal, train);
        let x = x + branch(h);
        let h = self.fc2.forward_t(
            &activate(
                &self.fc1.forward_t(&self.layer_norm2.forward(&x), train),
                self.act,
            ),
            train,
        );
        &x + branch(h)
    }
}

impl Block for EncoderLayer {
    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        EncoderLayer::forward(self, x, train)
    }

    fn has_trainable(&self) -> bool {
        self.linears().iter().any(|l| {
            l.weight.requires_grad()
                || l.bias.as_ref().is_some_and(Tensor::requires_grad)
                || l.lora
                    .as_ref()
                    .is_some_and(|a| a.a.requires_grad() || a.b.requires_grad())
        }) || [&self.layer_norm1, &self.layer_norm2]
            .iter()
            .any(|n| n.weight.requires_grad() || n.bias.requires_grad())
    }
}

/// The common shape of the vision and text encoders.
pub(crate) struct EncoderSpec {
    pub dim: i64,
    pub intermediate: i64,
    pub heads: i64,
    pub layers: i64,
    pub eps: f64,
    pub act: Activation,
    pub attention_dropout: f64,
    pub causal: bool,
}

/// The stack of blocks (`encoder.layers.{i}`); block `i` is tagged depth `i + 1`.
#[derive(Debug)]
pub struct Encoder {
    pub layers: Vec<EncoderLayer>,
}

impl Encoder {
    pub(crate) fn new(scope: &Scope, spec: &EncoderSpec) -> Self {
        let root = scope.sub("layers").module(Module::Block);
        let layers = (0..spec.layers)
            .map(|i| {
                let s = root.sub(i).depth(i as u32 + 1);
                let mlp = s.sub("mlp");
                let fc_std = (spec.dim as f64).powf(-0.5);
                EncoderLayer {
                    self_attn: Attention::new(
                        &s.sub("self_attn"),
                        spec.dim,
                        spec.heads,
                        spec.layers,
                        spec.attention_dropout,
                    ),
                    layer_norm1: LayerNorm::new(&s.sub("layer_norm1"), spec.dim, spec.eps),
                    fc1: Linear::new(
                        &mlp.sub("fc1"),
                        spec.dim,
                        spec.intermediate,
                        true,
                        (2.0 * spec.dim as f64).powf(-0.5),
                    ),
                    fc2: Linear::new(
                        &mlp.sub("fc2"),
                        spec.intermediate,
                        spec.dim,
                        true,
                        fc_std * ((2 * spec.layers) as f64).powf(-0.5),
                    ),
                    layer_norm2: LayerNorm::new(&s.sub("layer_norm2"), spec.dim, spec.eps),
                    act: spec.act,
                    residual_dropout: 0.0,
                    drop_path: 0.0,
                    causal: spec.causal,
                }
            })
            .collect();
        Self { layers }
    }

    /// Applies dropout and drop-path settings; `config_attention_dropout` is the
    /// checkpoint config's value, used unless `reg` sets one.
    pub(crate) fn set_regularization(
        &mut self,
        reg: &Regularization,
        config_attention_dropout: f64,
    ) {
        let n = self.layers.len();
        for (i, layer) in self.layers.iter_mut().enumerate() {
            layer.self_attn.dropout = if reg.attention_dropout > 0.0 {
                reg.attention_dropout
            } else {
                config_attention_dropout
            };
            layer.residual_dropout = reg.residual_dropout;
            layer.drop_path = if n > 1 {
                reg.drop_path * i as f64 / (n - 1) as f64
            } else {
                reg.drop_path
            };
        }
    }

    /// Runs the blocks. With a tape, each block runs without keeping activations and
    /// is recomputed block by block in [`GradTape::backward`]; `hidden` collects the
    /// input of every block and the final output, as transformers' `hidden_states`.
    pub fn forward<'m>(
        &'m self,
        x: Tensor,
        train: bool,
        mut tape: Option<&mut GradTape<'m>>,
        mut hidden: Option<&mut Vec<Tensor>>,
    ) -> Tensor {
        let mut x = x;
        for layer in &self.layers {
            if let Some(h) = hidden.as_deref_mut() {
                h.push(x.shallow_clone());
            }
            // A block that draws random numbers runs from a seed of its own, with or
            // without checkpointing, so the recomputation can replay its draws and
            // both modes give the same numbers.
            let seed = (train && layer.is_stochastic()).then(reseed);
            x = match tape.as_deref_mut() {
                Some(tape) => tape.checkpoint(layer, x, train, seed),
                None => layer.forward(&x, train),
            };
        }
        if let Some(h) = hidden {
            h.push(x.shallow_clone());
        }
        x
    }
}

/// Draws a seed from the global generator and reseeds it with that seed.
fn reseed() -> i64 {
    let s = Tensor::randint(i64::MAX, [1], (tch::Kind::Int64, tch::Device::Cpu)).int64_value(&[0]);
    tch::manual_seed(s);
    s
}
