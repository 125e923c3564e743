//! The vision tower (`vision_model.*`): patch embedding, class and position
//! embeddings, `pre_layrnorm`, the encoder and `post_layernorm` on the class token.

use tch::{Tensor, nn};

use crate::config::VisionConfig;
use crate::encoder::{Encoder, EncoderSpec};
use crate::error::{ModelError, Result};
use crate::grad_checkpoint::GradTape;
use crate::layers::LayerNorm;
use crate::tags::{DecayClass, Module, Scope, Tower};

/// What the vision tower computes.
#[derive(Debug)]
pub struct VisionOutput {
    /// `[batch, 1 + patches, hidden]`, before `post_layernorm` (as transformers).
    pub last_hidden_state: Tensor,
    /// `post_layernorm` of the class token, `[batch, hidden]`.
    pub pooled: Tensor,
    /// Embeddings (after `pre_layrnorm`) and every block's output, when asked for.
    pub hidden_states: Option<Vec<Tensor>>,
}

#[derive(Debug)]
pub struct VisionTransformer {
    pub class_embedding: Tensor,
    pub patch_embedding: Tensor,
    pub position_embedding: Tensor,
    pub pre_layrnorm: LayerNorm,
    pub encoder: Encoder,
    pub post_layernorm: LayerNorm,
    pub(crate) config: VisionConfig,
}

impl VisionTransformer {
    pub(crate) fn new(scope: &Scope, cfg: &VisionConfig) -> Self {
        let s = scope.tower(Tower::Vision);
        let emb = s.sub("embeddings").depth(0).module(Module::Embeddings);
        let d = cfg.hidden_size;
        let std = 0.02;
        let positions = cfg.grid() * cfg.grid() + 1;
        let last = cfg.num_hidden_layers as u32 + 1;
        Self {
            class_embedding: emb.param(
                "class_embedding",
                &[d],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: (d as f64).powf(-0.5),
                },
                DecayClass::Embedding,
            ),
            patch_embedding: emb.sub("patch_embedding").param(
                "weight",
                &[d, cfg.num_channels, cfg.patch_size, cfg.patch_size],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: std,
                },
                DecayClass::Weight,
            ),
            position_embedding: emb.sub("position_embedding").param(
                "weight",
                &[positions, d],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: std,
                },
                DecayClass::Embedding,
            ),
            pre_layrnorm: LayerNorm::new(
                &s.sub("pre_layrnorm").depth(0).module(Module::PreNorm),
                d,
                cfg.layer_norm_eps,
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
                    causal: false,
                },
            ),
            post_layernorm: LayerNorm::new(
                &s.sub("post_layernorm").depth(last).module(Module::PostNorm),
                d,
                cfg.layer_norm_eps,
            ),
            config: cfg.clone(),
        }
    }

    /// `pixel_values`: `[batch, channels, image_size, image_size]`, normalised.
    pub fn forward<'m>(
        &'m self,
        pixel_values: &Tensor,
        train: bool,
        tape: Option<&mut GradTape<'m>>,
        with_hidden: bool,
    ) -> Result<VisionOutput> {
        let c = &self.config;
        let size = pixel_values.size();
        if size.len() != 4
            || size[1] != c.num_channels
            || size[2] != c.image_size
            || size[3] != c.image_size
        {
            return Err(ModelError::config(
                "pixel_values",
                format!(
                    "has shape {size:?}, the model takes [batch, {}, {}, {}]",
                    c.num_channels, c.image_size, c.image_size
                ),
            ));
        }
        let b = size[0];
        let p = c.patch_size;
        let patches = pixel_values
            .f_conv2d(
                &self.patch_embedding,
                None::<Tensor>,
                [p, p],
                [0, 0],
                [1, 1],
                1,
            )?
            .flatten(2, -1)
            .transpose(1, 2);
        let cls = self.class_embedding.expand([b, 1, c.hidden_size], false);
        let x = Tensor::cat(&[cls, patches], 1) + &self.position_embedding;
        let x = self.pre_layrnorm.forward(&x);
        let mut hidden = with_hidden.then(Vec::new);
        let last = self.encoder.forward(x, train, tape, hidden.as_mut());
        let pooled = self.post_layernorm.forward(&last.select(1, 0));
        Ok(VisionOutput {
            last_hidden_state: last,
            pooled,
            hidden_states: hidden,
        })
    }
}
