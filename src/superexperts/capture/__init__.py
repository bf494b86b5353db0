"""The instrumented forward: per-expert and per-layer statistics in one pass."""

from .session import Capture, capture

__all__ = ["Capture", "capture"]
