"""`--device-map auto|balanced|balanced_low_0|FILE`: accelerate's placement of a model over devices.

A FILE is JSON mapping module names of the model (e.g. "model.layers.3") to a device: "cpu",
"cuda:N" (or N), "mps", or "disk" (offloaded to a folder and loaded on use). It is checked on
its own when the request is built, and against the model's structure (built on the meta device
from config.json) before any weight is read: every name must be a module, every parameter
covered.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..runs.errors import UserError

NAMED = ("auto", "balanced", "balanced_low_0")
OFFLOADED = ("cpu", "disk")  # what accelerate keeps off the execution device when a GPU is in the map
EXECUTION_ATTR = "_superexperts_execution_device"
Index = int | list[int] | slice  # one dim of `edit_parameter`'s index


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f"--device {device!r} is not a device; use auto, cpu, cuda, cuda:1 or mps.")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available here; use --device cpu or auto.")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                        f"(cuda:0..cuda:{torch.cuda.device_count() - 1}); pick one of them or auto.")  # fmt: skip
    mps = getattr(torch.backends, "mps", None)
    if dev.type == "mps" and not (mps is not None and mps.is_available()):
        raise UserError(f"--device {device}: Apple MPS is not available here; use --device cpu or auto.")
    return dev

def _device(value: Any, spec: str) -> str | int:
    """One map value, checked: "disk", an int (CUDA index) or a device this machine has."""

    if value == "disk":
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        resolve_device(f"cuda:{value}")
        return value
    if not isinstance(value, str) or value in ("meta", "auto"):
        raise UserError(f"--device-map {spec}: {value!r} is not a device; use cpu, cuda:N, mps or disk.")
    try:
        resolve_device(value)
    except UserError as e:
        raise UserError(f"--device-map {spec}: {value!r}: {e}") from None
    return value


def read_device_map(spec: str) -> str | dict[str, str | int]:
    """A named strategy, or the FILE's {module: device} with every device checked."""
    if spec in NAMED:
        return spec
    path = Path(spec).expanduser()
    if not path.is_file():
        raise UserError(f"--device-map {spec}: not {', '.join(NAMED)} nor a JSON file; pass auto, balanced "
                        "or a file mapping module names to devices.")  # fmt: skip
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"--device-map {spec}: not valid JSON ({e}); write {{\"model.layers.0\": \"cpu\", ...}}.")
    if not isinstance(mapping, dict) or not mapping or not all(isinstance(k, str) for k in mapping):
        raise UserError(f"--device-map {spec}: expected a JSON object of module name -> device, "
                        "e.g. {\"model.layers.0\": \"cpu\", \"model.layers.1\": \"disk\"}.")  # fmt: skip
    return {name: _device(value, spec) for name, value in mapping.items()}


def check_device_args(device: str, device_map: str | None) -> None:
    """Request-time check: the map reads, and --device is not given with it."""
    if device_map is None:
        return
    if device != "auto":
        raise UserError(f"--device {device} and --device-map {device_map} both place the model; give one of them.")
    read_device_map(device_map)


def check_covers(mapping: dict[str, str | int], skeleton: nn.Module, spec: str) -> None:
    """Every name a module of the model, every parameter under one of them (before loading)."""
    modules = dict(skeleton.named_modules())
    unknown = [name for name in mapping if name not in modules]
    if unknown:
        layers = next((n for n, m in modules.items() if isinstance(m, nn.ModuleList)), "model.layers")
        raise UserError(f"--device-map {spec}: {', '.join(unknown[:3])} {'is' if len(unknown) == 1 else 'are'} not "
                        f"module(s) of this model; use names such as {layers}.0 or lm_head.")  # fmt: skip
    if "" in mapping:
        return
    for name, _ in skeleton.named_parameters():
        if not any(name == m or name.startswith(m + ".") for m in mapping):
            owner = name.rpartition(".")[0]
            raise UserError(f"--device-map {spec}: no device for {owner} (parameter {name}); map it or a "
                            "module that contains it.")  # fmt: skip


def main_device(mapping: str | dict[str, str | int]) -> torch.device:
    """Where computation runs: the first accelerator in the map, else the CPU (accelerate's rule)."""

    if isinstance(mapping, str):
        return resolve_device("auto")
    for value in mapping.values():
        if value not in OFFLOADED:
            return torch.device(f"cuda:{value}" if isinstance(value, int) else value)
    return torch.device("cpu")


def mark_execution_devices(model: nn.Module) -> None:
    """Tag every submodule of an accelerate-hooked module with the device it computes on.

    Offloaded weights sit on the meta device until their module runs; the statistics trackers
    (models.adapters.param_device) must live where the outputs are computed instead.
    """
    for module in model.modules():
        hook = getattr(module, "_hf_hook", None)
        device = getattr(hook, "execution_device", None)
        if device is None:
            continue
        device = torch.device(f"cuda:{device}" if isinstance(device, int) else device)
        for sub in module.modules():
            setattr(sub, EXECUTION_ATTR, device)


