//! Gradient clipping by global L2 norm, as `torch.nn.utils.clip_grad_norm_`.

use tch::{Kind, Tensor};

use crate::OptimError;

/// Scales `grads` in place so their global L2 norm is at most `max_norm`, and
/// returns the norm before clipping. Same arithmetic as PyTorch: coefficient
/// `max_norm / (norm + 1e-6)` clamped to 1 and always applied, so a non-finite norm
/// is returned as such and turns the gradients non-finite (the GradScaler or the
/// trainer's check then skips or stops).
pub fn clip_grad_norm(grads: &[Tensor], max_norm: f64) -> Result<f64, OptimError> {
    if grads.is_empty() {
        return Ok(0.0);
    }
    tch::no_grad(|| {
        let norms: Vec<Tensor> = grads.iter().map(|g| g.f_norm()).collect::<Result<_, _>>()?;
        let total = Tensor::f_stack(&norms, 0)?.f_norm()?;
        let coef = (total.f_add_scalar(1e-6)?.f_reciprocal()? * max_norm).f_clamp_max(1.0)?;
        for g in grads {
            let _ = g.shallow_clone().f_mul_(&coef)?;
        }
        Ok(total.to_kind(Kind::Double).double_value(&[]))
    })
}
