"""The cyclic garbage collector: full collections held off during an audit pass, and a serving process's
young collections."""

from __future__ import annotations

import gc
from typing import Any

from infrastructure.collector import NEVER, SERVING_THRESHOLDS, full_collections_held, settle_for_serving


def test_full_collections_held_while_a_pass_runs_and_restored_after() -> None:
    before = gc.get_threshold()

    @full_collections_held()
    def a_pass() -> list[tuple[int, int, int]]:
        seen = [gc.get_threshold()]
        with full_collections_held():  # a pass within a pass
            seen.append(gc.get_threshold())
        seen.append(gc.get_threshold())  # still held: the outer pass runs on
        return seen

    assert a_pass() == [(before[0], before[1], NEVER)] * 3
    assert gc.get_threshold() == before


def collections_during(work: Any) -> list[int]:
    """The generation of each collection the collector started while `work()` ran."""
    started: list[int] = []

    def record(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started.append(info["generation"])

    gc.callbacks.append(record)
    try:
        work()
    finally:
        gc.callbacks.remove(record)
    return started


def cyclic_garbage() -> None:
    """Cycles, and survivors enough (a third of the heap) for CPython to collect the oldest generation."""
    survivors: list[list[Any]] = []
    for _ in range(len(gc.get_objects()) // 3 + 300_000):
        cycle: list[Any] = []
        cycle.append(cycle)
        survivors.append([])


def test_a_held_pass_runs_young_collections_only_and_full_ones_resume_after() -> None:
    held = collections_during(full_collections_held()(cyclic_garbage))
    assert held and 2 not in held, "young collections go on, no full one"
    assert 2 in collections_during(cyclic_garbage), "the same garbage, not held, brings a full collection"


def test_a_serving_process_runs_a_young_collection_per_20000_objects_kept_not_per_700() -> None:
    before = gc.get_threshold()

    def keep(n: int) -> Any:
        return lambda: [[] for _ in range(n)]  # n tracked objects alive until the end

    try:
        gc.set_threshold(700, 10, 10)  # CPython's
        gc.collect()
        assert len(collections_during(keep(14_000))) >= 10  # a young collection per 700
        settle_for_serving()
        assert gc.get_threshold() == SERVING_THRESHOLDS
        gc.collect()
        assert collections_during(keep(14_000)) == []
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_a_pass_held_while_a_process_settles_keeps_full_collections_off_then_restores_the_serving_thresholds() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        with full_collections_held():
            settle_for_serving()
            assert gc.get_threshold() == (SERVING_THRESHOLDS[0], SERVING_THRESHOLDS[1], NEVER)
        assert gc.get_threshold() == SERVING_THRESHOLDS  # not the thresholds from before the pass
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
