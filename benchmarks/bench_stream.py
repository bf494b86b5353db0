"""Layer streaming benchmarks (issue 6): peak memory vs checkpoint size, throughput vs in-memory.

    python benchmarks/bench_stream.py memory      # (a) peak RSS, synthetic ~1.7 GB checkpoint; bf16 growth per layer byte
    python benchmarks/bench_stream.py throughput  # (b) streaming vs in-memory tokens/s
    python benchmarks/bench_stream.py fp8         # (d) block-wise FP8 checkpoints: (b) and peak RSS per layer byte
    python benchmarks/bench_stream.py sinks       # (e) peak RSS of sinks --stream vs in-memory sinks
    python benchmarks/bench_stream.py budget      # (f) sinks and prune-eval perplexity streamed under a data
                                                  #     limit (RLIMIT_DATA) of half the checkpoint + 64 MB
    python benchmarks/bench_stream.py all
    python benchmarks/bench_stream.py fp8 --quick # small settings: check that it runs (also sinks)

The synthetic checkpoint is a random Qwen3-MoE written layer by layer in the hub per-expert
layout (keys produced by transformers' own `revert_weight_conversion`), so it never exists in
memory as a whole. Memory is measured in a fresh subprocess: peak RSS (getrusage) minus the RSS
after imports, against the largest decoder layer plus all calibration hidden states.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

WORKDIR = Path(os.environ.get("SUPEREXPERTS_BENCH_DIR", "/tmp/superexperts-bench"))  # checkpoints written here, kept
BIG = {"hidden_size": 1024, "moe_intermediate_size": 512, "intermediate_size": 2048, "num_experts": 64,
       "num_experts_per_tok": 4, "num_hidden_layers": 8, "num_attention_heads": 8, "num_key_value_heads": 4,
       "head_dim": 128, "vocab_size": 4096, "max_position_embeddings": 4096, "tie_word_embeddings": False}
SMALL = BIG | {"hidden_size": 256, "moe_intermediate_size": 128, "num_experts": 32, "num_hidden_layers": 6,
               "head_dim": 32, "vocab_size": 2048}


def write_synthetic(folder: Path, dims: dict, dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> Path:
    """A random Qwen3-MoE checkpoint, one shard per decoder layer, hub per-expert keys."""
    from accelerate import init_empty_weights
    from safetensors.torch import save_file
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM
    from transformers.core_model_loading import revert_weight_conversion

    if (folder / "model.safetensors.index.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    config = Qwen3MoeConfig(**dims, dtype=str(dtype).removeprefix("torch."))
    with init_empty_weights():
        model = Qwen3MoeForCausalLM(config)
    torch.manual_seed(seed)
    parts = [(f"model.layers.{i}.", layer) for i, layer in enumerate(model.model.layers)]
    parts += [("model.embed_tokens.", model.model.embed_tokens), ("model.norm.", model.model.norm),
              ("lm_head.", model.lm_head)]  # fmt: skip
    weight_map = {}
    for n, (prefix, module) in enumerate(parts):
        module.to_empty(device="cpu")
        state = {}
        for name, p in module.named_parameters():
            scale = 0.3 if "experts" in name or "gate" in name else 0.02
            state[prefix + name] = torch.ones_like(p) if "norm" in name else torch.randn(p.shape) * scale
        state = {k: v.to(dtype).contiguous() for k, v in revert_weight_conversion(model, state).items()}
        shard = f"model-{n:05d}-of-{len(parts):05d}.safetensors"
        save_file(state, folder / shard, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(state, shard))
        module.to("meta")
        del state
    config.save_pretrained(folder)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _peak_rss() -> int:
    """This process's peak RSS. VmHWM belongs to the process image: getrusage's ru_maxrss also keeps
    the parent's RSS at spawn time across fork/exec (a 1 GB parent made an 8 MB child report 1.2 GB)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):  # not Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def child_memory(folder: str, samples: int, seq_len: int, batch_size: int) -> None:
    """Runs in a fresh process: prints RSS before the first layer loads and the peak RSS."""
    from superexperts.scale import layerwise

    torch.set_num_threads(2)
    ids = torch.randint(0, 2048, (samples, seq_len), generator=torch.Generator().manual_seed(0))
    before_layers: list[int] = []
    load_peaks: list[int] = []
    real_load = layerwise.load_layer

    def load_layer(*args, **kwargs):  # benchmark instrumentation: fixed costs end where layers start
        if not before_layers:
            before_layers.append(_rss())
        real_load(*args, **kwargs)
        if not load_peaks:  # peak while loading (converting) the first layer, before any compute
            load_peaks.append(_peak_rss())

    workspace: list[int] = []
    real_run = layerwise.run_layer

    def run_layer(*args):  # what the first forward keeps (thread pools, kernel caches): paid once
        before = _rss()
        out = real_run(*args)
        if not workspace:
            workspace.append(_rss() - before)
        return out

    layerwise.load_layer, layerwise.run_layer = load_layer, run_layer
    start = time.perf_counter()
    prof = layerwise.stream_profile(folder, ids, batch_size=batch_size, dtype=torch.bfloat16)
    peak = _peak_rss()
    print(json.dumps({"baseline": before_layers[0], "peak": peak, "load_peak": load_peaks[0], "workspace": workspace[0], "seconds": time.perf_counter() - start,
                      "layers": prof.meta["num_layers"]}))  # fmt: skip


