"""Trading states (ACTIVE, REDUCING, HALTED), the global kill switch flag, and risk events.

A model's effective state is the stricter of the global state and its own state, so a global HALTED overrides a
model that is ACTIVE, and releasing the global state never loosens a model that was halted on its own.

This module holds the state book and builds the :class:`RiskEvent` for every change;
:class:`ops_server.risk.rails.RiskRails` decides when limits are breached and publishes the events that the service
audits and counts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from nautilus_mesh.clock import REAL_CLOCK
from nautilus_mesh.errors import ConfigError, ValidationError

log = logging.getLogger(__name__)

SNAPSHOT_VERSION = 1


class TradingState(StrEnum):
    """What a model (or the whole mesh) may trade."""

    ACTIVE = "ACTIVE"
    """Every rail applies as configured."""
    REDUCING = "REDUCING"
    """Only orders that reduce ``|position + open orders|`` without crossing zero pass; cancels always pass."""
    HALTED = "HALTED"
    """No order passes; cancels always pass."""


_SEVERITY: dict[TradingState, int] = {
    TradingState.ACTIVE: 0,
    TradingState.REDUCING: 1,
    TradingState.HALTED: 2,
}


def stricter(a: TradingState, b: TradingState) -> TradingState:
    """Return the stricter of two states (HALTED > REDUCING > ACTIVE)."""
    return a if _SEVERITY[a] >= _SEVERITY[b] else b


def is_stricter(candidate: TradingState, than: TradingState) -> bool:
    """Return True when ``candidate`` is strictly stricter than ``than``."""
    return _SEVERITY[candidate] > _SEVERITY[than]


@dataclass(frozen=True)
class RiskEvent:
    """One auditable risk event: a rejection, a state change, a limit breach, a kill switch or a limits reload.

    Kinds: ``REJECTED``, ``STATE_CHANGED``, ``LIMIT_BREACHED``, ``KILL_SWITCH_ENGAGED``, ``KILL_SWITCH_RELEASED``,
    ``LIMITS_RELOADED``.
    """

    kind: str
    """Event kind, one of the values above."""
    model_id: str
    """The model concerned; ``""`` for a global event."""
    rail: str
    """The rail that fired (``quota``, ``drawdown``, ...); ``""`` when no rail is involved."""
    code: str
    """The stable reason code (``INVALID_QUOTE``, ``MAX_DRAWDOWN``, ...); ``""`` when none."""
    message: str
    """Human-readable message, never containing a secret."""
    details: Mapping[str, str]
    """Structured details as plain strings, e.g. ``{"requested": "1000", "available": "500"}``."""
    state_before: TradingState
    """The state (of the model, or global for a global event) before the event."""
    state_after: TradingState
    """The state after the event; equal to ``state_before`` when nothing changed."""
    at: float
    """Wall-clock time of the event, seconds since the epoch."""

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict for audit logs."""
        return {
            "kind": self.kind,
            "model_id": self.model_id,
            "rail": self.rail,
            "code": self.code,
            "message": self.message,
            "details": dict(self.details),
            "state_before": str(self.state_before),
            "state_after": str(self.state_after),
            "at": self.at,
        }


