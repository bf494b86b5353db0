"""Flags and defaults shared by the subcommands: declared once, parsed once.

`add_model_args` (MODEL, --device, --device-map, --dtype, --trust-remote-code), `add_criterion_args`
(--criterion, --param, --include-layers) and `window_defaults` (the demo's short windows); for the
evaluation subcommands (quant-eval, audit, prune-eval) `add_loading_flags`, `add_window_flags`,
`add_task_flags`, `tasks_of` and `out_dir`.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from ..runs.errors import UserError

# Nothing heavy at import time (torch, transformers, pandas): `--help` and the input checks answer
# before them. The criterion names are listed here for the help texts; a test keeps them equal to
# the registry (identify.rules.CRITERIA).
CRITERION_NAMES = ("mean-multiple", "paper", "quantile", "reap", "reap-abs", "std")

# A real model: the paper's windows.
MODEL_WINDOWS = {"seq_len": 2048, "samples": 128}


def add_model_args(p: argparse.ArgumentParser, model_help: str) -> None:
    p.add_argument("model", nargs="?", metavar="MODEL", help=model_help)
    add_device_args(p)
    p.add_argument("--allow-missing-weights", action="store_true", help="load a checkpoint whose weights do not "
                   "match the model (missing ones are random-initialised, unexpected ones dropped); default: refuse")
    add_device_map_arg(p)


def add_device_map_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device-map", metavar="auto|balanced|FILE",
                   help="spread the model over devices with accelerate (instead of --device): auto, balanced, "
                   "balanced_low_0, or a JSON file {module: cpu|cuda:N|disk}; what does not fit is offloaded "
                   "to a temporary folder")  # fmt: skip


def add_prefetch_arg(p: argparse.ArgumentParser) -> None:
    """--prefetch, beside each streaming subcommand's --stream."""
    p.add_argument("--prefetch", choices=("auto", "on", "off"), help="with --stream: read the next layer in a "
                   "background thread while this one computes: auto (default; on for accelerators, off on the "
                   "CPU, where the thread takes a core from the compute), on, off")  # fmt: skip


def add_device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default auto)")
    p.add_argument("--dtype", default="auto", help="auto | bfloat16 | float16 | float32 (default auto)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own Python code")


def add_criterion_args(p: argparse.ArgumentParser, criterion_help: str, default: str | None = "paper") -> None:
    p.add_argument("--criterion", default=default, help=criterion_help)
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="criterion parameter, e.g. percentile=99 max_fraction=0.08 k=3 (repeatable)")
    p.add_argument("--include-layers", metavar="FRACTION|LIST",
                   help="layers judged: a fraction (0.75 = layers < round(0.75 L)) or a list 1,2,3")


def criterion_names() -> str:
    return ", ".join(CRITERION_NAMES)


