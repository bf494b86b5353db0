"""Evaluation building blocks: perplexity, lm-eval tasks, generation samples, repetition metrics.

The lm-eval wrapper (`superexperts.evaluate.lm_eval`) imports lm-evaluation-harness lazily, so
this package works without the `eval` extra.
"""

from .generation import generate
from .perplexity import c4_text, perplexity, token_stream, wikitext2_text
from .repetition import distinct_n, repetition_metrics

__all__ = ["c4_text", "distinct_n", "generate", "perplexity", "repetition_metrics", "token_stream",
           "wikitext2_text"]
