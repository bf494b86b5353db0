"""MassiveTracker against a brute-force sort of every hidden-state element, and against the model's
own output_hidden_states."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import families
from superexperts import profile
from superexperts.capture import tracker as tracker_mod
from superexperts.capture.tracker import MassiveTracker, lower_median_, median_step, row_max_abs


def _batches(seed: int, dtype=torch.float32, nonfinite: bool = False) -> list[torch.Tensor]:
    """Three (batch, seq, hidden) tensors with planted outliers: two in one token (the top-k must
    not assume one element per token) and one in another batch."""
    g = torch.Generator().manual_seed(seed)
    out = [torch.randn(b, 9, 24, generator=g) for b in (2, 3, 1)]
    out[0][1, 4, 7], out[0][1, 4, 19], out[2][0, 0, 3] = 50.0, -60.0, 40.0
    if nonfinite:
        out[1][2, 5, 0], out[1][0, 0, 11], out[0][0, 3, 2] = float("nan"), float("inf"), float("-inf")
        out[1][2, 5, 1] = -45.0  # a finite outlier in a row that also holds a NaN still counts
    return [b.to(dtype) for b in out]


def _brute(batches: list[torch.Tensor], k: int) -> tuple[list[float], list[int], int]:
    """(top-k |h| values, their global flat indices, non-finite count) from one sort of everything."""
    flat = torch.cat([b.float().reshape(-1) for b in batches])  # batches in order = global token order
    finite = torch.isfinite(flat)
    mags = torch.where(finite, flat.abs(), torch.zeros_like(flat)).numpy()
    order = np.argsort(-mags, kind="stable")[:k]
    return mags[order].tolist(), order.tolist(), int((~finite).sum())


def _run(batches: list[torch.Tensor], k: int) -> MassiveTracker:
    t = MassiveTracker(k, "cpu")
    offset = 0
    for b in batches:
        t.update(b, offset)
        offset += b.shape[0] * b.shape[1]
    return t


@pytest.mark.parametrize("masked_path", [False, True], ids=["cpu-check", "accelerator-path"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("nonfinite", [False, True])
def test_top_k_and_nonfinite_equal_a_full_sort(monkeypatch, masked_path, dtype, nonfinite):
    if masked_path:  # what cuda/mps run: no host check, the masked path every time
        monkeypatch.setattr(tracker_mod, "host_check_is_free", lambda device: False)
    batches = _batches(1, dtype, nonfinite)
    for k in (1, 3, 5):
        t = _run(batches, k)
        values, index, count = _brute(batches, k)
        assert t.values.tolist() == values  # exact, not approximate
        if dtype == torch.float32:  # bf16 rounding makes ties among the small values
            assert t.flat_index.tolist() == index
        flat = torch.cat([b.float().reshape(-1) for b in batches])
        assert flat[t.flat_index].abs().tolist() == values  # every index points at its value
        assert int(t.nonfinite) == count


def test_median_is_exact_for_small_batches_and_a_strided_sample_beyond():
    batches = _batches(2)
    t = _run(batches, 3)
    medians = [float(b.abs().reshape(-1).median()) for b in batches]  # all <= MEDIAN_SAMPLE elements
    assert t.batches == 3
    assert float(t.median_sum) / t.batches == pytest.approx(sum(medians) / 3, rel=1e-6)

    big = torch.randn(4, 300, 96, generator=torch.Generator().manual_seed(3)).abs() * 2  # 115,200 elements
    t = MassiveTracker(3, "cpu")
    t.update(big, 0)
    step = median_step(big.numel(), 96, MassiveTracker.MEDIAN_SAMPLE)
    sample = big.reshape(-1).numpy()[::step]
    assert sample.size <= MassiveTracker.MEDIAN_SAMPLE
    lower_middle = np.sort(sample)[(sample.size - 1) // 2]  # torch.median's definition
    assert float(t.median_sum) == lower_middle
    # The estimate is close to the full median: its documented cost is a sampling error.
    assert float(t.median_sum) == pytest.approx(float(big.median()), rel=0.02)


@pytest.mark.parametrize("n", [1, 2, 7, 8, 30_841])
def test_lower_median_is_torch_median(n):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, generator=g)
    for values in (x, x.round(), x.flip(0), x.to(torch.float64)):  # ties, order, dtype
        expected = values.median().item()
        assert expected == np.sort(values.numpy())[(n - 1) // 2]
        got = lower_median_(values.clone())
        assert got.dtype == values.dtype and got.dim() == 0 and got.item() == expected
    x[n // 2] = float("nan")  # torch.median propagates NaN
    assert lower_median_(x.clone()).isnan() and x.median().isnan()


@pytest.mark.parametrize("elements,width,sample", [(100, 8, 1000), (115_200, 96, 65_536), (10**6, 512, 4096),
                                                   (10**6, 7, 4096), (3 * 5 * 7 * 11, 105, 2)])  # fmt: skip
def test_median_step_is_the_smallest_coprime_stride_within_the_sample(elements, width, sample):
    step = median_step(elements, width, sample)
    assert math.gcd(step, width) == 1
    assert math.ceil(elements / step) <= sample
    smaller = [s for s in range(1, step) if math.gcd(s, width) == 1 and math.ceil(elements / s) <= sample]
    assert not smaller
    assert len({(i * step) % width for i in range(width)}) == width  # cycles through every channel


@pytest.mark.parametrize("family", ["qwen3_moe", "deepseek_v3", "gpt_oss"])
def test_layer_stats_equal_output_hidden_states(family):
    """top-k |h| with channel, sample and position per layer = a sort of the model's own hidden states."""
    model = families.build(family)
    ids = families.random_ids(samples=4, seq_len=12)
    prof = profile(model, ids, batch_size=3)  # uneven batches: 3 + 1
    with torch.no_grad():
        states = model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states
    layers = prof.layer_stats.set_index("layer")
    for layer in range(len(states) - 2):  # the last entry is after the final norm, not a layer output
        h = states[layer + 1].abs()  # (samples, seq, hidden)
        order = torch.argsort(h.reshape(-1), descending=True, stable=True)[:3]
        for k, idx in enumerate(order.tolist(), start=1):
            sample, rest = divmod(idx, h.shape[1] * h.shape[2])
            position, channel = divmod(rest, h.shape[2])
            row = layers.loc[layer]
            assert row[f"top{k}_abs"] == pytest.approx(h.reshape(-1)[idx].item(), rel=1e-5), (family, layer, k)
            assert (row[f"top{k}_sample"], row[f"top{k}_position"], row[f"top{k}_channel"]) == \
                (sample, position, channel), (family, layer, k)  # fmt: skip
        expected = (h[:3].median() + h[3:].median()) / 2  # one median per batch, averaged
        assert row["median_abs"] == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_row_max_abs_equals_the_abs_max_nonfinite_included(dtype):
    x = torch.randn(64, 48, generator=torch.Generator().manual_seed(0)).to(dtype)
    x[3, 5], x[4, 2], x[5, 7], x[6, 0] = float("nan"), float("-inf"), float("inf"), -1e4  # a negative extreme too
    expected = x.abs().amax(dim=-1)
    torch.testing.assert_close(row_max_abs(x), expected, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(row_max_abs(x, x.amax(dim=-1)), expected, rtol=0, atol=0, equal_nan=True)
