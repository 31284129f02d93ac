"""The SDK's docstring examples run as doctests against a real mesh on loopback, and every public name has one.

The SDK is ``clients.sdk``, a facade over one module per concept; the examples of every module it re-exports from
run. The examples call ``asyncio.run`` (a reader's script does), so they run in a child interpreter whose event loop is
its own; the mesh serves from this test's loop. The child reads the mesh's addresses and tokens from its environment
and passes them to the examples as ``ops_address``, ``engine_address`` and the tokens.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import sys

import pytest

import clients
import clients.sdk as sdk
from tests.conftest import ADMIN_TOKEN, ENGINE_TOKEN, MOMENTUM_TOKEN, ROOT, Mesh

SDK_SOURCE = (ROOT / "clients" / "sdk.py").read_text()

RUNNER = """
import asyncio, doctest, importlib, os, sys
import grpc
import clients, clients.sdk
from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.engine.v1 import engine_pb2
from nautilus_mesh.api.ops.v1 import admin_pb2, ops_pb2
globs = {name: os.environ["DOCTEST_" + name.upper()]
         for name in ("ops_address", "engine_address", "strategy_token", "admin_token", "engine_token")}
globs.update({name: getattr(clients.sdk, name) for name in clients.sdk.__all__})
globs.update(asyncio=asyncio, grpc=grpc, common_pb2=common_pb2, engine_pb2=engine_pb2, admin_pb2=admin_pb2,
             ops_pb2=ops_pb2)
modules = [importlib.import_module(name) for name in sys.argv[1:]]
flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
failed = attempted = 0
for module in modules:
    result = doctest.testmod(module, extraglobs=globs, optionflags=flags)
    failed, attempted = failed + result.failed, attempted + result.attempted
print(f"doctests: {attempted} examples in {len(modules)} modules, {failed} failed")
sys.exit(1 if failed or not attempted else 0)
"""


SDK_MODULES = (
    "clients",
    "clients.sdk",
    *sorted(f"clients.{m}" for m in re.findall(r"^from clients\.(\w+) import", SDK_SOURCE, re.M)),
)
"""The facade and every module it re-exports from: their examples run."""


def _public_members() -> list[tuple[str, object]]:
    members: list[tuple[str, object]] = []
    for name in sdk.__all__:
        obj = getattr(sdk, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue  # constants: documented by the docstring under them
        members.append((name, obj))
        if inspect.isclass(obj):
            for attr, value in inspect.getmembers(obj):
                if attr.startswith("_") or not getattr(value, "__module__", "clients.").startswith("clients."):
                    continue
                if inspect.isfunction(value) or isinstance(value, property) or inspect.ismethod(value):
                    members.append((f"{name}.{attr}", value))
    return members


@pytest.mark.timeout(120)
async def test_sdk_examples_when_run_against_a_real_mesh_all_pass(mesh: Mesh) -> None:
    env = {
        **os.environ,
        "DOCTEST_OPS_ADDRESS": mesh.ops_address,
        "DOCTEST_ENGINE_ADDRESS": mesh.engine_address,
        "DOCTEST_STRATEGY_TOKEN": MOMENTUM_TOKEN,
        "DOCTEST_ADMIN_TOKEN": ADMIN_TOKEN,
        "DOCTEST_ENGINE_TOKEN": ENGINE_TOKEN,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        RUNNER,
        *SDK_MODULES,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 100)
    text = out.decode()
    assert proc.returncode == 0, text
    counted = re.search(r"doctests: (\d+) examples in (\d+) modules, 0 failed", text)
    assert counted is not None and int(counted.group(1)) >= 90 and int(counted.group(2)) == len(SDK_MODULES), text


@pytest.mark.parametrize(("name", "member"), _public_members(), ids=[n for n, _ in _public_members()])
def test_sdk_public_member_when_documented_has_an_example(name: str, member: object) -> None:
    doc = inspect.getdoc(member) or ""
    assert "Example" in doc and ">>>" in doc, f"{name} has no runnable Example section"


def test_sdk_facade_when_imported_re_exports_the_sdk_surface() -> None:
    assert clients.__all__ == sdk.__all__
    assert all(getattr(clients, name) is getattr(sdk, name) for name in clients.__all__)
