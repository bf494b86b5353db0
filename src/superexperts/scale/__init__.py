"""Work at real scale: checkpoints larger than memory, many devices, and a cost plan before the run.

Owns layer-by-layer streaming (`layerwise`, `activations`, `scoring`, `sinks`), resume (`resume`,
`state`), data-parallel ranks (`distributed`, `spawn`) and `plan` (`plan`, `plan_model`,
`plan_measure`). It may import `evaluate`, `identify`, `capture`, `models` and `runs`.

    >>> prof = stream_profile("ckpt/", input_ids, device="cuda", dtype=torch.bfloat16, state_dir="state/")
    >>> ppl = stream_perplexity("ckpt/", token_ids, experts=[(1, 68)], seq_len=2048)["perplexity"]
"""

from .layerwise import stream_profile
from .scoring import stream_perplexity
from .spawn import spawn_stream_profile

__all__ = ["spawn_stream_profile", "stream_perplexity", "stream_profile"]
