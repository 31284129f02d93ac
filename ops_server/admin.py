"""``nautilus.ops.v1.OpsAdminService``: operators' controls, behind the admin token.

Every call is checked against ``x-ops-token`` (constant time); with no admin token configured the
whole service answers PERMISSION_DENIED. Every call is audited as an event with its reason.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

import grpc

from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.ops.v1 import admin_pb2, admin_pb2_grpc, ops_pb2
from nautilus_mesh.auth import ADMIN_TOKEN_HEADER, require_token
from nautilus_mesh.decimals import fmt
from nautilus_mesh.errors import ConfigError, MeshError, ValidationError
from nautilus_mesh.health import HEALTH_PB
from nautilus_mesh.status import abort
from ops_server.canary import CanaryStatus
from ops_server.canary_manager import CanaryManager
from ops_server.capital_allocator import CapitalPolicy
from ops_server.core import TRADING_STATE_PB, OpsCore
from ops_server.health import OpsHealth
from ops_server.model_registry import ModelRegistry

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[object, object]
T = TypeVar("T")

STATE_FROM_PB = {pb: state for state, pb in TRADING_STATE_PB.items()}
_CANARY_STATE_PB = {
    "SHADOW": ops_pb2.CANARY_STATE_SHADOW,
    "STEPPING": ops_pb2.CANARY_STATE_STEPPING,
    "WAITING_CONFIRMATION": ops_pb2.CANARY_STATE_WAITING_CONFIRMATION,
    "PAUSED": ops_pb2.CANARY_STATE_PAUSED,
    "PROMOTED": ops_pb2.CANARY_STATE_PROMOTED,
    "ROLLED_BACK": ops_pb2.CANARY_STATE_ROLLED_BACK,
}


def _ns(moment: datetime | None) -> int:
    return int(moment.timestamp() * 1e9) if moment is not None else 0


def canary_status_pb(status: CanaryStatus, schedule: tuple[float, ...]) -> ops_pb2.CanaryStatus:
    """The wire form of a controller's status."""
    pb = ops_pb2.CanaryStatus(
        strategy_id=status.strategy,
        canary_model=status.canary_model,
        stable_model=status.stable_model,
        state=_CANARY_STATE_PB[status.state.value],
        step_index=status.step_index,
        step_percent=status.step_percent,
        weights=status.weights,
        failed_checks=status.failed_checks,
        inconclusive_checks=status.inconclusive_checks,
        step_started_at_unix_nanos=_ns(status.step_started_at),
        schedule=list(schedule),
    )
    if status.last_check is not None:
        check = status.last_check
        pb.last_check.CopyFrom(
            ops_pb2.CanaryCheck(
                outcome=check.outcome.value,
                statistics={k: v for k, v in check.statistics().items() if v == v and abs(v) != float("inf")},
                at_unix_nanos=_ns(check.at),
            )
        )
    return pb


def canary_statuses(canaries: CanaryManager, strategy_id: str = "") -> list[ops_pb2.CanaryStatus]:
    return [
        canary_status_pb(run.controller.status(), run.controller.config.schedule)
        for sid, run in canaries.runs.items()
        if not strategy_id or sid == strategy_id
    ]


