"""`fake_quantized(model, experts, scheme)`: experts RTN-quantized in memory, restored bit for bit.

Weights: for fused experts (transformers 5.x `gate_up_proj` [E, 2I, H] and `down_proj` [E, H, I];
GPT-OSS and Llama4 store [E, in, out]) the slices of the chosen experts along dim 0, every 3-D
expert parameter; for ModuleList experts and shared experts every Linear of the expert's MLP.
Biases, routers, attention and dense MLPs are left alone (compression tools keep them too).
Each slice is copied to host memory before it changes and written back on exit, also on
exceptions: the model returns bit-identical, and accelerator memory holds no second copy.
Weights offloaded by --device-map (CPU or disk) are quantized where the forward loads them from:
an edited copy in accelerate's offload store, dropped on exit (`device_map.edit_parameter`).

Below the expert (issue 20), `atom_bits` gives some experts one bit width per atom (0: the atom is
kept unquantized): atom k's gate and up rows and down column are quantized with their own width,
each tier of atoms as if the others were absent (their values do not enter its scales), which is
what keeping single channels unquantized (`--protect super-atoms`) and CAMERA-Q's mixed precision
(`--scheme camera-q`) mean. Biases stay as they are.

Activations (`scheme.act_bits`): each token's down_proj input of a quantized expert is fake-
quantized with its own scale, where the SE outliers live (paper Sec. 3). Fused experts get it
through `capture.experts_fn.input_edit` (the capturing experts implementation is switched on
meanwhile), Linear down projections through forward pre-hooks. Llama4's dense-routed experts
form that input inside one bmm, out of reach: refused.

    >>> with fake_quantized(model, all_experts(map_model(model)), Scheme(bits=4, group_size=128)):
    ...     loss = model(ids, labels=ids).loss
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ...capture import experts_fn
from ...models.adapters import ModelMap, MoEBlock, map_model, param_device
from ...models.atoms import atom_count, atom_params
from ...models.device_map import edit_parameter
from ...models.experts import Expert, validate_experts
from ...runs.errors import UserError
from .rtn import fake_quantize_rows, fake_quantize_weight
from .scheme import BITS, Scheme


def all_experts(model_map: ModelMap) -> list[Expert]:
    """Every routed and shared expert of the model, layer by layer."""
    experts: list[Expert] = []
    for b in model_map.moe:
        experts += [(b.layer, e) for e in range(b.num_experts)] + ([(b.layer, "shared")] if b.shared else [])
    return experts


def _fused_params(block: MoEBlock) -> list[tuple[str, torch.Tensor, bool]]:
    """(name, parameter, transposed) of every 3-D per-expert weight of a fused experts module."""
    transposed = block.layout == "dense_routed" or bool(getattr(block.experts, "is_transposed", False))
    return [(name, p, transposed) for name, p in block.experts.named_parameters(recurse=False)
            if p.dim() == 3 and p.shape[0] == block.num_experts]  # fmt: skip


def _linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def _expert_linears(block: MoEBlock, expert: int | str) -> list[nn.Linear]:
    return _linears(block.shared if expert == "shared" else block.experts[expert])  # type: ignore[index]


def _input_sizes(block: MoEBlock) -> list[tuple[str, int]]:
    """(weight, input size) of every weight of the block that quantization touches."""
    if block.layout == "modulelist":
        sizes = [("expert Linear", m.in_features) for m in _expert_linears(block, 0)]
    else:
        sizes = [(name, p.shape[-2] if transposed else p.shape[-1]) for name, p, transposed in _fused_params(block)]
    return sizes + [("shared expert Linear", m.in_features) for m in (_linears(block.shared) if block.shared else [])]


def check_model(model_map: ModelMap, scheme: Scheme) -> None:
    """Refuse, before anything changes, a group size that does not divide an expert's input size
    and activation quantization of experts whose down_proj input cannot be reached."""
    scheme.check()
    for b in model_map.moe:
        if scheme.act_bits and b.layout == "dense_routed":
            raise UserError(f"--act-bits: layer {b.layer}'s experts (Llama4 layout) compute their down_proj input "
                            "inside one bmm, which cannot be hooked; drop --act-bits for this model.")  # fmt: skip
        for name, size in _input_sizes(b):
            if scheme.group_size and size % scheme.group_size:
                raise UserError(f"--group-size {scheme.group_size} does not divide layer {b.layer}'s {name} input "
                                f"size {size}; pick a divisor of it, or omit --group-size (per-channel scales).")


def _tiered(w: torch.Tensor, tiers: list[tuple[int, tuple]], scheme: Scheme, transposed: bool) -> torch.Tensor:
    """w with each tier's slice (bits, index into w) quantized on its own: the other values are zeroed
    first, so they do not enter its scales; bits 0 keeps the slice as it is."""
    out = w.clone()
    for bits, index in tiers:
        if bits:
            masked = torch.zeros_like(w)
            masked[index] = w[index]
            out[index] = fake_quantize_weight(masked, dataclasses.replace(scheme, bits=bits), transposed=transposed)[index]
    return out


def _quantize_atoms(block: MoEBlock, expert: int | str, bits: np.ndarray, scheme: Scheme,
                    stack: contextlib.ExitStack) -> None:  # fmt: skip
    """One expert's weights, atom k at `bits[k]` (0: unquantized)."""
    transposed = block.layout == "dense_routed" or bool(getattr(block.experts, "is_transposed", False))
    per_param: dict[tuple[int, str], tuple[torch.nn.Module, list[tuple[int, tuple]]]] = {}
    for b in sorted({int(x) for x in bits}):
        ks = [int(k) for k in np.flatnonzero(bits == b)]
        for module, name, index in atom_params(block, expert, ks):
            if not name.endswith("bias"):  # biases are not quantized
                fused = module is block.experts  # a fused parameter: index [expert, ...]
                per_param.setdefault((id(module), name), (module, []))[1].append((b, index[1:] if fused else index))
    for (_, name), (module, tiers) in per_param.items():
        fused = module is block.experts
        edit_parameter(module, name, int(expert) if fused else None,
                       lambda w, t=tiers, tr=transposed and fused: _tiered(w, t, scheme, tr), stack)  # fmt: skip


