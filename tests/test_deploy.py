"""docker compose cannot run here (no Docker engine), so the compose file and the configs it mounts are
checked by parsing them: every service's config loads, Prometheus scrapes the ports the services expose,
and every metric a Grafana panel queries is one the services export."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from engine_server.config import load_engine_config
from engine_server.metrics import EngineMetrics
from ops_server.config import load_ops_config
from ops_server.metrics import OpsMetrics
from strategies.config import load_strategies

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def config_arg(service: dict[str, Any]) -> Path:
    command = service["command"]
    return ROOT / command[command.index("--config") + 1]


def test_compose_when_parsed_runs_engine_ops_strategies_and_the_observability_stack() -> None:
    services = compose()["services"]
    assert {"engine", "ops", "strategies", "prometheus", "otel-collector", "jaeger", "grafana"} <= set(services)
    assert services["engine"]["command"][:3] == ["python", "-m", "engine_server"]
    assert services["ops"]["command"][:3] == ["python", "-m", "ops_server"]
    assert services["strategies"]["command"][:3] == ["python", "-m", "strategies"]
    assert services["ops"]["depends_on"]["engine"]["condition"] == "service_healthy"
    for name in ("engine", "ops", "strategies"):
        env = services[name]["environment"]
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4317"
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{source} is mounted but missing"


def test_compose_configs_when_loaded_are_valid_and_wired_to_each_other() -> None:
    services = compose()["services"]
    engine = load_engine_config(config_arg(services["engine"]))
    ops = load_ops_config(config_arg(services["ops"]))
    strategies = load_strategies(config_arg(services["strategies"]))
    assert engine.host == ops.host == "0.0.0.0"
    assert ops.engine_address == f"engine:{engine.port}"
    assert ops.engine_token == engine.ops_token
    assert strategies.ops_address == f"ops:{ops.port}"
    assert f"{ops.port}:{ops.port}" in services["ops"]["ports"]
    assert f"{engine.port}:{engine.port}" in services["engine"]["ports"]
    assert ops.registry_path.exists() and ops.capital_policy_path.exists()


def test_prometheus_when_parsed_scrapes_the_metrics_ports_the_services_serve() -> None:
    services = compose()["services"]
    engine = load_engine_config(config_arg(services["engine"]))
    ops = load_ops_config(config_arg(services["ops"]))
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in prometheus["scrape_configs"]}
    assert targets == {"ops": [f"ops:{ops.metrics_port}"], "engine": [f"engine:{engine.metrics_port}"]}
    assert engine.metrics_host == ops.metrics_host == "0.0.0.0"


def exported_sample_names() -> set[str]:
    names: set[str] = set()
    for registry in (OpsMetrics().registry, EngineMetrics().registry):
        for family in registry.collect():
            names.add(family.name)
            names.update(f"{family.name}{suffix}" for suffix in ("_total", "_bucket", "_count", "_sum"))
    return names


def test_grafana_dashboard_when_parsed_queries_only_exported_metrics() -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/nautilus-mesh.json").read_text())
    exported = exported_sample_names()
    queried: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            tokens = set(re.findall(r"\b[a-z][a-z0-9_]*\b", target["expr"]))
            queried |= {t for t in tokens if "_" in t and t != "histogram_quantile"}
    assert queried, "the dashboard queries nothing"
    assert queried <= exported, f"panels query metrics nobody exports: {sorted(queried - exported)}"
    assert {"signal_latency_seconds_bucket", "allocated_capital_usd", "canary_weight"} <= queried
    provisioning = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/datasources.yaml").read_text())
    assert {d["uid"] for d in provisioning["datasources"]} == {"prometheus", "jaeger"}
