"""``nautilus_mesh.frozen.quick_init``: the same constructor as the dataclass' own, faster, and still frozen."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import pytest

from engine_server.execution_report import Report
from engine_server.order_lifecycle import OrderStatus
from engine_server.venues.base import ExecType, OrderRequest, OrderType, Side, TimeInForce, VenueEvent
from engine_server.venues.sim.book import BookOrder
from nautilus_mesh.frozen import quick_init


@quick_init
@dataclasses.dataclass(frozen=True, slots=True)
class Sample:
    required: str
    number: int = 7
    tags: Mapping[str, str] = dataclasses.field(default_factory=dict)
    _: dataclasses.KW_ONLY
    flag: bool = False
    extra: list[int] = dataclasses.field(default_factory=list)


def dataclass_made(cls: type, *args: Any, **kwargs: Any) -> Any:
    """An instance built by the dataclass' own ``__init__`` (kept as ``__dataclass_init__``)."""
    instance: Any = object.__new__(cls)
    cls.__dict__["__dataclass_init__"](instance, *args, **kwargs)
    return instance


def parameters(init: Any) -> list[tuple[str, Any, bool]]:
    """(name, kind, has a default) of each parameter of ``init``."""
    return [(p.name, p.kind, p.default is not p.empty) for p in inspect.signature(init).parameters.values()]


D = Decimal("1.5")
EVENT = {
    "exec_type": ExecType.FILL,
    "client_order_id": "c-1",
    "venue_order_id": "v-1",
    "symbol": "BTC-USD",
    "side": Side.BUY,
    "last_qty": D,
    "last_price": Decimal("100"),
    "cum_qty": D,
    "leaves_qty": Decimal("0"),
    "avg_price": Decimal("100"),
    "fee": Decimal("0.01"),
    "liquidity": "TAKER",
    "reason_code": "",
    "reason_text": "",
    "ts_ns": 1,
}
CASES: list[tuple[type, dict[str, Any]]] = [
    (Sample, {"required": "x"}),
    (Sample, {"required": "x", "number": 3, "tags": {"a": "b"}, "flag": True, "extra": [1]}),
    (VenueEvent, EVENT),
    (
        Report,
        EVENT
        | {
            "seq": 5,
            "exec_id": "sim-5",
            "venue": "sim",
            "model_id": "m1",
            "account": "main",
            "session_id": "s",
            "order_status": OrderStatus.FILLED,
        },
    ),
    (
        OrderRequest,
        {
            "client_order_id": "c-1",
            "session_id": "s",
            "account": "main",
            "model_id": "m1",
            "symbol": "BTC-USD",
            "side": Side.SELL,
            "order_type": OrderType.LIMIT,
            "time_in_force": TimeInForce.GTC,
            "quantity": D,
            "limit_price": Decimal("99"),
            "trace": {"traceparent": "00-1-2-01"},
        },
    ),
    (
        BookOrder,
        {
            "client_order_id": "c-1",
            "venue_order_id": "v-1",
            "account": "main",
            "side": Side.BUY,
            "order_type": OrderType.MARKET,
            "time_in_force": TimeInForce.IOC,
            "quantity": D,
            "limit_price": None,
        },
    ),
]


@pytest.mark.parametrize(("cls", "kwargs"), CASES, ids=lambda case: getattr(case, "__name__", ""))
def test_quick_init_builds_what_the_dataclass_init_builds(cls: type, kwargs: dict[str, Any]) -> None:
    assert parameters(cls.__dict__["__init__"]) == parameters(cls.__dict__["__dataclass_init__"])
    quick, made = cls(**kwargs), dataclass_made(cls, **kwargs)
    assert quick == made and repr(quick) == repr(made)
    assert [getattr(quick, f.name) for f in dataclasses.fields(cls)] == [
        getattr(made, f.name) for f in dataclasses.fields(cls)
    ]
    positional = [kwargs[f.name] for f in dataclasses.fields(cls) if f.name in kwargs and not f.kw_only]
    keywords = {f.name: kwargs[f.name] for f in dataclasses.fields(cls) if f.name in kwargs and f.kw_only}
    assert cls(*positional, **keywords) == quick


@pytest.mark.parametrize(("cls", "kwargs"), CASES, ids=lambda case: getattr(case, "__name__", ""))
def test_quick_init_keeps_the_instance_frozen(cls: type, kwargs: dict[str, Any]) -> None:
    instance = cls(**kwargs)
    name = dataclasses.fields(cls)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(instance, name, "changed")


def test_quick_init_defaults_and_factories_as_the_dataclass_gives_them() -> None:
    first, second = Sample("a"), Sample("b")
    assert (first.number, first.tags, first.flag, first.extra) == (7, {}, False, [])
    assert first.extra is not second.extra  # a fresh list each time, as default_factory promises
    with pytest.raises(TypeError):
        Sample()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Sample("a", 1, {}, True)  # type: ignore[call-arg]  # flag is keyword-only
    with pytest.raises(TypeError):
        Sample("a", unknown=1)  # type: ignore[call-arg]


def test_quick_init_refuses_classes_it_would_build_differently() -> None:
    @dataclasses.dataclass(frozen=True)
    class NotSlotted:
        a: int

    @dataclasses.dataclass(slots=True)
    class NotFrozen:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclasses.dataclass(frozen=True, slots=True)
    class Derived:
        a: int
        b: int = dataclasses.field(init=False, default=0)

    for cls in (NotSlotted, NotFrozen, Checked, Derived):
        with pytest.raises(TypeError, match="quick_init"):
            quick_init(cls)
