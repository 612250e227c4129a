"""The `awnet::` op contract, declared once (DESIGN.md section 2): each op's schema, its fake (shape-only)
implementation, and the autograd of the Python-registered implementations.

Every backend implements these schemas. The C++ extension registers only kernels for them (csrc/:
`TORCH_LIBRARY_IMPL` for CPU, CUDA and, in C++ so that its hot path has no Python, Autograd); the Triton
backend registers its kernels under the same argument lists with a `_triton` suffix, and the autograd below.
The public functions `awkernels.aw_conv2d` and `awkernels.mix_batch_norm` take the same arguments
(tests/test_contract.py holds every one of them to the schemas). The schemas live here, not in C++, because
every install has this module: one without the compiled extension still needs them for the Triton backend.
"""
from __future__ import annotations

import torch
from torch._prims_common import suggest_memory_format

_CONV = ("Tensor x, Tensor weight, Tensor coeff, Tensor? bias, int[2] stride, int[2] padding, int[2] dilation, "
         "int groups")
_GRADS = "(Tensor, Tensor, Tensor, Tensor)"

CONV_SCHEMAS = {
    "aw_conv2d": f"({_CONV}) -> Tensor",
    # y and what the backward reads (the stacked strategy's bank outputs); the C++ autograd calls this pair.
    "aw_conv2d_forward": f"({_CONV}) -> (Tensor, Tensor)",
    # dx, dweight, dcoeff, dbias; those not asked for by output_mask come back as empty tensors. `saved` is
    # aw_conv2d_forward's second output (empty when dcoeff is not asked for, or for a strategy that keeps
    # nothing).
    "aw_conv2d_backward": f"(Tensor grad_y, Tensor saved, {_CONV}, bool[4] output_mask) -> {_GRADS}",
}

_BN_PARAMS = "Tensor x, Tensor coeff, Tensor weight, Tensor bias"
_BN_SAVED = "Tensor mean, Tensor invstd, Tensor sample_mean, Tensor sample_var"
BN_SCHEMAS = {
    # y, the (K, C) mean and inverse std each bank normalised with, and in training the per-(sample, channel)
    # mean and variance of x (else empty), which the backward reuses; updates the running statistics.
    # prescale (B, C) scales x per (sample, channel) before the batch norms (a folded AW convolution's omega).
    "mix_batch_norm": f"({_BN_PARAMS}, Tensor(a!) running_mean, Tensor(b!) running_var, bool training, "
                      "float momentum, float eps, Tensor? prescale=None) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
    # dx, dcoeff, dweight, dbias, and dprescale when prescale is given; those not asked for by output_mask
    # (dprescale: prescale not given) come back as empty tensors.
    "mix_batch_norm_backward": f"(Tensor grad_y, {_BN_SAVED}, {_BN_PARAMS}, bool training, float eps, "
                               "bool[4] output_mask, Tensor? prescale=None) -> "
                               "(Tensor, Tensor, Tensor, Tensor, Tensor)",
}

# The Triton implementations: the same argument lists. Its convolution has two autograd forms, like the
# C++ pair: `aw_conv2d_triton` keeps nothing for the backward, `aw_conv2d_triton_forward` keeps what the
# strategy's dcoeff reads (its fake is the Triton module's: the kept shape depends on the strategy). Its
# MixBN is functional (a Python op with autograd must not mutate its inputs): the running statistics' new
# values come back in place of the per-sample moments, and the caller writes them into the buffers.
TRITON_SCHEMAS = {
    "aw_conv2d_triton": CONV_SCHEMAS["aw_conv2d"],
    "aw_conv2d_triton_forward": CONV_SCHEMAS["aw_conv2d_forward"],
    "aw_conv2d_triton_backward": CONV_SCHEMAS["aw_conv2d_backward"],
    "mix_batch_norm_triton": BN_SCHEMAS["mix_batch_norm"].replace("(a!) ", " ").replace("(b!) ", " "),
    "mix_batch_norm_triton_backward": BN_SCHEMAS["mix_batch_norm_backward"],
}

LIBRARY = torch.library.Library("awnet", "DEF")
for _name, _schema in {**CONV_SCHEMAS, **BN_SCHEMAS, **TRITON_SCHEMAS}.items():
    LIBRARY.define(_name + _schema)


# Fakes: the layouts are part of the contract. Outputs and dx come in x's suggested memory format, every other
# gradient contiguous, an empty tensor for each gradient not asked for; statistics in the accumulation type.
def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _like_x(x, shape) -> torch.Tensor:
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=suggest_memory_format(x))


