"""Atom zeroing removes exactly one neuron per atom, on every layout, and restores bit for bit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import families
import legacy
from ablate_helpers import assert_same_state, state_snapshot
from superexperts.evaluate.ablate.atoms import zero_atoms
from superexperts.models.adapters import map_model
from superexperts.runs.errors import UserError

ATOMS = [0, 5, 11]  # neurons removed from the expert under test (0 and an interior one and the last-but-4)


def _without(h: torch.Tensor, atoms: list[int]) -> torch.Tensor:
    """The intermediate h (tokens, I) with the neurons `atoms` removed, as a per-expert recomputation."""
    keep = [k for k in range(h.shape[-1]) if k not in atoms]
    return h[:, keep]


def _qwen3_reference(experts, e: int, x: torch.Tensor, atoms: list[int]) -> torch.Tensor:
    """Concatenated halves: gate_up_proj[e] (2I, H) = [gate; up], down_proj[e] (H, I)."""
    inter = experts.down_proj.shape[-1]
    gate, up = x @ experts.gate_up_proj[e, :inter].T, x @ experts.gate_up_proj[e, inter:].T
    h = F.silu(gate) * up
    keep = [k for k in range(inter) if k not in atoms]
    return _without(h, atoms) @ experts.down_proj[e][:, keep].T


def _gpt_oss_reference(experts, e: int, x: torch.Tensor, atoms: list[int]) -> torch.Tensor:
    """Interleaved, transposed: gate_up_proj[e] (H, 2I) = [g0, u0, g1, u1, ...], down_proj[e] (I, H), biases."""
    gu = x @ experts.gate_up_proj[e] + experts.gate_up_proj_bias[e]
    gate, up = gu[:, 0::2].clamp(max=experts.limit), gu[:, 1::2].clamp(-experts.limit, experts.limit)
    h = (up + 1) * gate * torch.sigmoid(gate * experts.alpha)
    keep = [k for k in range(h.shape[-1]) if k not in atoms]
    return _without(h, atoms) @ experts.down_proj[e][keep] + experts.down_proj_bias[e]


def _routed_to(experts, e: int, x: torch.Tensor) -> torch.Tensor:
    """The experts module's own forward with every token routed to expert e alone, weight 1."""
    index = torch.full((x.shape[0], 1), e, dtype=torch.long)
    return experts(x, index, torch.ones(x.shape[0], 1))


@pytest.mark.parametrize("family, reference", [("qwen3_moe", _qwen3_reference), ("gpt_oss", _gpt_oss_reference)])
@torch.no_grad()
def test_fused_atom_zeroing_equals_removing_the_neurons(family, reference):
    model = families.build(family)
    experts, e = map_model(model).block(1).experts, 3
    x = torch.randn(6, model.config.hidden_size, generator=torch.Generator().manual_seed(1))
    want, full = reference(experts, e, x, ATOMS), reference(experts, e, x, [])
    assert torch.allclose(_routed_to(experts, e, x), full, atol=1e-5)  # the reference is the model's expert
    before = state_snapshot(model)
    with zero_atoms(model, [(1, e, k) for k in ATOMS]):
        got = _routed_to(experts, e, x)
        other = _routed_to(experts, e + 1, x)
    assert torch.allclose(got, want, atol=1e-5) and not torch.allclose(got, full, atol=1e-3)
    assert torch.equal(other, _routed_to(experts, e + 1, x))  # another expert is untouched
    assert_same_state(model, before)


