"""`superexperts report --from RUN_DIR`: write RUN_DIR/report.html, one self-contained page."""

from __future__ import annotations

import argparse

from .common import add_run_dir_arg, print_stale, run_dir_of

HELP = "write a self-contained report.html for a run folder"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help=HELP,
        description="Write RUN_DIR/report.html (figures inlined, opens from disk) and RUN_DIR/figures/.",
    )  # fmt: skip
    add_run_dir_arg(p)
    p.add_argument("--no-figure-files", action="store_true",
                   help="only report.html; do not also write figures/*.png and *.svg")  # fmt: skip
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..report import write_report

    run_dir = run_dir_of(args)
    path = write_report(run_dir, figures=not args.no_figure_files)
    print(f"wrote {path}")
    print_stale(run_dir)
    return 0
