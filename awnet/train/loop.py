"""The training loop (DESIGN.md section 6): seeds, optimizer and schedule, eps ramp, mixed precision on GPU,
DDP under torchrun, progress bars, a per-epoch log with held-out clean / PGD / router accuracy, atomic
checkpoints every epoch and `resume`.

Determinism: every epoch starts by seeding torch's generator from (seed, epoch, rank) and shuffles the
training set with a generator seeded from (seed, epoch), so what an epoch computes depends only on the state
at its start, which the checkpoint holds (model, optimizer, scheduler, loss scaler, MTARD weights). A run
resumed from its last checkpoint therefore repeats, bit for bit on CPU, what the uninterrupted run computes.

Every setting is checked before any data is read (`TrainConfig`'s checks, a writable `out`, an intact
checkpoint). A non-finite epoch loss stops the run before that epoch is saved (FloatingPointError), so `out`
keeps the last good checkpoint; the loss is read on the host once per epoch, with the epoch's statistics.
"""
from __future__ import annotations

import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from .. import checkpoint as model_files
from ..attacks import pgd, step_size
from ..convert import convert, from_teachers
from ..data import DATA_DIR_HELP, DATASETS, load_dataset, spread
from ..eval.metrics import outcomes
from ..models import build
from ..nn import AWNet
from ..nn.router import ADVERSARIAL_THRESHOLD, fuse_head_layouts
from ..settings import (
    BANKS, FRACTION, NON_NEGATIVE, POSITIVE, POSITIVE_INT, ROUTER_WIDTH, check_settings, check_writable_dir, option,
    setting, writable_dir,
)
from .graph import CapturedStep
from .recipes import ADVERSARIAL_RECIPES, AW_RECIPES, RECIPES, MTARDWeights, Recipe, RecipeContext
from .state import MODEL, load_checkpoint, remove_stale_temporaries, save_checkpoint, write_logs