def _quantize_weights(block: MoEBlock, experts: list[int | str], scheme: Scheme, stack: contextlib.ExitStack,
                      atom_bits: Mapping[Expert, np.ndarray]) -> None:  # fmt: skip
    for e in [e for e in experts if (block.layer, e) in atom_bits]:
        _quantize_atoms(block, e, atom_bits[(block.layer, e)], scheme, stack)
    experts = [e for e in experts if (block.layer, e) not in atom_bits]
    routed = [int(e) for e in experts if e != "shared"]
    linears = [m for e in experts if e == "shared" or block.layout == "modulelist" for m in _expert_linears(block, e)]
    if routed and block.layout != "modulelist":
        for name, _, transposed in _fused_params(block):
            edit_parameter(block.experts, name, routed,
                           lambda w, t=transposed: fake_quantize_weight(w, scheme, transposed=t), stack)  # fmt: skip
    for linear in linears:
        edit_parameter(linear, "weight", None, lambda w: fake_quantize_weight(w, scheme), stack)


def _token_hook(bits: int):
    def hook(module: nn.Module, args: tuple) -> tuple:
        return (fake_quantize_rows(args[0], bits), *args[1:])

    return hook


def _quantize_fused_inputs(block: MoEBlock, routed: list[int], bits: int, stack: contextlib.ExitStack) -> None:
    """Per-token fake quantization of the down_proj input rows (S, I) of the `routed` experts."""
    chosen = torch.zeros(block.num_experts, dtype=torch.bool, device=param_device(block.experts))
    chosen[routed] = True

    def edit(expert_ids: torch.Tensor, h: torch.Tensor, previous) -> torch.Tensor:  # composes with an active edit
        h = previous(expert_ids, h) if previous else h
        return torch.where(chosen[expert_ids].unsqueeze(-1), fake_quantize_rows(h, bits), h)

    stack.enter_context(experts_fn.input_edit(block.experts, edit))
    stack.enter_context(experts_fn.fused_implementation([block.experts]))


def _quantize_inputs(block: MoEBlock, experts: list[int | str], bits: int, stack: contextlib.ExitStack) -> None:
    routed = [int(e) for e in experts if e != "shared"]
    if routed and block.layout == "fused":
        _quantize_fused_inputs(block, routed, bits, stack)
    downs = [block.shared_down if e == "shared" else block.expert_down(int(e)) for e in experts
             if e == "shared" or block.layout == "modulelist"]  # fmt: skip
    for down in downs:
        stack.callback(down.register_forward_pre_hook(_token_hook(bits)).remove)


def check_atom_bits(model_map: ModelMap, atom_bits: Mapping[Expert, np.ndarray], scheme: Scheme) -> None:
    """One width per atom of each listed expert, each a supported one (or 0: kept); no --act-bits."""
    if atom_bits and scheme.act_bits:
        raise UserError("--act-bits quantizes each token's whole down_proj input; with atoms kept or mixed widths "
                        "drop --act-bits.")  # fmt: skip
    if atom_bits:
        validate_experts(model_map, list(atom_bits))
    for (layer, e), bits in atom_bits.items():
        if len(bits) != atom_count(model_map.block(layer), e):
            raise UserError(f"expert {layer}:{e}: {len(bits)} atom widths for {atom_count(model_map.block(layer), e)} atoms.")
        bad = sorted({int(b) for b in bits} - {0, *BITS})
        if bad:
            raise UserError(f"expert {layer}:{e}: {bad[0]} bits is not supported; use {', '.join(map(str, BITS))}.")


@contextlib.contextmanager
def fake_quantized(model: nn.Module, experts: Sequence[Expert], scheme: Scheme,
                   atom_bits: Mapping[Expert, np.ndarray] | None = None) -> Iterator[None]:  # fmt: skip
    """Quantize `experts` (weights, and down_proj inputs with `scheme.act_bits`) inside the block;
    those in `atom_bits` with one width per atom (0 = kept). An empty list changes nothing."""
    model_map = map_model(model)
    experts = validate_experts(model_map, list(experts)) if experts else []
    check_model(model_map, scheme)
    atom_bits = {x: np.asarray(b) for x, b in (atom_bits or {}).items() if x in set(experts)}
    check_atom_bits(model_map, atom_bits, scheme)
    per_layer: dict[int, list[int | str]] = {}
    for layer, expert in experts:
        per_layer.setdefault(layer, []).append(expert)
    with contextlib.ExitStack() as stack:
        for layer, chosen in per_layer.items():
            _quantize_weights(model_map.block(layer), chosen, scheme, stack, atom_bits)
            if scheme.act_bits:
                _quantize_inputs(model_map.block(layer), chosen, scheme.act_bits, stack)
        yield
