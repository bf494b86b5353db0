"""`superexperts protect RUN_DIR|MODEL --for FORMAT`: the Super Experts as a quantization keep-list."""

from __future__ import annotations

import argparse
import sys

from ..runs.errors import UserError
from .common import add_device_args, progress, window_defaults

HELP = "write the Super Experts as a keep-unquantized list for llm-compressor, AutoRound, GPTQModel"


def add_parser(subparsers) -> None:
    from ..compress.protect import FORMATS

    p = subparsers.add_parser(
        "protect", help=HELP,
        description="Read RUN_DIR (a `superexperts profile` folder; or profile MODEL first) and print, or write to "
        "--out, the SEs' module names in the tool's format. Names come from the model's structure and its "
        "checkpoint's keys (no weights are read).",
    )  # fmt: skip
    p.add_argument("source", nargs="?", metavar="RUN_DIR|MODEL",
                   help="a profile run folder, or a model (local folder / hub id) to profile first (default: demo)")
    p.add_argument("--for", dest="fmt", required=True, metavar="FORMAT", help=" | ".join(FORMATS))
    p.add_argument("--whole-layer", action="store_true", help="every routed expert of each SE layer (vLLM picks one "
                   "quantization scheme per fused MoE layer)")  # fmt: skip
    p.add_argument("--out", metavar="FILE", help="write here (atomically) instead of printing")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out (and, when profiling, "
                   "a previous run in --run-dir)")  # fmt: skip
    p.add_argument("--checkpoint", metavar="FOLDER", help="the model folder, when the run's recorded model path "
                   "is not on this machine")  # fmt: skip
    p.add_argument("--run-dir", default="runs/profile", help="where MODEL's profile run is written (default runs/profile)")
    p.add_argument("--data", help="calibration data when profiling MODEL (default: built-in text)")
    p.add_argument("--samples", type=int, help="calibration windows when profiling (default 128; demo 16)")
    p.add_argument("--seq-len", type=int, help="tokens per window when profiling (default 2048; demo 64)")
    p.add_argument("--batch-size", type=int, default=1)
    add_device_args(p)
    p.set_defaults(run=run)


def _profile_first(args: argparse.Namespace) -> str:
    """Profile MODEL with the profile recipe into --run-dir (paper rule, seed 0); returns the run folder."""
    from ..recipes.profiling import ProfileRequest, run_profile

    seq_len, samples = window_defaults(args.source is None, args.seq_len, args.samples)
    req = ProfileRequest(model=args.source, out=args.run_dir, seq_len=seq_len, samples=samples, data=args.data,
                         batch_size=args.batch_size, device=args.device, dtype=args.dtype,
                         trust_remote_code=args.trust_remote_code, overwrite=args.overwrite, report=False)  # fmt: skip
    result = run_profile(req, progress=progress(args))
    print(f"profiled {args.source or 'the built-in demo'} into {req.out}/: Super Experts "
          f"{result.identification.verdict.experts}", file=sys.stderr)  # fmt: skip
    return str(req.out)


def run(args: argparse.Namespace) -> int:
    from ..recipes.protecting import ProtectRequest, is_run_folder, protect_run, write_protect

    req = ProtectRequest(fmt=args.fmt, whole_layer=args.whole_layer, out=args.out, overwrite=args.overwrite,
                         checkpoint=args.checkpoint, trust_remote_code=args.trust_remote_code)  # fmt: skip
    req.check()
    if args.source is not None and is_run_folder(args.source):
        run_dir = args.source
    elif args.checkpoint is not None:
        raise UserError("--checkpoint goes with a RUN_DIR; when profiling, MODEL itself is the checkpoint.")
    else:
        run_dir = _profile_first(args)
    text = protect_run(run_dir, req)
    if args.out is None:
        sys.stdout.write(text)
    else:
        write_protect(text, req)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0
