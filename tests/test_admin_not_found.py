"""OpsAdminService answers NOT_FOUND with the code its table in docs/api.md gives for an unknown strategy or model."""

from __future__ import annotations

import grpc
import pytest

from nautilus_mesh.api.ops.v1 import admin_pb2, ops_pb2
from nautilus_mesh.status import from_rpc_error
from tests.conftest import ADMIN_META, ADMIN_TOKEN, MOMENTUM_TOKEN, Mesh

ADMIN_READ = (("x-strategy-token", MOMENTUM_TOKEN), ("x-ops-token", ADMIN_TOKEN))
"""An operator's read: the admin token reads every model."""


async def refused_code(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call  # type: ignore[misc]
    detail = from_rpc_error(refused.value)
    return refused.value.code(), detail.code if detail is not None else ""


async def test_unknown_strategy_or_model_or_canary_is_not_found_with_its_own_code(mesh: Mesh) -> None:
    async with mesh.stubs() as (_, admin):
        unknown_model = await refused_code(
            admin.SetRoutingWeights(
                admin_pb2.SetRoutingWeightsRequest(strategy_id="meanrev", weights={"no_such_model": 1.0}),
                metadata=ADMIN_META,
            )
        )
        unknown_strategy = await refused_code(
            admin.PauseCanary(admin_pb2.PauseCanaryRequest(strategy_id="no_such", reason="r"), metadata=ADMIN_META)
        )
        no_canary = await refused_code(
            admin.PauseCanary(admin_pb2.PauseCanaryRequest(strategy_id="meanrev", reason="r"), metadata=ADMIN_META)
        )
    assert unknown_model == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_MODEL")
    assert unknown_strategy == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_STRATEGY")
    assert no_canary == (grpc.StatusCode.NOT_FOUND, "NO_CANARY")


async def test_stats_and_positions_of_one_model_cover_its_strategy_alone_and_an_unknown_model_is_not_found(
    mesh: Mesh,
) -> None:
    """`stats --model M` listed every strategy, and an unknown model gave empty tables that read as "nothing yet"."""
    queries = mesh.ops.core.queries
    one = queries.stats("momentum_v1")
    assert [m.model_id for m in one.models] == ["momentum_v1"]
    assert [s.strategy_id for s in one.strategies] == ["momentum"]
    assert {s.strategy_id for s in queries.stats().strategies} == {"momentum", "meanrev"}
    async with mesh.stubs() as (ops, _):
        for call in (
            ops.GetModelStats(ops_pb2.GetModelStatsRequest(model_id="no_such"), metadata=ADMIN_READ),
            ops.GetPositions(ops_pb2.GetPositionsRequest(model_id="no_such"), metadata=ADMIN_READ),
        ):
            assert await refused_code(call) == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_MODEL")
