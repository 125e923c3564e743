// CUDA facts that tch does not wrap, through libtorch's device-generic allocator
// interface (no CUDA headers needed): the caching allocator's current and peak
// allocated / reserved bytes (what torch.cuda.max_memory_allocated and
// max_memory_reserved report), resetting the peaks, and TF32 matmuls.
#include "clip_shim.h"

#include <ATen/Context.h>
#include <c10/core/CachingDeviceAllocator.h>
#include <cstdint>

extern "C" {
// out[0..4]: allocated current, allocated peak, reserved current, reserved peak
// (bytes, all pools).
int clip_cuda_memory(int device, int64_t *out, char *err, int err_len) {
  CLIP_GUARD({
    auto stats = c10::getDeviceAllocator(c10::DeviceType::CUDA)
                     ->getDeviceStats(static_cast<c10::DeviceIndex>(device));
    constexpr auto all = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    out[0] = stats.allocated_bytes[all].current;
    out[1] = stats.allocated_bytes[all].peak;
    out[2] = stats.reserved_bytes[all].current;
    out[3] = stats.reserved_bytes[all].peak;
  })
}

int clip_cuda_reset_peak(int device, char *err, int err_len) {
  CLIP_GUARD(c10::getDeviceAllocator(c10::DeviceType::CUDA)
                 ->resetPeakStats(static_cast<c10::DeviceIndex>(device)))
}

// torch.backends.cuda.matmul.allow_tf32 (PyTorch's default: off).
int clip_set_tf32_matmul(int allow, char *err, int err_len) {
  CLIP_GUARD(at::globalContext().setAllowTF32CuBLAS(allow != 0))
}

// `allowed` receives 1 when fp32 matmuls may use TF32.
int clip_tf32_matmul(int *allowed, char *err, int err_len) {
  CLIP_GUARD({ *allowed = at::globalContext().allowTF32CuBLAS() ? 1 : 0; })
}
}
