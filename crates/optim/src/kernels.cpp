// libtorch's multi-tensor kernels that tch does not wrap: the fused AdamW step
// (one kernel over all tensors of a group, as torch.optim.AdamW(fused=True)), the
// AMP non-finite check + unscale, and resetting a gradient to undefined.
// Tensors arrive as tch's handles (at::Tensor*). No exception crosses the C
// boundary: failures return 1 and copy the message into `err`.
#include <ATen/ATen.h>
#include <cstring>
#include <vector>

static std::vector<at::Tensor> list(at::Tensor **ts, int n) {
  std::vector<at::Tensor> v;
  v.reserve(n);
  for (int i = 0; i < n; ++i) v.push_back(*ts[i]);
  return v;
}

static int fail(const char *what, char *err, int err_len) {
  if (err_len > 0) {
    std::strncpy(err, what, err_len - 1);
    err[err_len - 1] = 0;
  }
  return 1;
}

extern "C" {
int clip_fused_adamw(at::Tensor **params, at::Tensor **grads, at::Tensor **exp_avgs, at::Tensor **exp_avg_sqs,
                     at::Tensor **max_exp_avg_sqs, at::Tensor **steps, int n, double lr, double beta1, double beta2,
                     double weight_decay, double eps, int amsgrad, char *err, int err_len) {
  try {
    std::vector<at::Tensor> maxes = amsgrad ? list(max_exp_avg_sqs, n) : std::vector<at::Tensor>{};
    at::_fused_adamw_(list(params, n), list(grads, n), list(exp_avgs, n), list(exp_avg_sqs, n), maxes,
                      list(steps, n), lr, beta1, beta2, weight_decay, eps, amsgrad != 0, false);
    return 0;
  } catch (const std::exception &e) {
    return fail(e.what(), err, err_len);
  } catch (...) {
    return fail("unknown C++ exception", err, err_len);
  }
}

int clip_amp_unscale(at::Tensor **grads, int n, at::Tensor *found_inf, at::Tensor *inv_scale, char *err, int err_len) {
  try {
    at::_amp_foreach_non_finite_check_and_unscale_(list(grads, n), *found_inf, *inv_scale);
    return 0;
  } catch (const std::exception &e) {
    return fail(e.what(), err, err_len);
  } catch (...) {
    return fail("unknown C++ exception", err, err_len);
  }
}

int clip_grad_to_none(at::Tensor *t, char *err, int err_len) {
  try {
    t->mutable_grad().reset();
    return 0;
  } catch (const std::exception &e) {
    return fail(e.what(), err, err_len);
  } catch (...) {
    return fail("unknown C++ exception", err, err_len);
  }
}
}
