"""The gate in front of the engine link: ``ENGINE_UNAVAILABLE`` before any sizing, and a circuit breaker.

The signal path asks :meth:`EngineGate.require` right after routing, so while the engine link is down a signal is
refused with ``ENGINE_UNAVAILABLE`` (an unavailability, never a risk rail: the stale mark it would meet later is a
symptom of the outage, not its cause).

The circuit breaker counts consecutive refusals. After ``failure_threshold`` of them it goes OPEN: signals are answered
at once (``ENGINE_UNAVAILABLE`` with ``circuit=OPEN``, no sizing, no journal, no queueing). The probe is the
link's own reconnect (it retries every <= 0.5 s on its own): as soon as the link is available again the breaker closes
and the signal goes through, so recovery is not delayed by the breaker. While the link stays down, a signal after
``probe_interval`` seconds is let through HALF_OPEN, finds the link down and opens the circuit again.
State changes are logged, counted in ``engine_circuit_transitions_total{state}``, exported as
``engine_circuit_state`` and shown in health.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import StrEnum
from typing import Protocol

from nautilus_mesh.clock import REAL_CLOCK
from nautilus_mesh.errors import UnavailableError
from ops_server.metrics import OpsMetrics

log = logging.getLogger(__name__)


class CircuitState(StrEnum):
    CLOSED = "CLOSED"
    HALF_OPEN = "HALF_OPEN"
    OPEN = "OPEN"


_STATE_NUMBER = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}


class CircuitBreaker:
    """Consecutive-failure circuit breaker.

    Args:
        failure_threshold: consecutive failures that open the circuit.
        probe_interval: seconds the circuit stays OPEN before the next call is let through as a probe.
        on_change: called with the new state on every transition.
        clock: monotonic clock (seconds).
    """

    def __init__(
        self,
        failure_threshold: int = 5,
        probe_interval: float = 0.5,
        *,
        on_change: Callable[[CircuitState], None] | None = None,
        clock: Callable[[], float] = REAL_CLOCK.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        self.failure_threshold = failure_threshold
        self.probe_interval = probe_interval
        self._on_change = on_change
        self._clock = clock
        self.state = CircuitState.CLOSED
        self.consecutive_failures = 0
        self.since = clock()
        """Clock time of the last transition."""

    def _move(self, state: CircuitState) -> None:
        if state is self.state:
            return
        self.state = state
        self.since = self._clock()
        if self._on_change is not None:
            self._on_change(state)

    def allow(self) -> bool:
        """False while OPEN and the probe interval has not passed; else True (a probe when half open)."""
        if self.state is CircuitState.OPEN:
            if self._clock() - self.since < self.probe_interval:
                return False
            self._move(CircuitState.HALF_OPEN)
        return True

    def record_failure(self) -> None:
        self.consecutive_failures += 1
        if self.state is CircuitState.HALF_OPEN or self.consecutive_failures >= self.failure_threshold:
            self._move(CircuitState.OPEN)

    def record_success(self) -> None:
        self.consecutive_failures = 0
        self._move(CircuitState.CLOSED)


class LinkState(Protocol):
    """What the gate reads from the engine link."""

    @property
    def available(self) -> bool: ...

    def ready_to_send(self) -> bool: ...


class EngineGate:
    """Refuses signals at once while the engine link cannot take orders.

    Args:
        link: the engine link (``available``: order stream connected and quotes live; ``ready_to_send``: queue room).
        metrics: ops metrics (circuit state and transitions).
        failure_threshold: consecutive refusals that open the circuit.
        probe_interval: seconds between probes while OPEN.
        clock: monotonic clock (seconds).
    """

    def __init__(
        self,
        link: LinkState,
        metrics: OpsMetrics,
        *,
        failure_threshold: int = 5,
        probe_interval: float = 0.5,
        clock: Callable[[], float] = REAL_CLOCK.monotonic,
    ) -> None:
        self._link = link
        self._metrics = metrics
        self.breaker = CircuitBreaker(failure_threshold, probe_interval, on_change=self._on_change, clock=clock)
        metrics.circuit_state.set(0)

    def _on_change(self, state: CircuitState) -> None:
        self._metrics.circuit_state.set(_STATE_NUMBER[state])
        self._metrics.circuit_transitions.labels(state.value).inc()
        if state is CircuitState.OPEN:
            log.warning(
                "[ENGINE-LINK] circuit OPEN after %d consecutive failures: signals answer ENGINE_UNAVAILABLE at once",
                self.breaker.consecutive_failures,
            )
        else:
            log.info("[ENGINE-LINK] circuit %s", state.value)

    def probe(self) -> bool:
        """True when the engine link can take an order now; the circuit then closes at once (the link's own reconnect,
        every <= 0.5 s, is the probe). Called by every signal and by ops' health refresh, so the circuit closes once the
        engine is back even while no signal comes to find out (state, metrics and health follow it)."""
        if not (self._link.available and self._link.ready_to_send()):
            return False
        breaker = self.breaker
        if breaker.state is not CircuitState.CLOSED or breaker.consecutive_failures:
            breaker.record_success()
        return True

    def require(self) -> None:
        """Raise ``ENGINE_UNAVAILABLE`` unless the engine link can take an order now.

        Raises:
            UnavailableError: the link is down, its quotes are not flowing, its queue is full, or the circuit is open.
        """
        breaker = self.breaker
        if self.probe():
            return
        if not breaker.allow():
            raise UnavailableError(
                "ENGINE_UNAVAILABLE",
                "the engine link is down (circuit open); no order was sent",
                {"circuit": CircuitState.OPEN.value, "failures": str(breaker.consecutive_failures)},
            )
        breaker.record_failure()
        reason = "backlogged" if self._link.available else "down"
        raise UnavailableError(
            "ENGINE_UNAVAILABLE",
            f"the engine link is {reason}; no order was sent",
            {"circuit": breaker.state.value, "failures": str(breaker.consecutive_failures)},
        )
