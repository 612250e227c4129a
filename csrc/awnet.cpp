// The op schemas: the one place the argument lists are declared.
#include <torch/library.h>

TORCH_LIBRARY(awnet, m) {
  m.def(
      "aw_conv2d(Tensor x, Tensor weight, Tensor coeff, Tensor? bias, int[2] stride, int[2] padding, "
      "int[2] dilation, int groups) -> Tensor");
  // Gradients not asked for by output_mask (x, weight, coeff, bias) come back as empty tensors.
  m.def(
      "aw_conv2d_backward(Tensor grad_y, Tensor x, Tensor weight, Tensor coeff, Tensor? bias, int[2] stride, "
      "int[2] padding, int[2] dilation, int groups, bool[4] output_mask) -> (Tensor, Tensor, Tensor, Tensor)");
  // Returns y and the per-bank (K, C) mean and inverse std it normalised with; updates the running stats.
  m.def(
      "mix_batch_norm(Tensor x, Tensor coeff, Tensor weight, Tensor bias, Tensor(a!) running_mean, "
      "Tensor(b!) running_var, bool training, float momentum, float eps) -> (Tensor, Tensor, Tensor)");
  // Gradients of x, coeff, weight, bias; those not asked for by output_mask come back as empty tensors.
  m.def(
      "mix_batch_norm_backward(Tensor grad_y, Tensor x, Tensor coeff, Tensor weight, Tensor bias, Tensor mean, "
      "Tensor invstd, bool training, float eps, bool[4] output_mask) -> (Tensor, Tensor, Tensor, Tensor)");
}
