"""The run report: one self-contained report.html per run folder (figures inlined, no network).

>>> from superexperts.report import write_report
>>> write_report("runs/demo")          # runs/demo/report.html (+ figures/*.png, *.svg)
PosixPath('runs/demo/report.html')

The page is the list `SECTIONS` of builder functions; see `sections.py` to add one.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from ..runs.runfolder import RUN_MARKER, write_files
from ..runs.safety import check_folder_writable
from . import atom_section, causal_section, eval_sections, levels_section, overview, quant_sections, sections
from .inputs import ReportInputs, load_inputs
from .page import Raw, Section, esc, render_page
from .sections import SectionBuilder

SECTIONS: list[SectionBuilder] = [
    sections.synthetic_banner,
    sections.intro,
    sections.answer,
    overview.at_a_glance,
    sections.metadata,
    sections.se_table,
    atom_section.inside_super_experts,
    sections.candidates,
    sections.figures,
    eval_sections.sensitivity,
    sections.massive_table,
    eval_sections.prune_eval,
    causal_section.causal,
    quant_sections.protection,
    levels_section.protection_levels_section,
    eval_sections.sinks,
    overview.files_and_steps,
]


# The result file each section shows: a section whose file no longer matches the run's SEs (or
# profile) is shown under a "stale" banner, never silently beside the current SEs.
SECTION_SOURCES: dict[SectionBuilder, str] = {
    eval_sections.prune_eval: "prune_eval.json",
    causal_section.causal: "prune_eval.json",
    quant_sections.protection: "quant_eval.json",
    eval_sections.sinks: "sinks.json",
}


def mark_stale(section: Section, reason: str, rerun: str, *, foreign: bool = False) -> Section:
    """The section under a "stale" banner; a result of another model (`foreign`) is left out: the
    banner alone, its numbers and figures not shown beside this model's."""
    if foreign:
        banner = Raw(f'<div class="banner stale">Left out: {esc(reason)}; rerun <code>{esc(rerun)}</code>.</div>')
        return replace(section, title=f"{section.title} (left out: another model)", body=banner, files={})
    banner = Raw(f'<div class="banner stale">Stale: {esc(reason)}: rerun <code>{esc(rerun)}</code>. '
                 "The numbers below are not those of this run's Super Experts.</div>")  # fmt: skip
    return replace(section, title=f"{section.title} (stale)", body=Raw(banner + section.body))


def build_sections(inputs: ReportInputs, builders: list[SectionBuilder] | None = None) -> list[Section]:
    """Run every builder; those with nothing to show return None and are left out."""
    parts = []
    for builder in SECTIONS if builders is None else builders:
        section = builder(inputs)
        if section is None:
            continue
        source = SECTION_SOURCES.get(builder)
        stale = inputs.stale(source) if source is not None else None
        parts.append(section if stale is None else mark_stale(section, *stale, foreign=inputs.foreign(source)))
    return parts


def report_title(inputs: ReportInputs) -> str:
    meta = inputs.profile.meta
    model = meta.get("model") or meta.get("name_or_path") or meta.get("model_type") or "model"
    return f"Super Experts of {model}"


def write_report(run_dir: str | os.PathLike, *, figures: bool = True) -> Path:
    """Write `run_dir`/report.html from the run's files; with `figures`, also figures/<name>.png/.svg.

    All files are written together (all-or-nothing); a folder that is not a run raises UserError
    before anything is written.
    """
    inputs = load_inputs(run_dir)
    check_folder_writable(inputs.run_dir)
    parts = build_sections(inputs)
    files: dict[str, bytes] = {"report.html": render_page(report_title(inputs), parts).encode("utf-8")}
    if figures:
        for part in parts:
            files |= part.files
    write_files(inputs.run_dir, files)
    return inputs.run_dir / "report.html"


def refresh_run_report(run_dir: str | os.PathLike) -> Path | None:
    """Re-render the report of a profile run folder after a result was added to it (None elsewhere)."""
    if not (Path(run_dir) / RUN_MARKER).is_file():
        return None
    return write_report(run_dir)


__all__ = ["SECTIONS", "ReportInputs", "Section", "build_sections", "load_inputs", "refresh_run_report", "write_report"]
