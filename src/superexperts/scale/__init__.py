"""Work at real scale: checkpoints larger than memory, many devices, and a cost plan before the run.

Owns layer-by-layer streaming (`layerwise`, `activations`, `scoring`, `sinks`), resume (`resume`,
`state`), data-parallel ranks (`distributed`, `spawn`) and `plan` (`plan`, `plan_model`,
`plan_measure`). It may import `evaluate`, `identify`, `capture`, `models` and `runs`.

    >>> prof = stream_profile("ckpt/", input_ids, device="cuda", dtype=torch.bfloat16, state_dir="state/")
    >>> ppl = stream_perplexity("ckpt/", token_ids, experts=[(1, 68)], seq_len=2048)["perplexity"]
"""

from ..runs.lazy import lazy_exports

# Loaded on first use: `superexperts plan --help` reads the device table of `scale.plan` and must
# not pay for torch and transformers (seconds) through this package's streaming modules.
__getattr__ = lazy_exports(__name__, {"stream_profile": "layerwise", "stream_perplexity": "scoring",
                                      "spawn_stream_profile": "spawn"})  # fmt: skip
__all__ = ["spawn_stream_profile", "stream_perplexity", "stream_profile"]
