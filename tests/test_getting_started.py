"""docs/getting-started.md, section 3, run as written against a real engine and ops on loopback.

The test takes the page's ``json registry.json`` and ``json ops.json`` blocks and its ``python my_strategy.py``
block, starts the mesh with the demo configuration plus those entries, runs the script in its own interpreter and
checks that its model was paper-traded in SHADOW and that nothing of it reached the live venue.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from clients import EngineClient, OpsClient
from nautilus_mesh.api.ops.v1 import ops_pb2
from ops_server.config import StrategyAccess
from tests.conftest import DEMO, ENGINE_TOKEN, MEANREV_TOKEN, MOMENTUM_TOKEN, ROOT, running_mesh

PAGE = ROOT / "docs" / "getting-started.md"
_BLOCK = re.compile(r"^```(\w+) ([\w.]+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks() -> dict[str, str]:
    """The page's named code blocks: ```<language> <name>."""
    return {name: body for _, name, body in _BLOCK.findall(PAGE.read_text())}


def test_page_when_read_has_the_blocks_the_tutorial_names() -> None:
    assert {"registry.json", "ops.json", "my_strategy.py"} <= blocks().keys()


@pytest.mark.timeout(90)
async def test_tutorial_strategy_when_run_against_a_mesh_trades_on_paper_only(tmp_path: Path) -> None:
    named = blocks()
    registry: dict[str, Any] = json.loads((DEMO / "registry.json").read_text())
    registry["strategies"].update(json.loads(named["registry.json"]))
    registry_path = tmp_path / "registry.json"
    registry_path.write_text(json.dumps(registry))
    access = {
        "momentum": StrategyAccess(token=MOMENTUM_TOKEN, models=("momentum_v1", "momentum_v2")),
        "meanrev": StrategyAccess(token=MEANREV_TOKEN, models=("meanrev_v1",)),
    }
    new = json.loads(named["ops.json"])
    access.update({name: StrategyAccess(token=e["token"], models=tuple(e["models"])) for name, e in new.items()})
    ((strategy, entry),) = new.items()
    model_id = entry["models"][0]
    script = tmp_path / "my_strategy.py"
    script.write_text(named["my_strategy.py"])

    async with running_mesh(tmp_path, ops={"registry_path": registry_path, "strategies": access}) as mesh:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            "--ops",
            mesh.ops_address,
            "--engine",
            mesh.engine_address,
            "--signals",
            "20",
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        lines = out.decode().splitlines()
        assert proc.returncode == 0, "\n".join(lines)
        assert len(lines) == 20 and all(re.match(r"signal \w+-\d+ target=[+-]\d\.\d\d: ", line) for line in lines)
        assert any(": ACCEPTED SHADOW " in line for line in lines), lines
        assert not any("refused" in line or " LIVE" in line for line in lines), lines

        async with OpsClient(mesh.ops_address, strategy_token=entry["token"]) as ops:
            orders = (await ops.list_orders(page_size=100)).orders  # the token's own models: the paper book
            positions = await ops.get_positions(model_id)
        assert orders and all(o.model_id == f"{model_id}@paper" for o in orders)
        assert positions and all(p.mode == ops_pb2.ROUTING_MODE_SHADOW for p in positions)
        async with EngineClient(mesh.engine_address, engine_token=ENGINE_TOKEN) as engine:
            placed = [await engine.get_order(o.client_order_id) for o in orders]
        assert {o.venue for o in placed} == {"paper"}, "a SHADOW model's order reached a live venue"
        assert strategy == "breakout"
