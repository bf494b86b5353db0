"""`superexperts protect RUN_DIR|MODEL --for FORMAT`: the Super Experts as a quantization keep-list."""

from __future__ import annotations

import argparse
import sys

from ..errors import UserError


def add_parser(subparsers) -> None:
    from ..protect import FORMATS

    p = subparsers.add_parser(
        "protect", help="write the Super Experts as a keep-unquantized list for llm-compressor, AutoRound, GPTQModel",
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
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default auto)")
    p.add_argument("--dtype", default="auto", help="auto | bfloat16 | float16 | float32 (default auto)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own Python code")
    p.set_defaults(run=run)


def _profile_first(args: argparse.Namespace) -> str:
    """Profile MODEL with the profile recipe into --run-dir; returns the run folder."""
    from ..data import calibration, check_window_args
    from ..io import prepare_out_dir
    from ..loading import check_dtype, load_model, resolve_device
    from ..profile_run import profile_run
    from .profile import DEMO_DEFAULTS, MODEL_DEFAULTS

    defaults = DEMO_DEFAULTS if args.source is None else MODEL_DEFAULTS
    seq_len, samples = args.seq_len or defaults["seq_len"], args.samples or defaults["samples"]
    check_window_args(seq_len, samples, args.batch_size)
    check_dtype(args.dtype)
    resolve_device(args.device)
    out = prepare_out_dir(args.run_dir, args.overwrite)
    loaded = load_model(args.source, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code)
    calib = calibration(args.data, loaded.tokenizer, seq_len=seq_len, samples=samples, seed=0)
    result = profile_run(loaded, calib, out, batch_size=args.batch_size, progress=True, report=False)
    print(f"profiled {loaded.spec or 'the built-in demo'} into {out}/: Super Experts "
          f"{result.verdict.experts}", file=sys.stderr)  # fmt: skip
    return str(out)


def run(args: argparse.Namespace) -> int:
    from ..protect_run import ProtectRequest, is_run_folder, protect_run, write_protect

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
