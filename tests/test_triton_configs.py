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
    from awkernels.triton import epilogue
    from awkernels.triton.config import CANDIDATES
else:
    CANDIDATES = {}

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
@pytest.mark.parametrize("config", CANDIDATES.get("forward", []), ids=str)
def test_forward_config(config, dtype):
    for shape in SHAPES:
        (x, weight, coeff, bias, _), geometry, y, _ = _case(shape, dtype)
        assert_close(kernels.forward(x, weight, coeff, bias, *geometry, config=config), y, TOLERANCE[dtype], "y")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("config", CANDIDATES.get("input_grad", []) + CANDIDATES.get("input_grad.ieee", []), ids=str)
def test_input_grad_config(config, dtype):
    for shape in SHAPES:
        (x, weight, coeff, _, grad_y), geometry, _, expected = _case(shape, dtype)
        dx = kernels.input_grad(grad_y, x, weight, coeff, *geometry, config=config)
        assert_close(dx, expected["x"], TOLERANCE[dtype], "dx")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("config", CANDIDATES.get("weight_grad", []) + CANDIDATES.get("weight_grad.ieee", [])
                         + CANDIDATES.get("weight_grad.pair", []), ids=str)
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


COVERED = [(kind, cfg) for kind in ("forward", "input_grad", "input_grad.ieee", "weight_grad", "weight_grad.ieee",
                                    "weight_grad.pair") for cfg in CANDIDATES.get(kind, [])]


def _check_on_covering_shape(kind: str, config, dtype: torch.dtype, layout: str) -> None:
    batch, c_in, c_out, side = covering_shape(kind.split(".")[0], config)
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
LAYOUTS = [(kind, CANDIDATES[kind][0], layout, dtype)
           for kind in ("forward", "input_grad", "weight_grad", "weight_grad.pair") if CANDIDATES.get(kind)
           for layout, dtype in (("channels_last", torch.float32), ("contiguous", torch.float16),
                                 ("channels_last", torch.bfloat16))]


@pytest.mark.parametrize("kind,config,layout,dtype", LAYOUTS,
                         ids=[f"{_config_id(k, c)}-{layout}-{str(d).removeprefix('torch.')}" for k, c, layout, d in LAYOUTS])
def test_default_configurations_in_channels_last_and_half_precision(kind, config, layout, dtype):
    _check_on_covering_shape(kind, config, dtype, layout)


# The epilogue strategy's kernels (awkernels/triton/epilogue.py): tiles span samples, so their covering shapes
# need rows (sample x pixel) over two tiles with tiles straddling samples (5x5 pixels per sample, which no
# tile size divides), and for the weight gradient a reduction split over two programs or more. Every list of
# each kernel (`.float32` too), each tile once: the interpreter runs tiles, not pipelines or warps.
EPILOGUE_KINDS = ("epilogue.forward", "epilogue.input_grad", "epilogue.weight_grad")
EPILOGUE = []
for _kind in EPILOGUE_KINDS:
    for _name, _configs in CANDIDATES.items():
        if _name == _kind or _name.startswith(_kind + "."):  # the base list first: its configurations are kept
            EPILOGUE += [(_kind, cfg) for cfg in _configs
                         if all(cfg.tiles() != seen.tiles() for k, seen in EPILOGUE if k == _kind)]
SIDE = 5


