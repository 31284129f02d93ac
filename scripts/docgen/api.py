"""docs/api.md from the proto descriptors (with their comments), plus examples and error codes per RPC.

The descriptors come from ``buf build --as-file-descriptor-set`` (source info included), so the page says exactly
what the contract says. The examples and error codes are kept here, next to each other: a new RPC without an
example, an example for an RPC that no longer exists, or an SDK example naming a method the SDK does not have fails
the generation.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2

from docgen import HEADER

F = descriptor_pb2.FieldDescriptorProto

# Where each service listens in the demo and which metadata its calls need.
SERVICE_ACCESS: dict[str, tuple[str, str]] = {
    "nautilus.ops.v1.OpsService": ("127.0.0.1:50051", "x-strategy-token: demo-momentum-token"),
    "nautilus.ops.v1.OpsAdminService": ("127.0.0.1:50051", "x-ops-token: demo-admin-token"),
    "nautilus.engine.v1.EngineService": ("127.0.0.1:50052", "x-engine-token: demo-engine-token"),
    "nautilus.engine.v1.MarketDataService": ("127.0.0.1:50052", ""),
}

# The SDK client of each service and how the examples build it.
SDK_CLIENT: dict[str, tuple[str, str]] = {
    "nautilus.ops.v1.OpsService": (
        "OpsClient",
        'OpsClient("127.0.0.1:50051", strategy_token="demo-momentum-token") as ops',
    ),
    "nautilus.ops.v1.OpsAdminService": (
        "OpsAdminClient",
        'OpsAdminClient("127.0.0.1:50051", admin_token="demo-admin-token") as admin',
    ),
    "nautilus.engine.v1.EngineService": (
        "EngineClient",
        'EngineClient("127.0.0.1:50052", engine_token="demo-engine-token") as engine',
    ),
    "nautilus.engine.v1.MarketDataService": ("EngineClient", 'EngineClient("127.0.0.1:50052") as engine'),
}

AUTH_ERRORS = [
    ("UNAUTHENTICATED", "MISSING_TOKEN, INVALID_TOKEN", "no token, or not the configured one"),
    ("PERMISSION_DENIED", "DOOR_DISABLED", "the service has no token configured: the door is closed, not open"),
]
MALFORMED = ("INVALID_ARGUMENT", "MALFORMED_REQUEST", "the request bytes do not decode")
WRONG_SHARD = (
    "FAILED_PRECONDITION",
    "WRONG_SHARD",
    "another ops worker owns the strategy (several workers; details: `owner_index`, `owner_address`)",
)
ENGINE_ID_ERRORS = [
    (
        "INVALID_ARGUMENT",
        "MISSING_FIELD, FIELD_TOO_LONG, INVALID_CHARACTERS",
        "client_order_id is empty, over 128 characters or not printable",
    )
]
SIGNAL_ERRORS = [
    (
        "INVALID_ARGUMENT",
        "MISSING_FIELD, INVALID_ID, NOT_FINITE, OUT_OF_RANGE, FIELD_TOO_LONG, INVALID_CHARACTERS",
        "a signal field is missing, not finite, out of range or too long",
    ),
    ("NOT_FOUND", "UNKNOWN_MODEL, UNKNOWN_INSTRUMENT", "the model or instrument is not known"),
    (
        "PERMISSION_DENIED",
        "MODEL_NOT_ALLOWED, MODEL_DISABLED",
        "the token is not bound to the model, or the model is DISABLED",
    ),
    (
        "FAILED_PRECONDITION",
        "TRADING_HALTED, REDUCE_ONLY, INSTRUMENT_NOT_ALLOWED, STALE_MARK, MAX_ORDER_NOTIONAL, MAX_POSITION",
        "a risk rail denied the order (details name the limit)",
    ),
    (
        "RESOURCE_EXHAUSTED",
        "INVALID_QUOTE, GROSS_EXPOSURE, RATE_LIMITED",
        "a budget is used up (details: `requested`, `available` for `INVALID_QUOTE`; `current`, `requested`, `limit` "
        "for `GROSS_EXPOSURE`; `rate_per_second`, `burst` for `RATE_LIMITED`)",
    ),
    ("UNAVAILABLE", "ENGINE_UNAVAILABLE", "the engine session is down; nothing was sent"),
    ("UNAVAILABLE", "VENUE_MISCONFIGURED", "the engine's venues do not fit ops' config; nothing was sent"),
    WRONG_SHARD,
]
MODEL_SCOPE = [
    (
        "PERMISSION_DENIED",
        "MODEL_NOT_ALLOWED",
        "a strategy token reads only its own models (the admin token, as `x-ops-token`, reads every model)",
    ),
]
STRATEGY_SCOPE = [
    (
        "PERMISSION_DENIED",
        "STRATEGY_NOT_ALLOWED",
        "a strategy token reads only its own strategy (the admin token, as `x-ops-token`, reads every strategy)",
    ),
]
PAGE_ERRORS = [("INVALID_ARGUMENT", "INVALID_PAGE_SIZE, INVALID_PAGE_TOKEN", "a bad page size or token")]
UNKNOWN_MODEL = [("NOT_FOUND", "UNKNOWN_MODEL", "no such model in the registry")]
REASON = [("INVALID_ARGUMENT", "REASON_REQUIRED", "the reason is empty (every control is audited with it)")]
CANARY_ERRORS = [
    ("NOT_FOUND", "UNKNOWN_STRATEGY, NO_CANARY", "no such strategy, or it has no canary"),
    *REASON,
    ("INVALID_ARGUMENT", "CANARY_FINISHED", "the canary was already promoted or rolled back"),
]


@dataclass(frozen=True)
class Example:
    """How to call one RPC: the request as grpcurl JSON, the SDK call (None: not in the SDK) and its own errors.

    Its table of errors starts with those every RPC shares: the auth errors (when its service needs a token), then
    ``MALFORMED_REQUEST``.
    """

    request: dict[str, Any]
    sdk: str | None
    errors: list[tuple[str, str, str]]
    note: str = ""


def canary_example(action: str, reason: str, note: str = "") -> Example:
    """The example of a canary control RPC (``PauseCanary`` is ``action="pause"``) on the demo's ``momentum``."""
    return Example(
        {"strategy_id": "momentum", "reason": reason},
        f'status = await admin.{action}_canary("momentum", reason="{reason}")',
        CANARY_ERRORS,
        note,
    )


