"""scripts/gen_docs.py: the generated pages follow the code, and the generator refuses what it cannot document."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pydantic
import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))

from docgen import api, configuration, metrics  # the generator's package lives in scripts/


class _Documented(pydantic.BaseModel):
    interval_seconds: float = pydantic.Field(2.0, gt=0)
    """How often it runs, seconds."""
    name: str
    """What it is called."""


class _Undocumented(pydantic.BaseModel):
    port: int = 1


@dataclass(frozen=True)
class _Params:
    """Parameters.

    Args:
        window: Quotes in the window.
    """

    window: int = 5


def test_model_fields_when_documented_reads_type_default_constraint_unit_and_docstring() -> None:
    fields, nested = configuration.model_fields(_Documented)
    assert [(f.name, f.type, f.default, f.constraints, f.unit, f.doc) for f in fields] == [
        ("interval_seconds", "number", "`2.0`", "> 0", "s", "How often it runs, seconds."),
        ("name", "string", "required", "", "-", "What it is called."),
    ]
    assert nested == []


def test_model_fields_when_dataclass_documents_args_reads_them() -> None:
    (field,), _ = configuration.model_fields(_Params)
    assert (field.name, field.default, field.doc) == ("window", "`5`", "Quotes in the window.")


def test_render_when_a_config_field_has_no_docstring_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(configuration, "FILES", (configuration.ConfigFile("x.json", _Undocumented, "A file."),))
    with pytest.raises(SystemExit, match=r"fields without a docstring: .*_Undocumented\.port"):
        configuration.render(ROOT)


def test_render_when_source_reads_an_undocumented_environment_variable_refuses(tmp_path: Path) -> None:
    package = tmp_path / "clients"
    package.mkdir()
    (package / "x.py").write_text('import os\nos.environ.get("NAUTILUS_NEW_KNOB")\n')
    assert "NAUTILUS_NEW_KNOB" in configuration.env_vars_in_source(tmp_path)
    with pytest.raises(SystemExit, match="NAUTILUS_NEW_KNOB"):
        configuration.render(tmp_path)


def test_env_vars_when_source_scanned_are_all_documented() -> None:
    documented = {v.name for v in configuration.ENV_VARS}
    assert configuration.env_vars_in_source(ROOT) <= documented


def test_api_render_when_an_rpc_has_no_example_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    examples = dict(api.EXAMPLES)
    del examples["nautilus.ops.v1.OpsService.GetAllocations"]
    monkeypatch.setattr(api, "EXAMPLES", examples)
    with pytest.raises(SystemExit, match=r"no example for nautilus\.ops\.v1\.OpsService\.GetAllocations"):
        api.render(api.build_descriptor_set(ROOT, Path(sys.executable).parent / "buf"))


def test_metrics_render_when_read_lists_every_registered_metric_and_hop() -> None:
    page = metrics.render(ROOT)
    for name in ("signals_routed_total", "orders_submitted_total", "allocated_capital_usd", "signal_latency_seconds"):
        assert f"| `{name}` |" in page
    assert all(f"| `{hop}` |" in page for hop in metrics.HOPS)


def test_check_when_a_generated_page_is_edited_fails_and_names_it(tmp_path: Path) -> None:
    # A copy of the repository's docs with one page edited by hand: --check must refuse it.
    docs = tmp_path / "docs"
    docs.mkdir()
    for page in ("api.md", "configuration.md", "metrics.md"):
        (docs / page).write_text((ROOT / "docs" / page).read_text())
    (docs / "metrics.md").write_text((docs / "metrics.md").read_text().replace("fills_total", "fill_count"))
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_docs.py"), "--check", "--docs", str(docs)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "metrics.md" in result.stderr and "make docs" in result.stderr
