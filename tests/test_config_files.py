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


LOADERS = {"ops.json": "ops_server.config:load_ops_config", "engine.json": "engine_server.config:load_engine_config"}


@pytest.mark.parametrize(
    "where", ["ops.json:stats_bar_seconds", "ops.json:allocation_interval_seconds", "engine.json:tick_interval_ms"]
)
def test_a_config_number_given_as_infinity_or_nan_is_refused_naming_the_file_and_field(
    tmp_path: Path, where: str
) -> None:
    """JSON readers take Infinity and NaN (and 1e999 as infinity); a "> 0" interval of infinity started ops with a
    loop that never ran, or stopped it with a traceback naming neither."""
    file, key = where.split(":")
    module, name = LOADERS[file].split(":")
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


def _engine_with(tmp_path: Path, **changes: object) -> Path:
    demo = json.loads((DEMO / "engine.json").read_text())
    tmp_path.mkdir()
    path = tmp_path / "engine.json"
    path.write_text(json.dumps({**demo, **changes}))
    return path


def test_config_errors_found_after_the_fields_parse_still_name_the_file(tmp_path: Path) -> None:
    """An unknown venue under rails, a paper venue following no venue before it, a price too large to check against
    its tick, a strategy parameter out of range and a bad canary schedule: each names its file (they named nothing,
    or crashed with decimal.InvalidOperation)."""
    from engine_server.config import load_engine_config
    from ops_server.model_registry import ModelRegistry
    from strategies.config import load_strategies

    demo = json.loads((DEMO / "engine.json").read_text())
    sim = demo["venues"][0]
    huge = dict(sim, instruments=[dict(sim["instruments"][0], initial_price="1e300")])
    cases = [
        (load_engine_config, _engine_with(tmp_path / "a", rails={**demo.get("rails", {}), "simm": {}}), "simm"),
        (load_engine_config, _engine_with(tmp_path / "b", venues=[dict(demo["venues"][1], follows="nope")]), "nope"),
        (load_engine_config, _engine_with(tmp_path / "c", venues=[huge, demo["venues"][1]]), "initial_price"),
    ]
    strategies = json.loads((DEMO / "strategies.json").read_text())
    strategies["strategies"][0]["models"][0]["params"]["fast"] = 0
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "strategies.json").write_text(json.dumps(strategies))
    cases.append((load_strategies, tmp_path / "d" / "strategies.json", "fast must be >= 1"))
    registry = json.loads((DEMO / "registry.json").read_text())
    registry["strategies"]["momentum"]["canary"]["schedule"] = [5, 200, 100]
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "registry.json").write_text(json.dumps(registry))
    cases.append((ModelRegistry.load, tmp_path / "e" / "registry.json", "schedule"))
    for load, path, problem in cases:
        with pytest.raises(ConfigError) as refused:
            load(path)
        assert str(path) in str(refused.value) and problem in str(refused.value), str(refused.value)


def test_a_risk_or_policy_amount_of_1e18_or_more_is_refused_before_it_can_overflow(tmp_path: Path) -> None:
    """A total capital or a risk limit past exact arithmetic (``1e27`` overflowed the allocations' quantize and left a
    reloaded policy half-applied; ``1e999999999`` made GetRiskLimits fail) is a config error naming the field."""
    from ops_server.allocation.config import CapitalPolicy
    from ops_server.risk.config import RiskLimits

    policy = json.loads((DEMO / "capital_policy.json").read_text())
    limits = json.loads((DEMO / "risk_limits.json").read_text())
    for huge in ("1e18", "1e27", "1e999999999"):
        with pytest.raises(ConfigError, match="total_capital must be below 1e18"):
            CapitalPolicy.from_dict({**policy, "total_capital": huge})
        too_much = {**limits, "global": {**limits["global"], "max_gross_exposure": huge}}
        with pytest.raises(ConfigError, match=r"max_gross_exposure.*must be below 1e18"):
            RiskLimits.from_dict(too_much)
    CapitalPolicy.from_dict({**policy, "total_capital": "999999999999999999"})  # the largest amount still taken


def test_a_config_file_nested_thousands_deep_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    from nautilus_mesh.files import load_json_file

    with pytest.raises(ConfigError, match="nested too deeply"):
        load_json_file(path)


@pytest.mark.parametrize(
    ("file", "path", "field"),
    [
        ("registry.json", ["strategies", "momentum", "models", "momentum_v1", "weight"], "weight"),
        ("ops.json", ["max_signals_per_frame"], "max_signals_per_frame"),
        ("ops.json", ["stream_backlog_share"], "stream_backlog_share"),
        ("engine.json", ["report_history"], "report_history"),
        ("strategies.json", ["min_target_change"], "min_target_change"),
    ],
)
def test_a_number_given_as_true_is_refused_naming_the_field(file: str, path: list[str], field: str) -> None:
    """JSON ``true`` for a number was read as 1 (a registry ``"weight": true`` became a full routing weight)."""
    from engine_server.config import EngineConfig
    from nautilus_mesh.config import validate_config
    from ops_server.config import OpsConfig
    from ops_server.model_registry import RegistryFile
    from strategies.config import StrategiesConfig

    models = {"registry.json": RegistryFile, "ops.json": OpsConfig, "engine.json": EngineConfig}
    models["strategies.json"] = StrategiesConfig
    data = json.loads((DEMO / file).read_text())
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = True
    with pytest.raises(ConfigError) as caught:
        validate_config(models[file], data, source=file)
    assert f"{field}: must be a number, got true" in caught.value.message