def book_page_example(kind: str, comment: str = "") -> Example:
    """The example of a paged list of the book (``ListOrders`` is ``kind="order"``), on ``momentum_v1``."""
    return Example(
        {"model_id": "momentum_v1", "page_size": 50},
        f'page = await ops.list_{kind}s("momentum_v1", page_size=50){comment}',
        [*MODEL_SCOPE, *PAGE_ERRORS],
        PAPER_BOOKS[kind],
    )


PAPER_BOOKS = {
    "order": "The orders of a SHADOW model, and of a stable model's paper twin while a canary is in shadow, are "
    "booked in a paper book and listed as `<model>@paper`. Without `model_id` a strategy token lists every order of "
    "its own models, a SHADOW model's paper orders included; filtering on `<model>@paper` needs the admin token. A "
    "paper twin's orders are ops' own (they measure the stable model on paper): only the admin token lists them.",
    "fill": "A SHADOW model's fills are listed under the model's own id with mode `SHADOW`, as its strategy's stream "
    "delivers them (its orders are listed as `<model>@paper`). A paper twin's fills are ops' own (they measure the "
    "stable model on paper): only the admin token lists them, as `<stable>@paper`.",
}
"""What the book listings show of paper books, by kind."""


EXAMPLES: dict[str, Example] = {
    # OpsService
    "nautilus.ops.v1.OpsService.StreamSignals": Example(
        {"signals": [{"signal_id": "s-1", "model_id": "momentum_v1", "instrument": "BTC-USD", "target": 0.1}]},
        'signal = ops_pb2.Signal(signal_id="s-2", model_id="momentum_v1", instrument="BTC-USD", target=0.1)\n'
        "call = ops.stream_signals()\n"
        "await call.write(ops_pb2.StreamSignalsRequest(signals=[signal]))\n"
        "async for frame in call:  # decisions, then the fills of their orders\n"
        "    print(frame.decisions, frame.fills)",
        [],
        "A `REJECTED` decision's `error` carries the codes `SubmitSignal` answers as statuses. A frame of more than "
        "`max_signals_per_frame` signals is answered with one `REJECTED` decision (`FRAME_TOO_LARGE`). On an ops "
        "worker that does not own the strategy the stream ends with `FAILED_PRECONDITION`, `WRONG_SHARD`.",
    ),
    "nautilus.ops.v1.OpsService.SubmitSignal": Example(
        {"signal": {"signal_id": "s-1", "model_id": "momentum_v1", "instrument": "BTC-USD", "target": 0.1}},
        "decision = await ops.submit_signal(\n"
        '    ops_pb2.Signal(signal_id="s-1", model_id="momentum_v1", instrument="BTC-USD", target=0.1)\n'
        ")",
        SIGNAL_ERRORS,
    ),
    "nautilus.ops.v1.OpsService.GetPositions": Example(
        {"model_id": "momentum_v1"},
        'positions = await ops.get_positions("momentum_v1")',
        [*MODEL_SCOPE, *UNKNOWN_MODEL],
    ),
    "nautilus.ops.v1.OpsService.ListModels": Example(
        {"strategy_id": "momentum"},
        'models = await ops.list_models("momentum")',
        STRATEGY_SCOPE,
    ),
    "nautilus.ops.v1.OpsService.GetAllocations": Example({}, "allocations = await ops.get_allocations()", []),
    "nautilus.ops.v1.OpsService.GetModelQuota": Example(
        {"model_id": "momentum_v1"},
        'quota = await ops.get_model_quota("momentum_v1")',
        [*MODEL_SCOPE, *UNKNOWN_MODEL],
    ),
    "nautilus.ops.v1.OpsService.GetModelStats": Example(
        {"model_id": "momentum_v1"},
        'stats = await ops.get_model_stats("momentum_v1")',
        [*MODEL_SCOPE, *UNKNOWN_MODEL],
    ),
    "nautilus.ops.v1.OpsService.ListOrders": book_page_example("order", "  # then page_token=page.next_page_token"),
    "nautilus.ops.v1.OpsService.ListFills": book_page_example("fill"),
    "nautilus.ops.v1.OpsService.GetCanaryStatus": Example(
        {"strategy_id": "momentum"},
        'canaries = await ops.get_canary_status("momentum")',
        STRATEGY_SCOPE,
    ),
    "nautilus.ops.v1.OpsService.WatchEvents": Example(
        {"kinds": ["CANARY", "ALLOCATION"], "include_recent": True},
        'async for event in ops.watch_events(["CANARY", "ALLOCATION"], include_recent=True):\n'
        "    print(event.kind, event.message)",
        [],
    ),
    "nautilus.ops.v1.OpsService.GetRiskLimits": Example({}, "limits = await ops.get_risk_limits()", []),
    "nautilus.ops.v1.OpsService.GetTradingState": Example({}, "states = await ops.get_trading_state()", []),
    "nautilus.ops.v1.OpsService.GetStreamLimits": Example(
        {},
        "limits = await ops.get_stream_limits()  # size StreamSignals frames by limits.max_signals_per_frame",
        [],
    ),
    "nautilus.ops.v1.OpsService.GetShardMap": Example(
        {},
        "shards = await ops.get_shard_map()  # workers, and the worker owning each strategy (docs/scale-out.md)",
        [],
    ),
    # OpsAdminService
    "nautilus.ops.v1.OpsAdminService.TriggerAllocation": Example(
        {"reason": "new policy reviewed"},
        'decision = await admin.trigger_allocation(reason="new policy reviewed")',
        [("PERMISSION_DENIED", "MANUAL_ALLOCATION_DISABLED", "the policy has `allow_manual: false`")],
    ),
    "nautilus.ops.v1.OpsAdminService.SetRoutingWeights": Example(
        {"strategy_id": "meanrev", "weights": {"meanrev_v1": 1.0}, "reason": "rebalance"},
        'models = await admin.set_routing_weights("meanrev", {"meanrev_v1": 1.0}, reason="rebalance")',
        [
            ("INVALID_ARGUMENT", "INVALID_WEIGHTS", "a weight outside [0, 1] or a sum other than 1 (+-0.001)"),
            ("INVALID_ARGUMENT", "CANARY_ACTIVE", "a canary owns the strategy's weights: use the canary controls"),
            ("NOT_FOUND", "UNKNOWN_STRATEGY, UNKNOWN_MODEL", "no such strategy, or a model not in it"),
        ],
    ),
    "nautilus.ops.v1.OpsAdminService.PromoteCanary": Example(
        {"strategy_id": "momentum", "reason": "shadow looks good"},
        'status = await admin.promote_canary("momentum", reason="shadow looks good")',
        [
            *CANARY_ERRORS,
            (
                "INVALID_ARGUMENT",
                "BACKTEST_REQUIRED",
                "the canary is held in SHADOW by `require_backtest`: its backtest report is missing or fails",
            ),
        ],
    ),
    "nautilus.ops.v1.OpsAdminService.RollbackCanary": canary_example("rollback", "slippage too high"),
    "nautilus.ops.v1.OpsAdminService.PauseCanary": canary_example("pause", "investigating fills"),
    "nautilus.ops.v1.OpsAdminService.ResumeCanary": canary_example("resume", "fills explained"),
    "nautilus.ops.v1.OpsAdminService.ConfirmCanary": canary_example(
        "confirm",
        "reviewed",
        "Run before the canary reaches the gate, it confirms 100% in advance (`operator confirmed 100% in "
        "advance`): the canary still climbs the schedule and passes every check.",
    ),
    "nautilus.ops.v1.OpsAdminService.SetTradingState": Example(
        {"model_id": "momentum_v1", "state": "TRADING_STATE_REDUCING", "reason": "end of day"},
        'await admin.set_trading_state(common_pb2.TRADING_STATE_REDUCING, model_id="momentum_v1", reason="end of day")',
        [
            ("INVALID_ARGUMENT", "INVALID_STATE", "state is not ACTIVE, REDUCING or HALTED"),
            (
                "INVALID_ARGUMENT",
                "KILL_SWITCH_ENGAGED",
                "the global state cannot leave HALTED while the kill switch is engaged",
            ),
            *UNKNOWN_MODEL,
        ],
    ),
    "nautilus.ops.v1.OpsAdminService.EngageKillSwitch": Example(
        {"reason": "venue incident"},
        'result = await admin.engage_kill_switch(reason="venue incident")',
        [
            ("UNAVAILABLE", "ENGINE_UNAVAILABLE", "ops is halted, but the engine could not be asked to cancel (retry)"),
        ],
    ),
    "nautilus.ops.v1.OpsAdminService.ReleaseKillSwitch": Example(
        {"reason": "incident closed"},
        'state = await admin.release_kill_switch(reason="incident closed")',
        [*REASON, ("INVALID_ARGUMENT", "KILL_SWITCH_NOT_ENGAGED", "nothing to release")],
    ),
    "nautilus.ops.v1.OpsAdminService.ReloadConfig": Example(
        {"target": "CONFIG_TARGET_RISK_LIMITS"},
        "note = await admin.reload_config(admin_pb2.CONFIG_TARGET_RISK_LIMITS)",
        [
            ("INVALID_ARGUMENT", "INVALID_TARGET", "target is UNSPECIFIED"),
            (
                "INVALID_ARGUMENT",
                "CONFIG_INVALID",
                "the file is unreadable or invalid, or adds or removes a strategy or a model (a restart does that); "
                "the previous config stays in force",
            ),
            ("INVALID_ARGUMENT", "UNKNOWN_STRATEGY", "the capital policy names a strategy the registry does not have"),
        ],
    ),
    "nautilus.ops.v1.OpsAdminService.GetHealth": Example(
        {},
        "health = await admin.get_health()  # status and one check per part, with detail and age",
        [],
    ),
    # EngineService
    "nautilus.engine.v1.EngineService.StreamOrders": Example(
        {
            "commands": [
                {
                    "new_order": {
                        "client_order_id": "o-1",
                        "venue": "sim",
                        "account": "main",
                        "model_id": "momentum_v1",
                        "instrument": "BTC-USD",
                        "side": "SIDE_BUY",
                        "order_type": "ORDER_TYPE_MARKET",
                        "time_in_force": "TIME_IN_FORCE_IOC",
                        "quantity": "0.01",
                    }
                }
            ]
        },
        None,
        [],
        "Ops's own session (the SDK does not wrap it). A bad command is answered in-band with a `REJECTED` report "
        "(`MISSING_FIELD` for an empty `client_order_id` or `instrument`, `FIELD_TOO_LONG`, `INVALID_CHARACTERS`, "
        "`INVALID_SIDE`, `INVALID_ORDER_TYPE`, `INVALID_TIME_IN_FORCE` (required for LIMIT orders; a MARKET order "
        "without one is IOC), `INVALID_QUANTITY`, `INVALID_PRICE` (also a LIMIT order without `limit_price` and a "
        "MARKET order with one), `CLIENT_ORDER_ID_REUSED`, a venue's or a venue rail's code; `EMPTY_COMMAND` for a "
        "command with neither `new_order` nor `cancel_order`; `ORDER_NOT_FOUND` for a cancel of an unknown id); an "
        "empty `account` is `default`. A frame of more than `max_commands_per_frame` commands is answered with one "
        "`REJECTED` report (`FRAME_TOO_LARGE`, seq 0) and executes nothing. The stream stays open.",
    ),
    "nautilus.engine.v1.EngineService.ListExecutions": Example(
        {"since_seq": 0, "page_size": 100},
        "page = await engine.list_executions(since_seq=0, page_size=100)",
        [
            *PAGE_ERRORS,
            (
                "OUT_OF_RANGE",
                "EXECUTIONS_PAST_RETENTION",
                "reports after since_seq were let go by a journal snapshot (`execution_retention`); the detail "
                "`oldest_available_seq` is the oldest seq still available (ask from it minus one)",
            ),
            (
                "NOT_FOUND",
                "EXECUTIONS_TRUNCATED",
                "an engine without a journal (`journal_path: null`) no longer holds the reports after since_seq in "
                "its `report_history`",
            ),
        ],
    ),
    "nautilus.engine.v1.EngineService.GetOrder": Example(
        {"client_order_id": "o-1"},
        'order = await engine.get_order("o-1")',
        [
            *ENGINE_ID_ERRORS,
            ("NOT_FOUND", "ORDER_NOT_FOUND", "no order with this id"),
            (
                "OUT_OF_RANGE",
                "ORDER_PAST_RETENTION",
                "the id was seen (it is still refused as a duplicate) but a journal snapshot let its records go",
            ),
        ],
    ),
    "nautilus.engine.v1.EngineService.ListVenues": Example({}, "venues = await engine.list_venues()", []),
    "nautilus.engine.v1.EngineService.CancelAllOrders": Example(
        {"venue": "sim"}, 'result = await engine.cancel_all_orders(venue="sim")', []
    ),
    "nautilus.engine.v1.EngineService.CancelOrder": Example(
        {"client_order_id": "o-1"},
        None,
        [
            *ENGINE_ID_ERRORS,
            ("NOT_FOUND", "ORDER_NOT_FOUND", "no order with this id"),
            (
                "FAILED_PRECONDITION",
                "TOO_LATE_TO_CANCEL, ORDER_ALREADY_DONE",
                "the order is filled, or already cancelled, rejected or expired (in memory or read back from the "
                "journal)",
            ),
            (
                "OUT_OF_RANGE",
                "ORDER_PAST_RETENTION",
                "a finished order whose records a journal snapshot let go (what `GetOrder` answers for it)",
            ),
        ],
        "Ops's call (the SDK does not wrap it): strategies change their target instead, and operators use the kill "
        "switch or `CancelAllOrders`.",
    ),
    "nautilus.engine.v1.EngineService.GetHealth": Example(
        {},
        "health = await engine.get_health()  # venues, quotes, journal, last seq, ops session",
        [],
    ),
    # MarketDataService
    "nautilus.engine.v1.MarketDataService.StreamQuotes": Example(
        {"instruments": ["BTC-USD"]},
        'async for frame in engine.stream_quotes(["BTC-USD"]):\n    print(frame.quotes)',
        [],
    ),
    "nautilus.engine.v1.MarketDataService.GetQuote": Example(
        {"instrument": "BTC-USD"},
        'quote = await engine.get_quote("BTC-USD")',
        [("NOT_FOUND", "UNKNOWN_INSTRUMENT", "no venue quotes this instrument")],
    ),
}

