"""superexperts: find, explain and protect the Super Experts of Mixture-of-Experts LLMs.

>>> import superexperts
>>> prof = superexperts.profile(model, input_ids)          # one calibration pass
>>> verdict = superexperts.find_super_experts(prof)        # the paper's rule (Eq. 6)
>>> verdict.experts
[(1, 68), (2, 92), (3, 82)]
"""

__version__ = "0.1.0"

from typing import Any as _Any

# `superexperts.profile` is the function; the module stays importable as `superexperts.profile`
# for `from superexperts.profile import Profile`.
from .profile import Profile, profile
from .rules import Verdict, identify


def find_super_experts(prof: Profile, criterion: str = "paper", **params: _Any) -> Verdict:
    """The Super Experts of a profile under a named criterion (default: the paper's rule).

    >>> find_super_experts(prof, percentile=99.5, max_fraction=0.1).experts
    """
    return identify(prof.expert_stats, prof.num_layers, criterion, **params)


__all__ = ["Profile", "Verdict", "__version__", "find_super_experts", "profile"]
