"""The signal path: validate, deduplicate, route, size, check and send, one frame at a time.

A frame's signals are decided in one pass. Each accepted order is recorded in the tracker at once (so the next
signal of the frame is sized against it), the frame's journal records are written with one write and one flush,
and only then do the frame's orders leave as one batch: the write-ahead rule holds per frame (DESIGN.md section 9).

While a canary is in SHADOW, the stable model's signals are also paper-traded on a paper twin
(``<stable>@paper``), whatever happens to the live order (unless trading is HALTED: then nothing is sent, paper
orders included), so the canary is compared paper against paper.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.engine.v1 import engine_pb2
from nautilus_mesh.api.ops.v1 import ops_pb2
from nautilus_mesh.auth import Principal
from nautilus_mesh.decimals import EXACT, fmt
from nautilus_mesh.errors import MeshError, PermissionDeniedError, RiskRejectedError, UnavailableError
from nautilus_mesh.status import error_detail
from nautilus_mesh.telemetry import ENGINE_ORDER_STREAM, OPS_SIGNAL_STREAM, mark_error, trace_exemplar
from ops_server import wire
from ops_server.circuit_breaker import EngineGate
from ops_server.metrics import ModelMetrics
from ops_server.model_registry import ModelRoute, RoutingMode, paper_book
from ops_server.order_tracker import TrackedOrder
from ops_server.parts import OpsParts
from ops_server.risk import OrderIntent, Side
from ops_server.router import LiveOrder, NoMarkError, ShadowOrder, SignalRouter

log = logging.getLogger(__name__)

UNKNOWN_MODEL_LABEL = "unknown"


@dataclass
class _Frame:
    """What one frame of signals sends, once its journal records are written."""

    commands: list[engine_pb2.OrderCommand] = field(default_factory=list)


class SignalPath:
    """Decides signals and sends their orders.

    Args:
        parts: the ops service's domain objects; the path reads the registry, exposure, risk rails, tracker,
            canaries (which stable models have a paper twin), the engine link and both venues' sinks, metrics
            (children bound per model), tracing and the clock (wall time of arrival; latency durations use the
            performance counter).
        router: routes and sizes each signal.
        gate: refuses signals at once while the engine link cannot take orders (circuit breaker).
    """

    def __init__(self, parts: OpsParts, *, router: SignalRouter, gate: EngineGate) -> None:
        self.parts = parts
        self._router = router
        self._gate = gate
        self._decision_counts: dict[str, Counter[str]] = {}
        self._risk_refused: Counter[str] = Counter()
        self._venue_problem: str | None = None
        self._twins: dict[str, tuple[ModelRoute, ModelRoute]] = {}

    # -- public ----------------------------------------------------------------------------

    def handle(self, signal: ops_pb2.Signal, principal: Principal) -> ops_pb2.SignalDecision:
        """Decide one signal (a frame of one)."""
        return self.handle_frame((signal,), principal)[0]

    def handle_frame(self, signals: Sequence[ops_pb2.Signal], principal: Principal) -> list[ops_pb2.SignalDecision]:
        """Decide a frame of signals, journal them with one write, then send their orders as one batch.

        Always returns one decision per signal, in order; a bad signal is answered in-band, never raised.
        """
        frame = _Frame()
        try:
            decisions = [self._decide(signal, principal, frame) for signal in signals]
        finally:
            self.parts.tracker.commit()  # write-ahead: the frame's decisions are journaled before its orders leave
            if frame.commands:
                self.parts.link.send(frame.commands)
        return decisions

    def is_duplicate(self, signal: ops_pb2.Signal, principal: Principal) -> bool:
        """True when ``signal`` repeats one already decided for a model of ``principal`` (it is answered
        ``DUPLICATE``, with no work beyond the lookup)."""
        return signal.model_id in principal.models and self.parts.tracker.knows_decision(
            signal.model_id, signal.signal_id
        )

    def set_burst_hint(self, more_coming: Callable[[], bool]) -> None:
        """Tell the engine link whether more slices are being decided, so it cuts one commands frame per burst."""
        self.parts.link.more_coming = more_coming

    def set_venue_problem(self, problem: str | None) -> None:
        """Refuse every order (``VENUE_MISCONFIGURED``) while the engine's venues do not fit the config."""
        self._venue_problem = problem

    def decision_counts(self, model_id: str) -> Counter[str]:
        """Decisions of a model since the process started, by status name (ACCEPTED, REJECTED, ...)."""
        return self._decision_counts.get(model_id, Counter())

    def risk_refusals(self, model_id: str) -> int:
        """REJECTED decisions of a model refused by a risk rail (error kind ``risk_rejected``) since the process
        started (count): what the canary's error rate leaves out."""
        return self._risk_refused[model_id]

    # -- one signal ------------------------------------------------------------------------

    def _decide(self, signal: ops_pb2.Signal, principal: Principal, frame: _Frame) -> ops_pb2.SignalDecision:
        parts = self.parts
        started = time.perf_counter()
        arrived_ns = parts.clock.time_ns()
        known = parts.registry.knows(signal.model_id)
        metrics = parts.metrics.model(signal.model_id if known else UNKNOWN_MODEL_LABEL)
        metrics.received.inc()
        attrs = {
            "messaging.message.id": signal.signal_id,
            "nautilus.model_id": signal.model_id,
            "nautilus.signal_id": signal.signal_id,
        }
        with parts.tracing.consume("ops.signal receive", signal.trace, attrs, destination=OPS_SIGNAL_STREAM) as span:
            if signal.model_id in principal.models:  # a repeat is answered its decision (a new message), DUPLICATE
                duplicate = parts.tracker.previous_decision(signal.model_id, signal.signal_id)
                if duplicate is not None:
                    duplicate.status = ops_pb2.DECISION_STATUS_DUPLICATE
                    metrics.count_decision("DUPLICATE")
                    return duplicate
            decision = ops_pb2.SignalDecision(signal_id=signal.signal_id, model_id=signal.model_id)
            twin_of: ModelRoute | None = None  # the stable model's route while its canary is in shadow
            try:
                self._router.validate(signal)  # a missing field is MISSING_FIELD before the token is asked about it
                principal.require_model(signal.model_id)
                route = self._router.route(signal)
                self._gate.require()  # ENGINE_UNAVAILABLE before any sizing while the engine link is down
                decision.mode = wire.MODE_PB[route.mode]
                if route.model_id in parts.canaries.shadow_twins():
                    twin_of = route
                t_route = time.perf_counter()
                routed = self._size(signal, route)
                metrics.routed[route.mode.value].inc()
                if routed is None:
                    return self._no_action(decision, signal, metrics, twin_of, frame, arrived_ns)
                t_size = time.perf_counter()
                checked, refused = self._check_risk(routed, route)
                t_risk = time.perf_counter()
                if checked is None:  # a clipped flip whose reducing part is under a lot or the minimum: nothing to send
                    if refused is not None:  # the opening part's refusal, in-band
                        decision.error.CopyFrom(error_detail(refused))
                        span.add_event("rejected", {"code": refused.code, "kind": refused.kind, "rail": refused.rail})
                    return self._no_action(decision, signal, metrics, twin_of, frame, arrived_ns)
                routed = checked
                order = routed.order
                if refused is not None:  # a reduce-only flip clipped: the opening part's own code, in-band
                    decision.error.CopyFrom(error_detail(refused))
                    span.add_event("rejected", {"code": refused.code, "kind": refused.kind, "rail": refused.rail})
                decision.status = ops_pb2.DECISION_STATUS_ACCEPTED
                decision.client_order_id = order.client_order_id
                decision.side = wire.SIDE_PB[order.side]
                decision.quantity = fmt(order.quantity)
                span.set_attribute("nautilus.client_order_id", order.client_order_id)
                self._send(decision, routed, route, frame, arrived_ns)
                t_send = time.perf_counter()
                parts.metrics.stage_route.observe(t_route - started)
                parts.metrics.stage_size.observe(t_size - t_route)
                parts.metrics.stage_risk.observe(t_risk - t_size)
                parts.metrics.stage_send.observe(t_send - t_risk)
            except MeshError as exc:
                decision.status = ops_pb2.DECISION_STATUS_REJECTED
                decision.error.CopyFrom(error_detail(exc))
                if self._remembers_refusal(signal, principal, exc):
                    parts.tracker.record(decision, None)  # a repeat answers DUPLICATE, as for any decision
                span.add_event("rejected", {"code": exc.code, "kind": exc.kind, "rail": getattr(exc, "rail", "")})
                mark_error(span, exc.code)
                if isinstance(exc, PermissionDeniedError):
                    log.warning("[OPS] signal %r refused: %s", signal.signal_id, exc.message)
                else:
                    log.info(
                        "[OPS] signal %r for %r rejected: %s %s",
                        signal.signal_id,
                        signal.model_id,
                        exc.code,
                        exc.message,
                    )
            if twin_of is not None:  # after the live order: the twin never delays it, in ops or at the engine
                self._trade_paper_twin(signal, twin_of, frame, arrived_ns)
            self._count(signal.model_id if known else "", metrics, decision)
            parts.metrics.signal_latency.observe(time.perf_counter() - started, trace_exemplar())
            return decision

    def _no_action(
        self,
        decision: ops_pb2.SignalDecision,
        signal: ops_pb2.Signal,
        metrics: ModelMetrics,
        twin_of: ModelRoute | None,
        frame: _Frame,
        arrived_ns: int,
    ) -> ops_pb2.SignalDecision:
        """Answer NO_ACTION (nothing to send): remembered and counted like any decision; the paper twin still trades."""
        decision.status = ops_pb2.DECISION_STATUS_NO_ACTION
        self.parts.tracker.record(decision, None)
        self._count(signal.model_id, metrics, decision)
        if twin_of is not None:
            self._trade_paper_twin(signal, twin_of, frame, arrived_ns)
        return decision

    def _size(self, signal: ops_pb2.Signal, route: ModelRoute) -> LiveOrder | ShadowOrder | None:
        """The router's order for the signal; without a mark to size it by, the refusal the rails put first (a paper
        order's: HALTED, else the missing mark), recorded as the rails record theirs."""
        try:
            return self._router.size(signal, route)
        except NoMarkError:
            paper = route.mode is RoutingMode.SHADOW
            self.parts.risk.check_unpriced(route.model_id, signal.instrument, paper=paper)

    def _remembers_refusal(self, signal: ops_pb2.Signal, principal: Principal, exc: MeshError) -> bool:
        """Whether a REJECTED decision is remembered (journaled, and answered DUPLICATE to a repeat) like the others:
        yes, unless nothing was decided on the signal's merits (UNAVAILABLE: the engine link down or backlogged, the
        venues misconfigured; the strategy may send it again), the model is not the caller's (the id is not its to
        burn) or the signal's ids are invalid (nothing to key it by)."""
        if isinstance(exc, UnavailableError) or signal.model_id not in principal.models:
            return False
        return exc.field not in ("signal_id", "model_id") or exc.code not in ("MISSING_FIELD", "INVALID_ID")

    def _count(self, model_id: str, metrics: ModelMetrics, decision: ops_pb2.SignalDecision) -> None:
        status = wire.DECISION_STATUS_NAME[decision.status]
        metrics.count_decision(status, decision.error.code)
        if model_id:
            self._decision_counts.setdefault(model_id, Counter())[status] += 1
            if status == "REJECTED" and decision.error.kind == RiskRejectedError.kind:
                self._risk_refused[model_id] += 1

    def _trade_paper_twin(self, signal: ops_pb2.Signal, route: ModelRoute, frame: _Frame, arrived_ns: int) -> None:
        """Paper-trade the stable model beside its shadow canary, so the canary is compared paper against paper."""
        twin = self._twin_route(route)
        try:
            self.parts.risk.check_paper(route.model_id)  # halted: no twin either (its live order was refused)
            routed = self._router.size(signal, twin)  # sizing reads the route's book, not the signal's model
            if routed is None or self.parts.tracker.knows_order(routed.order.client_order_id):
                return  # nothing to trade, or this signal's twin order was sent already (a re-decided signal)
            decision = ops_pb2.SignalDecision(
                signal_id=signal.signal_id,
                model_id=twin.model_id,
                status=ops_pb2.DECISION_STATUS_ACCEPTED,
                mode=ops_pb2.ROUTING_MODE_SHADOW,
                client_order_id=routed.order.client_order_id,
                side=wire.SIDE_PB[routed.order.side],
                quantity=fmt(routed.order.quantity),
            )
            self._send(decision, routed, twin, frame, arrived_ns, traced=False)
        except MeshError as exc:  # the twin only measures; it never changes the live decision
            log.debug("[OPS] paper twin of %s skipped: %s", route.model_id, exc.code)

    def _twin_route(self, route: ModelRoute) -> ModelRoute:
        """The paper twin's route, built once per route (the registry keeps a model's route until it changes)."""
        cached = self._twins.get(route.model_id)
        if cached is not None and cached[0] is route:
            return cached[1]
        twin = ModelRoute(
            model_id=paper_book(route.model_id),
            strategy_id=route.strategy_id,
            version=route.version,
            instruments=route.instruments,
            weight=0.0,
            mode=RoutingMode.SHADOW,
            stable=False,
        )
        self._twins[route.model_id] = (route, twin)
        return twin

    def _check_risk(
        self, routed: LiveOrder | ShadowOrder, route: ModelRoute
    ) -> tuple[LiveOrder | ShadowOrder | None, RiskRejectedError | None]:
        """Apply the rails; returns the order to send (None: a clipped reduce-only flip whose reducing part, floored
        to the lot, is under one lot or the instrument's minimum quantity) and, for a clipped flip, its refused
        part."""
        parts = self.parts
        order = routed.order
        if isinstance(routed, ShadowOrder):  # no capital at risk: only HALTED refuses it (the kill switch included)
            parts.risk.check_paper(
                route.model_id, lambda: f"symbol={order.instrument} side={order.side} qty={fmt(order.quantity)} (paper)"
            )
            return routed, None
        context = parts.exposure.risk_context(route, order.instrument)
        intent = OrderIntent(order.model_id, order.instrument, Side(order.side), order.quantity, order.mark)
        refused: RiskRejectedError | None = None
        clipped = parts.risk.reduce_only_clip(intent, context)
        if clipped is not None:
            rules = parts.exposure.rules(route, order.instrument)
            if rules is not None and rules.lot_size > 0:  # the part sent is sized like any order: whole lots
                clipped = EXACT.multiply(EXACT.divide_int(clipped, rules.lot_size), rules.lot_size)
            opening = order.quantity - clipped
            too_small = rules is not None and (clipped < rules.lot_size or clipped < rules.min_quantity)
            closing = (
                f"the {fmt(clipped)} {order.instrument} that would close the position is under the instrument's "
                "minimum, nothing sent"
                if too_small or clipped <= 0
                else f"{fmt(clipped)} {order.instrument} sent to close the position"
            )
            refused = RiskRejectedError(
                "REDUCE_ONLY_OPENING_REFUSED",
                f"trading is reduce-only: {closing}; the {fmt(opening)} that would open the other side refused",
                {
                    "requested": fmt(order.quantity),
                    "accepted": fmt(clipped),
                    "refused": fmt(opening),
                    "net_position": fmt(context.net_exposure_qty),
                },
                rail="trading_state",
            )
            if too_small or clipped <= 0:
                parts.risk.record_refusal(intent, refused)  # counted and audited like a rail's refusal
                return None, refused
            sent = dataclasses.replace(order, quantity=clipped)
            part = OrderIntent(sent.model_id, sent.instrument, Side(sent.side), sent.quantity, sent.mark)
            parts.risk.check(part, context)  # a rail refusing the part sent refuses the signal: counted once, for it
            parts.risk.record_refusal(intent, refused)  # counted and audited like a rail's refusal
            return LiveOrder(sent), refused
        parts.risk.check(intent, context)
        return routed, None

    def _send(
        self,
        decision: ops_pb2.SignalDecision,
        routed: LiveOrder | ShadowOrder,
        route: ModelRoute,
        frame: _Frame,
        arrived_ns: int,
        *,
        traced: bool = True,
    ) -> None:
        """Record the order (journaled with the frame) and queue its command for the frame's batch.

        ``traced=False`` (a paper twin): the order carries the signal's trace on unsampled, so neither this send, the
        engine nor its reports and fills make spans; a twin only measures, it is not on the signal's way to a venue.
        """
        parts = self.parts
        order = routed.order
        if self._venue_problem is not None:
            raise UnavailableError("VENUE_MISCONFIGURED", f"no order is sent: {self._venue_problem}")
        if not parts.link.has_room(len(frame.commands) + 1):
            raise UnavailableError("ENGINE_UNAVAILABLE", "the engine link is down or backlogged; no order was sent")
        venue = parts.paper_sink.venue if isinstance(routed, ShadowOrder) else parts.live_sink.venue
        trace = common_pb2.TraceContext()
        attrs = {
            "messaging.message.id": order.client_order_id,
            "nautilus.client_order_id": order.client_order_id,
            "nautilus.model_id": order.model_id,
        }
        traced = traced and not parts.tracing.in_unsampled_trace()
        if not traced:  # carried on unsampled as it is: no span work (most signals, at the default sampling)
            parts.tracing.carry_unsampled(trace)
        with (
            parts.tracing.produce("ops.order send", trace, attrs, destination=ENGINE_ORDER_STREAM)
            if traced
            else nullcontext()
        ):
            decision.trace.CopyFrom(trace)
            tracked = TrackedOrder(
                client_order_id=order.client_order_id,
                signal_id=order.signal_id,
                model_id=order.model_id,
                strategy_id=order.strategy_id,
                instrument=order.instrument,
                side=order.side,
                quantity=order.quantity,
                mode=route.mode.value,
                venue=venue,
                reference_mid=order.mark,
                created_ns=arrived_ns,
                traceparent=trace.traceparent,
                owner=order.owner,
            )
            # Write-ahead: recorded now, journaled when the frame commits, sent after that; an order journaled but
            # never acknowledged is re-sent on reconnect (the engine deduplicates by client order id).
            parts.tracker.record(decision, tracked)
            match routed:
                case LiveOrder():
                    frame.commands.append(parts.live_sink.command(routed, trace))
                case ShadowOrder():
                    frame.commands.append(parts.paper_sink.command(routed, trace))
        parts.metrics.venue_orders(venue).inc()
