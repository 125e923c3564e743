//! Mixed precision through libtorch autocast, on CPU (bf16) and CUDA (bf16 or
//! fp16). tch's own `autocast` only toggles CUDA fp16; this calls libtorch's
//! `at::autocast` through a small C++ shim. Matmuls, convolutions and attention run
//! in the low precision; norms, softmax and reductions stay fp32 as autocast
//! decides; leaf gradients stay fp32.

use tch::{Device, Kind};

use crate::{ModelError, Result};

fn device_code(device: Device) -> i32 {
    if device.is_cuda() { 1 } else { 0 }
}

/// Restores the previous autocast state when dropped (also on panic).
struct Guard {
    device: i32,
    prev: i32,
}

impl Drop for Guard {
    fn drop(&mut self) {
        // SAFETY: libtorch calls on thread-local autocast state, with the buffer
        // `call` provides; the shim catches every C++ exception.
        let restored = clip_sys::call(|err, len| unsafe {
            clip_sys::clip_autocast_exit(self.device, self.prev, err, len)
        });
        if let Err(message) = restored {
            // Nothing to return from a drop: the state may stay on; say so.
            eprintln!("warning: restoring the autocast state failed: {message}");
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
    let mut prev = 0;
    // SAFETY: see Guard::drop; `prev` is a live out-pointer.
    clip_sys::call(|err, len| unsafe {
        clip_sys::clip_autocast_enter(device, dtype, &mut prev, err, len)
    })
    .map_err(|m| ModelError::Torch(tch::TchError::Torch(format!("cannot enable autocast: {m}"))))?;
    let _guard = Guard { device, prev };
    Ok(f())
}

/// Whether autocast is on for `device`'s type in this thread.
pub fn autocast_enabled(device: Device) -> bool {
    let mut enabled = 0;
    // SAFETY: reads thread-local autocast state into a live out-pointer; the shim
    // catches every exception (a failure reads as "off").
    let read = clip_sys::call(|err, len| unsafe {
        clip_sys::clip_autocast_is_enabled(device_code(device), &mut enabled, err, len)
    });
    read.is_ok() && enabled == 1
}
