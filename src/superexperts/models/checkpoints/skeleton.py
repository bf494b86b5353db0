"""The model without its weights, and the exact inputs its forward gives each decoder layer.

The skeleton is built from config.json under accelerate's `init_empty_weights` (parameters on
the meta device, buffers such as rotary frequencies real). Rather than re-deriving each
family's masks and position embeddings, the model's own forward is run once per batch shape
with the decoder layers swapped for recorders: they keep the first layer's input (the
embeddings) and every layer's keyword arguments (mask for its layer type, position
embeddings, position ids), then stop the forward before the final norm.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from torch import nn
from transformers import AutoConfig

from ...runs.errors import UserError
from ..adapters import find_decoder_layers
from ..device_map import resolve_device
from ..loading import Loaded, auto_model_class, load_tokenizer, resolve_dtype
from .formats import dequantizing_config, prepare, quant_method

LayerCall = tuple[tuple, dict[str, Any]]  # positional args after hidden_states, keyword args


def build_skeleton(folder: Path, dtype: torch.dtype | None, *, trust_remote_code: bool = False,
                   attn_implementation: str | None = None,
                   allow_quantized: bool = False) -> tuple[nn.Module, torch.dtype]:  # fmt: skip
    """(model on meta, dtype) from `folder/config.json`; dtype defaults to the config's, then float32.

    Block-wise FP8 and MXFP4 checkpoints get transformers' dequantizing quantizer (`model.hf_quantizer`);
    other quantized checkpoints are refused unless `allow_quantized` (export only needs the structure).

    >>> model, dtype = build_skeleton(Path("ckpt"), torch.bfloat16)
    """
    if not (folder / "config.json").is_file():
        raise UserError(f"{folder} has no config.json; pass a transformers checkpoint folder.")
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (ValueError, OSError, KeyError) as e:
        if "trust_remote_code" in str(e):
            raise UserError(f"{folder} needs its own code; re-run with --trust-remote-code if you trust it.") from None
        raise UserError(f"cannot read {folder}/config.json ({str(e).splitlines()[0]}).") from None
    method = quant_method(config)
    if method is not None and dequantizing_config(config) is None and not allow_quantized:
        # loading without the quantizer would read raw int weights as numbers
        raise UserError(f"{folder} is quantized ({method}); layer streaming reads unquantized, block-wise fp8 and "
                        "mxfp4 checkpoints only; dequantize it first or profile it in memory.")  # fmt: skip
    if dtype is None:
        dtype = getattr(config, "dtype", None) or torch.float32
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    with init_empty_weights():
        model = auto_model_class(config).from_config(config, dtype=dtype, trust_remote_code=trust_remote_code, **kwargs)
        quantizer = prepare(model, dtype)  # FP8/MXFP4: transformers' dequantizing load, as from_pretrained sets it up
    if quantizer is not None:
        model.hf_quantizer = quantizer  # where from_pretrained keeps it while loading; read by `conversion_mapping`
    return model.eval(), dtype


def layers_path(model: nn.Module) -> str:
    """Dotted name of the decoder layers ModuleList, e.g. 'model.layers'."""
    layers = find_decoder_layers(model)
    return next(name for name, m in model.named_modules() if m is layers)


class _Stop(Exception):
    """Raised by the last recorder: the forward is not needed past the decoder layers."""


class _Recorder(nn.Module):
    def __init__(self, layer: nn.Module, index: int, last: bool, calls: dict[int, LayerCall], first_input: list) -> None:
        super().__init__()
        # The layer's plain attributes: some model forwards read them off each layer (Nemotron-H picks the
        # attention mask by `layer.block_type`).
        for name, value in vars(layer).items():
            if not name.startswith("_") and name != "training" and not isinstance(value, (nn.Module, torch.Tensor)):
                setattr(self, name, value)
        self.index, self.last, self.calls, self.first_input = index, last, calls, first_input

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        self.calls[self.index] = (args, kwargs)
        if self.index == 0:
            self.first_input.append(hidden_states)
        if self.last:
            raise _Stop
        return hidden_states


@contextlib.contextmanager
def _recorders(layers: nn.ModuleList, calls: dict[int, LayerCall], first_input: list) -> Iterator[None]:
    saved = list(layers)
    try:
        for i in range(len(layers)):
            layers[i] = _Recorder(saved[i], i, i == len(layers) - 1, calls, first_input)
        yield
    finally:
        for i, layer in enumerate(saved):
            layers[i] = layer


def layer_inputs(model: nn.Module, path: str, input_ids: torch.Tensor) -> tuple[torch.Tensor, dict[int, LayerCall]]:
    """(embeddings entering layer 0, {layer: (args, kwargs)}) as the model's forward makes them.

    Needs the embeddings (and buffers) loaded on the device of `input_ids`.
    """
    parent = model.get_submodule(path.rpartition(".")[0]) if "." in path else model
    layers = model.get_submodule(path)
    calls: dict[int, LayerCall] = {}
    first_input: list[torch.Tensor] = []
    with _recorders(layers, calls, first_input):
        try:
            parent(input_ids=input_ids, use_cache=False)
        except _Stop:
            pass
    if not first_input or len(calls) != len(layers):
        raise UserError(f"{type(parent).__name__}.forward did not call its {len(layers)} decoder layers in order; "
                        "this model cannot be streamed layer by layer.")  # fmt: skip
    return first_input[0], calls


def load_skeleton(spec: str, *, device: str = "auto", dtype: str = "auto",
                  trust_remote_code: bool = False) -> tuple[Loaded, torch.device, torch.dtype]:  # fmt: skip
    """(Loaded with the meta skeleton as model, device, dtype) for a local checkpoint folder.

    >>> loaded, device, dtype = load_skeleton("Qwen3-30B-A3B/", device="cuda", dtype="bfloat16")
    """
    path = Path(os.path.expanduser(spec))
    if not path.is_dir():
        raise UserError(f"--stream reads a local checkpoint folder; {spec} is not one (download it first).")
    dev = resolve_device(device)
    skeleton, _ = build_skeleton(path, None, trust_remote_code=trust_remote_code)
    torch_dtype = resolve_dtype(dtype, dev, skeleton.config)
    tokenizer = load_tokenizer(str(path), trust_remote_code, skeleton.get_input_embeddings().weight.shape[0])
    return Loaded(model=skeleton, tokenizer=tokenizer, spec=spec, path=str(path), synthetic=False), dev, torch_dtype
