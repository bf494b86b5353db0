"""superexperts: find, explain and protect the Super Experts of Mixture-of-Experts LLMs.

>>> import superexperts
>>> prof = superexperts.profile(model, input_ids)          # one calibration pass
>>> verdict = superexperts.find_super_experts(prof)        # the paper's rule (Eq. 6)
>>> verdict.experts
[(1, 68), (2, 92), (3, 82)]

The package is a house of wings, data flowing one way (model + data -> statistics -> verdicts ->
figures/report); `pyproject.toml`'s import-linter contracts keep each wing to the ones below it:

    cli > recipes > report > compress | scale > evaluate > identify > capture > models > runs
"""

from __future__ import annotations

import importlib.abc as _abc
import importlib.util as _util
import sys as _sys
import types as _types
from typing import TYPE_CHECKING
from typing import Any as _Any

from .runs.version import __version__

if TYPE_CHECKING:
    from .capture.profile import Profile
    from .identify.rules import Verdict

# Documented import paths that now live in a wing. `superexperts.loading` and `superexperts.data`
# are the README's public API and stay importable here; the others are kept for one release.
ALIASES = {
    "superexperts.loading": "superexperts.models.loading",
    "superexperts.data": "superexperts.capture.data",
    "superexperts.profile": "superexperts.capture.profile",
    "superexperts.rules": "superexperts.identify.rules",
    "superexperts.known": "superexperts.identify.known",
    "superexperts.errors": "superexperts.runs.errors",
    "superexperts.runfolder": "superexperts.runs.runfolder",
    "superexperts.stream": "superexperts.scale",
}


class _AliasLoader(_abc.Loader):
    """Makes `import superexperts.loading` return the module where it now lives (the same object)."""

    def create_module(self, spec):
        return importlib_import(ALIASES[spec.name])

    def exec_module(self, module):
        pass


class _AliasFinder(_abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname in ALIASES:
            return _util.spec_from_loader(fullname, _AliasLoader())
        return None


def importlib_import(name: str):
    import importlib

    return importlib.import_module(name)


if not any(isinstance(f, _AliasFinder) for f in _sys.meta_path):
    _sys.meta_path.append(_AliasFinder())

# The API names load their wing on first use: `superexperts --help` and the CLI's input checks must
# not pay for torch and transformers (seconds) before they answer.
_LAZY = {
    "profile": ("superexperts.capture.profile", "profile"),
    "Profile": ("superexperts.capture.profile", "Profile"),
    "Verdict": ("superexperts.identify.rules", "Verdict"),
    "heapr": ("superexperts.capture.heapr", "heapr"),
}


def __getattr__(name: str) -> _Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib_import(module), attr)
    raise AttributeError(f"module 'superexperts' has no attribute {name!r}")


class _Package(_types.ModuleType):
    """`superexperts.profile` is the function; importing the alias module `superexperts.profile`
    (`from superexperts.profile import Profile`) would make the import system bind the name to the
    module here: that one binding is refused, so the name keeps resolving to the function."""

    def __setattr__(self, name: str, value: _Any) -> None:
        if name == "profile" and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package


def find_super_experts(prof: Profile, criterion: str = "paper", **params: _Any) -> Verdict:
    """The Super Experts of a profile under a named criterion (default: the paper's rule).

    >>> find_super_experts(prof, percentile=99.5, max_fraction=0.1).experts
    """
    from .identify.rules import identify

    return identify(prof.expert_stats, prof.num_layers, criterion, **params)


__all__ = ["Profile", "Verdict", "__version__", "find_super_experts", "heapr", "profile"]
