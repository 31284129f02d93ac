"""The signal path up to the risk rails: validate, route, size.

A signal is a target exposure (a fraction of the model's quota in [-1, 1]); the router turns
it into the order that moves the model from its position (plus open orders) to the target,
rounded to the instrument's lot. Live and shadow orders are different types, and each order
sink accepts only its own type, so a shadow order cannot reach a live venue by construction.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from decimal import Decimal

from nautilus_mesh.api.ops.v1 import ops_pb2
from nautilus_mesh.bounds import require_bounded
from nautilus_mesh.decimals import EXACT, require_finite
from nautilus_mesh.errors import NotFoundError, PermissionDeniedError, RiskRejectedError, ValidationError
from ops_server.exposure import ExposureView
from ops_server.model_registry import ModelRegistry, ModelRoute, RoutingMode, is_paper_book

log = logging.getLogger(__name__)

ZERO = Decimal(0)
MAX_ID_LENGTH = 128


@dataclass(frozen=True)
class SizedOrder:
    """An order the router wants to send, before the risk rails."""

    client_order_id: str
    signal_id: str
    model_id: str
    strategy_id: str
    instrument: str
    side: str  # "BUY" | "SELL"
    quantity: Decimal
    mark: Decimal
    """The mark the order was sized at (its reference mid for slippage)."""
    owner: str = ""
    """The model whose strategy stream receives this order's fills ("" for an internal paper twin)."""


@dataclass(frozen=True)
class LiveOrder:
    """An order bound for the live venue."""

    order: SizedOrder


@dataclass(frozen=True)
class ShadowOrder:
    """An order bound for the paper venue only."""

    order: SizedOrder


_EXACT = EXACT
"""Sizing's arithmetic: exact for any product or whole quotient of wire decimals."""


class NoMarkError(RiskRejectedError):
    """A signal cannot be sized: its instrument has no mark yet (``STALE_MARK``; the signal path asks the rails which
    refusal comes first, :meth:`ops_server.risk.RiskRails.check_unpriced`)."""

    def __init__(self, instrument: str) -> None:
        super().__init__("STALE_MARK", f"no mark for {instrument} yet", {"instrument": instrument}, rail="stale_mark")


def client_order_id(model_id: str, signal_id: str) -> str:
    """Deterministic client order id: the same model and signal always give the same id."""
    digest = hashlib.sha256(f"{model_id}\x00{signal_id}".encode()).hexdigest()[:24]
    return f"o-{digest}"


def validate_signal(signal: ops_pb2.Signal, max_id_length: int = MAX_ID_LENGTH) -> None:
    """Field-level validation of a signal; raises ValidationError naming the field.

    ``max_id_length`` (ops' ``signal_id_max_length``) bounds the signal id and the instrument; a model id is bounded
    as the registry bounds it (:data:`MAX_ID_LENGTH`), so a tighter signal id limit never refuses a registered model.
    """
    for field, value, limit in (
        ("signal_id", signal.signal_id, max_id_length),
        ("model_id", signal.model_id, MAX_ID_LENGTH),
    ):
        if not value:
            raise ValidationError("MISSING_FIELD", f"{field} is required", field=field)
        if len(value) > limit or not value.isprintable():
            raise ValidationError(
                "INVALID_ID", f"{field} must be printable and at most {limit} characters", field=field
            )
    require_bounded(signal.instrument, "instrument", limit=max_id_length, required=True)
    require_finite(signal.target, "target", -1.0, 1.0)
    require_finite(signal.confidence, "confidence", 0.0, 1.0)


class SignalRouter:
    """Routes and sizes signals against one :class:`ExposureView`.

    Args:
        registry: the model registry (routing mode, weights, instruments).
        exposure: quotas, positions plus open orders, marks and instrument rules.
        max_id_length: the longest ``signal_id`` and instrument accepted, in characters.
    """

    def __init__(self, registry: ModelRegistry, exposure: ExposureView, max_id_length: int = MAX_ID_LENGTH) -> None:
        self.registry = registry
        self._exposure = exposure
        self._max_id_length = max_id_length

    def validate(self, signal: ops_pb2.Signal) -> None:
        """Field-level validation (:func:`validate_signal`); raises ValidationError naming the field."""
        validate_signal(signal, self._max_id_length)

    def route(self, signal: ops_pb2.Signal) -> ModelRoute:
        """Find a validated signal's route.

        Raises:
            NotFoundError: ``UNKNOWN_MODEL``, or ``UNKNOWN_INSTRUMENT`` when the model does not trade the instrument.
            PermissionDeniedError: ``MODEL_DISABLED``.
        """
        try:
            route = self.registry.route(signal.model_id)
        except NotFoundError as exc:
            raise NotFoundError(exc.code, exc.message, exc.details, field="model_id") from None
        if signal.instrument not in route.instruments:
            raise NotFoundError(
                "UNKNOWN_INSTRUMENT",
                f"model {route.model_id!r} does not trade {signal.instrument!r}",
                {"model_id": route.model_id, "instrument": signal.instrument},
                field="instrument",
            )
        if route.mode is RoutingMode.DISABLED:
            model = route.model_id
            raise PermissionDeniedError(
                "MODEL_DISABLED", f"model {model!r} is disabled", {"model_id": model}, field="model_id"
            )
        return route

    def size(self, signal: ops_pb2.Signal, route: ModelRoute) -> LiveOrder | ShadowOrder | None:
        """The order that moves the model to the signal's target, or None when already there."""
        rules = self._exposure.rules(route, signal.instrument)
        if rules is None:
            venue = self._exposure.paper_venue if route.mode is RoutingMode.SHADOW else self._exposure.live_venue
            raise NotFoundError(
                "UNKNOWN_INSTRUMENT",
                f"the engine's venue {venue!r} does not list {signal.instrument!r}",
                {"instrument": signal.instrument, "venue": venue},
                field="instrument",
            )
        mark = self._exposure.mark(signal.instrument)
        if mark is None or mark <= 0:
            raise NoMarkError(signal.instrument)
        quota = self._exposure.quota(route)
        # desired = target x quota / mark, rounded toward zero to the lot: whole lots by one exact integer division
        # (in the default 28 digits, target x quota / mark could round up past a lot boundary before the floor).
        lots = _EXACT.divide_int(
            _EXACT.multiply(Decimal(repr(signal.target)), quota), _EXACT.multiply(mark, rules.lot_size)
        )
        desired = _EXACT.multiply(lots, rules.lot_size)
        book = route.book
        current = self._exposure.exposure_qty(book, signal.instrument)
        delta = _EXACT.subtract(desired, current)
        size = delta.copy_abs()  # exact (abs() would round to the default 28 digits)
        if size < rules.lot_size or size < rules.min_quantity:
            return None
        order = SizedOrder(
            client_order_id=client_order_id(book, signal.signal_id),
            signal_id=signal.signal_id,
            model_id=book,
            strategy_id=route.strategy_id,
            instrument=signal.instrument,
            side="BUY" if delta > 0 else "SELL",
            quantity=size,
            mark=mark,
            owner="" if is_paper_book(route.model_id) else route.model_id,
        )
        return ShadowOrder(order) if route.mode is RoutingMode.SHADOW else LiveOrder(order)
