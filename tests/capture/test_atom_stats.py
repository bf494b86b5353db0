"""Atom statistics and HEAPr against per-expert, per-token recomputations written out here.

The recomputation splits gate and up by hand for each layout (halves for Qwen3/Mixtral, interleaved
columns 2k, 2k+1 and GPT-OSS's clamped GLU), loops over tokens one at a time, and reads the gradient
at the experts module's output of the stock transformers implementation: nothing of superexperts'
capture path is reused.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import families
import legacy
import superexperts
from superexperts.models.adapters import map_model

FUSED = ["qwen3_moe", "gpt_oss", "mixtral", "deepseek_v3"]


def atoms_of(experts, e: int, x: torch.Tensor) -> torch.Tensor:
    """a = act(gate) * up of expert e on rows x (n, hidden), written out per layout: (n, I)."""
    gate_up = experts.gate_up_proj[e]
    if experts.is_transposed:  # GPT-OSS: [hidden, 2I], gate/up interleaved in columns 2k, 2k+1
        h = x @ gate_up + experts.gate_up_proj_bias[e]
        gate, up = h[:, 0::2].clamp(max=experts.limit), h[:, 1::2].clamp(-experts.limit, experts.limit)
        return (up + 1) * gate * torch.sigmoid(gate * experts.alpha)
    inter = gate_up.shape[0] // 2  # [2I, hidden]: gate rows 0..I-1, up rows I..2I-1
    return F.silu(x @ gate_up[:inter].T) * (x @ gate_up[inter:].T)


def down_columns(experts, e: int) -> torch.Tensor:
    """(hidden, I): column k is w_k."""
    down = experts.down_proj[e]
    return down.T if experts.is_transposed else down


def record(model, ids: torch.Tensor, batch_size: int, *, grad: bool = False) -> dict:
    """{layer: [(x, top_k_index, top_k_weights, d loss / d experts output or None)]} per batch, stock forward.
    With `grad`, parameters are frozen and the loss (labels = ids) is backpropagated to the experts' outputs."""
    blocks = map_model(model).moe
    seen: dict[int, list] = {b.layer: [] for b in blocks}
    outputs: dict[int, torch.Tensor] = {}

    def pre(module, args, layer):
        seen[layer].append([a.detach().clone() for a in args[:3]])

    def post(module, args, out, layer):
        if grad:
            out.retain_grad()
            outputs[layer] = out

    handles = []
    for b in blocks:
        handles.append(b.experts.register_forward_pre_hook(lambda m, a, layer=b.layer: pre(m, a, layer)))
        handles.append(b.experts.register_forward_hook(lambda m, a, o, layer=b.layer: post(m, a, o, layer)))
    try:
        for batch in ids.split(batch_size):
            if grad:
                for p in model.parameters():
                    p.requires_grad_(False)
                embeds = model.get_input_embeddings()(batch).detach().requires_grad_()
                model(inputs_embeds=embeds, labels=batch, use_cache=False).loss.backward()
                for layer, out in outputs.items():
                    seen[layer][-1].append(out.grad.reshape(-1, out.shape[-1]).clone())
            else:
                with torch.no_grad():
                    model(input_ids=batch, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return seen


def routed_rows(experts, e: int, calls: list):
    """(call, t, r, a, gradient or None) for each token routed to expert e, one token at a time."""
    for call, (x, index, weights, *grad) in enumerate(calls):
        for t in range(x.shape[0]):
            hit = (index[t] == e).nonzero()
            if len(hit):
                with torch.no_grad():
                    a = atoms_of(experts, e, x[t : t + 1])[0].double()
                yield call, t, weights[t, hit[0, 0]].double(), a, (grad[0][t].double() if grad else None)


def reference_atoms(model, ids: torch.Tensor, batch_size: int) -> pd.DataFrame:
    """camera_sum, camera_max, max_abs_act, max_act token of every routed atom, one token at a time."""
    rows = []
    seq_len = ids.shape[1]
    for b in map_model(model).moe:
        calls = record(model, ids, batch_size)[b.layer]
        for e in range(b.num_experts):
            norms = down_columns(b.experts, e).detach().double().square().sum(0)  # ||w_k||^2
            width = norms.numel()
            total, top, best, where = torch.zeros(width, dtype=torch.float64), torch.zeros(width, dtype=torch.float64), \
                torch.full((width,), -1.0, dtype=torch.float64), torch.full((width,), -1)  # fmt: skip
            for call, t, r, a, _ in routed_rows(b.experts, e, calls):
                ra2 = (r * a) ** 2
                total += ra2
                top = torch.maximum(top, ra2)
                larger = a.abs() > best
                best = torch.where(larger, a.abs(), best)
                where = torch.where(larger, torch.tensor(call * batch_size * seq_len + t), where)
            for k in range(width):
                rows.append({"layer": b.layer, "expert": e, "atom": k, "camera_sum": float(norms[k] * total[k]),
                             "camera_max": float(norms[k] * top[k]), "max_abs_act": max(float(best[k]), 0.0),
                             "token": int(where[k])})  # fmt: skip
    return pd.DataFrame(rows)


def assert_normalised_close(got: np.ndarray, want: np.ndarray, rel: float = 1e-3) -> None:
    """Equal after dividing each by its sum (the criteria rank; their scale is arbitrary)."""
    assert want.sum() > 0
    np.testing.assert_allclose(got / got.sum(), want / want.sum(), rtol=rel, atol=rel * (want / want.sum()).max())


@pytest.mark.parametrize("family", FUSED)
def test_camera_sums_and_maxima_equal_a_per_token_loop(family):
    model = families.build(family)
    ids = families.random_ids(samples=4, seq_len=10, seed=2)
    atoms = superexperts.profile(model, ids, batch_size=2).atom_stats
    routed = atoms[atoms.kind == "routed"].reset_index(drop=True)
    want = reference_atoms(model, ids, batch_size=2)
    assert len(routed) == len(want)
    assert (routed[["layer", "expert", "atom"]].to_numpy() == want[["layer", "expert", "atom"]].to_numpy()).all()
    for column in ("camera_sum", "camera_max"):
        assert_normalised_close(routed[column].to_numpy(), want[column].to_numpy())
    np.testing.assert_allclose(routed.max_abs_act, want.max_abs_act, rtol=1e-5, atol=1e-7)
    token = np.where(routed.max_act_sample >= 0, routed.max_act_sample * 10 + routed.max_act_position, -1)
    clear = want.max_abs_act > 1e-6  # ties at 0 (a clamped or dead unit) may resolve to any row
    assert (token[clear] == want.token[clear]).all()


def test_shared_expert_atoms_equal_its_mlp_on_every_token():
    model = families.build("deepseek_v3")
    ids = families.random_ids(samples=3, seq_len=10, seed=4)
    inputs: dict[int, list[torch.Tensor]] = {}
    blocks = map_model(model).moe
    handles = [b.shared.register_forward_pre_hook(lambda m, a, layer=b.layer: inputs.setdefault(layer, []).append(a[0]))
               for b in blocks]  # fmt: skip
    atoms = superexperts.profile(model, ids, batch_size=1).atom_stats
    for h in handles:
        h.remove()
    for b in blocks:
        mlp = b.shared
        with torch.no_grad():
            a = torch.cat([F.silu(mlp.gate_proj(x)) * mlp.up_proj(x) for x in inputs[b.layer]]).reshape(-1, 16)
        a = a.double()
        norms = mlp.down_proj.weight.detach().double().square().sum(0)
        got = atoms[(atoms.layer == b.layer) & (atoms.kind == "shared")].sort_values("atom")
        assert (got.expert == -1).all() and len(got) == a.shape[1]
        assert_normalised_close(got.camera_sum.to_numpy(), (norms * (a**2).sum(0)).numpy())  # r = 1
        assert_normalised_close(got.camera_max.to_numpy(), (norms * (a**2).amax(0)).numpy())
        np.testing.assert_allclose(got.max_abs_act, a.abs().amax(0).numpy(), rtol=1e-5)


def test_modulelist_experts_record_the_fused_atoms():
    """ModuleList experts (hooks on each down Linear, weights replayed from the router) = the fused path."""
    fused = families.build("mixtral")
    ids = families.random_ids(samples=3, seq_len=10)
    a = superexperts.profile(fused, ids, batch_size=1).atom_stats
    old = legacy.legacy_mixtral(fused)
    assert map_model(old).moe[0].layout == "modulelist"
    b = superexperts.profile(old, ids, batch_size=1).atom_stats
    for column in ("camera_sum", "camera_max", "max_abs_act", "contribution"):
        np.testing.assert_allclose(b[column], a[column], rtol=1e-4, atol=1e-6, err_msg=column)
    assert (a.max_act_position == b.max_act_position).all()


def test_atoms_can_be_switched_off():
    model = families.build("qwen3_moe")
    prof = superexperts.profile(model, families.random_ids(2, 8), atoms=False)
    assert prof.atom_stats.empty and not prof.expert_stats.empty


def reference_heapr(model, ids: torch.Tensor, batch_size: int) -> pd.DataFrame:
    """mean a^2 x mean (dL/da)^2 per routed atom; dL/da[t] = r w^T (dL/d experts output[t]), token by token."""
    rows = []
    blocks = map_model(model).moe
    seen = record(model, ids, batch_size, grad=True)
    for b in blocks:
        for e in range(b.num_experts):
            down = down_columns(b.experts, e).detach().double()  # (hidden, I)
            act_sq = torch.zeros(down.shape[1], dtype=torch.float64)
            grad_sq = torch.zeros_like(act_sq)
            count = 0
            for _, _, r, a, g in routed_rows(b.experts, e, seen[b.layer]):
                act_sq += a**2
                grad_sq += (r * (down.T @ g)) ** 2
                count += 1
            score = (act_sq / max(count, 1)) * (grad_sq / max(count, 1))
            rows += [{"layer": b.layer, "expert": e, "atom": k, "heapr": float(score[k])} for k in range(len(score))]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("family", ["qwen3_moe", "gpt_oss", "mixtral"])
def test_heapr_equals_a_per_token_autograd_recomputation(family):
    ids = families.random_ids(samples=2, seq_len=10, seed=5)
    got = superexperts.heapr(families.build(family), ids, batch_size=1)
    want = reference_heapr(families.build(family), ids, batch_size=1)
    assert (got[["layer", "expert", "atom"]].to_numpy() == want[["layer", "expert", "atom"]].to_numpy()).all()
    assert_normalised_close(got.heapr.to_numpy(), want.heapr.to_numpy())
    assert got["rank"].min() == 1 and got.loc[got.heapr.idxmax(), "rank"] == 1


def test_heapr_leaves_the_model_as_it_was():
    model = families.build("qwen3_moe")
    ids = families.random_ids(samples=2, seq_len=8)
    flags = [p.requires_grad for p in model.parameters()]
    with torch.no_grad():
        before = model(ids).logits
    superexperts.heapr(model, ids)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())  # no weight gradients were computed
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, before, rtol=0, atol=0)


