"""Profiling overhead, piece by piece, at equal batching; and the automatic batch size against the best.

    python benchmarks/bench_profile.py [--layers 8 --experts 64 --hidden 512 --tokens 256 --samples 4 --batch 4]
                                       [--repeats 7] [--sweep 1,2,4,auto] [--naive] [--heapr] [--keep-freed-memory]

One synthetic Qwen3-MoE (random weights), --samples random windows of --tokens, forwarded in batches of
--batch, on the device you pick. Each repeat runs every variant once (in a rotated order) and divides its
time by the plain forward of the same repeat; the figure is the median of those paired ratios (no timing is
asserted anywhere). Variants, each adding one piece to the one before:
- plain:          model(input_ids) with transformers' default experts implementation, all logits
- plain_last:     the same forward with logits_to_keep=1 (what profile's forwards compute: no statistic reads logits)
- experts_fn:     + the capturing experts implementation with no tracker attached
- expert_tracker: + per-expert maxima (ExpertTracker; hidden-state tracker and atoms disabled)
- atom_tracker:   + per-atom statistics (AtomTracker: CAMERA sums and maxima, max |a|, contributions)
- hidden_tracker: + hidden-state statistics (MassiveTracker): the whole capture
- profile_no_atoms: superexperts.profile(model, ids, batch_size=--batch, atoms=False), tables included
- profile:        superexperts.profile(model, ids, batch_size=--batch) with atoms, tables included (issue 20's
                  "atom capture <= 1.10x a plain forward": profile / plain, and / plain_last, the forward profile
                  itself runs; the README gives both)
- heapr (--heapr): superexperts.heapr(model, ids, batch_size=--batch), one forward + one backward with the
                  loss; issue 20's "heapr <= 4x plain" is heapr / plain (a plain forward computes all logits too)
- naive (--naive): a per-expert eager loop that syncs per expert (`.item()`), as the reference script does
--keep-freed-memory (glibc only) tells the C allocator to keep freed memory instead of handing it back to the
system: in a VM whose new pages are expensive (our 2-core CI machine) the forwards' own page faults otherwise
move every ratio by up to +-0.1 from one run to the next; with it, the same code gives the same figures.
The sweep times superexperts.profile at each batch size (and "auto", whose resolved batch it prints) and
reports auto / best. Wall-clock seconds; on a CPU the process CPU seconds too (less sensitive to other load).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import statistics
import time
from contextlib import contextmanager
from unittest import mock

import torch
from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM
from transformers.integrations.moe import ExpertsInterface

import superexperts
from superexperts.capture import experts_fn
from superexperts.capture.profile import run_capture
from superexperts.capture.tracker import MassiveTracker
from superexperts.models.adapters import map_model
from superexperts.runs.runfolder import library_versions

NAIVE_MAXIMA: dict[tuple[int, int], float] = {}


def naive_capture_forward(self, hidden_states, top_k_index, top_k_weights):
    """transformers' eager experts loop plus a host-synchronising max per expert."""
    final = torch.zeros_like(hidden_states)
    for e in range(self.num_experts):
        token_idx, k_pos = torch.where(top_k_index == e)
        if token_idx.numel() == 0:
            continue
        gate, up = torch.nn.functional.linear(hidden_states[token_idx], self.gate_up_proj[e]).chunk(2, dim=-1)
        out = torch.nn.functional.linear(self.act_fn(gate) * up, self.down_proj[e])
        key = (id(self), e)
        NAIVE_MAXIMA[key] = max(NAIVE_MAXIMA.get(key, 0.0), out.abs().max().item())
        final.index_add_(0, token_idx, out * top_k_weights[token_idx, k_pos, None])
    return final


def timed(fn) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


@contextmanager
def implementation(model, name: str):
    saved = model.config._experts_implementation
    model.set_experts_implementation(name)
    try:
        yield
    finally:
        model.set_experts_implementation(saved)


def variants(model, ids: torch.Tensor, batch: int, naive: bool, heapr: bool) -> dict:
    batches = list(ids.split(batch))
    model_map = map_model(model)

    def forward(**kwargs):
        with torch.inference_mode():
            for b in batches:
                model(input_ids=b, use_cache=False, **kwargs)

    def experts_only():
        with implementation(model, experts_fn.CAPTURE_IMPLEMENTATION):
            forward(logits_to_keep=1)

    def trackers(atoms: bool):
        with mock.patch.object(MassiveTracker, "update", lambda *a, **k: None):
            run_capture(model, model_map, batches, progress=False, atoms=atoms)

    def naive_loop():
        with implementation(model, "bench_naive_capture"):
            forward()

    out = {"plain": forward, "plain_last": lambda: forward(logits_to_keep=1), "experts_fn": experts_only,
           "expert_tracker": lambda: trackers(atoms=False), "atom_tracker": lambda: trackers(atoms=True),
           "hidden_tracker": lambda: run_capture(model, model_map, batches, progress=False),
           "profile_no_atoms": lambda: superexperts.profile(model, ids, batch_size=batch, atoms=False),
           "profile": lambda: superexperts.profile(model, ids, batch_size=batch)}  # fmt: skip
    if naive:
        out["naive"] = naive_loop
    if heapr:
        out["heapr"] = lambda: superexperts.heapr(model, ids, batch_size=batch)
    return out


