"""``OpsAdminClient``: the operators' controls, ``nautilus.ops.v1.OpsAdminService``."""

from __future__ import annotations

from collections.abc import Mapping

from clients.client_base import DEFAULT_TIMEOUT, _Client
from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.ops.v1 import admin_pb2, admin_pb2_grpc, ops_pb2
from nautilus_mesh.auth import ADMIN_TOKEN_HEADER

__all__ = ["OpsAdminClient"]


class OpsAdminClient(_Client):
    """Client of ``nautilus.ops.v1.OpsAdminService``, the operators' controls.

    Every call sends the admin token as ``x-ops-token``; the server audits each call with its
    reason, and the canary controls and the kill-switch release refuse an empty reason
    (INVALID_ARGUMENT, detail code ``REASON_REQUIRED``).

    Args:
        address: ops host:port.
        admin_token: sent as ``x-ops-token`` with every call.
        timeout: per-call deadline, in seconds.

    Example:
        >>> async def main() -> None:
        ...     async with OpsAdminClient(ops_address, admin_token="wrong") as admin:
        ...         await admin.trigger_allocation(reason="doc example")
        >>> asyncio.run(main())
        Traceback (most recent call last):
            ...
        clients.errors.MeshRpcError: UNAUTHENTICATED: ...
    """

    def __init__(self, address: str, *, admin_token: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        super().__init__(address, ((ADMIN_TOKEN_HEADER, admin_token),), timeout)
        self._stub = admin_pb2_grpc.OpsAdminServiceStub(self._channel)

    async def get_health(self) -> admin_pb2.GetHealthResponse:
        """Every health check of ops with status, detail and age, and their rollup.

        Returns:
            ``status`` (the worst check: ``HEALTH_STATUS_HEALTHY``, ``_DEGRADED`` or ``_UNHEALTHY``)
            and ``checks``, one per part (engine link, marks, store, allocator, sampler, canary, ...)
            with ``name``, ``status``, ``detail`` and ``age_seconds``.

        Raises:
            MeshRpcError: ``UNAUTHENTICATED`` without the admin token.

        Example:
            >>> async def main() -> bool:
            ...     async with OpsAdminClient(ops_address, admin_token=admin_token) as admin:
            ...         health = await admin.get_health()
            ...         return any(check.name == "engine_link" for check in health.checks)
            >>> asyncio.run(main())
            True
        """
        request = admin_pb2.GetHealthRequest()
        return await self._unary(self._stub.GetHealth, request)

    async def trigger_allocation(self, *, reason: str = "") -> admin_pb2.TriggerAllocationResponse:
        """Run a capital allocation cycle now, bypassing the cooldown.

        Args:
            reason: why (audited).

        Returns:
            What the cycle decided: ``reason`` (APPLIED, FORCED, COOLDOWN, DEADBAND or KEPT), a
            ``message`` and the ``allocations`` after it.

        Raises:
            MeshRpcError: ``PERMISSION_DENIED`` (``MANUAL_ALLOCATION_DISABLED``) when the capital
                policy has ``allow_manual: false``.

        Example:
            >>> async def main() -> list[str]:
            ...     async with OpsAdminClient(ops_address, admin_token=admin_token) as admin:
            ...         decision = await admin.trigger_allocation(reason="doc example")
            ...         return sorted(a.strategy_id for a in decision.allocations)
            >>> asyncio.run(main())
            ['meanrev', 'momentum']
        """
        request = admin_pb2.TriggerAllocationRequest(reason=reason)
        return await self._unary(self._stub.TriggerAllocation, request)

    async def set_routing_weights(
        self, strategy_id: str, weights: Mapping[str, float], *, reason: str = ""
    ) -> list[ops_pb2.ModelInfo]:
        """Set a strategy's routing weights; models not named get 0.

        Args:
            strategy_id: the strategy.
            weights: model id -> weight, each in [0, 1], summing to 1 (+-0.001).
            reason: why (audited).

        Returns:
            The strategy's models with their new weights.

        Raises:
            MeshRpcError: ``INVALID_ARGUMENT`` (``INVALID_WEIGHTS``; ``CANARY_ACTIVE`` while a canary
                owns the strategy's weights) or ``NOT_FOUND`` (``UNKNOWN_STRATEGY``, ``UNKNOWN_MODEL``).

        Example:
            >>> async def main() -> list[tuple[str, float]]:
            ...     async with OpsAdminClient(ops_address, admin_token=admin_token) as admin:
            ...         models = await admin.set_routing_weights("meanrev", {"meanrev_v1": 1.0}, reason="doc example")
            ...         return [(m.model_id, m.routing_weight) for m in models]
            >>> asyncio.run(main())
            [('meanrev_v1', 1.0)]
        """
        request = admin_pb2.SetRoutingWeightsRequest(strategy_id=strategy_id, weights=dict(weights), reason=reason)
        response = await self._unary(self._stub.SetRoutingWeights, request)
        return list(response.models)

    async def promote_canary(self, strategy_id: str, *, reason: str, to_full: bool = False) -> ops_pb2.CanaryStatus:
        """Promote a strategy's canary one step, or straight to 100% with ``to_full``.

        Args:
            strategy_id: the strategy whose canary moves.
            reason: why (audited; required).
            to_full: go to 100% at once (the canary becomes the stable model).

        Returns:
            The canary's status after the promotion.

        Raises:
            MeshRpcError: ``NOT_FOUND`` (``UNKNOWN_STRATEGY``, ``NO_CANARY``) or ``INVALID_ARGUMENT``
                (``REASON_REQUIRED``, ``CANARY_FINISHED`` once promoted or rolled back).

        Example:
            >>> async def main() -> float:
            ...     async with OpsAdminClient(ops_address, admin_token=admin_token) as admin:
            ...         status = await admin.promote_canary("momentum", reason="doc example: shadow reviewed")
            ...         return status.weights["momentum_v2"]
            >>> asyncio.run(main()) > 0  # out of shadow: the canary carries live weight
            True
        """
        request = admin_pb2.PromoteCanaryRequest(strategy_id=strategy_id, to_full=to_full, reason=reason)
        response = await self._unary(self._stub.PromoteCanary, request)
        return response.status

    async def rollback_canary(self, strategy_id: str, *, reason: str) -> ops_pb2.CanaryStatus:
        """Roll a canary back: canary 0%, stable 100%.

        Args:
            strategy_id: the strategy whose canary is rolled back.
            reason: why (audited; required).

        Returns:
            The canary's status (``CANARY_STATE_ROLLED_BACK``, a terminal state).

        Raises:
            MeshRpcError: ``NOT_FOUND`` (``UNKNOWN_STRATEGY``, ``NO_CANARY``) or ``INVALID_ARGUMENT``
                (``REASON_REQUIRED``, ``CANARY_FINISHED``).

        Example:
            >>> async def main() -> tuple[str, float]:
            ...     async with OpsAdminClient(ops_address, admin_token=admin_token) as admin:
            ...         status = await admin.rollback_canary("momentum", reason="doc example")
            ...         return ops_pb2.CanaryState.Name(status.state), status.weights["momentum_v2"]
            >>> asyncio.run(main())
            ('CANARY_STATE_ROLLED_BACK', 0.0)
        """
        request = admin_pb2.RollbackCanaryRequest(strategy_id=strategy_id, reason=reason)
        response = await self._unary(self._stub.RollbackCanary, request)
        return response.status

    async def pause_canary(self, strategy_id: str, *, reason: str) -> ops_pb2.CanaryStatus:
        """Hold a canary at its current weight: no step up or down until :meth:`resume_canary`.

        Hard guards still roll a paused canary back.

        Args:
            strategy_id: the strategy whose canary pauses.
            reason: why (audited; required).

        Returns:
            The canary's status (``CANARY_STATE_PAUSED``).

        Raises:
            MeshRpcError: ``NOT_FOUND`` (``UNKNOWN_STRATEGY``, ``NO_CANARY``) or ``INVALID_ARGUMENT``
                (``REASON_REQUIRED``, ``CANARY_FINISHED``).

        Example:
            >>> async def main() -> list[str]:
            ...     async with OpsAdminClient(ops_address, admin_token=admin_token) as admin:
            ...         paused = await admin.pause_canary("momentum", reason="doc example")
            ...         resumed = await admin.resume_canary("momentum", reason="doc example")
            ...         return [ops_pb2.CanaryState.Name(s.state) for s in (paused, resumed)]
            >>> asyncio.run(main())  # doctest: +ELLIPSIS
            ['CANARY_STATE_PAUSED', 'CANARY_STATE_...']
        """
        request = admin_pb2.PauseCanaryRequest(strategy_id=strategy_id, reason=reason)
        response = await self._unary(self._stub.PauseCanary, request)
        return response.status

    async def resume_canary(self, strategy_id: str, *, reason: str) -> ops_pb2.CanaryStatus:
        """Resume a paused canary: it goes back to the state it was paused in, with a fresh dwell.

        Args:
            strategy_id: the strategy whose canary resumes.
            reason: why (audited; required).

        Returns:
            The canary's status.

        Raises:
            MeshRpcError: ``NOT_FOUND`` (``UNKNOWN_STRATEGY``, ``NO_CANARY``) or ``INVALID_ARGUMENT``
                (``REASON_REQUIRED``, ``CANARY_FINISHED``).

        Example:
            >>> async def main() -> str:
            ...     async with OpsAdminClient(ops_address, admin_token=admin_token) as admin:
            ...         await admin.pause_canary("momentum", reason="doc example")
            ...         status = await admin.resume_canary("momentum", reason="doc example")
            ...         return ops_pb2.CanaryState.Name(status.state)
            >>> asyncio.run(main()) != "CANARY_STATE_PAUSED"
            True
        """
        request = admin_pb2.ResumeCanaryRequest(strategy_id=strategy_id, reason=reason)
        response = await self._unary(self._stub.ResumeCanary, request)
        return response.status

    async def confirm_canary(self, strategy_id: str, *, reason: str) -> ops_pb2.CanaryStatus:
        """Confirm the step to 100% when the confirmation gate holds the canary.

        While the canary waits for confirmation this promotes it to 100% at once. At an earlier step
        it confirms in advance (the event and audit log read ``operator confirmed 100% in advance``):
        the canary still climbs the schedule and passes every check; only the manual gate is open.

        Args:
            strategy_id: the strategy whose canary is confirmed.
            reason: why (audited; required).

        Returns:
            The canary's status (unchanged state when confirmed in advance).

        Raises:
            MeshRpcError: ``NOT_FOUND`` (``UNKNOWN_STRATEGY``, ``NO_CANARY``) or ``INVALID_ARGUMENT``
                (``REASON_REQUIRED``, ``CANARY_FINISHED``).

        Example:
            >>> async def main() -> ops_pb2.CanaryStatus:
            ...     async with OpsAdminClient(ops_address, admin_token=admin_token) as admin:
            ...         return await admin.confirm_canary("momentum", reason="")
            >>> asyncio.run(main())  # every canary control needs a reason
            Traceback (most recent call last):
                ...
            clients.errors.MeshRpcError: INVALID_ARGUMENT: REASON_REQUIRED: ...
        """
        request = admin_pb2.ConfirmCanaryRequest(strategy_id=strategy_id, reason=reason)
        response = await self._unary(self._stub.ConfirmCanary, request)
        return response.status

    async def set_trading_state(
        self, state: common_pb2.TradingState.ValueType, *, model_id: str = "", reason: str = ""
    ) -> admin_pb2.SetTradingStateResponse:
        """Set one model's trading state, or the global one when ``model_id`` is empty.

        Args:
            state: ``TRADING_STATE_ACTIVE``, ``TRADING_STATE_REDUCING`` (only exposure-reducing
                orders) or ``TRADING_STATE_HALTED`` (none; cancels always pass).
            model_id: the model; empty for the global state.
            reason: why (audited).

        Returns:
            ``global_state`` and the named model's effective ``model_state``.

        Raises:
            MeshRpcError: ``INVALID_ARGUMENT`` (``INVALID_STATE``; ``KILL_SWITCH_ENGAGED`` when
                loosening the global state while the kill switch is engaged) or ``NOT_FOUND``
                (``UNKNOWN_MODEL``).

        Example:
            >>> async def main() -> list[str]:
            ...     async with OpsAdminClient(ops_address, admin_token=admin_token) as admin:
            ...         reducing = await admin.set_trading_state(common_pb2.TRADING_STATE_REDUCING,
            ...                                                  model_id="meanrev_v1", reason="doc example")
            ...         active = await admin.set_trading_state(common_pb2.TRADING_STATE_ACTIVE,
            ...                                                model_id="meanrev_v1", reason="doc example")
            ...         return [common_pb2.TradingState.Name(a.model_state) for a in (reducing, active)]
            >>> asyncio.run(main())
            ['TRADING_STATE_REDUCING', 'TRADING_STATE_ACTIVE']
        """
        request = admin_pb2.SetTradingStateRequest(model_id=model_id, state=state, reason=reason)
        return await self._unary(self._stub.SetTradingState, request)

    async def engage_kill_switch(self, *, reason: str = "") -> admin_pb2.EngageKillSwitchResponse:
        """Halt everything and cancel every resting order at the engine.

        The answer comes when the engine has confirmed the cancels. Releasing is a separate call,
        :meth:`release_kill_switch`.

        Args:
            reason: why (audited).

        Returns:
            ``canceled_count``, ``resting_remaining`` (0 when every cancel is confirmed) and
            ``cancels_confirmed``.

        Raises:
            MeshRpcError: ``UNAVAILABLE`` (``ENGINE_UNAVAILABLE``): ops is halted, but the engine
                could not be asked to cancel; retry.

        Example:
            >>> async def main() -> tuple[bool, str]:
            ...     async with OpsAdminClient(ops_address, admin_token=admin_token) as admin:
            ...         engaged = await admin.engage_kill_switch(reason="doc example")
            ...         state = await admin.release_kill_switch(reason="doc example over")
            ...         return engaged.cancels_confirmed, common_pb2.TradingState.Name(state)
            >>> asyncio.run(main())
            (True, 'TRADING_STATE_ACTIVE')
        """
        request = admin_pb2.EngageKillSwitchRequest(reason=reason)
        return await self._unary(self._stub.EngageKillSwitch, request)

    async def release_kill_switch(self, *, reason: str) -> common_pb2.TradingState.ValueType:
        """Release the kill switch (a separate, audited call).

        Args:
            reason: why (audited; required).

        Returns:
            The global trading state after the release.

        Raises:
            MeshRpcError: ``INVALID_ARGUMENT``: ``REASON_REQUIRED``, or ``KILL_SWITCH_NOT_ENGAGED``
                when there is nothing to release.

        Example:
            >>> async def main() -> None:
            ...     async with OpsAdminClient(ops_address, admin_token=admin_token) as admin:
            ...         await admin.release_kill_switch(reason="doc example")
            >>> asyncio.run(main())  # nothing to release
            Traceback (most recent call last):
                ...
            clients.errors.MeshRpcError: INVALID_ARGUMENT: KILL_SWITCH_NOT_ENGAGED: ...
        """
        request = admin_pb2.ReleaseKillSwitchRequest(reason=reason)
        response = await self._unary(self._stub.ReleaseKillSwitch, request)
        return response.global_state

    async def reload_config(self, target: admin_pb2.ConfigTarget.ValueType) -> str:
        """Reload one config file; a bad file is refused and the previous config stays in force.

        Args:
            target: ``CONFIG_TARGET_RISK_LIMITS``, ``CONFIG_TARGET_CAPITAL_POLICY`` or
                ``CONFIG_TARGET_MODEL_REGISTRY``.

        Returns:
            The server's note, e.g. ``risk limits reloaded from risk_limits.json``.

        Raises:
            MeshRpcError: ``INVALID_ARGUMENT``: ``INVALID_TARGET`` (UNSPECIFIED) or
                ``CONFIG_INVALID`` (the file is invalid; nothing changed).

        Example:
            >>> async def main() -> str:
            ...     async with OpsAdminClient(ops_address, admin_token=admin_token) as admin:
            ...         return await admin.reload_config(admin_pb2.CONFIG_TARGET_RISK_LIMITS)
            >>> asyncio.run(main())
            'risk limits reloaded from risk_limits.json'
        """
        request = admin_pb2.ReloadConfigRequest(target=target)
        response = await self._unary(self._stub.ReloadConfig, request)
        return response.message
