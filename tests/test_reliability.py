"""Hostile and careless input to awnet (issue 21): no code run from a data file, no silent corruption, no work
lost to a setting checked too late, and a command line that names the problem in one line (exit 2)."""
from __future__ import annotations

import json
import math
import os
import pickle
import random
import re
import resource
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import awnet
from awnet import cli
from awnet.checkpoint import FORMAT, _digest
from awnet.data import load_dataset
from awnet.eval import attack_suite, evaluate
from awnet.train import TrainConfig, train
from awnet.train.recipes import RECIPES
from awnet.train.reproduce import ReproduceConfig
from awnet.train.state import CHECKPOINT, LOG_JSON, MODEL, load_checkpoint, save_checkpoint
from mnist_models import one_thread  # noqa: F401 (fixture)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO_ROOT}
SMALL = {"epochs": 1, "n_train": 200, "batch_size": 50, "val_n": 20, "val_steps": 2, "progress": False}
SMALL_ARGS = ["--epochs", "1", "--n-train", "200", "--batch-size", "50", "--val-n", "20", "--val-steps", "2",
              "--no-progress"]

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(out, **overrides) -> TrainConfig:
    return TrainConfig(recipe="standard", out=str(out), **{**SMALL, **overrides})


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> str:
    """A finished one-epoch run (standard recipe, 200 digits); tests copy what they damage."""
    out = tmp_path_factory.mktemp("run")
    train(tiny(out))
    return str(out)


@pytest.fixture
def nothing_runs(monkeypatch):
    """Any data read, model load or training run fails the test: the settings must be checked before them."""
    def ran(*args, **kwargs):
        raise AssertionError("work started before the settings were checked")

    for target in ("awnet.data.load_dataset", "awnet.train.loop.load_dataset", "awnet.train.reproduce.train",
                   "awnet.cli.load_model"):
        monkeypatch.setattr(target, ran)


def one_line_error(capsys, *names: str) -> str:
    err = capsys.readouterr().err
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
    assert "Traceback" not in err and all(name in err for name in names), err
    return err


# --- CIFAR batches: no code runs from a data file --------------------------------------------------------

