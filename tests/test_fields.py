"""values_of: a record's fields by name, as keyword arguments of another type."""

import doctest
from decimal import Decimal
from types import SimpleNamespace

import pytest

from nautilus_mesh import fields
from nautilus_mesh.fields import values_of


def test_values_of_when_no_conversion_then_the_attributes_as_they_are() -> None:
    source = SimpleNamespace(venue="sim", seq=7, fee="0.5")
    assert values_of(source, ("venue", "seq")) == {"venue": "sim", "seq": 7}


def test_values_of_when_a_conversion_then_each_value_passes_through_it() -> None:
    source = SimpleNamespace(qty="1.50", fee="0")
    assert values_of(source, ("qty", "fee"), Decimal) == {"qty": Decimal("1.50"), "fee": Decimal(0)}


def test_values_of_when_a_name_is_missing_then_attribute_error() -> None:
    with pytest.raises(AttributeError):
        values_of(SimpleNamespace(), ("qty",))


def test_the_module_examples_hold() -> None:
    assert doctest.testmod(fields).failed == 0
