"""A training run's files, each written atomically (a temporary file in the same folder, then a rename), so a
run killed at any instant leaves either the previous complete file or the new one, never a torn one.

- `checkpoint.pt`: everything a resume needs (model, optimizer, scheduler and loss-scaler states, the MTARD
  weights, the epoch, the log so far, the config); plain tensors and Python containers, readable with
  `torch.load(weights_only=True)`, which never executes code from the file. Its `sha256` entry is a digest of
  everything else in it, checked before a resume uses it: torch.load reads a file with damaged tensor bytes
  without complaint, and a resume would train on, and save, the damage.
- `model.safetensors`: the model alone, in `awnet.save`'s format (for `awnet eval`, teachers, `awnet.load`).
- `log.csv`, `log.json`: one row per finished epoch.

A process killed while writing leaves its temporary file (`checkpoint.pt.tmp-PID`); the next run in the folder
removes it (`remove_stale_temporaries`).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from typing import Any, Callable

import torch

CHECKPOINT, MODEL, LOG_CSV, LOG_JSON = "checkpoint.pt", "model.safetensors", "log.csv", "log.json"
RUN_FILES = (CHECKPOINT, MODEL, LOG_CSV, LOG_JSON)


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


def _feed(digest: Any, value: Any) -> None:
    """Feed `value` (nested dicts, lists and tuples of tensors and plain values) into `digest`, each item
    framed by its type and size, so that no two different states feed the same bytes."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"tensor {tensor.dtype} {tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(value, (dict, list, tuple)):
        items = [item for pair in value.items() for item in pair] if isinstance(value, dict) else value
        digest.update(f"{type(value).__name__} {len(items)}\0".encode())
        for item in items:
            _feed(digest, item)
    else:  # None, bool, int, float, str: repr round-trips them
        text = repr(value)
        digest.update(f"{type(value).__name__} {len(text)}\0{text}".encode())


def _digest(state: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    _feed(digest, state)
    return digest.hexdigest()


def save_checkpoint(state: dict[str, Any], out_dir: str) -> None:
    stamped = {**state, "sha256": _digest(state)}
    atomic_write(os.path.join(out_dir, CHECKPOINT), lambda temporary: torch.save(stamped, temporary))


def load_checkpoint(out_dir: str) -> dict[str, Any] | None:
    """The run's last checkpoint, or None if it has none yet; ValueError naming the file if it is unreadable
    or fails its integrity check."""
    path = os.path.join(out_dir, CHECKPOINT)
    if not os.path.lexists(path):
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    # The weights-only unpickler runs no code from the file, so whatever it raises (on damaged bytes it can be
    # IndexError, KeyError, UnicodeDecodeError... not only UnpicklingError) means the file is unreadable.
    except Exception as error:
        reason = (str(error).strip().splitlines() or [""])[0]  # torch's messages run over many lines
        raise ValueError(f"{path} is not a readable training checkpoint (truncated or corrupted?): "
                         f"{type(error).__name__}: {reason}") from error
    if not isinstance(state, dict) or not isinstance(state.get("sha256"), str):
        raise ValueError(f"{path} is not an awnet training checkpoint (no integrity digest): move it away to "
                         "start a new run in this folder")
    if state.pop("sha256") != _digest(state):
        raise ValueError(f"{path} fails its integrity check: it was modified or corrupted; its last model is in "
                         f"{os.path.join(out_dir, MODEL)} (if intact), or start a new run in another folder")
    return state


_TEMPORARY = re.compile(r"(.+)\.tmp-(\d+)")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        pass
    return True


def remove_stale_temporaries(out_dir: str) -> None:
    """Remove the temporary files that writers of this folder's run files left behind when they were killed:
    those of processes no longer running, and this process's own (it is only starting, so writes none)."""
    for name in os.listdir(out_dir):
        match = _TEMPORARY.fullmatch(name)
        if match and match[1] in RUN_FILES and (int(match[2]) == os.getpid() or not _running(int(match[2]))):
            os.remove(os.path.join(out_dir, name))


def write_logs(history: list[dict[str, Any]], config: dict[str, Any], out_dir: str) -> None:
    """`log.json` ({"config", "epochs": rows}) and `log.csv` (one row per epoch)."""
    _write_text(os.path.join(out_dir, LOG_JSON), json.dumps({"config": config, "epochs": history}, indent=2) + "\n")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]) if history else [])
    writer.writeheader()
    writer.writerows(history)
    _write_text(os.path.join(out_dir, LOG_CSV), buffer.getvalue())
