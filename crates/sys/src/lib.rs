//! # clip-sys
//!
//! The project's whole boundary with libtorch's C++ beyond what tch wraps, as
//! tch-rs splits `torch-sys` (unsafe FFI) from `tch` (the safe API): four shims
//! (`autocast.cpp`, `cuda.cpp`, `kernels.cpp`, `c10d.cpp`) compiled by one build
//! script, one convention for all of them (`include/clip_shim.h`), and one
//! function that reads their error buffer ([`call`]). Nothing here is safe to
//! call directly; the safe wrappers live with their users: clip-model
//! (autocast, CUDA memory and TF32), clip-optim (fused AdamW, AMP unscale,
//! clearing a gradient) and clip-dist (process groups, collectives, DDP's
//! Reducer).
//!
//! The convention: every function returns [`CLIP_OK`] or [`CLIP_ERR`], gives its
//! results through out-pointers, and takes an error buffer (`err`, `err_len`) as
//! its last two arguments, where a failure's message goes (every C++ exception is
//! caught inside the shim: one that crossed `extern "C"` would abort the process).
//! Tensors cross as tch's handles ([`C_tensor`], an `at::Tensor*`).
//!
//! Layering: depends on torch-sys only; used by clip-model, clip-optim and
//! clip-dist.
//!
//! ```
//! // Reading the TF32 flag through the error-buffer convention.
//! let mut allowed = 0;
//! // SAFETY: an out-pointer to a live integer and the buffer `call` provides.
//! clip_sys::call(|err, len| unsafe { clip_sys::clip_tf32_matmul(&mut allowed, err, len) })
//!     .unwrap();
//! assert_eq!(allowed, 0, "PyTorch's default: no TF32");
//! ```

use std::ffi::{c_char, c_int, c_long, c_void};

pub use torch_sys::C_tensor;

/// A shim function's success.
pub const CLIP_OK: c_int = 0;
/// A shim function's failure: its message is in the error buffer.
pub const CLIP_ERR: c_int = -1;

/// The size of the error buffer [`call`] passes.
pub const ERR_LEN: usize = 2048;

/// The libtorch lib folder the shims were built against (where
/// `libtorch_cuda.so` lies).
pub const LIBTORCH_LIB: &str = env!("CLIP_LIBTORCH_LIB");

/// Calls a shim function with a fresh error buffer (`f` gets its pointer and
/// length): `Ok` on [`CLIP_OK`], else the message the shim wrote.
pub fn call(f: impl FnOnce(*mut c_char, c_int) -> c_int) -> Result<(), String> {
    let mut err = vec![0 as c_char; ERR_LEN];
    match f(err.as_mut_ptr(), ERR_LEN as c_int) {
        CLIP_OK => Ok(()),
        code => {
            let message = c_string(&err);
            Err(if message.is_empty() {
                format!("the C++ shim failed with code {code} and no message")
            } else {
                message
            })
        }
    }
}

/// The NUL-terminated text at the start of `buf` (all of `buf` when it holds no
/// NUL), lossily as UTF-8 and trimmed.
pub fn c_string(buf: &[c_char]) -> String {
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).trim().to_string()
}

