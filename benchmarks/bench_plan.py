"""`superexperts plan` against measured runs on this machine: peak RSS and wall time, estimate / measured.

    python benchmarks/bench_plan.py [--layers 6 --hidden 512 --experts 64 --samples 16 --seq-len 256]

Writes a random Qwen3-MoE checkpoint (float32, one shard per layer; bench_stream's writer), then in
fresh processes profiles it (a) in memory: from_pretrained + superexperts.profile, and (b) with layer
streaming: stream_profile, both with batch_size="auto" on the CPU, recording peak RSS (VmHWM) and
wall time (load included, imports excluded: reported apart). The plan gets this machine's figures,
measured as `plan --measure` does (superexperts.scale.plan_measure: RAM, fp32 GEMM TFLOPS, copy and
activation bandwidth at the thread count the runs use), and the read speed of the checkpoint files
(just written, so from the page cache). Prints the plan's estimates, the measurements and
their ratios. No figure is asserted; on a loaded machine the times are not representative.
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

sys.path.insert(0, str(Path(__file__).parent))
from bench_stream import write_synthetic

WORKDIR = Path(os.environ.get("SUPEREXPERTS_BENCH_DIR", "/tmp/superexperts-bench-plan"))  # checkpoints written here, kept


def peak_rss() -> int:
    """Peak resident bytes of this process. /proc's VmHWM on Linux: getrusage's ru_maxrss survives
    exec, so a child started by a large parent would report the parent's size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(mode: str, folder: str, samples: int, seq_len: int, threads: int) -> None:
    """Runs in a fresh process: one profile; prints peak RSS, RSS after imports, and the times."""
    started = time.perf_counter()
    from transformers import AutoConfig, AutoModelForCausalLM

    from superexperts import profile
    from superexperts.scale import stream_profile

    torch.set_num_threads(threads)
    ids = torch.randint(0, 1024, (samples, seq_len), generator=torch.Generator().manual_seed(0))
    config = AutoConfig.from_pretrained(folder)
    AutoModelForCausalLM._model_mapping[type(config)]  # imports the modeling module (1-3 s): an import, not loading
    imported_rss = peak_rss()
    start = time.perf_counter()
    if mode == "memory":
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        loaded = time.perf_counter()
        prof = profile(model, ids, batch_size="auto")
    else:
        loaded = start
        prof = stream_profile(folder, ids, batch_size="auto", dtype=torch.float32)
    end = time.perf_counter()
    print(json.dumps({"peak_rss": peak_rss(),
                      "rss_after_imports": imported_rss, "import_s": start - started, "load_s": loaded - start,
                      "seconds": end - start, "batch_size": prof.meta["batch_size"]}))  # fmt: skip


def measure(mode: str, folder: Path, samples: int, seq_len: int, threads: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "_child", mode, str(folder), str(samples), str(seq_len),
                          str(threads)], capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine(folder: Path, threads: int) -> dict:
    """This machine's figures for the plan (what `plan --measure` measures) and the checkpoint's read speed."""
    from superexperts.scale.plan_measure import measure_device, median_seconds

    torch.set_num_threads(threads)
    files = sorted(folder.glob("*.safetensors"))
    size = sum(f.stat().st_size for f in files)

    def read_all():
        for f in files:
            with open(f, "rb") as fh:
                while fh.read(64 << 20):
                    pass

    return measure_device("cpu", torch.float32) | {"disk_gbs": size / median_seconds(read_all, torch.device("cpu"), 3) / 1e9}


def main() -> None:
    if sys.argv[1:2] == ["_child"]:
        mode, folder, samples, seq_len, threads = sys.argv[2], sys.argv[3], *map(int, sys.argv[4:7])
        return child(mode, folder, samples, seq_len, threads)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--experts", type=int, default=64)
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()

    from superexperts.scale.devices import device
    from superexperts.scale.plan import make_plan, workload
    from superexperts.scale.plan_model import load_plan_model

    dims = {"hidden_size": args.hidden, "moe_intermediate_size": args.hidden // 2, "intermediate_size": 2 * args.hidden,
            "num_experts": args.experts, "num_experts_per_tok": 8, "num_hidden_layers": args.layers,
            "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": args.hidden // 8, "vocab_size": 8192,
            "max_position_embeddings": 4096, "tie_word_embeddings": False}  # fmt: skip
    name = "-".join(f"{v}" for v in (args.layers, args.hidden, args.experts))
    folder = write_synthetic(WORKDIR / name, dims, dtype=torch.float32)
    figures = machine(folder, args.threads)
    pm = load_plan_model(str(folder), dtype="float32", device_kind="cpu")
    dev = device("cpu", memory_gb=figures["memory_gb"], bandwidth_gbs=figures["bandwidth_gbs"],
                 tflops=figures["tflops"], activation_gbs=figures["activation_gbs"])  # fmt: skip
    plan = make_plan(pm.shape, dev, [workload("profile", samples=args.samples, seq_len=args.seq_len)],
                     disk_bytes=pm.disk_bytes, disk_gbs=figures["disk_gbs"])  # fmt: skip
    modes = plan["commands"]["profile"]["modes"]
    result = {"setup": vars(args) | {"checkpoint_MB": pm.disk_bytes / 1e6}, "machine": figures,
              "plan_batch_size": plan["commands"]["profile"]["workload"]["batch_size"]}  # fmt: skip
    for mode, key in (("memory", "in-memory"), ("stream", "stream")):
        measured = measure(mode, folder, args.samples, args.seq_len, args.threads)
        estimate = modes[key]
        result[key] = {
            "estimated_peak_MB": estimate["peak_bytes"] / 1e6, "measured_peak_rss_MB": measured["peak_rss"] / 1e6,
            "peak_estimate_over_measured": estimate["peak_bytes"] / measured["peak_rss"],
            "estimated_s": estimate["seconds"], "measured_s": measured["seconds"],
            "time_estimate_over_measured": estimate["seconds"] / measured["seconds"],
            "measured_batch_size": measured["batch_size"], "measured_import_s": measured["import_s"],
            "measured_load_s": measured["load_s"], "measured_profile_s": measured["seconds"] - measured["load_s"],
            "measured_rss_after_imports_MB": measured["rss_after_imports"] / 1e6,
            "estimated_parts": {k: round(v / 1e6 if not k.endswith("_s") else v, 3) for k, v in estimate["parts"].items()},
        }  # fmt: skip
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