class TradingStates:
    """The book of trading states: one global state, one per model, and the kill switch flag.

    Models never set explicitly are ACTIVE. Every mutator logs the change and returns the :class:`RiskEvent`
    describing it; the caller (:class:`ops_server.risk.rails.RiskRails`) publishes it.

    Args:
        wall_clock: Epoch seconds for :attr:`RiskEvent.at`.
    """

    def __init__(self, wall_clock: Callable[[], float] = REAL_CLOCK.time) -> None:
        self._wall_clock = wall_clock
        self._global = TradingState.ACTIVE
        self._kill_switch = False
        self._models: dict[str, TradingState] = {}

    @property
    def global_state(self) -> TradingState:
        """The global trading state."""
        return self._global

    @property
    def kill_switch_engaged(self) -> bool:
        """True between :meth:`engage_kill_switch` and :meth:`release_kill_switch`."""
        return self._kill_switch

    def model_state(self, model_id: str) -> TradingState:
        """Return the model's own state, ignoring the global state."""
        return self._models.get(model_id, TradingState.ACTIVE)

    def effective(self, model_id: str) -> TradingState:
        """Return the stricter of the global state and the model's own state."""
        return stricter(self._global, self.model_state(model_id))

    def event(
        self,
        kind: str,
        model_id: str,
        rail: str,
        code: str,
        message: str,
        details: Mapping[str, str],
        before: TradingState,
        after: TradingState,
    ) -> RiskEvent:
        """Build a :class:`RiskEvent` stamped with the wall clock."""
        return RiskEvent(kind, model_id, rail, code, message, dict(details), before, after, self._wall_clock())

    def set_state(self, model_id: str | None, state: TradingState, reason: str) -> RiskEvent:
        """Set a model's own state, or the global state when ``model_id`` is None; return a ``STATE_CHANGED`` event.

        The event is returned even when the state does not change, so every operator action can be audited.

        Raises:
            ValidationError: ``model_id`` is empty, ``state`` is not a trading state, or (``KILL_SWITCH_ENGAGED``)
                the global state would loosen while the kill switch is engaged; use :meth:`release_kill_switch`.
        """
        try:
            state = TradingState(state)
        except ValueError:
            raise ValidationError("INVALID_ARGUMENT", f"unknown trading state {state!r}", field="state") from None
        if model_id == "":
            raise ValidationError(
                "INVALID_ARGUMENT", "model_id must not be empty; pass None for global", field="model_id"
            )
        if model_id is None:
            if self._kill_switch and state is not TradingState.HALTED:
                raise ValidationError(
                    "KILL_SWITCH_ENGAGED",
                    "the kill switch is engaged; release it to change the global trading state",
                    field="state",
                )
            before = self._global
            self._global = state
        else:
            before = self._set_model(model_id, state)
        log.warning("[RISK] trading state %s: %s -> %s (reason: %s)", model_id or "global", before, state, reason)
        return self.event(
            "STATE_CHANGED", model_id or "", "trading_state", "", reason, {"reason": reason}, before, state
        )

    def escalate(
        self, model_id: str, state: TradingState, rail: str, code: str, message: str, details: Mapping[str, str]
    ) -> RiskEvent | None:
        """Move a model to ``state`` only if that is stricter than its own state; return a ``LIMIT_BREACHED`` event.

        Returns None when the model is already at least as strict, so a breach never loosens a state and a
        persisting breach does not repeat the event.
        """
        before = self.model_state(model_id)
        if not is_stricter(state, before):
            return None
        self._set_model(model_id, state)
        log.warning(
            "[RISK] limit breached model=%s rail=%s code=%s %s -> %s %s", model_id, rail, code, before, state, details
        )
        return self.event("LIMIT_BREACHED", model_id, rail, code, message, details, before, state)

    def engage_kill_switch(self, reason: str) -> RiskEvent:
        """Set the global state to HALTED and record the kill switch as engaged."""
        return self._set_kill_switch(True, reason)

    def release_kill_switch(self, reason: str) -> RiskEvent:
        """Release the kill switch and restore the global state to ACTIVE; model states are kept.

        Raises:
            ValidationError: ``KILL_SWITCH_NOT_ENGAGED`` when the kill switch is not engaged, so a release can never
                lift a global halt that an operator set with :meth:`set_state`.
        """
        if not self._kill_switch:
            raise ValidationError("KILL_SWITCH_NOT_ENGAGED", "the kill switch is not engaged", field="kill_switch")
        return self._set_kill_switch(False, reason)

    def _set_kill_switch(self, engaged: bool, reason: str) -> RiskEvent:
        """Engage (global HALTED) or release (global ACTIVE) the kill switch, and the event that records it."""
        before = self._global
        after = TradingState.HALTED if engaged else TradingState.ACTIVE
        self._global = after
        self._kill_switch = engaged
        what, code = ("ENGAGED", "KILL_SWITCH_ENGAGED") if engaged else ("released", "KILL_SWITCH_RELEASED")
        log.warning("[RISK] kill switch %s: global %s -> %s (reason: %s)", what, before, after, reason)
        return self.event(code, "", "kill_switch", "", reason, {"reason": reason}, before, after)

    def _set_model(self, model_id: str, state: TradingState) -> TradingState:
        before = self.model_state(model_id)
        if state is TradingState.ACTIVE:
            # ACTIVE is the default: dropping the entry keeps snapshots small and the map bounded by non-active models.
            self._models.pop(model_id, None)
        else:
            self._models[model_id] = state
        return before

    def snapshot(self) -> dict[str, Any]:
        """Return the states as a JSON-able dict (see :meth:`restore`)."""
        return {
            "version": SNAPSHOT_VERSION,
            "global_state": str(self._global),
            "kill_switch_engaged": self._kill_switch,
            "models": {model_id: str(state) for model_id, state in sorted(self._models.items())},
        }

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Replace every state with those of a :meth:`snapshot`; no events are produced.

        Raises:
            ConfigError: The snapshot is malformed; the current states are left unchanged.
        """
        if not isinstance(snapshot, Mapping):
            raise ConfigError("trading-state snapshot: expected an object")
        unknown = set(snapshot) - {"version", "global_state", "kill_switch_engaged", "models"}
        if unknown:
            raise ConfigError(f"trading-state snapshot: unknown keys {sorted(unknown)}")
        if snapshot.get("version") != SNAPSHOT_VERSION:
            raise ConfigError(
                f"trading-state snapshot: unsupported version {snapshot.get('version')!r}, expected {SNAPSHOT_VERSION}"
            )
        global_state = parse_state(snapshot.get("global_state"), "trading-state snapshot: global_state")
        kill = snapshot.get("kill_switch_engaged", False)
        if not isinstance(kill, bool):
            raise ConfigError(f"trading-state snapshot: kill_switch_engaged must be true or false, got {kill!r}")
        if kill and global_state is not TradingState.HALTED:
            raise ConfigError("trading-state snapshot: kill_switch_engaged requires global_state HALTED")
        raw_models = snapshot.get("models", {})
        if not isinstance(raw_models, Mapping):
            raise ConfigError("trading-state snapshot: models must be an object of model id to state")
        models: dict[str, TradingState] = {}
        for model_id, raw in raw_models.items():
            if not isinstance(model_id, str) or not model_id:
                raise ConfigError(f"trading-state snapshot: model id must be a non-empty string, got {model_id!r}")
            state = parse_state(raw, f"trading-state snapshot: models.{model_id}")
            if state is not TradingState.ACTIVE:
                models[model_id] = state
        self._global = global_state
        self._kill_switch = kill
        self._models = models
        log.info(
            "[RISK] trading states restored: global=%s kill_switch=%s models=%s",
            global_state,
            kill,
            {k: str(v) for k, v in models.items()},
        )


def parse_state(value: object, where: str, *, allowed: frozenset[TradingState] | None = None) -> TradingState:
    """Parse a trading state name, raising ConfigError with ``where`` in the message when it is not one."""
    choices = allowed if allowed is not None else frozenset(TradingState)
    names = ", ".join(s.value for s in TradingState if s in choices)
    for state in choices:
        if value == state.value:
            return state
    raise ConfigError(f"{where} must be one of {names}, got {value!r}", {"field": where})
