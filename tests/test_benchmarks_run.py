"""The README's benchmark commands still run: each script, at tiny settings, prints the figures the
README quotes. (What they measure is only meaningful on a quiet machine at full size; nothing here
is timed.)"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
pytestmark = pytest.mark.slow


def run(script: str, *args: str, workdir: Path) -> str:
    env = os.environ | {"SUPEREXPERTS_BENCH_DIR": str(workdir), "PYTHONPATH": str(BENCHMARKS.parent / "src")}
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], check=False, capture_output=True, text=True,
                          env=env, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def positive(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_bench_profile(tmp_path):
    out = run("bench_profile.py", "--layers", "2", "--experts", "4", "--top-k", "2", "--hidden", "32",
              "--moe-intermediate", "16", "--tokens", "8", "--samples", "2", "--batch", "2", "--repeats", "1",
              "--sweep", "1,auto", "--heapr", "--keep-freed-memory", workdir=tmp_path)  # fmt: skip
    result = json.loads(out[out.index("{"):])
    assert result["setup"]["keep_freed_memory"] is True
    pieces = ("experts_fn", "expert_tracker", "atom_tracker", "profile_no_atoms", "profile", "heapr")
    assert all(positive(result["pieces"][v]["over_plain"]) for v in pieces)
    assert positive(result["batch_sweep"]["auto_over_best"])


def test_bench_atoms(tmp_path):
    out = run("bench_atoms.py", "--layers", "2", "--experts", "4", "--top-k", "2", "--hidden", "32",
              "--moe-intermediate", "16", "--tokens", "8", "--batch", "2", "--repeats", "1", workdir=tmp_path)  # fmt: skip
    result = json.loads(out)
    assert result["setup"]["rows"] == 2 * 8 * 2 and result["setup"]["width"] == 16  # batch x tokens x top-k rows
    assert all(positive(result[k]["median_ms"]) for k in ("first", "steady")) and positive(result["layer_forward_ms"])


def test_bench_plan(tmp_path):
    out = run("bench_plan.py", "--layers", "1", "--hidden", "64", "--experts", "8", "--samples", "2", "--seq-len",
              "16", workdir=tmp_path)  # fmt: skip
    result = json.loads(out)
    assert set(result["machine"]) == {"tflops", "bandwidth_gbs", "activation_gbs", "memory_gb", "disk_gbs"}
    for mode in ("in-memory", "stream"):
        assert positive(result[mode]["peak_estimate_over_measured"])
        assert positive(result[mode]["time_estimate_over_measured"])
    assert any(tmp_path.iterdir())  # the checkpoint went where it was told


def test_bench_stream_fp8_quick(tmp_path):
    out = run("bench_stream.py", "fp8", "--quick", workdir=tmp_path)
    result = json.loads(out[out.index("{"):])
    assert positive(result["stream_over_load_plus_profile_throughput"])
    assert positive(result["peak_growth_MB_per_layer_MB"])


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("bench_*.py")))
def test_every_benchmark_answers_help_and_writes_nothing(script, tmp_path):
    out = run(script, "--help", workdir=tmp_path / "bench")
    assert "usage:" in out and not (tmp_path / "bench").exists()
