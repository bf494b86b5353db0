"""The "Inside each Super Expert" section, from a hand-built atom table."""

from __future__ import annotations

import pandas as pd

from report_helpers import make_profile, parse_page
from superexperts.capture.profile import ATOM_COLUMNS
from superexperts.identify.profile_run import save_run
from superexperts.identify.rules import paper
from superexperts.report import write_report

WIDTH = 8
# (layer, kind, expert) -> contributions of atoms 0..7 at the SE's maximum
CONTRIBUTIONS = {
    (2, "routed", 5): [0.0, 0.1, 0.0, 60.0, 0.0, 0.0, -0.1, 0.0],  # atom 3 alone: 1 super atom
    (3, "shared", -1): [10.0, 10.0, 10.0, 10.0, 0.0, 0.0, 0.0, 0.0],  # four equal atoms: 4 needed
    # (4, "routed", 9) has no atom rows: the section leaves it out
}


def _atom_table() -> pd.DataFrame:
    rows = []
    for (layer, kind, expert), values in CONTRIBUTIONS.items():
        for k, c in enumerate(values):
            rows.append({"layer": layer, "expert": expert, "kind": kind, "atom": k, "camera_sum": 1.0,
                         "camera_max": 1.0, "max_abs_act": abs(c), "max_act_sample": 0, "max_act_position": 0,
                         "contribution": c})  # fmt: skip
    return pd.DataFrame(rows, columns=ATOM_COLUMNS)


def test_section_lists_the_atoms_that_carry_each_se(tmp_path):
    prof = make_profile()
    prof.atom_stats = _atom_table()
    save_run(tmp_path, prof, paper(prof.expert_stats, prof.num_layers))
    page = write_report(tmp_path).read_text()
    parsed = parse_page(page)
    rows = parsed.tables["inside-super-experts"]
    assert rows[0][:2] == ["Super Expert", "channel c*"]
    by_name = {r[0]: r for r in rows[1:]}
    assert set(by_name) == {"L2 E5", "L3 shared"}
    assert by_name["L2 E5"][3:5] == ["1", str(WIDTH)] and by_name["L2 E5"][5] == "3 (100.0%)"
    assert by_name["L3 shared"][3] == "4"
    assert (tmp_path / "figures" / "super_atoms.png").is_file()
    ids = [attrs.get("id") for tag, attrs in parsed.tags if tag == "section"]
    assert ids.index("inside-super-experts") == ids.index("super-experts") + 1


def test_section_is_left_out_without_atoms(hand_run):
    page = write_report(hand_run, figures=False).read_text()
    assert "inside-super-experts" not in page
