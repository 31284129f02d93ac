"""``nautilus.ops.v1.OpsAdminService``: operators' controls, behind the admin token; a thin face over OpsControls.

Every call is checked against ``x-ops-token`` (constant time); with no admin token configured the whole service
answers PERMISSION_DENIED. Every call is audited as an event with its reason; a refusal is audited with its code.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc

from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.ops.v1 import admin_pb2, admin_pb2_grpc
from nautilus_mesh.auth import ADMIN_TOKEN_HEADER, require_token
from nautilus_mesh.errors import MeshError, ValidationError
from nautilus_mesh.health import HEALTH_PB
from nautilus_mesh.status import abort
from ops_server import wire
from ops_server.controls import ConfigTarget, OpsControls
from ops_server.coordination import Coordinator
from ops_server.health import OpsHealth
from ops_server.queries import OpsQueries

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[object, object]
T = TypeVar("T")
CanaryRequest = (
    admin_pb2.PromoteCanaryRequest
    | admin_pb2.RollbackCanaryRequest
    | admin_pb2.PauseCanaryRequest
    | admin_pb2.ResumeCanaryRequest
    | admin_pb2.ConfirmCanaryRequest
)

CONFIG_TARGETS = {
    admin_pb2.CONFIG_TARGET_RISK_LIMITS: ConfigTarget.RISK_LIMITS,
    admin_pb2.CONFIG_TARGET_CAPITAL_POLICY: ConfigTarget.CAPITAL_POLICY,
    admin_pb2.CONFIG_TARGET_MODEL_REGISTRY: ConfigTarget.MODEL_REGISTRY,
}


@dataclass(eq=False, repr=False, kw_only=True)
class OpsAdminService(admin_pb2_grpc.OpsAdminServiceServicer):
    """Operators' controls.

    Args:
        controls: what each call does.
        queries: the read views an answer shows.
        admin_token: the ``x-ops-token`` value; empty closes the service.
        health: every check of ops' health, for ``GetHealth``.
        coordinator: this worker's coordination when ops runs as several workers (forced cycles go to the leader).
    """

    controls: OpsControls
    queries: OpsQueries
    admin_token: str
    health: OpsHealth
    coordinator: Coordinator | None = None

    async def GetHealth(self, request: admin_pb2.GetHealthRequest, context: Context) -> admin_pb2.GetHealthResponse:
        def run() -> admin_pb2.GetHealthResponse:
            status, checks = self.health.report()
            return admin_pb2.GetHealthResponse(status=HEALTH_PB[status], checks=[c.to_pb() for c in checks])

        return await self._guard(context, "GetHealth", run)

    async def _guard(self, context: Context, action: str, call: Callable[[], Awaitable[T] | T]) -> T:
        """Authorize, run, map errors to statuses, and audit a refusal."""
        try:
            require_token(context.invocation_metadata(), ADMIN_TOKEN_HEADER, self.admin_token, door="admin")
        except MeshError as exc:
            log.warning("[ADMIN] %s refused: %s", action, exc.code)
            await abort(context, exc)
        try:
            result = call()
            if isinstance(result, Awaitable):
                result = await result
        except MeshError as exc:
            self.controls.audit_refusal(action, exc)
            await abort(context, exc)
        return result

    async def TriggerAllocation(
        self, request: admin_pb2.TriggerAllocationRequest, context: Context
    ) -> admin_pb2.TriggerAllocationResponse:
        async def run() -> admin_pb2.TriggerAllocationResponse:
            if self.coordinator is None:  # a single ops runs it here
                decision = self.controls.trigger_allocation(request.reason)
                return admin_pb2.TriggerAllocationResponse(
                    reason=decision.reason.value, message=decision.message, allocations=self.controls.allocations()
                )
            # Several workers: the allocator leader runs it once, whichever worker was asked; every worker applies it.
            cycle = await self.coordinator.request_cycle(request.reason, within=context.time_remaining())
            self.controls.audit(
                "TriggerAllocation", request.reason, result=cycle.reason, cycle_id=cycle.cycle_id, leader=cycle.leader
            )
            return admin_pb2.TriggerAllocationResponse(
                reason=cycle.reason,
                message=cycle.message,
                allocations=self.controls.allocations(),
                cycle_id=cycle.cycle_id,
                leader_worker_index=cycle.leader,
            )

        return await self._guard(context, "TriggerAllocation", run)

    async def SetRoutingWeights(
        self, request: admin_pb2.SetRoutingWeightsRequest, context: Context
    ) -> admin_pb2.SetRoutingWeightsResponse:
        return await self._guard(
            context,
            "SetRoutingWeights",
            lambda: admin_pb2.SetRoutingWeightsResponse(
                models=self.controls.set_routing_weights(request.strategy_id, dict(request.weights), request.reason)
            ),
        )

    async def PromoteCanary(
        self, request: admin_pb2.PromoteCanaryRequest, context: Context
    ) -> admin_pb2.PromoteCanaryResponse:
        return await self._operate_canary(
            context, "PromoteCanary", "promote", request, admin_pb2.PromoteCanaryResponse, to_full=request.to_full
        )

    async def RollbackCanary(
        self, request: admin_pb2.RollbackCanaryRequest, context: Context
    ) -> admin_pb2.RollbackCanaryResponse:
        return await self._operate_canary(
            context, "RollbackCanary", "rollback", request, admin_pb2.RollbackCanaryResponse
        )

    async def PauseCanary(
        self, request: admin_pb2.PauseCanaryRequest, context: Context
    ) -> admin_pb2.PauseCanaryResponse:
        return await self._operate_canary(context, "PauseCanary", "pause", request, admin_pb2.PauseCanaryResponse)

    async def ResumeCanary(
        self, request: admin_pb2.ResumeCanaryRequest, context: Context
    ) -> admin_pb2.ResumeCanaryResponse:
        return await self._operate_canary(context, "ResumeCanary", "resume", request, admin_pb2.ResumeCanaryResponse)

    async def ConfirmCanary(
        self, request: admin_pb2.ConfirmCanaryRequest, context: Context
    ) -> admin_pb2.ConfirmCanaryResponse:
        return await self._operate_canary(context, "ConfirmCanary", "confirm", request, admin_pb2.ConfirmCanaryResponse)

    async def _operate_canary(
        self,
        context: Context,
        rpc: str,
        action: str,
        request: CanaryRequest,
        response: Callable[..., T],
        *,
        to_full: bool = False,
    ) -> T:
        """A canary control (promote, rollback, pause, resume or confirm): the canary's status after it."""
        return await self._guard(
            context,
            rpc,
            lambda: response(
                status=self.controls.operate_canary(request.strategy_id, action, request.reason, to_full=to_full)
            ),
        )

    async def SetTradingState(
        self, request: admin_pb2.SetTradingStateRequest, context: Context
    ) -> admin_pb2.SetTradingStateResponse:
        def run() -> admin_pb2.SetTradingStateResponse:
            state = wire.STATE_FROM_PB.get(request.state)
            if state is None:
                raise ValidationError("INVALID_STATE", "state must be ACTIVE, REDUCING or HALTED", field="state")
            model = request.model_id or None
            self.controls.set_trading_state(model, state, request.reason)
            model_state = (
                wire.TRADING_STATE_PB[self.queries.trading_state(model)]
                if model
                else common_pb2.TRADING_STATE_UNSPECIFIED
            )
            return admin_pb2.SetTradingStateResponse(
                global_state=wire.TRADING_STATE_PB[self.queries.trading_state()], model_state=model_state
            )

        return await self._guard(context, "SetTradingState", run)

    async def EngageKillSwitch(
        self, request: admin_pb2.EngageKillSwitchRequest, context: Context
    ) -> admin_pb2.EngageKillSwitchResponse:
        async def run() -> admin_pb2.EngageKillSwitchResponse:
            canceled, remaining = await self.controls.engage_kill_switch(request.reason or "operator")
            return admin_pb2.EngageKillSwitchResponse(
                canceled_count=canceled, resting_remaining=remaining, cancels_confirmed=remaining == 0
            )

        return await self._guard(context, "EngageKillSwitch", run)

    async def ReleaseKillSwitch(
        self, request: admin_pb2.ReleaseKillSwitchRequest, context: Context
    ) -> admin_pb2.ReleaseKillSwitchResponse:
        def run() -> admin_pb2.ReleaseKillSwitchResponse:
            self.controls.release_kill_switch(request.reason)
            return admin_pb2.ReleaseKillSwitchResponse(global_state=wire.TRADING_STATE_PB[self.queries.trading_state()])

        return await self._guard(context, "ReleaseKillSwitch", run)

    async def ReloadConfig(
        self, request: admin_pb2.ReloadConfigRequest, context: Context
    ) -> admin_pb2.ReloadConfigResponse:
        def run() -> admin_pb2.ReloadConfigResponse:
            target = CONFIG_TARGETS.get(request.target)
            if target is None:
                raise ValidationError("INVALID_TARGET", "target must name a config file", field="target")
            return admin_pb2.ReloadConfigResponse(message=self.controls.reload(target))

        return await self._guard(context, "ReloadConfig", run)
