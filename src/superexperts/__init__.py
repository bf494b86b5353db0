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

import importlib.abc as _abc
import importlib.util as _util
import sys as _sys
from typing import Any as _Any

from .runs.version import __version__

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

# `superexperts.profile` is the function; `from superexperts.profile import Profile` still works
# through the alias above, loaded here first so that a later import cannot rebind the name.
from . import profile as _profile_module  # noqa: F401
from .capture.heapr import heapr
from .capture.profile import Profile, profile
from .identify.rules import Verdict, identify


def find_super_experts(prof: Profile, criterion: str = "paper", **params: _Any) -> Verdict:
    """The Super Experts of a profile under a named criterion (default: the paper's rule).

    >>> find_super_experts(prof, percentile=99.5, max_fraction=0.1).experts
    """
    return identify(prof.expert_stats, prof.num_layers, criterion, **params)


__all__ = ["Profile", "Verdict", "__version__", "find_super_experts", "heapr", "profile"]
