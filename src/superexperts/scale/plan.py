"""A cost plan before the run: peak memory and time of profile, prune-eval and sinks, per way of running.

Pure functions of a ModelShape (sizes from config.json), a Device (memory, bandwidth, FLOPS) and a
Workload (windows, passes). Time is a roofline estimate in the style of LLM-Viewer, per decoder
layer and batch: the matrix products at max(weight bytes / memory bandwidth, FLOPs / peak FLOPS),
plus the activation passes (expert gathers, activation function, routing weights, norms, the
capture's reductions) at their bytes / activation bandwidth. Eager PyTorch runs those passes one
after another, so they add to the products rather than overlap them; on a CPU they are slower than
a copy because every new output tensor is first-touched (page faults): measured 5.3 GB/s against a
25-28 GB/s copy on the 2-core benchmark machine. Plus loading: reading the checkpoint from disk and
converting it to the model's layout (`LOAD_PASSES` passes over the weights at the activation
bandwidth), and, with a device map, the offloaded weights over the host link for every batch.
Peak memory is the sum of what is held at once:

- in memory: the runtime, all weights at the compute dtype, one layer more while loading
  (converting per-expert tensors to fused ones), and one forward's activations;
- stream: the runtime, embeddings and final norm (+ lm_head when logits are needed), 1.3x the
  largest layer (measured while a layer loads, see `stream.checkpoint`), the hidden states of
  every window between two layers (all kept, spilled to disk beyond the budget), and one
  forward's activations;
- device map: the device holds what fits; the rest is offloaded to host memory (or disk on a
  CPU) and re-read for every batch, which is why streaming is the cheaper way for profiling.

    >>> p = make_plan(shape, device("h100-80gb"), [workload("profile")], batch="auto")
    >>> print(format_plan(p))
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..capture.batching import MAX_TOKENS, choose_batch_size
from ..models.costs import (
    activation_bytes_per_token,
    head_flops_per_token,
    layer_activation_bytes,
    layer_flops_per_token,
    layer_weight_bytes_read,
)
from ..models.shape import ModelShape
from ..runs.errors import UserError
from .devices import Device

GB = 1e9
# python+torch+transformers (cpu: the RSS after imports that bench_plan measures); on GPUs the CUDA context
RUNTIME_BYTES = {"cpu": 0.45 * GB, "cuda": 0.5 * GB, "mps": 0.5 * GB}
STREAM_LAYER_FACTOR = 1.3  # peak while one layer loads (stream/checkpoint.py: measured 1.3x the layer)
SPILL_BUDGET = {"cpu": 0.5, "cuda": 0.8, "mps": 0.5}  # share of the free memory stored hidden states may use
# Loading writes each weight into a new tensor about twice: read from the file, then stacked (and
# gate with up concatenated) into the fused layout from the hub's per-expert tensors. Each pass
# reads and writes, at the activation bandwidth (new tensors); torch.stack alone was 1.4 of 2.9 s
# of from_pretrained on the 1.4 GB benchmark checkpoint.
LOAD_PASSES = 2
RESUMABLE_AFTER_S = 3600.0  # recommend --state-dir (resume) for streamed runs longer than this


@dataclass(frozen=True)
class Workload:
    """What a subcommand runs: `passes` forwards over all windows (conditions: baseline, pruned, controls)."""

    command: str
    samples: int
    seq_len: int
    passes: int
    logits: bool  # the full logits are computed (perplexity)
    attention_factor: float = 1.0  # sinks computes QK^T a second time for the sink mass
    note: str = ""
    one_read: bool = False  # streamed, all passes share one read of each layer, each with its own hidden states


WORKLOADS = {
    "profile": Workload("profile", 128, 2048, 1, False, note="one pass, no logits"),
    "prune-eval": Workload("prune-eval", 140, 2048, 2, True, note="perplexity: baseline + SEs pruned; "
                           "140 windows ~ WikiText-2 test with a 150k-token vocabulary"),
    "sinks": Workload("sinks", 4, 1024, 5, False, 2.0, note="baseline + SEs pruned + 3 random controls",
                      one_read=True),
}  # fmt: skip


def workload(command: str, *, samples: int | None = None, seq_len: int | None = None) -> Workload:
    base = WORKLOADS[command]
    if samples is not None and samples < 1:
        raise UserError(f"--samples must be >= 1, got {samples}.")
    if seq_len is not None and seq_len < 2:
        raise UserError(f"--seq-len must be >= 2, got {seq_len}.")
    return replace(base, samples=samples or base.samples, seq_len=seq_len or base.seq_len)


@dataclass
class ModeCost:
    mode: str  # in-memory | stream | device-map
    peak_bytes: float
    seconds: float
    fits: bool
    parts: dict[str, float] = field(default_factory=dict)  # peak memory by component; time by component


def forward_seconds(shape: ModelShape, dev: Device, tokens: int, seq_len: int, w: Workload) -> tuple[float, float]:
    """(seconds, FLOPs) of one forward of `tokens`: per layer, the products at max(weight bytes /
    bandwidth, FLOPs / peak), then the activations written and read back at the activation bandwidth."""
    total_s, total_flops = 0.0, 0.0
    for layer in shape.layers:
        flops = tokens * layer_flops_per_token(shape, layer, seq_len)
        flops += tokens * (w.attention_factor - 1) * 2 * shape.heads * shape.qk_dim * (seq_len + 1) / 2
        weights = layer_weight_bytes_read(shape, layer, tokens)
        passes = 2 * tokens * layer_activation_bytes(shape, layer)  # each activation written, then read
        total_s += _roofline(dev, weights, flops) + passes / (dev.activation_gbs * GB)
        total_flops += flops
    if w.logits:
        flops = tokens * head_flops_per_token(shape)
        weights = (shape.head_params or shape.vocab * shape.hidden) * shape.dtype_bytes
        total_s += _roofline(dev, weights, flops) + tokens * shape.vocab * 4 / (dev.activation_gbs * GB)
        total_flops += flops
    return total_s, total_flops


def _roofline(dev: Device, weight_bytes: float, flops: float) -> float:
    return max(weight_bytes / (dev.bandwidth_gbs * GB), flops / (dev.tflops * 1e12))


def resolve_batch(shape: ModelShape, dev: Device, w: Workload, batch: int | str, free_bytes: float) -> int:
    if batch != "auto":
        return min(int(batch), w.samples)
    per_token = activation_bytes_per_token(shape, w.seq_len, logits=w.logits)
    return choose_batch_size(samples=w.samples, seq_len=w.seq_len, bytes_per_token=per_token,
                             budget_bytes=int(max(free_bytes, 0) * 0.6), max_tokens=MAX_TOKENS[dev.kind])  # fmt: skip


def _costs(shape: ModelShape, dev: Device, w: Workload, batch: int, disk_bytes: float, disk_gbs: float) -> list[ModeCost]:
    b = shape.dtype_bytes
    runtime, memory = RUNTIME_BYTES[dev.kind], dev.memory_gb * GB
    weights = shape.total_params * b
    largest = max((shape.layer_bytes(i) for i in range(shape.num_layers)), default=0)
    activations = batch * w.seq_len * activation_bytes_per_token(shape, w.seq_len, logits=w.logits)
    batches = -(-w.samples // batch)
    step_s, _ = forward_seconds(shape, dev, batch * w.seq_len, w.seq_len, w)
    compute_s = step_s * batches * w.passes
    read_s = disk_bytes / (disk_gbs * GB)
    convert_s = LOAD_PASSES * 2 * weights / (dev.activation_gbs * GB)
    load_s = read_s + convert_s

    in_mem = {"runtime": runtime, "weights": weights, "loading": largest, "activations": activations}
    outer = (shape.outer_params + (shape.head_params if w.logits else 0)) * b
    stream = {"runtime": runtime, "outer": outer, "layer": STREAM_LAYER_FACTOR * largest, "activations": activations}
    # every window's hidden states between two layers (sinks --stream: of every condition)
    hidden = w.samples * w.seq_len * shape.hidden * b * (w.passes if w.one_read else 1)
    stream_reads = 1 if w.one_read else w.passes
    kept = min(hidden, max(0.0, SPILL_BUDGET[dev.kind] * (memory - sum(stream.values()))))
    stream["hidden_states"] = kept  # the rest is spilled to disk (stream.activations)
    on_device = max(0.0, min(weights, memory - runtime - activations - largest))
    offloaded = weights - on_device
    dmap = {"runtime": runtime, "weights_on_device": on_device, "activations": activations}
    dmap_extra = offloaded / (dev.host_gbs * GB) * batches * w.passes
    return [
        ModeCost("in-memory", sum(in_mem.values()), load_s + compute_s, sum(in_mem.values()) <= memory,
                 in_mem | {"read_s": read_s, "convert_s": convert_s, "compute_s": compute_s}),
        ModeCost("stream", sum(stream.values()), load_s * stream_reads + compute_s, sum(stream.values()) <= memory,
                 stream | {"hidden_spilled": hidden - kept, "read_s": read_s * stream_reads,
                           "convert_s": convert_s * stream_reads, "compute_s": compute_s}),
        ModeCost("device-map", sum(dmap.values()), load_s + compute_s + dmap_extra,
                 runtime + activations + largest <= memory,
                 dmap | {"offloaded": offloaded, "read_s": read_s, "convert_s": convert_s, "compute_s": compute_s,
                         "offload_s": dmap_extra}),
    ]  # fmt: skip


# The flag each way of running needs, per subcommand (checked against what the CLI offers).
MODE_FLAGS = {"in-memory": [], "stream": ["--stream"], "device-map": ["--device-map", "auto"]}


def recommend(command: str, costs: list[ModeCost], offered: set[str], dev: Device) -> dict[str, Any]:
    """The cheapest way that fits and that this version offers, as flags; or why none does."""
    usable = [c for c in costs if c.fits and all(f in offered for f in MODE_FLAGS[c.mode] if f.startswith("--"))]
    if not usable:
        least = min(costs, key=lambda c: c.peak_bytes)
        missing = [c.mode for c in costs if c.fits and c not in usable]
        why = f" ({', '.join(missing)} would fit but `{command}` does not offer it in this version)" if missing else ""
        return {"mode": None, "flags": [], "reason": f"nothing fits {dev.memory_gb:.1f} GB{why}; the smallest "
                f"way ({least.mode}) needs {least.peak_bytes / GB:.1f} GB"}  # fmt: skip
    best = min(usable, key=lambda c: c.seconds)
    flags = list(MODE_FLAGS[best.mode])
    if best.mode == "stream" and best.seconds > RESUMABLE_AFTER_S and "--state-dir" in offered:
        flags += ["--state-dir", "DIR"]  # a long streamed run can resume after an interruption
    if "--batch-size" in offered:
        flags += ["--batch-size", "auto"]
    return {"mode": best.mode, "flags": flags, "reason": f"{best.mode}: peak {best.peak_bytes / GB:.1f} GB of "
            f"{dev.memory_gb:.1f} GB, ~{_duration(best.seconds)}"}  # fmt: skip


def make_plan(shape: ModelShape, dev: Device, workloads: list[Workload], *, batch: int | str = "auto",
              disk_bytes: float | None = None, disk_gbs: float = 2.0,
              offered: dict[str, set[str]] | None = None) -> dict[str, Any]:  # fmt: skip
    """Everything `superexperts plan` prints, as a dict (JSON-able)."""
    weights = shape.total_params * shape.dtype_bytes
    disk_bytes = weights if disk_bytes is None else disk_bytes
    commands = {}
    for w in workloads:
        free = dev.memory_gb * GB - RUNTIME_BYTES[dev.kind] - weights
        n = resolve_batch(shape, dev, w, batch, free if free > 0 else dev.memory_gb * GB / 4)
        costs = _costs(shape, dev, w, n, disk_bytes, disk_gbs)
        flops = forward_seconds(shape, dev, n * w.seq_len, w.seq_len, w)[1] * -(-w.samples // n) * w.passes
        commands[w.command] = {
            "workload": vars(w) | {"batch_size": n}, "flops": flops,
            "modes": {c.mode: {"peak_bytes": c.peak_bytes, "seconds": c.seconds, "fits": c.fits, "parts": c.parts}
                      for c in costs},
            "recommended": recommend(w.command, costs, (offered or {}).get(w.command, set()), dev),
        }  # fmt: skip
    return {"model": _model_summary(shape), "device": vars(dev), "disk_bytes": disk_bytes, "disk_gbs": disk_gbs,
            "commands": commands}  # fmt: skip


def _model_summary(shape: ModelShape) -> dict[str, Any]:
    b = shape.dtype_bytes
    return {"model_type": shape.model_type, "layers": shape.num_layers, "hidden": shape.hidden,
            "params": shape.total_params, "dtype_bytes": b, "weights_bytes": shape.total_params * b,
            "layer_bytes": [shape.layer_bytes(i) for i in range(shape.num_layers)],
            "active_params_per_token": sum(x.active_params(shape.top_k) for x in shape.layers) + shape.head_params,
            "top_k": shape.top_k}  # fmt: skip


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def format_plan(plan: dict[str, Any], *, source: str = "") -> str:
    """The plan as the console shows it."""
    m, dev = plan["model"], plan["device"]
    sizes = m["layer_bytes"]
    model = (f"model: {m['model_type']}, {m['layers']} layers, {m['params'] / 1e9:.2f} B parameters "
             f"({m['active_params_per_token'] / 1e9:.2f} B active per token, top-{m['top_k']}){source}")
    weights = (f"weights: {m['weights_bytes'] / GB:.2f} GB at {m['dtype_bytes']} bytes/parameter; per layer "
               f"{min(sizes) / GB:.3f}-{max(sizes) / GB:.3f} GB; on disk {plan['disk_bytes'] / GB:.2f} GB")
    hardware = (f"device: {dev['name']}: {dev['memory_gb']:.1f} GB, {_figure(dev['bandwidth_gbs'])} GB/s, "
                f"{_figure(dev['tflops'])} TFLOPS, activations {_figure(dev['activation_gbs'])} GB/s, host link "
                f"{_figure(dev['host_gbs'])} GB/s ({dev['note']}); disk {_figure(plan['disk_gbs'])} GB/s")
    lines = [model, weights, hardware]
    for command, c in plan["commands"].items():
        w = c["workload"]
        lines += ["", (f"{command}: {w['samples']} x {w['seq_len']} tokens, {w['passes']} pass(es), batch "
                       f"{w['batch_size']}, {c['flops'] / 1e12:.1f} TFLOP ({w['note']})")]
        for mode, cost in c["modes"].items():
            fit = "fits" if cost["fits"] else "does not fit"
            lines.append(f"  {mode:<10} peak {cost['peak_bytes'] / GB:8.2f} GB  ~{_duration(cost['seconds']):>9}  "
                         f"{fit}  ({_parts(cost['parts'])})")
        rec = c["recommended"]
        if rec["mode"]:
            lines.append(f"  recommended: superexperts {command} MODEL {' '.join(rec['flags'])}".rstrip()
                         + f"   # {rec['reason']}")
        else:
            lines.append(f"  recommended: none: {rec['reason']}")
    lines += ["", ("Estimates: roofline time per layer and batch (max of weight bytes/bandwidth and FLOPs/peak, "
                   "plus activation bytes/activation bandwidth) from the device's figures (published peaks, or "
                   "--measure); on this project's CPU benchmark the estimate was within 2x of measured runs "
                   "(README). Peak memory includes the runtime.")]
    return "\n".join(lines)  # fmt: skip


def _figure(x: float) -> str:
    """3 significant digits without an exponent (measured figures have many)."""
    return f"{x:.0f}" if x >= 100 else f"{x:.3g}"


def _parts(parts: dict[str, float]) -> str:
    shown = []
    for k, v in parts.items():
        if k.endswith("_s"):
            shown.append(f"{k[:-2]} {_duration(v)}")
        elif v:
            shown.append(f"{k} {v / GB:.2f} GB")
    return ", ".join(shown)
