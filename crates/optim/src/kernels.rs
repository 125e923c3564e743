//! Safe wrappers over the multi-tensor kernels of `kernels.cpp`.

use clip_sys::C_tensor;
use tch::Tensor;

use crate::OptimError;

fn ptrs(ts: &[&Tensor]) -> Vec<*mut C_tensor> {
    ts.iter().map(|t| t.as_ptr() as *mut C_tensor).collect()
}

/// Calls kernel `what` through the shims' error-buffer convention.
fn call(
    what: &str,
    f: impl FnOnce(*mut std::ffi::c_char, std::ffi::c_int) -> std::ffi::c_int,
) -> Result<(), OptimError> {
    clip_sys::call(f).map_err(|message| OptimError::Kernel {
        kernel: what.into(),
        message,
    })
}

/// The tensors of one fused AdamW call; all lists have the same length.
pub(crate) struct AdamWLists<'a> {
    pub params: Vec<&'a Tensor>,
    pub grads: Vec<Tensor>,
    pub exp_avgs: Vec<&'a Tensor>,
    pub exp_avg_sqs: Vec<&'a Tensor>,
    pub max_exp_avg_sqs: Vec<&'a Tensor>,
    pub steps: Vec<&'a Tensor>,
}

pub(crate) struct AdamWHyper {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
    pub eps: f64,
    pub amsgrad: bool,
}

/// `torch._fused_adamw_`: updates params and moments in place; the step counters
/// must already hold the new step.
pub(crate) fn fused_adamw(l: &AdamWLists, h: &AdamWHyper) -> Result<(), OptimError> {
    let n = l.params.len();
    let grads: Vec<&Tensor> = l.grads.iter().collect();
    let lengths_ok =
        grads.len() == n && l.exp_avgs.len() == n && l.exp_avg_sqs.len() == n && l.steps.len() == n;
    if !lengths_ok || (h.amsgrad && l.max_exp_avg_sqs.len() != n) {
        return Err(OptimError::Kernel {
            kernel: "_fused_adamw_".into(),
            message: "tensor lists of different lengths".into(),
        });
    }
    // SAFETY: every pointer is a live tch tensor borrowed for the call (the pointer
    // vectors outlive it); lengths checked above; the buffer is `call`'s.
    call("_fused_adamw_", |err, len| unsafe {
        clip_sys::clip_fused_adamw(
            ptrs(&l.params).as_ptr(),
            ptrs(&grads).as_ptr(),
            ptrs(&l.exp_avgs).as_ptr(),
            ptrs(&l.exp_avg_sqs).as_ptr(),
            ptrs(&l.max_exp_avg_sqs).as_ptr(),
            ptrs(&l.steps).as_ptr(),
            n as i32,
            h.lr,
            h.beta1,
            h.beta2,
            h.weight_decay,
            h.eps,
            i32::from(h.amsgrad),
            err,
            len,
        )
    })
}

/// `torch._amp_foreach_non_finite_check_and_unscale_`: multiplies every gradient by
/// `inv_scale` and sets `found_inf` to 1 if any value is inf or NaN.
pub(crate) fn amp_unscale(
    grads: &[Tensor],
    found_inf: &Tensor,
    inv_scale: &Tensor,
) -> Result<(), OptimError> {
    let refs: Vec<&Tensor> = grads.iter().collect();
    let handles = ptrs(&refs);
    // SAFETY: live tensors borrowed for the call; the buffer is `call`'s.
    call(
        "_amp_foreach_non_finite_check_and_unscale_",
        |err, len| unsafe {
            clip_sys::clip_amp_unscale(
                handles.as_ptr(),
                handles.len() as i32,
                found_inf.as_ptr() as *mut C_tensor,
                inv_scale.as_ptr() as *mut C_tensor,
                err,
                len,
            )
        },
    )
}

/// Resets a parameter's gradient to undefined (`zero_grad(set_to_none=True)`).
pub(crate) fn grad_to_none(t: &Tensor) -> Result<(), OptimError> {
    // SAFETY: a live tensor; resetting its grad slot is what PyTorch's zero_grad
    // does; the buffer is `call`'s.
    call("grad reset", |err, len| unsafe {
        clip_sys::clip_grad_to_none(t.as_ptr() as *mut C_tensor, err, len)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A libtorch error inside the shim (a C++ exception) comes back as an `Err`
    /// naming the kernel, not as an abort.
    #[test]
    fn a_libtorch_error_inside_the_shim_is_an_error() {
        let p = Tensor::zeros([3], (tch::Kind::Float, tch::Device::Cpu));
        let (m, v, s) = (
            p.zeros_like(),
            p.zeros_like(),
            Tensor::ones([], (tch::Kind::Float, tch::Device::Cpu)),
        );
        let lists = AdamWLists {
            params: vec![&p],
            // A gradient of another dtype than its parameter.
            grads: vec![Tensor::ones([3], (tch::Kind::Int64, tch::Device::Cpu))],
            exp_avgs: vec![&m],
            exp_avg_sqs: vec![&v],
            max_exp_avg_sqs: vec![],
            steps: vec![&s],
        };
        let h = AdamWHyper {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            weight_decay: 0.0,
            eps: 1e-8,
            amsgrad: false,
        };
        let err = fused_adamw(&lists, &h).unwrap_err().to_string();
        assert!(err.contains("_fused_adamw_"), "{err}");
        // found_inf must be a one-element float tensor.
        let bad_found = Tensor::zeros([2], (tch::Kind::Int64, tch::Device::Cpu));
        let scale = Tensor::ones([1], (tch::Kind::Float, tch::Device::Cpu));
        let err = amp_unscale(&[p.ones_like()], &bad_found, &scale)
            .unwrap_err()
            .to_string();
        assert!(err.contains("_amp_foreach"), "{err}");
        assert!(grad_to_none(&p).is_ok());
    }
}
