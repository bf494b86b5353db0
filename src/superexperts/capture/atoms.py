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

from collections.abc import Callable

import torch

# (E,) channels -> (E, I): row `channel[e]` of expert e's down projection, w_k[c] for every k.
DownRows = Callable[[torch.Tensor], torch.Tensor]
# () -> (E, I): ||w_k||^2 of every atom.
DownNorms = Callable[[], torch.Tensor]


def fused_down(experts: torch.nn.Module) -> tuple[DownRows, DownNorms]:
    """Accessors of a fused experts module's down_proj: [E, H, I], or [E, I, H] when transposed (GPT-OSS)."""

    def weight() -> torch.Tensor:  # (E, H, I) view; read at call time (streaming loads weights late)
        down = experts.down_proj
        return down.transpose(1, 2) if getattr(experts, "is_transposed", False) else down

    def rows(channel: torch.Tensor) -> torch.Tensor:
        w = weight()
        return w[torch.arange(w.shape[0], device=channel.device), channel.clamp(min=0)].float()

    return rows, lambda: weight().float().square().sum(dim=1)


def linear_down(linears: list[torch.nn.Linear]) -> tuple[DownRows, DownNorms]:
    """Accessors of per-expert down Linears (ModuleList experts, a shared expert): weight [H, I] each.
    `rows` reads expert e's Linear for entry e of `channel`."""

    def rows(channel: torch.Tensor) -> torch.Tensor:
        c = channel.clamp(min=0)
        return torch.stack([lin.weight[c[e]] for e, lin in enumerate(linears)]).float()

    return rows, lambda: torch.stack([lin.weight.float().square().sum(dim=0) for lin in linears])


class AtomTracker:
    """Per-atom statistics for E experts of width I (see the module docstring)."""

    def __init__(self, num_experts: int, down_rows: DownRows, down_norms: DownNorms,
                 device: torch.device | str, *, routed: bool = True) -> None:  # fmt: skip
        self.num_experts = num_experts
        self.routed = routed  # routed rows need a routing weight; shared experts' r is 1
        self._down_rows, self._down_norms = down_rows, down_norms
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
        self.down_sq_norm = self._down_norms().to(dev)
        self.sq_sum = torch.zeros(e, width, dtype=acc, device=dev)
        self.sq_max = torch.zeros(e, width, device=dev)
        self.max_abs_act = torch.full((e, width), -1.0, device=dev)
        self.max_act_token = torch.full((e, width), -1, dtype=torch.int64, device=dev)
        self.contribution = torch.zeros(e, width, device=dev)

    @torch.no_grad()
    def update(
        self,
        expert_ids: torch.Tensor,  # (S,) expert of each (token, expert) row
        down_in: torch.Tensor,  # (S, I) a: the down projection's input
        token_index: torch.Tensor,  # (S,) global flat token index of each row
        weights: torch.Tensor | None,  # (S,) routing weight of each row; None = 1 (shared experts)
        moved: torch.Tensor,  # (E,) bool: the expert's output maximum moved to a row of this batch
        row: torch.Tensor,  # (E,) that row (meaningful where `moved`)
        channel: torch.Tensor,  # (E,) its channel c*
    ) -> None:
        if self.width == 0:
            self._start(down_in.shape[-1])
        width = self.width
        a = down_in.float()  # (S, I)
        a_abs = a.abs()
        if weights is None:
            ra = a_abs
            if self.routed:
                self.unweighted[expert_ids] = True
        else:
            ra = a_abs * weights.float().abs().unsqueeze(-1)  # |r a|, (S, I)
        sq = ra.square()
        # NaN/inf rows add nothing here (they are counted by ExpertTracker.nonfinite_rows).
        sq = torch.where(torch.isfinite(sq), sq, torch.zeros((), device=sq.device))
        self.sq_sum.index_add_(0, expert_ids, sq.to(self.sq_sum.dtype))
        index = expert_ids.unsqueeze(-1).expand(-1, width)  # (S, I)
        self.sq_max = self.sq_max.scatter_reduce(0, index, sq, "amax")
        self._update_max_act(index, a_abs, token_index)
        if bool(moved.any()) if a.device.type == "cpu" else True:  # on accelerators: never stall for it
            new = a[row.clamp(min=0, max=a.shape[0] - 1)] * self._down_rows(channel).to(a.device)  # (E, I)
            self.contribution = torch.where(moved.unsqueeze(-1), new, self.contribution)

    def _update_max_act(self, index: torch.Tensor, a_abs: torch.Tensor, token_index: torch.Tensor) -> None:
        """max |a| per atom and the first row that attains it, when larger than the running maximum."""
        e, s = self.num_experts, a_abs.shape[0]
        finite = torch.where(torch.isfinite(a_abs), a_abs, torch.full((), -1.0, device=a_abs.device))
        batch_max = torch.full((e, self.width), -1.0, device=a_abs.device).scatter_reduce(0, index, finite, "amax")
        positions = torch.arange(s, device=a_abs.device).unsqueeze(-1).expand(-1, self.width)
        candidates = torch.where(finite == batch_max.gather(0, index), positions, s)
        first = torch.full((e, self.width), s, device=a_abs.device).scatter_reduce(0, index, candidates, "amin")
        better = (first < s) & (batch_max > self.max_abs_act)
        self.max_abs_act = torch.where(better, batch_max, self.max_abs_act)
        self.max_act_token = torch.where(better, token_index[first.clamp(max=s - 1)], self.max_act_token)

    def state(self) -> dict[str, torch.Tensor]:
        """The recorded tensors (for streaming state, resume and merge)."""
        return {k: v for k, v in vars(self).items() if isinstance(v, torch.Tensor)}
