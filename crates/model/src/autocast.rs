//! Mixed precision through libtorch autocast, on CPU (bf16) and CUDA (bf16 or
//! fp16). tch's own `autocast` only toggles CUDA fp16; this calls libtorch's
//! `at::autocast` through a small C++ shim. Matmuls, convolutions and attention run
//! in the low precision; norms, softmax and reductions stay fp32 as autocast
//! decides; leaf gradients stay fp32.

use tch::{Device, Kind};

unsafe extern "C" {
    fn clip_autocast_enter(device: i32, dtype: i32) -> i32;
    fn clip_autocast_exit(device: i32, prev: i32);
    fn clip_autocast_is_enabled(device: i32) -> i32;
}

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
        // SAFETY: plain libtorch calls on thread-local autocast state.
        unsafe { clip_autocast_exit(self.device, self.prev) }
    }
}

/// Runs `f` with autocast to `kind` (`BFloat16` or `Half`) on `device`'s type;
/// any other kind runs `f` unchanged (fp32). Nests and restores the outer state.
pub fn with_autocast<T>(device: Device, kind: Kind, f: impl FnOnce() -> T) -> T {
    let dtype = match kind {
        Kind::BFloat16 => 0,
        Kind::Half => 1,
        _ => return f(),
    };
    let device = device_code(device);
    // SAFETY: see Guard::drop.
    let prev = unsafe { clip_autocast_enter(device, dtype) };
    let _guard = Guard { device, prev };
    f()
}

/// Whether autocast is on for `device`'s type in this thread.
pub fn autocast_enabled(device: Device) -> bool {
    // SAFETY: reads thread-local autocast state.
    unsafe { clip_autocast_is_enabled(device_code(device)) != 0 }
}
