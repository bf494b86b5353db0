"""Attention sinks: measure the SE -> massive activation -> sink chain, before and after pruning (issue 5)."""

from .attention import record_sinks, sink_probabilities
from .measure import ConditionSinks, SinkResult, measure_sinks, result_json
from .metrics import EPSILON, QUERY_AGGREGATION, d_sink, sink_rate

__all__ = ["EPSILON", "QUERY_AGGREGATION", "ConditionSinks", "SinkResult", "d_sink", "measure_sinks",
           "record_sinks", "result_json", "sink_probabilities", "sink_rate"]
