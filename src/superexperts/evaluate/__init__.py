"""Prove the effect: perplexity, lm-eval tasks, generations, ablations and attention sinks.

Owns the evaluation building blocks (`perplexity`, `streams`, `lm_eval`, `generation`,
`repetition`), what every evaluation recipe measures (`request`), reversible ablation and its
controls (`ablate/`) and the SE -> massive activation -> attention sink chain (`sinks/`). It may
import `identify`, `capture`, `models` and `runs`. The lm-eval wrapper imports lm-evaluation-harness
lazily, so this package works without the `eval` extra.
"""

from .generation import generate
from .perplexity import c4_text, perplexity, token_stream, wikitext2_text
from .repetition import distinct_n, repetition_metrics
from .streams import EvalStream, eval_stream

__all__ = ["EvalStream", "c4_text", "distinct_n", "eval_stream", "generate", "perplexity", "repetition_metrics",
           "token_stream", "wikitext2_text"]