def criterion_args(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """Validated (criterion, params) from --criterion/--param/--include-layers."""
    from ..identify.rules import get_criterion, parse_include_layers, parse_params

    get_criterion(args.criterion)
    params = parse_params(args.criterion, args.param)
    if args.include_layers is not None:
        if "include_layers" in params:
            raise UserError("give the layers once: --include-layers or --param include_layers=..., not both.")
        params["include_layers"] = parse_include_layers(args.include_layers)
    return args.criterion, params


def window_defaults(synthetic: bool, seq_len: int | None, samples: int | None, *,
                    model_seq_len: int = MODEL_WINDOWS["seq_len"], default_samples: int | None = None
                    ) -> tuple[int, int]:
    """(seq_len, samples): the flags when given, else the demo's or a real model's defaults."""
    from ..models.demo import DEMO_WINDOWS

    defaults = DEMO_WINDOWS if synthetic else {**MODEL_WINDOWS, "seq_len": model_seq_len}
    samples_default = default_samples if default_samples is not None else defaults["samples"]
    return (seq_len if seq_len is not None else defaults["seq_len"],
            samples if samples is not None else samples_default)


def model_of(args: argparse.Namespace, from_dir: str | None) -> str | None:
    """MODEL, else the model the --from run profiled (None = the built-in demo)."""
    if from_dir is not None and not (Path(from_dir) / "super_experts.json").is_file():
        raise UserError(f"--from {from_dir}: no super_experts.json there; run `superexperts profile --out "
                        f"{from_dir}` first.")
    if args.model is not None or from_dir is None:
        return args.model
    from ..identify.profile_run import model_of_run

    return model_of_run(from_dir)


SEED_LIMIT = 2**63  # numpy's and torch's generators take seeds in [0, 2**63)


def seed_arg(text: str) -> int:
    """argparse type of --seed: a whole number the generators accept."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}; pass a whole number") from None
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"{value} is out of range; seeds are 0 <= seed < 2**63")
    return value


def add_loading_flags(p: argparse.ArgumentParser) -> None:
    """--batch-size and the device flags of the evaluation subcommands (quant-eval, audit)."""
    add_batch_flag(p)
    add_device_args(p)


def add_batch_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", default="auto", metavar="auto|N",
                   help="windows per forward: N, or auto (default): the most that fit the device's free memory "
                   "with full logits (a token budget on CPU), recorded in the output")  # fmt: skip


def add_window_flags(p: argparse.ArgumentParser, samples_default: str, seq_len_default: str = "2048; demo 64",
                     ppl_default: str = "built-in text for the demo, none otherwise") -> None:
    p.add_argument("--data", help="calibration windows for the SE outputs, massive activations and sinks: file, "
                   "folder, wikitext2, c4 or a dataset name (default built-in text)")  # fmt: skip
    p.add_argument("--samples", type=int, help=f"calibration windows (default {samples_default})")
    p.add_argument("--seq-len", type=int, help=f"perplexity/calibration window length (default {seq_len_default})")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of the windows and random controls (default 0)")
    p.add_argument("--ppl", metavar="DATA", help="perplexity data: file, folder, wikitext2, c4 or a dataset name "
                   f"(default: {ppl_default})")  # fmt: skip
    p.add_argument("--max-windows", type=int, help="perplexity windows kept (default all; the reference's C4: 256)")


def add_many_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--many", action="store_true", help="run more than 50 evaluation conditions (each a full pass; "
                   "refused without it)")  # fmt: skip


def add_task_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tasks", metavar="LIST", help="lm-eval tasks, e.g. arc_easy,piqa (needs the eval extra)")
    p.add_argument("--tasks-include", metavar="DIR", help="folder of extra lm-eval task YAMLs")
    p.add_argument("--limit", type=int, help="documents per task (quick looks; not comparable to published)")
    p.add_argument("--num-fewshot", type=int, help="few-shot examples per task (default: the task's)")
    p.add_argument("--generate", action="append", default=[], metavar="PROMPTS",
                   help="a prompts file (one per line) or a prompt; repeatable")
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens generated per prompt (default 64)")


def task_names(args: argparse.Namespace) -> list[str]:
    """--tasks as a list of names (none when the flag is absent; an empty flag is an error)."""
    tasks = [t.strip() for t in (args.tasks or "").split(",") if t.strip()]
    if args.tasks is not None and not tasks:
        raise UserError("--tasks is empty; pass task names such as arc_easy,piqa.")
    return tasks


def tasks_of(args: argparse.Namespace):
    """(task names, lm-eval task manager or None); lm-eval missing or an unknown task fails here,
    before the model loads."""
    tasks = task_names(args)
    if not tasks:
        return tasks, None
    from ..evaluate.lm_eval import check_tasks

    return tasks, check_tasks(tasks, include_path=args.tasks_include)


def out_dir(args: argparse.Namespace, filename: str, default: str, inputs=(), also=()) -> Path:
    """--out (default: --from RUN_DIR, else `default`), checked by the one placement rule
    (runs.safety.check_record_out): not an input or a checkpoint folder, writable, and `filename`
    (and the `also` files) replaced only with --overwrite and only when this tool wrote them."""
    from ..runs.safety import check_record_out

    out = Path(args.out or getattr(args, "from_dir", None) or default)
    check_record_out(out, inputs, filename, overwrite=args.overwrite, also=also)
    return out


def print_stale(run_dir: str | Path) -> None:
    """One line per result of `run_dir` computed for other SEs than the run's now (the report marks it)."""
    from ..runs.runfolder import stale_results

    for name, reason, rerun in stale_results(run_dir):
        print(f"stale: {name}: {reason}; the report marks it stale; rerun: {rerun}")


def print_outside_run(out: str | Path, name: str) -> None:
    """One line when `name` was written outside a profile run: what it rests on, and that no report shows it."""
    import json

    from ..runs.runfolder import RUN_MARKER

    if (Path(out) / RUN_MARKER).is_file():
        return
    try:
        basis = json.loads((Path(out) / name).read_text()).get("computed_for") or {}
    except (OSError, ValueError, AttributeError):
        return
    if basis.get("profile_run"):
        rests = f"was computed for the SEs of the profile run {basis['profile_run']}"
    else:
        rests = (f"does not rest on a profile run: it records the experts it was computed for "
                 f"({', '.join(basis.get('super_experts') or []) or 'none'}) and the model's fingerprint")  # fmt: skip
    print(f"note: {out} is not a profile run: {name} {rests}; no report shows it (write into a run folder, "
          "--from RUN_DIR without --out, for one).")  # fmt: skip


def printed() -> None:
    """Flush what was printed before a command writes its files (identify, compare: compute, print,
    write): a reader that stopped early (`| head -1`) raises BrokenPipeError here, so `main` ends
    quietly and no file is touched after stdout closed (issue 23). A closed pipe is seen without
    writing to it too: poll reports POLLERR on a pipe whose reader is gone."""
    import select
    import sys

    sys.stdout.flush()
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):  # replaced by a buffer (tests, -q): nobody reads a pipe
        return
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        if any(event & (select.POLLERR | select.POLLHUP) for _, event in poller.poll(0)):
            raise BrokenPipeError(f"stdout (fd {fd}) has no reader")


