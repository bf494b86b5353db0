"""Memory and compute of one forward, per token and per decoder layer: pure functions of a ModelShape.

Shared by the automatic batch size (`batching`) and the cost plan (`plan`). Estimates, on
purpose on the high side where a backend may or may not materialise a tensor:

- activations of a token in the largest layer: residual, normed input and layer output; the
  attention projections; for a routed MoE layer top-k copies of the expert rows (the gathered
  input, gate/up output, activation, down output, its |.| taken by the capture, the weighted
  output); the shared/dense MLP; router logits in float32; attention scores and probabilities in
  float32 over the whole window (eager attention and sdpa's math path materialise them; flash
  kernels do not, so the estimate is high there);
- FLOPs: 2 per multiply-accumulate with every parameter a token uses (router top-k of the routed
  experts), plus QK^T and PV over the causal context (on average (T + 1) / 2 keys).
"""

from __future__ import annotations

from .shape import LayerShape, ModelShape

FLOAT32 = 4


def layer_activation_bytes(shape: ModelShape, layer: LayerShape) -> int:
    """Bytes one token keeps alive inside `layer` at its peak, without the attention scores."""
    h = shape.hidden
    attention = (shape.heads + shape.kv_heads) * (shape.qk_dim + shape.v_dim)  # q, attn out, k, v
    routed = shape.top_k * (4 * h + 3 * shape.expert_intermediate(layer)) if layer.num_experts else 0
    if layer.dense_routed:  # Llama4: every expert's rows exist for every token
        routed = layer.num_experts * (4 * h + 3 * shape.expert_intermediate(layer))
    mlp = layer.mlp_params // max(1, h)  # gate, up and activation of a (3 x hidden x width) MLP
    return shape.dtype_bytes * (4 * h + attention + routed + mlp) + FLOAT32 * layer.num_experts


def attention_score_bytes(shape: ModelShape, seq_len: int) -> int:
    """Scores and probabilities of one query row over the window, float32, when materialised."""
    return 2 * FLOAT32 * shape.heads * seq_len


def activation_bytes_per_token(shape: ModelShape, seq_len: int, *, logits: bool = False) -> int:
    """Peak bytes one token of a `seq_len` window adds to a forward (largest layer; + logits)."""
    per_layer = max((layer_activation_bytes(shape, x) for x in shape.layers), default=0)
    head = FLOAT32 * shape.vocab if logits else 0  # the loss upcasts logits to float32
    return per_layer + attention_score_bytes(shape, seq_len) + head


def layer_flops_per_token(shape: ModelShape, layer: LayerShape, seq_len: int) -> float:
    """Multiply-adds x 2 of one token through `layer`, attention over the causal context included."""
    context = (seq_len + 1) / 2
    attention = 2 * shape.heads * (shape.qk_dim + shape.v_dim) * context
    return 2 * layer.active_params(shape.top_k) + attention


def head_flops_per_token(shape: ModelShape) -> float:
    return 2.0 * shape.hidden * shape.vocab


def touched_expert_share(layer: LayerShape, top_k: int, tokens: int) -> float:
    """Expected share of a layer's routed experts a batch of `tokens` reaches (uniform routing)."""
    if not layer.num_experts or layer.dense_routed:
        return 1.0
    miss = (1 - min(top_k, layer.num_experts) / layer.num_experts) ** tokens
    return 1.0 - miss


def layer_weight_bytes_read(shape: ModelShape, layer: LayerShape, tokens: int) -> float:
    """Weight bytes one forward of `tokens` reads from `layer` (experts nobody is routed to are skipped)."""
    share = touched_expert_share(layer, shape.top_k, tokens)
    return shape.dtype_bytes * (layer.params - layer.routed_params + share * layer.routed_params)
