"""Model + data -> statistics: the instrumented forward, in one pass.

Owns `profile()` (`profile`: expert, layer and atom tables), the capture session and its trackers
(`session`, `tracker`, `atoms`, `experts_fn`, `routing`), HEAPr's one forward + backward (`heapr`),
calibration data (`data`) and batch sizing (`batching`). It may import `models` and `runs`.
"""

__all__ = ["Capture", "capture"]


def __getattr__(name: str):
    """`Capture` and `capture` from `session` on first use (PEP 562): the input checks import this
    package's light modules (`data`, `batching`) before torch loads, which `session` imports."""
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import session

    return getattr(session, name)
