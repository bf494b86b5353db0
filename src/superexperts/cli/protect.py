"""`superexperts protect --from RUN_DIR --for FORMAT`: the Super Experts as a quantization keep-list
(or `protect MODEL --for FORMAT`: MODEL profiled first)."""

from __future__ import annotations

import argparse
import sys

from ..runs.errors import UserError
from .common import add_deprecated, add_device_args, deprecation_note, progress, window_defaults

HELP = "write the Super Experts as a keep-unquantized list for llm-compressor, AutoRound, GPTQModel"


def add_parser(subparsers) -> None:
    from ..compress.protect import FORMATS

    p = subparsers.add_parser(
        "protect", help=HELP,
        description="Read --from RUN_DIR (a `superexperts profile` folder; or profile MODEL first into --profile-out) "
        "and print, or write to the file --out-file, the SEs' module names in the tool's format. Names come from the "
        "model's structure and its checkpoint's keys (no weights are read).",
    )  # fmt: skip
    p.add_argument("source", nargs="?", metavar="MODEL", help="without --from: a model (local folder / hub id) to "
                   "profile first (default: the demo); a run folder here still works for one release (use --from)")
    p.add_argument("--for", dest="fmt", required=True, metavar="FORMAT", help=" | ".join(FORMATS))
    p.add_argument("--whole-layer", action="store_true", help="every routed expert of each SE layer (vLLM picks one "
                   "quantization scheme per fused MoE layer)")  # fmt: skip
    p.add_argument("--atoms", action="store_true", help="with --for json: only the SEs' super atoms, as (module, "
                   "columns) of the down projection and (module, rows) of gate/up, for tools that keep single channels")
    p.add_argument("--from", dest="from_dir", metavar="RUN_DIR", help="the run folder: a folder written by "
                   "`superexperts profile`, whose SEs are listed")  # fmt: skip
    p.add_argument("--out-file", dest="out", metavar="FILE", help="write the list to this file (atomically; one "
                   "file, not a folder: the only subcommand whose output is a single file) instead of printing it")  # fmt: skip
    add_deprecated(p, "--out", "--out-file", "out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out-file (and, when profiling, "
                   "a previous run in --profile-out)")  # fmt: skip
    p.add_argument("--checkpoint", metavar="FOLDER", help="the model folder, when the run's recorded model path "
                   "is not on this machine")  # fmt: skip
    p.add_argument("--profile-out", dest="run_dir", default="runs/profile", metavar="DIR",
                   help="when profiling MODEL first: the run folder it writes (default runs/profile)")
    add_deprecated(p, "--run-dir", "--profile-out", "run_dir")
    p.add_argument("--data", help="calibration data when profiling MODEL (default: built-in text)")
    p.add_argument("--samples", type=int, help="calibration windows when profiling (default 128; demo 16)")
    p.add_argument("--seq-len", type=int, help="tokens per window when profiling (default 2048; demo 64)")
    p.add_argument("--batch-size", type=int, default=1)
    add_device_args(p)
    p.set_defaults(run=run)


def _profile_first(args: argparse.Namespace) -> str:
    """Profile MODEL with the profile recipe into --profile-out (paper rule, seed 0); returns the run folder."""
    from ..recipes.profiling import ProfileRequest, run_profile

    seq_len, samples = window_defaults(args.source is None, args.seq_len, args.samples)
    req = ProfileRequest(model=args.source, out=args.run_dir, seq_len=seq_len, samples=samples, data=args.data,
                         batch_size=args.batch_size, device=args.device, dtype=args.dtype,
                         trust_remote_code=args.trust_remote_code, overwrite=args.overwrite, report=False,
                         out_flag="--profile-out")  # fmt: skip
    result = run_profile(req, progress=progress(args))
    print(f"profiled {args.source or 'the built-in demo'} into {req.out}/: Super Experts "
          f"{result.identification.verdict.experts}", file=sys.stderr)  # fmt: skip
    return str(req.out)


def run(args: argparse.Namespace) -> int:
    from ..recipes.protecting import ProtectRequest, is_run_folder, protect_run, write_protect

    req = ProtectRequest(fmt=args.fmt, whole_layer=args.whole_layer, out=args.out, overwrite=args.overwrite,
                         checkpoint=args.checkpoint, trust_remote_code=args.trust_remote_code,
                         atoms=args.atoms, inputs=(args.data,))  # fmt: skip
    req.check()
    if args.from_dir is not None:
        if args.source is not None:
            raise UserError(f"give --from {args.from_dir} or MODEL {args.source}, not both (MODEL is profiled first).")
        if not is_run_folder(args.from_dir):
            raise UserError(f"--from {args.from_dir}: no profile run there (no profile.json); run `superexperts "
                            f"profile --out {args.from_dir}` first.")  # fmt: skip
        run_dir = args.from_dir
    elif args.source is not None and is_run_folder(args.source):
        deprecation_note(f"a run folder as the positional argument ({args.source})", f"--from {args.source}")
        run_dir = args.source
    elif args.checkpoint is not None:
        raise UserError("--checkpoint goes with --from RUN_DIR; when profiling, MODEL itself is the checkpoint.")
    else:
        run_dir = _profile_first(args)
    text = protect_run(run_dir, req)
    if args.out is None:
        sys.stdout.write(text)
    else:
        write_protect(text, req)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0
