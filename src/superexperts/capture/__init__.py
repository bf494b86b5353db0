"""Model + data -> statistics: the instrumented forward, in one pass.

Owns `profile()` (`profile`: expert, layer and atom tables), the capture session and its trackers
(`session`, `tracker`, `atoms`, `experts_fn`, `routing`), HEAPr's one forward + backward (`heapr`),
calibration data (`data`) and batch sizing (`batching`). It may import `models` and `runs`.
"""

from .session import Capture, capture

__all__ = ["Capture", "capture"]
