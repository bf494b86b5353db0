"""SE-aware compression studies: RTN fake quantization of experts, reversible in memory (issue 11)."""

from ...runs.lazy import lazy_exports

# On first use: the quant-eval request's checks import `scheme` and `tiers` before torch loads.
__getattr__ = lazy_exports(__name__, {
    "all_experts": "fake", "check_model": "fake", "fake_quantized": "fake", "ACT_BITS": "scheme", "BITS": "scheme",
    "Scheme": "scheme", "fake_quantize_rows": "rtn", "fake_quantize_weight": "rtn"})  # fmt: skip

__all__ = ["ACT_BITS", "BITS", "Scheme", "all_experts", "check_model", "fake_quantize_rows", "fake_quantize_weight",
           "fake_quantized"]