def _out_pixels(stride: int) -> int:  # per sample: 3x3 filters, padding 1, SIDE x SIDE inputs
    return ((SIDE - 1) // stride + 1) ** 2


def epilogue_covering_shape(kind: str, config, stride: int = 1) -> tuple:
    """(B, C_in, C_out): with 3x3 filters, padding 1 and `stride` on SIDE x SIDE inputs, at least two tiles and
    a remainder in every dimension kernel `kind` tiles (the input gradient: in every stride phase), and for the
    weight gradient rows for two splits."""
    def over(tiles: int, per: int = 1) -> int:
        return -(-(2 * tiles + 1) // per)

    if kind == "epilogue.forward":  # M = rows, N = C_out, reduction C_in per tap
        return over(config.block_m, _out_pixels(stride)), over(config.block_k), over(config.block_n)
    if kind == "epilogue.input_grad":  # M = one phase's input rows (the smallest phase's), N = C_in, reduction C_out
        return over(config.block_m, (SIDE // stride) ** 2), over(config.block_n), over(config.block_k)
    # M = C_out, N = C_in per tap, reduction rows: four BLOCK_K steps per split at least
    return over(4 * config.block_k, _out_pixels(stride)), over(config.block_n), over(config.block_m)


def _bank_outputs(x, weight, geometry):
    stride, padding, dilation = geometry
    return torch.cat([torch.nn.functional.conv2d(x, w, None, stride, padding, dilation) for w in weight], 1)


def _check_epilogue(kind, config, shape, dtype, layout="contiguous", splits=None):
    (x, weight, coeff, bias, grad_y), geometry, y, expected = _case(shape, dtype)
    if layout == "channels_last":
        x, grad_y = (t.contiguous(memory_format=torch.channels_last) for t in (x, grad_y))
    tol = TOLERANCE[dtype]
    if kind == "epilogue.forward":
        got, saved = epilogue.forward(x, weight, coeff, bias, *geometry, keep=True, config=config, splits=splits)
        assert_close(got, y, tol, "y")
        assert_close(saved, _bank_outputs(*(t.cpu().double() for t in (x, weight)), geometry), tol, "bank outputs")
    elif kind == "epilogue.input_grad":
        assert_close(epilogue.input_grad(grad_y, x, weight, coeff, *geometry, config=config, splits=splits),
                     expected["x"], tol, "dx")
    else:
        assert_close(epilogue.weight_grad(grad_y, x, weight, coeff, *geometry, config=config), expected["weight"],
                     tol, "dweight")


# The parity shapes with K = 1 and 2 (the epilogue's), in four dtypes.
EPILOGUE_SHAPES = [(*shape[:5], banks, *shape[6:]) for shape in SHAPES for banks in (1, 2)]


# A configuration only a `.float32` list holds runs only in float32.
EPILOGUE_DTYPES = [(kind, cfg, dtype) for kind, cfg in EPILOGUE
                   for dtype in (DTYPES if cfg in CANDIDATES[kind] else [torch.float32])]


@pytest.mark.parametrize("kind,config,dtype", EPILOGUE_DTYPES,
                         ids=[f"{_config_id(k, c)}-{d}" for k, c, d in EPILOGUE_DTYPES])
def test_epilogue_config(kind, config, dtype):
    for shape in EPILOGUE_SHAPES:
        _check_epilogue(kind, config, shape, dtype)


def _reduction_splits(kind, config, batch, c_in, c_out, stride) -> int:
    """The split-K the forward or dx runs on this covering shape (3x3 filters)."""
    if kind == "epilogue.forward":
        rows, columns, reduction, out = batch * _out_pixels(stride), c_out, c_in, c_out * _out_pixels(stride)
        taps, phases = 9, 1
    else:
        rows, columns, reduction, out = batch * (-(-SIDE // stride)) ** 2, c_in, c_out, c_in * SIDE * SIDE
        taps, phases = (9, 1) if stride == 1 else (4, 4)  # stride 2, padding 1: phase (1, 1) has 2 x 2 taps
    programs = -(-rows // config.block_m) * -(-columns // config.block_n) * phases
    return epilogue.reduction_splits(taps * -(-reduction // config.block_k), programs, batch * out)


# split: None, what the host decides (split-K on these small grids, checked), or 1: the unsplit kernel, with
# two banks (one is the same loop with one dot fewer); a `.float32` list's own configurations with two banks.
COVERING = [(kind, cfg, split, banks, stride) for kind, cfg in EPILOGUE for stride in (1, 2)
            for banks in ((1, 2) if cfg in CANDIDATES[kind] else (2,))
            for split in ((None, 1) if kind != "epilogue.weight_grad" and banks == 2 else (None,))]


@pytest.mark.parametrize("kind,config,split,banks,stride", COVERING,
                         ids=[f"{_config_id(k, c)}-K{b}-s{st}{'-unsplit' if sp else ''}"
                              for k, c, sp, b, st in COVERING])
def test_epilogue_configuration_on_a_shape_larger_than_its_tiles(kind, config, split, banks, stride):
    batch, c_in, c_out = epilogue_covering_shape(kind, config, stride)
    shape = (batch, c_in, c_out, SIDE, SIDE, banks, 3, (stride, stride), (1, 1), (1, 1), True)
    if kind == "epilogue.weight_grad":
        tiles = -(-c_out // config.block_m) * 9 * -(-c_in // config.block_n)
        assert epilogue.weight_splits(batch * _out_pixels(stride), tiles, config.block_k) >= 2
    elif split is None:
        assert _reduction_splits(kind, config, batch, c_in, c_out, stride) >= 2
    _check_epilogue(kind, config, shape, torch.float32, splits=split)


EPILOGUE_LAYOUTS = [(kind, CANDIDATES[kind][0], layout, dtype) for kind in EPILOGUE_KINDS if CANDIDATES.get(kind)
                    for layout, dtype in (("channels_last", torch.float32), ("contiguous", torch.float16),
                                          ("channels_last", torch.bfloat16))]


@pytest.mark.parametrize("kind,config,layout,dtype", EPILOGUE_LAYOUTS,
                         ids=[f"{_config_id(k, c)}-{layout}-{str(d).removeprefix('torch.')}"
                              for k, c, layout, d in EPILOGUE_LAYOUTS])
def test_epilogue_default_configurations_in_channels_last_and_half_precision(kind, config, layout, dtype):
    batch, c_in, c_out = epilogue_covering_shape(kind, config)
    _check_epilogue(kind, config, (batch, c_in, c_out, SIDE, SIDE, 2, 3, (1, 1), (1, 1), (1, 1), True), dtype,
                    layout)


def test_the_epilogue_runs_only_where_int32_offsets_reach_every_element():
    from awkernels.triton.aw_conv2d import _epilogue_serves
    weight = torch.empty(1, 64, 64, 3, 3)
    geometry = ((1, 1), (1, 1), (1, 1))
    assert _epilogue_serves(torch.empty(128, 64, 32, 32, device="meta"), weight, *geometry)
    # 2^31 elements of x, or of the kept outputs (two banks double them), or strides reaching that far
    assert not _epilogue_serves(torch.empty(2**15, 64, 32, 32, device="meta"), weight, *geometry)
    x = torch.empty(2**15, 1, 4, 4, device="meta")  # 2^19 elements; kept: 2^15 x K x 2^11 x 16 = K 2^30
    assert _epilogue_serves(x, torch.empty(1, 2**11, 1, 1, 1), (1, 1), (0, 0), (1, 1))
    assert not _epilogue_serves(x, torch.empty(2, 2**11, 1, 1, 1), (1, 1), (0, 0), (1, 1))
    strided = torch.empty(2, 64, 32, 32, device="meta").as_strided((2, 64, 32, 32), (2**31, 1, 2048, 64))
    assert not _epilogue_serves(strided, weight, *geometry)


def test_split_k_only_where_the_grid_leaves_sms_idle():
    """The forward's and dx's reduction splits (split-K) fill the machine's SMs, and nothing more."""
    sms = epilogue.SMS
    # ResNet-18's layer4 forward (3x3, 512 -> 512, 4x4 outputs) on the default 64x64x32 tile: 9 x 16 steps;
    # at batch 128, 32 row tiles x 8 filter tiles fill the SMs; at batch 16, 4 x 8 leave three quarters idle.
    assert epilogue.reduction_splits(144, 256, 128 * 512 * 16) == 1
    assert epilogue.reduction_splits(144, 32, 16 * 512 * 16) == sms // 32 == 4
    assert epilogue.reduction_splits(9, 1, 100) == 9 // epilogue.MIN_SPLIT_STEPS  # each split walks 4 steps
    assert epilogue.reduction_splits(144, 1, 2**30) == 1  # int32 offsets must reach the partial outputs
    assert epilogue._runs(27, 4) == (7, 4) and epilogue._runs(9, 4) == (3, 3)  # equal runs, none empty
    assert epilogue._runs(0, 4) == (1, 1)


# MixBN's plane kernels: every tile configuration on planes of several channel and pixel tiles (the sums merge
# their pixel blocks' moments, Chan et al.), in both layouts, against torch's reductions in float64.
PLANE = [(kind, cfg) for kind in ("mixbn.sums", "mixbn.affine") for cfg in CANDIDATES.get(kind, [])]


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("kind,config", PLANE, ids=[f"{k}-{c.block_c}x{c.block_p}" for k, c in PLANE])
def test_mixbn_configuration_on_a_shape_larger_than_its_tiles(kind, config, layout):
    from awkernels.triton import mix_batch_norm as planes
    side = int((2 * config.block_p + 1) ** 0.5) + 1
    torch.manual_seed(0)
    x, g, v = (torch.randn(2, 2 * config.block_c + 1, side, side, dtype=torch.float64) * 3 + 5 for _ in range(3))
    if layout == "channels_last":
        x, g, v = (t.contiguous(memory_format=torch.channels_last) for t in (x, g, v))
    x32, g32, v32 = (t.to(device=_device(), dtype=torch.float32) for t in (x, g, v))
    if kind == "mixbn.sums":
        (mean, var), (dy_sum, dy_x_sum) = planes._plane_sums(x32, g32, True, config)
        assert_close(mean, x.mean((2, 3)), 1e-5, "mean")
        assert_close(var, x.var((2, 3), unbiased=False), 1e-5, "var")
        assert_close(dy_sum, g.sum((2, 3)), 1e-5, "sum dy")
        assert_close(dy_x_sum, (g * x).sum((2, 3)), 1e-5, "sum dy x")
    else:
        scale_u, scale_v, shift = (torch.randn(2, x.shape[1], dtype=torch.float64) for _ in range(3))
        out = planes._plane_affine(g32, *(t.to(_device(), torch.float32) for t in (scale_u, shift)), x32,
                                   scale_v.to(_device(), torch.float32), config)
        assert out.stride() == x32.stride()
        assert_close(out, scale_u[..., None, None] * g + scale_v[..., None, None] * x + shift[..., None, None],
                     1e-5, "affine")
