"""A short real mesh (`nautilus-mesh up`): its filled traces split into stages that add up to end to end."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.launcher import CLI, demo_config_on, run_up
from tests.localhost import free_ports

pytestmark = pytest.mark.skipif(CLI is None, reason="the console script is installed by `make test`")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Runs the demo mesh for 12 s with every signal traced; returns its working directory."""
    tmp = tmp_path_factory.mktemp("traced-run")
    config = demo_config_on(tmp, *free_ports(4))
    env = {**os.environ, "OTEL_TRACES_SAMPLER": "parentbased_always_on"}
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    env.pop("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None)
    result = run_up(config, tmp, 12, env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return tmp


def traces(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CLI is not None
    return subprocess.run([CLI, "traces", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_filled_traces_when_mesh_ran_add_up_to_end_to_end_within_5_percent(demo_run: Path) -> None:
    result = traces(demo_run, "--json")
    assert result.returncode == 0, result.stderr
    filled = json.loads(result.stdout)["filled"]
    assert filled["count"] >= 10, filled
    assert filled["within_tolerance"] >= 0.95 * filled["count"], filled
    kinds = {s["name"]: s["kind"] for s in filled["stages"]}
    for wire in ("wire strategy->ops", "wire ops->engine", "wire engine->ops", "wire ops->strategy"):
        assert kinds.get(wire) == "wire", sorted(kinds)
    assert kinds.get("queue before ops.signal receive") == "queue"
    assert kinds.get("engine.order receive") == "span"


def test_traces_slowest_3_when_mesh_ran_prints_three_waterfalls(demo_run: Path) -> None:
    result = traces(demo_run, "--slowest", "3")
    assert result.returncode == 0, result.stderr
    headers = [line for line in result.stdout.splitlines() if line.startswith("trace ")]
    assert len(headers) == 3 and all("(filled)" in h for h in headers)
    assert "filled signals: latency by stage" in result.stdout
