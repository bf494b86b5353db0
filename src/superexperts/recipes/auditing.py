"""The audit recipe (`run_audit`): ORIGINAL + COMPRESSED checkpoints -> audit.json + audit.html, one model in memory at a time.

Everything checkable is checked before any weights load: the request, that both configs are the
same architecture, that both tokenizers give the same ids, and the windows (calibration and
perplexity, tokenized once with the original's tokenizer and used for both models).
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..capture.batching import AUTO, BatchSize, parse_batch_size
from ..capture.data import calibration, check_texts
from ..compress.audit import THRESHOLD, audit_verdict, check_same_architecture
from ..identify.rules import paper_super_experts
from ..models.demo_data import DEMO_PPL
from ..models.experts import Expert, check_experts_in_config, experts_json
from ..models.fields import ModelFields
from ..runs.errors import UserError, check_at_least
from ..runs.runfolder import base_metadata, json_bytes, tensor_sha256, write_files

if TYPE_CHECKING:  # the request is checked before torch loads; the measuring functions import it
    import torch

    from ..compress.audit import Measured

# The built-in text is short (~1.3k tokens): short windows unless --data/--ppl bring real text.
BUILTIN_DEFAULTS = {"seq_len": 64, "samples": 16}
DATA_DEFAULTS = {"seq_len": 2048, "samples": 16}


@dataclass
class AuditRequest(ModelFields):  # + device, device_map, dtype, trust_remote_code (allow_missing_weights unset)
    original: str
    compressed: str
    experts: list[Expert] | None  # the SEs; None: the paper rule on the original's profile
    experts_source: str
    data: str | None = None
    samples: int | None = None
    seq_len: int | None = None
    seed: int = 0
    ppl: str | None = None  # perplexity data (default: --data, else the built-in text)
    max_windows: int | None = None
    batch_size: BatchSize = AUTO  # auto: resolved per checkpoint once it is loaded
    threshold: float = THRESHOLD

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        self.check_model_fields()
        self.batch_size = parse_batch_size(self.batch_size)
        for name, value, low in [("--seq-len", self.seq_len, 2), ("--samples", self.samples, 1),
                                 ("--max-windows", self.max_windows, 1)]:
            check_at_least(name, value, low)
        if os.path.exists(self.original) and os.path.realpath(self.original) == os.path.realpath(self.compressed):
            raise UserError(f"ORIGINAL and COMPRESSED are the same folder ({self.original}); pass the compressed "
                            "checkpoint as the second argument.")  # fmt: skip
        check_texts(self.data)
        check_texts(self.ppl, "--ppl")
        if not 0 < self.threshold < 1:
            raise UserError(f"--threshold {self.threshold} must be in (0, 1), e.g. 0.5 for a fall by half.")

    def defaults(self) -> dict[str, int]:
        return BUILTIN_DEFAULTS if self.data is None and self.ppl is None else DATA_DEFAULTS


def _tokenizers_agree(req: AuditRequest, original_config, compressed_config):
    """The original's tokenizer, after checking the compressed checkpoint's tokenizes text the same."""
    from ..models.loading import load_tokenizer

    tokenizers = []
    for path, config in ((req.original, original_config), (req.compressed, compressed_config)):
        vocab = getattr(getattr(config, "text_config", None) or config, "vocab_size", None) or 1 << 30
        tokenizers.append(load_tokenizer(path, req.trust_remote_code, vocab))
    from ..models.demo import builtin_text

    probe = builtin_text()[:2000]
    if tokenizers[0](probe).input_ids != tokenizers[1](probe).input_ids:
        raise UserError(f"{req.compressed} tokenizes text differently from {req.original}; save the original's "
                        "tokenizer with the compressed checkpoint.")  # fmt: skip
    return tokenizers[0]


def _measure(path: str, req: AuditRequest, calib_ids: torch.Tensor, ppl_ids: torch.Tensor, seq_len: int,
             progress: bool) -> Measured:  # fmt: skip
    import torch

    from ..capture.batching import resolve_batch_size
    from ..capture.profile import profile
    from ..compress.audit import Measured
    from ..compress.quant_eval import SINK_WINDOWS
    from ..evaluate.perplexity import perplexity
    from ..evaluate.sinks import measure_sinks

    loaded = req.load(path)
    try:
        batch, _ = resolve_batch_size(req.batch_size, loaded.model, samples=max(1, ppl_ids.numel() // seq_len),
                                      seq_len=seq_len, logits=True)  # fmt: skip
        prof = profile(loaded.model, calib_ids, batch_size=batch, progress=progress)
        ppl = perplexity(loaded.model, ppl_ids, seq_len=seq_len, batch_size=batch,
                         max_windows=req.max_windows, progress=progress)  # fmt: skip
        sinks = measure_sinks(loaded.model, calib_ids[:SINK_WINDOWS])["original"]
        return Measured(prof, ppl, sinks.sink_mass, sinks.sink_rate(), loaded.describe())
    finally:  # one model in memory at a time
        device = next(loaded.model.parameters()).device
        del loaded
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def prepare(req: AuditRequest):
    """Checks that need configs and tokenizers only; returns (calibration, perplexity ids, seq_len)."""
    from ..evaluate.streams import bos_window_stream, eval_stream
    from ..models.demo import heldout_path
    from ..models.loading import is_demo, load_config

    req.check()
    configs = [load_config(p, req.trust_remote_code) for p in (req.original, req.compressed)]
    check_same_architecture(*configs, names=(req.original, req.compressed))
    if req.experts is not None:  # a run folder of another model names experts this one lacks
        check_experts_in_config(req.experts, configs[0])
    tokenizer = _tokenizers_agree(req, *configs)
    seq_len = req.seq_len or req.defaults()["seq_len"]
    calib = calibration(req.data, tokenizer, seq_len=seq_len, samples=req.samples or req.defaults()["samples"],
                        seed=req.seed)  # fmt: skip
    ppl_spec = req.ppl if req.ppl is not None else req.data
    if ppl_spec is None and is_demo(configs[0]):  # the demo's own held-out text, as prune-eval measures it
        stream = bos_window_stream(str(heldout_path()), tokenizer, seq_len)
        req.ppl, req.max_windows = DEMO_PPL, req.max_windows or stream.max_windows
        ppl_ids = stream.token_ids
    else:
        ppl_ids = eval_stream(ppl_spec, tokenizer).token_ids  # the tokenizer's own ids (reference protocol)
    if ppl_ids.numel() < seq_len:
        raise UserError(f"the perplexity data has {ppl_ids.numel()} tokens, fewer than one window of --seq-len "
                        f"{seq_len}; lower --seq-len or pass more --ppl data.")  # fmt: skip
    return calib, ppl_ids, seq_len, is_demo(configs[0])


def run_audit(req: AuditRequest, out_dir: str | os.PathLike, *, progress: bool = False) -> dict[str, Any]:
    """Measure both checkpoints on the same windows; write audit.json and audit.html all-or-nothing."""
    from ..compress.quant_eval import SINK_WINDOWS
    from ..report.audit_page import audit_files

    calib, ppl_ids, seq_len, synthetic = prepare(req)
    before = _measure(req.original, req, calib.input_ids, ppl_ids, seq_len, progress)
    ses = req.experts if req.experts is not None else paper_super_experts(before.profile)
    after = _measure(req.compressed, req, calib.input_ids, ppl_ids, seq_len, progress)
    ppl_data = {"spec": req.ppl or req.data or "builtin text", "tokens": int(ppl_ids.numel()),
                "sha256": tensor_sha256(ppl_ids), "seq_len": seq_len, "max_windows": req.max_windows}  # fmt: skip
    document = audit_verdict(before, after, ses, req.threshold) | base_metadata(
        tool="audit", seed=req.seed, experts_source=req.experts_source, super_experts_audited=experts_json(ses),
        sink_windows=min(SINK_WINDOWS, int(calib.input_ids.shape[0])),
        data={"calibration": calib.describe(), "perplexity": ppl_data}, synthetic=synthetic,
    )  # fmt: skip
    write_files(out_dir, {"audit.json": json_bytes(document)} | audit_files(document))
    return document
