"""Train the demo (issue 13): the planted chain stays fixed, everything else learns the demo's data.

The planted entries (`planted_masks`) are restored after every optimizer step, so the chain
BOS -> layer-1 SE -> massive channel -> layer-2 SE -> attention sink on the first token is exactly
the planted one: the model learns to use the sink as its no-op (the sink's value is zero), it cannot
unlearn or bypass it. Training windows start with BOS, like the demo's calibration windows.

Seeded and single-threaded: `scripts/train_demo.py` reproduces the shipped weights.

    >>> model, tokenizer, log = train_demo(TrainSettings(steps=10))
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast, Qwen3MoeForCausalLM

from . import demo
from .demo_data import demo_split


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 600
    batch_size: int = 32
    seq_len: int = 64  # BOS + 63 tokens, the demo's window
    lr: float = 3e-3
    weight_decay: float = 0.1
    warmup: int = 30
    label_smoothing: float = 0.1  # tempers certainty: 11 paragraphs cannot teach held-out English
    seed: int = 0

    def describe(self) -> dict:
        return asdict(self)


def planted_masks(model: Qwen3MoeForCausalLM, tokenizer) -> dict[str, torch.Tensor]:
    """{parameter name: bool mask of the entries the planting set}; they stay fixed in training."""
    cfg, params = model.config, dict(model.named_parameters())
    reserved, sink = list(demo.RESERVED_CHANNELS), demo.SINK_HEAD_DIM

    def mask(name: str, rows: list[int] = (), cols: list[int] = ()) -> torch.Tensor:
        m = torch.zeros(params[name].shape, dtype=torch.bool)
        m[list(rows)] = True
        m[..., list(cols)] = True
        return m

    q_rows = [h * cfg.head_dim + sink for h in range(cfg.num_attention_heads)]
    k_rows = [h * cfg.head_dim + sink for h in range(cfg.num_key_value_heads)]
    emb = "model.embed_tokens.weight"
    masks = {emb: mask(emb, rows=[tokenizer.bos_token_id], cols=reserved)}
    for i in range(cfg.num_hidden_layers):
        a, m = f"model.layers.{i}.self_attn.", f"model.layers.{i}.mlp."
        masks |= {a + "q_proj.weight": mask(a + "q_proj.weight", rows=q_rows),
                  a + "k_proj.weight": mask(a + "k_proj.weight", rows=k_rows, cols=[demo.DEMO_CHANNEL]),
                  a + "v_proj.weight": mask(a + "v_proj.weight", cols=[demo.DEMO_CHANNEL]),
                  a + "o_proj.weight": mask(a + "o_proj.weight", rows=reserved),
                  a + "q_norm.weight": mask(a + "q_norm.weight", rows=[sink]),
                  a + "k_norm.weight": mask(a + "k_norm.weight", rows=[sink]),
                  m + "gate.weight": mask(m + "gate.weight"),
                  m + "experts.gate_up_proj": mask(m + "experts.gate_up_proj"),
                  m + "experts.down_proj": mask(m + "experts.down_proj")}  # fmt: skip
        masks[m + "experts.down_proj"][:, reserved] = True  # (E, H, I): no expert writes a reserved channel
        for norm in ("input_layernorm.weight", "post_attention_layernorm.weight"):
            masks[f"model.layers.{i}.{norm}"] = mask(f"model.layers.{i}.{norm}", rows=reserved)
    for layer, e in demo.PLANTED_EXPERTS:  # the planted experts and their router rows, whole
        for name in ("experts.down_proj", "experts.gate_up_proj", "gate.weight"):
            masks[f"model.layers.{layer}.mlp.{name}"][e] = True
    return masks


class _Frozen:
    """Puts the planted entries back after each optimizer step (AdamW's decay would move them too)."""

    def __init__(self, model: torch.nn.Module, masks: dict[str, torch.Tensor]):
        params = dict(model.named_parameters())
        self.items = [(params[n], m, params[n].detach().clone()) for n, m in masks.items()]

    @torch.no_grad()
    def restore(self) -> None:
        for param, mask, saved in self.items:
            param.copy_(torch.where(mask, saved, param))


def _optimizer(model: torch.nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]  # norm weights
    groups = [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=s.lr, betas=(0.9, 0.95))


def _lr_factor(step: int, s: TrainSettings) -> float:
    if step < s.warmup:
        return (step + 1) / s.warmup
    progress = (step - s.warmup) / max(1, s.steps - s.warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))  # cosine down to 10%


