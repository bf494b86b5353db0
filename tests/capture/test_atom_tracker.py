"""AtomTracker.update on hand-made rows against a row-by-row loop written out here: rows in any expert order,
cut into chunks (the scratch-buffer path of large batches), bfloat16 rows, non-finite rows and the no-sync
accelerator path all give the loop's statistics."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from superexperts.capture import atoms
from superexperts.capture.atoms import AtomTracker, fused_down
from superexperts.capture.scratch import Scratch

E, H, I = 3, 4, 5


class FakeExperts(torch.nn.Module):
    def __init__(self, down: torch.Tensor) -> None:
        super().__init__()
        self.down_proj = torch.nn.Parameter(down, requires_grad=False)  # (E, H, I)


def batches(seed: int, dtype: torch.dtype):
    """Two batches of (expert_ids, a, token_index, weights, finite, moved, row, channel), rows in random expert
    order, one non-finite row, and a value repeated in two rows of one expert (ties keep the first row)."""
    gen = torch.Generator().manual_seed(seed)
    out, offset = [], 0
    for n in (17, 11):
        ids = torch.randint(0, E, (n,), generator=gen)
        a = torch.randn(n, I, generator=gen).to(dtype)
        first_rows = [int((ids == e).nonzero()[0]) for e in ids.unique()]
        a[first_rows[-1] + 1 :][ids[first_rows[-1] + 1 :] == ids[first_rows[-1]]] = a[first_rows[-1]]  # ties
        finite = torch.ones(n, dtype=torch.bool)
        finite[n // 2] = False
        a[n // 2, 0] = float("nan")
        weights = torch.rand(n, generator=gen)
        moved = torch.tensor([True, False, True])
        row = torch.randint(0, n, (E,), generator=gen)
        channel = torch.randint(0, H, (E,), generator=gen)
        out.append((ids, a, torch.arange(offset, offset + n), weights, finite, moved, row, channel))
        offset += n
    return out


def loop(down: torch.Tensor, calls: list) -> dict[str, torch.Tensor]:
    """The statistics one row at a time, in float64: strictly larger |a| replaces the maximum (first row wins)."""
    sq_sum, sq_max = torch.zeros(E, I, dtype=torch.float64), torch.zeros(E, I, dtype=torch.float64)
    best, token = torch.full((E, I), -1.0, dtype=torch.float64), torch.full((E, I), -1)
    contribution = torch.zeros(E, I, dtype=torch.float64)
    for ids, a, tokens, weights, finite, moved, row, channel in calls:
        for t in range(len(ids)):
            if not finite[t]:
                continue
            e, x = int(ids[t]), a[t].double()
            energy = (float(weights[t]) * x) ** 2
            sq_sum[e] += energy
            sq_max[e] = torch.maximum(sq_max[e], energy)
            larger = x.abs() > best[e]
            best[e] = torch.where(larger, x.abs(), best[e])
            token[e] = torch.where(larger, tokens[t], token[e])
        for e in range(E):
            if moved[e]:
                contribution[e] = a[row[e]].double() * down[e, channel[e]].double()
    return {"sq_sum": sq_sum, "sq_max": sq_max, "max_abs_act": best, "max_act_token": token,
            "contribution": contribution}  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk", [None, 2 * I])  # one chunk, or chunks of two rows
@pytest.mark.parametrize("accelerator", [False, True])
def test_update_equals_a_row_by_row_loop(dtype, chunk, accelerator, monkeypatch):
    if chunk:
        monkeypatch.setattr(AtomTracker, "CHUNK_ELEMENTS", chunk)
    if accelerator:  # the path that never reads a value on the host
        monkeypatch.setattr(atoms, "host_check_is_free", lambda device: False)
    down = torch.randn(E, H, I, generator=torch.Generator().manual_seed(1))
    rows, norms = fused_down(FakeExperts(down))
    tracker = AtomTracker(E, rows, norms, "cpu", scratch=Scratch())
    calls = batches(seed=0, dtype=dtype)
    for call in calls:
        tracker.update(*call)
    want = loop(down, calls)
    torch.testing.assert_close(tracker.down_sq_norm.double(), (down.double() ** 2).sum(1))
    for name in ("sq_sum", "sq_max", "max_abs_act", "contribution"):
        torch.testing.assert_close(getattr(tracker, name).double(), want[name], rtol=1e-5, atol=1e-6, msg=name)
    assert torch.equal(tracker.max_act_token, want["max_act_token"])
    assert tracker.max_act_token.min() >= 0  # every atom of every expert was routed some finite row


def test_rows_in_any_order_give_the_same_statistics():
    """The experts function hands rows sorted by expert; hooks and other callers need not. Same tracker state."""
    down = torch.randn(E, H, I, generator=torch.Generator().manual_seed(2))
    rows, norms = fused_down(FakeExperts(down))
    state = []
    for order in ("as given", "sorted"):
        tracker = AtomTracker(E, rows, norms, "cpu")
        for ids, a, tokens, weights, finite, moved, row, channel in batches(seed=3, dtype=torch.float32):
            perm = torch.sort(ids, stable=True).indices if order == "sorted" else torch.arange(len(ids))
            inverse = torch.argsort(perm)
            tracker.update(ids[perm], a[perm], tokens[perm], weights[perm], finite[perm], moved, inverse[row], channel)
        state.append({k: v for k, v in vars(tracker).items() if isinstance(v, torch.Tensor)})
    for name in state[0]:
        torch.testing.assert_close(state[0][name], state[1][name], rtol=1e-6, atol=0, msg=name)


def test_expert_table_is_the_same_with_and_without_atoms():
    """With atoms, ExpertTracker takes max_abs_input from the atoms' per-expert maxima instead of reading the rows."""
    import families
    import superexperts

    model = families.build("deepseek_v3")  # routed and shared experts, a dense layer
    ids = families.random_ids(samples=3, seq_len=10, seed=7)
    with_atoms = superexperts.profile(model, ids, batch_size=2).expert_stats
    without = superexperts.profile(model, ids, batch_size=2, atoms=False).expert_stats
    assert (with_atoms.max_abs_input > 0).all()
    pd.testing.assert_frame_equal(with_atoms, without)
