"""A strategy process's /metrics: signals sent, decisions by status, fills and signal-to-fill, from zero."""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import MEANREV_TOKEN, MOMENTUM_TOKEN, Mesh, wait_until
from tests.localhost import free_port

ROOT = Path(__file__).resolve().parent.parent


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return {}
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_strategy_metrics_when_running_count_from_zero_what_was_sent_and_filled(
    mesh: Mesh, tmp_path: Path
) -> None:
    config = json.loads((ROOT / "config" / "demo" / "strategies.json").read_text())
    config.update(ops_address=mesh.ops_address, engine_address=mesh.engine_address, metrics_port=free_port())
    tokens = {"momentum": MOMENTUM_TOKEN, "meanrev": MEANREV_TOKEN}
    for entry in config["strategies"]:
        entry["token"] = tokens[entry["name"]]
    path = tmp_path / "strategies.json"
    path.write_text(json.dumps(config))
    log = tmp_path / "strategies.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "strategies", "--config", str(path), "--duration", "30",
            "--stats-file", str(tmp_path / "stats.json"), "--span-file", str(tmp_path / "spans.jsonl"),
            cwd=ROOT, stdout=out, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    port = config["metrics_port"]
    try:
        await wait_until(lambda: bool(scrape(port)), within=20)
        first = scrape(port)
        key = ("strategy_decisions_total", (("model", "meanrev_v1"), ("status", "DUPLICATE"), ("strategy", "meanrev")))
        assert first[key] == 0  # every model's statuses exist from the start
        assert ("strategy_signals_sent_total", (("model", "momentum_v2"), ("strategy", "momentum"))) in first

        def filled() -> bool:
            return scrape(port).get(("strategy_signal_to_fill_seconds_count", (("strategy", "momentum"),)), 0) > 0

        await wait_until(filled, within=25)
        seen = scrape(port)
        sent = sum(v for (name, _), v in seen.items() if name == "strategy_signals_sent_total")
        accepted = sum(
            v
            for (name, labels), v in seen.items()
            if name == "strategy_decisions_total" and ("status", "ACCEPTED") in labels
        )
        fills = sum(v for (name, _), v in seen.items() if name == "strategy_fills_total")
        assert sent >= accepted > 0 and fills > 0
    finally:
        proc.terminate()
        await proc.wait()
    assert proc.returncode == 0, log.read_text()[-2000:]
