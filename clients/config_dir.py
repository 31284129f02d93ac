"""A mesh config directory (``ops.json``, ``engine.json``) as the operator tools read it.

``nautilus-mesh up`` and the CLI's token look-ups read the files with the models the services load them with
(``ops_server.config``, ``engine_server.config``), so a file means the same to the tools as to the services and an
invalid one fails with the same ``ConfigError``, naming the file and the field. This module is the only one of
``clients`` that imports a server package, and only its config module; the SDK (``clients.sdk``) imports none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from engine_server.config import EngineConfig, load_engine_config
from nautilus_mesh.auth import is_plain_token
from ops_server.config import WORKER_PORT_STRIDE, OpsConfig, load_ops_config

__all__ = [
    "WORKER_PORT_STRIDE",
    "MeshEndpoints",
    "demo_admin_token",
    "demo_engine_token",
    "demo_strategy_token",
    "endpoints_from_config",
    "state_dirs_from_config",
]


@dataclass(frozen=True)
class MeshEndpoints:
    """Addresses of the services, read from the config directory ("" for a /metrics server switched off)."""

    ops: str = "127.0.0.1:50051"
    engine: str = "127.0.0.1:50052"
    ops_metrics: str = "127.0.0.1:8002"
    engine_metrics: str = "127.0.0.1:8003"


def ops_config(config_dir: str | os.PathLike[str]) -> OpsConfig | None:
    """``<config_dir>/ops.json``, or None when there is no such file.

    Raises:
        ConfigError: the file is not a valid ops config.
    """
    path = Path(config_dir) / "ops.json"
    return load_ops_config(path) if path.is_file() else None


def engine_config(config_dir: str | os.PathLike[str]) -> EngineConfig | None:
    """``<config_dir>/engine.json``, or None when there is no such file.

    Raises:
        ConfigError: the file is not a valid engine config.
    """
    path = Path(config_dir) / "engine.json"
    return load_engine_config(path) if path.is_file() else None


def endpoints_from_config(config_dir: str | os.PathLike[str]) -> MeshEndpoints:
    """Service and metrics addresses from ``ops.json`` and ``engine.json`` (the defaults for a missing file)."""
    ops, engine, default = ops_config(config_dir), engine_config(config_dir), MeshEndpoints()

    def metrics(config: OpsConfig | EngineConfig) -> str:
        return "" if config.metrics_port is None else f"{config.metrics_host}:{config.metrics_port}"

    return MeshEndpoints(
        ops=default.ops if ops is None else f"{ops.host}:{ops.port}",
        engine=default.engine if engine is None else f"{engine.host}:{engine.port}",
        ops_metrics=default.ops_metrics if ops is None else metrics(ops),
        engine_metrics=default.engine_metrics if engine is None else metrics(engine),
    )


def state_dirs_from_config(config_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """The state directory each service locks (``state_dir`` of ops, the journal's folder of the engine)."""
    ops, engine = ops_config(config_dir), engine_config(config_dir)
    journal = EngineConfig.model_fields["journal_path"].default if engine is None else engine.journal_path
    dirs = {"ops": OpsConfig.model_fields["state_dir"].default if ops is None else ops.state_dir}
    if journal is not None:
        dirs["engine"] = journal.parent
    return dirs


def _usable(token: str) -> str | None:
    return token if is_plain_token(token) else None


def demo_strategy_token(config_dir: str | os.PathLike[str], model: str = "") -> str | None:
    """A usable strategy token of ``ops.json`` (a demo convenience): the one bound to ``model`` when a strategy has
    it, else the first; None without one."""
    ops = ops_config(config_dir)
    accesses = [] if ops is None else list(ops.strategies.values())
    owners = [a.token for a in accesses if model in a.models] if model else []
    tokens = [*owners, *(a.token for a in accesses)]
    return next((token for token in tokens if _usable(token)), None)


def demo_admin_token(config_dir: str | os.PathLike[str]) -> str | None:
    """The admin token of ``ops.json`` (a demo convenience), or None when it has none or only its hash."""
    ops = ops_config(config_dir)
    return None if ops is None else _usable(ops.admin_token)


def demo_engine_token(config_dir: str | os.PathLike[str]) -> str | None:
    """The token ``engine.json`` expects from ops (a demo convenience), or None when it has none or only its hash."""
    engine = engine_config(config_dir)
    return None if engine is None else _usable(engine.ops_token)
