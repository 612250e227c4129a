"""Every tile configuration of every Triton conv kernel, not only the one the autotuner would pick, against
the float64 reference (DESIGN.md section 3: a configuration can be wrong while the fastest one is right).
Under the interpreter bfloat16 dots run with upcast operands (DESIGN.md section 10)."""
import pytest
import torch

import awkernels
from awkernels import reference
from conftest import assert_close

pytestmark = pytest.mark.skipif("triton" not in awkernels.available_backends(),
                                reason="the triton backend needs triton and a CUDA GPU or TRITON_INTERPRET=1")

if "triton" in awkernels.available_backends():
    from awkernels.triton import aw_conv2d as kernels
    from awkernels.triton.config import CANDIDATES
else:
    CANDIDATES = {"forward": [], "input_grad": [], "weight_grad": [], "input_grad.ieee": [], "weight_grad.ieee": []}

TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 2e-2}
# (B, C_in, C_out, H, W, K, kernel, stride, padding, dilation, filter-level): K = 1 takes the epilogue-scale
# path, K = 3 a padded bank dimension; 3 samples with 2 per program exercise the batch split.
SHAPES = [
    (3, 5, 6, 7, 6, 2, 3, (1, 1), (1, 1), (1, 1), True),
    (3, 4, 3, 9, 5, 3, 3, (2, 1), (1, 2), (2, 1), False),
    (2, 3, 4, 6, 6, 1, 1, (2, 2), (0, 0), (1, 1), True),
]


def _device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _case(shape, dtype):
    batch, c_in, c_out, h, w, banks, k, stride, padding, dilation, filter_level = shape
    torch.manual_seed(0)
    x = torch.randn(batch, c_in, h, w, dtype=torch.float64)
    weight = torch.randn(banks, c_out, c_in, k, k, dtype=torch.float64)
    coeff = torch.rand((batch, banks, c_out) if filter_level else (batch, banks), dtype=torch.float64)
    bias = torch.randn(banks, c_out, dtype=torch.float64)
    ref = {n: t.clone().requires_grad_() for n, t in dict(x=x, weight=weight, coeff=coeff, bias=bias).items()}
    y = reference.aw_conv2d(*ref.values(), stride, padding, dilation, 1)
    grad_y = torch.randn(y.shape, dtype=torch.float64)
    y.backward(grad_y)
    cast = dict(device=_device(), dtype=dtype)
    inputs = [t.to(**cast) for t in (x, weight, coeff, bias, grad_y)]
    return inputs, (stride, padding, dilation), y, {n: t.grad for n, t in ref.items()}


DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("config", CANDIDATES["forward"], ids=str)
def test_forward_config(config, dtype):
    for shape in SHAPES:
        (x, weight, coeff, bias, _), geometry, y, _ = _case(shape, dtype)
        assert_close(kernels.forward(x, weight, coeff, bias, *geometry, config=config), y, TOLERANCE[dtype], "y")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("config", CANDIDATES["input_grad"] + CANDIDATES["input_grad.ieee"], ids=str)
def test_input_grad_config(config, dtype):
    for shape in SHAPES:
        (x, weight, coeff, _, grad_y), geometry, _, expected = _case(shape, dtype)
        dx = kernels.input_grad(grad_y, x, weight, coeff, *geometry, config=config)
        assert_close(dx, expected["x"], TOLERANCE[dtype], "dx")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("config", CANDIDATES["weight_grad"] + CANDIDATES["weight_grad.ieee"], ids=str)
def test_weight_coeff_grad_config(config, dtype):
    for shape in SHAPES:
        (x, weight, coeff, bias, grad_y), geometry, _, expected = _case(shape, dtype)
        dweight, da = kernels.weight_coeff_grad(grad_y, x, weight, coeff, *geometry, True, True, config=config)
        assert_close(dweight, expected["weight"], TOLERANCE[dtype], "dweight")
        # da is the convolution part of dcoeff; the bias part is added on the host.
        da = da + bias.to(da.dtype)[None] * grad_y.sum((2, 3), dtype=da.dtype)[:, None]
        assert_close(da if coeff.dim() == 3 else da.sum(2), expected["coeff"], TOLERANCE[dtype], "dcoeff")


