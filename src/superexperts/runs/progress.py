"""Progress bars that leave nothing behind when the loop fails, so an error is the only line shown.

    >>> with progress_bar(range(n), desc="streaming layers", unit="layer") as bar:
    ...     for index in bar:
    ...         ...
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sized

from tqdm.auto import tqdm


@contextlib.contextmanager
def progress_bar(iterable: Sized | Iterable, **kwargs) -> Iterator[Iterator]:
    """Iterate `iterable` under a tqdm bar (same keywords) that erases itself if the body raises.

    The bar is advanced here, not by tqdm's own iterator: that one closes the bar (leaving it on
    screen) as soon as the failing loop is abandoned, before we could clear it.
    """
    bar = tqdm(total=len(iterable) if isinstance(iterable, Sized) else None, **kwargs)

    def advance() -> Iterator:
        for item in iterable:
            yield item
            bar.update(1)

    try:
        yield advance()
    except BaseException:
        bar.leave = False  # an error message follows: no half-drawn bar above it
        raise
    finally:
        bar.close()
