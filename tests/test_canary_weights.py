"""Canary schedule validation and the weights the schedule produces."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from nautilus_mesh.errors import ConfigError, ValidationError
from ops_server.canary import CanaryConfig, CanaryController, CanaryState
from ops_server.model_registry import ModelRegistry, check_weights

T0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)


def test_schedule_when_missing_100_is_refused_with_schedule_in_message() -> None:
    with pytest.raises(ConfigError) as info:
        CanaryConfig.from_dict({"schedule": [5, 10, 50]})

    assert "[5, 10, 50]" in info.value.message
    assert "end at 100" in info.value.message
    assert info.value.code == "CANARY_SCHEDULE_INVALID"


@pytest.mark.parametrize("schedule", [[5, 25, 10, 100], [5, 10, 10, 100], [50, 25, 100]])
def test_schedule_when_not_strictly_increasing_is_refused(schedule: list[int]) -> None:
    with pytest.raises(ConfigError, match="strictly increasing") as info:
        CanaryConfig.from_dict({"schedule": schedule})

    assert str(schedule).replace("'", "") in info.value.message


@pytest.mark.parametrize("schedule", [[0, 50, 100], [-5, 100], [5, 100, 150], [5, float("nan"), 100]])
def test_schedule_when_step_outside_0_100_is_refused(schedule: list[float]) -> None:
    with pytest.raises(ConfigError, match=r"in \(0, 100\]"):
        CanaryConfig.from_dict({"schedule": schedule})


@pytest.mark.parametrize("schedule", [[], "5,10,100", [5, True, 100]])
def test_schedule_when_empty_or_not_a_list_of_numbers_is_refused(schedule: object) -> None:
    with pytest.raises(ConfigError):
        CanaryConfig.from_dict({"schedule": schedule})


def test_schedule_when_not_given_defaults_to_5_10_25_50_100() -> None:
    config = CanaryConfig.from_dict({})

    assert config.schedule == (5.0, 10.0, 25.0, 50.0, 100.0)


def test_schedule_when_single_step_of_100_is_accepted() -> None:
    assert CanaryConfig.from_dict({"schedule": [100]}).schedule == (100.0,)


def test_config_when_unknown_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="canary config: schedual: Extra inputs are not permitted"):
        CanaryConfig.from_dict({"schedual": [5, 100]})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("min_observations", 2),
        ("min_observations", 30.0),
        ("min_dwell_seconds", -1),
        ("tolerance", True),
        ("z_crit", 0),
        ("max_failed_checks", 0),
        ("max_inconclusive", 0),
        ("psr_threshold", 1.0),
        ("psr_confidence", 0.0),
        ("require_confirmation", "yes"),
        ("max_drawdown_ratio", 1.5),
        ("max_daily_loss", 0),
        ("max_risk_breaches", -1),
        ("max_error_rate", 2.0),
    ],
)
def test_config_when_field_invalid_raises_config_error_naming_it(key: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        CanaryConfig.from_dict({key: value})

    assert key in info.value.message


def test_config_when_round_tripped_through_to_dict_is_equal() -> None:
    config = CanaryConfig.from_dict({"schedule": [1, 20, 100], "require_confirmation": True, "max_daily_loss": 250})

    assert CanaryConfig.from_dict(config.to_dict()) == config


def test_weights_when_promoted_through_custom_schedule_follow_each_step() -> None:
    config = CanaryConfig.from_dict({"schedule": [1, 20, 100]})
    ctl = CanaryController("trend", "momentum_v2", "momentum_v1", config, T0)
    seen = [ctl.weights()]

    for _ in range(3):
        ctl.promote(T0, "walk the schedule")
        seen.append(ctl.weights())

    assert [w["momentum_v2"] for w in seen] == [0.0, 0.01, 0.2, 1.0]
    assert [w["momentum_v1"] for w in seen] == pytest.approx([1.0, 0.99, 0.8, 0.0])
    assert ctl.state is CanaryState.PROMOTED


# -- routing weights (model registry) -------------------------------------------------------------------


def _registry(v1: float = 0.7, v2: float = 0.3) -> ModelRegistry:
    """Strategy ``momentum``: stable model ``v1`` and model ``v2`` on BTC-USD, with these routing weights."""
    models = {"v1": {"instruments": ["BTC-USD"], "weight": v1}, "v2": {"instruments": ["BTC-USD"], "weight": v2}}
    return ModelRegistry.from_dict({"strategies": {"momentum": {"stable_model": "v1", "models": models}}})


def test_routing_weights_when_not_summing_to_one_are_refused_with_the_offending_weights() -> None:
    with pytest.raises(ValidationError) as caught:
        check_weights("momentum", {"v1": 0.7, "v2": 0.2})
    assert caught.value.code == "INVALID_WEIGHTS"
    assert "v1=0.7" in caught.value.message and "v2=0.2" in caught.value.message and "sum 0.9" in caught.value.message
    assert caught.value.details["sum"] == "0.9"


def test_routing_weights_when_within_tolerance_are_accepted() -> None:
    check_weights("momentum", {"v1": 0.7004, "v2": 0.2999})
    with pytest.raises(ValidationError):
        check_weights("momentum", {"v1": 0.7011, "v2": 0.3})


def test_routing_weights_when_negative_or_above_one_are_refused() -> None:
    with pytest.raises(ValidationError):
        check_weights("momentum", {"v1": 1.2, "v2": -0.2})


def test_registry_set_weights_when_refused_keeps_previous_weights() -> None:
    registry = _registry()
    with pytest.raises(ValidationError):
        registry.set_weights("momentum", {"v1": 0.5, "v2": 0.6})
    assert registry.route("v1").weight == 0.7 and registry.route("v2").weight == 0.3
    registry.set_weights("momentum", {"v1": 0.25, "v2": 0.75})
    assert registry.route("v1").weight == 0.25 and registry.route("v2").weight == 0.75


def test_registry_file_when_weights_do_not_sum_to_one_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        _registry(0.5, 0.4)
    assert "sum to 1" in caught.value.message


def test_registry_set_weights_when_persisted_replaces_the_file_atomically(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    path.write_text(json.dumps(_registry().data.model_dump(mode="json")))
    registry = ModelRegistry.load(path)
    registry.set_weights("momentum", {"v1": 0.1, "v2": 0.9})
    assert ModelRegistry.load(path).route("v2").weight == 0.9
    assert [p.name for p in tmp_path.iterdir()] == ["registry.json"]  # no temp file left behind


def test_registry_when_a_model_id_names_a_paper_book_is_refused() -> None:
    models = {
        "v1": {"instruments": ["BTC-USD"], "weight": 0.5},
        "v1@paper": {"instruments": ["BTC-USD"], "weight": 0.5},
    }
    with pytest.raises(ConfigError, match="'v1@paper' ends with '@paper', which names paper books"):
        ModelRegistry.from_dict({"strategies": {"momentum": {"stable_model": "v1", "models": models}}})