class _Planted:
    """Unpickles as a call to os.system: what a planted batch file does under a plain pickle.load."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _cifar_folder(root, batch_of) -> str:
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump(batch_of(name), f, protocol=2 if name == "data_batch_2" else pickle.DEFAULT_PROTOCOL)
    return str(folder)


def _batch() -> dict:
    """Three images holding what an official batch holds."""
    return {b"batch_label": b"training batch", b"labels": [0, 9, 3],
            b"data": (np.arange(3 * 3072) % 256).astype(np.uint8).reshape(3, 3072),
            b"filenames": [b"a.png", b"b.png", b"c.png"]}


def test_cifar_batches_of_every_pickle_protocol_load(tmp_path):
    _cifar_folder(tmp_path, lambda name: _batch())  # data_batch_2 at protocol 2 (bytes via _codecs.encode)
    x, y = load_dataset("cifar10", "train", tmp_path)
    assert x.shape == (15, 3, 32, 32) and y.tolist() == [0, 9, 3] * 5


def test_cifar_planted_batch_runs_no_code(tmp_path):
    marker = tmp_path / "marker"
    folder = _cifar_folder(tmp_path, lambda name: {**_batch(), b"labels": _Planted(f"touch {marker}")}
                           if name == "data_batch_3" else _batch())
    with pytest.raises(ValueError, match="data_batch_3.*not a CIFAR batch.*system"):
        load_dataset("cifar10", "train", tmp_path)
    assert not marker.exists(), "the planted batch ran its code"
    assert os.path.exists(os.path.join(folder, "data_batch_3"))


@pytest.mark.parametrize("batch, match", [
    ({b"data": np.full((2, 3072), 1000, dtype=np.int64), b"labels": [1, 2]}, "uint8"),
    ({b"data": np.zeros((2, 3072), dtype=np.uint8), b"labels": [1, 10]}, r"labels.*\[0, 10\)"),
    ({b"data": np.zeros((2, 3072), dtype=np.uint8), b"labels": [1]}, "labels"),
    ({b"data": np.zeros((2, 3072), dtype=np.uint8), b"labels": [1, 10 ** 30]}, "labels"),
    ({b"data": np.zeros((2, 3072), dtype=np.uint8), b"labels": np.array([1, -1])}, "labels"),
    ({b"data": np.zeros((2, 3072), dtype=object), b"labels": [1, 2]}, "uint8"),
    ([1, 2, 3], "expected a dict"),
])
def test_cifar_malformed_batch_is_refused(tmp_path, batch, match):
    _cifar_folder(tmp_path, lambda name: batch if name == "test_batch" else _batch())
    with pytest.raises(ValueError, match=f"test_batch.*{match}"):
        load_dataset("cifar10", "test", tmp_path)


def test_cifar_truncated_batch_names_the_file(tmp_path):
    folder = _cifar_folder(tmp_path, lambda name: _batch())
    path = os.path.join(folder, "test_batch")
    with open(path, "r+b") as f:
        f.truncate(100)
    with pytest.raises(ValueError, match="test_batch is not a CIFAR batch"):
        load_dataset("cifar10", "test", tmp_path)


# --- the resumable checkpoint: integrity, clear errors, stale temporaries ----------------------------------

def _copy_run(run: str, to) -> str:
    to.mkdir()
    for name in os.listdir(run):
        with open(os.path.join(run, name), "rb") as src, open(to / name, "wb") as dst:
            dst.write(src.read())
    return str(to)


def test_intact_checkpoint_resumes(run, tmp_path):
    out = _copy_run(run, tmp_path / "copy")
    assert load_checkpoint(out)["epoch"] == 1
    history = train(tiny(out, resume=True))  # a finished run: nothing left to train, the state verified
    assert len(history) == 1


def test_damaged_weight_in_checkpoint_is_refused_before_resuming(run, tmp_path, monkeypatch):
    out = _copy_run(run, tmp_path / "copy")
    path = os.path.join(out, CHECKPOINT)
    weight = torch.load(path, weights_only=True)["model"]["stages.1.conv.weight"]
    data = bytearray(open(path, "rb").read())
    offset = data.find(weight.numpy().tobytes())
    assert offset > 0
    data[offset + 64:offset + 96] = bytes(32)  # 32 bytes inside one weight tensor: torch.load does not notice
    open(path, "wb").write(bytes(data))
    model_bytes = open(os.path.join(out, MODEL), "rb").read()
    monkeypatch.setattr("awnet.train.loop.load_dataset", lambda *a: pytest.fail("resumed a damaged checkpoint"))
    with pytest.raises(ValueError, match=f"{re.escape(path)} fails its integrity check"):
        train(tiny(out, resume=True))
    assert open(os.path.join(out, MODEL), "rb").read() == model_bytes, "the damage must not reach the model file"


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "no digest", "directory"])
def test_unreadable_checkpoint_names_the_file(run, tmp_path, damage):
    out = _copy_run(run, tmp_path / "copy")
    path = os.path.join(out, CHECKPOINT)
    data = open(path, "rb").read()
    if damage == "directory":
        os.remove(path)
        os.mkdir(path)
    else:
        with open(path, "wb") as f:
            if damage == "no digest":
                torch.save({"epoch": 1}, f)
            else:
                f.write({"truncated": data[:len(data) // 2], "empty": b"", "garbage": random.Random(0).randbytes(4096)}[damage])
    with pytest.raises(ValueError, match=f"{re.escape(path)} is not a"):
        load_checkpoint(out)


@pytest.mark.parametrize("header", [b"", b"\x80\x02", b"PK\x03\x04"], ids=["raw", "pickle", "zip"])
def test_random_bytes_checkpoint_is_refused_by_name(tmp_path, header):
    """Random bytes drive the unpickler into any of its failures (IndexError, KeyError, ...): every one must
    come out as the ValueError that names the file, for many seeds, behind the headers the loader branches on."""
    path = os.path.join(str(tmp_path), CHECKPOINT)
    for seed in range(200):
        with open(path, "wb") as f:
            f.write(header + random.Random(seed).randbytes(512))
        with pytest.raises(ValueError, match=f"{re.escape(path)} is not a"):
            load_checkpoint(str(tmp_path))


def test_checkpoint_digest_covers_every_value(tmp_path):
    state = {"model": {"w": torch.arange(4.0)}, "history": [{"loss": 0.5}], "epoch": 1, "first": None}
    save_checkpoint(state, str(tmp_path))
    assert load_checkpoint(str(tmp_path))["history"] == [{"loss": 0.5}]
    stamped = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    for change in ({"epoch": 2}, {"history": [{"loss": 0.25}]}, {"model": {"w": torch.arange(4.0) + 1}}):
        torch.save({**stamped, **change}, tmp_path / CHECKPOINT)
        with pytest.raises(ValueError, match="integrity"):
            load_checkpoint(str(tmp_path))


def test_stale_temporaries_are_removed_at_start(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "run"
    out.mkdir()
    stale = [f"{CHECKPOINT}.tmp-{dead.pid}", f"{MODEL}.tmp-{os.getpid()}"]
    kept = [f"{LOG_JSON}.tmp-{os.getppid()}", f"notes.tmp-{dead.pid}"]  # a running writer's; not a run file
    for name in stale + kept:
        (out / name).touch()
    train(tiny(out))
    assert not any((out / name).exists() for name in stale) and all((out / name).exists() for name in kept)


def test_load_a_directory_or_missing_file_names_it(tmp_path):
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        awnet.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        awnet.load(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_model_keeps_its_dtype_through_save_and_load(tmp_path, dtype):
    torch.manual_seed(0)
    model = awnet.models.build("smallcnn", aw=True).to(dtype)
    awnet.save(model, tmp_path / "m.safetensors")
    loaded = awnet.load(tmp_path / "m.safetensors")
    theirs = loaded.state_dict()
    assert all(torch.equal(t, theirs[name]) and t.dtype == theirs[name].dtype
               for name, t in model.state_dict().items())


# --- forged model configs ----------------------------------------------------------------------------------

def _forge(tmp_path, config: dict) -> str:
    """A smallcnn checkpoint whose config is replaced by `config`, with its digest recomputed (a forger can)."""
    path = str(tmp_path / "forged.safetensors")
    awnet.save(awnet.models.build("smallcnn"), path)
    with safe_open(path, framework="pt") as f:
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    config_json = json.dumps(config, sort_keys=True)
    save_file(tensors, path, {"format": FORMAT, "config": config_json, "sha256": _digest(config_json, tensors)})
    return path


@pytest.mark.parametrize("config, match", [
    ({"name": "wrn34_10", "num_classes": 10 ** 6}, "do not fit"),
    ({"name": "smallcnn", "num_classes": 10 ** 9}, r"fc.weight: config \(1000000000, 128\), file \(10, 128\)"),
    ({"name": "smallcnn", "num_classes": 10 ** 30}, "builds no model"),
    ({"name": "smallcnn", "num_classes": "10"}, "builds no model"),
    ({"name": ["smallcnn"]}, "builds no model"),
    ({"name": "smallcnn", "aw": True, "banks": 1, "omega": True, "router_width": 10 ** 6}, "do not fit"),
])
def test_forged_config_is_refused_before_allocating(tmp_path, config, match):
    path = _forge(tmp_path, config)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    with pytest.raises(ValueError, match=f"{re.escape(path)}.*{match}"):
        awnet.load(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 200 * 1024, "allocated the forged model"


# --- attacks: an empty suite is no robustness ---------------------------------------------------------------

def test_empty_attack_suite_is_an_error(capsys, nothing_runs, tmp_path):
    with pytest.raises(ValueError, match="empty"):
        attack_suite([], eps=0.3)
    with pytest.raises(ValueError, match="empty"):
        evaluate(awnet.models.build("smallcnn"), torch.rand(2, 1, 28, 28), torch.tensor([0, 1]), [], eps=0.3)
    for attacks in ("", ",", " , "):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["eval", "--checkpoint", "m.safetensors", "--attacks", attacks,
                      "--out", str(tmp_path / "r.json")])
        assert exit_.value.code == 2
        one_line_error(capsys, "--attacks", "names no attack")
    assert not os.listdir(tmp_path)


# --- a non-finite loss stops training and keeps the last good checkpoint -------------------------------------

def test_non_finite_loss_stops_training_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    steps = []
    standard = RECIPES["standard"]

    def diverging(ctx, x, y):  # the second epoch's loss is NaN, as after too large a learning rate
        loss, stats = standard(ctx, x, y)
        steps.append(1)
        if len(steps) > 4:  # 200 digits, batches of 50: 4 steps per epoch
            loss = loss * math.nan
            stats = {**stats, "loss": loss}
        return loss, stats

    monkeypatch.setitem(RECIPES, "standard", diverging)
    out = tmp_path / "run"
    assert cli.main(TRAIN + ["--out", str(out), *SMALL_ARGS, "--epochs", "3"]) == 1
    one_line_error(capsys, "became nan in epoch 2", "keeps the checkpoint of epoch 1")
    assert len(steps) == 8, "stopped at the end of the epoch the loss went bad"
    saved = load_checkpoint(str(out))
    assert saved["epoch"] == 1 and len(json.loads((out / LOG_JSON).read_text())["epochs"]) == 1
    assert all(torch.isfinite(t).all() for t in awnet.load(out / MODEL).state_dict().values())


# --- every setting is checked before anything runs ----------------------------------------------------------

TRAIN = ["train", "--recipe", "standard"]
EVAL = ["eval", "--checkpoint", "m.safetensors"]


@pytest.mark.parametrize("argv, name", [
    (TRAIN + ["--val-n", "0"], "--val-n"),
    (TRAIN + ["--val-steps", "0"], "--val-steps"),
    (TRAIN + ["--attack-steps", "0"], "--attack-steps"),
    (TRAIN + ["--batch-size", "0"], "--batch-size"),
    (TRAIN + ["--n-train", "-1"], "--n-train"),
    (TRAIN + ["--epochs", "0"], "--epochs"),
    (TRAIN + ["--epochs", "-3"], "--epochs"),
    (TRAIN + ["--epochs", "2.5"], "--epochs"),
    (TRAIN + ["--lr", "nan"], "--lr"),
    (TRAIN + ["--lr", "inf"], "--lr"),
    (TRAIN + ["--warmup", "1.5"], "--warmup"),
    (TRAIN + ["--router-width", "1"], "--router-width"),
    (EVAL + ["--steps", "0"], "--steps"),
    (EVAL + ["--batch-size", "0"], "--batch-size"),
    (EVAL + ["-n", "0"], "-n/--n"),
    (EVAL + ["--eps", "nan"], "--eps"),
    (EVAL + ["--attacks", "pgd,bogus"], "unknown attacks ['bogus']"),
    (EVAL + ["--out", "{tmp}/missing/r.json"], "does not exist"),
    (EVAL + ["--out", "{tmp}"], "is a directory"),
    (["reproduce", "--standard-epochs", "0"], "--standard-epochs"),
    (["reproduce", "--n-eval", "-1"], "--n-eval"),
])
def test_cli_setting_is_checked_before_anything_runs(argv, name, tmp_path, capsys, nothing_runs):
    out = tmp_path / "out"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(out / "r.json") if argv[0] == "eval" else str(out)]
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    one_line_error(capsys, name)
    assert not os.listdir(tmp_path), "something was written before the check"


def test_library_settings_are_checked_when_made():
    with pytest.raises(ValueError, match="epochs must be a positive int, got 0"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="lr must be a finite number > 0, got nan"):
        TrainConfig(lr=float("nan"))
    with pytest.raises(ValueError, match="val_n must be a positive int, got True"):
        TrainConfig(val_n=True)
    with pytest.raises(ValueError, match="standard_epochs must be a positive int, got 0"):
        ReproduceConfig(standard_epochs=0)
    assert TrainConfig(lr=1, n_train=np.int64(5)).lr == 1  # ints are numbers; numpy ints are ints


@pytest.fixture
def unwritable(tmp_path) -> str:
    """A folder no file can be created in (root may write anywhere chmod forbids, but not in /sys)."""
    if os.geteuid() == 0:
        return "/sys/awnet-reliability-test"
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return str(folder / "run")


def test_unwritable_out_is_refused_before_anything_runs(unwritable, tmp_path, capsys, nothing_runs):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for out, problem in ((unwritable, "cannot be written"), (str(a_file / "run"), "is not a directory")):
        with pytest.raises(SystemExit) as exit_:
            cli.main(TRAIN + ["--out", out])
        assert exit_.value.code == 2
        one_line_error(capsys, "--out", problem)
        with pytest.raises(OSError, match=problem):  # the library checks it too, before reading any data
            train(tiny(out))
    assert not os.path.exists(unwritable) and set(os.listdir(tmp_path)) <= {"a-file", "read-only"}


def test_cli_user_errors_print_one_line(run, tmp_path, capsys):
    assert cli.main(EVAL[:1] + ["--checkpoint", str(tmp_path), "--out", str(tmp_path / "r.json")]) == 2
    one_line_error(capsys, "awnet eval: error:", f"{tmp_path} is a directory")
    out = _copy_run(run, tmp_path / "copy")
    with open(os.path.join(out, CHECKPOINT), "r+b") as f:
        f.truncate(1000)
    assert cli.main(TRAIN + ["--out", out, "--resume", *SMALL_ARGS]) == 2
    one_line_error(capsys, f"{os.path.join(out, CHECKPOINT)} is not a readable training checkpoint")
    assert cli.main(TRAIN + ["--out", run, *SMALL_ARGS]) == 2
    one_line_error(capsys, "already holds a training run: pass --resume")


def test_entry_point_prints_one_line_and_the_traceback_only_in_debug_mode(tmp_path):
    command = [sys.executable, "-m", "awnet.cli", "eval", "--checkpoint", str(tmp_path), "--out",
               str(tmp_path / "r.json")]
    quiet = subprocess.run(command, env=SUBPROCESS_ENV, cwd=REPO_ROOT, capture_output=True, text=True)
    assert quiet.returncode == 2 and quiet.stderr.count("\n") == 1 and "Traceback" not in quiet.stderr
    assert f"{tmp_path} is a directory" in quiet.stderr
    debug = subprocess.run(command + ["--debug"], env=SUBPROCESS_ENV, cwd=REPO_ROOT, capture_output=True, text=True)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "IsADirectoryError" in debug.stderr
    env = {**SUBPROCESS_ENV, "AWNET_DEBUG": "1"}
    debug = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True)
    assert debug.returncode == 1 and "Traceback" in debug.stderr
