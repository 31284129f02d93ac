"""The services' cyclic GC on a clock (``nautilus_mesh.serving.collect_on_schedule``)."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from nautilus_mesh import serving


class Node:
    """A GC-tracked object, as an order or a report is."""

    __slots__ = ("__weakref__", "other", "value")

    def __init__(self, value: int) -> None:
        self.value = value
        self.other: Node | None = None


@pytest.fixture
def collections_seen() -> Iterator[list[int]]:
    """The generation of every collection while the test runs, with the services' thresholds."""
    seen: list[int] = []

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "stop":
            seen.append(int(info["generation"]))

    thresholds = gc.get_threshold()
    gc.set_threshold(*serving.GC_THRESHOLDS)
    gc.callbacks.append(callback)
    try:
        yield seen
    finally:
        gc.callbacks.remove(callback)
        gc.set_threshold(*thresholds)
        gc.unfreeze()  # scheduled collections freeze what survives them: give the test process's objects back


def test_young_generation_when_old_objects_leave_as_new_ones_come_piles_up_under_its_count(
    collections_seen: list[int],
) -> None:
    """Why the services collect on a clock: CPython's count is allocations minus deallocations of any age, so a
    steady state that frees an old object for each new one never reaches the threshold while the young pile up."""
    held = [Node(n) for n in range(40_000)]
    gc.collect()
    young_before = len(gc.get_objects(generation=0))
    collections_seen.clear()
    for n in range(40_000):  # twice the 20,000 threshold of new objects, each replacing an old one
        held[n] = Node(n)
    piled = len(gc.get_objects(generation=0)) - young_before
    assert collections_seen == [] and piled >= 40_000  # nothing collected: one pass will walk all of them
    assert serving.scheduled_collection(0.0) == 0
    assert len(gc.get_objects(generation=0)) < 1_000 and collections_seen == [0]


def test_scheduled_collection_when_not_due_collects_the_young_and_freezes_what_survives(
    collections_seen: list[int],
) -> None:
    gc.collect()
    frozen_before = gc.get_freeze_count()
    kept = [Node(n) for n in range(10_000)]
    assert serving.scheduled_collection(serving.FULL_GC_SECONDS - 1) == 0
    assert collections_seen[-1] == 0
    assert gc.get_freeze_count() >= frozen_before + len(kept)  # no later young or middle collection walks them
    assert not gc.get_objects(generation=1) and not gc.get_objects(generation=2)


def test_scheduled_collection_when_full_is_due_frees_cycles_that_died_after_being_frozen(
    collections_seen: list[int],
) -> None:
    first, second = Node(1), Node(2)
    first.other, second.other = second, first  # a cycle alive at its first collection, as an in-flight call's
    gone = weakref.ref(first)
    serving.scheduled_collection(0.0)
    del first, second
    gc.collect()  # an ordinary full collection does not walk frozen objects
    assert gone() is not None
    assert serving.scheduled_collection(serving.FULL_GC_SECONDS) == 2
    assert gone() is None
    assert collections_seen[-1] == 2 and gc.get_freeze_count() > 0  # what survived the full one is frozen again


async def test_collect_on_schedule_when_running_collects_the_young_generation_each_interval(
    collections_seen: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serving, "YOUNG_GC_SECONDS", 0.01)
    collector = asyncio.create_task(serving.collect_on_schedule())
    await asyncio.sleep(0.2)
    collector.cancel()
    with pytest.raises(asyncio.CancelledError):
        await collector
    assert collections_seen.count(0) >= 5  # about one every 10 ms, whatever the allocation count
