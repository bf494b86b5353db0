"""Where the tool keeps what it can always rebuild: the demo's saved copy (models.demo), the names of
lm-eval's tasks (evaluate.lm_eval). $SUPEREXPERTS_CACHE, else $XDG_CACHE_HOME/superexperts, else
~/.cache/superexperts. Deleting it costs only the time to rebuild.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    base = os.environ.get("SUPEREXPERTS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "superexperts"
    )
    return Path(base)