# Shapes larger than every tile: the parity shapes above fit in one tile of every configuration, so the paths
# that join tiles (several filter, pixel and reduction tiles, the weight gradient's batch split) need their own.
def covering_shape(kind: str, config) -> tuple:
    """(B, C_in, C_out, H): at least two tiles of `config` in every dimension kernel `kind` tiles (3x3 kernel,
    stride 1, padding 1, so input and output pixels are H * H), and for the weight gradient a batch longer than
    one program's share."""
    def over(tiles: int, per: int = 1) -> int:  # the least n with n * per spanning two tiles and a remainder
        return -(-(2 * tiles + 1) // per)

    side = lambda pixels: int(pixels ** 0.5) + 1  # noqa: E731  (H with H * H >= pixels)
    if kind == "forward":  # M = C_out, N = output pixels, reduction C_in * 9
        return 2, over(config.block_k, 9), over(config.block_m), side(over(config.block_n))
    if kind == "input_grad":  # M = C_in, N = input pixels, reduction C_out * 9
        return 2, over(config.block_m), over(config.block_k, 9), side(over(config.block_n))
    # M = C_out, N = C_in * 9, reduction over each sample's pixels
    return (config.samples_per_program + 1, over(config.block_n, 9), over(config.block_m),
            side(over(config.block_k)))


COVERED = [(kind, cfg) for kind in ("forward", "input_grad", "input_grad.ieee", "weight_grad", "weight_grad.ieee")
           for cfg in CANDIDATES[kind]]


def _check_on_covering_shape(kind: str, config, dtype: torch.dtype, layout: str) -> None:
    batch, c_in, c_out, side = covering_shape(kind.removesuffix(".ieee"), config)
    shape = (batch, c_in, c_out, side, side, 2, 3, (1, 1), (1, 1), (1, 1), True)
    (x, weight, coeff, bias, grad_y), geometry, y, expected = _case(shape, dtype)
    if layout == "channels_last":
        x, grad_y = (t.contiguous(memory_format=torch.channels_last) for t in (x, grad_y))
    tol = TOLERANCE[dtype]
    if kind == "forward":
        assert_close(kernels.forward(x, weight, coeff, bias, *geometry, config=config), y, tol, "y")
    elif kind.startswith("input_grad"):
        assert_close(kernels.input_grad(grad_y, x, weight, coeff, *geometry, config=config), expected["x"], tol, "dx")
    else:
        assert config.batch_splits(batch) == 2
        dweight, da = kernels.weight_coeff_grad(grad_y, x, weight, coeff, *geometry, True, True, config=config)
        assert_close(dweight, expected["weight"], tol, "dweight")
        da = da + bias.to(da.dtype)[None] * grad_y.sum((2, 3), dtype=da.dtype)[:, None]
        assert_close(da, expected["coeff"], tol, "dcoeff")


def _config_id(kind: str, config) -> str:
    return f"{kind}-{config.block_m}x{config.block_n}x{config.block_k}-s{config.num_stages}-p{config.samples_per_program}"


@pytest.mark.parametrize("kind,config", COVERED, ids=[_config_id(k, c) for k, c in COVERED])
def test_every_configuration_on_a_shape_larger_than_its_tiles(kind, config):
    _check_on_covering_shape(kind, config, torch.float32, "contiguous")


# The layouts and dtypes that test leaves out, on each kernel's first configuration (its default): the tile
# joins with channels_last strides, and with half-precision loads and stores.
LAYOUTS = [(kind, CANDIDATES[kind][0], layout, dtype) for kind in ("forward", "input_grad", "weight_grad")
           if CANDIDATES[kind]
           for layout, dtype in (("channels_last", torch.float32), ("contiguous", torch.float16),
                                 ("channels_last", torch.bfloat16))]


@pytest.mark.parametrize("kind,config,layout,dtype", LAYOUTS,
                         ids=[f"{_config_id(k, c)}-{layout}-{str(d).removeprefix('torch.')}" for k, c, layout, d in LAYOUTS])
def test_default_configurations_in_channels_last_and_half_precision(kind, config, layout, dtype):
    _check_on_covering_shape(kind, config, dtype, layout)
