"""Atom lists: parse, format, validate against the model; where an atom's weights live."""

from __future__ import annotations

import pytest

import families
from superexperts.models.adapters import map_model
from superexperts.models.atoms import (
    atom_count,
    atom_params,
    atoms_per_expert,
    format_atoms,
    parse_atoms,
    super_atoms_of,
    validate_atoms,
)
from superexperts.runs.errors import UserError


def test_parse_and_format_round_trip():
    atoms = parse_atoms(" 1:68:3, 2:92:7,4:shared:0,")
    assert atoms == [(1, 68, 3), (2, 92, 7), (4, "shared", 0)]
    assert format_atoms(atoms) == "1:68:3,2:92:7,4:shared:0"
    assert parse_atoms(format_atoms(atoms)) == atoms


@pytest.mark.parametrize("text", ["1:68", "1:68:x", "a:1:2", "1:2:3:4", ",", ""])
def test_bad_lists_are_one_line_errors(text):
    with pytest.raises(UserError, match="LAYER:EXPERT:ATOM") as e:
        parse_atoms(text)
    assert "\n" not in str(e.value)


def test_validate_against_the_model():
    mm = map_model(families.build("qwen2_moe"))  # moe_intermediate 16, shared expert 24
    assert atom_count(mm.block(0), 3) == 16 and atom_count(mm.block(0), "shared") == 24
    assert validate_atoms(mm, [(0, 3, 15), (0, "shared", 23), (0, 3, 15)]) == [(0, 3, 15), (0, "shared", 23)]
    with pytest.raises(UserError, match=r"atom 0:shared:24 is out of range; expert 0:shared has atoms 0..23"):
        validate_atoms(mm, [(0, "shared", 24)])
    with pytest.raises(UserError, match="expert 0:8 is out of range"):
        validate_atoms(mm, [(0, 8, 0)])
    with pytest.raises(UserError, match="layer 9 is out of range"):
        validate_atoms(mm, [(9, 0, 0)])
    sizes = atoms_per_expert(mm)
    assert len(sizes) == 4 * 8 and set(sizes.values()) == {16} and (0, "shared") in atoms_per_expert(mm, shared=True)


@pytest.mark.parametrize("family, gate_up_index, down_index", [
    ("qwen3_moe", (2, [1, 17]), (2, slice(None), [1])),  # concatenated halves, down (H, I)
    ("gpt_oss", (2, slice(None), [2, 3]), (2, [1])),  # interleaved and transposed, down (I, H)
])  # fmt: skip
def test_fused_atom_slices(family, gate_up_index, down_index):
    block = map_model(families.build(family)).block(0)
    params = {name: index for _, name, index in atom_params(block, 2, [1])}
    assert params["gate_up_proj"] == gate_up_index and params["down_proj"] == down_index
    assert ("gate_up_proj_bias" in params) == (family == "gpt_oss")


def test_super_atoms_from_records():
    records = [{"layer": 1, "expert": 3, "super_atoms": [{"atom": 7, "share": 0.95}]},
               {"layer": 2, "expert": "shared", "super_atoms": [{"atom": 0, "share": 0.6}, {"atom": 4, "share": 0.35}]},
               {"layer": 3, "expert": 5}]  # fmt: skip
    assert super_atoms_of(records) == {(1, 3): [(7, 0.95)], (2, "shared"): [(0, 0.6), (4, 0.35)]}
