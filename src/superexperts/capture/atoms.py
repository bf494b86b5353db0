"""Per-atom statistics of one layer's experts, recorded in the profiling pass (issue 20).

Atom k of an expert is its intermediate unit k: gate row k, up row k, down_proj column k (w_k).
a[t, k] is the unit's activation, the down projection's input, so an expert writes
sum_k a[t, k] w_k. For every atom the tracker keeps, over the tokens routed to the expert:

- `sq_sum` = sum_t (r a)^2 and `sq_max` = max_t (r a)^2 (r: the routing weight, 1 for shared experts),
  so CAMERA's score (arXiv 2508.02322) is ||w_k||^2 ((1 - rho) sq_sum + rho sq_max) for any rho;
- `max_abs_act` = max_t |a| and the token where it is reached (the first row that attains it);
- `contribution` = a[t*, k] * w_k[c*] at the expert's own maximum (t*, c*) (ExpertTracker's token and
  channel): what each atom adds to the SE outlier. Taken when the expert's maximum moves, from the
  rows at hand: no second forward.

Memory is O(intermediate) per expert: a few (E, I) tensors per layer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch

from ..models.device_map import NUMPY_FLOATS, host_check_is_free, parameter_values
from .scratch import Scratch

# (E,) channels -> (E, I): row `channel[e]` of expert e's down projection, w_k[c] for every k.
DownRows = Callable[[torch.Tensor], torch.Tensor]
# scratch -> (E, I): ||w_k||^2 of every atom.
DownNorms = Callable[[Scratch], torch.Tensor]


def squared_norms(stacks: Iterable[torch.Tensor], scratch: Scratch) -> torch.Tensor:
    """(n, I): ||w_k||^2 of every column k of n (H, I) matrices, given as (m, H, I) stacks. A stack at a time
    through a float32 buffer of about NORM_CHUNK elements that stays in cache: 4x faster on a CPU than a norm
    over the whole (E, H, I) stack, and a few experts per op rather than one, because inside a forward each
    small op pays the CPU threads' wake-up (one per expert took 3 ms a layer on the profile benchmark)."""
    out = []
    for m in stacks:
        buffer = scratch.take("norms", tuple(m.shape), torch.float32, m.device)
        if m.dtype == torch.float32:
            torch.mul(m, m, out=buffer)
        else:  # squared in float32, not in the weights' own dtype
            buffer.copy_(m).square_()
        out.append(buffer.sum(dim=-2))
    return torch.cat(out)


NORM_CHUNK = 1 << 19  # elements per stack of squared_norms: 2 MB of float32


