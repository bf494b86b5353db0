"""The "Expert-level vs atom-level protection" section: its table from hand-built records, and the page."""

from __future__ import annotations

import pytest

from report_helpers import atom_table, make_profile, parse_page
from superexperts.identify.profile_run import save_run
from superexperts.identify.rules import paper
from superexperts.report import write_report
from superexperts.report.levels_section import missing_levels, protection_levels
from superexperts.runs.runfolder import atomic_write_json

# four routed experts of 4 atoms and a shared expert of 8: 24 atoms
SIZES = {(1, 0): 4, (1, 1): 4, (2, 0): 4, (2, 1): 4, (2, "shared"): 8}
SE = {"layer": 1, "expert": 1}
PRUNE = {"conditions": [
    {"name": "original", "experts": [], "perplexity": 10.0},
    {"name": "super", "experts": [SE], "perplexity": 50.0},
    {"name": "heapr-0.25", "experts": [], "atoms_pruned": 6, "perplexity": 30.0},
    {"name": "heapr-0.25-protect-super-atoms", "experts": [], "atoms_pruned": 6, "perplexity": 11.0},
]}  # fmt: skip
QUANT = {"conditions": [
    {"name": "original", "protected": [], "quantized_only": [], "quantized_experts": 0, "perplexity": 10.0},
    {"name": "all", "protected": [], "quantized_only": None, "quantized_experts": 5, "perplexity": 12.0},
    {"name": "protect-super", "protected": [SE], "quantized_only": None, "quantized_experts": 4, "perplexity": 10.5},
    {"name": "protect-super-atoms", "protected": [], "quantized_only": None, "quantized_experts": 5,
     "atoms_kept": 2, "perplexity": 10.6},
    {"name": "se-only", "protected": [], "quantized_only": [SE, {"layer": 2, "expert": "shared"}],
     "quantized_experts": 2, "perplexity": 11.0},
    {"name": "camera-q", "protected": [], "quantized_only": None, "quantized_experts": 4, "atoms_kept": 0,
     "perplexity": 13.0},
]}  # fmt: skip


def test_points_count_atoms_touched_and_weights_kept():
    levels = protection_levels(PRUNE, QUANT, SIZES)
    by = {(r.file, r.condition): r for r in levels.itertuples()}
    # (atoms zeroed or quantized, what the condition protects), counted by hand from SIZES
    expected = {
        ("prune_eval", "original"): (0, "nothing"), ("prune_eval", "super"): (4, "nothing"),
        ("prune_eval", "heapr-0.25"): (6, "nothing"),
        ("prune_eval", "heapr-0.25-protect-super-atoms"): (6, "super atoms"),
        ("quant_eval", "original"): (0, "nothing"), ("quant_eval", "all"): (24, "nothing"),
        ("quant_eval", "protect-super"): (20, "Super Experts"),
        ("quant_eval", "protect-super-atoms"): (22, "super atoms"),
        ("quant_eval", "se-only"): (12, "nothing"),
        ("quant_eval", "camera-q"): (16, "nothing"),  # the 4 routed experts at the mean routed size
    }  # fmt: skip
    assert set(by) == set(expected)
    for key, (atoms, protects) in expected.items():
        assert by[key].atoms_touched == atoms, key
        assert by[key].kept == pytest.approx(1 - atoms / 24), key
        assert by[key].protects == protects, key
    assert by[("prune_eval", "super")].ratio == pytest.approx(5.0)
    assert by[("quant_eval", "protect-super-atoms")].ratio == pytest.approx(1.06)


def test_missing_parts_name_the_command():
    expert_only = {"conditions": PRUNE["conditions"][:2]}
    notes = missing_levels(expert_only, None, protection_levels(expert_only, None, SIZES), "runs/x")
    text = " ".join(notes)
    assert "--prune-by heapr --fraction 0.25 --protect super-atoms" in text
    assert "quant-eval --from runs/x --bits 4 --protect super-atoms" in text
    assert "No condition protects whole Super Experts" in text
    assert missing_levels(PRUNE, QUANT, protection_levels(PRUNE, QUANT, SIZES)) == []


def test_section_on_the_page(tmp_path):
    # the hand-built run of test_report_atoms: atom rows for L2 E5 and L3 shared, 8 atoms each
    prof = make_profile()
    prof.atom_stats = atom_table()
    save_run(tmp_path, prof, paper(prof.expert_stats, prof.num_layers))
    atomic_write_json(tmp_path / "prune_eval.json", {"conditions": [
        {"name": "original", "experts": [], "perplexity": 10.0},
        {"name": "super", "experts": [{"layer": 2, "expert": 5}], "perplexity": 40.0}]})  # fmt: skip
    parsed = parse_page(write_report(tmp_path).read_text())
    rows = parsed.tables["protection-levels"]
    assert [r[1] for r in rows[1:]] == ["original", "super"]
    assert rows[2][3:5] == ["8", "50.00%"]  # L2 E5's 8 atoms of the 16 in the atom table
    assert (tmp_path / "figures" / "protection_levels.png").is_file()
    page = (tmp_path / "report.html").read_text()
    assert "no atom-level pruning" in page and "quant-eval --from" in page
