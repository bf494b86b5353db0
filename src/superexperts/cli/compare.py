"""`superexperts compare RUN_DIR RUN_DIR...`: did the runs find the same Super Experts?"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..compare import compare, comparison_text
from ..compare_plot import compare_figure_files
from ..errors import UserError
from ..io import json_bytes, write_files
from ..meta import base_metadata
from ..reidentify import load_run_ses
from ..rules import CRITERIA
from .identify import criterion_args


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "compare", help="compare the Super Experts of two or more runs (exit 0 when they agree, 1 when not)",
        description="Jaccard overlap of the SE sets and rank correlation of a[l,e] between run folders "
                    "(different data, or model variants such as Base vs Instruct).",
    )  # fmt: skip
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="folders written by `superexperts profile`")
    p.add_argument("--out", metavar="DIR", help="write compare.json and compare_scatter.png/.svg here")
    p.add_argument("--criterion", help=f"re-identify every run with one of {', '.join(sorted(CRITERIA))} "
                   "(default: the SEs saved in each run's super_experts.json)")  # fmt: skip
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="criterion parameter")
    p.add_argument("--include-layers", metavar="FRACTION|LIST", help="layers judged, with --criterion")
    p.set_defaults(run=run)


def _names(run_dirs: list[str]) -> list[str]:
    """Folder names, or the paths as given when two folders share a name."""
    names = [Path(d).resolve().name or str(d) for d in run_dirs]
    return names if len(set(names)) == len(names) else [str(d) for d in run_dirs]


def run(args: argparse.Namespace) -> int:
    if len(args.run_dirs) < 2:
        raise UserError("compare needs at least two RUN_DIRs.")
    if len({Path(d).resolve() for d in args.run_dirs}) != len(args.run_dirs):
        raise UserError("the same RUN_DIR is given twice; pass different run folders.")
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise UserError(f"--out {args.out} is a file, not a folder; pass a folder path.")
    criterion, params = (None, {})
    if args.criterion or args.param or args.include_layers:
        args.criterion = args.criterion or "paper"
        criterion, params = criterion_args(args)
    runs = [load_run_ses(d, n, criterion, params) for d, n in zip(args.run_dirs, _names(args.run_dirs))]
    result = compare(runs)
    print(comparison_text(result))
    if args.out:
        how = {"name": criterion, **params} if criterion else "saved super_experts.json"
        meta = base_metadata(tool="compare", run_dirs=[str(d) for d in args.run_dirs], criterion=how)
        write_files(args.out, {"compare.json": json_bytes(result.to_json() | {"meta": meta}),
                               **compare_figure_files(runs)})  # fmt: skip
        print(f"wrote {args.out}/compare.json and compare_scatter.png/.svg")
    return 0 if result.agree else 1
