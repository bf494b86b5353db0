"""This machine's figures for `superexperts plan --measure`: a few seconds of microbenchmarks.

- tflops: a square matrix product at the compute dtype (1024 on a CPU, 4096 on an accelerator);
- bandwidth_gbs: a copy into an existing tensor (bytes read + written per second), what reading
  resident weights costs;
- activation_gbs: an elementwise product into a new tensor, as eager PyTorch runs the activation
  passes. On a CPU every new large output is first touched page by page: 5.3 GB/s against a
  25-28 GB/s copy on the 2-core benchmark machine;
- memory_gb: total RAM on a CPU, the device's total memory on a GPU.

Each figure is the median of 5 timed runs after a warm-up, at torch's current thread count; on a
busy machine they read low (and the plan's times high).

    >>> measure_device("cpu", torch.float32)
    {'tflops': 0.18, 'bandwidth_gbs': 25.1, 'activation_gbs': 5.3, 'memory_gb': 25.3}
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from ..runs.errors import UserError

SIZES = {"cpu": (1024, 1 << 24), "cuda": (4096, 1 << 26), "mps": (4096, 1 << 26)}  # matmul n, elementwise numel


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def median_seconds(fn: Callable[[], object], device: torch.device, repeats: int = 5) -> float:
    fn()
    _sync(device)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def _memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory / 1e9
    from ..capture.batching import total_ram

    return total_ram() / 1e9  # CPU; MPS shares the host's memory


def check_measurable(kind: str) -> torch.device:
    """The local device of `kind`, or a one-line error when this machine has none."""
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available.get(kind, False):
        raise UserError(f"--measure measures this machine, which has no {kind} device; drop --measure "
                        "(the table's figures) or plan for --hardware cpu.")  # fmt: skip
    return torch.device(kind)


def measure_device(kind: str, dtype: torch.dtype) -> dict[str, float]:
    """TFLOPS at `dtype`, copy and activation bandwidth (GB/s), memory (GB) of this machine's `kind` device."""
    device = check_measurable(kind)
    n, numel = SIZES[device.type]
    return {"tflops": _matmul_tflops(n, dtype, device), **_bandwidths(numel, dtype, device),
            "memory_gb": _memory_gb(device)}  # fmt: skip


def _matmul_tflops(n: int, dtype: torch.dtype, device: torch.device) -> float:
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    return 2 * n**3 / median_seconds(lambda: a @ b, device) / 1e12


def _bandwidths(numel: int, dtype: torch.dtype, device: torch.device) -> dict[str, float]:
    src = torch.randn(numel, device=device).to(dtype)
    dst = torch.empty_like(src)
    moved = 2 * numel * src.element_size()  # read + written
    return {"bandwidth_gbs": moved / median_seconds(lambda: dst.copy_(src), device) / 1e9,
            "activation_gbs": moved / median_seconds(lambda: src * 1.0001, device) / 1e9}  # a new output each time
