"""`superexperts identify RUN_DIR`: re-identify SEs from a saved profile, without the model."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..known import agreement_line
from ..reidentify import reidentify_run
from ..rules import CRITERIA, Verdict, get_criterion, parse_include_layers, parse_params
from ..sensitivity import sensitivity_verdict

THRESHOLD_KEYS = ("percentile_value", "max_fraction_value", "max_value", "mean", "std", "threshold")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "identify", help="re-identify Super Experts from a saved run folder (no model needed)",
        description="Apply a criterion to RUN_DIR/profile.json; "
                    "rewrite super_experts.json and sensitivity.json.",
    )  # fmt: skip
    p.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by `superexperts profile`")
    p.add_argument("--criterion", default="paper",
                   help=f"one of {', '.join(sorted(CRITERIA))} (default: paper)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="criterion parameter, e.g. percentile=99 max_fraction=0.08 k=3 (repeatable)")
    p.add_argument("--include-layers", metavar="FRACTION|LIST",
                   help="layers judged: a fraction (0.75 = layers < round(0.75 L)) or a list 1,2,3")
    p.add_argument("--no-report", action="store_true",
                   help="do not re-render an existing report.html (it would show the old SEs)")
    p.set_defaults(run=run)


def criterion_args(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """Validated (criterion, params) from --criterion/--param/--include-layers (shared with compare)."""
    get_criterion(args.criterion)
    params = parse_params(args.criterion, args.param)
    if args.include_layers is not None:
        if "include_layers" in params:
            raise UserError("give the layers once: --include-layers or --param include_layers=..., not both.")
        params["include_layers"] = parse_include_layers(args.include_layers)
    return args.criterion, params


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
    criterion, params = criterion_args(args)
    result = reidentify_run(args.run_dir, criterion, params)
    verdict = result.verdict
    print(thresholds_line(verdict.criterion))
    print(f"{len(verdict.super_experts)} Super Experts:")
    print(se_table(verdict))
    print(f"sensitivity ({result.grid_criterion} rule, percentile x max_fraction): "
          f"{sensitivity_verdict(result.grid)}")
    if result.known is not None:
        print(f"paper: {agreement_line(result.known)}")
    print(f"wrote {args.run_dir}/super_experts.json and sensitivity.json")
    if (Path(args.run_dir) / "report.html").is_file() and not args.no_report:
        from ..report import write_report  # matplotlib and the page builders: only when needed

        print(f"updated {write_report(args.run_dir)}")
    return 0