def test_heapr_on_modulelist_experts_equals_fused():
    ids = families.random_ids(samples=2, seq_len=8, seed=1)
    fused = superexperts.heapr(families.build("mixtral"), ids)
    old = superexperts.heapr(legacy.legacy_mixtral(families.build("mixtral")), ids)
    assert_normalised_close(old.heapr.to_numpy(), fused.heapr.to_numpy())


@pytest.mark.parametrize("ids, batch_size, message", [
    (torch.zeros(4, dtype=torch.long), 1, r"\[samples, seq_len >= 2\]"),
    (torch.zeros(2, 1, dtype=torch.long), 1, r"\[samples, seq_len >= 2\]"),
    (torch.zeros(2, 8, dtype=torch.long), 0, "batch_size must be a positive integer"),
])  # fmt: skip
def test_heapr_bad_input_is_one_line(ids, batch_size, message):
    from superexperts.runs.errors import UserError

    with pytest.raises(UserError, match=message):
        superexperts.heapr(families.build("qwen3_moe"), ids, batch_size=batch_size)


def test_heapr_refuses_experts_without_visible_activations():
    from superexperts.runs.errors import UserError

    with pytest.raises(UserError, match="dense-routed"):
        superexperts.heapr(families.build("llama4"), families.random_ids(2, 8))


def test_accelerator_path_records_what_the_cpu_path_records(monkeypatch):
    """On accelerators the tracker never reads a value on the host (no early exits, no nonzero): same table."""
    from superexperts.capture import atoms

    model = families.build("deepseek_v3")  # routed and shared experts
    ids = families.random_ids(samples=3, seq_len=10, seed=6)
    cpu = superexperts.profile(model, ids, batch_size=1).atom_stats
    monkeypatch.setattr(atoms, "host_check_is_free", lambda device: False)
    pd.testing.assert_frame_equal(superexperts.profile(model, ids, batch_size=1).atom_stats, cpu)
