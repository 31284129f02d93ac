"""Reloading the capital policy and the model registry at run time: bad files refused, good ones applied."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from nautilus_mesh.api.ops.v1 import admin_pb2, admin_pb2_grpc, ops_pb2
from nautilus_mesh.status import from_rpc_error
from tests.conftest import ADMIN_META, DEMO, Mesh, running_mesh


@pytest.fixture
async def editable_mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    """The mesh on copies of the demo policy and registry that the test edits."""
    for name in ("capital_policy.json", "registry.json"):
        shutil.copy(DEMO / name, tmp_path / name)
    async with running_mesh(
        tmp_path,
        ops={"capital_policy_path": tmp_path / "capital_policy.json", "registry_path": tmp_path / "registry.json"},
    ) as mesh:
        yield mesh


async def reload(admin: admin_pb2_grpc.OpsAdminServiceStub, target: int) -> admin_pb2.ReloadConfigResponse:
    return await admin.ReloadConfig(admin_pb2.ReloadConfigRequest(target=target), metadata=ADMIN_META)  # type: ignore[arg-type]


async def test_capital_policy_reload_when_bounds_infeasible_is_refused_and_old_policy_stays(
    editable_mesh: Mesh, tmp_path: Path
) -> None:
    path = tmp_path / "capital_policy.json"
    policy = json.loads(path.read_text())
    core = editable_mesh.ops.core
    async with editable_mesh.channel() as channel:
        admin = admin_pb2_grpc.OpsAdminServiceStub(channel)
        bad = dict(policy, strategies={"momentum": {"min_fraction": 0.6}, "meanrev": {"min_fraction": 0.6}})
        path.write_text(json.dumps(bad))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await reload(admin, admin_pb2.CONFIG_TARGET_CAPITAL_POLICY)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "INFEASIBLE_BOUNDS" in (caught.value.details() or "")
        assert core.allocator.policy.strategies["momentum"].min_fraction == 0.2

        good = dict(
            policy,
            strategies={
                "momentum": {"min_fraction": 0.6, "max_fraction": 0.9},
                "meanrev": {"min_fraction": 0.1, "max_fraction": 0.4},
            },
        )
        path.write_text(json.dumps(good))
        response = await reload(admin, admin_pb2.CONFIG_TARGET_CAPITAL_POLICY)
        assert "reloaded" in response.message
        assert "weights moved to fit its bounds: momentum=0.5000, meanrev=0.5000 -> momentum=0.6000" in response.message
    # The weights in force are re-projected onto the new bounds at once (the reload's audit record says so).
    assert core.allocator.weights["momentum"] >= 0.6 and core.allocator.weights["meanrev"] <= 0.4


async def test_capital_policy_reload_when_a_strategy_is_left_out_its_live_models_get_no_capital(
    editable_mesh: Mesh, tmp_path: Path
) -> None:
    """A strategy the policy leaves out is not enabled: its live models' quota is 0 and every sample still runs (the
    reload was answered NOT_FOUND after the new policy was already in force, and every later sample failed)."""
    path = tmp_path / "capital_policy.json"
    policy = json.loads(path.read_text())
    core = editable_mesh.ops.core
    async with editable_mesh.channel() as channel:
        admin = admin_pb2_grpc.OpsAdminServiceStub(channel)
        path.write_text(json.dumps(dict(policy, strategies={"momentum": {"min_fraction": 0.0, "max_fraction": 1.0}})))
        response = await reload(admin, admin_pb2.CONFIG_TARGET_CAPITAL_POLICY)
    assert "reloaded" in response.message
    assert core.allocator.weights == {"momentum": 1.0}
    assert core.exposure.quota(core.registry.route("meanrev_v1")) == 0
    assert core.exposure.quota(core.registry.route("momentum_v1")) > 0
    core.periodic.sample()  # prices every model, meanrev's included


async def test_registry_reload_when_weights_bad_is_refused_and_when_good_changes_routing(
    editable_mesh: Mesh, tmp_path: Path
) -> None:
    path = tmp_path / "registry.json"
    registry = json.loads(path.read_text())
    async with editable_mesh.stubs() as (stub, admin):
        registry["strategies"]["meanrev"]["models"]["meanrev_v1"]["weight"] = 0.5
        path.write_text(json.dumps(registry))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await reload(admin, admin_pb2.CONFIG_TARGET_MODEL_REGISTRY)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "meanrev_v1=0.5" in (caught.value.details() or "")

        registry["strategies"]["meanrev"]["models"]["meanrev_v1"].update(weight=1.0, mode="SHADOW")
        path.write_text(json.dumps(registry))
        await reload(admin, admin_pb2.CONFIG_TARGET_MODEL_REGISTRY)
        models = await stub.ListModels(ops_pb2.ListModelsRequest(strategy_id="meanrev"), metadata=ADMIN_META)
        assert [(m.model_id, m.mode) for m in models.models] == [("meanrev_v1", ops_pb2.ROUTING_MODE_SHADOW)]


async def test_registry_reload_after_a_promotion_leaves_the_canarys_strategy_as_promoted(editable_mesh: Mesh) -> None:
    """The file still describes the rollout's start (momentum_v1 live, momentum_v2 in shadow): a reload, e.g. for
    another strategy's weights, must not put the retired model back live with the whole quota."""
    async with editable_mesh.stubs() as (stub, admin):
        await admin.PromoteCanary(
            admin_pb2.PromoteCanaryRequest(strategy_id="momentum", to_full=True, reason="reviewed"), metadata=ADMIN_META
        )

        async def routing() -> list[tuple[str, int, float]]:
            models = await stub.ListModels(ops_pb2.ListModelsRequest(strategy_id="momentum"), metadata=ADMIN_META)
            return [(m.model_id, m.mode, m.routing_weight) for m in models.models]

        promoted = await routing()
        assert ("momentum_v2", ops_pb2.ROUTING_MODE_LIVE, 1.0) in promoted
        answer = await reload(admin, admin_pb2.CONFIG_TARGET_MODEL_REGISTRY)
        assert await routing() == promoted
        assert "left as they are: momentum (canary PROMOTED)" in answer.message
        meanrev = await stub.ListModels(ops_pb2.ListModelsRequest(strategy_id="meanrev"), metadata=ADMIN_META)
        assert [(m.model_id, m.mode) for m in meanrev.models] == [("meanrev_v1", ops_pb2.ROUTING_MODE_LIVE)]


