"""docker compose cannot run here (no Docker engine), so the compose file and the configs it mounts are
checked by parsing them: every service's config loads, Prometheus scrapes the ports the services expose,
and every metric a Grafana panel queries is one the services export."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine_server.config import load_engine_config
from engine_server.metrics import EngineMetrics
from nautilus_mesh.log_format import JsonFormatter
from nautilus_mesh.rpc_spans import RpcMetrics
from nautilus_mesh.telemetry import Tracing, count_dropped_spans
from ops_server.config import OpsConfig, load_ops_config
from ops_server.metrics import OpsMetrics
from ops_server.sharding import ShardMap, check_deployment, is_postgres
from strategies.config import load_strategies

ROOT = Path(__file__).resolve().parent.parent
OPS_SERVICES = ("ops", "ops-1")
"""The compose file's ops workers, by index."""


def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def config_arg(service: dict[str, Any]) -> Path:
    command = service["command"]
    return ROOT / command[command.index("--config") + 1]


def test_compose_when_parsed_runs_engine_ops_strategies_and_the_observability_stack() -> None:
    services = compose()["services"]
    assert {"engine", "ops", "ops-1", "strategies", "prometheus", "otel-collector", "jaeger", "grafana"} <= set(
        services
    )
    assert services["engine"]["command"][:3] == ["python", "-m", "engine_server"]
    assert services["ops"]["command"][:3] == ["python", "-m", "ops_server"]
    assert services["ops-1"]["command"] == services["ops"]["command"]
    assert services["strategies"]["command"][:3] == ["python", "-m", "strategies"]
    assert services["ops"]["depends_on"]["engine"]["condition"] == "service_healthy"
    for name in ("engine", "ops", "ops-1", "strategies"):
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