@dataclass
class TrainConfig:
    """One training run. `model` and `eps` default to the dataset's (see `awnet.data.DATASETS`). Numeric
    settings are checked when the config is made (ValueError naming the setting; see `awnet.settings`); each
    field is an option of `awnet train`, with the help it declares."""
    recipe: str = option("standard", "how to train: a static network (standard, pgd-at, trades) or an AW-Net "
                                     "(awnet: MTARD from two teachers; awnet-scratch)",
                         choices=tuple(RECIPES), required=True)  # no default on the command line: say which
    dataset: str = option("mnist5k", "the dataset", choices=sorted(DATASETS))
    model: Optional[str] = option(None, "architecture (awnet.models.build name; default: the dataset's, smallcnn "
                                        "for mnist5k)")
    out: str = option("runs/train", "folder of model.safetensors, checkpoint.pt (for --resume) and the logs",
                      type=writable_dir, metavar="DIR")
    data_dir: Optional[str] = option(None, DATA_DIR_HELP)
    epochs: int = setting(20, POSITIVE_INT, "training epochs")
    batch_size: int = setting(100, POSITIVE_INT, "batch size per process")
    lr: float = setting(0.05, POSITIVE, "peak learning rate of SGD (momentum 0.9, Nesterov): linear warm-up, then "
                                        "cosine decay to 0")
    warmup: float = setting(0.05, FRACTION, "warm-up fraction of the steps")
    weight_decay: float = setting(5e-4, NON_NEGATIVE, "SGD's weight decay")
    eps: Optional[float] = setting(None, NON_NEGATIVE, "Linf radius on [0, 1] images (default: the dataset's, 0.3 "
                                                       "for mnist5k)")
    eps_ramp: float = setting(1 / 3, FRACTION, "fraction of the steps over which eps grows linearly from 0")
    attack_steps: int = setting(10, POSITIVE_INT, "PGD steps of the training attacks (step size 2.5 eps / steps)")
    trades_beta: float = setting(6.0, NON_NEGATIVE, "trades recipe: weight of the KL term")
    clean_teacher: Optional[str] = option(None, "awnet recipe: the clean teacher's checkpoint", metavar="CKPT")
    robust_teacher: Optional[str] = option(None, "awnet recipe: the robust teacher's checkpoint", metavar="CKPT")
    init: Optional[str] = option(None, "start from this checkpoint (a static one is converted for the AW recipes)",
                                 metavar="CKPT")
    init_clean: Optional[str] = option(None, "AW recipes, two banks: the clean bank and BNs start from this static "
                                             "checkpoint, the adversarial ones from --init (awnet.from_teachers)",
                                       metavar="CKPT")
    mtard_lr: float = setting(0.025, FRACTION, "learning rate of MTARD's loss weights")
    temperature: float = setting(1.0, POSITIVE, "distillation temperature")
    type_weight: float = setting(1.0, NON_NEGATIVE, "weight of the router's type loss")
    evasion_fraction: float = setting(0.5, FRACTION, "fraction of an AW-Net's training attacks that are router "
                                                     "evasion (the rest end-to-end PGD)")
    evasion_weight: float = setting(1.0, NON_NEGATIVE, "weight of the router-evasion term of those attacks")
    deployed_weight: float = setting(0.0, NON_NEGATIVE, "awnet recipe: weight of the distillation of the network "
                                                        "as deployed (routed by its own router, not the true type)")
    banks: int = setting(1, BANKS, "AW-Net: weight banks per convolution (1: the paper's; 2: clean and "
                                   "adversarial)")
    omega: bool = option(True, "the router's regulation signal omega in an AW-Net (only a two-bank one may go "
                               "without)")
    router_width: int = setting(64, ROUTER_WIDTH, "AW-Net: size of the router's feature vector")
    n_train: Optional[int] = setting(None, POSITIVE_INT, "train on N samples spread evenly over the train split "
                                                         "(balanced when sorted; default: all)", metavar="N")
    val_n: int = setting(500, POSITIVE_INT, "held-out samples (from the test split) for the per-epoch accuracies")
    val_steps: int = setting(10, POSITIVE_INT, "PGD steps of the per-epoch robust accuracy")
    seed: int = option(0, "random seed")
    amp: bool = option(True, "mixed precision on GPU (bfloat16 where supported, else float16 with loss scaling)")
    device: Optional[str] = option(None, "device to train on (default: cuda, this process's GPU under torchrun, "
                                         "if any; else cpu)")
    progress: bool = option(True, "progress bars")
    compile: Optional[str] = option(None, "run the model under torch.compile(fullgraph=True) with this backend "
                                          "(inductor if none is named; aot_eager compiles faster on CPU): the "
                                          "attacks' and the loss pass's forwards and backwards, each one graph",
                                    nargs="?", const="inductor", metavar="BACKEND")
    cuda_graph: bool = option(False, "on a CUDA device, record the training step (attacks, loss pass, update) as "
                                     "one CUDA graph after 3 eager steps and replay it for every later batch "
                                     "(one process, no float16 loss scaling)")
    resume: bool = option(False, "continue the run whose checkpoint is in --out")

    # Settings that change nothing a run computes (compile, cuda_graph: up to rounding): a resume may change them.
    COSMETIC = ("out", "progress", "device", "resume", "compile", "cuda_graph")

    def __post_init__(self) -> None:
        check_settings(self)

    def resolved(self) -> TrainConfig:
        """A copy with the dataset defaults filled in."""
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}; available: {list(RECIPES)}")
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; available: {sorted(DATASETS)}")
        info = DATASETS[self.dataset]
        values = asdict(self)
        values["model"] = self.model or info.model
        values["eps"] = info.eps if self.eps is None else self.eps
        return TrainConfig(**values)

    def identity(self) -> dict[str, Any]:
        """The settings that determine what the run computes."""
        return {k: v for k, v in asdict(self).items() if k not in self.COSMETIC}


def _seed(*parts: int) -> int:
    return int.from_bytes(repr(parts).encode(), "little") % (2 ** 63)