@torch.no_grad()
def test_modulelist_and_shared_atoms_equal_removing_the_neurons():
    """ModuleList experts (transformers 4.x Mixtral: w1 gate, w3 up, w2 down) and a shared expert MLP."""
    old = legacy.legacy_mixtral(families.build("mixtral"))
    qwen2 = families.build("qwen2_moe")
    for model, expert in ((old, 2), (qwen2, "shared")):
        block = map_model(model).block(1)
        mlp = block.shared if expert == "shared" else block.experts[expert]
        gate, up, down = ((mlp.gate_proj, mlp.up_proj, mlp.down_proj) if expert == "shared"
                          else (mlp.w1, mlp.w3, mlp.w2))  # fmt: skip
        x = torch.randn(5, model.config.hidden_size, generator=torch.Generator().manual_seed(2))
        h = F.silu(x @ gate.weight.T) * (x @ up.weight.T)
        keep = [k for k in range(h.shape[-1]) if k not in ATOMS]
        want = _without(h, ATOMS) @ down.weight[:, keep].T
        before = state_snapshot(model)
        with zero_atoms(model, [(1, expert, k) for k in ATOMS]):
            got = mlp(x)
        # the shared expert keeps init-scale weights (outputs ~1e-3): compare relative to its size
        scale = want.abs().max()
        assert torch.allclose(got, want, atol=1e-5 * scale) and not torch.allclose(got, h @ down.weight.T, atol=1e-2 * scale)
        assert_same_state(model, before)


@torch.no_grad()
def test_restored_on_exception_and_offloaded_weights_edited(calib_ids):
    """An exception inside the block restores every weight; with accelerate's CPU offload (weights on
    meta, loaded per forward from a store) the logits equal the resident model's, and the store is
    restored too."""
    from accelerate import cpu_offload

    model = families.build("qwen3_moe")
    atoms = [(0, 1, 2), (1, 3, 7), (2, 5, 15)]
    with zero_atoms(model, atoms):
        resident = model(calib_ids).logits
    original = model(calib_ids).logits
    before = state_snapshot(model)
    with pytest.raises(RuntimeError), zero_atoms(model, atoms):
        raise RuntimeError("boom")
    assert_same_state(model, before)

    offloaded = cpu_offload(families.build("qwen3_moe"), execution_device="cpu")
    assert next(map_model(offloaded).block(1).experts.parameters()).is_meta
    with zero_atoms(offloaded, atoms):
        assert torch.allclose(offloaded(calib_ids).logits, resident, atol=1e-5)
    assert torch.equal(offloaded(calib_ids).logits, original)
    assert not torch.allclose(resident, original, atol=1e-4)


@pytest.mark.parametrize("atoms, match", [([(1, 3, 16)], r"atom 1:3:16 is out of range; expert 1:3 has atoms 0..15"),
                                          ([(3, 0, 0)], "layer 3 has no routed experts"),
                                          ([(1, "shared", 0)], "layer 1 has no shared expert"),
                                          ([], "the atom list is empty")])  # fmt: skip
def test_bad_atoms_fail_before_anything_changes(tiny_qwen3, atoms, match):
    before = state_snapshot(tiny_qwen3)
    with pytest.raises(UserError, match=match), zero_atoms(tiny_qwen3, atoms):
        pass
    assert_same_state(tiny_qwen3, before)


def test_random_atom_controls_are_seeded_disjoint_and_sized():
    from superexperts.evaluate.ablate.atoms import random_atom_controls

    sizes = {(1, 0): 4, (1, 1): 4, (2, 0): 4}
    given = [(1, 0, 0), (1, 0, 1), (2, 0, 3)]
    drawn = random_atom_controls(sizes, given, 20, seed=5)
    assert drawn == random_atom_controls(sizes, given, 20, seed=5) and drawn[0] != drawn[1]
    assert all(len(set(c)) == 3 and not set(c) & set(given) for c in drawn)
    assert all(0 <= k < sizes[(layer, e)] for c in drawn for layer, e, k in c)
    seen = {a for c in drawn for a in c}  # uniform over the 9 others: 20 seeds x 3 cover nearly all
    assert len(seen) >= 8
    controlled = random_atom_controls(sizes, given, 10, layer_controlled=True)
    assert all(sorted(layer for layer, _, _ in c) == [1, 1, 2] for c in controlled)
    with pytest.raises(UserError, match="cannot draw 3 random atoms in layer 2: only 1 others exist"):
        random_atom_controls(sizes, given + [(2, 0, 0), (2, 0, 1)], 1, layer_controlled=True)