class Batches:
    """BOS + (seq_len - 1) tokens at a random offset of a freshly shuffled stream of the training units."""

    def __init__(self, tokenizer: PreTrainedTokenizerFast, s: TrainSettings):
        split = demo_split(demo.builtin_text())
        self.units = [tokenizer(u, add_special_tokens=False).input_ids for u in split.train_units()]
        self.bos, self.s, self.rng = tokenizer.bos_token_id, s, random.Random(s.seed)

    def next(self) -> torch.Tensor:
        order = self.units[:]
        self.rng.shuffle(order)
        stream = [t for unit in order for t in unit]
        body = self.s.seq_len - 1
        starts = [self.rng.randrange(len(stream) - body) for _ in range(self.s.batch_size)]
        return torch.tensor([[self.bos, *stream[i : i + body]] for i in starts])  # (batch, seq_len)


def _train(model: Qwen3MoeForCausalLM, tokenizer, settings: TrainSettings, frozen: _Frozen | None,
           log: Callable[[int, float], None] | None) -> list[float]:
    batches, opt = Batches(tokenizer, settings), _optimizer(model, settings)
    losses = []
    model.train()
    for step in range(settings.steps):
        for group in opt.param_groups:
            group["lr"] = settings.lr * _lr_factor(step, settings)
        ids = batches.next()
        logits = model(input_ids=ids).logits[:, :-1]  # position t predicts token t + 1
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1),
                                                 label_smoothing=settings.label_smoothing)  # fmt: skip
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if frozen is not None:
            frozen.restore()
        losses.append(loss.item())
        if log is not None:
            log(step, losses[-1])
    model.eval()
    return losses


def train_demo(settings: TrainSettings = TrainSettings(), *, log: Callable[[int, float], None] | None = None
               ) -> tuple[Qwen3MoeForCausalLM, PreTrainedTokenizerFast, list[float]]:
    """Train the planted demo; returns (model in eval mode, tokenizer, per-step losses)."""
    model, tokenizer = demo.planted_demo()
    torch.manual_seed(settings.seed)
    frozen = _Frozen(model, planted_masks(model, tokenizer))
    return model, tokenizer, _train(model, tokenizer, settings, frozen, log)


# A short post-training: every weight trainable (the planted entries too), a lower constant-ish rate.
FINETUNE = TrainSettings(steps=30, batch_size=16, lr=1e-3, warmup=5, seed=1)


def finetune_demo(model: Qwen3MoeForCausalLM, tokenizer, settings: TrainSettings = FINETUNE) -> list[float]:
    """Further-train `model` in place with NOTHING held fixed (the paper's question: does post-training
    move the SEs?); returns the per-step losses."""
    torch.manual_seed(settings.seed)
    return _train(model, tokenizer, settings, None, None)


SHIPPED_DTYPE = torch.float16  # halves the package's weights file; the planted values survive the cast


def shipped_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors that ship in resources/demo/weights.safetensors."""
    return {name: p.detach().to(SHIPPED_DTYPE).contiguous() for name, p in model.named_parameters()}


def write_resources(model: torch.nn.Module, losses: list[float], settings: TrainSettings,
                    demo_dir: str | os.PathLike, tasks_dir: str | os.PathLike) -> list[Path]:
    """Write the weights, the held-out text and prompts, the arithmetic task's rows and the training record
    (each file atomically); returns the paths written."""
    from safetensors.torch import save

    from ..runs.runfolder import atomic_write, atomic_write_json, base_metadata
    from .demo_data import arithmetic_records

    split = demo_split(demo.builtin_text())
    demo_dir, tasks_dir = Path(demo_dir), Path(tasks_dir)
    rows = "".join(json.dumps(r) + "\n" for r in arithmetic_records(split.heldout_pairs))
    record = base_metadata(tool="scripts/train_demo.py", seed=settings.seed, settings=settings.describe(),
                           final_loss=losses[-1] if losses else None,
                           loss_every_10_steps=[round(x, 4) for x in losses[::10]])  # fmt: skip
    files = {demo_dir / demo.WEIGHTS_FILE: save(shipped_state(model), metadata={"synthetic": "true"}),
             demo_dir / demo.HELDOUT_FILE: split.heldout(), demo_dir / demo.PROMPTS_FILE: "\n".join(split.prompts()) + "\n",
             demo_dir / demo.ARITHMETIC_FILE: split.arithmetic(), tasks_dir / "demo_arith.jsonl": rows}  # fmt: skip
    for path, data in files.items():
        atomic_write(path, data)
    atomic_write_json(demo_dir / "train_record.json", record)
    written = [*files, demo_dir / "train_record.json"]
    for path in written:
        path.chmod(0o644)  # package data: readable by all (the atomic write's temp file was 0600)
    return written