def progress(args: argparse.Namespace) -> bool:
    """Progress bars unless -q (a namespace built by a subcommand's own parser has no -q: bars on)."""
    return not getattr(args, "quiet", False)


class _Deprecated(argparse.Action):
    """An old spelling kept for one release: stores into the new flag's place and says so once."""

    def __init__(self, option_strings, dest, *, new: str, **kwargs) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        deprecation_note(option_string, self.new)
        setattr(namespace, self.dest, True if self.nargs == 0 else values)


def deprecation_note(old: str, new: str) -> None:
    """The one-line note an old spelling prints on stderr (it still works, for one release)."""
    import sys

    print(f"superexperts: note: {old} is deprecated, use {new} (the old spelling goes in the next release).",
          file=sys.stderr)  # fmt: skip


def add_deprecated(p: argparse.ArgumentParser, old: str, new: str, dest: str, *, flag: bool = False) -> None:
    """Accept `old` (hidden from --help) as the flag `new` that stores into `dest`."""
    p.add_argument(old, dest=dest, action=_Deprecated, new=new, nargs=0 if flag else None,
                   default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # fmt: skip


def add_experts_arg(p: argparse.ArgumentParser, dest: str, *, default: str | None = "super", what: str = "prune",
                    super_means: str = "the SEs of --from RUN_DIR") -> None:
    """--experts, the one name of an expert set (`--prune` kept as a deprecated spelling)."""
    # Not argparse-required even without a default: the old spelling must be able to fill it.
    p.add_argument("--experts", dest=dest, default=default, metavar="super|LIST|FILE",
                   help=f"experts to {what}: 'super' ({super_means}), a list such as 1:68,2:92,4:shared, or a "
                   "file (JSON records or super_experts.json)" + (f" (default {default})" if default else "; required"))  # fmt: skip
    add_deprecated(p, "--prune", "--experts", dest)


def add_run_dir_arg(p: argparse.ArgumentParser) -> None:
    """The run folder read: --from RUN_DIR, as in every other subcommand. A positional RUN_DIR still
    works for one release (hidden from --help; run_dir_of prints the deprecation note)."""
    p.add_argument("--from", dest="from_dir", metavar="RUN_DIR", help="the run folder: a folder written by "
                   "`superexperts profile`")  # fmt: skip
    p.add_argument("run_dir", nargs="?", help=argparse.SUPPRESS)


def run_dir_of(args: argparse.Namespace) -> str:
    if args.run_dir is not None and args.from_dir is not None and args.run_dir != args.from_dir:
        raise UserError(f"two run folders given ({args.run_dir} and --from {args.from_dir}); give one: --from RUN_DIR.")
    if args.run_dir is not None:
        deprecation_note(f"the positional RUN_DIR ({args.run_dir})", f"--from {args.run_dir}")
    run_dir = args.from_dir or args.run_dir
    if run_dir is None:
        raise UserError("no run folder given; pass --from RUN_DIR (a folder written by `superexperts profile`).")
    return run_dir


# What to do about argparse's type errors, by the words of its message.
_TYPE_FIXES = {"invalid int value": "pass a whole number", "invalid float value": "pass a number",
               "invalid choice": "pick one of the listed values", "expected one argument": "give it a value"}


class OneLineParser(argparse.ArgumentParser):
    """argparse with one-line errors (the usage block only with --help), and `-inf`/`-1.5`/`nan`
    read as values, never as unknown options (`--threshold -inf` must reach its range check)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-(\d+|\d*\.\d+|\d+\.?\d*e[-+]?\d+|inf|infinity|nan)$", re.IGNORECASE)

    def parse_args(self, args=None, namespace=None):
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:  # argparse reports these from the top parser: name the subcommand they were given to
            command = getattr(parsed, "command", None)
            prog = f"{self.prog} {command}" if command else self.prog
            self.exit(2, f"{prog}: error: unrecognized arguments: {' '.join(extras)} (see {prog} --help).\n")
        return parsed

    def error(self, message: str):
        fix = next((f"; {fix}" for words, fix in _TYPE_FIXES.items() if words in message), "")
        self.exit(2, f"{self.prog}: error: {message}{fix} (see {self.prog} --help).\n")


# Where a command writes when --out is not given (the --from run folder first).
_DEFAULT_OUT = {"prune-eval": "runs/prune-eval", "quant-eval": "runs/quant-eval", "sinks": "runs/sinks"}


def written_folders(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(folder, the flag that names it) of every folder this command writes into: its output, the run
    folder it re-renders report.html in (the same folder), protect's --profile-out when it profiles
    first and the folder of its --out-file. Empty for commands that write nothing."""
    if args.command in ("report", "identify"):
        return [(args.from_dir, "--from") if args.from_dir is not None else (args.run_dir, "RUN_DIR")]
    if args.command in _DEFAULT_OUT:
        target = (args.out or getattr(args, "from_dir", None) or getattr(args, "run_dir", None)
                  or _DEFAULT_OUT[args.command])  # fmt: skip
        return [(target, "--out" if args.out else "--from" if target != _DEFAULT_OUT[args.command] else "--out")]
    if args.command == "protect":
        folders = [] if args.out is None else [(str(Path(args.out).parent), "--out-file")]
        if args.from_dir is None and not (args.source is not None and (Path(args.source) / "profile.json").is_file()):
            folders.append((args.run_dir, "--profile-out"))  # MODEL is profiled into it first
        return folders
    out = getattr(args, "out", None)
    return [] if out is None else [(out, "--out")]


def writing(args: argparse.Namespace):
    """The writer locks of every folder this command writes (`written_folders`), keyed on their real
    paths: two writers of one run folder exclude each other, the second gets one line
    (runs.staging.writer_lock)."""
    import contextlib
    import os

    from ..runs.staging import writer_lock

    stack, taken = contextlib.ExitStack(), set()
    try:
        for folder, flag in written_folders(args):
            real = os.path.realpath(os.path.expanduser(folder))
            if real not in taken:  # one folder named twice (--out-file inside --profile-out): one lock
                taken.add(real)
                stack.enter_context(writer_lock(folder, flag))
    except BaseException:
        stack.close()
        raise
    return stack