class OpsAdminService(admin_pb2_grpc.OpsAdminServiceServicer):
    """Operators' controls."""

    def __init__(self, core: OpsCore, *, health: OpsHealth) -> None:
        self.core = core
        self._health = health

    async def GetHealth(self, request: admin_pb2.GetHealthRequest, context: Context) -> admin_pb2.GetHealthResponse:
        def run() -> admin_pb2.GetHealthResponse:
            status, checks = self._health.report()
            return admin_pb2.GetHealthResponse(status=HEALTH_PB[status], checks=[c.to_pb() for c in checks])

        return await self._guard(context, "GetHealth", run)

    async def _guard(self, context: Context, action: str, call: Callable[[], Awaitable[T] | T]) -> T:
        """Authorize, run, map errors to statuses, and audit the call."""
        try:
            require_token(context.invocation_metadata(), ADMIN_TOKEN_HEADER, self.core.config.admin_token, door="admin")
        except MeshError as exc:
            log.warning("[ADMIN] %s refused: %s", action, exc.code)
            await abort(context, exc)
        try:
            result = call()
            if isinstance(result, Awaitable):
                result = await result
        except MeshError as exc:
            log.warning("[ADMIN] %s failed: %s %s", action, exc.code, exc.message)
            self.core.events.publish("ADMIN", f"{action} refused: {exc.message}", action=action, code=exc.code)
            await abort(context, exc)
        return result

    def _audit(self, action: str, reason: str, **attributes: object) -> None:
        log.info("[ADMIN] %s (%s)", action, reason or "no reason given")
        self.core.events.publish("ADMIN", f"{action}: {reason}", action=action, reason=reason, **attributes)

    async def TriggerAllocation(
        self, request: admin_pb2.TriggerAllocationRequest, context: Context
    ) -> admin_pb2.TriggerAllocationResponse:
        def run() -> admin_pb2.TriggerAllocationResponse:
            decision = self.core.run_allocation(forced=True)
            self._audit("TriggerAllocation", request.reason, result=decision.reason.value)
            allocator = self.core.allocator
            return admin_pb2.TriggerAllocationResponse(
                reason=decision.reason.value,
                message=decision.message,
                allocations=[
                    ops_pb2.Allocation(strategy_id=s, fraction=w, capital_usd=fmt(allocator.allocation_usd(s)))
                    for s, w in allocator.weights.items()
                ],
            )

        return await self._guard(context, "TriggerAllocation", run)

    async def SetRoutingWeights(
        self, request: admin_pb2.SetRoutingWeightsRequest, context: Context
    ) -> admin_pb2.SetRoutingWeightsResponse:
        def run() -> admin_pb2.SetRoutingWeightsResponse:
            if (
                request.strategy_id in self.core.canaries.runs
                and not self.core.canaries.runs[request.strategy_id].controller.state.terminal
            ):
                raise ValidationError(
                    "CANARY_ACTIVE",
                    f"strategy {request.strategy_id!r} has a canary in progress: use the canary controls",
                    field="strategy_id",
                )
            self.core.registry.set_weights(request.strategy_id, dict(request.weights))
            self.core.events.publish(
                "WEIGHTS_CHANGED",
                f"routing weights of {request.strategy_id} set by an operator",
                strategy=request.strategy_id,
                reason=request.reason,
                **{f"weight.{m}": f"{w:g}" for m, w in request.weights.items()},
            )
            for route in self.core.registry.models_of(request.strategy_id):
                self.core.metrics.canary_weight.labels(request.strategy_id, route.model_id).set(route.weight)
            self.core.update_allocation_metrics()
            return admin_pb2.SetRoutingWeightsResponse(
                models=[self.core.model_info(r) for r in self.core.registry.models_of(request.strategy_id)]
            )

        return await self._guard(context, "SetRoutingWeights", run)

    def _canary(self, strategy_id: str, action: str, reason: str, **kwargs: object) -> ops_pb2.CanaryStatus:
        if not reason.strip():
            raise ValidationError("REASON_REQUIRED", "a reason is required for canary controls", field="reason")
        self.core.canaries.operate(strategy_id, action, reason, **kwargs)
        self._audit(f"canary.{action}", reason, strategy=strategy_id)
        return canary_statuses(self.core.canaries, strategy_id)[0]

    async def PromoteCanary(
        self, request: admin_pb2.PromoteCanaryRequest, context: Context
    ) -> admin_pb2.PromoteCanaryResponse:
        return await self._guard(
            context,
            "PromoteCanary",
            lambda: admin_pb2.PromoteCanaryResponse(
                status=self._canary(request.strategy_id, "promote", request.reason, to_full=request.to_full)
            ),
        )

    async def RollbackCanary(
        self, request: admin_pb2.RollbackCanaryRequest, context: Context
    ) -> admin_pb2.RollbackCanaryResponse:
        return await self._guard(
            context,
            "RollbackCanary",
            lambda: admin_pb2.RollbackCanaryResponse(
                status=self._canary(request.strategy_id, "rollback", request.reason)
            ),
        )

    async def PauseCanary(
        self, request: admin_pb2.PauseCanaryRequest, context: Context
    ) -> admin_pb2.PauseCanaryResponse:
        return await self._guard(
            context,
            "PauseCanary",
            lambda: admin_pb2.PauseCanaryResponse(status=self._canary(request.strategy_id, "pause", request.reason)),
        )

    async def ResumeCanary(
        self, request: admin_pb2.ResumeCanaryRequest, context: Context
    ) -> admin_pb2.ResumeCanaryResponse:
        return await self._guard(
            context,
            "ResumeCanary",
            lambda: admin_pb2.ResumeCanaryResponse(status=self._canary(request.strategy_id, "resume", request.reason)),
        )

    async def ConfirmCanary(
        self, request: admin_pb2.ConfirmCanaryRequest, context: Context
    ) -> admin_pb2.ConfirmCanaryResponse:
        return await self._guard(
            context,
            "ConfirmCanary",
            lambda: admin_pb2.ConfirmCanaryResponse(
                status=self._canary(request.strategy_id, "confirm", request.reason)
            ),
        )

    async def SetTradingState(
        self, request: admin_pb2.SetTradingStateRequest, context: Context
    ) -> admin_pb2.SetTradingStateResponse:
        def run() -> admin_pb2.SetTradingStateResponse:
            state = STATE_FROM_PB.get(request.state)
            if state is None:
                raise ValidationError("INVALID_STATE", "state must be ACTIVE, REDUCING or HALTED", field="state")
            model = request.model_id or None
            if model is not None:
                self.core.registry.route(model)
            self.core.risk.set_state(model, state, request.reason or "operator")
            risk = self.core.risk
            return admin_pb2.SetTradingStateResponse(
                global_state=TRADING_STATE_PB[risk.global_state],
                model_state=TRADING_STATE_PB[risk.state(model)] if model else common_pb2.TRADING_STATE_UNSPECIFIED,
            )

        return await self._guard(context, "SetTradingState", run)

    async def EngageKillSwitch(
        self, request: admin_pb2.EngageKillSwitchRequest, context: Context
    ) -> admin_pb2.EngageKillSwitchResponse:
        async def run() -> admin_pb2.EngageKillSwitchResponse:
            canceled, remaining = await self.core.engage_kill_switch(request.reason or "operator")
            return admin_pb2.EngageKillSwitchResponse(
                canceled_count=canceled, resting_remaining=remaining, cancels_confirmed=remaining == 0
            )

        return await self._guard(context, "EngageKillSwitch", run)

    async def ReleaseKillSwitch(
        self, request: admin_pb2.ReleaseKillSwitchRequest, context: Context
    ) -> admin_pb2.ReleaseKillSwitchResponse:
        def run() -> admin_pb2.ReleaseKillSwitchResponse:
            if not request.reason.strip():
                raise ValidationError("REASON_REQUIRED", "releasing the kill switch needs a reason", field="reason")
            self.core.risk.release_kill_switch(request.reason)
            self.core.save_state()
            return admin_pb2.ReleaseKillSwitchResponse(global_state=TRADING_STATE_PB[self.core.risk.global_state])

        return await self._guard(context, "ReleaseKillSwitch", run)

    async def ReloadConfig(
        self, request: admin_pb2.ReloadConfigRequest, context: Context
    ) -> admin_pb2.ReloadConfigResponse:
        def run() -> admin_pb2.ReloadConfigResponse:
            core = self.core
            cfg = core.config
            if request.target == admin_pb2.CONFIG_TARGET_RISK_LIMITS:
                if cfg.risk_limits_path is None:
                    raise ConfigError("no risk limits file is configured")
                core.risk.reload(cfg.risk_limits_path)
                message = f"risk limits reloaded from {cfg.risk_limits_path.name}"
            elif request.target == admin_pb2.CONFIG_TARGET_CAPITAL_POLICY:
                policy = CapitalPolicy.load(cfg.capital_policy_path, known_strategies=core.registry.strategies())
                core.allocator.set_policy(policy)
                core.update_allocation_metrics()
                core.save_state()
                message = f"capital policy reloaded from {cfg.capital_policy_path.name}"
            elif request.target == admin_pb2.CONFIG_TARGET_MODEL_REGISTRY:
                fresh = ModelRegistry.load(cfg.registry_path)
                for strategy_id, spec in fresh.data.strategies.items():
                    if set(spec.models) != {r.model_id for r in core.registry.models_of(strategy_id)}:
                        raise ConfigError(
                            f"reloading changes the models of strategy {strategy_id!r}; restart ops to add or remove "
                            "models"
                        )
                    if (
                        strategy_id in core.canaries.runs
                        and not core.canaries.runs[strategy_id].controller.state.terminal
                    ):
                        continue  # the canary controller owns these weights
                    core.registry.set_weights(
                        strategy_id,
                        {m: s.weight for m, s in spec.models.items()},
                        modes={m: s.mode for m, s in spec.models.items()},
                    )
                message = f"model registry weights reloaded from {cfg.registry_path.name}"
            else:
                raise ValidationError("INVALID_TARGET", "target must name a config file", field="target")
            self._audit("ReloadConfig", message)
            return admin_pb2.ReloadConfigResponse(message=message)

        return await self._guard(context, "ReloadConfig", run)
