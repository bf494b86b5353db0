"""Report sections for files other tools add to a run folder; each is left out when its file is absent.

sensitivity.json  {"verdict", "stable", "unstable_by", "capped": [{"percentile", "pool", "cap"}],
                   "cells": [{"percentile", "max_fraction", "count", "super_experts"}]}
prune_eval.json   {"conditions": [{"name", "experts", "mode", "perplexity", "tasks", "generations"}]}
sinks.json        {"conditions": [{"name", "sink_mass": [per layer], "sink_rate", "d_sink": [per layer]}]}
Other spellings (`rows`, `fraction`, `experts`) are read too. A damaged file shows its error in place.
"""

from __future__ import annotations

from typing import Any

from ..evaluate.sinks.caveats import meaningless
from . import texts
from .basis import change_note, ratio, rests_on
from .eval_figures import fig_perplexity, fig_sinks
from .inputs import ReportInputs
from .page import Raw, Section, esc, figure, image, number, paragraphs, table
from .sinks_notes import caveat_notes, router_table, sink_caveats

MAX_GENERATIONS = 5  # per condition; the JSON file has them all
# The pruning table's generation columns: repetition collapse shows as a high loop fraction and few
# distinct bigrams; the other metrics (tokens, distinct-1/3, runs) are in a folded table below it.
HEADLINE_GENERATION_METRICS = ("loop_fraction", "distinct_2")
PAPER_CELL = (99.5, 0.1)  # the paper's thresholds: other cells of the grid are compared with it


def experts_text(experts: Any) -> str:
    """[{"layer": 1, "expert": 68}, ...] -> '1:68, ...' (the CLI's spelling); other forms as text."""
    if isinstance(experts, list):
        parts = [f"{e.get('layer')}:{e.get('expert')}" if isinstance(e, dict) else str(e) for e in experts]
        return ", ".join(parts) if parts else "none"
    return "none" if experts in (None, "") else str(experts)


def _read(inputs: ReportInputs, name: str, section_id: str, title: str) -> tuple[dict | None, Section | None]:
    """(data, None) to build the section from; (None, a section showing the error) for a damaged
    file; (None, None) when the file is absent."""
    data, error = inputs.optional(name)
    if error:
        return None, Section(section_id, title, Raw(f'<p class="warn">{esc(error)}</p>'))
    return data, None


def _conditions(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in data.get("conditions") or [] if isinstance(c, dict)]


def sensitivity(inputs: ReportInputs) -> Section | None:
    title = "Sensitivity to the thresholds"
    data, failed = _read(inputs, "sensitivity.json", "sensitivity", title)
    if data is None:
        return failed
    grid = {}
    for c in data.get("cells") or data.get("rows") or []:
        try:
            grid[float(c["percentile"]), float(c.get("max_fraction", c.get("fraction")))] = c
        except (KeyError, TypeError, ValueError):
            continue  # a cell without its two thresholds cannot be placed
    percentiles, fractions = sorted({p for p, _ in grid}), sorted({f for _, f in grid})
    reference = _cell_text(grid.get(PAPER_CELL))
    caps = {float(c["percentile"]): c for c in data.get("capped") or [] if isinstance(c, dict) and "percentile" in c}
    rows = [[_percentile_label(p, caps.get(p))] + [_marked(_cell_text(grid.get((p, f))), reference) for f in fractions]
            for p in percentiles]  # fmt: skip
    # A grid unstable only because a percentile cannot select that many experts is no warning about the data.
    css = "answer" if data.get("stable") is not False else "note" if data.get("unstable_by") == "percentile cap" else "warn"
    verdict = Raw(f'<p class="{css}">{esc(data.get("verdict", ""))}</p>')
    columns = ["percentile \\ max fraction"] + [f"max x {f:g}" for f in fractions]
    return Section("sensitivity", title, Raw(paragraphs(texts.SENSITIVITY) + verdict + table(columns, rows)))


def _percentile_label(p: float, cap: dict[str, Any] | None) -> str:
    """'P99.9', with the most experts it can select when that is fewer than the paper cell's SEs."""
    if cap is None:
        return f"P{p:g}"
    return f"P{p:g} (selects at most {cap.get('cap', '?')} of {cap.get('pool', '?')}: capped)"


