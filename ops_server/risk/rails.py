"""Ops-side pre-trade risk rails (DESIGN.md section 6, strategy layer).

:class:`RiskRails` checks each sized order (:class:`OrderIntent`) against the limits of :class:`RiskLimits` and the
numbers the measurement supplies (:class:`RiskContext`), and raises :class:`RiskRejectedError` for the first rail that
fails, in this order:

==========================  ==========================  ======================================================
rail                        code                        passes when
==========================  ==========================  ======================================================
``trading_state``           ``TRADING_HALTED``          the global state, then the model state, is not HALTED
``trading_state``           ``REDUCE_ONLY``             ... and, when REDUCING, the order reduces exposure
``instrument``              ``INSTRUMENT_NOT_ALLOWED``  the symbol is on the allow-list (no list: all allowed)
``stale_mark``              ``STALE_MARK``              a mark exists and is at most ``stale_mark_seconds`` old
``quota``                   ``INVALID_QUOTE``           opening notional <= available quota + closing notional
``max_order_notional``      ``MAX_ORDER_NOTIONAL``      order notional <= the model's ``max_order_notional``
``max_position``            ``MAX_POSITION``            ``|position + open + order|`` <= the symbol's limit
``gross_exposure``          ``GROSS_EXPOSURE``          gross exposure once the order filled <= the limit
``order_rate``              ``RATE_LIMITED``            the model's token bucket has a token (taken on pass)
==========================  ==========================  ======================================================

Rules:

* Order notional is ``quantity * price`` (the mark). Cancels pass every rail and take no rate token.
* An order *reduces exposure* when the model has a net exposure ``position + open`` that is not zero, the order is on
  the opposite side, and its quantity is at most ``|position + open|`` (it shrinks the exposure without crossing
  zero; a flip is not reducing). Such an order skips the quota, max-position and gross-exposure rails; every other
  rail still applies (a fat-fingered or stale-priced close is still refused, and HALTED still denies it).
* An order that flips the position through zero is split: its *closing* part (up to ``|position + open|``) releases
  that exposure, and only its *opening* part needs quota: it passes when ``opening <= available + closing``, where
  available is the model's quota less the quota it uses (negative while it is over its quota: an overdraft is not
  freed by the close). For an order that opens from flat, opening notional is the order notional (``requested`` in
  the ``INVALID_QUOTE`` details, ``available`` there being ``available + closing``).
* Gross exposure counts filled positions at their marks (live models). The rail projects it as if the order filled:
  ``gross + (|position + order| - |position|) x price``, the order's own effect on the model's filled position (a
  resting order the gross figure never counted frees nothing).
* In REDUCING, an order that flips the position is clipped to its reducing part by :meth:`RiskRails.reduce_only_clip`
  when the limits say ``reduce_only_flip: "clip"`` (the default; the signal path sends the clipped order and reports
  the refused opening part as ``REDUCE_ONLY_OPENING_REFUSED``), or denied whole (``REDUCE_ONLY``) with ``"deny"``.
* The rate token is taken only when every other rail passed, so denied orders do not drain the bucket. Excess orders
  are denied, never queued.
* ``max_drawdown_ratio`` is a fraction of peak equity in (0, 1]; ``max_daily_loss`` is a positive USD amount. Reaching
  either (``-daily_pnl >= max_daily_loss`` or ``drawdown_ratio >= max_drawdown_ratio``) moves the model to its
  ``breach_state`` unless it is already at least that strict; a breach never loosens a state.

The rails are meant to be driven from one event-loop thread and are not thread-safe.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NoReturn

from nautilus_mesh.clock import REAL_CLOCK
from nautilus_mesh.decimals import fmt
from nautilus_mesh.errors import ConfigError, RiskRejectedError
from ops_server.risk.config import ModelLimits, RiskLimits
from ops_server.risk.orders import CAPITAL_RAILS, OrderIntent, RiskContext, closing_quantity, reduces_exposure
from ops_server.risk.trading_state import RiskEvent, TradingState, TradingStates

__all__ = ["RiskRails"]

log = logging.getLogger(__name__)


def _fmt_float(value: float) -> str:
    return fmt(Decimal(repr(value)))


# ----------------------------------------------------------------------------------------------------------- rails


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RiskRails:
    """Pre-trade risk rails, trading states, PnL breaches and the kill switch for the ops service.

    Args:
        limits: The limits in force; replace them with :meth:`reload`.
        clock: Monotonic seconds, for the order-rate token buckets (inject a fake in tests).
        on_event: Called with every :class:`RiskEvent` (rejections, state changes, breaches, kill switch, reloads)
            so the service can audit it and count ``risk_rejections_total{rail,model}``. An exception it raises is
            logged and swallowed, so auditing cannot change a risk decision.
        wall_clock: Epoch seconds for :attr:`RiskEvent.at`.
    """

    def __init__(
        self,
        limits: RiskLimits,
        clock: Callable[[], float] = REAL_CLOCK.monotonic,
        on_event: Callable[[RiskEvent], None] | None = None,
        *,
        wall_clock: Callable[[], float] = REAL_CLOCK.time,
    ) -> None:
        self._limits = limits
        self._clock = clock
        self._on_event = on_event
        self._states = TradingStates(wall_clock)
        self._buckets: dict[str, _Bucket] = {}
        self._rejections: dict[tuple[str, str], int] = {}

    # -- read-only views

    @property
    def limits(self) -> RiskLimits:
        """The limits in force."""
        return self._limits

    @property
    def rejections(self) -> dict[tuple[str, str], int]:
        """A copy of the denial counts keyed by ``(rail, model_id)``."""
        return dict(self._rejections)

    @property
    def global_state(self) -> TradingState:
        """The global trading state."""
        return self._states.global_state

    @property
    def kill_switch_engaged(self) -> bool:
        """True between :meth:`engage_kill_switch` and :meth:`release_kill_switch`."""
        return self._states.kill_switch_engaged

    def state(self, model_id: str) -> TradingState:
        """Return the model's effective state: the stricter of the global state and its own."""
        return self._states.effective(model_id)

    def model_state(self, model_id: str) -> TradingState:
        """Return the model's own state, ignoring the global state."""
        return self._states.model_state(model_id)

    # -- the check

    def check(self, intent: OrderIntent, ctx: RiskContext) -> None:
        """Check one order against every rail; return when it may be sent.

        Raises:
            RiskRejectedError: The first failing rail, with its stable ``code``, ``rail`` and string ``details``.
        """
        if intent.is_cancel:
            return
        try:
            self._check(intent, ctx)
        except RiskRejectedError as exc:
            self._record_rejection(intent, exc)
            raise

    def _check(self, intent: OrderIntent, ctx: RiskContext) -> None:
        halted = self._halted(intent.model_id)  # HALTED in either scope comes before REDUCING in either
        if halted is not None:
            raise halted
        reducing = reduces_exposure(intent, ctx)
        self._check_reducing("global", self._states.global_state, reducing, intent, ctx)
        self._check_reducing("model", self._states.model_state(intent.model_id), reducing, intent, ctx)

        limits = self._limits
        model = limits.for_model(intent.model_id)
        if not limits.instrument_allowed(intent.symbol):
            raise _not_allowed(intent.symbol)
        if ctx.mark_age_seconds is None or ctx.mark_age_seconds > limits.stale_mark_seconds:
            age = "none" if ctx.mark_age_seconds is None else _fmt_float(ctx.mark_age_seconds)
            raise RiskRejectedError(
                "STALE_MARK",
                f"mark for {intent.symbol} is stale (age {age}s, max {_fmt_float(limits.stale_mark_seconds)}s)",
                {"mark_age_seconds": age, "max_age_seconds": _fmt_float(limits.stale_mark_seconds)},
                rail="stale_mark",
            )
        notional = intent.notional
        # A flip through zero first releases the exposure it closes: only the opening part needs quota.
        closing = closing_quantity(intent, ctx) * intent.price
        opening = notional - closing
        if not reducing and opening > ctx.available_quota + closing:
            requested, available = fmt(opening), fmt(ctx.available_quota + closing)
            raise RiskRejectedError(
                "INVALID_QUOTE",
                f"order notional {requested} exceeds the available quota {available}",
                {"requested": requested, "available": available},
                rail="quota",
            )
        if notional > model.max_order_notional:
            raise RiskRejectedError(
                "MAX_ORDER_NOTIONAL",
                f"order notional {fmt(notional)} exceeds the limit {fmt(model.max_order_notional)}",
                {"requested": fmt(notional), "limit": fmt(model.max_order_notional)},
                rail="max_order_notional",
            )
        if not reducing:
            projected = ctx.net_exposure_qty + intent.signed_quantity
            position_limit = model.position_limit(intent.symbol)
            if abs(projected) > position_limit:
                raise RiskRejectedError(
                    "MAX_POSITION",
                    f"{intent.symbol} position would reach {fmt(projected)}, limit {fmt(position_limit)}",
                    {
                        "symbol": intent.symbol,
                        "projected": fmt(projected),
                        "limit": fmt(position_limit),
                    },
                    rail="max_position",
                )
            # Gross exposure counts filled positions only: the order's effect on this model's filled position.
            change = (abs(ctx.position_qty + intent.signed_quantity) - abs(ctx.position_qty)) * intent.price
            gross_after = ctx.gross_exposure + change
            if gross_after > limits.max_gross_exposure:
                raise RiskRejectedError(
                    "GROSS_EXPOSURE",
                    f"gross exposure would reach {fmt(gross_after)}, limit {fmt(limits.max_gross_exposure)}",
                    {
                        "current": fmt(ctx.gross_exposure),
                        "requested": fmt(change),
                        "limit": fmt(limits.max_gross_exposure),
                    },
                    rail="gross_exposure",
                )
        self._take_token(intent.model_id, model)

    def check_paper(self, model_id: str, describe: Callable[[], str] | None = None) -> None:
        """Check a paper order of ``model_id`` (a SHADOW model's, or its stable model's paper twin): only HALTED, the
        global state's and then the model's, refuses it. It risks no capital, so the other rails do not apply (the
        paper venue applies its venue rails). With ``describe`` (what the order was, for the log line, asked only on a
        refusal) a refusal is recorded as the rails record theirs; a paper twin's is not (its live order's was).

        Raises:
            RiskRejectedError: ``TRADING_HALTED`` (rail ``trading_state``).
        """
        exc = self._halted(model_id)
        if exc is not None:
            if describe is not None:
                self._record(model_id, exc, describe())
            raise exc

    def record_refusal(self, intent: OrderIntent, exc: RiskRejectedError) -> None:
        """Count, log and publish a refusal the signal path made under a rail's rule (the opening part of a flip
        clipped in REDUCING, ``REDUCE_ONLY_OPENING_REFUSED``), as the rails do their own."""
        self._record_rejection(intent, exc)

    def check_unpriced(self, model_id: str, symbol: str, *, paper: bool = False) -> NoReturn:
        """Refuse a signal of ``model_id`` in ``symbol`` that cannot be sized because the instrument has no mark yet,
        with the rail the rails' order puts first: ``TRADING_HALTED`` (global, then the model's), then
        ``INSTRUMENT_NOT_ALLOWED`` (not for a ``paper`` order: it meets only HALTED), then ``STALE_MARK`` (REDUCING
        cannot tell a reducing order without its size; the missing mark refuses it). Recorded as the rails record
        their refusals.

        Raises:
            RiskRejectedError: always.
        """
        exc = self._halted(model_id)
        if exc is None and not paper and not self._limits.instrument_allowed(symbol):
            exc = _not_allowed(symbol)
        if exc is None:
            exc = RiskRejectedError(
                "STALE_MARK",
                f"no mark for {symbol} yet",
                {"mark_age_seconds": "none", "max_age_seconds": _fmt_float(self._limits.stale_mark_seconds)},
                rail="stale_mark",
            )
        self._record(model_id, exc, f"symbol={symbol} (no mark: not sized)")
        raise exc

    def _halted(self, model_id: str) -> RiskRejectedError | None:
        """``TRADING_HALTED`` when the global state, or else the model's, is HALTED."""
        for scope, state in (("global", self._states.global_state), ("model", self._states.model_state(model_id))):
            if state is TradingState.HALTED:
                return _halted(scope, state)
        return None

    def _check_reducing(
        self, scope: str, state: TradingState, reducing: bool, intent: OrderIntent, ctx: RiskContext
    ) -> None:
        if state is TradingState.REDUCING and not reducing:
            raise RiskRejectedError(
                "REDUCE_ONLY",
                f"trading is reduce-only ({scope}); the order does not reduce the {intent.symbol} exposure",
                {
                    "scope": scope,
                    "state": str(state),
                    "net_position": fmt(ctx.net_exposure_qty),
                    "order_qty": fmt(intent.signed_quantity),
                },
                rail="trading_state",
            )

    def _take_token(self, model_id: str, model: ModelLimits) -> None:
        now = self._clock()
        bucket = self._buckets.get(model_id)
        if bucket is None:
            bucket = self._buckets[model_id] = _Bucket(tokens=float(model.order_burst), updated=now)
        elapsed = max(0.0, now - bucket.updated)
        bucket.tokens = min(float(model.order_burst), bucket.tokens + elapsed * model.order_rate_per_second)
        bucket.updated = now
        if bucket.tokens < 1.0:
            raise RiskRejectedError(
                "RATE_LIMITED",
                f"order rate above {_fmt_float(model.order_rate_per_second)}/s (burst {model.order_burst})",
                {"rate_per_second": _fmt_float(model.order_rate_per_second), "burst": str(model.order_burst)},
                rail="order_rate",
            )
        bucket.tokens -= 1.0

    def reduce_only_clip(self, intent: OrderIntent, ctx: RiskContext) -> Decimal | None:
        """The quantity a reduce-only flip is clipped to, or None when the order is left as it is.

        In REDUCING (the model's or the global state) with ``reduce_only_flip = "clip"``, an order on the opposite
        side of ``position + open`` and larger than it is clipped to ``|position + open|``: exchanges treat a
        reduce-only order the same way. The clipped order still goes through :meth:`check`.
        """
        if intent.is_cancel or self._limits.reduce_only_flip != "clip":
            return None
        if self._states.effective(intent.model_id) is not TradingState.REDUCING:
            return None
        closing = closing_quantity(intent, ctx)
        return closing if 0 < closing < intent.quantity else None

    def capital_breaches(self, model_id: str) -> int:
        """Denials of ``model_id`` by a capital rail (:data:`CAPITAL_RAILS`) since the process started (count)."""
        return sum(n for (rail, model), n in self._rejections.items() if model == model_id and rail in CAPITAL_RAILS)

    def _record_rejection(self, intent: OrderIntent, exc: RiskRejectedError) -> None:
        self._record(intent.model_id, exc, f"symbol={intent.symbol} side={intent.side} qty={fmt(intent.quantity)}")

    def _record(self, model_id: str, exc: RiskRejectedError, order: str) -> None:
        key = (exc.rail, model_id)
        self._rejections[key] = self._rejections.get(key, 0) + 1
        log.info("[RISK] denied model=%s rail=%s code=%s %s", model_id, exc.rail, exc.code, order)
        state = self._states.effective(model_id)
        self._publish(
            self._states.event("REJECTED", model_id, exc.rail, exc.code, exc.message, exc.details, state, state)
        )

    # -- trading states

    def set_state(self, model_id: str | None, state: TradingState, reason: str) -> RiskEvent:
        """Set a model's own state, or the global state when ``model_id`` is None; publish ``STATE_CHANGED``.

        The event is published even when the state does not change, so every operator action is audited.

        Raises:
            ValidationError: Empty ``model_id``, unknown state, or ``KILL_SWITCH_ENGAGED`` when loosening the global
                state while the kill switch is engaged (use :meth:`release_kill_switch`).
        """
        return self._publish(self._states.set_state(model_id, state, reason))

    def update_pnl(self, model_id: str, daily_pnl: Decimal, drawdown_ratio: float) -> RiskEvent | None:
        """Apply the daily-loss and drawdown limits to fresh PnL numbers.

        Args:
            model_id: The model measured.
            daily_pnl: Today's PnL in USD (a loss is negative).
            drawdown_ratio: Current fall of equity from its peak as a fraction of the peak (0.25 = 25% below it).

        Returns:
            The published ``LIMIT_BREACHED`` event when a breach moved the model to a stricter state, else None (no
            breach, or the model is already at least as strict as its ``breach_state``). ``rail`` is ``daily_loss``
            or ``drawdown`` (the first breached), ``details`` holds the breached values and limits and ``breached``.

        Raises:
            ValueError: ``daily_pnl`` or ``drawdown`` is not finite.
        """
        if not isinstance(daily_pnl, Decimal) or not daily_pnl.is_finite() or not math.isfinite(drawdown_ratio):
            raise ValueError(f"daily_pnl and drawdown_ratio must be finite, got {daily_pnl!r}, {drawdown_ratio!r}")
        model = self._limits.for_model(model_id)
        breached: list[tuple[str, str]] = []
        details: dict[str, str] = {}
        if -daily_pnl >= model.max_daily_loss:
            breached.append(("daily_loss", "MAX_DAILY_LOSS"))
            details.update(daily_pnl=fmt(daily_pnl), max_daily_loss=fmt(model.max_daily_loss))
        if drawdown_ratio >= model.max_drawdown_ratio:
            breached.append(("drawdown", "MAX_DRAWDOWN"))
            details.update(
                drawdown_ratio=_fmt_float(drawdown_ratio), max_drawdown_ratio=_fmt_float(model.max_drawdown_ratio)
            )
        if not breached:
            return None
        rail, code = breached[0]
        details["breached"] = ",".join(r for r, _ in breached)
        message = f"{details['breached']} limit breached; model moved to {model.breach_state}"
        event = self._states.escalate(model_id, model.breach_state, rail, code, message, details)
        return None if event is None else self._publish(event)

    def engage_kill_switch(self, reason: str) -> RiskEvent:
        """Halt all trading globally (cancels still pass), record the kill switch, publish ``KILL_SWITCH_ENGAGED``."""
        return self._publish(self._states.engage_kill_switch(reason))

    def release_kill_switch(self, reason: str) -> RiskEvent:
        """Release the kill switch, restore global ACTIVE (model states are kept), publish ``KILL_SWITCH_RELEASED``.

        Raises:
            ValidationError: ``KILL_SWITCH_NOT_ENGAGED`` when the kill switch is not engaged.
        """
        return self._publish(self._states.release_kill_switch(reason))

    # -- limits and persistence

    def reload(
        self,
        path: str | os.PathLike[str],
        *,
        known_models: Collection[str] | None = None,
        known_instruments: Collection[str] | None = None,
    ) -> RiskLimits:
        """Load and validate new limits; they replace the old ones only when valid (``known_models``,
        ``known_instruments``: as :meth:`RiskLimits.from_dict`).

        Trading states and token buckets are kept (a bucket is capped at the new burst on its next use).

        Raises:
            ConfigError: The file is missing or invalid; the previous limits stay in force.
        """
        try:
            limits = RiskLimits.load(path, known_models=known_models, known_instruments=known_instruments)
        except ConfigError as exc:
            log.error("[RISK] risk limits reload refused, previous limits stay in force: %s", exc.message)
            raise
        self._limits = limits
        log.info("[RISK] risk limits reloaded from %s (%d model overrides)", os.fspath(path), len(limits.models))
        state = self._states.global_state
        self._publish(
            self._states.event(
                "LIMITS_RELOADED", "", "", "", "risk limits reloaded", {"path": os.fspath(path)}, state, state
            )
        )
        return limits

    def snapshot(self) -> dict[str, Any]:
        """Return the trading states and kill switch flag as a JSON-able dict for persistence."""
        return self._states.snapshot()

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Restore states saved by :meth:`snapshot` (no events are published).

        Raises:
            ConfigError: The snapshot is malformed; the current states are kept.
        """
        self._states.restore(snapshot)

    def _publish(self, event: RiskEvent) -> RiskEvent:
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                log.exception("[RISK] on_event callback failed for %s event (model=%s)", event.kind, event.model_id)
        return event


def _halted(scope: str, state: TradingState) -> RiskRejectedError:
    return RiskRejectedError(
        "TRADING_HALTED", f"trading is halted ({scope})", {"scope": scope, "state": str(state)}, rail="trading_state"
    )


def _not_allowed(symbol: str) -> RiskRejectedError:
    return RiskRejectedError(
        "INSTRUMENT_NOT_ALLOWED", f"{symbol} is not on the instrument allow-list", {"symbol": symbol}, rail="instrument"
    )
