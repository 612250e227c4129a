"""A training run's files, each written atomically (a temporary file in the same folder, then a rename), so a
run killed at any instant leaves either the previous complete file or the new one, never a torn one.

- `checkpoint.pt`: everything a resume needs (model, optimizer, scheduler and loss-scaler states, the MTARD
  weights, the epoch, the log so far, the config); plain tensors and Python containers, readable with
  `torch.load(weights_only=True)`, which never executes code from the file.
- `model.safetensors`: the model alone, in `awnet.save`'s format (for `awnet eval`, teachers, `awnet.load`).
- `log.csv`, `log.json`: one row per finished epoch.
"""
from __future__ import annotations

import csv
import io
import json
import os
from typing import Any, Callable

import torch

CHECKPOINT, MODEL, LOG_CSV, LOG_JSON = "checkpoint.pt", "model.safetensors", "log.csv", "log.json"


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """`write(temporary_path)`, then rename the temporary file onto `path`."""
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _write_text(path: str, text: str) -> None:
    def write(temporary: str) -> None:
        with open(temporary, "w") as f:
            f.write(text)

    atomic_write(path, write)


def save_checkpoint(state: dict[str, Any], out_dir: str) -> None:
    atomic_write(os.path.join(out_dir, CHECKPOINT), lambda temporary: torch.save(state, temporary))


def load_checkpoint(out_dir: str) -> dict[str, Any] | None:
    """The run's last checkpoint, or None if it has none yet."""
    path = os.path.join(out_dir, CHECKPOINT)
    if not os.path.exists(path):
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def write_logs(history: list[dict[str, Any]], config: dict[str, Any], out_dir: str) -> None:
    """`log.json` ({"config", "epochs": rows}) and `log.csv` (one row per epoch)."""
    _write_text(os.path.join(out_dir, LOG_JSON), json.dumps({"config": config, "epochs": history}, indent=2) + "\n")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]) if history else [])
    writer.writeheader()
    writer.writerows(history)
    _write_text(os.path.join(out_dir, LOG_CSV), buffer.getvalue())
