"""Prove the effect: perplexity, lm-eval tasks, generations, ablations and attention sinks.

Owns the evaluation building blocks (`perplexity`, `streams`, `lm_eval`, `generation`,
`repetition`), what every evaluation recipe measures (`request`), reversible ablation and its
controls (`ablate/`) and the SE -> massive activation -> attention sink chain (`sinks/`). It may
import `identify`, `capture`, `models` and `runs`. The lm-eval wrapper imports lm-evaluation-harness
lazily, so this package works without the `eval` extra.
"""

from ..runs.lazy import lazy_exports

# On first use: the input checks import modules of this package (`request`, `lm_eval`,
# `ablate.controls`) before torch loads, which these building blocks import. Code of the package
# imports from the submodules (`evaluate.perplexity` is also a submodule's name).
__getattr__ = lazy_exports(__name__, {
    "generate": "generation", "c4_text": "perplexity", "perplexity": "perplexity", "token_stream": "perplexity",
    "wikitext2_text": "perplexity", "distinct_n": "repetition", "repetition_metrics": "repetition",
    "EvalStream": "streams", "eval_stream": "streams"})  # fmt: skip
__all__ = ["EvalStream", "c4_text", "distinct_n", "eval_stream", "generate", "perplexity", "repetition_metrics",
           "token_stream", "wikitext2_text"]
