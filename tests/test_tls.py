"""Server TLS for ops and the engine, mutual TLS ops -> engine, from certificate paths (throwaway CA)."""

from __future__ import annotations

import datetime
import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from engine_server.server import EngineServer
from nautilus_mesh.api.engine.v1 import engine_pb2, engine_pb2_grpc
from nautilus_mesh.api.ops.v1 import ops_pb2, ops_pb2_grpc
from nautilus_mesh.tls import ClientTls, ServerTls
from tests.conftest import ENGINE_TOKEN, MOMENTUM_TOKEN, engine_config, running_mesh


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path
    rogue_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


def _issue(
    ca_key: ec.EllipticCurvePrivateKey, issuer: x509.Name, cn: str, *, server: bool, ca: bool = False
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer if not ca else _name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(key if ca else ca_key, hashes.SHA256()), key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca_cert, ca_key = _issue(
        ec.generate_private_key(ec.SECP256R1()), _name("x"), "nautilus test CA", server=False, ca=True
    )
    rogue_ca, rogue_ca_key = _issue(
        ec.generate_private_key(ec.SECP256R1()), _name("x"), "rogue CA", server=False, ca=True
    )
    server, server_key = _issue(ca_key, ca_cert.subject, "engine", server=True)
    client, client_key = _issue(ca_key, ca_cert.subject, "ops", server=False)
    rogue, rogue_key = _issue(rogue_ca_key, rogue_ca.subject, "ops", server=False)

    def pem(name: str, cert: x509.Certificate) -> Path:
        path = root / name
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    return Pki(
        ca=pem("ca.pem", ca_cert),
        server_cert=pem("server.pem", server),
        server_key=_write_key(root / "server.key", server_key),
        client_cert=pem("client.pem", client),
        client_key=_write_key(root / "client.key", client_key),
        rogue_cert=pem("rogue.pem", rogue),
        rogue_key=_write_key(root / "rogue.key", rogue_key),
    )


async def test_mesh_over_mutual_tls_serves_signals_and_refuses_clients_without_a_good_certificate(
    tmp_path: Path, pki: Pki
) -> None:
    server_tls = ServerTls(cert_file=pki.server_cert, key_file=pki.server_key, client_ca_file=pki.ca)
    async with running_mesh(
        tmp_path,
        engine={"tls": server_tls},
        ops={
            "tls": ServerTls(cert_file=pki.server_cert, key_file=pki.server_key),
            "engine_tls": ClientTls(ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key),
        },
    ) as mesh:
        ca = pki.ca.read_bytes()
        async with grpc.aio.secure_channel(mesh.ops_address, grpc.ssl_channel_credentials(ca)) as channel:
            signal = ops_pb2.Signal(signal_id="tls-1", model_id="momentum_v1", instrument="BTC-USD", target=0.05)
            response = await ops_pb2_grpc.OpsServiceStub(channel).SubmitSignal(
                ops_pb2.SubmitSignalRequest(signal=signal), metadata=(("x-strategy-token", MOMENTUM_TOKEN),)
            )
        assert response.decision.status == ops_pb2.DECISION_STATUS_ACCEPTED

        meta = (("x-engine-token", ENGINE_TOKEN),)
        request = engine_pb2.ListVenuesRequest()
        # Plaintext, TLS without a client certificate, and a certificate from another CA: all refused.
        async with grpc.aio.insecure_channel(mesh.engine_address) as plain:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await engine_pb2_grpc.EngineServiceStub(plain).ListVenues(request, metadata=meta, timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        for key, chain in ((None, None), (pki.rogue_key.read_bytes(), pki.rogue_cert.read_bytes())):
            credentials = grpc.ssl_channel_credentials(ca, key, chain)
            async with grpc.aio.secure_channel(mesh.engine_address, credentials) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await engine_pb2_grpc.EngineServiceStub(channel).ListVenues(request, metadata=meta, timeout=5)
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        credentials = grpc.ssl_channel_credentials(ca, pki.client_key.read_bytes(), pki.client_cert.read_bytes())
        async with grpc.aio.secure_channel(mesh.engine_address, credentials) as channel:
            venues = await engine_pb2_grpc.EngineServiceStub(channel).ListVenues(request, metadata=meta, timeout=5)
        assert {v.name for v in venues.venues} >= {"sim"}


async def test_server_without_tls_says_it_serves_plaintext(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="nautilus_mesh.serving")
    server = EngineServer(engine_config(tmp_path))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop(grace=0.1)
    assert any("over plaintext" in r.getMessage() for r in caplog.records)


def test_tls_when_a_file_is_missing_is_a_config_error(tmp_path: Path) -> None:
    from nautilus_mesh.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot be read"):
        ServerTls(cert_file=tmp_path / "none.pem", key_file=tmp_path / "none.key").credentials()
