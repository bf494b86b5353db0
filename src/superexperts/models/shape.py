"""The sizes a cost plan or a batch-size choice needs, read from a model's parameters.

The model may be loaded or a meta skeleton built from config.json (no weights): only shapes
are read. Per decoder layer: its parameters, the share of them that are routed experts and
how many of those a token uses; per model: attention widths and the router's top-k from the
config, and the parameters outside the layers (embeddings, final norm, lm_head).

    >>> shape = model_shape(model)
    >>> shape.layers[1].params, shape.layer_bytes(1)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the shapes and costs are arithmetic (plan reads them before torch loads); a model's needs it
    from torch import nn

TOP_K_KEYS = ("num_experts_per_tok", "experts_per_token", "moe_topk", "top_k")
DEFAULT_TOP_K = 8  # when the config names none (typical of the paper's models); documented in plan output


@dataclass(frozen=True)
class LayerShape:
    """One decoder layer. `routed_params` is 0 and `num_experts` 0 for a dense layer."""

    index: int
    params: int  # every parameter (and persistent buffer) of the layer
    routed_params: int  # of which: routed experts
    num_experts: int
    mlp_params: int  # non-routed MLPs every token passes (shared expert, or the dense MLP)
    dense_routed: bool = False  # Llama4: every expert runs on every token

    def active_params(self, top_k: int) -> float:
        """Parameters one token multiplies with (the router's top-k of the routed experts)."""
        if not self.num_experts:
            return float(self.params)
        share = 1.0 if self.dense_routed else min(top_k, self.num_experts) / self.num_experts
        return self.params - self.routed_params + share * self.routed_params


@dataclass(frozen=True)
class ModelShape:
    model_type: str
    layers: tuple[LayerShape, ...]
    hidden: int
    vocab: int
    heads: int
    kv_heads: int
    qk_dim: int  # per head (DeepSeek MLA: nope + rope)
    v_dim: int
    top_k: int
    outer_params: int  # embeddings, final norm: everything outside the layers but the lm_head
    head_params: int  # lm_head; 0 when tied to the embeddings
    dtype_bytes: int  # of the parameters as they will be computed with

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def total_params(self) -> int:
        return sum(layer.params for layer in self.layers) + self.outer_params + self.head_params

    def layer_bytes(self, index: int) -> int:
        return self.layers[index].params * self.dtype_bytes

    def expert_intermediate(self, layer: LayerShape) -> int:
        """Width of one routed expert's hidden layer (gate, up and down are each hidden x width)."""
        return layer.routed_params // max(1, layer.num_experts * 3 * self.hidden) if layer.num_experts else 0


def _numel(module: nn.Module | None) -> int:
    """Elements a checkpoint stores for `module`: parameters (tied ones once) and persistent buffers
    (e.g. DeepSeek-V3's e_score_correction_bias); not rotary frequencies, which are recomputed."""
    if module is None:
        return 0
    params = {n for n, _ in module.named_parameters(remove_duplicate=False)}
    buffers = sum(t.numel() for k, t in module.state_dict().items() if k not in params)
    return sum(p.numel() for p in module.parameters()) + buffers


def _text_config(model: nn.Module):
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def config_top_k(config) -> int:
    for key in TOP_K_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return DEFAULT_TOP_K


def _attention_dims(config, hidden: int) -> tuple[int, int, int, int]:
    heads = int(getattr(config, "num_attention_heads", 1) or 1)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    qk = getattr(config, "qk_head_dim", None)
    if qk is None and getattr(config, "qk_nope_head_dim", None) is not None:
        qk = config.qk_nope_head_dim + config.qk_rope_head_dim
    return heads, kv_heads, int(qk or head_dim), int(getattr(config, "v_head_dim", None) or head_dim)


def model_shape(model: nn.Module) -> ModelShape:
    """Sizes of `model` (loaded, or a meta skeleton: only parameter shapes are read)."""
    from .adapters import map_model

    mm = map_model(model)
    config = _text_config(model)
    moe = {b.layer: b for b in mm.moe}
    dense = {d.layer: d for d in mm.dense}
    layers = []
    for i, layer in enumerate(mm.layers):
        b = moe.get(i)
        routed = _numel(b.experts) if b is not None else 0
        mlp = _numel(b.shared) if b is not None else _numel(dense[i].mlp) if i in dense else 0
        layers.append(LayerShape(index=i, params=_numel(layer), routed_params=routed,
                                 num_experts=b.num_experts if b is not None else 0, mlp_params=mlp,
                                 dense_routed=b is not None and b.layout == "dense_routed"))  # fmt: skip
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = head is not None and embed is not None and head.weight is embed.weight
    head_params = 0 if head is None or tied else _numel(head)
    all_params = _numel(model)
    hidden = int(config.hidden_size)
    heads, kv_heads, qk, v = _attention_dims(config, hidden)
    param = next(model.parameters())
    return ModelShape(
        model_type=str(getattr(config, "model_type", type(model).__name__)), layers=tuple(layers), hidden=hidden,
        vocab=int(embed.weight.shape[0]) if embed is not None else int(config.vocab_size), heads=heads,
        kv_heads=kv_heads, qk_dim=qk, v_dim=v, top_k=config_top_k(config),
        outer_params=all_params - sum(x.params for x in layers) - head_params, head_params=head_params,
        dtype_bytes=param.element_size(),
    )  # fmt: skip
