"""The cyclic garbage collector: in a serving process after start-up, and during the long audit passes
(verify, replay, rebuild, export)."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_holders = 0
_thresholds = gc.get_threshold()
NEVER = 2**30  # a gen-2 threshold no pass reaches
SERVING_THRESHOLDS = (20_000, 20, 10)  # CPython's are (700, 10, 10)


def settle_for_serving() -> None:
    """Once a serving process has started: start-up's objects leave the collector's generations (a full
    collection walks only what came since), and a young collection waits for 20,000 more tracked objects
    than were freed instead of 700. A request's objects are freed by reference counting as it ends, so
    at 1,000 submissions a second the default ran 60-135 young collections a second, a median 5 % of the
    API process's time (docs/performance.md); cycles are still collected young, later. These become the
    thresholds a held pass (`full_collections_held`) restores; one held now keeps its full collections off."""
    global _thresholds
    gc.freeze()
    with _lock:
        _thresholds = SERVING_THRESHOLDS
        young, middle, full = SERVING_THRESHOLDS
        gc.set_threshold(young, middle, full if _holders == 0 else NEVER)


@contextmanager
def full_collections_held() -> Iterator[None]:
    """No full (generation 2) collection while it is held: young ones go on, as the thresholds were after.

    An audit pass keeps every task's and account's state alive to its end, so each full collection
    walks them all again: they took a third of a `verify`'s CPU at 500,000 events. The pass itself
    leaves next to no cyclic garbage (about 20 objects after such a verify, 1,300 after a rebuild),
    and reference counting frees the rest as it goes; what cycles others make meanwhile (a server
    thread) are collected young, or after. Nested and concurrent holders share one hold; usable as a
    decorator."""
    global _holders, _thresholds
    with _lock:
        if _holders == 0:
            _thresholds = gc.get_threshold()
            gc.set_threshold(_thresholds[0], _thresholds[1], NEVER)
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                gc.set_threshold(*_thresholds)
