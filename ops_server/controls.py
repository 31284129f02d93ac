"""Operators' controls: force an allocation, set routing weights, drive a canary, trading states, the kill switch,
reload a config file. Each is validated, applied, logged with ``[ADMIN]`` and audited as an event with its reason.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass

import grpc

from nautilus_mesh.api.ops.v1 import ops_pb2
from nautilus_mesh.errors import ConfigError, MeshError, UnavailableError, ValidationError
from ops_server import wire
from ops_server.allocation import AllocationDecision, CapitalPolicy
from ops_server.model_registry import ModelRegistry
from ops_server.parts import OpsParts
from ops_server.periodic import PeriodicDecisions
from ops_server.queries import OpsQueries
from ops_server.risk import TradingState

log = logging.getLogger(__name__)

CANARY_ACTIONS = frozenset({"promote", "rollback", "pause", "resume", "confirm"})


class ConfigTarget:
    """The config files an operator may reload at run time."""

    RISK_LIMITS = "risk_limits"
    CAPITAL_POLICY = "capital_policy"
    MODEL_REGISTRY = "model_registry"


@dataclass(eq=False, repr=False)
class OpsControls:
    """What OpsAdminService does, as plain methods (raising MeshError for a refusal).

    Args:
        parts: the ops service's domain objects (the registry, allocator, risk rails and canaries it changes;
            events for the audit; state, saved after each change).
        periodic: allocation cycles run on demand.
        queries: what a control answers with after it acts.
    """

    parts: OpsParts
    _: KW_ONLY
    periodic: PeriodicDecisions
    queries: OpsQueries

    # -- audit -----------------------------------------------------------------------------

    def audit(self, action: str, reason: str, **attributes: object) -> None:
        log.info("[ADMIN] %s (%s)", action, reason or "no reason given")
        self.parts.events.publish("ADMIN", f"{action}: {reason}", action=action, reason=reason, **attributes)

    def audit_refusal(self, action: str, error: MeshError) -> None:
        log.warning("[ADMIN] %s failed: %s %s", action, error.code, error.message)
        self.parts.events.publish("ADMIN", f"{action} refused: {error.message}", action=action, code=error.code)

    # -- capital and routing ---------------------------------------------------------------

    def trigger_allocation(self, reason: str) -> AllocationDecision:
        """Force an allocation cycle (PermissionDeniedError when the policy disables manual allocation)."""
        decision = self.periodic.run_allocation(forced=True)
        self.audit("TriggerAllocation", reason, result=decision.reason.value)
        return decision

    def allocations(self) -> list[ops_pb2.Allocation]:
        return wire.allocations(self.parts.allocator)

    def set_routing_weights(
        self, strategy_id: str, weights: Mapping[str, float], reason: str
    ) -> list[ops_pb2.ModelInfo]:
        """Set a strategy's routing weights (they must sum to 1); refused while a canary owns them."""
        parts = self.parts
        if parts.canaries.owns_weights(strategy_id):
            raise ValidationError(
                "CANARY_ACTIVE",
                f"strategy {strategy_id!r} has a canary in progress: use the canary controls",
                field="strategy_id",
            )
        parts.registry.set_weights(strategy_id, dict(weights))
        parts.events.publish(
            "WEIGHTS_CHANGED",
            f"routing weights of {strategy_id} set by an operator",
            strategy=strategy_id,
            reason=reason,
            **{f"weight.{m}": f"{w:g}" for m, w in weights.items()},
        )
        self.periodic.update_weight_metrics(strategy_id)
        self.audit("SetRoutingWeights", reason, strategy=strategy_id)
        return self.queries.models(strategy_id)

    def operate_canary(
        self, strategy_id: str, action: str, reason: str, *, to_full: bool = False
    ) -> ops_pb2.CanaryStatus:
        """promote (one step, or ``to_full``), rollback, pause, resume or confirm a strategy's canary."""
        if action not in CANARY_ACTIONS:
            raise ValidationError("INVALID_ACTION", f"unknown canary action {action!r}", field="action")
        if not reason.strip():
            raise ValidationError("REASON_REQUIRED", "a reason is required for canary controls", field="reason")
        kwargs = {"to_full": to_full} if action == "promote" else {}
        self.parts.canaries.operate(strategy_id, action, reason, **kwargs)
        self.audit(f"canary.{action}", reason, strategy=strategy_id)
        return self.queries.canary_statuses(strategy_id)[0]

    # -- trading states --------------------------------------------------------------------

    def set_trading_state(self, model_id: str | None, state: TradingState, reason: str) -> None:
        """Set a model's (or, with None, the global) trading state."""
        if model_id is not None:
            self.parts.registry.route(model_id)  # NotFoundError for an unknown model
        self.parts.risk.set_state(model_id, state, reason or "operator")

    async def engage_kill_switch(self, reason: str) -> tuple[int, int]:
        """Halt everything, then cancel every resting order at the engine; returns (cancelled, still resting)."""
        parts = self.parts
        parts.risk.engage_kill_switch(reason)
        try:
            parts.state.save()
        except Exception:  # the store down must not keep the resting orders alive: cancel first, save again later
            log.exception("[OPS] kill switch engaged but the state could not be saved; cancelling all the same")
        try:
            response = await parts.link.cancel_all()
        except grpc.aio.AioRpcError as exc:
            raise UnavailableError(
                "ENGINE_UNAVAILABLE",
                f"trading is halted, but the engine could not cancel resting orders: {exc.code().name}",
            ) from None
        canceled, resting = response.canceled_count, response.resting_remaining
        parts.events.publish(
            "KILL_SWITCH",
            f"kill switch engaged: {canceled} order(s) cancelled, {resting} resting",
            canceled=canceled,
            resting=resting,
            reason=reason,
        )
        log.warning("[OPS] kill switch engaged (%s): %d cancelled, %d still resting", reason, canceled, resting)
        return canceled, resting

    def release_kill_switch(self, reason: str) -> None:
        if not reason.strip():
            raise ValidationError("REASON_REQUIRED", "releasing the kill switch needs a reason", field="reason")
        self.parts.risk.release_kill_switch(reason)
        self.parts.state.save()

    # -- config ----------------------------------------------------------------------------

    def reload(self, target: str) -> str:
        """Reload one config file; a bad file is refused and what is in force stays. Returns what was done."""
        parts = self.parts
        cfg = parts.config
        if target == ConfigTarget.RISK_LIMITS:
            if cfg.risk_limits_path is None:
                raise ConfigError("no risk limits file is configured")
            registry = parts.registry
            parts.risk.reload(
                cfg.risk_limits_path, known_models=registry.model_ids(), known_instruments=registry.instruments()
            )
            message = f"risk limits reloaded from {cfg.risk_limits_path.name}"
        elif target == ConfigTarget.CAPITAL_POLICY:
            policy = CapitalPolicy.load(cfg.capital_policy_path, known_strategies=parts.registry.strategies())
            before = dict(parts.allocator.weights)
            parts.allocator.set_policy(policy)
            self.periodic.update_allocation_metrics()
            parts.state.save()
            message = f"capital policy reloaded from {cfg.capital_policy_path.name}"
            after = parts.allocator.weights
            if after != before:  # the weights in force broke the new bounds: say where they went
                message += f"; weights moved to fit its bounds: {_weights(before)} -> {_weights(after)}"
        elif target == ConfigTarget.MODEL_REGISTRY:
            fresh = ModelRegistry.load(cfg.registry_path)
            # A canary's strategy keeps the routing its canary set, in progress or finished: the file still describes
            # the rollout's start, and taking it would undo a promotion (the retired model live with the whole quota).
            canaries = parts.canaries.runs
            for strategy_id in parts.registry.apply_weights_from(fresh, skip=canaries.__contains__):
                self.periodic.update_weight_metrics(strategy_id)
            message = f"model registry weights reloaded from {cfg.registry_path.name}"
            if canaries:
                kept = ", ".join(f"{s} (canary {run.controller.state.value})" for s, run in sorted(canaries.items()))
                message += f"; left as they are: {kept}: a canary routes its strategy, then SetRoutingWeights does"
        else:
            raise ValidationError("INVALID_TARGET", "target must name a config file", field="target")
        self.audit("ReloadConfig", message)
        return message


def _weights(weights: Mapping[str, float]) -> str:
    """Strategy weights as ``name=0.5000, ...`` (fractions of the total capital)."""
    return ", ".join(f"{name}={weight:.4f}" for name, weight in weights.items())
