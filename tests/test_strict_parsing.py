"""Strict parsing at the engine: plain ASCII decimals only, known enum values, bounded strings, no id reuse."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from engine_server.server import EngineServer
from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.engine.v1 import engine_pb2
from nautilus_mesh.decimals import parse_decimal
from nautilus_mesh.errors import ValidationError
from tests.conftest import engine_config, flat_instruments
from tests.test_engine_service import exchange, new_order


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[EngineServer]:
    venues = [{"name": "sim", "adapter": "sim", "seed": 3, "instruments": flat_instruments()}]
    server = EngineServer(engine_config(tmp_path, venues=venues))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=0.1)


@pytest.mark.parametrize(
    "text",
    [
        " 1 ",
        "1 ",
        "\t1",
        "\uff11",
        "1_000",
        "NaN",
        "nan",
        "Infinity",
        "-inf",
        "sNaN",
        "1E+999999",
        "1e100",
        "1e-100",
        "0x10",
        "1,5",
        "+",
        ".",
        "1.2.3",
        "\u0661",
        "1" * 41,
        "1" * 19,
        "0." + "0" * 18 + "1",
    ],
)
def test_parse_decimal_when_not_plain_ascii_refuses_with_the_fields_code(text: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_decimal(text, "quantity", code="INVALID_QUANTITY")
    assert (caught.value.code, caught.value.field) == ("INVALID_QUANTITY", "quantity")
    assert len(caught.value.message) < 120


@pytest.mark.parametrize(
    ("text", "value"),
    [("1", "1"), ("-0.5", "-0.5"), ("+2", "2"), (".25", "0.25"), ("2.5e-3", "0.0025"), ("1E2", "100")],
)
def test_parse_decimal_when_plain_accepts(text: str, value: str) -> None:
    assert parse_decimal(text, "price") == Decimal(value)


def command(coid: str, **fields: object) -> engine_pb2.OrderCommand:
    cmd = new_order(coid, "1")
    for name, value in fields.items():
        setattr(cmd.new_order, name, value)
    return cmd


@pytest.mark.parametrize(
    ("fields", "code", "field"),
    [
        ({"quantity": " 1 "}, "INVALID_QUANTITY", "quantity"),
        ({"quantity": "\uff11"}, "INVALID_QUANTITY", "quantity"),
        ({"quantity": "1E+999999"}, "INVALID_QUANTITY", "quantity"),
        ({"quantity": "NaN"}, "INVALID_QUANTITY", "quantity"),
        (
            {"order_type": common_pb2.ORDER_TYPE_LIMIT, "limit_price": "Infinity"},
            "INVALID_PRICE",
            "limit_price",
        ),
        ({"order_type": common_pb2.ORDER_TYPE_LIMIT}, "INVALID_PRICE", "limit_price"),  # a LIMIT order needs one
        ({"limit_price": "100"}, "INVALID_PRICE", "limit_price"),  # a MARKET order takes none
        ({"time_in_force": 99}, "INVALID_TIME_IN_FORCE", "time_in_force"),
        ({"side": 7}, "INVALID_SIDE", "side"),
        ({"model_id": "m" * 100_000}, "FIELD_TOO_LONG", "model_id"),
        ({"account": "a" * 100_000}, "FIELD_TOO_LONG", "account"),
        ({"instrument": "BTC-USD\n"}, "INVALID_CHARACTERS", "instrument"),
    ],
)
async def test_engine_when_a_field_is_loose_rejects_in_band_and_executes_nothing(
    engine: EngineServer, fields: dict[str, object], code: str, field: str
) -> None:
    reports = await asyncio.wait_for(exchange(engine, [command("bad", **fields)]), 15)

    assert [(r.exec_type, r.error.code, r.error.field, r.seq) for r in reports] == [
        (engine_pb2.EXEC_TYPE_REJECTED, code, field, 0)
    ]
    assert engine.core.manager.get_order("bad") is None
    assert len(reports[0].error.message) < 200


async def test_engine_when_client_order_id_is_huge_stores_nothing_and_echoes_it_clipped(engine: EngineServer) -> None:
    coid = "x" * 100_000
    reports = await asyncio.wait_for(exchange(engine, [new_order(coid, "1")]), 15)

    assert [r.error.code for r in reports] == ["FIELD_TOO_LONG"]
    assert len(reports[0].client_order_id) < 200 and reports[0].client_order_id.endswith("...[+99872 chars]")
    assert engine.core.manager.get_order(coid) is None


@pytest.mark.parametrize(
    "changed", [{"quantity": "2"}, {"side": common_pb2.SIDE_SELL}, {"instrument": "ETH-USD"}, {"model_id": "other"}]
)
async def test_engine_when_client_order_id_is_reused_for_another_order_rejects_it_in_band(
    engine: EngineServer, changed: dict[str, object]
) -> None:
    first = await asyncio.wait_for(exchange(engine, [command("reused")]), 15)
    assert any(r.exec_type == engine_pb2.EXEC_TYPE_FILL for r in first)
    before = engine.core.manager.last_seq

    second = await asyncio.wait_for(exchange(engine, [command("reused", **changed)]), 15)

    assert [(r.exec_type, r.error.code, r.seq) for r in second] == [
        (engine_pb2.EXEC_TYPE_REJECTED, "CLIENT_ORDER_ID_REUSED", 0)
    ]
    assert engine.core.manager.last_seq == before
    assert engine.core.manager.get_order("reused").request.quantity == Decimal(1)  # type: ignore[union-attr]
