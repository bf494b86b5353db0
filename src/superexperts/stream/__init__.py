"""Profile checkpoints larger than memory: layer streaming, resume, data-parallel ranks (issue 6).

    >>> prof = stream_profile("ckpt/", input_ids, device="cuda", dtype=torch.bfloat16, state_dir="state/")
    >>> ppl = stream_perplexity("ckpt/", token_ids, experts=[(1, 68)], seq_len=2048)["perplexity"]
"""

from .layerwise import stream_profile
from .scoring import stream_perplexity
from .spawn import spawn_stream_profile

__all__ = ["spawn_stream_profile", "stream_perplexity", "stream_profile"]
