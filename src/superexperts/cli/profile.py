"""`superexperts profile [MODEL]`: find the Super Experts of a model (default: the built-in demo)."""

from __future__ import annotations

import argparse

from .common import (
    add_criterion_args,
    add_model_args,
    add_prefetch_arg,
    criterion_args,
    progress,
    seed_arg,
    window_defaults,
)
from .identify import se_table, thresholds_line

HELP = "profile an MoE model on calibration data and find its Super Experts"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "profile", help=HELP,
        description="Run calibration data through MODEL (a local folder or hub id; default: the built-in "
        "synthetic demo), record every expert's max |down_proj output|, apply the paper's rule, and write "
        "a run folder: profile.json, super_experts.json, sensitivity.json, expert_stats.csv and .parquet, "
        "report.html and figures/*.png/.svg (not with --no-report). --overwrite first removes the earlier run's "
        "results (prune_eval.json, sinks*, quant_eval.json, compare*): they were computed for other SEs.",
    )  # fmt: skip
    add_model_args(p, "local checkpoint folder or hub id (default: demo)")
    p.add_argument("--data", help="calibration data: file, folder, wikitext2, c4 or a dataset name "
                   "(default: built-in text)")  # fmt: skip
    p.add_argument("--samples", type=int, help="number of windows (default 128; demo 16)")
    p.add_argument("--seq-len", type=int, help="tokens per window (default 2048; demo 64)")
    p.add_argument("--batch-size", default="auto", metavar="auto|N", help="windows per forward: N, or auto, the "
                   "most that fit the device's memory and a token budget (default auto)")  # fmt: skip
    p.add_argument("--seed", type=seed_arg, default=0, help="seed for window sampling (default 0)")
    p.add_argument("--out", default="runs/profile", metavar="DIR", help="run folder to write (default runs/profile)")
    p.add_argument("--overwrite", action="store_true", help="replace a previous run in --out")
    add_criterion_args(p, "SE criterion (default paper; see `identify`)")
    p.add_argument("--no-report", action="store_true", help="skip report.html")
    p.add_argument("--no-atoms", action="store_true", help="skip the per-atom statistics (atom_stats.parquet: "
                   "CAMERA sums and maxima, max |a| per neuron of every expert), which add time to every batch: "
                   "the run then has no super atoms (report's 'Inside each Super Expert', protect --atoms, "
                   "prune-eval --atoms super) and prune-eval --prune-by camera cannot use it")  # fmt: skip
    p.add_argument("--stream", action="store_true", help="read the checkpoint one decoder layer at a time "
                   "(models larger than memory; under torchrun each rank takes a share of the data)")  # fmt: skip
    add_prefetch_arg(p)
    p.add_argument("--state-dir", help="with --stream: save per-layer progress here (for --resume)")
    p.add_argument("--resume", action="store_true", help="with --stream --state-dir: continue an interrupted run")
    p.set_defaults(run=run)


def request(args: argparse.Namespace):
    from ..capture.batching import parse_batch_size
    from ..recipes.profiling import ProfileRequest

    seq_len, samples = window_defaults(args.model is None, args.seq_len, args.samples)
    criterion, params = criterion_args(args)
    return ProfileRequest(
        model=args.model, out=args.out, seq_len=seq_len, samples=samples, data=args.data,
        batch_size=parse_batch_size(args.batch_size),
        seed=args.seed, device=args.device, device_map=args.device_map, dtype=args.dtype,
        trust_remote_code=args.trust_remote_code, allow_missing_weights=args.allow_missing_weights,
        overwrite=args.overwrite, criterion=criterion, params=params, report=not args.no_report, stream=args.stream,
        state_dir=args.state_dir, resume=args.resume, prefetch=args.prefetch, atoms=not args.no_atoms,
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from ..recipes.profiling import run_profile

    result = run_profile(request(args), echo=print, progress=progress(args))
    if result is not None:  # None: a non-zero rank of a data-parallel stream (rank 0 reports)
        _print_summary(result, report=not args.no_report)
    return 0


def _inside_lines(verdict, atom_stats) -> list[str]:
    """Inside each Super Expert: how many atoms carry 90% of its outlier, and which (identify/atoms.py)."""
    from ..identify.atoms import COVER, se_super_atoms

    lines = []
    for s in se_super_atoms(verdict.super_experts, atom_stats):
        se, picked = s["se"], s["super_atoms"]
        name = f"L{se.layer}/{se.expert if se.kind == 'routed' else se.kind}"
        listed = ", ".join(f"atom {p['atom']} ({p['share']:.1%})" for p in picked[:5])
        more = f", +{len(picked) - 5} more" if len(picked) > 5 else ""
        lines.append(f"inside {name}: {len(picked)} of {len(s['shares'])} atoms carry {COVER:.0%} of its output "
                     f"at channel {int(se.channel)}: {listed}{more}")  # fmt: skip
    return lines


def _print_summary(result, report: bool) -> None:
    from ..identify.known import agreement_line

    verdict, prof = result.identification.verdict, result.profile
    print(thresholds_line(verdict.criterion))
    print(f"{len(verdict.super_experts)} Super Experts among {prof.meta['num_experts_total']} experts:")
    print(se_table(verdict))
    for line in _inside_lines(verdict, prof.atom_stats):
        print(line)
    if prof.meta.get("atoms") is False and len(verdict.super_experts):
        print("atom statistics skipped (--no-atoms): no super atoms; profile without it to see them")
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
    if result.identification.known is not None:
        print(agreement_line(result.identification.known))
    extra = (", atom_stats.parquet" if not prof.atom_stats.empty else "") + (", report.html" if report else "")
    print(f"wrote {result.out_dir}/ (profile.json, super_experts.json, expert_stats.csv/.parquet{extra})")
