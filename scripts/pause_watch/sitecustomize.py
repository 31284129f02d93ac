"""Pause watch: what holds a service's event loop, printed as it happens (a diagnostic, not part of the services).

Put this folder first on ``PYTHONPATH`` and Python imports it at start in every process it runs (the services that
``bench_mesh.py`` and ``bench_soak.py`` start inherit it), so it needs no change to the code it watches:

    PYTHONPATH=scripts/pause_watch .venv/bin/python benchmarks/bench_soak.py --rate 1000 --duration 150 \\
        --retention 0 --logs var/soak-logs
    grep -h 'GCPAUSE\\|LOOPLAG' var/soak-logs/*.log

It writes two kinds of line to stderr (the services' log files):

- ``GCPAUSE <unix time> gen<N> <ms>ms thread=<name> pid=<pid>``: a collection of the cyclic GC that took
  ``PAUSE_WATCH_GC_MS`` (5) ms or more, timed by a ``gc.callbacks`` hook;
- ``LOOPLAG <unix time> lag=<ms>ms pid=<pid> at <frames>``: the event loop ran no callback for
  ``PAUSE_WATCH_LAG_MS`` (60) ms or more, with where its thread was then, innermost frame first. A callback that
  re-arms itself every 5 ms marks the loop's turns, and a watchdog thread looks every 20 ms; it sees a blocked loop
  (a lock, a read) where it waits, and a busy one between the GIL's switches. Loops made by ``uvloop.new_event_loop``
  only (the services' default, ``NAUTILUS_EVENT_LOOP``).

With ``PAUSE_WATCH_GC_LOG=<folder>`` every collection, however short, is also appended to
``<folder>/gc-<program>-<pid>.log`` as ``<generation> <ms> <objects collected>``, which ``gc_summary.py`` in this
folder totals per process and generation (where the GC's time goes over a whole run, e.g. ``bench_mesh.py``'s,
whose service logs are not kept):

    PAUSE_WATCH_GC_LOG=var/gc PYTHONPATH=scripts/pause_watch .venv/bin/python benchmarks/bench_mesh.py \
        --only mesh3 --signals 30000 --rates ""
    .venv/bin/python scripts/pause_watch/gc_summary.py var/gc
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
import traceback
from typing import Any

GC_MS = float(os.environ.get("PAUSE_WATCH_GC_MS", "5"))
GC_LOG = os.environ.get("PAUSE_WATCH_GC_LOG", "")
_gc_log: list[Any] = []
LAG_MS = float(os.environ.get("PAUSE_WATCH_LAG_MS", "60"))
_started: dict[int, float] = {}


def _gc_callback(phase: str, info: dict[str, Any]) -> None:
    now = time.perf_counter()
    if phase == "start":
        _started[threading.get_ident()] = now
        return
    took_ms = (now - _started.pop(threading.get_ident(), now)) * 1000
    if GC_LOG:
        _log_collection(info, took_ms)
    if took_ms >= GC_MS:
        sys.stderr.write(
            f"GCPAUSE {time.time():.3f} gen{info['generation']} {took_ms:.1f}ms "
            f"thread={threading.current_thread().name} pid={os.getpid()}\n"
        )


def _log_collection(info: dict[str, Any], took_ms: float) -> None:
    if not _gc_log:
        argv = sys.orig_argv  # sys.argv is not set yet when the first collections run at start-up
        module = argv.index("-m") + 1 if "-m" in argv else 0
        program = argv[module] if module else os.path.splitext(os.path.basename(argv[1] if len(argv) > 1 else "-"))[0]
        os.makedirs(GC_LOG, exist_ok=True)
        _gc_log.append(open(os.path.join(GC_LOG, f"gc-{program}-{os.getpid()}.log"), "a", buffering=1))  # noqa: SIM115
    _gc_log[0].write(f"{info['generation']} {took_ms:.3f} {info.get('collected', 0)}\n")


def _watch(loop: Any) -> None:
    main = threading.main_thread().ident
    last = [time.perf_counter()]

    def beat() -> None:
        last[0] = time.perf_counter()
        loop.call_later(0.005, beat)

    def watchdog() -> None:
        reported = 0.0
        while not loop.is_closed():
            time.sleep(0.02)
            seen = last[0]
            lag = time.perf_counter() - seen
            if lag * 1000 >= LAG_MS and seen != reported:
                frame = sys._current_frames().get(main) if main is not None else None
                stack = traceback.extract_stack(frame)[-7:] if frame is not None else []
                where = " <- ".join(f"{os.path.basename(f.filename)}:{f.lineno}:{f.name}" for f in reversed(stack))
                sys.stderr.write(f"LOOPLAG {time.time():.3f} lag={lag * 1000:.0f}ms pid={os.getpid()} at {where}\n")
                reported = seen

    loop.call_soon(beat)
    threading.Thread(target=watchdog, daemon=True, name="pause-watch").start()


def _install() -> None:
    gc.callbacks.append(_gc_callback)
    try:
        import uvloop
    except ImportError:
        return
    make = uvloop.new_event_loop

    def new_event_loop() -> Any:
        loop = make()
        _watch(loop)
        return loop

    uvloop.new_event_loop = new_event_loop


_install()
