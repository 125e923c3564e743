// libtorch's multi-tensor kernels that tch does not wrap: the fused AdamW step
// (one kernel over all tensors of a group, as torch.optim.AdamW(fused=True)), the
// AMP non-finite check + unscale, and resetting a gradient to undefined. Tensors
// arrive as tch's handles (at::Tensor*).
#include "clip_shim.h"

#include <ATen/ATen.h>

extern "C" {
int clip_fused_adamw(at::Tensor **params, at::Tensor **grads, at::Tensor **exp_avgs, at::Tensor **exp_avg_sqs,
                     at::Tensor **max_exp_avg_sqs, at::Tensor **steps, int n, double lr, double beta1, double beta2,
                     double weight_decay, double eps, int amsgrad, char *err, int err_len) {
  CLIP_GUARD({
    std::vector<at::Tensor> maxes = amsgrad ? clip_tensor_list(max_exp_avg_sqs, n) : std::vector<at::Tensor>{};
    at::_fused_adamw_(clip_tensor_list(params, n), clip_tensor_list(grads, n), clip_tensor_list(exp_avgs, n),
                      clip_tensor_list(exp_avg_sqs, n), maxes, clip_tensor_list(steps, n), lr, beta1, beta2,
                      weight_decay, eps, amsgrad != 0, false);
  })
}

int clip_amp_unscale(at::Tensor **grads, int n, at::Tensor *found_inf, at::Tensor *inv_scale, char *err, int err_len) {
  CLIP_GUARD(at::_amp_foreach_non_finite_check_and_unscale_(clip_tensor_list(grads, n), *found_inf, *inv_scale))
}

int clip_grad_to_none(at::Tensor *t, char *err, int err_len) { CLIP_GUARD(t->mutable_grad().reset()) }
}
