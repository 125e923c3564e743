//! Mixed precision through libtorch autocast, on CPU (bf16) and CUDA (bf16 or
//! fp16). tch's own `autocast` only toggles CUDA fp16; this calls libtorch's
//! `at::autocast` through a small C++ shim. Matmuls, convolutions and attention run
//! in the low precision; norms, softmax and reductions stay fp32 as autocast
//! decides; leaf gradients stay fp32.

use std::ffi::{CStr, c_char};

use tch::{Device, Kind};

use crate::{ModelError, Result};

unsafe extern "C" {
    fn clip_autocast_enter(device: i32, dtype: i32, err: *mut c_char, err_len: i32) -> i32;
    fn clip_autocast_exit(device: i32, prev: i32, err: *mut c_char, err_len: i32) -> i32;
    fn clip_autocast_is_enabled(device: i32) -> i32;
}

fn device_code(device: Device) -> i32 {
    if device.is_cuda() { 1 } else { 0 }
}

/// The message a shim wrote into its error buffer.
pub(crate) fn message(err: &[c_char]) -> String {
    // SAFETY: the shim NUL-terminates the buffer on failure (and it starts zeroed).
    unsafe { CStr::from_ptr(err.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// Restores the previous autocast state when dropped (also on panic).
struct Guard {
    device: i32,
    prev: i32,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut err = [0 as c_char; 256];
        // SAFETY: plain libtorch calls on thread-local autocast state; the shim
        // catches every C++ exception.
        let code = unsafe {
            clip_autocast_exit(self.device, self.prev, err.as_mut_ptr(), err.len() as i32)
        };
        if code != 0 {
            // Nothing to return from a drop: the state may stay on; say so.
            eprintln!(
                "warning: restoring the autocast state failed: {}",
                message(&err)
            );
        }
    }
}

/// Runs `f` with autocast to `kind` (`BFloat16` or `Half`) on `device`'s type;
/// any other kind runs `f` unchanged (fp32). Nests and restores the outer state.
/// Fails, without running `f`, when libtorch cannot turn autocast on.
pub fn with_autocast<T>(device: Device, kind: Kind, f: impl FnOnce() -> T) -> Result<T> {
    let dtype = match kind {
        Kind::BFloat16 => 0,
        Kind::Half => 1,
        _ => return Ok(f()),
    };
    let device = device_code(device);
    let mut err = [0 as c_char; 256];
    // SAFETY: see Guard::drop.
    let prev = unsafe { clip_autocast_enter(device, dtype, err.as_mut_ptr(), err.len() as i32) };
    if prev < 0 {
        return Err(ModelError::Torch(tch::TchError::Torch(format!(
            "cannot enable autocast: {}",
            message(&err)
        ))));
    }
    let _guard = Guard { device, prev };
    Ok(f())
}

/// Whether autocast is on for `device`'s type in this thread.
pub fn autocast_enabled(device: Device) -> bool {
    // SAFETY: reads thread-local autocast state; the shim catches every exception.
    unsafe { clip_autocast_is_enabled(device_code(device)) == 1 }
}
