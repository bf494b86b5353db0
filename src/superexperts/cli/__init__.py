"""`superexperts` command line: a thin layer of subcommands over the library.

Each subcommand is a module here with `add_parser(subparsers)` and `run(args) -> int`; add its
name to COMMANDS. `UserError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import warnings

from ..runs.errors import SuperExpertsWarning, UserError

COMMANDS = ["profile", "identify", "known", "report", "compare", "export", "sinks", "prune-eval", "protect", "plan",
            "quant-eval", "audit"]


def build_parser() -> argparse.ArgumentParser:
    from .common import OneLineParser

    parser = OneLineParser(
        prog="superexperts", description="Find, explain and protect the Super Experts of MoE LLMs."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name.replace('-', '_')}").add_parser(sub)
    return parser


def _one_line_warnings(command: str):
    """`showwarning` printing our warnings as one line; others as Python does."""
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, SuperExpertsWarning):
            print(f"superexperts {command}: warning: {message}", file=sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    return show


def main(argv: list[str] | None = None) -> int:
    try:  # the subcommands' imports (torch, transformers, pandas) take seconds: Ctrl-C there is one line too
        from ..runs.runfolder import WRITTEN

        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:
        print("superexperts: interrupted while starting; nothing was written.", file=sys.stderr)
        return 130
    WRITTEN.clear()  # only this command's files count in the interruption message
    try:
        from .common import writing

        with warnings.catch_warnings(), writing(args):
            warnings.showwarning = _one_line_warnings(args.command)
            code = int(args.run(args) or 0)
            sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
            return code
    except BrokenPipeError:  # the reader stopped early (`| head`): quiet, like `git log | head`
        _drop_stdout()
        return 0
    except UserError as e:
        print(f"superexperts {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"superexperts {args.command}: interrupted; {_interrupted(args)}", file=sys.stderr)
        return 130


def _drop_stdout() -> None:
    """Point stdout at /dev/null: the interpreter's final flush of a closed pipe would print a traceback."""
    import os

    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _interrupted(args: argparse.Namespace) -> str:
    """What an interruption left: files already complete (written atomically), resumable progress, or nothing."""
    from ..runs.runfolder import WRITTEN

    if getattr(args, "stream", False) and getattr(args, "state_dir", None):
        return (f"the layers finished so far are kept in {args.state_dir}; run the same command with --resume "
                "to continue.")  # fmt: skip
    if WRITTEN:
        folders = sorted({str(p.parent) for p in WRITTEN})
        return (f"{len(WRITTEN)} complete file(s) were already written in {', '.join(folders)} "
                "(e.g. the run without its report); re-run with --overwrite to finish.")  # fmt: skip
    return "nothing was written."


if __name__ == "__main__":
    sys.exit(main())
