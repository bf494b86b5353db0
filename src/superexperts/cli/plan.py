"""`superexperts plan MODEL`: memory and time of profile, prune-eval and sinks, estimated from the config."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace

from ..runs.errors import UserError
from .common import add_deprecated

COMMANDS_PLANNED = ("profile", "prune-eval", "sinks")


HELP = "estimate peak memory and time of profile, prune-eval and sinks before running them"


def add_parser(subparsers) -> None:
    from ..scale.devices import DEVICES

    p = subparsers.add_parser(
        "plan", help=HELP,
        description="From MODEL's config.json alone (no weights read; the paper's models work offline), "
        "estimate weights per layer, peak memory in memory / streamed / with a device map, FLOPs and a "
        "roofline time per subcommand on the --hardware profile, and recommend flags. Prints; writes nothing.",
    )  # fmt: skip
    p.add_argument("model", metavar="MODEL", help="local checkpoint folder, hub id, or a model of the paper")
    # A hardware profile of the table, not a torch device (--device in the other subcommands).
    p.add_argument("--hardware", default="cpu", metavar="NAME", help=f"hardware profile: {', '.join(DEVICES)} "
                   "(default cpu: nominal CPU figures, memory = this machine's RAM)")  # fmt: skip
    add_deprecated(p, "--device", "--hardware", "hardware")
    p.add_argument("--memory", type=float, metavar="GB", help="device memory (overrides the table)")
    p.add_argument("--bandwidth", type=float, metavar="GB/s", help="memory bandwidth (overrides the table)")
    p.add_argument("--tflops", type=float, metavar="X", help="peak TFLOPS at the compute dtype (overrides the table)")
    p.add_argument("--activation-bandwidth", type=float, metavar="GB/s",
                   help="bandwidth of elementwise ops writing new tensors (overrides the table)")
    p.add_argument("--measure", action="store_true", help="measure this machine's device of --hardware's kind "
                   "(matrix product, copy and activation bandwidth, memory; a few seconds) instead of the table; "
                   "the flags above still override")  # fmt: skip
    p.add_argument("--disk", type=float, default=2.0, metavar="GB/s", help="checkpoint read speed (default 2)")
    p.add_argument("--samples", type=int, help="windows (default: profile 128, prune-eval 140, sinks 4)")
    p.add_argument("--seq-len", type=int, help="tokens per window (default: 2048; sinks 1024)")
    p.add_argument("--batch-size", default="auto", metavar="auto|N", help="windows per forward (default auto)")
    p.add_argument("--dtype", default="auto", help="auto | bfloat16 | float16 | float32 (default auto, as profile)")
    p.add_argument("--commands", default=",".join(COMMANDS_PLANNED), metavar="LIST",
                   help=f"subcommands to plan (default {','.join(COMMANDS_PLANNED)})")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own Python code")
    p.set_defaults(run=run)


def _offered() -> dict[str, set[str]]:
    """The options each planned subcommand of this version has (recommendations use no other)."""
    from . import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {c: {s for a in sub.choices[c]._actions for s in a.option_strings} for c in COMMANDS_PLANNED}


def run(args: argparse.Namespace) -> int:
    import torch

    from ..capture.batching import parse_batch_size, total_ram
    from ..models.loading import check_dtype
    from ..runs.errors import did_you_mean
    from ..scale.devices import device
    from ..scale.plan import format_plan, make_plan, workload
    from ..scale.plan_measure import check_measurable, measure_device
    from ..scale.plan_model import load_plan_model

    # Everything is checked before the config is read.
    memory = args.memory if args.memory is not None or args.hardware.strip().lower() != "cpu" else total_ram() / 1e9
    overrides = {"bandwidth_gbs": args.bandwidth, "tflops": args.tflops, "activation_gbs": args.activation_bandwidth}
    dev = device(args.hardware, memory_gb=memory, **overrides)
    given = {k: v for k, v in (overrides | {"memory_gb": args.memory}).items() if v is not None}
    if args.measure:
        check_measurable(dev.kind)
    if not (args.disk > 0 and math.isfinite(args.disk)):
        raise UserError(f"--disk must be a finite positive number (GB/s), got {args.disk}.")
    batch = parse_batch_size(args.batch_size)
    check_dtype(args.dtype)
    commands = [c.strip() for c in args.commands.split(",") if c.strip()]
    for c in commands:
        if c not in COMMANDS_PLANNED:
            raise UserError(f"--commands: unknown subcommand {c!r}. {did_you_mean(c, list(COMMANDS_PLANNED))}"
                            f"Plannable: {', '.join(COMMANDS_PLANNED)}.")  # fmt: skip
    workloads = [workload(c, samples=args.samples, seq_len=args.seq_len) for c in commands]
    pm = load_plan_model(args.model, dtype=args.dtype, device_kind=dev.kind, trust_remote_code=args.trust_remote_code)
    if args.measure:  # after the config: a bad MODEL fails before seconds of measuring
        figures = measure_device(dev.kind, torch.float32 if pm.shape.dtype_bytes == 4 else torch.bfloat16)
        dev = replace(device(args.hardware, **(figures | given)),  # the flags given beat the measured figures
                      note=f"measured on this machine (--measure) at {pm.shape.dtype_bytes} bytes/value")  # fmt: skip
    plan = make_plan(pm.shape, dev, workloads, batch=batch, disk_bytes=pm.disk_bytes, disk_gbs=args.disk,
                     offered=_offered())  # fmt: skip
    plan["source"] = pm.source
    plan["support"] = pm.support
    if pm.disk_layer_bytes is not None:
        plan["disk_layer_bytes"] = pm.disk_layer_bytes
    print(json.dumps(plan, indent=2) if args.json else f"{pm.support}\n" + format_plan(plan, source=f"\nsource: {pm.source}"))
    return 0
