"""FingerprintWindow: the last N fingerprints, oldest first, with membership, held to an ordered-dict model."""

from __future__ import annotations

import random
import tracemalloc
from collections import OrderedDict

import pytest

from engine_server.fingerprints import FingerprintWindow
from engine_server.ledger_snapshot import fingerprint


def model_add(model: OrderedDict[int, None], capacity: int, value: int) -> None:
    """The window as the ledger kept it before: an ordered dict trimmed to ``capacity``, oldest first."""
    if capacity:
        model[value] = None
        if len(model) > capacity:
            model.popitem(last=False)


@pytest.mark.parametrize("capacity", [1, 2, 7, 8, 9, 100, 1000])
def test_window_when_filled_past_capacity_keeps_the_newest_in_order(capacity: int) -> None:
    rng = random.Random(capacity)
    window, model = FingerprintWindow(capacity), OrderedDict[int, None]()
    for n in range(capacity * 5 + 3):
        value = rng.getrandbits(64)
        window.add(value)
        model_add(model, capacity, value)
        if n % 7 == 0:
            assert window.oldest_first().tolist() == list(model)
    assert window.oldest_first().tolist() == list(model) and len(window) == capacity
    for value in model:
        assert value in window
    evicted = FingerprintWindow(capacity)
    evicted.extend(range(capacity + 1))
    assert 0 not in evicted and capacity in evicted


def test_window_when_capacity_zero_keeps_nothing() -> None:
    window = FingerprintWindow(0)
    window.add(fingerprint("o-1"))
    assert len(window) == 0 and fingerprint("o-1") not in window and window.oldest_first().tolist() == []


def test_window_when_asked_for_what_no_fingerprint_can_be_answers_false() -> None:
    window = FingerprintWindow(10)
    window.extend([0, 2**64 - 1])
    assert 0 in window and 2**64 - 1 in window
    assert -1 not in window and 2**64 not in window and "0" not in window and 1 not in window


def test_window_when_rebuilt_from_its_list_answers_the_same() -> None:
    """A snapshot saves ``oldest_first()`` and a restart ``extend``s a new window with it."""
    ids = [f"o-{n}" for n in range(500)]
    window = FingerprintWindow(300)
    window.extend(fingerprint(i) for i in ids)
    restored = FingerprintWindow(300)
    restored.extend(window.oldest_first())
    assert restored.oldest_first() == window.oldest_first()
    assert all(fingerprint(i) in restored for i in ids[200:])
    assert not any(fingerprint(i) in restored for i in ids[:200])
    restored.add(fingerprint("o-500"))  # the oldest kept leaves first, as in the window it came from
    assert fingerprint("o-200") not in restored and fingerprint("o-201") in restored


def test_window_when_full_at_the_default_size_takes_under_40_bytes_an_entry() -> None:
    """The docstring's memory figure, measured with tracemalloc (an ordered dict took ~140 bytes an entry)."""
    capacity = 200_000
    values = [random.getrandbits(64) for _ in range(capacity)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        window = FingerprintWindow(capacity)
        window.extend(values)
        window.extend(values[:1000])  # past capacity: the oldest leave
        size = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(window) == capacity
    assert size / capacity < 40
