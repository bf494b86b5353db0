"""Profile checkpoints larger than memory: layer streaming, resume, data-parallel ranks (issue 6)."""

from .layerwise import stream_profile

__all__ = ["stream_profile"]
