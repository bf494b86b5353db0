"""Running per-expert maxima over every calibration token, kept on the device.

`update` is vectorised (scatter_reduce over expert ids) and never syncs with the host, so it
adds a few elementwise passes to a forward, not a per-expert loop.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..models.device_map import NUMPY_FLOATS, host_check_is_free
from .scratch import Scratch

if TYPE_CHECKING:
    from .atoms import AtomTracker


class ExpertTracker:
    """Maxima of |down_proj output| and |down_proj input| for E experts of one layer, and the
    one-pass pruning criteria of REAP (Lasby et al. 2025, CerebrasResearch/reap): the sum of
    ||down_proj output||_2 over routed tokens (EAN) and of routing weight x that norm (REAP
    saliency = this sum / tokens_routed), and the largest signed output value (REAP's SE rank).

    `token` is the global flat token index (sample * seq_len + position) of the maximum.
    An expert that never received a token keeps max_abs_output = -1 (exported as 0, token -1).
    Rows without a routing weight (shared experts, dense MLPs) make the weighted sum NaN.
    `atoms`, when set, records per-atom statistics from the same rows (capture/atoms.py).
    """

    def __init__(self, num_experts: int, device: torch.device | str) -> None:
        e, f32, i64 = num_experts, torch.float32, torch.int64
        acc = torch.float32 if torch.device(device).type == "mps" else torch.float64  # MPS has no float64
        self.num_experts = e
        self.max_abs_output = torch.full((e,), -1.0, dtype=f32, device=device)
        self.max_output = torch.zeros(e, dtype=f32, device=device)  # signed value at the max
        self.channel = torch.full((e,), -1, dtype=i64, device=device)
        self.token = torch.full((e,), -1, dtype=i64, device=device)
        self.max_abs_input = torch.zeros(e, dtype=f32, device=device)
        self.tokens_routed = torch.zeros(e, dtype=i64, device=device)
        self.nonfinite_rows = torch.zeros(e, dtype=i64, device=device)
        self.max_signed_output = torch.full((e,), float("-inf"), dtype=f32, device=device)
        self.ean = torch.zeros(e, dtype=acc, device=device)
        self.weighted_norm_sum = torch.zeros(e, dtype=acc, device=device)
        self.atoms: AtomTracker | None = None

    @torch.no_grad()
    def update(
        self,
        expert_ids: torch.Tensor,  # (S,) expert of each (token, expert) row
        down_out: torch.Tensor,  # (S, hidden) down_proj output, before the routing weight
        down_in: torch.Tensor,  # (S, intermediate) down_proj input
        token_index: torch.Tensor,  # (S,) global flat token index of each row
        weights: torch.Tensor | None = None,  # (S,) routing weight the model applies to each row
    ) -> None:
        e, s = self.num_experts, expert_ids.numel()
        if s == 0:
            return
        row_top = down_out.amax(dim=-1)  # (S,) signed maximum of each row
        row_abs = row_max_abs(down_out, row_top).float()  # (S,) channels are found below for E rows only
        finite = torch.isfinite(row_abs)
        # NaN/inf rows are counted, not ranked: max() over them would hide every finite value.
        self.nonfinite_rows.scatter_add_(0, expert_ids, (~finite).long())
        row_abs = torch.where(finite, row_abs, torch.full_like(row_abs, -1.0))
        batch_max = torch.full((e,), -1.0, device=row_abs.device).scatter_reduce(0, expert_ids, row_abs, "amax")
        # First row that attains each expert's maximum.
        positions = torch.arange(s, device=row_abs.device)
        is_max = row_abs == batch_max[expert_ids]
        candidates = torch.where(is_max, positions, torch.full_like(positions, s))
        first = torch.full((e,), s, device=row_abs.device, dtype=torch.int64).scatter_reduce(
            0, expert_ids, candidates, "amin"
        )
        row = first.clamp(max=s - 1)
        better = (first < s) & (batch_max > self.max_abs_output)
        self.max_abs_output = torch.where(better, batch_max, self.max_abs_output)
        channel = down_out[row].abs().argmax(dim=-1)  # (E,) first channel at the max, as max(dim) gives
        self.channel = torch.where(better, channel, self.channel)
        self.max_output = torch.where(better, down_out[row, channel].float(), self.max_output)
        self.token = torch.where(better, token_index[row], self.token)
        self.tokens_routed += torch.bincount(expert_ids, minlength=e)
        self._update_criteria(expert_ids, down_out, row_top, finite, weights)
        batch_in = None  # (E,) max |down_in| of the batch, when the atoms already reduced the rows to it
        if self.atoms is not None:
            batch_in = self.atoms.update(expert_ids, down_in, token_index, weights, finite, better, row, channel)
        if batch_in is None:
            in_abs = row_max_abs(down_in).float()
            self.max_abs_input = self.max_abs_input.scatter_reduce(0, expert_ids, in_abs, "amax")
        else:  # two passes over the rows fewer
            self.max_abs_input = torch.maximum(self.max_abs_input, batch_in)

    def _update_criteria(self, expert_ids: torch.Tensor, down_out: torch.Tensor, row_top: torch.Tensor,
                         finite: torch.Tensor, weights: torch.Tensor | None) -> None:  # fmt: skip
        """EAN, weighted norm sum and signed max; non-finite rows add nothing (they are counted)."""
        # Each row's norm in float32 (a float64 norm cost as much as the expert matmuls: 1.2x the
        # forward); summed over rows in the accumulator's float64, where batch order matters.
        norms = torch.linalg.vector_norm(down_out, dim=-1, dtype=torch.float32).to(self.ean.dtype)  # (S,)
        norms = torch.where(finite, norms, torch.zeros_like(norms))
        self.ean.scatter_add_(0, expert_ids, norms)
        w = weights.to(norms.dtype) if weights is not None else torch.full_like(norms, float("nan"))
        self.weighted_norm_sum.scatter_add_(0, expert_ids, norms * w)
        row_max = row_top.float()
        row_max = torch.where(finite, row_max, torch.full_like(row_max, float("-inf")))
        self.max_signed_output = self.max_signed_output.scatter_reduce(0, expert_ids, row_max, "amax")

    def to_rows(self) -> list[dict]:
        """One dict per expert (host values)."""
        cols = {k: v.cpu().tolist() for k, v in vars(self).items() if isinstance(v, torch.Tensor)}
        rows = []
        for i in range(self.num_experts):
            row = {k: cols[k][i] for k in cols}
            weighted = row.pop("weighted_norm_sum")
            row["reap_saliency"] = weighted / row["tokens_routed"] if row["tokens_routed"] else 0.0
            if row["max_abs_output"] < 0:  # never routed, or only non-finite rows
                row.update(max_abs_output=0.0, max_output=0.0, max_signed_output=0.0, channel=-1, token=-1)
            rows.append(row)
        return rows


class MassiveTracker:
    """The k largest |hidden state| values after one decoder layer (exact), and its median (estimated).

    Exact, as a sort of every element would give them: `values` (descending) and `flat_index`
    (global token * hidden + channel) of the top-k |h| over all batches, and `nonfinite`, the
    number of NaN/inf elements (ranked as 0). Cost: one reduction to the per-token maximum |h|,
    then the k tokens with the largest maxima, which hold every element of the top k (a token
    outside them has a maximum no larger than k elements of theirs), then the top k of those
    k rows. Equal magnitudes may resolve to a different (token, channel) than a full sort would;
    the values are the same.

    Estimated: the median |h|. `median_sum / batches` is the mean over batches of the median
    (`lower_median_`: torch.median's lower middle value) of a strided sample of each batch's |h|: every
    `step`-th element of the flattened (batch, seq, hidden) tensor, at most MEDIAN_SAMPLE
    elements, `step` the smallest integer >= elements / MEDIAN_SAMPLE that is coprime with the
    hidden size, so the sample cycles through every channel and is spread evenly over tokens.
    Exact (the batch's median) when a batch has at most MEDIAN_SAMPLE elements. The median only
    feeds the massive-activation flag (> 1000x median); a full median of a 1M-element batch cost
    more than the layer's own elementwise work (issue 10).
    """

    MEDIAN_SAMPLE = 1 << 15  # elements per batch: ~0.6% relative error on a normal |h| (error ~ 1/sqrt(n))

    def __init__(self, k: int, device: torch.device | str, scratch: Scratch | None = None) -> None:
        self.k = k
        self._scratch = Scratch() if scratch is None else scratch  # the median's sample; not a tensor: not state
        self.values = torch.empty(0, device=device)
        self.flat_index = torch.empty(0, dtype=torch.int64, device=device)  # global token * hidden + channel
        self.median_sum = torch.zeros((), device=device)
        self.batches = 0
        self.nonfinite = torch.zeros((), dtype=torch.int64, device=device)
        self.hidden_size = 0

    @torch.no_grad()
    def update(self, hidden: torch.Tensor, token_offset: int, streams: int = 1) -> None:
        """`hidden`: (tokens * streams, hidden) rows of the decoder layer's output, token-major
        (`token_rows`); row r belongs to token r // streams of the batch."""
        width = hidden.shape[-1]
        self.hidden_size = width
        rows = hidden.detach().reshape(-1, width)  # (tokens * streams, hidden)
        row_max = row_max_abs(rows)  # (tokens,); NaN/inf propagate into their token's maximum
        clean = rows  # NaN/inf as 0; |h| is taken below on the few rows and samples read
        if not host_check_is_free(rows.device) or not bool(torch.isfinite(row_max).all()):
            finite = torch.isfinite(rows)
            self.nonfinite += finite.numel() - finite.sum()
            clean = torch.where(finite, rows, torch.zeros((), dtype=rows.dtype, device=rows.device))
            row_max = row_max_abs(clean)
        tokens = row_max.topk(min(self.k, row_max.numel())).indices  # (k,) they hold the top-k elements
        candidates = clean[tokens].abs().float().reshape(-1)  # (k * hidden,)
        values, pos = candidates.topk(min(self.k, candidates.numel()))
        idx = (tokens[pos // width] // streams + token_offset) * width + pos % width
        merged_v = torch.cat([self.values, values])
        merged_i = torch.cat([self.flat_index, idx])
        keep = merged_v.topk(min(self.k, merged_v.numel())).indices
        self.values, self.flat_index = merged_v[keep], merged_i[keep]
        flat = clean.reshape(-1)
        sample = flat[:: median_step(flat.numel(), width, self.MEDIAN_SAMPLE)]
        # |sample| in float32 in the capture's scratch, where the selection may reorder it
        buffer = self._scratch.take("median", tuple(sample.shape), torch.float32, sample.device)
        self.median_sum += lower_median_(buffer.copy_(sample).abs_())
        self.batches += 1


def token_rows(hidden: torch.Tensor, batch: int, seq_len: int) -> tuple[torch.Tensor, int] | None:
    """A decoder layer's output as (tokens * streams, hidden) rows, token-major, and `streams`.

    Most families output (batch, seq, hidden). Some carry more per token: DeepSeek-V4's
    hyper-connections keep (batch, seq, streams, hidden); others may put an axis first. The
    (batch, seq) pair of axes is found in the shape and moved to the front; every other axis but the
    last becomes streams of the token. None when the shape holds no such pair.
    """
    shape = tuple(hidden.shape[:-1])
    if len(shape) == 1 and shape[0] == batch * seq_len:  # already flattened tokens
        return hidden, 1
    for i in range(len(shape) - 1):
        if shape[i : i + 2] == (batch, seq_len):
            moved = hidden.movedim((i, i + 1), (0, 1))  # (batch, seq, *streams, hidden)
            streams = moved[0, 0].numel() // hidden.shape[-1]
            return moved.reshape(batch * seq_len * streams, hidden.shape[-1]), streams
    return None


def row_max_abs(x: torch.Tensor, row_top: torch.Tensor | None = None) -> torch.Tensor:
    """max |x| over the last dimension, equal to x.abs().amax(-1) (NaN propagates) without the
    |x| tensor: on a CPU writing that new tensor (first-touched pages) cost 10x the two reductions
    (26 vs 2 x 1.9 ms on a 32768 x 512 float32 batch). `row_top`: x.amax(-1), when already taken."""
    top = x.amax(dim=-1) if row_top is None else row_top
    return torch.maximum(top, x.amin(dim=-1).neg())


def lower_median_(x: torch.Tensor) -> torch.Tensor:
    """torch.median of a 1-D tensor (the lower middle value; NaN when any value is NaN), 0-dim; reorders x.
    On a CPU, numpy's selection in x's own memory: inside a profiling forward torch.median, and np.partition's
    copy, took 2.5-8 ms on a 30k-element sample where the selection itself takes 0.05 ms - the new memory they
    asked for was the cost, about a third of the capture's overhead on the profile benchmark."""
    if not host_check_is_free(x.device) or x.numel() == 0 or not x.is_contiguous() or x.dtype not in NUMPY_FLOATS:
        return x.median()
    values = x.numpy()
    if np.isnan(values.max()):  # a reduction, no new array: NaN propagates through max
        return torch.tensor(float("nan"), dtype=x.dtype)
    k = (values.size - 1) // 2
    values.partition(k)
    return torch.tensor(values[k], dtype=x.dtype)


def median_step(elements: int, width: int, sample: int) -> int:
    """Stride of the median sample: >= elements / sample, and coprime with `width` so that
    successive samples visit every channel (a stride sharing a factor with the hidden size
    would only ever see some channels)."""
    step = max(1, -(-elements // sample))
    while math.gcd(step, width) != 1:
        step += 1
    return step
