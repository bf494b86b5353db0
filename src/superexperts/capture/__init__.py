"""Model + data -> statistics: the instrumented forward, in one pass.

Owns `profile()` (`profile`: expert and layer tables), the capture session and its trackers
(`session`, `tracker`, `experts_fn`, `routing`), calibration data (`data`) and batch sizing
(`batching`). It may import `models` and `runs`.
"""

from .session import Capture, capture

__all__ = ["Capture", "capture"]
