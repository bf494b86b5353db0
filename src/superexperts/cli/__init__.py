"""`superexperts` command line: a thin layer of subcommands over the library.

Each subcommand is a module here with `HELP` (its one-line summary), `add_parser(subparsers)` and
`run(args) -> int`; add its name to COMMANDS. The modules import nothing heavy at the top: only the
subcommand being run builds its full parser, and torch/transformers load when its `run` needs them,
so `--help` and argument errors answer at once.

Exit codes: 0 ok; 1 a negative verdict (audit: damaged, compare: the runs disagree); 2 bad input
(`UserError`: one line on stderr, nothing written); 3 an unexpected failure (a traceback to report);
130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import warnings

from ..runs.errors import SuperExpertsWarning, UserError, library_failure

COMMANDS = ["profile", "identify", "known", "report", "compare", "export", "sinks", "prune-eval", "protect", "plan",
            "quant-eval", "audit"]


EPILOG = ("exit codes: 0 ok, 1 a negative verdict (audit: damaged; compare: the runs disagree), 2 bad input, "
          "3 an unexpected failure, 130 interrupted")


def _module(name: str):
    return importlib.import_module(f"{__name__}.{name.replace('-', '_')}")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand; with `argv`, only the subcommand it names gets its full parser
    (the others their one-line summary), so parsing never pays for another subcommand's imports."""
    from ..runs.version import __version__
    from .common import OneLineParser

    parser = OneLineParser(prog="superexperts", epilog=EPILOG,
                                     description="Find, explain and protect the Super Experts of MoE LLMs.")
    parser.add_argument("--version", action="version", version=f"superexperts {__version__}")
    loud = parser.add_mutually_exclusive_group()
    loud.add_argument("-q", "--quiet", action="store_true", help="print only errors: no progress bars, warnings "
                      "or summaries (the exit code carries the verdict)")  # fmt: skip
    loud.add_argument("-v", "--verbose", action="store_true", help="show every warning in full, each time, and "
                      "the libraries' own log messages")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = _chosen(argv)
    for name in COMMANDS:
        module = _module(name)
        if argv is None or name == chosen:
            module.add_parser(sub)
        else:
            sub.add_parser(name, help=module.HELP)
    return parser


def _chosen(argv: list[str] | None) -> str | None:
    """The subcommand `argv` names (the first word that is not an option), or None (e.g. --help)."""
    first = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    return first if first in COMMANDS else None


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
        from ..runs import runfolder
        from ..runs.runfolder import WRITTEN

        argv = sys.argv[1:] if argv is None else list(argv)
        args = build_parser(argv).parse_args(argv)
    except KeyboardInterrupt:
        print("superexperts: interrupted while starting; nothing was written.", file=sys.stderr)
        return 130
    WRITTEN.clear()  # only this command's files count in the interruption message
    runfolder.COMMAND_LINE = ["superexperts", *argv]  # recorded in every output
    try:
        from .common import writing

        with warnings.catch_warnings(), _loudness(args), writing(args):
            warnings.showwarning = _one_line_warnings(args.command)
            if args.verbose:
                warnings.simplefilter("always")
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
    except Exception as e:  # noqa: BLE001 - a bug or an environment failure: not exit 1, which means a negative verdict
        where = library_failure(e)
        if where is not None and not args.verbose:  # the model's own code, not ours: one line (-v shows it all)
            import transformers

            print(f"superexperts {args.command}: error: the model's own code fails in transformers "
                  f"{transformers.__version__} ({where}); this model does not run with this transformers version "
                  "(exit 3; -v shows the traceback).", file=sys.stderr)  # fmt: skip
            return 3
        import traceback

        traceback.print_exc()
        print(f"superexperts {args.command}: unexpected failure (exit 3); the traceback above says where.",
              file=sys.stderr)
        return 3


@contextlib.contextmanager
def _loudness(args: argparse.Namespace):
    """-q: stdout, progress bars and warnings off (errors still go to stderr); -v: the libraries'
    log messages at INFO; default: their repeated log messages shown once (e.g. lm-eval's, once per
    condition otherwise)."""
    import logging
    import os

    once = _Once()
    root = logging.getLogger()
    saved = (root.level, os.environ.get("TQDM_DISABLE"))
    if args.verbose:
        root.setLevel(logging.INFO)
        logging.basicConfig()  # a handler that prints INFO (the last-resort one prints WARNING and up)
    # Records of the libraries' loggers reach the root's handlers, or Python's last-resort handler
    # when none is configured (lm-eval logs through it): the filter sits on those.
    handlers = [*root.handlers, *([logging.lastResort] if logging.lastResort is not None else [])]
    if not args.verbose:
        for handler in handlers:
            handler.addFilter(once)
    with contextlib.ExitStack() as stack:
        if args.quiet:
            os.environ["TQDM_DISABLE"] = "1"  # tqdm reads its defaults from TQDM_* (tqdm >= 4.66)
            warnings.simplefilter("ignore")
            logging.disable(logging.WARNING)
            stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(os.devnull, "w"))))
        try:
            yield
        finally:
            root.setLevel(saved[0])
            for handler in handlers:
                handler.removeFilter(once)
            logging.disable(logging.NOTSET)
            if saved[1] is None:
                os.environ.pop("TQDM_DISABLE", None)
            else:
                os.environ["TQDM_DISABLE"] = saved[1]


class _Once:
    """A logging filter passing each (logger, message) once per command."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()

    def filter(self, record) -> bool:
        key = (record.name, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


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
