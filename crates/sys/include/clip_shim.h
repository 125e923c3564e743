// The one convention of every C++ shim of clip-sys (see src/lib.rs):
//
// - every entry point is `extern "C"` and returns CLIP_OK (0) or CLIP_ERR (-1);
//   results come back through out-pointers;
// - no exception crosses the C boundary (a throw through `extern "C"` aborts the
//   process): the body runs inside CLIP_GUARD, which catches everything and
//   copies the message into the caller's buffer `err` of `err_len` bytes
//   (NUL-terminated, cut to fit; libtorch's errors without their C++ stack
//   trace unless RUST_BACKTRACE is set).
#pragma once

#include <cstdlib>
#include <cstring>
#include <exception>
#include <vector>

#include <ATen/core/Tensor.h>

#define CLIP_OK 0
#define CLIP_ERR (-1)

// Copies `text` into `buf` (at most `len - 1` bytes, then a NUL).
static inline void clip_copy_str(const char *text, char *buf, int len) {
  if (buf != nullptr && len > 0) {
    std::strncpy(buf, text, static_cast<size_t>(len) - 1);
    buf[len - 1] = 0;
  }
}

// Reports `what` through the error buffer; returns CLIP_ERR.
static inline int clip_fail(const char *what, char *err, int err_len) {
  clip_copy_str(what, err, err_len);
  return CLIP_ERR;
}

// A libtorch error's message: without its C++ stack trace ("Exception raised
// from ... frame #0 ...") unless RUST_BACKTRACE asks for it.
static inline const char *clip_error_text(const c10::Error &e) {
  const char *bt = std::getenv("RUST_BACKTRACE");
  bool frames = bt != nullptr && std::strcmp(bt, "0") != 0;
  return frames ? e.what() : e.what_without_backtrace();
}

// The body of an entry point whose parameters end with `char *err, int err_len`.
#define CLIP_GUARD(...)                                                        \
  try {                                                                        \
    __VA_ARGS__;                                                               \
    return CLIP_OK;                                                            \
  } catch (const c10::Error &e) {                                              \
    return clip_fail(clip_error_text(e), err, err_len);                        \
  } catch (const std::exception &e) {                                          \
    return clip_fail(e.what(), err, err_len);                                  \
  } catch (...) {                                                              \
    return clip_fail("unknown C++ exception", err, err_len);                   \
  }

// tch's tensor handles (at::Tensor*) as a list.
static inline std::vector<at::Tensor> clip_tensor_list(at::Tensor **ts, int n) {
  std::vector<at::Tensor> v;
  v.reserve(n);
  for (int i = 0; i < n; ++i) v.push_back(*ts[i]);
  return v;
}
