"""`superexperts compare RUN_DIR RUN_DIR...`: did the runs find the same Super Experts?"""

from __future__ import annotations

import argparse

from .common import add_criterion_args, criterion_args, criterion_names, printed

HELP = "compare the Super Experts of two or more runs (exit 0 when they agree, 1 when not)"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "compare", help=HELP,
        description="Jaccard overlap of the SE sets and rank correlation of a[l,e] between run folders "
                    "(different data, or model variants such as Base vs Instruct).",
    )  # fmt: skip
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="folders written by `superexperts profile`")
    p.add_argument("--out", metavar="DIR", help="write compare.json and compare_scatter.png/.svg here")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier compare.json in --out")
    add_criterion_args(p, f"re-identify every run with one of {criterion_names()} "
                       "(default: the SEs saved in each run's super_experts.json)", default=None)  # fmt: skip
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..recipes.comparing import CompareRequest, run_compare

    criterion, params = (None, {})
    if args.criterion or args.param or args.include_layers:
        args.criterion = args.criterion or "paper"
        criterion, params = criterion_args(args)
    from ..identify.compare import comparison_text

    def show(result) -> None:  # printed before compare.json is written
        print(comparison_text(result))
        printed()

    result = run_compare(CompareRequest(args.run_dirs, out=args.out, criterion=criterion, params=params,
                                        overwrite=args.overwrite), before_write=show)  # fmt: skip
    if args.out:
        print(f"wrote {args.out}/compare.json and compare_scatter.png/.svg")
    return 0 if result.agree else 1
