"""Every example of docs/api.md runs against a real mesh on loopback: the grpcurl command (the real binary) and the
Python SDK snippet of each RPC either succeed or fail with a status the RPC's error table lists.

The examples run in page order, as a reader would paste them one after another, on one mesh with the demo registry;
the page's demo addresses and tokens are replaced by the test mesh's.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ADMIN_TOKEN, ENGINE_TOKEN, MOMENTUM_TOKEN, ROOT, Mesh

PAGE = ROOT / "docs" / "api.md"
GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl")
pytestmark = pytest.mark.skipif(GRPCURL is None, reason="grpcurl is installed by `make test` (dev dependency)")


@dataclass(frozen=True)
class RpcExample:
    rpc: str
    streaming: bool
    grpcurl: str
    python: str
    statuses: frozenset[str]


def examples() -> list[RpcExample]:
    """Each RPC section of the page, in page order."""
    services = PAGE.read_text().split("\n## Messages and enums")[0]
    out = []
    for section in re.split(r"^#### ", services, flags=re.MULTILINE)[1:]:
        name = section.split("\n", 1)[0].strip()
        bash = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
        python = re.search(r"```python\n(.*?)```", section, re.DOTALL)
        statuses = frozenset(re.findall(r"^\| `([A-Z_]+)` \|", section, re.MULTILINE))
        assert bash is not None and statuses, f"{name}: no grpcurl example or no error table"
        kind = re.search(r"`, (unary|server stream|client stream|bidirectional stream)\. ", section)
        assert kind is not None, f"{name}: no call kind"
        streaming = kind.group(1) != "unary"
        out.append(RpcExample(name, streaming, bash.group(1), python.group(1) if python else "", statuses))
    return out


def localise(text: str, mesh: Mesh) -> str:
    """The page's demo addresses and tokens, replaced by the test mesh's."""
    for demo, real in (
        ("127.0.0.1:50051", mesh.ops_address),
        ("127.0.0.1:50052", mesh.engine_address),
        ("demo-momentum-token", MOMENTUM_TOKEN),
        ("demo-admin-token", ADMIN_TOKEN),
        ("demo-engine-token", ENGINE_TOKEN),
    ):
        text = text.replace(demo, real)
    return text


def _status_name(camel: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", camel).upper()


def test_page_when_read_has_an_example_and_error_table_per_rpc() -> None:
    rpcs = sum(p.read_text().count("\n  rpc ") for p in (ROOT / "protos").rglob("*.proto"))
    assert len(examples()) == rpcs == 36


@pytest.mark.timeout(120)
async def test_grpcurl_examples_when_run_in_page_order_succeed_or_answer_a_listed_status(mesh: Mesh) -> None:
    assert GRPCURL is not None
    for example in examples():
        words = shlex.split(localise(example.grpcurl.replace("\\\n", " "), mesh))
        assert words[0] == "grpcurl"
        extra = ["-max-time", "1"] if example.streaming else []
        proc = await asyncio.create_subprocess_exec(
            GRPCURL, *extra, *words[1:], stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(), 20)
        if proc.returncode == 0:
            json.loads(out.decode() or "{}") if not example.streaming else None
            continue
        code = re.search(r"Code: (\w+)", err.decode())
        assert code is not None, f"{example.rpc}: {err.decode()}"
        status = _status_name(code.group(1))
        if example.streaming and status == "DEADLINE_EXCEEDED":
            continue  # a stream that does not end by itself, cut by -max-time
        assert status in example.statuses, f"{example.rpc} answered {status}, not in its table: {err.decode()}"


SDK_RUNNER = """
import asyncio, os, sys
from clients.sdk import EngineClient, MeshRpcError, OpsAdminClient, OpsClient
from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.ops.v1 import admin_pb2, ops_pb2

failures = []
for name, allowed, code in eval(sys.stdin.read()):
    namespace = dict(globals())
    exec("async def main():\\n" + code, namespace)
    try:
        asyncio.run(asyncio.wait_for(namespace["main"](), 1.5))
    except MeshRpcError as exc:
        if exc.code.name not in allowed:
            failures.append(f"{name}: {exc}")
    except TimeoutError:
        pass  # a stream that does not end by itself
print("\\n".join(failures) or "ok")
sys.exit(1 if failures else 0)
"""


@pytest.mark.timeout(120)
async def test_sdk_examples_when_run_in_page_order_succeed_or_raise_a_listed_status(mesh: Mesh) -> None:
    cases = [
        (e.rpc, sorted(e.statuses), textwrap.indent(localise(e.python, mesh), "    ")) for e in examples() if e.python
    ]
    assert len(cases) >= 30
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SDK_RUNNER,
        cwd=ROOT,
        env=dict(os.environ),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(repr(cases).encode()), 100)
    assert proc.returncode == 0, out.decode()
