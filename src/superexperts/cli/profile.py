"""`superexperts profile [MODEL]`: find the Super Experts of a model (default: the built-in demo)."""

from __future__ import annotations

import argparse

from ..batching import AUTO, parse_batch_size
from ..data import calibration, check_window_args
from ..errors import UserError
from ..io import prepare_out_dir
from ..known import agreement_line
from ..loading import check_dtype, load_model, resolve_device
from .identify import criterion_args, se_table, thresholds_line

# Without a MODEL the demo runs on the built-in text, which holds ~1.3k demo tokens.
DEMO_DEFAULTS = {"seq_len": 64, "samples": 16}
MODEL_DEFAULTS = {"seq_len": 2048, "samples": 128}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "profile", help="profile an MoE model on calibration data and find its Super Experts",
        description="Run calibration data through MODEL (a local folder or hub id; default: the built-in "
        "synthetic demo), record every expert's max |down_proj output|, apply the paper's rule, and write "
        "a run folder with profile.json, super_experts.json, CSV/Parquet tables and report.html.",
    )  # fmt: skip
    p.add_argument("model", nargs="?", metavar="MODEL", help="local checkpoint folder or hub id (default: demo)")
    p.add_argument("--data", help="calibration data: file, folder, wikitext2, c4 or a dataset name "
                   "(default: built-in text)")  # fmt: skip
    p.add_argument("--samples", type=int, help="number of windows (default 128; demo 16)")
    p.add_argument("--seq-len", type=int, help="tokens per window (default 2048; demo 64)")
    p.add_argument("--batch-size", default="auto", metavar="auto|N", help="windows per forward: N, or auto, the "
                   "most that fit the device's memory and a token budget (default auto)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed for window sampling (default 0)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default auto)")
    p.add_argument("--dtype", default="auto", help="auto | bfloat16 | float16 | float32 (default auto)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own Python code")
    p.add_argument("--out", default="runs/profile", help="run folder to write (default runs/profile)")
    p.add_argument("--overwrite", action="store_true", help="replace a previous run in --out")
    p.add_argument("--criterion", default="paper", help="SE criterion (default paper; see `identify`)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="criterion parameter")
    p.add_argument("--include-layers", metavar="FRACTION|LIST", help="layers judged (default 0.75)")
    p.add_argument("--no-report", action="store_true", help="skip report.html")
    p.add_argument("--stream", action="store_true", help="read the checkpoint one decoder layer at a time "
                   "(models larger than memory; under torchrun each rank takes a share of the data)")  # fmt: skip
    p.add_argument("--state-dir", help="with --stream: save per-layer progress here (for --resume)")
    p.add_argument("--resume", action="store_true", help="with --stream --state-dir: continue an interrupted run")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..profile_run import profile_run

    defaults = DEMO_DEFAULTS if args.model is None else MODEL_DEFAULTS
    seq_len = args.seq_len if args.seq_len is not None else defaults["seq_len"]
    samples = args.samples if args.samples is not None else defaults["samples"]
    # Everything that can be checked is checked before the model is loaded.
    batch_size = parse_batch_size(args.batch_size)
    check_window_args(seq_len, samples, 1 if batch_size == AUTO else batch_size)
    check_dtype(args.dtype)
    resolve_device(args.device)
    criterion, params = criterion_args(args)
    out = prepare_out_dir(args.out, args.overwrite)
    loaded, profiler = _load(args)
    calib = calibration(args.data, loaded.tokenizer, seq_len=seq_len, samples=samples, seed=args.seed)
    if loaded.synthetic:
        print("model: built-in SYNTHETIC demo (tiny Qwen3-MoE with planted Super Experts; numbers are made up)")
    print(f"data: {calib.spec}: {calib.input_ids.shape[0]} x {calib.input_ids.shape[1]} tokens ({calib.sampling})")
    if profiler is not None and _rank() != 0:  # data-parallel streaming: rank 0 writes the run
        profiler(loaded.model, calib.input_ids, batch_size=batch_size)
        return 0
    result = profile_run(loaded, calib, out, batch_size=batch_size, criterion=criterion, params=params,
                         progress=True, report=not args.no_report, **({"profiler": profiler} if profiler else {}))  # fmt: skip
    _print_summary(result)
    return 0


def _load(args: argparse.Namespace):
    """(loaded, None) in memory, or (loaded skeleton, streaming profiler) with --stream."""
    if not args.stream:
        if args.resume or args.state_dir:
            raise UserError("--state-dir/--resume only apply with --stream; add --stream.")
        loaded = load_model(args.model, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code)
        return loaded, None
    if args.model is None:
        raise UserError("--stream needs MODEL, a local checkpoint folder (the demo is small enough to load).")
    if args.resume and not args.state_dir:
        raise UserError("--resume needs --state-dir, the folder an earlier --stream run saved its progress in.")
    from ..stream.distributed import init_from_env
    from ..stream.loading import load_skeleton, streaming_profiler

    init_from_env()
    loaded, device, dtype = load_skeleton(args.model, device=args.device, dtype=args.dtype,
                                          trust_remote_code=args.trust_remote_code)  # fmt: skip
    return loaded, streaming_profiler(loaded, device, dtype, state_dir=args.state_dir, resume=args.resume)


def _rank() -> int:
    from ..stream.distributed import rank_and_world

    return rank_and_world()[0]


def _print_summary(result) -> None:
    verdict, prof = result.verdict, result.profile
    print(thresholds_line(verdict.criterion))
    print(f"{len(verdict.super_experts)} Super Experts among {prof.meta['num_experts_total']} experts:")
    print(se_table(verdict))
    top = prof.expert_stats.nlargest(5, "max_abs_output")
    print("top candidates: " + ", ".join(
        f"L{r.layer}/{r.expert if r.kind == 'routed' else r.kind}={r.max_abs_output:.4g}" for r in top.itertuples()
    ))  # fmt: skip
    nonfinite = int(prof.expert_stats["nonfinite_rows"].sum())
    if nonfinite:
        print(f"WARNING: {nonfinite} expert output rows were NaN/inf (column nonfinite_rows); check the dtype.")
    massive = prof.layer_stats[prof.layer_stats["massive"]]
    if len(massive):
        print(f"massive activations (Sun et al.: >100 and >1000x median) after layers {massive['layer'].tolist()}, "
              f"channel {int(massive['top1_channel'].mode()[0])}")  # fmt: skip
    print(f"sensitivity (percentile x max_fraction): {result.sensitivity_verdict}")
    if result.known is not None:
        print(agreement_line(result.known))
    print(f"wrote {result.out_dir}/ (profile.json, super_experts.json, expert_stats.csv/.parquet, report.html)")
