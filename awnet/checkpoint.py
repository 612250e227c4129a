"""Checkpoints: safetensors weights with the builder's config beside them, for awnet models.

A checkpoint is a safetensors file (no pickle: loading never executes code from the file). Its metadata
holds the format, the model's `config` (the `awnet.models.build` arguments) as JSON, and a SHA-256 over the
config and every tensor, so a corrupted or truncated file is refused with a ValueError instead of loading
wrong weights. The digest guards against accidents, not forgers (who can recompute it); loading is safe
either way. Part of awnet, an implementation of AW-Net (Wei, Zhao, Li, TPAMI 2024, arXiv 2306.03430).
"""
from __future__ import annotations

import hashlib
import json
import os

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .models import build
from .nn.router import fuse_head_layouts

FORMAT = "awnet.checkpoint/1"
_CONFIG_KEYS = {"name", "num_classes", "aw", "banks", "omega", "router_width"}


def _digest(config_json: str, tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256(config_json.encode())
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(f"\0{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def save(model: nn.Module, path: str | os.PathLike) -> None:
    """Write `model`'s weights and config to `path` atomically (a temporary file, then a rename)."""
    model = getattr(model, "_orig_mod", model)  # the module inside a torch.compile wrapper
    config = getattr(model, "config", None)
    if not isinstance(config, dict):
        raise ValueError(
            "awnet.save stores the config that rebuilds the model, and this model has none: only models from "
            "awnet.models.build (or awnet.convert of one) can be saved this way; save other models' "
            "state_dict() with safetensors.torch.save_file")
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in model.state_dict().items()}
    config_json = json.dumps(config, sort_keys=True)
    metadata = {"format": FORMAT, "config": config_json, "sha256": _digest(config_json, tensors)}
    path = os.fspath(path)
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        save_file(tensors, temporary, metadata)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _shape(shapes: dict[str, torch.Size], name: str) -> str:
    return str(tuple(shapes[name])) if name in shapes else "absent"


def _check_config(path: str, config: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Raise ValueError unless `config` builds a model whose tensors have exactly the names and shapes of
    `tensors`. The model is built on the meta device (shapes, no memory), so a forged config (a digest is
    easy to recompute) asking for 10**9 classes is refused before anything is allocated."""
    try:
        with torch.device("meta"):
            shapes = {name: t.shape for name, t in build(**config).state_dict().items()}
    except (ValueError, TypeError, RuntimeError, OverflowError) as error:  # a bad value, type or size
        raise ValueError(f"{path} has a config that builds no model ({config!r}): {error}") from error
    held = {name: t.shape for name, t in tensors.items()}
    if shapes != held:
        wrong = sorted(set(shapes) ^ set(held)) or sorted(n for n in shapes if shapes[n] != held[n])
        detail = ", ".join(f"{n}: config {_shape(shapes, n)}, file {_shape(held, n)}" for n in wrong[:3])
        raise ValueError(f"{path}'s weights do not fit the model its config {config!r} describes ({detail})")


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model saved at `path` (in eval mode, on `device`, in the dtype of its weights).

    Raises ValueError when the file is not an intact awnet checkpoint (truncated, corrupted, modified, or
    describing a model whose weights it does not hold); FileNotFoundError or IsADirectoryError when `path`
    is not a file.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory, not an awnet checkpoint file")
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except SafetensorError as error:
        raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupted?): {error}") from error
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path} is not an awnet checkpoint: format {metadata.get('format')!r}, expected {FORMAT!r}")
    config_json = metadata.get("config", "")
    if metadata.get("sha256") != _digest(config_json, tensors):
        raise ValueError(f"{path} fails its integrity check: its weights or config were modified or corrupted")
    try:
        config = json.loads(config_json)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} has an unreadable config: {error}") from error
    if not isinstance(config, dict) or "name" not in config or not set(config) <= _CONFIG_KEYS:
        raise ValueError(f"{path} has an invalid config {config!r}: expected a dict with 'name' and keys "
                         f"from {sorted(_CONFIG_KEYS)}")
    fuse_head_layouts(tensors, "router.")  # a file saved before the router's heads were fused
    _check_config(path, config, tensors)
    model = build(**config)
    dtypes = {t.dtype for t in tensors.values() if t.is_floating_point()}
    if len(dtypes) == 1:  # a float16 model comes back float16, not in the builder's float32
        model.to(dtypes.pop())
    model.load_state_dict(tensors)
    return model.to(device).eval()
