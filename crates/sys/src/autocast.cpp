// CPU and CUDA autocast with a chosen dtype (tch::autocast only flips CUDA
// autocast with fp16).
#include "clip_shim.h"

#include <ATen/autocast_mode.h>

static at::DeviceType device_of(int device) { return device == 1 ? at::kCUDA : at::kCPU; }

extern "C" {
// device: 0 = CPU, 1 = CUDA; dtype: 0 = bfloat16, 1 = float16. `prev` receives the
// previous state packed as enabled | (previous dtype is float16) << 1.
int clip_autocast_enter(int device, int dtype, int *prev, char *err, int err_len) {
  CLIP_GUARD({
    at::DeviceType d = device_of(device);
    *prev = (at::autocast::is_autocast_enabled(d) ? 1 : 0) |
            (at::autocast::get_autocast_dtype(d) == at::kHalf ? 2 : 0);
    at::autocast::set_autocast_dtype(d, dtype == 1 ? at::kHalf : at::kBFloat16);
    at::autocast::set_autocast_enabled(d, true);
    at::autocast::increment_nesting();
  })
}

// Restores the state `clip_autocast_enter` returned in `prev`.
int clip_autocast_exit(int device, int prev, char *err, int err_len) {
  CLIP_GUARD({
    at::DeviceType d = device_of(device);
    at::autocast::set_autocast_enabled(d, (prev & 1) != 0);
    at::autocast::set_autocast_dtype(d, (prev & 2) != 0 ? at::kHalf : at::kBFloat16);
    if (at::autocast::decrement_nesting() == 0) {
      at::autocast::clear_cache();
    }
  })
}

// `enabled` receives 1 when autocast is on for the device type in this thread.
int clip_autocast_is_enabled(int device, int *enabled, char *err, int err_len) {
  CLIP_GUARD({ *enabled = at::autocast::is_autocast_enabled(device_of(device)) ? 1 : 0; })
}
}
