"""Flags shared by the evaluation subcommands (quant-eval, audit): loading, data windows, measures."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError


def add_loading_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default auto)")
    p.add_argument("--dtype", default="auto", help="auto | bfloat16 | float16 | float32 (default auto)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own Python code")


def add_window_flags(p: argparse.ArgumentParser, samples_default: str, seq_len_default: str = "2048; demo 64",
                     ppl_default: str = "built-in text for the demo, none otherwise") -> None:
    p.add_argument("--data", help="calibration windows for the SE outputs, massive activations and sinks: file, "
                   "folder, wikitext2, c4 or a dataset name (default built-in text)")  # fmt: skip
    p.add_argument("--samples", type=int, help=f"calibration windows (default {samples_default})")
    p.add_argument("--seq-len", type=int, help=f"perplexity/calibration window length (default {seq_len_default})")
    p.add_argument("--seed", type=int, default=0, help="seed of the windows and random controls (default 0)")
    p.add_argument("--ppl", metavar="DATA", help="perplexity data: file, folder, wikitext2, c4 or a dataset name "
                   f"(default: {ppl_default})")  # fmt: skip
    p.add_argument("--max-windows", type=int, help="perplexity windows kept (default all; the reference's C4: 256)")


def add_task_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tasks", metavar="LIST", help="lm-eval tasks, e.g. arc_easy,piqa (needs the eval extra)")
    p.add_argument("--tasks-include", metavar="DIR", help="folder of extra lm-eval task YAMLs")
    p.add_argument("--limit", type=int, help="documents per task (quick looks; not comparable to published)")
    p.add_argument("--num-fewshot", type=int, help="few-shot examples per task (default: the task's)")
    p.add_argument("--generate", action="append", default=[], metavar="PROMPTS",
                   help="a prompts file (one per line) or a prompt; repeatable")
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens generated per prompt (default 64)")


def tasks_of(args: argparse.Namespace):
    """(task names, lm-eval task manager or None); lm-eval missing or an unknown task fails here,
    before the model loads."""
    tasks = [t.strip() for t in (args.tasks or "").split(",") if t.strip()]
    if args.tasks is not None and not tasks:
        raise UserError("--tasks is empty; pass task names such as arc_easy,piqa.")
    if not tasks:
        return tasks, None
    from ..evaluate.lm_eval import check_tasks

    return tasks, check_tasks(tasks, include_path=args.tasks_include)


def out_dir(args: argparse.Namespace, filename: str, default: str) -> Path:
    """--out (default: --from RUN_DIR, else `default`); refuses to replace `filename` without --overwrite."""
    out = Path(args.out or getattr(args, "from_dir", None) or default)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder; pass a folder path.")
    if (out / filename).exists() and not args.overwrite:
        raise UserError(f"{out}/{filename} exists; pass --overwrite or choose another --out.")
    return out