_SCALARS = {
    F.TYPE_DOUBLE: "double",
    F.TYPE_FLOAT: "float",
    F.TYPE_INT64: "int64",
    F.TYPE_UINT64: "uint64",
    F.TYPE_INT32: "int32",
    F.TYPE_UINT32: "uint32",
    F.TYPE_BOOL: "bool",
    F.TYPE_STRING: "string",
    F.TYPE_BYTES: "bytes",
    F.TYPE_SINT32: "sint32",
    F.TYPE_SINT64: "sint64",
    F.TYPE_FIXED32: "fixed32",
    F.TYPE_FIXED64: "fixed64",
    F.TYPE_SFIXED32: "sfixed32",
    F.TYPE_SFIXED64: "sfixed64",
}


def build_descriptor_set(root: Path, buf: Path) -> descriptor_pb2.FileDescriptorSet:
    """The contract under ``root/protos`` as a descriptor set with comments (buf's source info)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "image.binpb"
        subprocess.run(  # noqa: S603  the venv's buf on our own module
            [str(buf), "build", "--as-file-descriptor-set", "-o", str(out)], check=True, cwd=root
        )
        fds = descriptor_pb2.FileDescriptorSet()
        fds.ParseFromString(out.read_bytes())
    return fds


def _comments(proto: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    out = {}
    for loc in proto.source_code_info.location:
        text = loc.leading_comments.strip() or loc.trailing_comments.strip()
        if text:
            out[tuple(loc.path)] = " ".join(line.strip() for line in text.splitlines())
    return out


def _anchor(full_name: str) -> str:
    return full_name.lower().replace(".", "")


def _link(type_name: str) -> str:
    name = type_name.lstrip(".")
    if name.startswith("nautilus."):
        return f"[`{name.rsplit('.', 1)[-1]}`](#{_anchor(name)})"
    return f"`{name}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|") or "-"


class _Contract:
    def __init__(self, fds: descriptor_pb2.FileDescriptorSet) -> None:
        # The strategies' service first, then the operators', the engine's, and the shared types last.
        order = ["nautilus/ops/v1/ops.proto", "nautilus/ops/v1/admin.proto", "nautilus/engine/v1/engine.proto"]
        self.files = sorted(
            (f for f in fds.file if f.name.startswith("nautilus/")),
            key=lambda f: (order.index(f.name) if f.name in order else len(order), f.name),
        )
        self.maps: dict[str, descriptor_pb2.DescriptorProto] = {}
        for f in self.files:
            for m in f.message_type:
                for nested in m.nested_type:
                    if nested.options.map_entry:
                        self.maps[f".{f.package}.{m.name}.{nested.name}"] = nested

    def field_type(self, field: descriptor_pb2.FieldDescriptorProto) -> str:
        if field.type_name in self.maps:
            key, value = self.maps[field.type_name].field
            return f"map<{self._single(key)}, {self._single(value)}>"
        single = self._single(field)
        return f"repeated {single}" if field.label == F.LABEL_REPEATED else single

    def _single(self, field: descriptor_pb2.FieldDescriptorProto) -> str:
        if field.type in (F.TYPE_MESSAGE, F.TYPE_ENUM):
            return _link(field.type_name)
        return f"`{_SCALARS[field.type]}`"


def _grpcurl(service: str, method: str, request: dict[str, Any], streaming_in: bool) -> str:
    address, header = SERVICE_ACCESS[service]
    parts = ["grpcurl -plaintext"]
    if header:
        parts.append(f"-H '{header}'")
    body = json.dumps(request)
    parts.append(f"-d '{body}'" if request or not streaming_in else "-d @")
    line = " ".join(parts)
    return f"{line} \\\n  {address} {service}/{method}"


def _sdk(service: str, example: Example) -> str:
    _, opener = SDK_CLIENT[service]
    body = "\n".join("    " + line for line in (example.sdk or "").splitlines())
    return f"async with {opener}:\n{body}"


def _check_examples(contract: _Contract) -> list[str]:
    import clients.sdk as sdk

    rpcs = {f"{f.package}.{s.name}.{m.name}" for f in contract.files for s in f.service for m in s.method}
    problems = [f"no example for {r} in scripts/docgen/api.py" for r in sorted(rpcs - EXAMPLES.keys())]
    problems += [f"example for unknown RPC {r}" for r in sorted(EXAMPLES.keys() - rpcs)]
    for rpc, example in EXAMPLES.items():
        if example.sdk is None:
            continue
        service = rpc.rsplit(".", 1)[0]
        cls = getattr(sdk, SDK_CLIENT[service][0])
        called = re.findall(r"\b(?:ops|admin|engine)\.(\w+)\(", example.sdk)
        if not called:
            problems.append(f"{rpc}: the SDK example calls no client method")
        problems += [f"{rpc}: {cls.__name__} has no method {m}" for m in called if not hasattr(cls, m)]
    return problems


def render(fds: descriptor_pb2.FileDescriptorSet) -> str:
    """The whole of docs/api.md."""
    contract = _Contract(fds)
    problems = _check_examples(contract)
    if problems:
        raise SystemExit("api.md: " + "; ".join(problems))
    out = [HEADER.format(source="protos/ (buf build) and scripts/docgen/api.py"), "# API reference\n\n"]
    out.append(
        "Every service, RPC, message and field of the contract (`protos/`, buf module root), with the comments "
        "written in the `.proto` files. Each RPC has a grpcurl example (the servers serve reflection, so grpcurl "
        "needs no `.proto` files; it is in `.venv/bin`), an example with the Python SDK (`clients.sdk`, async) and "
        "the status codes it can answer. A refused unary call carries `google.rpc.Status` details: an `ErrorInfo` "
        "whose `reason` is the stable code below, a `BadRequest` field violation for a bad field, and our "
        "[`ErrorDetail`](#nautiluscommonv1errordetail) (kind, code, message, details); the SDK raises "
        "`MeshRpcError` with `.code` and `.detail`. Every call can also fail with `UNAVAILABLE` (server "
        "unreachable) or `DEADLINE_EXCEEDED`.\n\n"
        "The SDK examples assume `from clients.sdk import OpsClient, OpsAdminClient, EngineClient` and "
        "`from nautilus_mesh.api.common.v1 import common_pb2`, `from nautilus_mesh.api.ops.v1 import admin_pb2, "
        "ops_pb2`, and run inside an `async def`.\n\n"
    )
    out.append("## Services\n\n")
    for f in contract.files:
        for s in f.service:
            full = f"{f.package}.{s.name}"
            out.append(f"- [`{full}`](#{_anchor(full)}) ({len(s.method)} RPCs)\n")
    out.append(
        '\nEvery server also serves `grpc.health.v1.Health` (`Check`, `Watch`; the service name `""` is '
        "the whole server, each venue is `nautilus.engine.v1.venue.<name>`) and server reflection.\n\n"
    )
    for f in contract.files:
        comments = _comments(f)
        for si, s in enumerate(f.service):
            full = f"{f.package}.{s.name}"
            address, header = SERVICE_ACCESS[full]
            out.append(f"### {full}\n\n")
            out.append(f"{comments.get((6, si), '')}\n\n")
            out.append(f"Demo address `{address}`; metadata: {f'`{header}`' if header else 'none (public)'}.\n\n")
            for mi, m in enumerate(s.method):
                rpc = f"{full}.{m.name}"
                example = EXAMPLES[rpc]
                kind = (
                    "bidirectional stream"
                    if m.client_streaming and m.server_streaming
                    else "server stream"
                    if m.server_streaming
                    else "client stream"
                    if m.client_streaming
                    else "unary"
                )
                out.append(f"#### {m.name}\n\n")
                out.append(
                    f"`{m.name}({'stream ' if m.client_streaming else ''}{m.input_type.lstrip('.').rsplit('.', 1)[-1]})"
                    f" returns ({'stream ' if m.server_streaming else ''}"
                    f"{m.output_type.lstrip('.').rsplit('.', 1)[-1]})`, {kind}. "
                    f"Request {_link(m.input_type)}, response {_link(m.output_type)}.\n\n"
                )
                out.append(f"{comments.get((6, si, 2, mi), '')}\n\n")
                if example.note:
                    out.append(f"{example.note}\n\n")
                out.append("```bash\n" + _grpcurl(full, m.name, example.request, m.client_streaming) + "\n```\n\n")
                if example.sdk is not None:
                    out.append("```python\n" + _sdk(full, example) + "\n```\n\n")
                out.append("| status | codes (`ErrorInfo.reason`) | when |\n| --- | --- | --- |\n")
                for status, codes, when in [*(AUTH_ERRORS if header else []), MALFORMED, *example.errors]:
                    coded = ", ".join(f"`{c.strip()}`" for c in codes.split(","))
                    out.append(f"| `{status}` | {coded} | {_cell(when)} |\n")
                out.append("\n")
    out.append("## Messages and enums\n\n")
    for f in contract.files:
        comments = _comments(f)
        out.append(f"### Package `{f.package}` (`{f.name}`)\n\n")
        for mi, msg in enumerate(f.message_type):
            full = f"{f.package}.{msg.name}"
            out.append(f"#### {full}\n\n")
            if (4, mi) in comments:
                out.append(f"{comments[(4, mi)]}\n\n")
            if not msg.field:
                out.append("No fields.\n\n")
                continue
            out.append("| field | number | type | description |\n| --- | --- | --- | --- |\n")
            for fi, field in enumerate(msg.field):
                note = comments.get((4, mi, 2, fi), "")
                if field.HasField("oneof_index"):
                    note = f"(oneof `{msg.oneof_decl[field.oneof_index].name}`) {note}".strip()
                out.append(f"| `{field.name}` | {field.number} | {contract.field_type(field)} | {_cell(note)} |\n")
            out.append("\n")
        for ei, enum in enumerate(f.enum_type):
            full = f"{f.package}.{enum.name}"
            out.append(f"#### {full}\n\n")
            if (5, ei) in comments:
                out.append(f"{comments[(5, ei)]}\n\n")
            out.append("| value | number | description |\n| --- | --- | --- |\n")
            for vi, value in enumerate(enum.value):
                out.append(f"| `{value.name}` | {value.number} | {_cell(comments.get((5, ei, 2, vi), ''))} |\n")
            out.append("\n")
    return "".join(out).rstrip("\n") + "\n"