def layer_bytes(folder: Path) -> tuple[int, int]:
    """(checkpoint bytes, largest decoder layer's bytes) from the shard headers."""
    from superexperts.models.checkpoints.files import read_tensor_index

    tensors = read_tensor_index(folder)
    per_layer: dict[str, int] = {}
    for key, info in tensors.items():
        if ".layers." in key:
            layer = key.split(".layers.")[1].split(".")[0]
            per_layer[layer] = per_layer.get(layer, 0) + info.end - info.start
    total = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    return total, max(per_layer.values())


def _measure(folder: Path, samples: int, seq_len: int, batch_size: int, env: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "_child", str(folder), str(samples), str(seq_len),
                          str(batch_size)], capture_output=True, text=True, check=True,
                         env=os.environ | env)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_memory(samples: int = 8, seq_len: int = 128, batch_size: int = 4) -> dict:
    """Peak RSS of streaming, with glibc's default malloc and with a 64 KiB mmap threshold
    (MALLOC_MMAP_THRESHOLD_, which makes freed tensors go straight back to the OS); then the
    same model with twice the layers, to show the peak does not grow with the checkpoint."""
    folder = write_synthetic(WORKDIR / "big", BIG)
    total, largest = layer_bytes(folder)
    activations = samples * seq_len * BIG["hidden_size"] * 2  # bf16 hidden states of all batches
    budget = largest + activations
    result = {"checkpoint_GB": total / 1e9, "largest_layer_MB": largest / 1e6, "activations_MB": activations / 1e6,
              "checkpoint_over_budget": total / budget}  # fmt: skip
    for name, env in (("default_malloc", {}), ("mmap_threshold_64k", {"MALLOC_MMAP_THRESHOLD_": "65536"})):
        r = _measure(folder, samples, seq_len, batch_size, env)
        result |= {f"{name}_rss_before_layers_MB": r["baseline"] / 1e6, f"{name}_peak_rss_MB": r["peak"] / 1e6,
                   f"{name}_peak_minus_before_over_budget": (r["peak"] - r["baseline"]) / budget,
                   f"{name}_first_load_peak_minus_before_over_layer": (r["load_peak"] - r["baseline"]) / largest,
                   f"{name}_first_forward_workspace_MB": r["workspace"] / 1e6,
                   f"{name}_peak_minus_before_and_workspace_over_budget":
                       (r["peak"] - r["baseline"] - r["workspace"]) / budget,
                   f"{name}_peak_over_checkpoint": r["peak"] / total, f"{name}_seconds": r["seconds"]}  # fmt: skip
    folders = [write_synthetic(WORKDIR / f"big-e{e}", BIG | {"num_experts": e}) for e in (32, 96)]
    result |= {f"bf16_{k}": v for k, v in peak_growth(folders, lambda f: layer_bytes(f)[1]).items()}
    double = write_synthetic(WORKDIR / "big16", BIG | {"num_hidden_layers": 16})
    r = _measure(double, samples, seq_len, batch_size, {})
    result |= {"double_checkpoint_GB": layer_bytes(double)[0] / 1e9, "double_default_malloc_peak_rss_MB": r["peak"] / 1e6,
               "double_peak_minus_before_and_workspace_over_budget": (r["peak"] - r["baseline"] - r["workspace"]) / budget}
    print("(a) memory:", json.dumps({k: round(v, 3) for k, v in result.items()}, indent=1))
    return result


