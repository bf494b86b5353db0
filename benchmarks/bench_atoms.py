"""The per-batch atom update (AtomTracker.update) in isolation, on the rows bench_profile's model hands it.

    python benchmarks/bench_atoms.py [--layers 8 --experts 64 --hidden 512 --tokens 256 --batch 4] [--repeats 30]

Builds bench_profile's synthetic Qwen3-MoE (random weights), records the arguments of layer 0's update over
two batches during superexperts.profile, then times the update alone: "first" on a fresh tracker (every atom's
maximum is new: the benchmark's case, one batch per layer) and "steady" (the second batch after the first).
Prints the median and minimum milliseconds and, for scale, one decoder layer's share of a plain forward of a
batch (plain forward / layers). Wall-clock, in this process; indicative only on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from unittest import mock

import torch
from bench_profile import add_model_args, synthetic_model

import superexperts
from superexperts.capture.atoms import AtomTracker
from superexperts.capture.scratch import Scratch


def record(model, ids: torch.Tensor, batch: int) -> list[tuple[AtomTracker, tuple]]:
    """(tracker, arguments) of layer 0's first two updates (the first tracker to see rows is layer 0's)."""
    calls, real = [], AtomTracker.update

    def spy(self, *args):
        if not calls or calls[0][0] is self:
            calls.append((self, tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)))
        return real(self, *args)

    with mock.patch.object(AtomTracker, "update", spy):
        superexperts.profile(model, ids[: 2 * batch], batch_size=batch)
    return calls[:2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(p)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = synthetic_model(args)
    ids = torch.randint(0, 1024, (2 * args.batch, args.tokens))
    (owner, first), (_, second) = record(model, ids, args.batch)
    scratch = Scratch()
    times: dict[str, list[float]] = {"first": [], "steady": []}
    for _ in range(args.repeats + 1):  # the first round warms up
        tracker = AtomTracker(owner.num_experts, owner._down_rows, owner._down_norms, "cpu", scratch=scratch)
        with torch.no_grad():  # ||w_k||^2 once per layer, not per batch: outside the timing
            tracker._start(first[1].shape[-1])
        for name, call in (("first", first), ("steady", second)):
            start = time.perf_counter()
            tracker.update(*call)
            times[name].append(time.perf_counter() - start)
    forward = []
    with torch.inference_mode():
        for _ in range(3):
            start = time.perf_counter()
            model(input_ids=ids[: args.batch], use_cache=False, logits_to_keep=1)
            forward.append(time.perf_counter() - start)
    layer_ms = 1e3 * statistics.median(forward) / args.layers
    result = {"setup": vars(args) | {"rows": int(first[1].shape[0]), "width": int(first[1].shape[1])},
              "layer_forward_ms": round(layer_ms, 2)}  # fmt: skip
    for name, t in times.items():
        ms = [1e3 * x for x in t[1:]]
        result[name] = {"median_ms": round(statistics.median(ms), 3), "min_ms": round(min(ms), 3),
                        "over_layer_forward": round(statistics.median(ms) / layer_ms, 4)}  # fmt: skip
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
