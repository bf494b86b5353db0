"""SE-aware compression studies: RTN fake quantization of experts, reversible in memory (issue 11)."""

from .fake import all_experts, check_model, fake_quantized
from .rtn import ACT_BITS, BITS, Scheme, fake_quantize_rows, fake_quantize_weight

__all__ = ["ACT_BITS", "BITS", "Scheme", "all_experts", "check_model", "fake_quantize_rows", "fake_quantize_weight",
           "fake_quantized"]