async def test_registry_reload_when_a_strategy_is_dropped_or_the_file_unreadable_is_refused_config_invalid(
    editable_mesh: Mesh, tmp_path: Path
) -> None:
    """A file without a strategy would leave that strategy in force while answering "reloaded"; a file that is not
    UTF-8 or is a directory answered UNKNOWN. Each is CONFIG_INVALID, with the previous registry in force."""
    path = tmp_path / "registry.json"
    registry = json.loads(path.read_text())
    core = editable_mesh.ops.core
    async with editable_mesh.stubs() as (_, admin):
        without = dict(registry, strategies={"momentum": registry["strategies"]["momentum"]})
        path.write_text(json.dumps(without))
        with pytest.raises(grpc.aio.AioRpcError) as dropped:
            await reload(admin, admin_pb2.CONFIG_TARGET_MODEL_REGISTRY)
        assert "removes 'meanrev'" in (dropped.value.details() or "")
        path.write_bytes(b'{"strategies": "\xff"}')
        with pytest.raises(grpc.aio.AioRpcError) as not_utf8:
            await reload(admin, admin_pb2.CONFIG_TARGET_MODEL_REGISTRY)
        path.unlink()
        path.mkdir()
        with pytest.raises(grpc.aio.AioRpcError) as directory:
            await reload(admin, admin_pb2.CONFIG_TARGET_MODEL_REGISTRY)
    for refused in (dropped, not_utf8, directory):
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert from_rpc_error(refused.value).code == "CONFIG_INVALID"  # type: ignore[union-attr]
    assert "meanrev" in core.registry.strategies()
