"""A gRPC health probe with an exit code, for container health checks and scripts.

    python -m nautilus_mesh.healthcheck 127.0.0.1:50051                      # overall
    python -m nautilus_mesh.healthcheck 127.0.0.1:50051 --service nautilus.ops.v1.engine_link

Exit codes: 0 SERVING, 1 NOT_SERVING (or unknown service), 2 not reachable within the deadline.
Needs no token (``grpc.health.v1`` is open) and imports no server code, so it starts fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING


def probe(address: str, service: str = "", deadline: float = 2.0) -> int:
    """Check ``service`` at ``address``; returns the exit code (0 SERVING, 1 not serving, 2 unreachable)."""
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=deadline
            )
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            if code == grpc.StatusCode.NOT_FOUND:
                print(f"{address}: unknown service {service!r}", file=sys.stderr)
                return 1
            print(f"{address}: not reachable ({code.name if code else 'error'})", file=sys.stderr)
            return 2
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(f"{address} {service or '(overall)'}: {name}")
    return 0 if response.status == SERVING else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nautilus_mesh.healthcheck", description=__doc__.splitlines()[0])
    parser.add_argument("address", nargs="?", default="127.0.0.1:50051", help="host:port (default ops)")
    parser.add_argument("--service", default="", help="health service name ('' = overall)")
    parser.add_argument("--deadline", type=float, default=2.0, help="seconds to wait for the answer")
    args = parser.parse_args(argv)
    return probe(args.address, args.service, args.deadline)


if __name__ == "__main__":
    sys.exit(main())
