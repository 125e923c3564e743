//! The text tower (`text_model.*`): token and position embeddings, the causal
//! encoder, `final_layer_norm` and pooling at the end-of-text token.

use tch::{Kind, Tensor, nn};

use crate::config::TextConfig;
use crate::encoder::{Encoder, EncoderSpec};
use crate::error::{ModelError, Result};
use crate::grad_checkpoint::GradTape;
use crate::layers::LayerNorm;
use crate::tags::{DecayClass, Module, Scope, Tower};

/// What the text tower computes.
#[derive(Debug)]
pub struct TextOutput {
    /// `[batch, tokens, hidden]`, after `final_layer_norm`.
    pub last_hidden_state: Tensor,
    /// The hidden state at each sequence's end-of-text token, `[batch, hidden]`.
    pub pooled: Tensor,
    /// Embeddings and every block's output, when asked for.
    pub hidden_states: Option<Vec<Tensor>>,
}

#[derive(Debug)]
pub struct TextTransformer {
    pub token_embedding: Tensor,
    pub position_embedding: Tensor,
    pub encoder: Encoder,
    pub final_layer_norm: LayerNorm,
    pub(crate) config: TextConfig,
}

impl TextTransformer {
    pub(crate) fn new(scope: &Scope, cfg: &TextConfig) -> Self {
        let s = scope.tower(Tower::Text);
        let emb = s.sub("embeddings").depth(0).module(Module::Embeddings);
        let d = cfg.hidden_size;
        let init = nn::Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        Self {
            token_embedding: emb.sub("token_embedding").param(
                "weight",
                &[cfg.vocab_size, d],
                init,
                DecayClass::Embedding,
            ),
            position_embedding: emb.sub("position_embedding").param(
                "weight",
                &[cfg.max_position_embeddings, d],
                init,
                DecayClass::Embedding,
            ),
            encoder: Encoder::new(
                &s.sub("encoder"),
                &EncoderSpec {
                    dim: d,
                    intermediate: cfg.intermediate_size,
                    heads: cfg.num_attention_heads,
                    layers: cfg.num_hidden_layers,
                    eps: cfg.layer_norm_eps,
                    act: cfg.hidden_act,
                    attention_dropout: cfg.attention_dropout,
                    causal: true,
                },
            ),
            final_layer_norm: LayerNorm::new(
                &s.sub("final_layer_norm")
                    .depth(cfg.num_hidden_layers as u32 + 1)
                    .module(Module::PostNorm),
                d,
                cfg.layer_norm_eps,
            ),
            config: cfg.clone(),
        }
    }

    /// `input_ids`: `[batch, tokens]` (int64), each sequence holding an end-of-text token.
    pub fn forward<'m>(
        &'m self,
        input_ids: &Tensor,
        train: bool,
        tape: Option<&mut GradTape<'m>>,
        with_hidden: bool,
    ) -> Result<TextOutput> {
        let size = input_ids.size();
        let max = self.config.max_position_embeddings;
        if size.len() != 2 || size[1] > max || size[1] == 0 {
            return Err(ModelError::config(
                "input_ids",
                format!("has shape {size:?}, the model takes [batch, 1..={max}]"),
            ));
        }
        let t = size[1];
        let ids = input_ids.to_kind(Kind::Int64);
        let x = Tensor::embedding(&self.token_embedding, &ids, -1, false, false)
            + self.position_embedding.narrow(0, 0, t);
        let mut hidden = with_hidden.then(Vec::new);
        let last = self.encoder.forward(x, train, tape, hidden.as_mut());
        let last = self.final_layer_norm.forward(&last);
        // transformers' rule: the legacy eos_token_id 2 pools at argmax(input_ids)
        // (the end-of-text token has the highest id); otherwise at the first eos.
        let eos_pos = if self.config.eos_token_id == 2 {
            ids.argmax(-1, false)
        } else {
            ids.eq(self.config.eos_token_id)
                .to_kind(Kind::Int)
                .argmax(-1, false)
        };
        let rows = Tensor::arange(size[0], (Kind::Int64, last.device()));
        let pooled = last.index(&[Some(rows), Some(eos_pos)]);
        Ok(TextOutput {
            last_hidden_state: last,
            pooled,
            hidden_states: hidden,
        })
    }
}