def bench_throughput(samples: int = 64, seq_len: int = 256, batch_size: int = 8) -> dict:
    from transformers import AutoModelForCausalLM

    from superexperts.capture.profile import profile
    from superexperts.scale import stream_profile

    folder = write_synthetic(WORKDIR / "small", SMALL, dtype=torch.float32)
    ids = torch.randint(0, 2048, (samples, seq_len), generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    loaded = time.perf_counter()
    profile(model, ids, batch_size=batch_size)
    in_memory = time.perf_counter()
    stream_profile(folder, ids, batch_size=batch_size, dtype=torch.float32)
    streamed = time.perf_counter()
    tokens = ids.numel()
    result = {"tokens": tokens, "load_s": loaded - start, "in_memory_profile_s": in_memory - loaded,
              "stream_s": streamed - in_memory,
              "stream_over_in_memory_throughput": (in_memory - loaded) / (streamed - in_memory),
              "stream_over_load_plus_profile_throughput": (in_memory - start) / (streamed - in_memory)}  # fmt: skip
    print("(b) throughput:", json.dumps({k: round(v, 3) for k, v in result.items()}))
    return result


def dequantized_layer_bytes(folder: Path, element_size: int = 2) -> int:
    """Bytes of the largest decoder layer once dequantized (scales dropped, every value in a
    2-byte dtype): what a streamed FP8/MXFP4 layer occupies in memory."""
    from superexperts.models.checkpoints.files import read_tensor_index
    from superexperts.models.checkpoints.formats import dequantized_sizes

    per_layer: dict[str, int] = {}
    for key, size in dequantized_sizes(read_tensor_index(folder), element_size).items():
        if ".layers." in key:
            layer = key.split(".layers.")[1].split(".")[0]
            per_layer[layer] = per_layer.get(layer, 0) + size
    return max(per_layer.values())


def fp8_checkpoint(dims: dict, name: str) -> Path:
    """The synthetic checkpoint of `dims` and its block-wise FP8 copy (the copy is returned)."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
    from quantized_checkpoints import fp8_copy

    target = WORKDIR / f"{name}-fp8"
    if not (target / "model.safetensors.index.json").is_file():
        fp8_copy(write_synthetic(WORKDIR / name, dims), target)
    return target


def bench_fp8(quick: bool = False) -> dict:
    """(d) FP8 streaming: throughput vs loading (transformers, dequantize=True) and profiling in
    memory, load included; peak RSS growth per byte of dequantized decoder layer, from two
    checkpoints that differ only in their expert count (the difference cancels fixed costs)."""
    from transformers import AutoModelForCausalLM, FineGrainedFP8Config

    from superexperts.capture.profile import profile
    from superexperts.scale import stream_profile

    dims = SMALL | ({"num_hidden_layers": 2, "num_experts": 8} if quick else {})
    samples, seq_len, batch_size = (4, 64, 2) if quick else (64, 256, 8)
    folder = fp8_checkpoint(dims, "fp8src-small" + ("-quick" if quick else ""))
    ids = torch.randint(0, 2048, (samples, seq_len), generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32,
                                                 quantization_config=FineGrainedFP8Config(dequantize=True)).eval()  # fmt: skip
    loaded = time.perf_counter()
    profile(model, ids, batch_size=batch_size)
    in_memory = time.perf_counter()
    del model
    stream_profile(folder, ids, batch_size=batch_size, dtype=torch.float32)
    streamed = time.perf_counter()
    result = {"tokens": ids.numel(), "load_s": loaded - start, "in_memory_profile_s": in_memory - loaded,
              "stream_s": streamed - in_memory,
              "stream_over_load_plus_profile_throughput": (in_memory - start) / (streamed - in_memory)}  # fmt: skip
    big = BIG | ({"hidden_size": 256, "moe_intermediate_size": 128, "num_hidden_layers": 2} if quick else {})
    folders = [fp8_checkpoint(big | {"num_experts": e}, f"fp8src-e{e}" + ("-quick" if quick else "")) for e in (32, 96)]
    result |= {f"e{e}_fp8_layer_MB": layer_bytes(f)[1] / 1e6 for e, f in zip((32, 96), folders)}
    result |= peak_growth(folders, dequantized_layer_bytes, quick)
    print("(d) fp8:", json.dumps({k: round(v, 3) for k, v in result.items()}, indent=1))
    return result


def peak_growth(folders: list[Path], layer_size, quick: bool = False) -> dict:
    """Peak RSS of streaming two checkpoints that differ only in their expert count (32, 96): MB of
    peak per MB of decoder layer (`layer_size` bytes, as held in memory) and the fixed cost."""
    peaks, layers, result = [], [], {}
    for experts, folder in zip((32, 96), folders):
        r = _measure(folder, 4 if quick else 8, 64 if quick else 128, batch_size=4 if not quick else 2, env={})
        peaks.append(r["peak"])
        layers.append(layer_size(folder))
        result |= {f"e{experts}_layer_MB": layers[-1] / 1e6, f"e{experts}_peak_rss_MB": r["peak"] / 1e6,
                   f"e{experts}_workspace_MB": r["workspace"] / 1e6}  # fmt: skip
    slope = (peaks[1] - peaks[0]) / (layers[1] - layers[0])
    return result | {"peak_growth_MB_per_layer_MB": slope, "fixed_cost_MB": (peaks[0] - slope * layers[0]) / 1e6}


SINK_CONDITIONS = {"super": [(1, 3)], "random-0": [(0, 5)]}  # a pruned set and a control: D_sink per condition


def child_sinks(folder: str, how: str, samples: int, seq_len: int) -> None:
    """Runs in a fresh process: the sink metrics of `folder` streamed or loaded whole; prints peak RSS."""
    from transformers import AutoModelForCausalLM

    from superexperts.evaluate.sinks.measure import measure_sinks
    from superexperts.scale.sinks import stream_sinks

    torch.set_num_threads(2)
    ids = torch.randint(0, 2048, (samples, seq_len), generator=torch.Generator().manual_seed(0))
    baseline = _rss()  # after the imports: the same fixed cost for both
    start = time.perf_counter()
    if how == "stream":
        result, _ = stream_sinks(folder, ids, SINK_CONDITIONS, dtype=torch.bfloat16)
    else:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
        result = measure_sinks(model, ids, SINK_CONDITIONS)
    print(json.dumps({"baseline": baseline, "peak": _peak_rss(), "seconds": time.perf_counter() - start,
                      "sink_mass": result["original"].sink_mass}))  # fmt: skip


def bench_sinks(quick: bool = False) -> dict:
    """(e) `sinks --stream` (stream.sinks.stream_sinks, what the CLI runs) against in-memory sinks:
    peak RSS over the checkpoint size, and the same sink mass from both."""
    dims = SMALL | {"num_hidden_layers": 2, "num_experts": 8} if quick else BIG
    samples, seq_len = (2, 32) if quick else (4, 512)
    folder = write_synthetic(WORKDIR / ("sinks-quick" if quick else "big"), dims)
    total, largest = layer_bytes(folder)
    result: dict = {"checkpoint_GB": total / 1e9, "largest_layer_MB": largest / 1e6}
    runs = {}
    for how in ("stream", "memory"):
        out = subprocess.run([sys.executable, __file__, "_sinks_child", str(folder), how, str(samples), str(seq_len)],
                             capture_output=True, text=True, check=True, env=dict(os.environ))  # fmt: skip
        runs[how] = r = json.loads(out.stdout.strip().splitlines()[-1])
        result |= {f"{how}_peak_rss_MB": r["peak"] / 1e6, f"{how}_peak_minus_imports_over_checkpoint":
                   (r["peak"] - r["baseline"]) / total, f"{how}_seconds": r["seconds"]}  # fmt: skip
    result["stream_over_memory_peak"] = runs["stream"]["peak"] / runs["memory"]["peak"]
    result["max_sink_mass_difference"] = max(abs(a - b) for a, b in zip(runs["stream"]["sink_mass"],
                                                                       runs["memory"]["sink_mass"]))  # fmt: skip
    print("(e) sinks:", json.dumps({k: round(v, 4) for k, v in result.items()}, indent=1))
    return result


def _vm_data() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmData:"))


def child_budget(folder: str, what: str, how: str, budget: int, samples: int, seq_len: int) -> None:
    """Runs in a fresh process under RLIMIT_DATA = (data after imports) + `budget` bytes: heap and
    anonymous memory count, the read-only mmap of the safetensors shards does not (Linux >= 4.7), so
    the limit is the memory the run may hold, not the file it reads. Prints peak RSS or the failure."""
    from transformers import AutoModelForCausalLM

    from superexperts.evaluate.perplexity import perplexity
    from superexperts.evaluate.sinks.measure import measure_sinks
    from superexperts.scale.scoring import stream_perplexity
    from superexperts.scale.sinks import stream_sinks

    torch.set_num_threads(2)
    ids = torch.randint(0, 2048, (samples, seq_len), generator=torch.Generator().manual_seed(0))
    limit = _vm_data() + budget
    resource.setrlimit(resource.RLIMIT_DATA, (limit, resource.getrlimit(resource.RLIMIT_DATA)[1]))
    start = time.perf_counter()
    try:
        if how == "stream" and what == "sinks":
            value = stream_sinks(folder, ids, SINK_CONDITIONS, dtype=torch.bfloat16)[0].conditions[0].sink_mass
        elif how == "stream":
            value = stream_perplexity(folder, ids.reshape(-1), experts=[(1, 3)], seq_len=seq_len,
                                      dtype=torch.bfloat16)["perplexity"]  # fmt: skip
        else:
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
            if what == "sinks":
                value = measure_sinks(model, ids, SINK_CONDITIONS).conditions[0].sink_mass
            else:
                from superexperts.evaluate.ablate import ablate

                with ablate(model, [(1, 3)]):
                    value = perplexity(model, ids.reshape(-1), seq_len=seq_len)["perplexity"]
        outcome = "ok"
    except (MemoryError, RuntimeError, OSError) as e:  # torch reports a failed allocation as RuntimeError
        value, outcome = None, f"failed: {type(e).__name__}: {str(e).splitlines()[0][:80]}"
    print(json.dumps({"outcome": outcome, "peak": _peak_rss(), "seconds": time.perf_counter() - start,
                      "value": value}))  # fmt: skip


FIXED_ALLOWANCE = 64 * 2**20  # lazy imports, thread pools, allocator arenas: paid once, whatever the model


def bench_budget(quick: bool = False) -> dict:
    """(f) issue 10: `sinks --stream` and `prune-eval --stream` (perplexity with an expert pruned) on a
    checkpoint larger than the memory they are given; the in-memory run under the same limit fails."""
    dims = SMALL | {"num_hidden_layers": 2, "num_experts": 8} if quick else BIG
    samples, seq_len = (2, 32) if quick else (4, 512)
    folder = write_synthetic(WORKDIR / ("sinks-quick" if quick else "big"), dims)
    total, largest = layer_bytes(folder)
    budget = total // 2 + FIXED_ALLOWANCE
    result: dict = {"checkpoint_MB": total / 1e6, "largest_layer_MB": largest / 1e6, "budget_MB": budget / 1e6}
    for what in ("sinks", "prune-eval"):
        for how in ("stream", "memory"):
            argv = [sys.executable, __file__, "_budget_child", str(folder), what, how, str(budget), str(samples),
                    str(seq_len)]  # fmt: skip
            out = subprocess.run(argv, check=False, capture_output=True, text=True, env=dict(os.environ))
            lines = out.stdout.strip().splitlines()
            r = json.loads(lines[-1]) if lines else {"outcome": f"failed: exit {out.returncode}", "peak": 0}
            result[f"{what} {how}"] = r["outcome"]
            if r["outcome"] == "ok":
                result[f"{what} {how} peak_rss_MB"] = r["peak"] / 1e6
                result[f"{what} {how} seconds"] = r["seconds"]
    print("(f) budget:", json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()},
                                    indent=1))  # fmt: skip
    return result


def main() -> None:
    if sys.argv[1:2] == ["_child"]:
        folder, samples, seq_len, batch_size = sys.argv[2], *map(int, sys.argv[3:6])
        return child_memory(folder, samples, seq_len, batch_size)
    if sys.argv[1:2] == ["_budget_child"]:
        return child_budget(*sys.argv[2:5], *map(int, sys.argv[5:8]))
    if sys.argv[1:2] == ["_sinks_child"]:
        return child_sinks(sys.argv[2], sys.argv[3], *map(int, sys.argv[4:6]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["memory", "throughput", "fp8", "sinks", "budget", "all"])
    parser.add_argument("--quick", action="store_true", help="fp8, sinks, budget: tiny settings, to check the benchmark runs")
    args = parser.parse_args()
    if args.what in ("memory", "all"):
        bench_memory()
    if args.what in ("throughput", "all"):
        bench_throughput()
    if args.what in ("fp8", "all"):
        bench_fp8(quick=args.quick)
    if args.what in ("sinks", "all"):
        bench_sinks(quick=args.quick)
    if args.what in ("budget", "all"):
        bench_budget(quick=args.quick)


if __name__ == "__main__":
    main()
