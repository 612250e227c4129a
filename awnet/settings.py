"""Settings declared once, each a dataclass field with its check and its help, and the command line derived
from them.

A settings dataclass declares a numeric field as `epochs: int = setting(20, POSITIVE_INT, "training epochs")`
and any other as `out: str = option("runs/train", "output folder", type=writable_dir)`; its `__post_init__`
calls `check_settings(self)`, so a bad value fails when the settings are made (before any data is read or any
training or attack starts). `add_arguments(parser, TrainConfig)` gives every field an option whose argparse
`type` is the same check, so `awnet train --epochs 0` fails while parsing. A new setting is one field: checked
in both places, and on the command line with its help, by construction.
"""
from __future__ import annotations

import argparse
import math
import numbers
import os
import tempfile
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Optional


@dataclass(frozen=True)
class Check:
    """A numeric setting's valid values: `integer` (an int) or a finite real number, with `test` true."""
    integer: bool
    wanted: str  # completes "must be ...", e.g. "a positive int"
    test: Callable[[Any], bool]

    def accepts(self, value: Any) -> bool:
        kind = numbers.Integral if self.integer else numbers.Real
        return (isinstance(value, kind) and not isinstance(value, bool)
                and (self.integer or math.isfinite(value)) and self.test(value))

    def check(self, name: str, value: Any) -> None:
        """Raise ValueError naming the setting unless `value` is valid (None means "not set": allowed)."""
        if value is not None and not self.accepts(value):
            raise ValueError(f"{name} must be {self.wanted}, got {value!r}")

    def __call__(self, text: str) -> Any:
        """The argparse `type`: the value of `text`, or an error argparse reports with the option's name."""
        try:
            value = int(text) if self.integer else float(text)
        except ValueError:
            value = None
        if value is None or not self.accepts(value):
            raise argparse.ArgumentTypeError(f"must be {self.wanted}, got {text!r}")
        return value


POSITIVE_INT = Check(True, "a positive int", lambda v: v >= 1)
NON_NEGATIVE_INT = Check(True, "an int >= 0", lambda v: v >= 0)
BANKS = Check(True, "1 or 2", lambda v: v in (1, 2))
ROUTER_WIDTH = Check(True, "an int >= 2", lambda v: v >= 2)  # the router's hidden layer is width // 2
POSITIVE = Check(False, "a finite number > 0", lambda v: v > 0)
NON_NEGATIVE = Check(False, "a finite number >= 0", lambda v: v >= 0)
FRACTION = Check(False, "a number in [0, 1]", lambda v: 0 <= v <= 1)


def setting(default: Any, check: Check, help: str, **argparse_options: Any) -> Any:
    """A numeric dataclass field whose values `check_settings` checks; `help` and `argparse_options` as
    `option`'s."""
    return field(default=default, metadata={"check": check, "help": help, "argparse": argparse_options})


def option(default: Any, help: str, **argparse_options: Any) -> Any:
    """A dataclass field without a numeric check (a name, a path, a switch), with its command-line `help` and
    the argparse keywords of its option (`choices`, `metavar`, `type`, `required`, `nargs` and `const`)."""
    return field(default=default, metadata={"help": help, "argparse": argparse_options})


def check_settings(settings: Any) -> None:
    """Raise ValueError naming the first field of the dataclass `settings` whose value its check refuses."""
    for f in fields(settings):
        check: Optional[Check] = f.metadata.get("check")
        if check is not None:
            check.check(f.name, getattr(settings, f.name))


def _value_type(annotation: Any) -> Any:
    """The type of a setting's values: `int` for `int` and for `Optional[int]`."""
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    return args[0] if typing.get_origin(annotation) is typing.Union and len(args) == 1 else annotation


def add_arguments(parser: argparse.ArgumentParser, settings_class: type) -> None:
    """Add an option per field of the dataclass `settings_class`, its value in the namespace under the field's
    name: `--field-name`, parsed by the field's check (else its type), with its default, help and argparse
    keywords. A bool field is a switch: `--no-field-name` when on by default, else `--field-name`."""
    types = typing.get_type_hints(settings_class)
    for f in fields(settings_class):
        if "help" not in f.metadata:
            raise TypeError(f"{settings_class.__name__}.{f.name} has no help: declare it with setting() or option()")
        flag, kind = f.name.replace("_", "-"), _value_type(types[f.name])
        options = {"dest": f.name, "default": f.default, "help": f.metadata["help"], **f.metadata["argparse"]}
        if kind is bool:
            options["action"] = "store_false" if f.default else "store_true"
            if f.default:
                flag, options["help"] = f"no-{flag}", f"turn off: {options['help']}"
        else:
            options.setdefault("type", f.metadata.get("check", kind))
            if f.default is not None and not options.get("required"):
                shown = f"{f.default:g}" if isinstance(f.default, float) else f.default
                options["help"] += f" (default: {shown})"
        parser.add_argument(f"--{flag}", **options)


def _probe(path: str, folder: str) -> None:
    """Raise PermissionError naming `path` unless a file can be created in `folder` (os.access says yes to
    root everywhere, and to anyone in folders such as /sys that refuse new files)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise PermissionError(f"{path} cannot be written: no file can be created in {folder} ({error})") from error


def check_writable_dir(path: str) -> None:
    """Raise OSError naming `path` unless it is a folder, or can be made one, where files can be written."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise NotADirectoryError(f"{path} cannot be a folder: {existing} is not a directory")
    _probe(path, existing)


def check_writable_file(path: str) -> None:
    """Raise OSError naming `path` unless a file can be written there (its folder exists and is writable)."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory, not a file to write")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{path} cannot be written: its folder {folder} does not exist")
    _probe(path, folder)


def _argparse_type(check: Callable[[str], None]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        try:
            check(text)
        except OSError as error:
            raise argparse.ArgumentTypeError(str(error)) from error
        return text

    return parse


writable_dir = _argparse_type(check_writable_dir)  # argparse types: a folder to write in, a file to write
writable_file = _argparse_type(check_writable_file)
