"""`superexperts identify --from RUN_DIR`: re-identify SEs from a saved profile, without the model."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from .common import (
    add_criterion_args,
    add_run_dir_arg,
    criterion_args,
    criterion_names,
    print_stale,
    printed,
    run_dir_of,
)

if TYPE_CHECKING:
    from ..identify.rules import Verdict

THRESHOLD_KEYS = ("percentile_value", "max_fraction_value", "max_value", "mean", "std", "threshold")


HELP = "re-identify Super Experts from a saved run folder (no model needed)"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "identify", help=HELP,
        description="Apply a criterion to RUN_DIR/profile.json; rewrite super_experts.json and sensitivity.json "
                    "(and expert_stats.csv/.parquet when missing), and re-render an existing report.html (+ figures/). "
                    "Results computed for the old SEs (prune_eval.json, sinks.json, quant_eval.json) are kept and "
                    "marked stale in the report, with the command that re-creates them.",
    )  # fmt: skip
    add_run_dir_arg(p)
    add_criterion_args(p, f"one of {criterion_names()} (default: paper)")
    p.add_argument("--no-report", action="store_true",
                   help="do not re-render an existing report.html (it would show the old SEs)")
    p.set_defaults(run=run)


def se_table(verdict: Verdict) -> str:
    """The SEs as a fixed-width text table."""
    lines = [f"{'layer':>5}  {'expert':>6}  {'max|out|':>10}  {'channel':>7}  {'sample:pos':>10}  token"]
    for r in verdict.super_experts.itertuples():
        expert = r.expert if r.kind == "routed" else r.kind
        lines.append(f"{r.layer:>5}  {expert!s:>6}  {r.max_abs_output:>10.4g}  {r.channel:>7}  "
                     f"{f'{r.sample}:{r.position}':>10}  {r.token_text!r}")  # fmt: skip
    return "\n".join(lines)


def thresholds_line(criterion: dict[str, Any]) -> str:
    values = ", ".join(f"{k}={criterion[k]:.4g}" for k in THRESHOLD_KEYS if k in criterion)
    layers = criterion.get("layers_judged", [])
    contiguous = layers == list(range(layers[0], layers[-1] + 1))
    span = f"layers {layers[0]}..{layers[-1]}" if contiguous else f"layers {layers}"
    return f"criterion {criterion['name']} over {span}: {values}"


def run(args: argparse.Namespace) -> int:
    from ..identify.known import agreement_line
    from ..identify.sensitivity import sensitivity_verdict
    from ..recipes.identifying import IdentifyRequest, run_identify

    criterion, params = criterion_args(args)
    run_dir = run_dir_of(args)

    def show(ident) -> None:  # computed, printed, then written: `| head -1` leaves the run untouched
        verdict = ident.verdict
        print(thresholds_line(verdict.criterion))
        print(f"{len(verdict.super_experts)} Super Experts:")
        print(se_table(verdict))
        print(f"sensitivity ({ident.grid_criterion} rule, percentile x max_fraction): {sensitivity_verdict(ident.grid)}")
        if ident.known is not None:
            print(f"paper: {agreement_line(ident.known)}")
        printed()

    _, report = run_identify(IdentifyRequest(run_dir, criterion, params, report=not args.no_report), before_write=show)
    print(f"wrote {run_dir}/super_experts.json and sensitivity.json")
    if report is not None:
        print(f"updated {report}")
    print_stale(run_dir)
    return 0
