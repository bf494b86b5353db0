"""Two sections over the whole run folder: every result at a glance (top of the page), and every
file with a link and the command line of the step that wrote it (bottom of the page)."""

from __future__ import annotations

from typing import Any

from ..runs.runfolder import RESULT_FILES, RUN_FILES
from .basis import command_text, ratio
from .inputs import ReportInputs
from .page import Raw, Section, esc, number, table

TITLES = {"prune_eval.json": "Pruning", "sinks.json": "Attention sinks", "quant_eval.json": "Quantization"}


def _by_name(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(c.get("name")): c for c in data.get("conditions") or [] if isinstance(c, dict)}


def _ppl(c: dict[str, Any] | None) -> Any:
    value = (c or {}).get("perplexity")
    return value.get("perplexity") if isinstance(value, dict) else value


def _pruning_line(data: dict[str, Any]) -> str:
    named = _by_name(data)
    pruned = named.get("super") or named.get("custom")
    if pruned is None or _ppl(named.get("original")) is None:
        return ""
    o, p = _ppl(named["original"]), _ppl(pruned)
    return (f"pruning {len(pruned.get('experts') or [])} experts ({pruned.get('name')}): perplexity {number(o)} -> "
            f"{number(p)} ({ratio(p, o)} the original)")  # fmt: skip


def _sinks_line(data: dict[str, Any]) -> str:
    named = _by_name(data)
    pruned = next((c for n, c in named.items() if n not in ("original",) and not n.startswith("random")), None)
    if "original" not in named or pruned is None:
        return ""
    return (f"sink rate {number(named['original'].get('sink_rate'))} -> {number(pruned.get('sink_rate'))} "
            f"with {pruned.get('name')} pruned")  # fmt: skip


def _quant_line(data: dict[str, Any]) -> str:
    named = _by_name(data)
    if not {"original", "all", "protect-super"} <= set(named):
        return ""
    o = _ppl(named["original"])
    return (f"{(data.get('scheme') or {}).get('bits', '?')}-bit experts: perplexity {number(o)} original, "
            f"{number(_ppl(named['all']))} all quantized, {number(_ppl(named['protect-super']))} with the SEs kept "
            "(the section says whether that is outside the random controls' spread)")  # fmt: skip


LINES = {"prune_eval.json": _pruning_line, "sinks.json": _sinks_line, "quant_eval.json": _quant_line}


def at_a_glance(inputs: ReportInputs) -> Section | None:
    """One line per result section present; a stale one says so instead of giving its numbers."""
    rows = []
    for f in RESULT_FILES:
        data, error = inputs.optional(f.name)
        if error:
            rows.append([TITLES[f.name], f"{f.name} could not be read: {error}"])
        elif data is not None:
            stale = inputs.stale(f.name)
            rows.append([TITLES[f.name], f"STALE ({stale[0]}): rerun {stale[1]}" if stale else LINES[f.name](data)])
    if not rows:
        return None
    return Section("glance", "Every result at a glance", Raw(table(["section", "result"], rows)))


def _command_of(inputs: ReportInputs, name: str) -> str:
    data, _ = inputs.optional(name) if name.endswith(".json") else (None, None)
    if name == "profile.json":
        data = {"command_line": inputs.profile.meta.get("command_line"), "command": inputs.profile.meta.get("command")}
    elif name == "super_experts.json":
        data = inputs.saved.get("provenance")  # identify's or profile's own record
    elif name == "compare.json" and isinstance(data, dict):
        data = data.get("meta") or {}
    return command_text(data) if isinstance(data, dict) else ""


def files_and_steps(inputs: ReportInputs) -> Section:
    """Every file of ours in the run folder, linked, with the step (full command line) that wrote it."""
    rows = []
    for f in RUN_FILES:
        for pattern in (f.name, *f.companions):
            for path in sorted(inputs.run_dir.glob(pattern)):
                name = path.relative_to(inputs.run_dir).as_posix()
                if name.startswith("figures/") or name == "report.html":
                    continue  # the page itself and its own figures
                link = Raw(f'<a href="{esc(name)}">{esc(name)}</a>')
                command = _command_of(inputs, name) if name == f.name else f"(written with {f.name})"
                rows.append([link, f.command, Raw(f"<code>{esc(command)}</code>") if command else ""])
    return Section("files", "Files and the steps that wrote them", Raw(table(["file", "step", "command line"], rows)))
