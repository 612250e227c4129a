// The op schemas: the one place the argument lists are declared.
#include <torch/library.h>

TORCH_LIBRARY(awnet, m) {
  m.def(
      "aw_conv2d(Tensor x, Tensor weight, Tensor coeff, Tensor? bias, int[2] stride, int[2] padding, "
      "int[2] dilation, int groups) -> Tensor");
  // y and what the backward reads (the bank outputs), for the autograd kernel.
  m.def(
      "aw_conv2d_forward(Tensor x, Tensor weight, Tensor coeff, Tensor? bias, int[2] stride, int[2] padding, "
      "int[2] dilation, int groups) -> (Tensor, Tensor)");
  // Gradients not asked for by output_mask (x, weight, coeff, bias) come back as empty tensors. `saved` is
  // aw_conv2d_forward's second output (may be empty when dcoeff is not asked for).
  m.def(
      "aw_conv2d_backward(Tensor grad_y, Tensor x, Tensor weight, Tensor coeff, Tensor? bias, Tensor saved, "
      "int[2] stride, int[2] padding, int[2] dilation, int groups, bool[4] output_mask) -> "
      "(Tensor, Tensor, Tensor, Tensor)");
  // Returns y, the per-bank (K, C) mean and inverse std it normalised with, and in training the per-(sample,
  // channel) mean and variance of x (else empty), which the backward reuses; updates the running stats.
  m.def(
      "mix_batch_norm(Tensor x, Tensor coeff, Tensor weight, Tensor bias, Tensor(a!) running_mean, "
      "Tensor(b!) running_var, bool training, float momentum, float eps) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // Gradients of x, coeff, weight, bias; those not asked for by output_mask come back as empty tensors.
  m.def(
      "mix_batch_norm_backward(Tensor grad_y, Tensor x, Tensor coeff, Tensor weight, Tensor bias, Tensor mean, "
      "Tensor invstd, Tensor sample_mean, Tensor sample_var, bool training, float eps, bool[4] output_mask) -> "
      "(Tensor, Tensor, Tensor, Tensor)");
}