def paired(fns: dict, repeats: int) -> dict:
    """Median seconds of each variant and median over repeats of (variant / plain of the same repeat)."""
    names = list(fns)
    for fn in fns.values():
        fn()  # warm-up
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in names[r % len(names):] + names[: r % len(names)]:  # rotate: no variant always runs first
            w, c = timed(fns[n])
            wall[n].append(w)
            cpu[n].append(c)
    result = {}
    for n in names:
        result[n] = {"seconds": statistics.median(wall[n]),
                     "over_plain": statistics.median(a / b for a, b in zip(wall[n], wall["plain"])),
                     "over_plain_last": statistics.median(a / b for a, b in zip(wall[n], wall["plain_last"]))}  # fmt: skip
        if not torch.cuda.is_available():
            result[n]["cpu_over_plain_last"] = statistics.median(a / b for a, b in zip(cpu[n], cpu["plain_last"]))
    return result


def sweep(model, ids: torch.Tensor, sizes: list[str], repeats: int) -> dict:
    """superexperts.profile at each batch size; auto's resolved batch and auto / best."""
    times, resolved = {}, None
    for size in sizes:
        bs = "auto" if size == "auto" else int(size)
        warm = superexperts.profile(model, ids, batch_size=bs)
        if size == "auto":
            resolved = warm.meta["batch_size"]
        times[size] = statistics.median(timed(lambda bs=bs: superexperts.profile(model, ids, batch_size=bs))[0]
                                        for _ in range(repeats))  # fmt: skip
    best = min(times, key=times.get)
    out = {"seconds": times, "best": best}
    if "auto" in times:
        out |= {"auto_resolves_to": resolved, "auto_over_best": times["auto"] / times[best]}
    return out


def keep_freed_memory() -> None:
    """glibc's malloc keeps what is freed (no trimming, no mmap for large blocks); an error elsewhere."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # mallopt's parameters (malloc.h)
    settings = ((m_trim_threshold, 1 << 30), (m_mmap_threshold, 1 << 30), (m_top_pad, 256 << 20))
    if not all(libc.mallopt(param, value) for param, value in settings):
        raise SystemExit("--keep-freed-memory needs glibc's mallopt; run without it.")


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The synthetic model's sizes (also bench_atoms.py's)."""
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--experts", type=int, default=64)
    p.add_argument("--top-k", type=int, default=8)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--moe-intermediate", type=int, default=256)
    p.add_argument("--tokens", type=int, default=256)


def synthetic_model(args: argparse.Namespace, device: str = "cpu") -> Qwen3MoeForCausalLM:
    """A seeded random Qwen3-MoE of `add_model_args`' sizes."""
    config = Qwen3MoeConfig(vocab_size=1024, hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                            moe_intermediate_size=args.moe_intermediate, num_hidden_layers=args.layers,
                            num_attention_heads=8, num_key_value_heads=4, head_dim=args.hidden // 8,
                            num_experts=args.experts, num_experts_per_tok=args.top_k)  # fmt: skip
    torch.manual_seed(0)
    return Qwen3MoeForCausalLM(config).to(device).eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(p)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--sweep", default="1,2,4,auto", help="batch sizes for the auto-vs-best sweep ('' skips it)")
    p.add_argument("--naive", action="store_true", help="also time the reference-style per-expert loop")
    p.add_argument("--heapr", action="store_true", help="also time superexperts.heapr (forward + backward)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    p.add_argument("--keep-freed-memory", action="store_true",
                   help="glibc keeps freed memory (steady figures where new pages are expensive, as in a VM)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.keep_freed_memory:
        keep_freed_memory()

    model = synthetic_model(args, args.device)
    ids = torch.randint(0, 1024, (args.samples, args.tokens), device=args.device)
    ExpertsInterface.register("bench_naive_capture", naive_capture_forward)
    result = {
        "setup": vars(args) | {"default_experts_implementation": model.config._experts_implementation,
                               "threads": torch.get_num_threads()},
        "pieces": paired(variants(model, ids, args.batch, args.naive, args.heapr), args.repeats),
        "versions": library_versions(),
    }  # fmt: skip
    if args.sweep:
        result["batch_sweep"] = sweep(model, ids, args.sweep.split(","), args.repeats)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