def _conv_output(x, weight, stride, padding, dilation, channels) -> torch.Tensor:
    sizes = [x.shape[0], channels]
    for i in range(2):
        k = weight.shape[3 + i]
        sizes.append((x.shape[2 + i] + 2 * padding[i] - dilation[i] * (k - 1) - 1) // stride[i] + 1)
    return _like_x(x, sizes)


def _grads(x, others, output_mask) -> tuple:
    grads = [_like_x(x, x.shape)] + [t.new_empty(t.shape) if t is not None else None for t in others]
    return tuple(g if needed and g is not None else x.new_empty((0,)) for g, needed in zip(grads, output_mask))


def _conv_fake(x, weight, coeff, bias, stride, padding, dilation, groups):
    return _conv_output(x, weight, stride, padding, dilation, weight.shape[1])


def _conv_forward_fake(x, weight, coeff, bias, stride, padding, dilation, groups):
    return (_conv_fake(x, weight, coeff, bias, stride, padding, dilation, groups),
            _conv_output(x, weight, stride, padding, dilation, weight.shape[0] * weight.shape[1]))


def _conv_backward_fake(grad_y, saved, x, weight, coeff, bias, stride, padding, dilation, groups, output_mask):
    return _grads(x, (weight, coeff, bias), output_mask)


def _bn_fake(x, coeff, weight, bias, running_mean, running_var, training, momentum, eps, prescale=None):
    stats = x.new_empty(weight.shape, dtype=_acc(x.dtype))
    moments = x.new_empty(x.shape[:2] if training else (0,), dtype=_acc(x.dtype))
    return _like_x(x, x.shape), stats, torch.empty_like(stats), moments, torch.empty_like(moments)


def _bn_triton_fake(x, coeff, weight, bias, running_mean, running_var, training, momentum, eps, prescale=None):
    y, mean, invstd, _, _ = _bn_fake(x, coeff, weight, bias, running_mean, running_var, training, momentum, eps)
    return y, mean, invstd, weight.new_empty(weight.shape), weight.new_empty(weight.shape)


def _bn_backward_fake(grad_y, mean, invstd, sample_mean, sample_var, x, coeff, weight, bias, training, eps,
                      output_mask, prescale=None):
    return _grads(x, (coeff, weight, bias, prescale), [*output_mask, prescale is not None])


for _names, _fake in ((("aw_conv2d", "aw_conv2d_triton"), _conv_fake), (("aw_conv2d_forward",), _conv_forward_fake),
                      (("aw_conv2d_backward", "aw_conv2d_triton_backward"), _conv_backward_fake),
                      (("mix_batch_norm",), _bn_fake), (("mix_batch_norm_triton",), _bn_triton_fake),
                      (("mix_batch_norm_backward", "mix_batch_norm_triton_backward"), _bn_backward_fake)):
    for _name in _names:
        torch.library.register_fake(f"awnet::{_name}", _fake, lib=LIBRARY)


# The autograd of an implementation registered from Python (the C++ extension's, csrc/autograd/, is the same
# formula): the backward op gets the forward's inputs and the gradients to compute, skipping the others.
def _conv_setup_context(ctx, inputs, output):
    x, weight, coeff, bias, *geometry = inputs
    saved = None
    if isinstance(output, tuple):  # (y, what the backward reads)
        saved = output[1]
        ctx.mark_non_differentiable(saved)
    ctx.save_for_backward(x, weight, coeff, bias, saved)
    ctx.geometry = geometry


def _bn_setup_context(ctx, inputs, output):
    x, coeff, weight, bias, _, _, training, _, eps, prescale = inputs
    _, mean, invstd, new_mean, new_var = output
    ctx.save_for_backward(mean, invstd, x, coeff, weight, bias, prescale)
    ctx.training, ctx.eps = training, eps
    ctx.mark_non_differentiable(mean, invstd, new_mean, new_var)


def register_autograd(name: str, backward_name: str | None = None) -> None:
    """The autograd of `awnet::<name>`, a forward of the contract, through `awnet::<backward_name>`
    (`<name>_backward` unless given)."""
    backward_op = getattr(torch.ops.awnet, backward_name or f"{name}_backward")
    conv = name.startswith("aw_conv2d")

    def backward(ctx, grad_y, *_grad_saved_or_statistics):
        mask = [bool(n) for n in ctx.needs_input_grad[:4]]
        if conv:
            x, weight, coeff, bias, saved = ctx.saved_tensors
            mask[3] = mask[3] and bias is not None
            saved = saved if saved is not None else x.new_empty(0)
            grads = backward_op(grad_y, saved, x, weight, coeff, bias, *ctx.geometry, mask)
            rest = (None,) * (len(ctx.needs_input_grad) - 4)  # the geometry
        else:
            mean, invstd, x, coeff, weight, bias, prescale = ctx.saved_tensors
            empty = x.new_empty(0)  # the per-sample moments: a Triton backward reads x again
            *grads, dprescale = backward_op(grad_y, mean, invstd, empty, empty, x, coeff, weight, bias, ctx.training,
                                            ctx.eps, mask, prescale)
            # The running statistics and the three scalars get none; prescale, an input when given, its gradient.
            rest = (*(None,) * 5, *((dprescale if ctx.needs_input_grad[9] else None,) if prescale is not None else ()))
        return (*(g if needed else None for g, needed in zip(grads, mask)), *rest)

    torch.library.register_autograd(f"awnet::{name}", backward,
                                    setup_context=_conv_setup_context if conv else _bn_setup_context, lib=LIBRARY)
