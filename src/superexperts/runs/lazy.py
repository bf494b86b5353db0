"""Package names imported on first use (PEP 562), for packages whose building blocks import torch
while the input checks import their light modules (`capture.data`, `evaluate.request`, ...).

    __getattr__ = lazy_exports(__name__, {"Capture": "session", "capture": "session"})
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, where: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` giving each name of `where` from its submodule (name -> submodule)."""

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{where[name]}"), name)

    return __getattr__
