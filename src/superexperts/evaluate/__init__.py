"""Evaluation building blocks: perplexity, lm-eval tasks, generation samples, repetition metrics.

The lm-eval wrapper (`superexperts.evaluate.lm_eval`) imports lm-evaluation-harness lazily, so
this package works without the `eval` extra.
"""

from .generation import generate
from .perplexity import c4_text, perplexity, token_stream, wikitext2_text
from .repetition import distinct_n, repetition_metrics
from .streams import EvalStream, eval_stream

__all__ = ["EvalStream", "c4_text", "distinct_n", "eval_stream", "generate", "perplexity", "repetition_metrics",
           "token_stream", "wikitext2_text"]
