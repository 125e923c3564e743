//! Dropout and drop-path (stochastic depth), active only in training.

use tch::{Kind, Tensor};

/// Element-wise dropout, active only when `train` and `p > 0`.
pub(crate) fn dropout(x: Tensor, p: f64, train: bool) -> Tensor {
    if train && p > 0.0 {
        x.dropout(p, true)
    } else {
        x
    }
}

/// Stochastic depth: drops the whole residual branch per sample with probability
/// `p` and rescales the kept ones by `1 / (1 - p)`.
pub(crate) fn drop_path(x: Tensor, p: f64, train: bool) -> Tensor {
    if !train || p <= 0.0 {
        return x;
    }
    let keep = 1.0 - p;
    let mut shape = vec![1i64; x.dim()];
    shape[0] = x.size()[0];
    let mask = Tensor::empty(shape.as_slice(), (Kind::Float, x.device())).bernoulli_float_(keep);
    x * mask / keep
}
