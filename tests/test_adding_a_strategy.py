"""docs/adding-a-strategy.md run as written: the model file, the kind's registration, the strategies.json entry
through the real loader, signals planned by the real runtime, and the page's own tests."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import types
from pathlib import Path

import pytest

from nautilus_mesh.errors import ConfigError
from strategies.config import MODEL_KINDS, ModelKind, build_models, load_strategies
from strategies.planner import SignalPlanner
from tests.conftest import ROOT

PAGE = ROOT / "docs" / "adding-a-strategy.md"
_BLOCK = re.compile(r"^```(\w+) ([\w./]+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks() -> dict[str, str]:
    """The page's named code blocks: ```<language> <path>."""
    return {name: body for _, name, body in _BLOCK.findall(PAGE.read_text())}


@pytest.fixture
def breakout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """The page's model file as the module ``strategies.breakout``, its kind registered as ``breakout``."""
    path = tmp_path / "breakout.py"
    path.write_text(blocks()["strategies/breakout.py"])
    spec = importlib.util.spec_from_file_location("strategies.breakout", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "strategies.breakout", module)
    spec.loader.exec_module(module)
    monkeypatch.setitem(MODEL_KINDS, "breakout", ModelKind(module.BreakoutConfig, module.BreakoutModel))
    return module


def test_page_when_read_has_the_blocks_it_names() -> None:
    assert {"strategies/breakout.py", "strategies.json", "tests/test_breakout.py"} <= blocks().keys()


def test_page_tests_when_run_against_the_page_model_pass(breakout: types.ModuleType) -> None:
    namespace: dict[str, object] = {}
    exec(compile(blocks()["tests/test_breakout.py"], "tests/test_breakout.py", "exec"), namespace)  # noqa: S102  the page's own code
    tests = [f for name, f in namespace.items() if name.startswith("test_") and callable(f)]
    assert len(tests) == 4
    for test in tests:
        test()


def test_strategies_entry_when_loaded_and_fed_rising_prices_plans_long_signals(
    breakout: types.ModuleType, tmp_path: Path
) -> None:
    demo = json.loads((ROOT / "config" / "demo" / "strategies.json").read_text())
    demo["strategies"].append(json.loads(blocks()["strategies.json"]))
    path = tmp_path / "strategies.json"
    path.write_text(json.dumps(demo))
    entry = next(s for s in load_strategies(path).strategies if s.name == "breakout")
    built = build_models(entry)
    assert [type(b.model) for b in built] == [breakout.BreakoutModel]
    assert built[0].model.config == breakout.BreakoutConfig(window=30, strength=0.8)
    planner = SignalPlanner([(b.model_id, b.model, b.instruments) for b in built], 0.05, "doc")
    signals = []
    for i in range(40):
        signals += planner.plan([("BTC-USD", 100.0 + i, i + 1)], i + 1)
    assert signals and all(s.model_id == "breakout_v1" and s.instrument == "BTC-USD" for s in signals)
    assert all(0 < s.target <= 0.8 for s in signals)  # at the top of a rising range, scaled by strength and share


def test_strategies_entry_when_parameter_is_wrong_type_is_refused(breakout: types.ModuleType, tmp_path: Path) -> None:
    entry = json.loads(blocks()["strategies.json"])
    entry["models"][0]["params"]["window"] = True
    demo = json.loads((ROOT / "config" / "demo" / "strategies.json").read_text())
    demo["strategies"].append(entry)
    path = tmp_path / "strategies.json"
    path.write_text(json.dumps(demo))
    with pytest.raises(ConfigError, match="window"):
        build_models(next(s for s in load_strategies(path).strategies if s.name == "breakout"))