def make_model(config: TrainConfig, num_classes: int, device: torch.device) -> nn.Module:
    """The network the recipe trains: static for standard / pgd-at / trades, an AW-Net for awnet*."""
    aw = config.recipe in AW_RECIPES
    if config.init_clean is not None:
        if not aw or config.banks != 2 or config.init is None:
            raise ValueError("init_clean starts the clean bank of a two-bank AW-Net: it needs an AW recipe, "
                             f"banks=2 and init (the robust start); got recipe={config.recipe!r}, "
                             f"banks={config.banks}, init={config.init!r}")
        model = from_teachers(model_files.load(config.init_clean), model_files.load(config.init), config.omega,
                              config.router_width)
    elif config.init is not None:
        model = model_files.load(config.init)
        if aw and not isinstance(model, AWNet):
            model = convert(model, config.banks, config.omega, config.router_width)
        elif aw != isinstance(model, AWNet):
            raise ValueError(f"--init {config.init} is {'an AW-Net' if not aw else 'static'}; the "
                             f"{config.recipe} recipe trains {'an AW-Net' if aw else 'a static network'}")
    else:
        options = {"banks": config.banks, "omega": config.omega, "router_width": config.router_width} if aw else {}
        model = build(config.model, num_classes, aw=aw, **options)
    return model.to(device).train()


def make_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup: float):
    warmup_steps = max(1, round(warmup * total_steps))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, total_steps - warmup_steps)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def fused_head_optimizer_state(state: dict, net: nn.Module) -> dict:
    """The optimizer state of a run saved when the router had one Linear for its Signal Heads and one for its
    Type Heads, for `net`'s fused `router.heads`: the per-parameter state (SGD's momentum) of the two
    concatenated as their weights are (`fuse_head_layouts`), the other parameters' state moved to their new
    indices."""
    names = [name for name, _ in net.named_parameters()]
    kinds = ("signal_heads", "type_heads") if net.router.omega else ("type_heads",)
    at = names.index("router.heads.weight")
    if names[at + 1] != "router.heads.bias" or len(state["param_groups"]) != 1:
        raise ValueError("this run's optimizer state has a layout its router's heads cannot be mapped from")
    old_names = names[:at] + [f"router.{kind}.{p}" for kind in kinds for p in ("weight", "bias")] + names[at + 2:]
    group = state["param_groups"][0]
    if len(group["params"]) != len(old_names):
        raise ValueError(f"this run's optimizer holds {len(group['params'])} parameters, the model before its "
                         f"router's heads were fused {len(old_names)}")
    old = {name: state["state"].get(index) for name, index in zip(old_names, group["params"])}
    fused = {}
    for index, name in enumerate(names):
        if not name.startswith("router.heads."):
            entry = old[name]
        else:
            param = name.rpartition(".")[2]
            parts = [old[f"router.{kind}.{param}"] for kind in kinds]
            keys = {key for key in set.intersection(*(set(p) for p in parts)) if all(torch.is_tensor(p[key]) for p in parts)} if all(parts) else set()
            entry = {key: torch.cat([p[key] for p in parts]) for key in keys} or None
        if entry is not None:
            fused[index] = entry
    return {"state": fused, "param_groups": [{**group, "params": list(range(len(names)))}]}


def validate(net: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int, rank: int, world: int,
             batch_size: int) -> dict[str, float]:
    """Clean and PGD accuracy (and, for an AW-Net, the router's detection accuracy on clean vs PGD inputs)
    on this process's shard of the held-out set, summed over the processes."""
    net.eval()
    x, y = x[rank::world], y[rank::world]
    attack = partial(pgd, eps=eps, alpha=step_size(eps, steps), steps=steps)
    clean, clean_scores = outcomes(net, x, y, batch_size=batch_size)
    adv, adv_scores = outcomes(net, x, y, attack, (eps, "linf"), batch_size)
    counts = [clean.sum(), (clean & adv).sum(), torch.tensor(len(x))]
    if clean_scores is not None:
        counts.append((clean_scores < ADVERSARIAL_THRESHOLD).sum() + (adv_scores >= ADVERSARIAL_THRESHOLD).sum())
    counts = torch.stack(counts).double()
    if world > 1:
        dist.all_reduce(counts)
    net.train()
    n = counts[2].item()
    row = {"val_clean_acc": counts[0].item() / n, "val_pgd_acc": counts[1].item() / n}
    if clean_scores is not None:
        row["val_router_acc"] = counts[3].item() / (2 * n)
    return row


