"""The bad-input catalogue's workspace: tiny checkpoints (good and damaged), runs, data files, user files."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import torch
import transformers as tf
from safetensors.torch import load_file, save_file

import families

PROFILE_ARGS = ["--seq-len", "16", "--samples", "4", "--device", "cpu", "--no-report"]


def _checkpoint(family: str, folder: Path, **save_kwargs) -> Path:
    families.build(family).save_pretrained(folder, **save_kwargs)
    families.char_tokenizer().save_pretrained(folder)
    return folder


def _variant(good: Path, folder: Path, tensors: dict | None = None) -> Path:
    shutil.copytree(good, folder)
    if tensors is not None:
        save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def _damaged(ws: Path, good: Path) -> None:
    tensors = load_file(good / "model.safetensors")
    weights = (good / "model.safetensors").read_bytes()
    _variant(good, ws / "truncated")
    (ws / "truncated" / "model.safetensors").write_bytes(weights[:-64])
    _variant(good, ws / "badheader")
    (ws / "badheader" / "model.safetensors").write_bytes(struct.pack("<Q", 2**40) + weights[8:])
    _variant(good, ws / "emptyweights")
    (ws / "emptyweights" / "model.safetensors").write_bytes(b"")
    _variant(good, ws / "noweights")
    (ws / "noweights" / "model.safetensors").unlink()
    _checkpoint("qwen3_moe", ws / "missingshard", max_shard_size="40KB")
    max((ws / "missingshard").glob("*.safetensors")).unlink()
    _variant(good, ws / "missingexpert", {k: v for k, v in tensors.items() if ".experts.3.down_proj" not in k})
    _variant(good, ws / "missingattn", {k: v for k, v in tensors.items() if "layers.1.self_attn.q_proj" not in k})
    _variant(good, ws / "unexpected", tensors | {"model.layers.1.extra.weight": torch.zeros(4)})
    _variant(good, ws / "garbageconfig")
    (ws / "garbageconfig" / "config.json").write_text('{"model_type": "qwen3_moe", oops')
    _variant(good, ws / "remote")
    config = json.loads((good / "config.json").read_text())
    (ws / "remote" / "config.json").write_text(json.dumps(config | {
        "model_type": "tinyse", "auto_map": {"AutoConfig": "configuration_tinyse.TinySEConfig",
                                             "AutoModelForCausalLM": "modeling_tinyse.TinySEForCausalLM"}}))  # fmt: skip


def _data(ws: Path) -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 40
    (ws / "data").mkdir()
    (ws / "data" / "good.txt").write_text(text)
    (ws / "data" / "latin1.txt").write_bytes(text.replace("fox", "föx").encode("latin-1"))
    (ws / "data" / "binary.txt").write_bytes(bytes(range(256)) * 8)
    (ws / "data" / "empty.txt").write_text("  \n")
    (ws / "data" / "scalar.json").write_text("42")
    (ws / "data" / "numbers.jsonl").write_text('{"text": 1}\n{"text": 2}\n')
    (ws / "data" / "notext.jsonl").write_text('{"body": "a"}\n')
    (ws / "data" / "bad.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    (ws / "data" / "binaryish.bin.txt").write_bytes(bytes(range(1, 256)) * 8)  # binary without NUL bytes
    (ws / "experts.bin").write_bytes(bytes(range(256)))
    (ws / "prompts.bin").write_bytes(b"\xff\xfe" + "hello".encode("utf-16-le"))


def _user_files(ws: Path, good: Path) -> None:
    (ws / "notes.txt").write_text("my notes")
    (ws / "mine").mkdir()
    (ws / "mine" / "thesis.tex").write_text("years of work")
    (ws / "link").symlink_to(good.name)  # relative: still valid in the hard-linked copies
    (ws / "notes_link").symlink_to("notes.txt")  # a link to a user's file
    os.mkfifo(ws / "fifo")  # a named pipe: never replaced by an ordinary file
    (ws / "userres").mkdir()  # a user's folder holding files with our names (npm-style audit.json...)
    for name in ("audit.json", "quant_eval.json", "prune_eval.json", "sinks.json", "compare.json"):
        (ws / "userres" / name).write_text('{"theirs": true}')
    tf.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                   vocab_size=128).save_pretrained(ws / "dense")  # no MoE layers
    (ws / "nofields").mkdir()  # transformers would fill every size with its defaults
    (ws / "nofields" / "config.json").write_text('{"model_type": "qwen3_moe"}')
    (ws / "ro").mkdir()  # mounted read-only by the `readonly` fixture (chmod does not stop root)


def build_workspace(ws: Path) -> Path:
    """Everything the catalogue's cases point at, under `ws` (which becomes their current folder)."""
    from superexperts.cli import main

    ws.mkdir()
    good = _checkpoint("qwen3_moe", ws / "good")
    _checkpoint("mixtral", ws / "other")  # another family: its runs must not be applied to `good`
    families.build("qwen3_moe", seed=1).save_pretrained(ws / "twin")  # good's architecture, other weights
    families.char_tokenizer().save_pretrained(ws / "twin")
    _damaged(ws, good)
    _data(ws)
    _user_files(ws, good)
    for model, run in (("good", "run"), ("other", "otherrun"), ("good", "run2")):
        seed = ["--seed", "1"] if run == "run2" else []
        assert main(["profile", str(ws / model), "--out", str(ws / run), *PROFILE_ARGS, *seed]) == 0
    shutil.copytree(ws / "run", ws / "ro" / "run")
    shutil.copytree(good, ws / "good2")  # the same model in another folder: audit's COMPRESSED
    shutil.copytree(ws / "run", ws / "emptyrun")  # a run whose rule found no Super Experts
    verdict = json.loads((ws / "emptyrun" / "super_experts.json").read_text())
    (ws / "emptyrun" / "super_experts.json").write_text(json.dumps(verdict | {"super_experts": []}))
    (ws / "foreignstate").mkdir()  # a --state-dir holding another tool's state.json
    (ws / "foreignstate" / "state.json").write_text('{"step": 3}')
    (ws / "run2" / "super_experts.json").unlink()  # a run whose verdict file was lost
    shutil.copytree(ws / "run", ws / "sinksrun")  # a run that already holds later results
    for name in ("sinks.json", "prune_eval.json"):
        (ws / "sinksrun" / name).write_text('{"earlier": true}')
    (ws / "cmp").mkdir()
    (ws / "cmp" / "compare.json").write_text('{"earlier": true}')
    _legacy_run(ws / "run", ws / "legacyrun")
    return ws


def _legacy_run(run: Path, legacy: Path) -> None:
    """A run as made before absolute paths: its model recorded as "good", relative to where it was made,
    with no fingerprint (issue 23)."""
    shutil.copytree(run, legacy)
    for name in ("profile.json", "super_experts.json"):
        doc = json.loads((legacy / name).read_text())
        doc["meta"] = {k: v for k, v in doc["meta"].items() if k != "fingerprint"} | {"model_path": "good"}
        (legacy / name).write_text(json.dumps(doc))
