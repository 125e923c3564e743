//! Gradient clipping by global L2 norm, as `torch.nn.utils.clip_grad_norm_`.

use tch::{Kind, Tensor};

use crate::OptimError;

/// Scales `grads` in place so their global L2 norm is at most `max_norm`, and
/// returns the norm before clipping. Same arithmetic as PyTorch: coefficient
/// `max_norm / (norm + 1e-6)` clamped to 1, so a non-finite norm is returned as
/// such and turns the gradients non-finite (the GradScaler or the trainer's check
/// then skips or stops). A coefficient of exactly 1 is not applied: multiplying by
/// 1 changes no value, and skipping it saves a pass over every gradient.
pub fn clip_grad_norm(grads: &[Tensor], max_norm: f64) -> Result<f64, OptimError> {
    if grads.is_empty() {
        return Ok(0.0);
    }
    tch::no_grad(|| {
        let norms: Vec<Tensor> = grads.iter().map(|g| g.f_norm()).collect::<Result<_, _>>()?;
        let total = Tensor::f_stack(&norms, 0)?.f_norm()?;
        let coef = (total.f_add_scalar(1e-6)?.f_reciprocal()? * max_norm).f_clamp_max(1.0)?;
        if coef.to_kind(Kind::Double).double_value(&[]) != 1.0 {
            for g in grads {
                let _ = g.shallow_clone().f_mul_(&coef)?;
            }
        }
        Ok(total.to_kind(Kind::Double).double_value(&[]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_gradients_are_left_alone_and_large_ones_scaled_to_the_bound() {
        let small = [
            Tensor::from_slice(&[0.1f32, -0.2]),
            Tensor::from_slice(&[0.3f32]),
        ];
        let before: Vec<Tensor> = small.iter().map(|g| g.copy()).collect();
        let norm = clip_grad_norm(&small, 1.0).unwrap_or(f64::NAN);
        assert!((norm - 0.14f64.sqrt()).abs() < 1e-6, "{norm}");
        for (g, b) in small.iter().zip(&before) {
            assert!(g.equal(b));
        }
        let large = [Tensor::from_slice(&[3.0f32, 4.0])];
        let norm = clip_grad_norm(&large, 1.0).unwrap_or(f64::NAN);
        assert!((norm - 5.0).abs() < 1e-6, "{norm}");
        let after = large[0].norm().double_value(&[]);
        assert!((after - 1.0).abs() < 1e-5, "clipped norm {after}");
    }
}
