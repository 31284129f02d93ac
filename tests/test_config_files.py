"""Config files: what a bad value in each does (refused at load, naming the file and the field)."""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import pytest

from nautilus_mesh.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "config" / "demo"


@pytest.mark.parametrize(
    ("file", "key", "loader"),
    [
        ("ops.json", "stats_bar_seconds", "ops_server.config:load_ops_config"),
        ("ops.json", "allocation_interval_seconds", "ops_server.config:load_ops_config"),
        ("engine.json", "tick_interval_ms", "engine_server.config:load_engine_config"),
    ],
)
def test_a_config_number_given_as_infinity_or_nan_is_refused_naming_the_file_and_field(
    tmp_path: Path, file: str, key: str, loader: str
) -> None:
    """JSON readers take Infinity and NaN (and 1e999 as infinity); a "> 0" interval of infinity started ops with a
    loop that never ran, or stopped it with a traceback naming neither."""
    module, name = loader.split(":")
    load = getattr(importlib.import_module(module), name)
    demo = json.loads((DEMO / file).read_text())
    for value in ("Infinity", "NaN", "1e999"):
        text = json.dumps({**demo, key: 0.5}).replace('"' + key + '": 0.5', f'"{key}": {value}')
        path = tmp_path / file
        path.write_text(text)
        for relative in ("registry_path", "capital_policy_path", "risk_limits_path"):
            if relative in demo:
                shutil.copy(DEMO / Path(demo[relative]).name, tmp_path)
        with pytest.raises(ConfigError) as refused:
            load(path)
        assert file in str(refused.value) and key in str(refused.value), value


def test_ops_config_without_risk_limits_is_refused_at_load_naming_the_file_and_field(tmp_path: Path) -> None:
    from ops_server.config import load_ops_config

    demo = json.loads((DEMO / "ops.json").read_text())
    del demo["risk_limits_path"]
    path = tmp_path / "ops.json"
    path.write_text(json.dumps(demo))
    with pytest.raises(ConfigError) as refused:
        load_ops_config(path)
    assert "ops.json" in str(refused.value) and "risk_limits_path" in str(refused.value)


def test_a_paper_venues_partial_market_maker_block_takes_the_rest_from_the_followed_venue(tmp_path: Path) -> None:
    """configuration.md: market maker settings not given are the followed venue's (a block with one field set gave
    the built-in defaults for every other: a 4 bps spread against live's 2)."""
    from engine_server.config import load_engine_config
    from engine_server.venues import build_venues

    demo = json.loads((DEMO / "engine.json").read_text())
    venues = [dict(v, market_maker={"levels": 3}) if v["name"] == "paper" else v for v in demo["venues"]]
    path = tmp_path / "engine.json"
    path.write_text(json.dumps({**demo, "venues": venues}))
    built = build_venues(load_engine_config(path).venues)
    live = built["sim"].config.market_maker  # type: ignore[attr-defined]
    paper = built["paper"].config.market_maker  # type: ignore[attr-defined]
    assert paper.levels == 3
    assert (paper.spread_bps, paper.level_step_bps, paper.level_notional) == (
        live.spread_bps,
        live.level_step_bps,
        live.level_notional,
    )
