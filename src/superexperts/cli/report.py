"""`superexperts report RUN_DIR`: write RUN_DIR/report.html, one self-contained page."""

from __future__ import annotations

import argparse

from .common import print_stale

HELP = "write a self-contained report.html for a run folder"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help=HELP,
        description="Write RUN_DIR/report.html (figures inlined, opens from disk) and RUN_DIR/figures/.",
    )  # fmt: skip
    p.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by `superexperts profile`")
    p.add_argument("--no-figure-files", action="store_true",
                   help="only report.html; do not also write figures/*.png and *.svg")  # fmt: skip
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..report import write_report

    path = write_report(args.run_dir, figures=not args.no_figure_files)
    print(f"wrote {path}")
    print_stale(args.run_dir)
    return 0
