//! Multi-head self-attention with separate q/k/v/out projections, as
//! transformers' `CLIPAttention`, computed with libtorch's fused
//! `scaled_dot_product_attention`.

use tch::Tensor;

use crate::layers::Linear;
use crate::tags::Scope;

#[derive(Debug)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
    heads: i64,
    pub(crate) dropout: f64,
}

impl Attention {
    pub fn new(scope: &Scope, dim: i64, heads: i64, layers: i64, dropout: f64) -> Self {
        // transformers' CLIP initialisation.
        let in_std = (dim as f64).powf(-0.5) * ((2 * layers) as f64).powf(-0.5);
        let out_std = (dim as f64).powf(-0.5);
        Self {
            q_proj: Linear::new(&scope.sub("q_proj"), dim, dim, true, in_std),
            k_proj: Linear::new(&scope.sub("k_proj"), dim, dim, true, in_std),
            v_proj: Linear::new(&scope.sub("v_proj"), dim, dim, true, in_std),
            out_proj: Linear::new(&scope.sub("out_proj"), dim, dim, true, out_std),
            heads,
            dropout,
        }
    }

    /// `x`: `[batch, tokens, dim]`; `causal` masks future tokens (text tower).
    pub fn forward(&self, x: &Tensor, causal: bool, train: bool) -> Tensor {
        let (b, t, d) = x.size3().expect("attention input is [batch, tokens, dim]");
        let split = |y: Tensor| y.view([b, t, self.heads, d / self.heads]).transpose(1, 2);
        let q = split(self.q_proj.forward_t(x, train));
        let k = split(self.k_proj.forward_t(x, train));
        let v = split(self.v_proj.forward_t(x, train));
        let p = if train { self.dropout } else { 0.0 };
        let y = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<Tensor>,
            p,
            causal,
            None,
            false,
        );
        self.out_proj
            .forward_t(&y.transpose(1, 2).reshape([b, t, d]), train)
    }
}
