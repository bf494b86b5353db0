"""Downstream tasks through lm-evaluation-harness on an IN-MEMORY (possibly ablated) model.

lm-eval is an optional extra (`pip install 'superexperts[eval]'`). The model is wrapped, not
reloaded: `HFLM(pretrained=model, tokenizer=tokenizer)`, so ablations applied to it are what gets
evaluated. Task names are checked against lm-eval's registry (plus `include_path`, a folder of
task YAMLs) before anything runs: call `check_tasks` before loading a model to fail early.

Example:
    >>> run_tasks(model, tokenizer, ["arc_easy", "piqa"], batch_size=8, limit=100)
    {'arc_easy': {'acc': 0.71, 'acc_stderr': 0.04, 'acc_norm': 0.66, ...}, 'piqa': {...}}
"""

from __future__ import annotations

import difflib
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

from ..models.demo_data import resource_dir
from ..runs.cache import cache_root
from ..runs.errors import UserError

INSTALL_HINT = "pip install 'superexperts[eval]'"
NOT_METRICS = {"sample_len", "alias"}  # bookkeeping lm-eval puts next to the metrics


def require_lm_eval() -> None:
    """Raise a UserError naming the install command when lm-eval is not importable."""
    try:
        import lm_eval.tasks  # noqa: F401
    except ImportError as e:
        raise UserError(f"Downstream tasks need lm-evaluation-harness, which is not installed ({e}); "
                        f"run: {INSTALL_HINT}") from None


def _unknown_task_message(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    hint = f"Did you mean: {', '.join(close)}? " if close else ""
    return (f"Unknown lm-eval task '{name}'. {hint}List all tasks with `lm-eval ls tasks`; "
            "a folder of your own task YAMLs goes in --tasks-include.")


PACKAGED_TASKS = resource_dir("tasks")


def check_tasks(tasks: list[str], *, include_path: str | None = None):
    """Validate task names and return the lm-eval TaskManager that knows them.

    Builds a manager over the packaged tasks and `include_path` alone first (fast) and falls back to lm-eval's full
    registry (seconds: it indexes ~15k YAMLs) only when a name is not a local task.
    """
    require_lm_eval()
    from lm_eval.tasks import TaskManager

    if not tasks:
        raise UserError("No lm-eval tasks given; pass task names such as arc_easy,piqa.")
    if include_path is not None and not Path(include_path).is_dir():
        raise UserError(f"Task folder {include_path} does not exist; pass a folder of lm-eval task YAMLs.")
    # The package's own tasks (demo_arith) are found by name, also from an installed wheel.
    paths = [str(PACKAGED_TASKS), *([str(include_path)] if include_path is not None else [])]
    local = TaskManager(include_path=paths, include_defaults=False)
    if all(_known(local, name) for name in tasks):
        check_task_data(tasks, local)
        return local
    registry = _saved_task_names()
    if registry is not None:  # a name neither local nor in lm-eval's registry: refused without indexing it
        for name in tasks:
            if not _known(local, name) and name not in registry:
                raise UserError(_unknown_task_message(name, sorted(registry | set(local.all_tasks))))
    manager = TaskManager(include_path=paths)
    _save_task_names(set(manager.all_tasks) - set(local.all_tasks))
    for name in tasks:
        if not _known(manager, name):
            raise UserError(_unknown_task_message(name, manager.all_tasks))
    check_task_data(tasks, manager)
    return manager


def _task_names_file() -> Path:
    """The names of lm-eval's own tasks, saved after the first full index (seconds: ~15k YAMLs), keyed
    by lm-eval's version and location: an upgrade or another install indexes again."""
    import hashlib
    from importlib.metadata import version

    import lm_eval

    key = hashlib.sha256(f"{version('lm_eval')}\0{Path(lm_eval.__file__).resolve().parent}".encode()).hexdigest()[:16]
    return cache_root() / f"lm_eval-tasks-{key}.json"


def _saved_task_names() -> set[str] | None:
    try:
        names = json.loads(_task_names_file().read_text())
    except (OSError, ValueError):
        return None
    return set(names) if isinstance(names, list) and all(isinstance(n, str) for n in names) else None


def _save_task_names(names: set[str]) -> None:
    """Best effort: a cache that cannot be written (read-only home) only costs the next run the index."""
    from ..runs.runfolder import atomic_write

    path = _task_names_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(sorted(names)))
    except (OSError, UserError):
        pass


def _offline() -> bool:
    from ..models.checkpoints.integrity import hub_unreachable

    datasets_offline = os.environ.get("HF_DATASETS_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    return datasets_offline or hub_unreachable()


def check_task_data(tasks: list[str], manager) -> None:
    """Offline, build each task now (its dataset must be in the local cache), so a missing one
    fails in one line before the model loads instead of in a traceback after it. Online this is
    skipped: the data is downloaded when the tasks run."""
    if not _offline():
        return
    from lm_eval.tasks import get_task_dict

    for name in tasks:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # its successor is not in older lm-eval
                get_task_dict([name], manager)
        except (OSError, ValueError) as e:  # ConnectionError, DatasetNotFoundError are OSErrors
            why = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
            raise UserError(f"lm-eval task '{name}' cannot load its data offline ({why}); run it once with network "
                            "(HF_HUB_OFFLINE unset) to cache the dataset, or drop it from --tasks.") from None


def _known(manager, name: str) -> bool:
    # lm-eval also accepts a path to a task YAML in place of a name.
    return name in manager.all_tasks or (name.endswith((".yaml", ".yml")) and Path(name).is_file())


def _metric_table(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """lm-eval's {"task": {"acc,none": 0.5, "alias": ...}} -> {"task": {"acc": 0.5}}.

    The ",none" filter suffix is dropped; other filters stay (e.g. "exact_match,strict-match").
    Bookkeeping (alias, sample_len), "N/A" stderrs and NaN are left out: metrics only, valid JSON.
    """
    table: dict[str, dict[str, float]] = {}
    for task, metrics in results.items():
        row = {}
        for key, value in metrics.items():
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            if key in NOT_METRICS or not numeric or math.isnan(value):
                continue
            metric, _, filter_name = key.partition(",")
            row[metric if filter_name in ("", "none") else key] = float(value)
        table[task] = row
    return table


def run_tasks(
    model,
    tokenizer,
    tasks: list[str],
    *,
    batch_size: int = 1,
    limit: int | None = None,
    include_path: str | None = None,
    num_fewshot: int | None = None,
    task_manager=None,
) -> dict[str, dict[str, float]]:
    """Evaluate the in-memory `model` on lm-eval `tasks`; returns {task: {metric: value}}.

    `limit` caps the documents per task (for quick looks; numbers are then not comparable to
    published ones). Pass the manager from `check_tasks` as `task_manager` to skip re-indexing.
    """
    if batch_size < 1:
        raise UserError(f"batch_size must be at least 1, got {batch_size}.")
    if limit is not None and limit < 1:
        raise UserError(f"limit must be a positive number of documents, got {limit}.")
    manager = task_manager or check_tasks(tasks, include_path=include_path)
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    was_training = model.training
    try:
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        output = simple_evaluate(model=lm, tasks=list(tasks), num_fewshot=num_fewshot, limit=limit,
                                 task_manager=manager, log_samples=False)
    finally:
        model.train(was_training)  # HFLM puts the model in eval mode
    return _metric_table(output["results"])
