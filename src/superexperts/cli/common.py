"""Flags and defaults shared by the subcommands: declared once, parsed once.

`add_model_args` (MODEL, --device, --device-map, --dtype, --trust-remote-code), `add_criterion_args`
(--criterion, --param, --include-layers) and `window_defaults` (the demo's short windows).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..models.demo import DEMO_WINDOWS
from ..rules import CRITERIA, get_criterion, parse_include_layers, parse_params

# A real model: the paper's windows.
MODEL_WINDOWS = {"seq_len": 2048, "samples": 128}


def add_model_args(p: argparse.ArgumentParser, model_help: str) -> None:
    p.add_argument("model", nargs="?", metavar="MODEL", help=model_help)
    add_device_args(p)
    p.add_argument("--allow-missing-weights", action="store_true", help="load a checkpoint whose weights do not "
                   "match the model (missing ones are random-initialised, unexpected ones dropped); default: refuse")
    p.add_argument("--device-map", metavar="auto|balanced|FILE",
                   help="spread the model over devices with accelerate (instead of --device): auto, balanced, "
                   "balanced_low_0, or a JSON file {module: cpu|cuda:N|disk}; what does not fit is offloaded "
                   "to a temporary folder")  # fmt: skip


def add_device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default auto)")
    p.add_argument("--dtype", default="auto", help="auto | bfloat16 | float16 | float32 (default auto)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own Python code")


def add_criterion_args(p: argparse.ArgumentParser, criterion_help: str, default: str | None = "paper") -> None:
    p.add_argument("--criterion", default=default, help=criterion_help)
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="criterion parameter, e.g. percentile=99 max_fraction=0.08 k=3 (repeatable)")
    p.add_argument("--include-layers", metavar="FRACTION|LIST",
                   help="layers judged: a fraction (0.75 = layers < round(0.75 L)) or a list 1,2,3")


def criterion_names() -> str:
    return ", ".join(sorted(CRITERIA))


def criterion_args(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """Validated (criterion, params) from --criterion/--param/--include-layers."""
    get_criterion(args.criterion)
    params = parse_params(args.criterion, args.param)
    if args.include_layers is not None:
        if "include_layers" in params:
            raise UserError("give the layers once: --include-layers or --param include_layers=..., not both.")
        params["include_layers"] = parse_include_layers(args.include_layers)
    return args.criterion, params


def window_defaults(synthetic: bool, seq_len: int | None, samples: int | None, *,
                    model_seq_len: int = MODEL_WINDOWS["seq_len"], default_samples: int | None = None
                    ) -> tuple[int, int]:
    """(seq_len, samples): the flags when given, else the demo's or a real model's defaults."""
    defaults = DEMO_WINDOWS if synthetic else {**MODEL_WINDOWS, "seq_len": model_seq_len}
    samples_default = default_samples if default_samples is not None else defaults["samples"]
    return (seq_len if seq_len is not None else defaults["seq_len"],
            samples if samples is not None else samples_default)


def model_of(args: argparse.Namespace, from_dir: str | None) -> str | None:
    """MODEL, else the model the --from run profiled (None = the built-in demo)."""
    if from_dir is not None and not (Path(from_dir) / "super_experts.json").is_file():
        raise UserError(f"--from {from_dir}: no super_experts.json there; run `superexperts profile --out "
                        f"{from_dir}` first.")
    if args.model is not None or from_dir is None:
        return args.model
    from ..runfolder import model_of_run

    return model_of_run(from_dir)
