// CPU passes of the MixBN backward, as ATen ops: their CPU kernels already vectorise and accept any layout.
#include "../awnet.h"

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

namespace awnet::cpu {

std::tuple<Tensor, Tensor> bn_grad_sums(const Tensor& dy, const Tensor& x) {
  const auto acc = at::toOpMathType(x.scalar_type());
  return {dy.sum({2, 3}, false, acc), (dy.to(acc) * x.to(acc)).sum({2, 3})};
}

Tensor bn_grad_input(const Tensor& dy, const Tensor& x, const Tensor& scale_dy, const Tensor& scale_x,
                     const Tensor& shift) {
  const auto per_channel = [&](const Tensor& t) { return t.view({x.size(0), x.size(1), 1, 1}); };
  auto dx = at::empty_like(x);
  at::addcmul_out(dx, per_channel(shift), x, per_channel(scale_x));
  return dx.addcmul_(dy, per_channel(scale_dy));
}

}  // namespace awnet::cpu
