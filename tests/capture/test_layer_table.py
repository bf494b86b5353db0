"""The per-layer massive-activation table (profile's layer_stats, shown in the report) against the
hidden states transformers returns with output_hidden_states: top-k values with their channel,
sample and position, and the median |h|, which is the MEAN OVER BATCHES of each batch's median
(not the median of all calibration tokens; documented in profile.Profile)."""

from __future__ import annotations

import pytest
import torch

import families
from superexperts.capture.profile import profile


def test_layer_table_matches_output_hidden_states():
    model = families.build("qwen3_moe")
    ids = families.random_ids(samples=4, seq_len=12)
    stats = profile(model, ids, batch_size=2).layer_stats.set_index("layer")
    hidden = families.layer_outputs(model, ids).abs()
    seq_len, width = hidden.shape[2:]
    for layer, h in enumerate(hidden):
        values, flat = h.flatten().topk(3)
        row = stats.loc[layer]
        for k, (value, index) in enumerate(zip(values.tolist(), flat.tolist()), start=1):
            token, channel = divmod(index, width)
            sample, position = divmod(token, seq_len)
            assert row[f"top{k}_abs"] == pytest.approx(value, rel=1e-5)
            assert (row[f"top{k}_channel"], row[f"top{k}_sample"], row[f"top{k}_position"]) == (
                channel,
                sample,
                position,
            )
        per_batch = [b.flatten().median() for b in h.split(2)]  # torch's median: the lower middle value
        assert row["median_abs"] == pytest.approx(float(torch.stack(per_batch).mean()), rel=1e-5)
        assert row["median_abs"] != pytest.approx(float(h.flatten().mean()), rel=1e-3)  # a median, not a mean
