"""The run report: one self-contained report.html per run folder (figures inlined, no network).

>>> from superexperts.report import write_report
>>> write_report("runs/demo")          # runs/demo/report.html (+ figures/*.png, *.svg)
PosixPath('runs/demo/report.html')

The page is the list `SECTIONS` of builder functions; see `sections.py` to add one.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..runs.runfolder import write_files
from ..runs.safety import check_folder_writable
from . import atom_section, causal_section, eval_sections, levels_section, quant_sections, sections
from .inputs import ReportInputs, load_inputs
from .page import Section, render_page
from .sections import SectionBuilder

SECTIONS: list[SectionBuilder] = [
    sections.synthetic_banner,
    sections.intro,
    sections.answer,
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
]


def build_sections(inputs: ReportInputs, builders: list[SectionBuilder] | None = None) -> list[Section]:
    """Run every builder; those with nothing to show return None and are left out."""
    built = (builder(inputs) for builder in (SECTIONS if builders is None else builders))
    return [s for s in built if s is not None]


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


__all__ = ["SECTIONS", "ReportInputs", "Section", "build_sections", "load_inputs", "write_report"]
