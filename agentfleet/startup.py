"""A process's start-up imports: no cyclic collection while they pile up, frozen after.

Importing Prefect and the flows makes some 150,000 objects that live as long as the
process. Python's collector runs every few hundred allocations and its older generations
walk everything allocated so far, all of it still alive: about 0.2 s of the 1.5 s that
``import flows.sprint`` takes on a 2-core machine. Frozen afterwards, no full collection
of the process's life walks them again (nor copies the pages of a forked run that does).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def long_lived_imports() -> Iterator[None]:
    """Import in the block with the collector off; freeze what is there after it, and
    turn the collector back on (if it was), whatever the block raised."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()
