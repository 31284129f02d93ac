"""cancel_and_wait: background tasks are cancelled together and awaited; None stands for a task never started."""

from __future__ import annotations

import asyncio

import pytest

from nautilus_mesh.tasks import cancel_and_wait


async def test_cancel_and_wait_when_tasks_run_then_each_is_cancelled_and_has_finished_its_cleanup() -> None:
    cleaned: list[str] = []
    running = {name: asyncio.Event() for name in ("a", "b")}

    async def forever(name: str) -> None:
        running[name].set()
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append(name)

    tasks = [asyncio.create_task(forever(name)) for name in running]
    for event in running.values():
        await event.wait()
    await cancel_and_wait(tasks[0], None, tasks[1])
    assert all(task.cancelled() for task in tasks)
    assert sorted(cleaned) == ["a", "b"]


async def test_cancel_and_wait_when_nothing_was_started_then_returns() -> None:
    await cancel_and_wait(None)
    await cancel_and_wait()


async def test_cancel_and_wait_when_a_task_failed_then_its_error_is_raised() -> None:
    async def fails() -> None:
        raise RuntimeError("broken loop")

    task = asyncio.create_task(fails())
    await asyncio.wait([task])  # it ran and failed
    with pytest.raises(RuntimeError, match="broken loop"):
        await cancel_and_wait(task)
