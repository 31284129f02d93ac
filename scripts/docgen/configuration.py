"""docs/configuration.md from the config models: every file, section and field, and the environment variables.

Fields come from the models themselves (pydantic ``model_fields`` or ``dataclasses.fields``): type, default and
constraints. Meanings come from the docstring under each field, read from the class's source with ``ast`` (the
docstring convention of DESIGN.md), or from the class docstring's ``Args:``/``Attributes:`` section. A field with
no docstring fails the generation: the design asks for one per field, naming its unit.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import inspect
import re
import textwrap
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import annotated_types
import pydantic
from pydantic_core import PydanticUndefined

from docgen import HEADER
from engine_server.config import EngineConfig
from engine_server.venue_rails import VenueRailsConfig
from engine_server.venues.paper.venue import PaperVenueConfig
from engine_server.venues.sim.config import SimVenueConfig
from ops_server.allocation.config import CapitalPolicy
from ops_server.config import OpsConfig
from ops_server.model_registry import RegistryFile
from ops_server.risk.config import ModelLimits, RiskLimitsFile
from strategies.config import MODEL_KINDS, StrategiesConfig


@dataclass(frozen=True)
class ConfigFile:
    """One config file: its demo path, the model that reads it and the sections reached through untyped values."""

    path: str
    model: type
    summary: str
    extra: tuple[tuple[str, type], ...] = ()


FILES = (
    ConfigFile(
        "config/demo/ops.json",
        OpsConfig,
        "The ops service (`python -m ops_server --config ...`): ports, tokens, file paths, intervals, TLS. "
        "Relative paths of the registry, capital policy and risk limits files are resolved against the file's "
        "folder; `state_dir`, `span_file` and TLS files against the working directory.",
    ),
    ConfigFile(
        "config/demo/engine.json",
        EngineConfig,
        "The engine service (`python -m engine_server --config ...`): ports, ops token, journal, venues, rails.",
        (
            ('`venues[]` with `"adapter": "sim"`', SimVenueConfig),
            ('`venues[]` with `"adapter": "paper"`', PaperVenueConfig),
            ("`rails.<venue>`", VenueRailsConfig),
        ),
    ),
    ConfigFile(
        "config/demo/registry.json",
        RegistryFile,
        "The model registry: strategies, their models, versions, routing weights and modes, and canaries. Ops keeps "
        "its working copy in `<state_dir>/registry.json` (the weights and modes in force, carried across restarts); "
        "`ReloadConfig(CONFIG_TARGET_MODEL_REGISTRY)` re-reads this file (`registry_path`) and takes its weights and "
        "modes for every strategy without a canary.",
    ),
    ConfigFile(
        "config/demo/capital_policy.json",
        CapitalPolicy,
        "The capital allocator's policy. `ReloadConfig(CONFIG_TARGET_CAPITAL_POLICY)` re-reads it.",
    ),
    ConfigFile(
        "config/demo/risk_limits.json",
        RiskLimitsFile,
        "The ops risk rails. `models.<model_id>` overrides any subset of `default_model` (merged entry by entry "
        "for `max_position_qty`). Every amount and quantity is below 1e18. A model id the registry does not have "
        "(`UNKNOWN_MODEL`), or a `max_position_qty` "
        "symbol other than `*` that no model trades (`UNKNOWN_INSTRUMENT`), is refused, at start and on reload: a "
        "misspelled id would leave the model on the default limits. `ReloadConfig(CONFIG_TARGET_RISK_LIMITS)` "
        "(`nautilus-mesh risk reload`) re-reads it; a bad file is refused and the previous limits stay.",
        (("`models.<model_id>` (any subset)", ModelLimits),),
    ),
    ConfigFile(
        "config/demo/strategies.json",
        StrategiesConfig,
        "The strategy processes (`python -m strategies --config ...`, started by `nautilus-mesh up`).",
        tuple((f'`params` of a model with `"kind": "{kind}"`', k.config_cls) for kind, k in MODEL_KINDS.items()),
    ),
)


@dataclass(frozen=True)
class EnvVar:
    name: str
    read_by: str
    meaning: str


# Every environment variable the services and tools read; ``render`` compares this list with the source.
ENV_VARS = (
    EnvVar(
        "NAUTILUS_EVENT_LOOP",
        "engine, ops, strategies",
        "The event loop the process runs on: `uvloop` (default; libuv underneath, about 10-20% less CPU per gRPC "
        "message than the standard loop, see docs/performance.md) or `asyncio` (the standard library's loop). "
        "Any other value: the process exits 2 naming the variable.",
    ),
    EnvVar(
        "MALLOC_MMAP_THRESHOLD_",
        "engine, ops",
        "glibc's mmap threshold, bytes. Unset, each service holds it at 128 KiB (glibc's start) so the large "
        "transient buffers of snapshots and checkpoints get pages of their own, given back when freed, instead of "
        "fragmenting the heap as glibc's moving threshold lets them; set, the service leaves glibc to it "
        "(docs/performance.md).",
    ),
    EnvVar(
        "OPS_WORKERS",
        "ops, `nautilus-mesh up`",
        "How many ops workers share the strategies (overrides `ops_workers`; more than one needs PostgreSQL). "
        "`nautilus-mesh up` (and `make run OPS_WORKERS=2`) starts that many ops processes on ports base, base+100, "
        "... (see docs/scale-out.md).",
    ),
    EnvVar(
        "OPS_WORKER_INDEX",
        "ops",
        "This ops process's worker index (overrides `worker_index`); its gRPC and metrics ports are the configured "
        "ones plus 100 x the index and its state folder `<state_dir>/worker-<index>`.",
    ),
    EnvVar(
        "OPS_DATABASE_URL",
        "ops, `nautilus-mesh up`",
        "Ops' state store (overrides `database_url`), e.g. `postgresql://postgres@127.0.0.1:5432/test?schema=demo` "
        "to run the SQLite demo config as several workers: `make run OPS_WORKERS=2 OPS_DATABASE_URL=...`.",
    ),
    EnvVar(
        "NAUTILUS_STRATEGY_TOKEN",
        "CLI",
        "Strategy token of the CLI's OpsService calls when `--token` is not "
        "given (else the first strategy token of `<config-dir>/ops.json`).",
    ),
    EnvVar(
        "NAUTILUS_ADMIN_TOKEN",
        "CLI",
        "Admin token of the CLI's OpsAdminService calls when `--admin-token` is "
        "not given (else `admin_token` of `<config-dir>/ops.json`).",
    ),
    EnvVar(
        "NAUTILUS_ENGINE_TOKEN",
        "CLI",
        "Engine token of `nautilus-mesh health --engine HOST:PORT` when `--engine-token` is not given (else "
        "`ops_token` of `<config-dir>/engine.json`).",
    ),
    EnvVar(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "every service",
        "OTLP gRPC endpoint of the span exporter (e.g. "
        "`http://otel-collector:4317`); unset, spans go to `var/traces/<service>.jsonl`.",
    ),
    EnvVar(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "every service", "Like `OTEL_EXPORTER_OTLP_ENDPOINT`, for traces only."
    ),
    EnvVar(
        "OTEL_TRACES_SAMPLER",
        "every service (OpenTelemetry SDK)",
        "Sampler, e.g. `parentbased_traceidratio` (decided at the strategy, followed by ops and the engine).",
    ),
    EnvVar(
        "OTEL_TRACES_SAMPLER_ARG",
        "every service (OpenTelemetry SDK)",
        "The sampler's argument, e.g. `0.01` to keep 1% of traces.",
    ),
    EnvVar(
        "NAUTILUS_SPAN_FILE_MAX_BYTES",
        "every service",
        "Size in bytes past which a local span file rotates to `<name>.1` (default 67108864, 64 MiB); the pair "
        "never holds much more than twice it. A whole number above 0: anything else (`64MiB`, `0`) stops the process "
        "at start with one line naming it and exit code 2 (`BAD_SPAN_FILE_MAX_BYTES`).",
    ),
    EnvVar(
        "OTEL_SERVICE_NAME",
        "every service (OpenTelemetry SDK)",
        "The spans' `service.name` (default: the service's own name, `ops`, `engine`, `strategy-<id>`).",
    ),
    EnvVar(
        "OTEL_RESOURCE_ATTRIBUTES",
        "every service (OpenTelemetry SDK)",
        "Extra resource attributes of the spans, e.g. `deployment.environment=staging`; `service.version` defaults "
        "to the package version.",
    ),
    EnvVar(
        "LOG_FORMAT",
        "ops, engine, strategies",
        "`json` (one object per line, UTC, with `trace_id`/`span_id` in a span) or `text` (default, UTC); "
        "`--log-format` wins.",
    ),
    EnvVar(
        "any `NAME` named by `env:NAME`",
        "ops, engine",
        "Any token field of `ops.json`/`engine.json` written `env:NAME` "
        "reads its value from the variable `NAME` at start; an unset variable is a config error naming it.",
    ),
)

_ENV_PATTERNS = (
    re.compile(r"""environ(?:\.get)?[\[(]\s*["']([A-Z][A-Z0-9_]+)["']"""),
    re.compile(r"""getenv\(\s*["']([A-Z][A-Z0-9_]+)["']"""),
    re.compile(r"""^[A-Z_]*_ENV\s*=\s*["']([A-Z][A-Z0-9_]+)["']""", re.MULTILINE),
)
SOURCE_PACKAGES = ("nautilus_mesh", "ops_server", "engine_server", "clients", "strategies")


def env_vars_in_source(root: Path) -> set[str]:
    """Names of the environment variables the source reads by name."""
    found: set[str] = set()
    for package in SOURCE_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if "api" in path.relative_to(root).parts[:2]:
                continue
            text = path.read_text()
            for pattern in _ENV_PATTERNS:
                found.update(pattern.findall(text))
    return found


# --- reading a model ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    default: str
    constraints: str
    unit: str
    doc: str


def _source_docs(cls: type) -> dict[str, str]:
    """``field -> docstring`` for the string literal under each annotated assignment of the class body."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    body = ast.parse(source).body[0]
    assert isinstance(body, ast.ClassDef)
    docs: dict[str, str] = {}
    for stmt, after in zip(body.body, [*body.body[1:], None], strict=True):
        if not isinstance(stmt, ast.AnnAssign) or not isinstance(stmt.target, ast.Name):
            continue
        if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str):
            docs[stmt.target.id] = " ".join(inspect.cleandoc(after.value.value).split())
    return docs


def _args_docs(cls: type) -> dict[str, str]:
    """``field -> text`` from a Google-style ``Args:`` or ``Attributes:`` section of the class docstring."""
    doc = inspect.getdoc(cls) or ""
    docs: dict[str, str] = {}
    section = False
    current = ""
    for line in doc.splitlines():
        if line.strip() in ("Args:", "Attributes:"):
            section = True
            continue
        if section and line and not line.startswith(" "):
            section = False
        if not section:
            continue
        match = re.match(r"^ {4}(\w+)(?: \([^)]*\))?: (.*)$", line)
        if match:
            current = match.group(1)
            docs[current] = match.group(2).strip()
        elif current and line.strip():
            docs[current] += " " + line.strip()
    return docs


def field_docs(cls: type) -> dict[str, str]:
    """Docstrings of a class's fields, its bases' included (a subclass's own text wins)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass.__module__.startswith(("pydantic", "builtins")):
            continue
        docs.update(_args_docs(klass))
        docs.update(_source_docs(klass))
    return docs


_SCALAR_NAMES: tuple[tuple[type, str], ...] = (
    (bool, "bool"),  # before int: a bool is an int
    (int, "integer"),
    (float, "number"),
    (Decimal, "decimal (string or number)"),
    (str, "string"),
    (Path, "path"),
)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        named = [_type_name(a) for a in args if a is not type(None)]
        text = " \\| ".join(named)
        return f"{text} \\| null" if type(None) in args else text
    if origin is typing.Literal:
        return " \\| ".join(f'`"{a.value}"`' if isinstance(a, enum.Enum) else f"`{a!r}`" for a in args)
    if origin in (list, tuple, Sequence, set, frozenset):
        inner = [a for a in args if a is not Ellipsis]
        return f"list of {_type_name(inner[0])}" if inner else "list"
    if origin in (dict, Mapping):
        return f"object of {_type_name(args[0])} -> {_type_name(args[1])}" if args else "object"
    if tp is Any:
        return "any"
    if isinstance(tp, type):
        if issubclass(tp, enum.Enum):
            return " \\| ".join(f'`"{m.value}"`' for m in tp)
        scalar = next((name for base, name in _SCALAR_NAMES if issubclass(tp, base)), None)
        if scalar is not None:
            return scalar
        if _is_model(tp):
            return f"[{tp.__name__}](#{tp.__name__.lower()})"
    return str(tp).replace("typing.", "")


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and (issubclass(tp, pydantic.BaseModel) or dataclasses.is_dataclass(tp))


def _nested(tp: Any) -> list[type]:
    if _is_model(tp):
        return [tp]
    return [m for a in typing.get_args(tp) for m in _nested(a)]


def _default(value: Any) -> str:
    if value is PydanticUndefined or value is dataclasses.MISSING:
        return "required"
    if value is None:
        return "`null`"
    if isinstance(value, enum.Enum):
        return f'`"{value.value}"`'
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (Decimal, Path)):
        return f'`"{value}"`'
    if isinstance(value, float) and value.is_integer():
        return f"`{value:.1f}`"
    if _is_model(type(value)):
        return "defaults"
    if isinstance(value, (tuple, list)) and value and _is_model(type(value[0])):
        return f"{len(value)} built-in entries"
    if isinstance(value, (tuple, list, dict)) and len(repr(value)) > 60:
        return f"{len(value)} entries (see the source)"
    if isinstance(value, tuple):
        value = list(value)
    return f"`{value!r}`".replace("'", '"')


_BOUNDS = (
    (annotated_types.Ge, "ge", ">="),
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Le, "le", "<="),
    (annotated_types.Lt, "lt", "<"),
)


def _constraints(metadata: Sequence[Any]) -> str:
    out = []
    for item in metadata:
        for kind, attr, sign in _BOUNDS:
            if isinstance(item, kind):
                out.append(f"{sign} {getattr(item, attr)}")
        if isinstance(item, annotated_types.MinLen):
            out.append(f"at least {item.min_length} item(s)" if item.min_length != 1 else "non-empty")
        if isinstance(item, annotated_types.MaxLen):
            out.append(f"at most {item.max_length} long")
    return ", ".join(out)


def _type_constraints(hint: Any) -> str:
    """Constraints a field's type carries itself: an ``Annotated`` alias (``PositiveDecimal``), also inside an
    optional (``X | None``) or as a mapping's values (``dict[str, Annotated[...]]``)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:  # its metadata: pydantic.Field(...) (a FieldInfo holding the bounds) or bounds
        return _constraints(
            [bound for item in hint.__metadata__ for bound in getattr(item, "metadata", None) or [item]]
        )
    if origin in (typing.Union, types.UnionType):
        return next((c for arg in args if arg is not type(None) and (c := _type_constraints(arg))), "")
    if origin in (dict, Mapping) and len(args) == 2:
        inner = _type_constraints(args[1])
        return f"each value {inner}" if inner else ""
    return ""


_UNITS = (
    (r"_seconds$", "s"),
    (r"_ms$", "ms"),
    (r"_ns$", "ns"),
    (r"_bps$", "bps"),
    (r"_usd$", "USD"),
    (r"(^|_)port$", "port"),
    (r"_fraction$", "fraction"),
)
_DOC_UNITS = (
    (r"\bper second\b", "1/s"),
    (r"\bseconds\b", "s"),
    (r"\bbasis points\b", "bps"),
    (r"(?<![-\w])USD\b", "USD"),
    (r"\bin percent\b|\bpercents?\b", "%"),
    (r"\(count\)|\bnumber of\b|\bcount\b", "count"),
    (r"\bin characters\b", "chars"),
    (r"\bprobability\b", "probability"),
    (r"\bfraction\b", "fraction"),
    (r"\bunits of the instrument\b", "qty"),
    (r"\bin quotes\b|\bmids\b", "quotes"),
    (r"\bobservations\b", "observations"),
)


# Where the name and the docstring do not say it in words the heuristics know.
UNIT_OVERRIDES = {
    "MomentumConfig.scale": "-",
    "MeanReversionConfig.entry_z": "z-score",
    "Instrument.tick_size": "price",
    "Instrument.initial_price": "price",
    "Instrument.lot_size": "qty",
    "Instrument.min_qty": "qty",
    "Instrument.volatility": "1/year",
    "Instrument.drift": "1/year",
    "VenueRailsConfig.max_order_qty": "qty",
    "VenueRailsConfig.max_order_qty_by_symbol": "qty",
    "VenueRailsConfig.max_order_notional": "quote ccy",
    "VenueRailsConfig.message_burst": "count",
    "MarketMakerConfig.level_notional": "quote ccy",
    "MarketMakerConfig.level_size": "qty",
    "MarketMakerConfig.levels": "count",
    "OpsConfig.dedup_window": "count",
    "CanaryConfig.z_crit": "z-score",
}


# Defaults a validator fills in from another field (the model declares the field required).
DEFAULT_OVERRIDES = {"Instrument.min_qty": "`lot_size`"}


def _unit(name: str, doc: str, owner: type | None = None) -> str:
    if owner is not None:
        for klass in owner.__mro__:
            if f"{klass.__name__}.{name}" in UNIT_OVERRIDES:
                return UNIT_OVERRIDES[f"{klass.__name__}.{name}"]
    for pattern, unit in _UNITS:
        if re.search(pattern, name):
            return unit
    for pattern, unit in _DOC_UNITS:
        if re.search(pattern, doc):
            return unit
    return "-"


def model_fields(cls: type) -> tuple[list[Field], list[type]]:
    """The documented fields of a config class and the config classes nested in it."""
    docs = field_docs(cls)
    out: list[Field] = []
    nested: list[type] = []
    default: Any
    if issubclass(cls, pydantic.BaseModel):
        hints = typing.get_type_hints(cls, include_extras=True)
        for name, info in cls.model_fields.items():
            key = info.alias or name
            default = info.get_default(call_default_factory=True) if not info.is_required() else PydanticUndefined
            doc = docs.get(name, "")
            hint = hints.get(name, info.annotation)
            out.append(
                Field(
                    key,
                    _type_name(hint),
                    DEFAULT_OVERRIDES.get(f"{cls.__name__}.{name}") or _default(default),
                    _constraints(info.metadata) or _type_constraints(hint),
                    _unit(name, doc, cls),
                    doc,
                )
            )
            nested += _nested(info.annotation)
    else:
        assert dataclasses.is_dataclass(cls), f"{cls.__name__} is neither a pydantic model nor a dataclass"
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = dataclasses.MISSING
            doc = docs.get(f.name, "")
            out.append(Field(f.name, _type_name(hints[f.name]), _default(default), "", _unit(f.name, doc, cls), doc))
            nested += _nested(hints[f.name])
    return out, nested


def _markdown(text: str) -> str:
    """reStructuredText literals (double backticks) as Markdown code."""
    return re.sub(r":(?:meth|class|func|attr|mod):`~?([^`]+)`", r"`\1`", text).replace("``", "`")


def _cell(text: str) -> str:
    return _markdown(text).replace("|", "\\|").replace("\n", " ") if text else "-"


def render(root: Path) -> str:
    """The whole of docs/configuration.md."""
    missing_env = env_vars_in_source(root) - {v.name for v in ENV_VARS}
    if missing_env:
        raise SystemExit(
            f"configuration.md: undocumented environment variables {sorted(missing_env)}: add them to "
            "ENV_VARS in scripts/docgen/configuration.py"
        )
    out = [HEADER.format(source="the pydantic models and dataclasses of every config file"), "# Configuration\n\n"]
    out.append(
        "Every config file is JSON, read by the model named below and validated on load: an error names the file "
        "and the field path, unknown keys are errors, and a number given as `true` or `false` is refused (it would "
        "read as 1 or 0). `config/demo/` is the demo mesh `make run` starts; "
        "`config/compose/` is the same for docker compose. Token fields accept `env:NAME` (an environment variable), "
        "`file:PATH` (a file's first line) and, for tokens a service only checks, `sha256:<hex>`.\n\n"
        "Columns: *unit* is `s` seconds, `ms`/`ns` milli/nanoseconds, `bps` basis points, `USD`, `qty` instrument "
        "units, `count`, `fraction` (of 1), `%` percent, `-` none (a name, a path, a switch).\n\n"
    )
    out.append("| file | read by |\n| --- | --- |\n")
    for f in FILES:
        out.append(f"| [`{f.path}`](#{_slug(f.path)}) | `{f.model.__module__}.{f.model.__name__}` |\n")
    out.append("\n")
    undocumented: list[str] = []
    for f in FILES:
        out.append(f"## `{f.path}`\n\n{f.summary}\n\n")
        queue: list[tuple[str, type]] = [("The top level of the file", f.model), *[(f"In {w}", c) for w, c in f.extra]]
        seen: set[type] = set()
        while queue:
            where, cls = queue.pop(0)
            if cls in seen:
                continue
            seen.add(cls)
            fields, nested = model_fields(cls)
            own = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
            summary = _markdown(own.split("\n\n")[0].replace("\n", " "))
            out.append(f"### {cls.__name__}\n\n{where}." + (f" {summary}" if summary else "") + "\n\n")
            out.append(
                "| field | type | default | constraints | unit | meaning |\n| --- | --- | --- | --- | --- | --- |\n"
            )
            for field in fields:
                if not field.doc:
                    undocumented.append(f"{cls.__module__}.{cls.__name__}.{field.name}")
                out.append(
                    f"| `{field.name}` | {field.type} | {field.default} | {_cell(field.constraints)} | {field.unit} | "
                    f"{_cell(field.doc)} |\n"
                )
            out.append("\n")
            queue += [(f"Used in [{cls.__name__}](#{cls.__name__.lower()})", n) for n in nested if n not in seen]
    if undocumented:
        raise SystemExit("configuration.md: fields without a docstring: " + ", ".join(undocumented))
    out.append("## Environment variables\n\n| variable | read by | meaning |\n| --- | --- | --- |\n")
    for var in ENV_VARS:
        name = var.name if "`" in var.name else f"`{var.name}`"
        out.append(f"| {name} | {var.read_by} | {_cell(var.meaning)} |\n")
    return "".join(out).rstrip("\n") + "\n"


def _slug(path: str) -> str:
    return re.sub(r"[^a-z0-9 -]", "", path.lower()).replace(" ", "-")
