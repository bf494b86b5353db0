"""Model + data -> statistics: the instrumented forward, in one pass.

Owns `profile()` (`profile`: expert, layer and atom tables), the capture session and its trackers
(`session`, `tracker`, `atoms`, `experts_fn`, `routing`), HEAPr's one forward + backward (`heapr`),
calibration data (`data`) and batch sizing (`batching`). It may import `models` and `runs`.
"""

from ..runs.lazy import lazy_exports

# On first use: the input checks import `data` and `batching` before torch loads, which `session` imports.
__getattr__ = lazy_exports(__name__, {"Capture": "session", "capture": "session"})
__all__ = ["Capture", "capture"]
