"""Settings declared once (issue 19): every field of TrainConfig and ReproduceConfig is an option of
`awnet train` / `awnet reproduce`, with its help and its check, derived from the dataclass."""
from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

import awnet.train
import awnet.train.reproduce
from awnet import cli
from awnet.settings import add_arguments
from awnet.train import TrainConfig
from awnet.train.reproduce import ReproduceConfig

# Per field, a valid value other than its default ({out}: a folder of the test's); a bool: the other one.
TRAIN_VALUES = {
    "recipe": "awnet", "dataset": "cifar10", "model": "resnet18", "out": "{out}", "data_dir": "data", "epochs": 3,
    "batch_size": 7, "lr": 0.2, "warmup": 0.1, "weight_decay": 0.001, "eps": 0.1, "eps_ramp": 0.25, "attack_steps": 3,
    "trades_beta": 2.0, "clean_teacher": "clean.safetensors", "robust_teacher": "robust.safetensors",
    "init": "init.safetensors", "init_clean": "init_clean.safetensors", "mtard_lr": 0.1, "temperature": 2.0,
    "type_weight": 0.5, "evasion_fraction": 0.25, "evasion_weight": 2.0, "deployed_weight": 1.5, "banks": 2,
    "omega": False, "router_width": 32, "n_train": 200, "val_n": 20, "val_steps": 2, "seed": 7, "amp": False,
    "device": "cpu", "progress": False, "compile": "aot_eager", "cuda_graph": True, "resume": True,
}
REPRODUCE_VALUES = {
    "dataset": "fashion-mnist", "out": "{out}", "data_dir": "data", "model": "resnet18", "standard_epochs": 2,
    "robust_epochs": 3, "trades_epochs": 0, "teacher_lr": 0.05, "awnet_epochs": 1, "awnet_init": "none",
    "awnet_lr": 0.01, "awnet_deployed_weight": 0.5, "n_train": 100, "val_n": 10, "n_eval": 0, "eval_steps": 5,
    "apgd_steps": 7, "restarts": 2, "check_steps": 3, "autoattack": False, "eval_batch_size": 64, "seed": 3,
    "progress": False,
}
SUBCOMMANDS = {"train": (TrainConfig, TRAIN_VALUES), "reproduce": (ReproduceConfig, REPRODUCE_VALUES)}


def command_line(values: dict) -> list[str]:
    """The options that set `values`: `--name value`, or a switch's flag (`--no-name` turns off a default on)."""
    argv = []
    for name, value in values.items():
        flag = name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(f"--{flag}" if value else f"--no-{flag}")
        else:
            argv += [f"--{flag}", str(value)]
    return argv


@pytest.fixture
def ran(monkeypatch):
    """The config each subcommand's handler passed on, instead of training or reproducing."""
    seen = {}

    def handler(command: str, result):
        def run(config):
            seen[command] = config
            return result
        return run

    monkeypatch.setattr(awnet.train, "train", handler("train", []))  # no epochs trained
    monkeypatch.setattr(awnet.train.reproduce, "reproduce", handler("reproduce", None))
    return seen


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_setting_is_reachable_from_the_command_line(command, tmp_path, ran):
    config_class, values = SUBCOMMANDS[command]
    values = {**values, "out": str(tmp_path / "out")}
    assert list(values) == [f.name for f in fields(config_class)], "a value per field, in the dataclass's order"
    defaults = config_class()
    assert all(value != getattr(defaults, name) for name, value in values.items())
    assert cli.main([command, *command_line(values)]) == 0
    assert ran[command] == config_class(**values)


def test_train_defaults_and_special_options(tmp_path, ran):
    out = str(tmp_path / "out")
    assert cli.main(["train", "--recipe", "trades", "--out", out]) == 0
    assert ran["train"] == TrainConfig(recipe="trades", out=out)
    ran.clear()
    assert cli.main(["train", "--recipe", "standard", "--out", out, "--compile"]) == 0  # the backend is optional
    assert ran["train"].compile == "inductor"


def test_reproduce_defaults(tmp_path, ran):
    out = str(tmp_path / "out")
    assert cli.main(["reproduce", "--out", out]) == 0
    assert ran["reproduce"] == ReproduceConfig(out=out)


@pytest.mark.parametrize("config_class", [TrainConfig, ReproduceConfig])
def test_every_setting_has_help(config_class):
    parser = argparse.ArgumentParser()
    add_arguments(parser, config_class)
    helps = {action.dest: action.help for action in parser._actions}
    for f in fields(config_class):
        assert f.metadata["help"].strip(), f"{f.name} has no help"
        assert f.metadata["help"] in helps[f.name]


def test_a_field_without_help_is_refused():
    from dataclasses import dataclass

    @dataclass
    class Bare:
        seed: int = 0

    with pytest.raises(TypeError, match="Bare.seed has no help"):
        add_arguments(argparse.ArgumentParser(), Bare)


CHECKED = [(command, f.name) for command, (config_class, _) in SUBCOMMANDS.items() for f in fields(config_class)
           if "check" in f.metadata]


@pytest.mark.parametrize("command, name", CHECKED)
def test_a_bad_number_exits_2_naming_the_option(command, name, tmp_path, capsys, ran):
    option = "--" + name.replace("_", "-")
    required = ["--recipe", "standard"] if command == "train" else []
    with pytest.raises(SystemExit) as exit_:  # -1 is valid for no check
        cli.main([command, *required, "--out", str(tmp_path / "out"), option, "-1"])
    assert exit_.value.code == 2
    assert f"argument {option}: must be" in capsys.readouterr().err
    assert not ran


def test_train_needs_a_recipe(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train"])
    assert exit_.value.code == 2
    assert "--recipe" in capsys.readouterr().err


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_runs(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "--no-progress" in text and "(default:" in text