def _marked(text: str, reference: str) -> Any:
    """Cells whose SE set differs from the paper's cell stand out (bold, dark orange)."""
    return Raw(f'<span class="warn">{esc(text)}</span>') if reference and text != reference else text


def _cell_text(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return ""
    return f"{cell.get('count', '?')}: {experts_text(cell.get('super_experts', cell.get('experts')))}"


def _perplexity(value: Any) -> Any:
    return value.get("perplexity") if isinstance(value, dict) else value


def task_table(conditions: list[dict[str, Any]]) -> Raw:
    """Rows (task, metric), one column per condition: fits many tasks on a laptop screen."""
    keys: list[tuple[str, str]] = []
    for c in conditions:
        for task, metrics in (c.get("tasks") or {}).items():
            for metric in metrics if isinstance(metrics, dict) else {"value": metrics}:
                if (task, metric) not in keys and "stderr" not in metric:
                    keys.append((task, metric))
    if not keys:
        return Raw("")
    rows = []
    for task, metric in keys:
        values = []
        for c in conditions:
            metrics = (c.get("tasks") or {}).get(task)
            value = metrics.get(metric) if isinstance(metrics, dict) else metrics
            values.append("" if value is None else number(value))
        rows.append([task, metric] + values)
    columns = ["task", "metric"] + [str(c.get("name", "")) for c in conditions]
    return Raw("<h3>Task scores</h3>" + table(columns, rows))


def control_summary(summary: Any) -> Raw:
    """Random control groups: perplexity as mean +- sample std (min - max) over the seeds."""
    if not isinstance(summary, dict) or not summary:
        return Raw("")
    rows = []
    for group, s in summary.items():
        ppl = s.get("perplexity") if isinstance(s, dict) else None
        if isinstance(ppl, dict):
            spread = f"{number(ppl.get('mean'))} +- {number(ppl.get('std'))} ({number(ppl.get('min'))} - " \
                     f"{number(ppl.get('max'))})"  # fmt: skip
            rows.append([group, ppl.get("n", ""), spread])
    columns = ["control group", "seeds", "perplexity mean +- std (min - max)"]
    return Raw(table(columns, rows)) if rows else Raw("")


def generation_metrics(conditions: list[dict[str, Any]], metrics: list[str], shown: list[str]) -> Raw:
    """Every repetition metric of the generations, folded away when the pruning table shows only the
    headline ones (a table with all of them was wider than the page)."""
    if set(metrics) <= set(shown):
        return Raw("")
    rows = [[c.get("name", "")] + [number((c.get("generation_metrics") or {}).get(m)) for m in metrics]
            for c in conditions]  # fmt: skip
    return Raw(f"<details><summary>All generation metrics ({len(metrics)})</summary>"
               f"{table(['condition', *metrics], rows)}</details>")  # fmt: skip


def generations(conditions: list[dict[str, Any]]) -> Raw:
    parts = []
    for c in conditions:
        gens = [g for g in c.get("generations") or [] if isinstance(g, dict)][:MAX_GENERATIONS]
        for g in gens:
            summary = f"{esc(c.get('name', ''))}: {esc(str(g.get('prompt', ''))[:80])}"
            text = esc(g.get("text", ""))
            parts.append(f"<details><summary>{summary}</summary><pre>{text}</pre></details>")
    return Raw("<h3>Generations</h3>" + "".join(parts)) if parts else Raw("")


def perplexity_judge(conditions: list[dict[str, Any]], summary: Any, group: str | None = None):
    """A function giving each condition's [ratio to the original, note against the control spread]
    (controls and the original get no note: they are the reference)."""
    original = next((_perplexity(c.get("perplexity")) for c in conditions if c.get("name") == "original"), None)
    groups = summary if isinstance(summary, dict) else {}
    chosen = group if group in groups else next(iter(groups), None)
    spread = (groups.get(chosen) or {}).get("perplexity") if chosen else None
    controls = {n for g in groups.values() if isinstance(g, dict) for n in g.get("conditions") or []}

    def judge(c: dict[str, Any]) -> list[str]:
        value = _perplexity(c.get("perplexity"))
        if value is None or original is None:
            return ["", ""]
        if c.get("name") == "original" or c.get("name") in controls:
            return [ratio(value, original), ""]
        return [ratio(value, original), change_note(value, original=original, spread=spread)]

    return judge


def prune_eval(inputs: ReportInputs) -> Section | None:
    title = "Pruning experiments"
    data, failed = _read(inputs, "prune_eval.json", "prune-eval", title)
    if data is None:
        return failed
    conditions = _conditions(data)
    metrics = list(dict.fromkeys(k for c in conditions for k in (c.get("generation_metrics") or {})))
    shown = [m for m in HEADLINE_GENERATION_METRICS if m in metrics]
    judge = perplexity_judge(conditions, data.get("summary"))
    rows = [[c.get("name", ""), experts_text(c.get("experts")), c.get("mode", ""),
             number(_perplexity(c.get("perplexity"))), *judge(c)]
            + [number((c.get("generation_metrics") or {}).get(m)) for m in shown]
            for c in conditions]  # fmt: skip
    columns = ["condition", "experts pruned", "mode", "perplexity", "x original", "against the random controls"]
    columns += [f"generation {m}" for m in shown]
    causal = data.get("causal") if isinstance(data.get("causal"), dict) else {}
    basis = rests_on(data, f"causal check on {causal['samples']} calibration window(s)" if causal.get("samples") else "")
    body = paragraphs(texts.PRUNE_EVAL) + basis + table(columns, rows) + generation_metrics(conditions, metrics, shown)
    body += control_summary(data.get("summary"))
    files: dict[str, bytes] = {}
    if any(_perplexity(c.get("perplexity")) is not None for c in conditions):
        bars = fig_perplexity([c | {"perplexity": _perplexity(c.get("perplexity"))} for c in conditions])
        html, files = figure(bars, "perplexity", texts.CAPTIONS["perplexity"], "Perplexity per condition")
        body += html
    return Section("prune-eval", title, Raw(body + task_table(conditions) + generations(conditions)), files)


def sinks(inputs: ReportInputs) -> Section | None:
    title = "Attention sinks"
    data, failed = _read(inputs, "sinks.json", "sinks", title)
    if data is None:
        return failed
    conditions = _conditions(data)
    caveats = sink_caveats(data)
    no_d_sink = meaningless(caveats, "d_sink")  # then no D_sink number is shown without its caveat
    rows = [[c.get("name", ""), experts_text(c.get("experts")), number(c.get("sink_rate")),
             number(_mean(c.get("sink_mass"))),
             ("not meaningful" if no_d_sink else number(_mean(c.get("d_sink")))) if c.get("d_sink") else ""]
            for c in conditions]  # fmt: skip
    explain = paragraphs(texts.SINKS.format(epsilon=data.get("epsilon", 0.3)))
    fig = fig_sinks(conditions, note=no_d_sink["reason"] if no_d_sink else None)
    html, files = figure(fig, "sinks", texts.CAPTIONS["sinks"], "Attention sink per layer")
    columns = ["condition", "experts pruned", "sink rate", "mean sink mass", "mean D_sink"]
    body = explain + rests_on(data, _sink_input(data)) + caveat_notes(caveats) + table(columns, rows) + html
    for name, (caption, alt) in SINK_FIGURES.items():  # drawn by `sinks` itself, beside sinks.json
        path = inputs.run_dir / f"{name}.png"
        if path.is_file():
            body += image(path.read_bytes(), caption, alt)
    return Section("sinks", title, Raw(body + router_table(data)), files)


SINK_FIGURES = {
    "sinks_chain": (("The chain, layer by layer: the largest hidden-state value (the massive activation) and the "
                    "attention on the sink token, in the original and with the Super Experts pruned."),
                    "Massive activation and sink per layer"),
    "sinks_maps": (("Attention maps (queries down, keys across) of the chosen layers and heads, original and pruned: "
                   "the bright first column is the sink; it fades when the Super Experts are pruned."),
                   "Attention maps before and after pruning"),
}


def _sink_input(data: dict[str, Any]) -> str:
    source, shape = data.get("input") or {}, data.get("input_shape")
    what = f"the text {source['text']!r}" if "text" in source else f"windows of {source.get('data', '?')}"
    size = f" ({shape[0]} x {shape[1]} tokens)" if isinstance(shape, list) and len(shape) == 2 else ""
    return f"sink metrics on {what}{size}"


def _mean(values: Any) -> float | None:
    nums = [float(v) for v in values or [] if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return sum(nums) / len(nums) if nums else None