def describe(spec: str, model: nn.Module) -> dict[str, Any]:
    """The flag and where each placed module ended up (transformers' hf_device_map)."""
    placed = getattr(model, "hf_device_map", None) or {}
    return {"spec": spec, "placement": {name: str(device) for name, device in placed.items()}}


def _offload_hook(module: nn.Module) -> Any | None:
    """The accelerate hook that loads `module`'s own parameters from an offload store per forward."""
    hook = getattr(module, "_hf_hook", None)
    for h in getattr(hook, "hooks", None) or ([hook] if hook is not None else []):  # a SequentialHook, or one
        if getattr(h, "offload", False) and getattr(h, "weights_map", None) is not None:
            return h
    return None


def offloaded(module: nn.Module, name: str) -> bool:
    """Whether `module.<name>` is a meta placeholder whose values accelerate loads from an offload store."""
    return getattr(module, name).is_meta and _offload_hook(module) is not None


def parameter_values(module: nn.Module, name: str) -> torch.Tensor:
    """The values of `module.<name>`, also between forwards of an offloaded module (whose parameter is then a
    meta placeholder): read from accelerate's offload store, on the store's device."""
    if offloaded(module, name):
        return _offload_hook(module).weights_map[name]
    return getattr(module, name)


def edit_parameter(module: nn.Module, name: str, index: Index | tuple[Index, ...] | None,
                   new: Callable[[torch.Tensor], torch.Tensor], stack: contextlib.ExitStack) -> None:  # fmt: skip
    """module.<name>[index] (all of it for None) <- new(that slice) until `stack` closes, when the old
    values come back bit for bit. `index` selects along dim 0, or along the leading dims as a tuple
    (an atom's rows: `(expert, [k, I + k])`, its column: `(expert, slice(None), [k])`). A resident
    slice is saved in host memory (an accelerator holds no second copy); an offloaded parameter
    (--device-map) is edited in accelerate's offload store (`replace_offloaded`). The one way
    ablations and fake quantization change weights."""

    def where(t: torch.Tensor) -> tuple:
        if index is None:
            return (...,)
        parts = index if isinstance(index, tuple) else (index,)
        return tuple(torch.tensor(i, device=t.device) if isinstance(i, list) else i for i in parts)

    def edit(t: torch.Tensor) -> None:
        t[where(t)] = new(t[where(t)])

    if offloaded(module, name):
        replace_offloaded(module, name, edit, stack)
        return
    param = getattr(module, name)
    # A streamed skeleton's layer is meta until it loads (stream.scoring zeroes it again then): no values to keep.
    saved = param.data[where(param)].to("meta" if param.is_meta else "cpu", copy=True)

    def restore() -> None:
        param.data[where(param)] = saved.to(param.device)

    stack.callback(restore)
    edit(param.data)


def replace_offloaded(module: nn.Module, name: str, edit: Callable[[torch.Tensor], None],
                      stack: contextlib.ExitStack) -> None:  # fmt: skip
    """Edit the values every forward loads for the offloaded `module.<name>` (CPU or disk offload) until
    `stack` closes, when the store holds its original entry again: bit-identical, disk untouched.

    accelerate's OffloadedWeightsLoader looks a key up in its in-memory state dict before the offload
    folder, so an edited copy placed there is what the hook puts on the execution device. `edit`
    changes that copy in place, on the execution device (the same arithmetic as a resident weight).
    """
    hook = _offload_hook(module)
    store, key = hook.weights_map.dataset, hook.weights_map.prefix + name
    entries = store if isinstance(store, dict) else getattr(store, "state_dict", None)  # cpu_offload's plain dict
    if not isinstance(entries, dict):
        raise UserError(f"--device-map: {key} is offloaded to a store ({type(store).__name__}) whose weights cannot "
                        "be edited; map its layer to a device instead of offloading it.")  # fmt: skip
    original = entries.get(key)
    current = hook.weights_map[name]
    device = hook.execution_device
    work = current.to(torch.device(f"cuda:{device}" if isinstance(device, int) else device), copy=True)
    edit(work)
    entries[key] = work.to(current.device)

    def restore() -> None:
        if original is None:
            entries.pop(key, None)
        else:
            entries[key] = original

    stack.callback(restore)


def host_check_is_free(device: torch.device) -> bool:
    """On the CPU, reading a value on the host costs nothing and lets the all-finite case skip
    three passes; on accelerators it would stall the queue, so the masked path always runs."""
    return device.type == "cpu"


NUMPY_FLOATS = (torch.float16, torch.float32, torch.float64)  # the float dtypes numpy holds (CPU paths through it)
