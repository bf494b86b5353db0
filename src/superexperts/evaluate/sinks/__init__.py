"""Attention sinks: measure the SE -> massive activation -> sink chain, before and after pruning (issue 5)."""

from ...runs.lazy import lazy_exports

# On first use: the sinks request's checks import `validate` before torch loads, which these import.
__getattr__ = lazy_exports(__name__, {
    "record_sinks": "attention", "sink_probabilities": "attention", "ConditionSinks": "measure",
    "SinkResult": "measure", "measure_sinks": "measure", "result_json": "measure", "EPSILON": "metrics",
    "QUERY_AGGREGATION": "metrics", "d_sink": "metrics", "sink_rate": "metrics"})  # fmt: skip

__all__ = ["EPSILON", "QUERY_AGGREGATION", "ConditionSinks", "SinkResult", "d_sink", "measure_sinks",
           "record_sinks", "result_json", "sink_probabilities", "sink_rate"]