def fused_down(experts: torch.nn.Module) -> tuple[DownRows, DownNorms]:
    """Accessors of a fused experts module's down_proj: [E, H, I], or [E, I, H] when transposed (GPT-OSS)."""

    def weight() -> torch.Tensor:  # (E, H, I) view; read at call time (streaming loads weights late)
        down = experts.down_proj
        return down.transpose(1, 2) if getattr(experts, "is_transposed", False) else down

    def rows(channel: torch.Tensor) -> torch.Tensor:
        w = weight()
        return w[torch.arange(w.shape[0], device=channel.device), channel.clamp(min=0)].float()

    def norms(scratch: Scratch) -> torch.Tensor:
        w = weight()
        return squared_norms(w.split(max(1, NORM_CHUNK // (w.shape[1] * w.shape[2]))), scratch)

    return rows, norms


def linear_down(linears: list[torch.nn.Linear]) -> tuple[DownRows, DownNorms]:
    """Accessors of per-expert down Linears (ModuleList experts, a shared expert): weight [H, I] each.
    `rows` reads expert e's Linear for entry e of `channel`. They are called from forward hooks, after an
    offloaded Linear (--device-map) has put its weight back: read it from the offload store then."""

    def rows(channel: torch.Tensor) -> torch.Tensor:  # E small reads, no host sync
        c = channel.clamp(min=0)
        picked = []
        for e, lin in enumerate(linears):
            w = parameter_values(lin, "weight")
            picked.append(w.index_select(0, c[e : e + 1].to(w.device))[0].to(channel.device, torch.float32))
        return torch.stack(picked)

    def norms(scratch: Scratch) -> torch.Tensor:
        return squared_norms((parameter_values(lin, "weight").unsqueeze(0) for lin in linears), scratch).cpu()

    return rows, norms


class AtomTracker:
    """Per-atom statistics for E experts of width I (see the module docstring)."""

    # Rows per pass are cut into chunks of at most this many (S, I) elements: bounds the scratch buffers
    # (5 bytes an element) and keeps a chunk in cache across its passes: on the profile benchmark's rows (8192 x
    # 256, cold from memory as after the down projection) 2^18-2^20 took 10-15% less than one chunk of 2^21.
    CHUNK_ELEMENTS = 1 << 19

    def __init__(self, num_experts: int, down_rows: DownRows, down_norms: DownNorms,
                 device: torch.device | str, *, routed: bool = True, scratch: Scratch | None = None) -> None:  # fmt: skip
        self.num_experts = num_experts
        self.routed = routed  # routed rows need a routing weight; shared experts' r is 1
        self._down_rows, self._down_norms = down_rows, down_norms
        self._scratch = Scratch() if scratch is None else scratch  # not a tensor: never saved in a state
        self.device = torch.device(device)
        self.width = 0  # I, known at the first update
        self.down_sq_norm = torch.empty(0, device=device)  # (E, I) ||w_k||^2, read once (weights are constant)
        self.sq_sum = torch.empty(0, device=device)  # (E, I) sum_t (r a)^2, float64
        self.sq_max = torch.empty(0, device=device)  # (E, I) max_t (r a)^2
        self.max_abs_act = torch.empty(0, device=device)  # (E, I)
        self.max_act_token = torch.empty(0, dtype=torch.int64, device=device)  # (E, I) global token, -1 = none
        self.contribution = torch.empty(0, device=device)  # (E, I) a[t*, k] w_k[c*] at the expert's max
        # (E,) routed rows arrived without a routing weight (a router output `routing` cannot read): the
        # CAMERA sums are then exported as NaN, never a guess
        self.unweighted = torch.zeros(num_experts, dtype=torch.bool, device=device)

    def _start(self, width: int) -> None:
        e, dev = self.num_experts, self.device
        acc = torch.float32 if dev.type == "mps" else torch.float64  # MPS has no float64
        self.width = width
        self.down_sq_norm = self._down_norms(self._scratch).to(dev)
        self.sq_sum = torch.zeros(e, width, dtype=acc, device=dev)
        self.sq_max = torch.zeros(e, width, device=dev)
        self.max_abs_act = torch.full((e, width), -1.0, device=dev)
        self.max_act_token = torch.full((e, width), -1, dtype=torch.int64, device=dev)
        self.contribution = torch.zeros(e, width, device=dev)

    def _work(self, use: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """An (E, I) work tensor from the capture's scratch (no new memory per batch)."""
        return self._scratch.take(use, (self.num_experts, self.width), dtype, device)

    @torch.no_grad()
    def update(
        self,
        expert_ids: torch.Tensor,  # (S,) expert of each (token, expert) row, in any order
        down_in: torch.Tensor,  # (S, I) a: the down projection's input
        token_index: torch.Tensor,  # (S,) global flat token index of each row
        weights: torch.Tensor | None,  # (S,) routing weight of each row; None = 1 (shared experts)
        finite: torch.Tensor,  # (S,) the row's output is finite (a non-finite a makes it non-finite)
        moved: torch.Tensor,  # (E,) bool: the expert's output maximum moved to a row of this batch
        row: torch.Tensor,  # (E,) that row (meaningful where `moved`)
        channel: torch.Tensor,  # (E,) its channel c*
    ) -> torch.Tensor | None:
        """No new (S, I) or (E, I) tensor in the common case: every pass writes into the capture's scratch.
        The rows are read in chunks that stay in cache: one pass for the maxima of a and (r a)^2, and, when
        some atom's maximum grew, one for the first row that attains it.
        Returns (E,) the batch's max |a| per expert (-inf without rows) when every row is finite (then it is
        ExpertTracker's max_abs_input of the batch, which need not read the rows again); None otherwise."""
        if self.width == 0:
            self._start(down_in.shape[-1])
        a, dev, s = down_in, down_in.device, down_in.shape[0]
        on_host = host_check_is_free(dev)
        all_finite = on_host and bool(finite.all())
        if not all_finite:  # NaN/inf rows add nothing (ExpertTracker counts them in nonfinite_rows)
            a = torch.where(finite.unsqueeze(-1), a, torch.zeros((), dtype=a.dtype, device=dev))
        if weights is None and self.routed:
            self.unweighted[expert_ids] = True
        step = max(1, self.CHUNK_ELEMENTS // self.width)
        chunks = [(lo, expert_ids[lo : lo + step], a[lo : lo + step]) for lo in range(0, s, step)]
        # In the model's dtype (no float32 copy of a bf16 batch), exact: a max is one of the values.
        top = self._work("top", a.dtype, dev).fill_(float("-inf"))
        bottom = self._work("bottom", a.dtype, dev).fill_(float("inf"))
        sq_sum = self._work("sq_sum", torch.float32, dev).zero_()  # per batch in float32; across batches float64
        for lo, ids, rows in chunks:
            index = ids.unsqueeze(-1).expand(-1, self.width)
            top.scatter_reduce_(0, index, rows, "amax")
            bottom.scatter_reduce_(0, index, rows, "amin")
            self._add_squares(ids, rows, None if weights is None else weights[lo : lo + step], sq_sum)
        self.sq_sum += sq_sum
        batch = self._work("batch", torch.float32, dev).copy_(bottom).neg_()
        torch.maximum(batch, top, out=batch)  # (E, I) max |a|, -inf for an expert without rows
        better = torch.gt(batch, self.max_abs_act, out=self._work("better", torch.bool, dev))
        if not on_host or bool(better.any()):  # on accelerators: never stall to find out
            self._record_first_rows(chunks, top, bottom, batch, better, token_index)
        if bool(moved.any()) if on_host else True:
            new = a.index_select(0, row.clamp(min=0, max=s - 1)).float() * self._down_rows(channel).to(dev)
            self.contribution = torch.where(moved.unsqueeze(-1), new, self.contribution)
        return batch.amax(dim=1) if all_finite else None

    def _record_first_rows(self, chunks: list, top: torch.Tensor, bottom: torch.Tensor, batch: torch.Tensor,
                           better: torch.Tensor, token_index: torch.Tensor) -> None:  # fmt: skip
        """Where `better`, the new max |a| and the token of the first row that attains it."""
        dev, s = batch.device, token_index.shape[0]
        # numpy (the CPU search) has no bfloat16: such rows are compared as exact float32 copies
        dtype = torch.float32 if host_check_is_free(dev) and top.dtype not in NUMPY_FLOATS else top.dtype
        # The signed value to look for: top where |top| is the maximum, else bottom; NaN (never equal) where
        # nothing improves.
        is_top = torch.eq(batch, top, out=self._work("is_top", torch.bool, dev))
        target = torch.where(is_top, top, bottom, out=self._work("target", top.dtype, dev))
        if target.dtype != dtype:
            target = self._work("target_copy", dtype, dev).copy_(target)
        target.masked_fill_(torch.logical_not(better, out=self._work("not_better", torch.bool, dev)), float("nan"))
        first = self._work("first", torch.int64, dev).fill_(s)  # first row of each new maximum
        for lo, ids, rows in chunks:
            if rows.dtype != dtype:
                rows = self._scratch.take("rows", tuple(rows.shape), dtype, dev).copy_(rows)
            self._find_first(ids, rows, target, lo, first)
        torch.where(better, batch, self.max_abs_act, out=self.max_abs_act)
        token = torch.take(token_index, first.clamp_(max=s - 1), out=self._work("token", torch.int64, dev))
        torch.where(better, token, self.max_act_token, out=self.max_act_token)

    def _add_squares(self, ids: torch.Tensor, a: torch.Tensor, weights: torch.Tensor | None,
                     sq_sum: torch.Tensor) -> None:  # fmt: skip
        """(r a)^2 of a chunk of rows, in float32 in a scratch buffer: its sum into `sq_sum`, its max into sq_max."""
        sq = self._scratch.take("squares", tuple(a.shape), torch.float32, a.device)  # (n, I)
        if weights is None:  # r = 1
            sq.copy_(a).square_()  # squared in float32, not in a bf16 a's own dtype
        else:
            torch.mul(a, weights.to(torch.float32).unsqueeze(-1), out=sq).square_()
        sq_sum.index_add_(0, ids, sq)
        self.sq_max.scatter_reduce_(0, ids.unsqueeze(-1).expand(-1, self.width), sq, "amax")

    def _find_first(self, ids: torch.Tensor, a: torch.Tensor, target: torch.Tensor, offset: int,
                    first: torch.Tensor) -> None:  # fmt: skip
        """Lower `first` (E, I) to the first row (offset + row of this chunk) where a equals its expert's target."""
        shape = tuple(a.shape)  # (n, I)
        wanted = torch.index_select(target, 0, ids, out=self._scratch.take("wanted", shape, a.dtype, a.device))
        hit = self._scratch.take("hit", shape, torch.bool, a.device)
        if host_check_is_free(a.device):  # few hits: read them out instead of writing (n, I) index tensors
            # numpy's compare and flatnonzero on the same memory (no copy): 1/4 and 1/2 the time of torch's on a CPU
            np.equal(a.numpy(), wanted.numpy(), out=hit.numpy())
            flat = torch.from_numpy(np.flatnonzero(hit.numpy()))
            rows, cols = flat // self.width, flat % self.width
            first.view(-1).scatter_reduce_(0, ids[rows] * self.width + cols, rows + offset, "amin")
        else:  # no host sync: every row is a candidate, int64 max where it misses
            torch.eq(a, wanted, out=hit)
            rows = torch.arange(offset, offset + shape[0], device=a.device).unsqueeze(-1)
            candidates = torch.where(hit, rows, torch.iinfo(torch.int64).max)
            first.scatter_reduce_(0, ids.unsqueeze(-1).expand(-1, self.width), candidates, "amin")
