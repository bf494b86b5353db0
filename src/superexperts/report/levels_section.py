"""The "Expert-level vs atom-level protection" section: perplexity against the expert weights kept.

One point per condition of the run's prune_eval.json and quant_eval.json. An atom (gate row k, up row k,
down_proj column k) is 3 x hidden weights, the same for every atom, so the share of atoms kept is the share
of expert weights kept. `protection_levels` is the pure part (JSON records -> table); the section reads the
files, says which kind of protection is missing and which command adds it.

>>> table = protection_levels(prune_doc, quant_doc, sizes={(1, 13): 32, (2, 41): 32, ...})
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from .inputs import ReportInputs
from .levels_figures import fig_levels
from .page import Raw, Section, figure, number, paragraphs, table

LEVEL_COLUMNS = ["file", "condition", "protects", "atoms_touched", "kept", "perplexity", "ratio"]
TEXT = (
    "Each point is one condition of prune_eval.json (weights zeroed) or quant_eval.json (weights rounded to "
    "fewer bits). 'expert weights kept' is the share of all expert weights the condition leaves exactly as "
    "they were (not zeroed, not quantized), counting an atom as its gate row, up row and down_proj column "
    "(the same number of weights for every atom). Expert-level protection keeps whole Super Experts; "
    "atom-level protection keeps only their super atoms. If the super atoms are what matters, atom-level "
    "protection reaches the perplexity of expert-level protection while keeping fewer weights."
)
CAPTION = (
    "Perplexity against the share of expert weights left untouched, one point per condition; marker: "
    "what the condition protects, colour: pruning or quantization."
)


def _protects(name: str) -> str:
    if name.endswith("protect-super-atoms"):
        return "super atoms"
    if "protect-super" in name:
        return "Super Experts"
    if "protect-random" in name:
        return "random experts"
    return "nothing"


def _key(record: Mapping[str, Any]) -> tuple:
    return int(record["layer"]), record["expert"]


def _expert_atoms(records: Any, sizes: Mapping[tuple, int], default: float) -> float:
    return float(sum(sizes.get(_key(r), default) for r in records or []))


def _pruned(c: Mapping[str, Any], sizes: Mapping[tuple, int], default: float) -> float:
    if c.get("atoms_pruned") is not None:
        return float(c["atoms_pruned"])
    return _expert_atoms(c.get("experts"), sizes, default)


def _quantized(c: Mapping[str, Any], sizes: Mapping[tuple, int], default: float) -> float:
    """Atoms rounded: the listed experts (se-only); every expert but the protected ones; else (camera-q:
    the routed experts) quantized_experts of the mean routed size. Less the atoms kept in full precision
    (--protect super-atoms, camera-q)."""
    if c.get("name") == "original":
        return 0.0
    only, protected, count = (
        c.get("quantized_only"),
        c.get("protected") or [],
        int(c.get("quantized_experts") or 0),
    )
    if only:
        atoms = _expert_atoms(only, sizes, default)
    elif count == len(sizes) - len(protected):
        atoms = sum(sizes.values()) - _expert_atoms(protected, sizes, default)
    else:
        atoms = count * default
    return atoms - float(c.get("atoms_kept") or 0)


def protection_levels(prune_eval: Mapping[str, Any] | None, quant_eval: Mapping[str, Any] | None,
                      sizes: Mapping[tuple, int]) -> pd.DataFrame:  # fmt: skip
    """One row per condition: file, condition, protects, atoms_touched (zeroed or quantized), kept (share
    of expert weights untouched), perplexity, ratio (to the same file's original).

    `sizes` is {(layer, expert | "shared"): atoms}; an expert not in it counts as the mean routed size.
    """
    routed = [n for (_, e), n in sizes.items() if e != "shared"]
    default = sum(routed) / len(routed) if routed else 0.0
    total = float(sum(sizes.values()))
    rows = []
    for file, doc, touched in (("prune_eval", prune_eval, _pruned), ("quant_eval", quant_eval, _quantized)):
        conditions = [c for c in (doc or {}).get("conditions") or [] if isinstance(c, dict)]
        original = next((c.get("perplexity") for c in conditions if c.get("name") == "original"), None)
        for c in conditions:
            atoms, ppl = touched(c, sizes, default), c.get("perplexity")
            ratio = ppl / original if isinstance(ppl, int | float) and original else None
            rows.append([file, c.get("name", ""), _protects(str(c.get("name", ""))), atoms,
                         1.0 - atoms / total if total else None, ppl, ratio])  # fmt: skip
    return pd.DataFrame(rows, columns=LEVEL_COLUMNS)


def missing_levels(prune_eval: Mapping[str, Any] | None, quant_eval: Mapping[str, Any] | None,
                   levels: pd.DataFrame, run: str = "RUN_DIR") -> list[str]:  # fmt: skip
    """What the comparison lacks and the command that adds it (prune_eval.json holds one prune-eval run)."""
    notes = []
    protects = set(levels["protects"])
    if prune_eval is None:
        notes.append(
            f"No prune_eval.json: `superexperts prune-eval --from {run} --random 3` adds pruning the SEs."
        )
    elif not any(isinstance(c, dict) and "atoms_pruned" in c for c in prune_eval.get("conditions") or []):
        notes.append("prune_eval.json has no atom-level pruning (it holds one prune-eval run): "
                     f"`superexperts prune-eval --from {run} --prune-by heapr --fraction 0.25 --protect super-atoms "
                     "--overwrite` replaces it with HEAPr pruning with and without the super atoms.")  # fmt: skip
    if quant_eval is None:
        notes.append(f"No quant_eval.json: `superexperts quant-eval --from {run} --bits 4 --protect super-atoms` "
                     "adds quantization with whole SEs and with only their super atoms kept.")  # fmt: skip
    if "super atoms" not in protects:
        notes.append("No condition protects only the super atoms: add `--protect super-atoms` to prune-eval "
                     "--prune-by camera|heapr or to quant-eval.")  # fmt: skip
    if "Super Experts" not in protects:
        notes.append(f"No condition protects whole Super Experts: `superexperts quant-eval --from {run} --bits 4` "
                     "or prune-eval --prune-by ... --protect super.")  # fmt: skip
    return notes


def _sizes(atom_stats: pd.DataFrame) -> dict[tuple, int]:
    counts = atom_stats.groupby(["layer", "kind", "expert"]).size()
    return {
        (int(la), "shared" if kind == "shared" else int(e)): int(n) for (la, kind, e), n in counts.items()
    }


def protection_levels_section(inputs: ReportInputs) -> Section | None:
    title = "Expert-level vs atom-level protection"
    prune, prune_error = inputs.optional("prune_eval.json")
    quant, quant_error = inputs.optional("quant_eval.json")
    atom_stats = inputs.profile.atom_stats
    if (prune is None and quant is None) or atom_stats is None or atom_stats.empty:
        return None  # nothing to compare (the run's other sections show a damaged file's error)
    levels = protection_levels(prune, quant, _sizes(atom_stats))
    notes = missing_levels(prune, quant, levels, str(inputs.run_dir))
    notes += [e for e in (prune_error, quant_error) if e]
    rows = [[r.file, r.condition, r.protects, f"{r.atoms_touched:.0f}", f"{r.kept:.2%}" if r.kept is not None else "",
             number(r.perplexity, 6), number(r.ratio)] for r in levels.itertuples()]  # fmt: skip
    columns = ["file", "condition", "protects", "atoms zeroed or quantized", "expert weights kept", "perplexity",
               "x original"]  # fmt: skip
    body = paragraphs(TEXT) + table(columns, rows)
    if notes:
        body += paragraphs(*("Missing: " + n for n in notes))
    html, files = figure(fig_levels(levels), "protection_levels", CAPTION,
                         "Perplexity against the share of expert weights kept, per condition")  # fmt: skip
    return Section("protection-levels", title, Raw(body + html), files)
