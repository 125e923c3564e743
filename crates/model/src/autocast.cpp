// A few lines of libtorch that tch does not wrap: CPU and CUDA autocast with a
// chosen dtype (tch::autocast only flips CUDA autocast with fp16).
#include <ATen/autocast_mode.h>

static at::DeviceType device_of(int device) { return device == 1 ? at::kCUDA : at::kCPU; }

extern "C" {
// dtype: 0 = bfloat16, 1 = float16. Returns the previous state packed as
// enabled | (previous dtype is float16) << 1.
int clip_autocast_enter(int device, int dtype) {
  at::DeviceType d = device_of(device);
  int prev = (at::autocast::is_autocast_enabled(d) ? 1 : 0) |
             (at::autocast::get_autocast_dtype(d) == at::kHalf ? 2 : 0);
  at::autocast::set_autocast_dtype(d, dtype == 1 ? at::kHalf : at::kBFloat16);
  at::autocast::set_autocast_enabled(d, true);
  at::autocast::increment_nesting();
  return prev;
}

void clip_autocast_exit(int device, int prev) {
  at::DeviceType d = device_of(device);
  at::autocast::set_autocast_enabled(d, (prev & 1) != 0);
  at::autocast::set_autocast_dtype(d, (prev & 2) != 0 ? at::kHalf : at::kBFloat16);
  if (at::autocast::decrement_nesting() == 0) {
    at::autocast::clear_cache();
  }
}

int clip_autocast_is_enabled(int device) { return at::autocast::is_autocast_enabled(device_of(device)) ? 1 : 0; }
}