def _autocast(enabled: bool, cache: bool = True):
    """Mixed precision on the GPU; `cache=False` for a step being recorded into a CUDA graph, whose casts of the
    weights must be redone at every replay, not kept from the recording."""
    if not enabled:
        return nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype, cache_enabled=cache)


def train(config: TrainConfig) -> list[dict[str, Any]]:
    """Run (or, when `config.out` holds a checkpoint of the same run, resume) a training run; return the
    per-epoch log. Under torchrun each process trains on its shard of every batch (DDP); rank 0 writes."""
    config = config.resolved()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    started_group = world > 1 and not dist.is_initialized()
    if started_group:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    try:
        return _train(config, rank, world)
    finally:
        if started_group:
            dist.destroy_process_group()


def _train(config: TrainConfig, rank: int, world: int) -> list[dict[str, Any]]:
    if config.device is not None:
        device = torch.device(config.device)
    elif torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)  # NCCL's collectives run on the current device
    else:
        device = torch.device("cpu")
    amp = config.amp and device.type == "cuda"
    if config.cuda_graph:
        _check_cuda_graph(config, device, amp, world)
    info = DATASETS[config.dataset]
    # The output folder and the checkpoint are checked before any data is read or any step is taken.
    if rank == 0:
        check_writable_dir(config.out)
        os.makedirs(config.out, exist_ok=True)
        remove_stale_temporaries(config.out)
    saved = load_checkpoint(config.out)
    if saved is not None and not config.resume:
        raise ValueError(f"{config.out} already holds a training run: pass --resume to continue it, or choose "
                         "another output folder")
    # A setting an older checkpoint lacks was added since, with a default that keeps what such runs computed.
    defaults = asdict(TrainConfig())
    changed = [] if saved is None else sorted(
        k for k, v in config.identity().items() if saved["config"].get(k, defaults[k]) != v)
    if changed:
        raise ValueError(f"{config.out} holds a run with other settings ({', '.join(changed)}): resume it "
                         "with the same settings or choose another output folder")
    x_train, y_train = spread(*load_dataset(config.dataset, "train", config.data_dir), config.n_train)
    x_val, y_val = spread(*load_dataset(config.dataset, "test", config.data_dir), config.val_n)
    steps_per_epoch = len(x_train) // (config.batch_size * world)
    if steps_per_epoch < 1:
        raise ValueError(f"{len(x_train)} training samples make no batch of {config.batch_size} per process "
                         f"for {world} process(es)")

    torch.manual_seed(config.seed)
    net = make_model(config, info.num_classes, device)
    teachers = {}
    for role in ("clean_teacher", "robust_teacher"):
        path = getattr(config, role)
        teachers[role] = None if path is None else model_files.load(path, device)
    # On CUDA one fused kernel updates every parameter, and it reads a tensor learning rate on the device,
    # which a replayed step needs (`GraphStep`).
    fused = device.type == "cuda" or None
    optimizer = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=0.9, nesterov=True,
                                weight_decay=config.weight_decay, fused=fused)
    schedule = make_schedule(optimizer, config.epochs * steps_per_epoch, config.warmup)
    scaler = torch.amp.GradScaler("cuda", enabled=amp and not torch.cuda.is_bf16_supported())
    mtard = MTARDWeights(config.mtard_lr)
    history: list[dict[str, Any]] = []

    if saved is not None:
        layout = fuse_head_layouts(saved["model"], "router.")
        if layout == "per head":  # its optimizer state was never resumable
            raise ValueError(f"{config.out} holds a run whose router has one Linear per head (an older layout), "
                             "whose optimizer state cannot be resumed: start a new run in another folder with "
                             f"--init {os.path.join(config.out, MODEL)}")
        if layout == "per kind":
            saved["optimizer"] = fused_head_optimizer_state(saved["optimizer"], net)
        net.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        optimizer.param_groups[0]["fused"] = fused  # this device's, not the saving run's
        schedule.load_state_dict(saved["schedule"])
        scaler.load_state_dict(saved["scaler"])
        mtard.load_state_dict(saved["mtard"])
        history = saved["history"]

    # The steps call `stepped`; checkpoints and the per-epoch validation use the bare `net`.
    stepped = net if config.compile is None else torch.compile(net, fullgraph=True, backend=config.compile)
    if world > 1:
        model = DistributedDataParallel(stepped, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        model = stepped
    ctx = RecipeContext.from_config(config, model=model, net=stepped, alpha=0.0, mtard=mtard, **teachers)
    recipe = RECIPES[config.recipe]
    if config.cuda_graph:
        step = GraphStep(ctx, recipe, optimizer, schedule, amp)
    else:
        def step(x: Tensor, y: Tensor, eps: float, alpha: float) -> tuple[Tensor, dict[str, Tensor]]:
            ctx.eps, ctx.alpha = eps, alpha
            return train_step(ctx, recipe, optimizer, scaler, schedule, x, y, amp)
    for epoch in range(len(history), config.epochs):
        clock = time.perf_counter()
        means = _epoch(config, step, x_train, y_train, epoch, steps_per_epoch, rank, world, device)
        if not math.isfinite(means["loss"]):  # the same on every process (averaged), so all stop together
            kept = f"{config.out} keeps the checkpoint of epoch {epoch}" if epoch else f"nothing saved in {config.out}"
            raise FloatingPointError(f"the training loss became {means['loss']} in epoch {epoch + 1}, so training "
                                     f"stopped; {kept} (a smaller --lr may help)")
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "eps": _eps(config, epoch + 1, config.epochs),
               **means,
               **validate(net, x_val, y_val, config.eps, config.val_steps, rank, world, config.batch_size)}
        row["seconds"] = time.perf_counter() - clock
        history.append(row)
        if rank == 0:
            model_files.save(net, os.path.join(config.out, MODEL))
            save_checkpoint({"config": config.identity(), "epoch": epoch + 1, "model": net.state_dict(),
                             "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                             "scaler": scaler.state_dict(), "mtard": mtard.state_dict(), "history": history},
                            config.out)
            write_logs(history, config.identity(), config.out)
            print(_summary(row), flush=True)
        if world > 1:
            dist.barrier()
    return history


def train_step(ctx: RecipeContext, recipe: Recipe, optimizer, scaler, schedule, x: Tensor, y: Tensor,
               amp: bool) -> tuple[Tensor, dict[str, Tensor]]:
    """One step: the recipe's loss, its backward and the update. Returns the loss and the recipe's statistics,
    still on the device: nothing here waits for it (the statistics are read once per epoch), except float16's
    loss scaling, whose skipped-step check reads the device."""
    with _autocast(amp):
        loss, stats = recipe(ctx, x, y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    schedule.step()
    return loss, stats


class GraphStep:
    """`train_step` in the form a CUDA graph can replay (`awnet train --cuda-graph`; awnet.train.graph): eps,
    the attack's step size and the learning rate are 0-dim float32 tensors on the device, filled before each
    step, which the attacks and the fused optimizer read where the eager step reads Python numbers (the
    optimizer's param group keeps its float for the schedule and the checkpoint, and holds the tensor only
    while it steps). Called as `step(x, y, eps, alpha) -> (loss, statistics)`, recorded after `warmup` eager
    steps; `capture=False` runs the same code eagerly (the CPU tests, and the reference a captured run must
    equal). No float16 loss scaling (its skipped-step check reads the device)."""

    def __init__(self, ctx: RecipeContext, recipe: Recipe, optimizer: torch.optim.Optimizer, schedule, amp: bool,
                 warmup: int = 3, capture: bool = True):
        if len(optimizer.param_groups) != 1:
            raise ValueError(f"GraphStep steps an optimizer with one param group, got {len(optimizer.param_groups)}")
        device = next(ctx.net.parameters()).device
        self.eps, self.alpha, self.lr = (torch.zeros((), device=device) for _ in range(3))
        self.ctx = replace(ctx, eps=self.eps, alpha=self.alpha)
        self.recipe, self.optimizer, self.schedule, self.amp, self.capture = recipe, optimizer, schedule, amp, capture
        self.replayed = CapturedStep(self._step, warmup, capture)

    def _step(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        with _autocast(self.amp, cache=not self.capture):
            loss, stats = self.recipe(self.ctx, x, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        group = self.optimizer.param_groups[0]
        lr, group["lr"] = group["lr"], self.lr
        try:
            self.optimizer.step()
        finally:
            group["lr"] = lr
        return loss.detach(), {name: value.detach() for name, value in stats.items()}

    def __call__(self, x: Tensor, y: Tensor, eps: float, alpha: float) -> tuple[Tensor, dict[str, Tensor]]:
        for knob, value in ((self.eps, eps), (self.alpha, alpha), (self.lr, self.optimizer.param_groups[0]["lr"])):
            knob.fill_(value)
        loss, stats = self.replayed(x, y)
        self.schedule.step()
        return loss, stats


def _check_cuda_graph(config: TrainConfig, device: torch.device, amp: bool, world: int) -> None:
    why = None
    if device.type != "cuda":
        why = f"it records CUDA kernels, and this run is on {device}"
    elif world > 1:
        why = "it records one process's step, and DDP's collectives are not recorded here (run one process)"
    elif amp and not torch.cuda.is_bf16_supported():
        why = "float16's loss scaling reads the device at every step (use --no-amp, or a GPU with bfloat16)"
    elif config.compile is not None:
        why = "it records the eager step (torch.compile's mode='reduce-overhead' is its own capture): drop --compile"
    if why:
        raise ValueError(f"cuda_graph cannot be used here: {why}")


def _eps(config: TrainConfig, done: int, total: int) -> float:
    """The training attacks' eps after `done` of `total` steps (or epochs): linear from 0 over eps_ramp."""
    if config.recipe not in ADVERSARIAL_RECIPES:
        return 0.0
    ramp = 1.0 if config.eps_ramp <= 0 else min(1.0, done / total / config.eps_ramp)
    return config.eps * ramp


def _epoch(config: TrainConfig, step, x_train: Tensor, y_train: Tensor, epoch: int, steps_per_epoch: int,
           rank: int, world: int, device: torch.device) -> dict[str, float]:
    """One epoch of `step(x, y, eps, alpha) -> (loss, statistics)`; returns its statistics averaged over the
    steps (and the processes)."""
    torch.manual_seed(_seed(config.seed, epoch, rank))
    order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(_seed(config.seed, epoch)))
    total_steps = config.epochs * steps_per_epoch
    keys: list[str] = []
    sums: Optional[Tensor] = None  # the statistics summed over the steps, on the device
    bar = tqdm(range(steps_per_epoch), desc=f"{config.recipe} epoch {epoch + 1}/{config.epochs}",
               disable=not config.progress or rank != 0, leave=False)
    for i in bar:
        start = (i * world + rank) * config.batch_size  # each process its slice of the global batch
        index = order[start:start + config.batch_size]
        x, y = x_train[index].to(device), y_train[index].to(device)
        eps = _eps(config, epoch * steps_per_epoch + i + 1, total_steps)
        loss, stats = step(x, y, eps, step_size(eps, config.attack_steps))
        values = torch.stack([value.detach() for value in stats.values()]).double()  # one add for all
        keys, sums = list(stats), values if sums is None else sums + values
        if not bar.disable and i % 10 == 0:  # reading the loss waits for the device: only for a shown bar
            bar.set_postfix(loss=f"{loss.item():.3f}")
    means = sums / steps_per_epoch
    if world > 1:
        dist.all_reduce(means)
        means /= world
    return dict(zip(keys, means.tolist()))


def _summary(row: dict[str, Any]) -> str:
    parts = [f"epoch {row['epoch']}"]
    for key, value in row.items():
        if key != "epoch":
            parts.append(f"{key} {value:.4g}")
    return "  ".join(parts)


__all__ = ["GraphStep", "TrainConfig", "make_model", "make_schedule", "train", "train_step", "validate"]
