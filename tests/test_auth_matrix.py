"""Who may call what: every ops RPC x {no token, wrong token, another strategy's token, strategy token on admin, right}.

Reads: a strategy token sees its own models and strategies only (naming another's is PERMISSION_DENIED, lists are
filtered); the admin token sees everything. Writes (OpsAdminService) need the admin token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from nautilus_mesh.api.ops.v1 import admin_pb2, admin_pb2_grpc, ops_pb2, ops_pb2_grpc
from tests.conftest import ADMIN_TOKEN, MEANREV_TOKEN, MOMENTUM_TOKEN, Mesh

MOMENTUM = (("x-strategy-token", MOMENTUM_TOKEN),)
MEANREV = (("x-strategy-token", MEANREV_TOKEN),)
WRONG = (("x-strategy-token", "not-a-token"),)
OPERATOR = (("x-ops-token", ADMIN_TOKEN),)
WRONG_OPERATOR = (("x-ops-token", "not-the-admin-token"),)

# RPC name -> a request that names momentum's model or strategy.
NAMED: dict[str, Any] = {
    "GetPositions": ops_pb2.GetPositionsRequest(model_id="momentum_v1"),
    "ListModels": ops_pb2.ListModelsRequest(strategy_id="momentum"),
    "GetModelQuota": ops_pb2.GetModelQuotaRequest(model_id="momentum_v1"),
    "GetModelStats": ops_pb2.GetModelStatsRequest(model_id="momentum_v1"),
    "ListOrders": ops_pb2.ListOrdersRequest(model_id="momentum_v1"),
    "ListFills": ops_pb2.ListFillsRequest(model_id="momentum_v1"),
    "GetCanaryStatus": ops_pb2.GetCanaryStatusRequest(strategy_id="momentum"),
}
# RPC name -> (request, what in the answer names momentum).
LISTED: dict[str, tuple[Any, Callable[[Any], set[str]]]] = {
    "GetAllocations": (ops_pb2.GetAllocationsRequest(), lambda r: {a.strategy_id for a in r.allocations}),
    "GetRiskLimits": (ops_pb2.GetRiskLimitsRequest(), lambda r: set(r.limits["models"].keys())),
    "GetTradingState": (ops_pb2.GetTradingStateRequest(), lambda r: set(r.models)),
    "ListModels": (ops_pb2.ListModelsRequest(), lambda r: {m.model_id for m in r.models}),
    "GetModelStats": (
        ops_pb2.GetModelStatsRequest(),
        lambda r: {m.model_id for m in r.models} | {s.strategy_id for s in r.strategies},
    ),
    "GetCanaryStatus": (ops_pb2.GetCanaryStatusRequest(), lambda r: {c.strategy_id for c in r.canaries}),
    "GetPositions": (ops_pb2.GetPositionsRequest(), lambda r: {p.model_id for p in r.positions}),
}
READS = sorted({*NAMED, *LISTED, "SubmitSignal"})


def request_for(rpc: str) -> Any:
    if rpc == "SubmitSignal":
        signal = ops_pb2.Signal(signal_id="auth-1", model_id="momentum_v1", instrument="BTC-USD", target=0.0)
        return ops_pb2.SubmitSignalRequest(signal=signal)
    return NAMED[rpc] if rpc in NAMED else LISTED[rpc][0]


async def call(mesh: Mesh, rpc: str, metadata: tuple[tuple[str, str], ...]) -> tuple[grpc.StatusCode, Any]:
    async with mesh.channel() as channel:
        method = getattr(ops_pb2_grpc.OpsServiceStub(channel), rpc)
        try:
            return grpc.StatusCode.OK, await method(request_for(rpc), metadata=metadata, timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc


@pytest.mark.parametrize("rpc", READS)
async def test_read_when_no_or_wrong_token_is_unauthenticated(mesh: Mesh, rpc: str) -> None:
    assert (await call(mesh, rpc, ()))[0] == grpc.StatusCode.UNAUTHENTICATED
    assert (await call(mesh, rpc, WRONG))[0] == grpc.StatusCode.UNAUTHENTICATED
    assert (await call(mesh, rpc, WRONG_OPERATOR))[0] == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("rpc", READS)
async def test_read_when_owner_asks_is_answered(mesh: Mesh, rpc: str) -> None:
    code, _ = await call(mesh, rpc, MOMENTUM)
    assert code == grpc.StatusCode.OK


@pytest.mark.parametrize("rpc", sorted({*NAMED, "SubmitSignal"}))
async def test_read_when_another_strategy_names_the_model_is_permission_denied(mesh: Mesh, rpc: str) -> None:
    code, _ = await call(mesh, rpc, MEANREV)
    assert code == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("rpc", sorted(LISTED))
async def test_list_when_another_strategy_reads_it_leaves_out_what_is_not_its_own(mesh: Mesh, rpc: str) -> None:
    names = LISTED[rpc][1]
    async with mesh.channel() as channel:
        method = getattr(ops_pb2_grpc.OpsServiceStub(channel), rpc)
        seen_by_meanrev = names(await method(LISTED[rpc][0], metadata=MEANREV, timeout=10))
        seen_by_operator = names(await method(LISTED[rpc][0], metadata=OPERATOR, timeout=10))
    assert not {n for n in seen_by_meanrev if n.startswith("momentum")}
    if rpc not in ("GetPositions", "GetRiskLimits"):  # nobody holds a position; the demo limits have no overrides
        assert {n for n in seen_by_operator if n.startswith("momentum")}


async def test_watch_events_when_another_strategy_watches_it_sees_only_its_own(mesh: Mesh) -> None:
    mesh.ops.core.events.publish("CANARY", "momentum moved", strategy="momentum", model_id="momentum_v2")
    mesh.ops.core.events.publish("RISK_STATE_CHANGED", "meanrev halted", model_id="meanrev_v1")
    async with mesh.channel() as channel:
        stub = ops_pb2_grpc.OpsServiceStub(channel)
        request = ops_pb2.WatchEventsRequest(include_recent=True)
        meanrev = await anext(aiter(stub.WatchEvents(request, metadata=MEANREV)))
        operator = await anext(aiter(stub.WatchEvents(request, metadata=OPERATOR)))
    assert [e.message for e in meanrev.events] == ["meanrev halted"]
    assert {"momentum moved", "meanrev halted"} <= {e.message for e in operator.events}


@pytest.mark.parametrize(
    ("rpc", "request_"),
    [
        ("TriggerAllocation", admin_pb2.TriggerAllocationRequest(reason="x")),
        ("SetRoutingWeights", admin_pb2.SetRoutingWeightsRequest(strategy_id="meanrev", weights={"meanrev_v1": 1})),
        ("PromoteCanary", admin_pb2.PromoteCanaryRequest(strategy_id="momentum", reason="x")),
        ("RollbackCanary", admin_pb2.RollbackCanaryRequest(strategy_id="momentum", reason="x")),
        ("PauseCanary", admin_pb2.PauseCanaryRequest(strategy_id="momentum", reason="x")),
        ("ResumeCanary", admin_pb2.ResumeCanaryRequest(strategy_id="momentum", reason="x")),
        ("ConfirmCanary", admin_pb2.ConfirmCanaryRequest(strategy_id="momentum", reason="x")),
        ("SetTradingState", admin_pb2.SetTradingStateRequest(state=1, reason="x")),
        ("EngageKillSwitch", admin_pb2.EngageKillSwitchRequest(reason="x")),
        ("ReleaseKillSwitch", admin_pb2.ReleaseKillSwitchRequest(reason="x")),
        ("ReloadConfig", admin_pb2.ReloadConfigRequest(target=admin_pb2.CONFIG_TARGET_RISK_LIMITS)),
    ],
)
async def test_admin_rpc_when_called_without_the_admin_token_is_refused(mesh: Mesh, rpc: str, request_: Any) -> None:
    async with mesh.channel() as channel:
        method = getattr(admin_pb2_grpc.OpsAdminServiceStub(channel), rpc)
        for metadata in ((), MOMENTUM, WRONG_OPERATOR):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await method(request_, metadata=metadata, timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, (rpc, metadata)
        try:  # the right token gets through (the call itself may still be refused, e.g. nothing to release)
            await method(request_, metadata=OPERATOR, timeout=10)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED), rpc