def ops_worker_config(service: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> OpsConfig:
    """The config an ops service of the compose file runs with (its OPS_* environment applied)."""
    for name in ("OPS_WORKERS", "OPS_WORKER_INDEX", "OPS_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in service["environment"].items():
        if name.startswith("OPS_"):
            monkeypatch.setenv(name, str(value))
    return load_ops_config(config_arg(service))


def test_prometheus_when_parsed_scrapes_every_ops_worker_with_its_worker_label(monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose()["services"]
    engine = load_engine_config(config_arg(services["engine"]))
    workers = [ops_worker_config(services[name], monkeypatch) for name in OPS_SERVICES]
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job["static_configs"] for job in prometheus["scrape_configs"]}
    assert set(jobs) == {"ops", "engine"}
    assert [(c["targets"], c.get("labels")) for c in jobs["ops"]] == [
        ([f"{name}:{config.metrics_port}"], {"worker": str(config.worker_index)})
        for name, config in zip(OPS_SERVICES, workers, strict=True)
    ]
    assert [c["targets"] for c in jobs["engine"]] == [[f"engine:{engine.metrics_port}"]]
    assert engine.metrics_host == "0.0.0.0" and all(w.metrics_host == "0.0.0.0" for w in workers)


def exported_sample_names() -> set[str]:
    names: set[str] = set()
    for registry in (OpsMetrics().registry, EngineMetrics().registry):
        RpcMetrics.of(registry)  # added by the gRPC server
        count_dropped_spans(Tracing("t", enabled=False), registry)
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
            expr = re.sub(r"\bby\s*\([^)]*\)", "", target["expr"])  # grouping labels are not metric names
            tokens = set(re.findall(r"\b[a-z][a-z0-9_]*\b", expr))
            queried |= {t for t in tokens if "_" in t and t != "histogram_quantile"}
    assert queried, "the dashboard queries nothing"
    assert queried <= exported, f"panels query metrics nobody exports: {sorted(queried - exported)}"
    assert {"signal_latency_seconds_bucket", "allocated_capital_usd", "canary_weight"} <= queried
    provisioning = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/datasources.yaml").read_text())
    assert {d["uid"] for d in provisioning["datasources"]} == {"prometheus", "jaeger", "loki"}


def test_grafana_dashboard_when_parsed_links_exemplars_to_jaeger_and_breaks_down_stages() -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/nautilus-mesh.json").read_text())
    panels = {p["title"]: p for p in dashboard["panels"]}
    for title in ("Signal latency in ops (p50 / p99)", "Signal to fill (p50 / p99)"):
        assert all(t.get("exemplar") is True for t in panels[title]["targets"]), title
    stages = next(p for t, p in panels.items() if t.startswith("Stage breakdown"))
    assert stages["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal"
    assert any("ops_stage_latency_seconds_sum" in t["expr"] for t in stages["targets"])
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    provisioning = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/datasources.yaml").read_text())
    prometheus = next(d for d in provisioning["datasources"] if d["uid"] == "prometheus")
    assert prometheus["jsonData"]["exemplarTraceIdDestinations"] == [{"name": "trace_id", "datasourceUid": "jaeger"}]


def test_prometheus_rules_when_parsed_query_only_exported_metrics_and_compose_loads_them() -> None:
    rules = yaml.safe_load((ROOT / "deploy/prometheus/rules/nautilus.yml").read_text())
    exported = exported_sample_names()
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    queried: set[str] = set()
    alerts = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            alerts.add(rule.get("alert", ""))
            expr = re.sub(r"\{[^}]*\}", "", rule["expr"])  # label matchers are not metric names
            tokens = set(re.findall(r"\b[a-z][a-z0-9_:]*\b", expr))
            queried |= {t for t in tokens if "_" in t and t not in ("histogram_quantile",)}
    assert queried - recorded <= exported, (
        f"rules query metrics nobody exports: {sorted(queried - recorded - exported)}"
    )
    assert {
        "EngineLinkDown",
        "MarkStale",
        "RejectionRateHigh",
        "SignalToFillP99High",
        "KillSwitchEngaged",
        "CanaryRolledBack",
        "FillsDropped",
        "SpanExportFailing",
    } <= alerts
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    assert prometheus["rule_files"] == ["rules/*.yml"]
    volumes = compose()["services"]["prometheus"]["volumes"]
    assert "./deploy/prometheus/rules:/etc/prometheus/rules:ro" in volumes


def test_compose_when_parsed_checks_grpc_health_restarts_and_stores_in_postgresql() -> None:
    services = compose()["services"]
    for name, port in (("engine", 50052), ("ops", 50051)):
        test = services[name]["healthcheck"]["test"]
        assert test == ["CMD", "python", "-m", "nautilus_mesh.healthcheck", f"127.0.0.1:{port}"]
    for name in ("engine", "ops", "ops-1", "strategies", "postgres", "otel-collector", "prometheus"):
        assert services[name]["restart"] == "unless-stopped", name
    for name in OPS_SERVICES:
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    ops = load_ops_config(config_arg(services["ops"]))
    pg = services["postgres"]["environment"]
    assert (
        ops.database_url
        == f"postgresql://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@postgres:5432/{pg['POSTGRES_DB']}"
    )
    for name in ("engine", "ops", "ops-1", "strategies"):
        ratio = float(services[name]["environment"]["OTEL_TRACES_SAMPLER_ARG"])
        assert 0 < ratio < 1, f"{name} samples {ratio:.0%} of traces"


def test_dockerfile_when_read_is_multi_stage_non_root_and_ignores_local_state() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", dockerfile, re.MULTILINE)) == 2
    assert "COPY --from=build /opt/venv /opt/venv" in dockerfile
    assert re.search(r"^USER nautilus$", dockerfile, re.MULTILINE)
    assert "chown -R nautilus:nautilus var" in dockerfile
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", "var", ".git"} <= ignored
    assert "README.md" not in ignored  # the package's readme is part of the build
    assert "psycopg[binary]" in (ROOT / "pyproject.toml").read_text()


def test_collector_when_parsed_limits_memory_first_and_serves_health() -> None:
    collector = yaml.safe_load((ROOT / "deploy/otel/collector.yaml").read_text())
    assert collector["processors"]["memory_limiter"]["limit_mib"] > 0
    assert collector["service"]["pipelines"]["traces"]["processors"][0] == "memory_limiter"
    assert "health_check" in collector["service"]["extensions"]
    assert collector["extensions"]["health_check"]["endpoint"].endswith(":13133")


def test_compose_when_parsed_ships_json_logs_to_loki_and_links_traces_and_logs_both_ways(tmp_path: Path) -> None:
    services = compose()["services"]
    for name in ("engine", "ops", "ops-1", "strategies"):
        assert services[name]["environment"]["LOG_FORMAT"] == "json", name
    assert {"loki", "promtail"} <= set(services) and "loki" in services["grafana"]["depends_on"]
    promtail = yaml.safe_load((ROOT / "deploy/promtail/promtail.yaml").read_text())
    assert promtail["clients"][0]["url"] == "http://loki:3100/loki/api/v1/push"
    (job,) = promtail["scrape_configs"]
    keep = next(r for r in job["relabel_configs"] if r.get("action") == "keep")
    assert re.fullmatch(keep["regex"], "ops") and re.fullmatch(keep["regex"], "engine")
    assert re.fullmatch(keep["regex"], "strategies") and not re.fullmatch(keep["regex"], "postgres")
    assert re.fullmatch(keep["regex"], "ops-1")

    # A real JSON log line of ours, written inside a span: Grafana's derived field finds its trace id in it, and the
    # trace's "logs" query (its line filter, after Grafana's $$ escape) matches it.
    tracing = Tracing("deploy-test", tmp_path / "spans.jsonl")
    record = logging.LogRecord("ops_server", logging.WARNING, __file__, 1, "signal %r rejected", ("s-1",), None)
    with tracing.tracer.start_as_current_span("ops.signal receive") as span:
        line = JsonFormatter().format(record)
        trace_id = f"{span.get_span_context().trace_id:032x}"
    tracing.shutdown()
    sources = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/datasources.yaml").read_text())
    by_uid = {d["uid"]: d for d in sources["datasources"]}
    (derived,) = by_uid["loki"]["jsonData"]["derivedFields"]
    assert derived["datasourceUid"] == "jaeger"
    match = re.search(derived["matcherRegex"], line)
    assert match is not None and match.group(1) == trace_id
    to_logs = by_uid["jaeger"]["jsonData"]["tracesToLogsV2"]
    assert to_logs["datasourceUid"] == "loki"
    query = to_logs["query"].replace("$$", "$").replace("${__trace.traceId}", trace_id)
    needle = re.search(r'\|= "([^"]+)"', query)
    assert needle is not None and needle.group(1) in line


def test_compose_when_parsed_runs_two_ops_workers_sharing_postgresql_each_on_its_ports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = compose()["services"]
    workers = [ops_worker_config(services[name], monkeypatch) for name in OPS_SERVICES]
    for index, (name, config) in enumerate(zip(OPS_SERVICES, workers, strict=True)):
        service = services[name]
        assert service["environment"]["OPS_WORKER_INDEX"] == str(index)
        assert (config.ops_workers, config.worker_index) == (2, index)
        assert (config.port, config.metrics_port) == (50051 + 100 * index, 8002 + 100 * index)
        assert service["ports"] == [f"{config.port}:{config.port}", f"{config.metrics_port}:{config.metrics_port}"]
        assert service["healthcheck"]["test"][-1] == f"127.0.0.1:{config.port}"
        assert config.worker_addresses[index] == f"{name}:{config.port}"  # where a WRONG_SHARD refusal sends
        assert service["depends_on"]["engine"]["condition"] == "service_healthy"
        assert services["strategies"]["depends_on"][name]["condition"] == "service_healthy"
        check_deployment(config)  # PostgreSQL, index and addresses in range
    assert workers[0].database_url == workers[1].database_url and is_postgres(workers[0].database_url)
    assert workers[0].state_dir != workers[1].state_dir
    assert len({v for name in OPS_SERVICES for v in services[name]["volumes"]}) == 2  # a state volume each
    shards = ShardMap.from_config(workers[0], ["momentum", "meanrev"])
    assert {s: shards.address(shards.owner(s)) for s in ("momentum", "meanrev")} == {
        "momentum": "ops:50051",
        "meanrev": "ops-1:50151",  # both workers trade in the demo stack
    }
    assert load_strategies(config_arg(services["strategies"])).ops_address == "ops:50051"  # follows WRONG_SHARD


def test_compose_ops_worker_when_the_store_is_sqlite_refuses_to_start_and_says_why(tmp_path: Path) -> None:
    """What `ops-1` does if the compose file's database_url were SQLite: it stops at once with a clear message."""
    service = compose()["services"]["ops-1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPS_")}
    env |= {k: str(v) for k, v in service["environment"].items() if k.startswith("OPS_")}
    env |= {"OPS_DATABASE_URL": f"sqlite:///{tmp_path / 'state.db'}", "OTEL_EXPORTER_OTLP_ENDPOINT": ""}
    result = subprocess.run(
        [sys.executable, "-m", "ops_server", "--config", str(config_arg(service))],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "error: ops_workers=2 needs a PostgreSQL database_url" in result.stderr
    assert "SQLite serves a single worker only" in result.stderr


def ops_only_metrics() -> set[str]:
    """Sample names only ops exports (the engine has none of them)."""
    ops, engine = (
        {f.name for f in registry.collect()} for registry in (OpsMetrics().registry, EngineMetrics().registry)
    )
    return {f"{n}{suffix}" for n in ops - engine for suffix in ("", "_total", "_bucket", "_count", "_sum")}


def test_grafana_dashboard_when_parsed_selects_ops_workers_and_splits_decisions_and_latency_by_worker() -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/nautilus-mesh.json").read_text())
    (variable,) = dashboard["templating"]["list"]
    assert variable["name"] == "worker" and variable["includeAll"] and variable["multi"]
    assert variable["query"]["query"] == 'label_values(up{job="ops"}, worker)'
    ops_only = ops_only_metrics()
    selectors = 0
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            # Every selector of an ops-only metric is narrowed to the chosen workers.
            for name, braces in re.findall(r"\b([a-z][a-z0-9_]*)(\{[^}]*\})?", target["expr"]):
                if name in ops_only:
                    selectors += 1
                    assert 'worker=~"$worker"' in braces, (panel["title"], target["expr"])
    assert selectors > 20
    by_worker = {p["title"]: [t["expr"] for t in p["targets"]] for p in dashboard["panels"] if "worker" in p["title"]}
    decisions = by_worker["Decisions per second by ops worker"]
    assert decisions == ['sum by (worker, status) (rate(decisions_total{worker=~"$worker"}[1m]))']
    latency = by_worker["Signal latency in ops by worker (p50 / p99)"]
    assert all("sum by (le, worker)" in expr and "signal_latency_seconds_bucket" in expr for expr in latency)
    panels = {p["title"]: p for p in dashboard["panels"]}  # the mesh-wide panels still sum over the workers
    assert "sum(rate(signals_routed_total{" in panels["Signals routed per second"]["targets"][0]["expr"]


def test_prometheus_rules_when_parsed_split_decisions_and_latency_by_worker() -> None:
    rules = yaml.safe_load((ROOT / "deploy/prometheus/rules/nautilus.yml").read_text())
    recorded = {r["record"]: r["expr"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    assert "sum by (worker, status)" in recorded["worker:decisions:rate1m"]
    for quantile in ("p50", "p99"):
        assert "sum by (le, worker)" in recorded[f"worker:signal_latency_seconds:{quantile}_1m"]
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert alerts["OpsWorkerDown"]["expr"] == 'up{job="ops"} == 0'
    assert "{{ $labels.worker }}" in alerts["OpsWorkerDown"]["annotations"]["summary"]
