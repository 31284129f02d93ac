"""The services' cyclic GC on a clock (``nautilus_mesh.serving.collect_on_schedule``)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import pytest

from nautilus_mesh import serving


class Node:
    """A GC-tracked object, as an order or a report is."""

    __slots__ = ("value",)

    def __init__(self, value: int) -> None:
        self.value = value


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


def test_scheduled_collection_when_due_collects_the_middle_or_a_full_generation(collections_seen: list[int]) -> None:
    gc.collect()  # every count at 0
    assert serving.scheduled_collection(0.0) == 0
    for _ in range(serving.MIDDLE_GC_EVERY - 2):
        gc.collect(0)
    assert serving.scheduled_collection(0.0) == 0
    assert serving.scheduled_collection(0.0) == 1  # MIDDLE_GC_EVERY young collections since the middle one: due
    assert serving.scheduled_collection(serving.FULL_GC_SECONDS) == 2
    assert serving.scheduled_collection(serving.FULL_GC_SECONDS - 1) == 0
    assert collections_seen[-5:] == [0, 0, 1, 2, 0]


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