unsafe extern "C" {
    // autocast.cpp: device 0 = CPU, 1 = CUDA; dtype 0 = bfloat16, 1 = float16.
    pub fn clip_autocast_enter(
        device: c_int,
        dtype: c_int,
        prev: *mut c_int,
        err: *mut c_char,
        err_len: c_int,
    ) -> c_int;
    pub fn clip_autocast_exit(
        device: c_int,
        prev: c_int,
        err: *mut c_char,
        err_len: c_int,
    ) -> c_int;
    pub fn clip_autocast_is_enabled(
        device: c_int,
        enabled: *mut c_int,
        err: *mut c_char,
        err_len: c_int,
    ) -> c_int;

    // cuda.cpp: `out` receives 4 values (allocated, peak allocated, reserved,
    // peak reserved bytes).
    pub fn clip_cuda_memory(
        device: c_int,
        out: *mut i64,
        err: *mut c_char,
        err_len: c_int,
    ) -> c_int;
    pub fn clip_cuda_reset_peak(device: c_int, err: *mut c_char, err_len: c_int) -> c_int;
    pub fn clip_set_tf32_matmul(allow: c_int, err: *mut c_char, err_len: c_int) -> c_int;
    pub fn clip_tf32_matmul(allowed: *mut c_int, err: *mut c_char, err_len: c_int) -> c_int;

    // kernels.cpp: lists of `n` tensor handles.
    pub fn clip_fused_adamw(
        params: *const *mut C_tensor,
        grads: *const *mut C_tensor,
        exp_avgs: *const *mut C_tensor,
        exp_avg_sqs: *const *mut C_tensor,
        max_exp_avg_sqs: *const *mut C_tensor,
        steps: *const *mut C_tensor,
        n: c_int,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        amsgrad: c_int,
        err: *mut c_char,
        err_len: c_int,
    ) -> c_int;
    pub fn clip_amp_unscale(
        grads: *const *mut C_tensor,
        n: c_int,
        found_inf: *mut C_tensor,
        inv_scale: *mut C_tensor,
        err: *mut c_char,
        err_len: c_int,
    ) -> c_int;
    pub fn clip_grad_to_none(t: *mut C_tensor, err: *mut c_char, err_len: c_int) -> c_int;

    // c10d.cpp: a process group (`pg`, from clip_pg_new) and DDP's Reducer (`r`,
    // from clip_reducer_new), each freed once by its `_free`.
    pub fn clip_pg_new(
        host: *const c_char,
        port: c_int,
        server: c_int,
        prefix: *const c_char,
        rank: c_int,
        world: c_int,
        backend: c_int,
        timeout_ms: c_long,
        iface: *const c_char,
        gloo_host: *const c_char,
        out: *mut *mut c_void,
        err: *mut c_char,
        err_len: c_int,
    ) -> c_int;
    pub fn clip_pg_free(pg: *mut c_void, err: *mut c_char, err_len: c_int) -> c_int;
    pub fn clip_pg_all_reduce_sum(
        pg: *mut c_void,
        t: *mut C_tensor,
        err: *mut c_char,
        err_len: c_int,
    ) -> c_int;
    pub fn clip_pg_broadcast(
        pg: *mut c_void,
        ts: *const *mut C_tensor,
        n: c_int,
        buffer_bytes: c_long,
        root: c_int,
        err: *mut c_char,
        err_len: c_int,
    ) -> c_int;
    pub fn clip_pg_all_gather(
        pg: *mut c_void,
        input: *mut C_tensor,
        outs: *const *mut C_tensor,
        n: c_int,
        err: *mut c_char,
        err_len: c_int,
    ) -> c_int;
    pub fn clip_pg_barrier(pg: *mut c_void, err: *mut c_char, err_len: c_int) -> c_int;
    pub fn clip_quiet_cpp_warnings(quiet: c_int);
    pub fn clip_store_set(
        pg: *mut c_void,
        key: *const c_char,
        value: *const c_char,
        err: *mut c_char,
        err_len: c_int,
    ) -> c_int;
    pub fn clip_store_get(
        pg: *mut c_void,
        key: *const c_char,
        timeout_ms: c_long,
        found: *mut c_int,
        out: *mut c_char,
        out_len: c_int,
        err: *mut c_char,
        err_len: c_int,
    ) -> c_int;
    pub fn clip_reducer_new(
        pg: *mut c_void,
        params: *const *mut C_tensor,
        n: c_int,
        bucket_bytes: c_long,
        first_bucket_bytes: c_long,
        out: *mut *mut c_void,
        err: *mut c_char,
        err_len: c_int,
    ) -> c_int;
    pub fn clip_reducer_prepare(
        r: *mut c_void,
        loss: *mut C_tensor,
        err: *mut c_char,
        err_len: c_int,
    ) -> c_int;
    pub fn clip_reducer_free(r: *mut c_void, err: *mut c_char, err_len: c_int) -> c_int;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_read_up_to_their_nul_and_a_failure_names_its_code_without_one() {
        let buf: Vec<c_char> = b"no such op\0garbage"
            .iter()
            .map(|&b| b as c_char)
            .collect();
        assert_eq!(c_string(&buf), "no such op");
        let full: Vec<c_char> = b"cut".iter().map(|&b| b as c_char).collect();
        assert_eq!(c_string(&full), "cut");
        assert_eq!(call(|_, _| CLIP_OK), Ok(()));
        assert_eq!(
            call(|_, _| CLIP_ERR),
            Err("the C++ shim failed with code -1 and no message".into())
        );
    }

    /// A C++ exception thrown inside a shim comes back as its message (the
    /// process does not abort), and the shim's state is left as it was.
    #[test]
    fn an_exception_inside_a_shim_is_its_error_message() {
        let mut out = [0i64; 4];
        // CUDA device 1000 does not exist (nor, on a CPU machine, any): libtorch
        // throws inside the allocator call.
        // SAFETY: `out` holds the 4 values the shim writes.
        let e = call(|err, len| unsafe { clip_cuda_memory(1000, out.as_mut_ptr(), err, len) })
            .unwrap_err();
        assert!(!e.is_empty() && !e.contains("no message"), "{e}");
        assert_eq!(out, [0; 4], "nothing written on failure");
    }
}
