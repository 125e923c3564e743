//! Safe wrappers over the multi-tensor kernels of `kernels.cpp`.

use std::ffi::{CStr, c_char};

use tch::Tensor;
use torch_sys::C_tensor;

use crate::OptimError;

unsafe extern "C" {
    fn clip_fused_adamw(
        params: *const *mut C_tensor,
        grads: *const *mut C_tensor,
        exp_avgs: *const *mut C_tensor,
        exp_avg_sqs: *const *mut C_tensor,
        max_exp_avg_sqs: *const *mut C_tensor,
        steps: *const *mut C_tensor,
        n: i32,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        amsgrad: i32,
        err: *mut c_char,
        err_len: i32,
    ) -> i32;
    fn clip_amp_unscale(
        grads: *const *mut C_tensor,
        n: i32,
        found_inf: *mut C_tensor,
        inv_scale: *mut C_tensor,
        err: *mut c_char,
        err_len: i32,
    ) -> i32;
    fn clip_grad_to_none(t: *mut C_tensor, err: *mut c_char, err_len: i32) -> i32;
}

fn ptrs(ts: &[&Tensor]) -> Vec<*mut C_tensor> {
    ts.iter().map(|t| t.as_ptr() as *mut C_tensor).collect()
}

fn check(code: i32, err: &[c_char], what: &str) -> Result<(), OptimError> {
    if code == 0 {
        return Ok(());
    }
    // SAFETY: the shim always NUL-terminates the buffer on failure.
    let msg = unsafe { CStr::from_ptr(err.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    Err(OptimError::Kernel {
        kernel: what.into(),
        message: msg,
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
    let mut err = [0 as c_char; 512];
    // SAFETY: every pointer is a live tch tensor borrowed for the call; lengths checked above.
    let code = unsafe {
        clip_fused_adamw(
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
            err.as_mut_ptr(),
            err.len() as i32,
        )
    };
    check(code, &err, "_fused_adamw_")
}

/// `torch._amp_foreach_non_finite_check_and_unscale_`: multiplies every gradient by
/// `inv_scale` and sets `found_inf` to 1 if any value is inf or NaN.
pub(crate) fn amp_unscale(
    grads: &[Tensor],
    found_inf: &Tensor,
    inv_scale: &Tensor,
) -> Result<(), OptimError> {
    let refs: Vec<&Tensor> = grads.iter().collect();
    let mut err = [0 as c_char; 512];
    // SAFETY: live tensors borrowed for the call.
    let code = unsafe {
        clip_amp_unscale(
            ptrs(&refs).as_ptr(),
            refs.len() as i32,
            found_inf.as_ptr() as *mut C_tensor,
            inv_scale.as_ptr() as *mut C_tensor,
            err.as_mut_ptr(),
            err.len() as i32,
        )
    };
    check(code, &err, "_amp_foreach_non_finite_check_and_unscale_")
}

/// Resets a parameter's gradient to undefined (`zero_grad(set_to_none=True)`).
pub(crate) fn grad_to_none(t: &Tensor) -> Result<(), OptimError> {
    let mut err = [0 as c_char; 512];
    // SAFETY: a live tensor; resetting its grad slot is what PyTorch's zero_grad does.
    let code = unsafe {
        clip_grad_to_none(
            t.as_ptr() as *mut C_tensor,
            err.as_mut_ptr(),
            err.len() as i32,
        )
    };
    check(code, &err, "grad reset")
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
