// A few lines of libtorch that tch does not wrap: CPU and CUDA autocast with a
// chosen dtype (tch::autocast only flips CUDA autocast with fp16). No exception
// crosses the C boundary: failures return a negative code and copy the message
// into `err`.
#include <ATen/autocast_mode.h>
#include <cstring>
#include <exception>

static at::DeviceType device_of(int device) { return device == 1 ? at::kCUDA : at::kCPU; }

static int fail(const char *what, char *err, int err_len) {
  if (err_len > 0) {
    std::strncpy(err, what, err_len - 1);
    err[err_len - 1] = 0;
  }
  return -1;
}

extern "C" {
// dtype: 0 = bfloat16, 1 = float16. Returns the previous state packed as
// enabled | (previous dtype is float16) << 1, or -1 on failure.
int clip_autocast_enter(int device, int dtype, char *err, int err_len) {
  try {
    at::DeviceType d = device_of(device);
    int prev = (at::autocast::is_autocast_enabled(d) ? 1 : 0) |
               (at::autocast::get_autocast_dtype(d) == at::kHalf ? 2 : 0);
    at::autocast::set_autocast_dtype(d, dtype == 1 ? at::kHalf : at::kBFloat16);
    at::autocast::set_autocast_enabled(d, true);
    at::autocast::increment_nesting();
    return prev;
  } catch (const std::exception &e) {
    return fail(e.what(), err, err_len);
  } catch (...) {
    return fail("unknown C++ exception", err, err_len);
  }
}

// Returns 0, or -1 on failure.
int clip_autocast_exit(int device, int prev, char *err, int err_len) {
  try {
    at::DeviceType d = device_of(device);
    at::autocast::set_autocast_enabled(d, (prev & 1) != 0);
    at::autocast::set_autocast_dtype(d, (prev & 2) != 0 ? at::kHalf : at::kBFloat16);
    if (at::autocast::decrement_nesting() == 0) {
      at::autocast::clear_cache();
    }
    return 0;
  } catch (const std::exception &e) {
    return fail(e.what(), err, err_len);
  } catch (...) {
    return fail("unknown C++ exception", err, err_len);
  }
}

// 1 enabled, 0 disabled, -1 on failure.
int clip_autocast_is_enabled(int device) {
  try {
    return at::autocast::is_autocast_enabled(device_of(device)) ? 1 : 0;
  } catch (...) {
    return -1;
  }
}
}
