"""Two gloo processes, each profiling half of the batches, give exactly the one-process profile."""

from __future__ import annotations

import pandas as pd
import torch

import families
from superexperts.capture.profile import profile
from superexperts.scale.spawn import spawn_stream_profile
from superexperts.scale.state import merge_atom_states, merge_expert_states


def test_two_gloo_ranks_equal_one_process(checkpoints):
    model, folder = checkpoints("qwen2_moe", "hub")  # routed + shared experts
    ids = families.random_ids(samples=5, seq_len=16, seed=3)  # 5 batches: ranks get 2 and 3
    merged = spawn_stream_profile(2, folder, ids, batch_size=1, start_method="fork")  # CPU: fork is safe, fast
    single = profile(model, ids, batch_size=1)
    assert merged.meta["world_size"] == 2
    # Sums over every routed token (not maxima) carry float32 rounding that differs with the thread
    # count (ranks run 1 thread) and the per-shard addition order: equal to 1e-6, not bitwise.
    sums = ["ean", "reap_saliency"]
    pd.testing.assert_frame_equal(single.expert_stats.drop(columns=sums), merged.expert_stats.drop(columns=sums))
    pd.testing.assert_frame_equal(single.expert_stats[sums], merged.expert_stats[sums], check_exact=False, rtol=1e-6)
    pd.testing.assert_frame_equal(single.layer_stats, merged.layer_stats)
    # Atom values are read from the expert activations themselves, whose last bits move with the thread count
    # (the shared expert's Linear): equal to 1e-5 (1e-6 near 0); which token holds each maximum is exact.
    values = ["camera_sum", "camera_max", "max_abs_act", "contribution"]
    assert set(merged.atom_stats.kind) == {"routed", "shared"}
    pd.testing.assert_frame_equal(single.atom_stats.drop(columns=values), merged.atom_stats.drop(columns=values))
    pd.testing.assert_frame_equal(single.atom_stats[values], merged.atom_stats[values], check_exact=False, rtol=1e-5,
                                  atol=1e-6)


def test_merge_takes_the_argmax_from_the_rank_with_the_max():
    def state(max_abs, token, channel, routed):
        n = len(max_abs)
        return {"max_abs_output": torch.tensor(max_abs), "max_output": -torch.tensor(max_abs),
                "channel": torch.tensor(channel), "token": torch.tensor(token),
                "max_abs_input": torch.tensor(max_abs) / 2, "tokens_routed": torch.tensor(routed),
                "nonfinite_rows": torch.zeros(n, dtype=torch.int64), "max_signed_output": torch.tensor(max_abs) / 3,
                "ean": torch.tensor(routed, dtype=torch.float64) * 2,
                "weighted_norm_sum": torch.tensor(routed, dtype=torch.float64)}  # fmt: skip

    a = state([5.0, 1.0, -1.0, 2.0], token=[1, 2, -1, 3], channel=[7, 8, -1, 9], routed=[4, 1, 0, 2])
    b = state([3.0, 6.0, 4.0, 2.0], token=[11, 12, 13, 14], channel=[0, 1, 2, 3], routed=[1, 5, 2, 2])
    m = merge_expert_states([a, b])
    # a straightforward loop: the later shard wins only when strictly greater (ties keep the earlier token)
    for e in range(4):
        src = b if b["max_abs_output"][e] > a["max_abs_output"][e] else a
        assert m["max_abs_output"][e] == src["max_abs_output"][e]
        assert m["token"][e] == src["token"][e] and m["channel"][e] == src["channel"][e]
        assert m["max_output"][e] == src["max_output"][e]
        assert m["tokens_routed"][e] == a["tokens_routed"][e] + b["tokens_routed"][e]
        assert m["ean"][e] == a["ean"][e] + b["ean"][e]
        assert m["weighted_norm_sum"][e] == a["weighted_norm_sum"][e] + b["weighted_norm_sum"][e]
        assert m["max_signed_output"][e] == max(a["max_signed_output"][e], b["max_signed_output"][e])
    assert m["token"].tolist() == [1, 12, 13, 3]


def test_atom_merge_keeps_each_maximum_with_its_token_and_the_experts_contribution():
    def atoms(sq, act, token, contribution):
        return {"sq_sum": torch.tensor(sq, dtype=torch.float64), "sq_max": torch.tensor(sq, dtype=torch.float32),
                "max_abs_act": torch.tensor(act), "max_act_token": torch.tensor(token),
                "contribution": torch.tensor(contribution), "unweighted": torch.tensor([False, True]),
                "down_sq_norm": torch.ones(2, 2)}  # fmt: skip

    a = atoms([[1.0, 4.0], [2.0, 0.0]], [[3.0, 1.0], [2.0, -1.0]], [[5, 6], [7, -1]], [[1.0, 2.0], [3.0, 4.0]])
    b = atoms([[2.0, 1.0], [1.0, 3.0]], [[3.0, 2.0], [1.0, 5.0]], [[15, 16], [17, 18]], [[-1.0, -2.0], [-3.0, -4.0]])
    better = torch.tensor([False, True])  # expert 1's output maximum is in shard b
    m = merge_atom_states(a, b, better)
    assert m["sq_sum"].tolist() == [[3.0, 5.0], [3.0, 3.0]]
    assert m["sq_max"].tolist() == [[2.0, 4.0], [2.0, 3.0]]
    assert m["max_abs_act"].tolist() == [[3.0, 2.0], [2.0, 5.0]]
    assert m["max_act_token"].tolist() == [[5, 16], [7, 18]]  # a tie (3.0) keeps the earlier shard's token
    assert m["contribution"].tolist() == [[1.0, 2.0], [-3.0, -4.0]]  # the whole row of the shard with the max
    assert m["unweighted"].tolist() == [False, True]
