// PyTorch's c10d (the engine under torch.distributed and DistributedDataParallel)
// driven from Rust: a TCPStore, a ProcessGroup over Gloo (CPU) or NCCL (CUDA, with
// -DUSE_C10D_NCCL), the collectives the trainer needs, and DDP's gradient Reducer.
// Tensors arrive as tch's handles (at::Tensor*).
#include "clip_shim.h"

#include <torch/torch.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/comm.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#include <chrono>
#include <string>
#include <vector>

using namespace c10d;

struct ClipPg {
  c10::intrusive_ptr<Store> store;  // the run's store (prefixed per restart attempt)
  c10::intrusive_ptr<ProcessGroup> pg;
  std::chrono::milliseconds timeout;
};

extern "C" {

// backend: 0 = Gloo, 1 = NCCL. `server`: this process serves the store (rank 0
// outside torchrun); otherwise it connects to the one at host:port (torchrun's
// agent store). `prefix` separates restart attempts. `iface`/`gloo_host`: how Gloo
// binds (an interface name, a host name, or both empty for the default device).
int clip_pg_new(const char *host, int port, int server, const char *prefix, int rank, int world, int backend,
                long timeout_ms, const char *iface, const char *gloo_host, void **out, char *err, int err_len) {
  CLIP_GUARD({
    auto timeout = std::chrono::milliseconds(timeout_ms);
    TCPStoreOptions opts;
    opts.port = static_cast<uint16_t>(port);
    opts.isServer = server != 0;
    opts.numWorkers = world;
    opts.waitWorkers = false;
    opts.timeout = timeout;
    c10::intrusive_ptr<Store> tcp = c10::make_intrusive<TCPStore>(std::string(host), opts);
    c10::intrusive_ptr<Store> store = c10::make_intrusive<PrefixStore>(std::string(prefix), tcp);
    auto pg_store = c10::make_intrusive<PrefixStore>("default_pg", store);
    auto pg = c10::make_intrusive<ProcessGroup>(pg_store, rank, world);
    if (backend == 0) {
      auto o = ProcessGroupGloo::Options::create();
      o->timeout = timeout;
      if (std::strlen(iface) > 0) {
        o->devices.push_back(ProcessGroupGloo::createDeviceForInterface(std::string(iface)));
      } else if (std::strlen(gloo_host) > 0) {
        o->devices.push_back(ProcessGroupGloo::createDeviceForHostname(std::string(gloo_host)));
      } else {
        o->devices.push_back(ProcessGroupGloo::createDefaultDevice());
      }
      auto gloo = c10::make_intrusive<ProcessGroupGloo>(pg_store, rank, world, o);
      pg->setBackend(c10::DeviceType::CPU, ProcessGroup::BackendType::GLOO, gloo);
      pg->setDefaultBackend(ProcessGroup::BackendType::GLOO);
    } else {
#ifdef USE_C10D_NCCL
      auto o = ProcessGroupNCCL::Options::create();
      o->timeout = timeout;
      auto nccl = c10::make_intrusive<ProcessGroupNCCL>(pg_store, rank, world, o);
      pg->setBackend(c10::DeviceType::CUDA, ProcessGroup::BackendType::NCCL, nccl);
      pg->setDefaultBackend(ProcessGroup::BackendType::NCCL);
#else
      throw std::runtime_error("this build has no NCCL: rebuild with the `nccl` feature (cargo build --features nccl)");
#endif
    }
    *out = new ClipPg{store, pg, timeout};
  })
}

int clip_pg_free(void *p, char *err, int err_len) { CLIP_GUARD({ delete static_cast<ClipPg *>(p); }) }

// In-place sum over all ranks.
int clip_pg_all_reduce_sum(void *p, at::Tensor *t, char *err, int err_len) {
  CLIP_GUARD({
    std::vector<at::Tensor> v{*t};
    AllreduceOptions o;
    o.reduceOp = ReduceOp::SUM;
    static_cast<ClipPg *>(p)->pg->allreduce(v, o)->wait();
  })
}

// Every tensor from `root`, coalesced into buffers of `buffer_bytes` (what DDP does
// with the module's parameters and buffers at construction).
int clip_pg_broadcast(void *p, at::Tensor **ts, int n, long buffer_bytes, int root, char *err, int err_len) {
  CLIP_GUARD({
    auto v = clip_tensor_list(ts, n);
    broadcast_coalesced(static_cast<ClipPg *>(p)->pg, v, static_cast<size_t>(buffer_bytes), root);
  })
}

// `outs[r]` = rank r's `input` (every rank's `input` has the same shape).
int clip_pg_all_gather(void *p, at::Tensor *input, at::Tensor **outs, int n, char *err, int err_len) {
  CLIP_GUARD({
    std::vector<std::vector<at::Tensor>> o{clip_tensor_list(outs, n)};
    std::vector<at::Tensor> in{*input};
    static_cast<ClipPg *>(p)->pg->allgather(o, in)->wait();
  })
}

int clip_pg_barrier(void *p, char *err, int err_len) {
  CLIP_GUARD({ static_cast<ClipPg *>(p)->pg->barrier()->wait(); })
}

int clip_store_set(void *p, const char *key, const char *value, char *err, int err_len) {
  CLIP_GUARD({
    std::string v(value);
    static_cast<ClipPg *>(p)->store->set(std::string(key), std::vector<uint8_t>(v.begin(), v.end()));
  })
}

// Sets the store's timeout for its lifetime, then puts the group's own back (also
// when a store call throws).
struct StoreTimeout {
  ClipPg *s;
  StoreTimeout(ClipPg *s, std::chrono::milliseconds t) : s(s) { s->store->setTimeout(t); }
  ~StoreTimeout() {
    try {
      s->store->setTimeout(s->timeout);
    } catch (...) {
    }
  }
};

// libtorch's own warnings and errors (c10d's "sendBytes failed ... frame #0 ..." with a C++
// stack trace) off (`quiet` != 0) or back on: a rank explaining a failure it
// already reports in one line does not print pages of C++ frames as well.
void clip_quiet_cpp_warnings(int quiet) {
  static int before = FLAGS_caffe2_log_level;
  FLAGS_caffe2_log_level = quiet != 0 ? 3 : before;
}

// `found` = 0 when the key is not (yet) set; otherwise its value (truncated to out_len).
int clip_store_get(void *p, const char *key, long timeout_ms, int *found, char *out, int out_len, char *err,
                   int err_len) {
  CLIP_GUARD({
    auto *s = static_cast<ClipPg *>(p);
    StoreTimeout short_wait(s, std::chrono::milliseconds(timeout_ms));
    *found = 0;
    if (s->store->check({std::string(key)})) {
      auto v = s->store->get(std::string(key));
      std::string str(v.begin(), v.end());
      clip_copy_str(str.c_str(), out, out_len);
      *found = 1;
    }
  })
}

// DDP's Reducer over the trainable parameters, buckets assigned as DDP does (a
// small first bucket, then `bucket_bytes`, parameters in reverse order).
int clip_reducer_new(void *p, at::Tensor **params, int n, long bucket_bytes, long first_bucket_bytes, void **out,
                     char *err, int err_len) {
  CLIP_GUARD({
    auto ps = clip_tensor_list(params, n);
    std::vector<int64_t> order;
    for (int i = n - 1; i >= 0; --i) order.push_back(i);
    auto [buckets, limits] = compute_bucket_assignment_by_size(
        ps, {static_cast<size_t>(first_bucket_bytes), static_cast<size_t>(bucket_bytes)},
        std::vector<bool>(n, false), order);
    std::vector<int64_t> caps(limits.begin(), limits.end());
    std::unordered_map<size_t, std::string> names;
    *out = new Reducer(ps, buckets, static_cast<ClipPg *>(p)->pg, std::vector<bool>(n, false), bucket_bytes,
                       /*find_unused_parameters=*/false, /*gradient_as_bucket_view=*/false, names,
                       first_bucket_bytes, /*skip_all_reduce_unused_params=*/false,
                       /*use_python_reducer=*/false, caps);
  })
}

// The next backward pass reduces the gradients (skipped on no_sync micro-steps).
int clip_reducer_prepare(void *r, at::Tensor *loss, char *err, int err_len) {
  CLIP_GUARD({
    auto *red = static_cast<Reducer *>(r);
    red->prepare_for_forward();
    red->prepare_for_backward({*loss});
  })
}

int clip_reducer_free(void *r, char *err, int err_len) {
  CLIP_GUARD({ delete static_cast<Reducer *>(r); })
}
}
