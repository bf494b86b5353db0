"""The hardware table of `superexperts plan`: published peak figures per device, and one entry by
name with any figure overridden. Pure data, no torch: `plan --help` lists it in a fraction of a second."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from ..runs.errors import UserError, did_you_mean

# What --device means in the other subcommands (torch device strings); plan's --hardware is not one.
TORCH_DEVICE = re.compile(r"(auto|cpu|cuda|mps|xpu|npu|hpu|meta)(:\d+)?")


@dataclass(frozen=True)
class Device:
    """Published peak figures (dense bf16 tensor FLOPS on GPUs), or this machine's (`plan_measure`).
    `activation_gbs`: bytes/s of an elementwise op writing a new tensor (on GPUs the caching
    allocator makes it the memory bandwidth); `host_gbs` is the link to host memory."""

    name: str
    kind: str  # cpu | cuda | mps
    memory_gb: float
    bandwidth_gbs: float
    tflops: float
    host_gbs: float
    activation_gbs: float
    note: str = ""


DEVICES = {
    "cpu": Device("cpu", "cpu", 64, 50, 1.0, 2.0, 10, "nominal 16-core CPU, fp32; activation passes at 1/5 "
                  "of the copy bandwidth (measured ratio); memory = this machine's RAM unless --memory; "
                  "offload goes to disk (host_gbs = disk); --measure for this machine's figures"),
    "a100-40gb": Device("a100-40gb", "cuda", 40, 1555, 312, 25, 1555, "SXM; PCIe 4.0 x16"),
    "a100-80gb": Device("a100-80gb", "cuda", 80, 2039, 312, 25, 2039, "SXM; PCIe 4.0 x16"),
    "h100-80gb": Device("h100-80gb", "cuda", 80, 3350, 989, 50, 3350, "SXM; PCIe 5.0 x16"),
    "h200": Device("h200", "cuda", 141, 4800, 989, 50, 4800, "SXM; PCIe 5.0 x16"),
    "l40s": Device("l40s", "cuda", 48, 864, 362, 25, 864, "PCIe 4.0 x16"),
    "rtx-4090": Device("rtx-4090", "cuda", 24, 1008, 165, 25, 1008, "bf16 with fp32 accumulate; PCIe 4.0 x16"),
}  # fmt: skip


def device(name: str, *, memory_gb: float | None = None, bandwidth_gbs: float | None = None,
           tflops: float | None = None, activation_gbs: float | None = None) -> Device:  # fmt: skip
    """A table entry by name, with any figure overridden (--memory, --bandwidth, --tflops,
    --activation-bandwidth)."""
    key = name.strip().lower()
    if key not in DEVICES:
        if TORCH_DEVICE.fullmatch(key):  # `--device cuda` as in the other subcommands: say what plan takes
            raise UserError(f"--hardware {name!r} is a torch device; plan takes a hardware profile name: "
                            f"{', '.join(DEVICES)}; or give --memory, --bandwidth and --tflops.")  # fmt: skip
        raise UserError(f"unknown --hardware {name!r}. {did_you_mean(key, list(DEVICES))}"
                        f"Known: {', '.join(DEVICES)}; or give --memory, --bandwidth and --tflops.")  # fmt: skip
    for flag, value in (("--memory", memory_gb), ("--bandwidth", bandwidth_gbs), ("--tflops", tflops),
                        ("--activation-bandwidth", activation_gbs)):  # fmt: skip
        if value is not None and not (value > 0 and math.isfinite(value)):  # inf would plan "0.0 s"
            raise UserError(f"{flag} must be a finite positive number, got {value}.")
    base = DEVICES[key]
    return replace(base, memory_gb=memory_gb or base.memory_gb, bandwidth_gbs=bandwidth_gbs or base.bandwidth_gbs,
                   tflops=tflops or base.tflops, activation_gbs=activation_gbs or base.activation_gbs)  # fmt: skip
