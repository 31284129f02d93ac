"""Tokens from environment variables or files, and stored as SHA-256 hashes instead of plain text."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from engine_server.config import EngineConfig
from nautilus_mesh.api.ops.v1 import admin_pb2, admin_pb2_grpc, ops_pb2
from nautilus_mesh.auth import StrategyAuthenticator, hash_token, require_token
from nautilus_mesh.config import validate_config
from nautilus_mesh.errors import AuthError, ConfigError
from ops_server.config import OpsConfig, StrategyAccess
from tests.conftest import ADMIN_TOKEN, DEMO, ENGINE_TOKEN, MOMENTUM_TOKEN, running_mesh


def test_hashed_tokens_accept_the_token_and_refuse_others() -> None:
    auth = StrategyAuthenticator({"momentum": (hash_token("s3cret"), ["momentum_v1"])})
    assert auth.authenticate([("x-strategy-token", "s3cret")]).name == "momentum"
    with pytest.raises(AuthError):
        auth.authenticate([("x-strategy-token", hash_token("s3cret"))])  # the hash itself is not a token
    require_token([("x-ops-token", "adm")], "x-ops-token", hash_token("adm"), door="admin")
    with pytest.raises(AuthError):
        require_token([("x-ops-token", "other")], "x-ops-token", hash_token("adm"), door="admin")


def ops_data(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "registry_path": str(DEMO / "registry.json"),
        "capital_policy_path": str(DEMO / "capital_policy.json"),
        "risk_limits_path": str(DEMO / "risk_limits.json"),
    }
    data.update(overrides)
    return data


def test_tokens_when_given_as_env_or_file_are_read_at_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAUTILUS_TEST_ENGINE_TOKEN", "from-env")
    secret = tmp_path / "admin.token"
    secret.write_text(hash_token("from-file") + "\n")
    config = validate_config(
        OpsConfig,
        ops_data(engine_token="env:NAUTILUS_TEST_ENGINE_TOKEN", admin_token=f"file:{secret}"),
        source="ops.json",
    )
    assert config.engine_token == "from-env"
    assert config.admin_token == hash_token("from-file")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"admin_token": "env:NAUTILUS_TEST_UNSET"}, "environment variable NAUTILUS_TEST_UNSET is unset or empty"),
        ({"admin_token": "file:/nonexistent/token"}, "token file /nonexistent/token cannot be read"),
        ({"admin_token": "sha256:abc"}, "64 hex digits"),
        ({"engine_token": hash_token("x")}, "cannot be given as a sha256: hash"),
    ],
)
def test_token_references_when_unusable_are_config_errors(
    overrides: dict[str, object], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NAUTILUS_TEST_UNSET", raising=False)
    with pytest.raises(ConfigError) as caught:
        validate_config(OpsConfig, ops_data(**overrides), source="ops.json")
    assert expected in caught.value.message


def test_strategies_json_token_when_given_as_env_or_file_is_read_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A strategy process sends its token: ``env:``/``file:`` resolve as in ops.json (the reference itself was sent,
    and refused forever); an unset variable or a hash is a config error naming it."""
    import json

    from strategies.config import StrategiesConfig

    data = json.loads((DEMO / "strategies.json").read_text())
    monkeypatch.setenv("NAUTILUS_TEST_STRATEGY_TOKEN", "from-env")
    monkeypatch.delenv("NAUTILUS_TEST_UNSET", raising=False)
    token_file = tmp_path / "strategy.token"
    token_file.write_text("from-file\n")
    for reference, expected in (("env:NAUTILUS_TEST_STRATEGY_TOKEN", "from-env"), (f"file:{token_file}", "from-file")):
        data["strategies"][0]["token"] = reference
        config = validate_config(StrategiesConfig, data, source="strategies.json")
        assert config.strategies[0].token == expected
    for reference, error in (
        ("env:NAUTILUS_TEST_UNSET", "environment variable NAUTILUS_TEST_UNSET is unset or empty"),
        (hash_token("x"), "cannot be given as a sha256: hash"),
    ):
        data["strategies"][0]["token"] = reference
        with pytest.raises(ConfigError) as caught:
            validate_config(StrategiesConfig, data, source="strategies.json")
        assert error in caught.value.message and "strategies.0.token" in caught.value.message


def test_engine_token_when_hashed_loads() -> None:
    assert EngineConfig(ops_token=hash_token("t")).ops_token == hash_token("t")


async def test_mesh_when_every_checked_token_is_hashed_still_serves_its_callers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NAUTILUS_TEST_ENGINE_TOKEN", ENGINE_TOKEN)
    ops = {
        "engine_token": "env:NAUTILUS_TEST_ENGINE_TOKEN",
        "admin_token": hash_token(ADMIN_TOKEN),
        "strategies": {"momentum": StrategyAccess(token=hash_token(MOMENTUM_TOKEN), models=("momentum_v1",))},
    }
    async with (
        running_mesh(tmp_path, engine={"ops_token": hash_token(ENGINE_TOKEN)}, ops=ops) as mesh,
        mesh.channel() as channel,
    ):
        admin = admin_pb2_grpc.OpsAdminServiceStub(channel)
        await admin.TriggerAllocation(
            admin_pb2.TriggerAllocationRequest(reason="hashed"), metadata=(("x-ops-token", ADMIN_TOKEN),)
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await admin.TriggerAllocation(
                admin_pb2.TriggerAllocationRequest(reason="hash as token"),
                metadata=(("x-ops-token", hash_token(ADMIN_TOKEN)),),
            )
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        signal = ops_pb2.Signal(signal_id="h-1", model_id="momentum_v1", instrument="BTC-USD", target=0.05)
        response = await mesh.ops_stub(channel).SubmitSignal(
            ops_pb2.SubmitSignalRequest(signal=signal), metadata=(("x-strategy-token", MOMENTUM_TOKEN),)
        )
        assert response.decision.status == ops_pb2.DECISION_STATUS_ACCEPTED
