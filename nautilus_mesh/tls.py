"""TLS for the servers and mutual TLS for the ops -> engine link, configured by certificate paths.

Plaintext stays the default (loopback demo); a server started without TLS says so in its start line.
With ``client_ca_file`` set a server requires a client certificate signed by that CA (mutual TLS): the
engine uses it to accept order entry only from ops' certificate, on top of ``x-engine-token``.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pydantic

from nautilus_mesh.config import StrictModel
from nautilus_mesh.errors import ConfigError


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read ({exc.strerror})", code="TLS_FILE_UNREADABLE") from None
    if not data.strip():
        raise ConfigError(f"{what} {path} is empty", code="TLS_FILE_UNREADABLE")
    return data


class ServerTls(StrictModel):
    """A server's certificate, and the CA its clients must present certificates from (mutual TLS)."""

    cert_file: Path
    """PEM certificate chain of this server (its subject alternative names must cover the address clients dial)."""
    key_file: Path = pydantic.Field(repr=False)
    """PEM private key of ``cert_file``."""
    client_ca_file: Path | None = None
    """PEM CA bundle; when set, every client must present a certificate it signed (mutual TLS)."""

    def credentials(self) -> grpc.ServerCredentials:
        """gRPC server credentials (the files are read now: a bad path is a ConfigError at start)."""
        chain = _read(self.cert_file, "TLS certificate")
        key = _read(self.key_file, "TLS key")
        if self.client_ca_file is None:
            return grpc.ssl_server_credentials([(key, chain)])
        return grpc.ssl_server_credentials(
            [(key, chain)], root_certificates=_read(self.client_ca_file, "TLS client CA"), require_client_auth=True
        )

    @property
    def mode(self) -> str:
        return "mutual TLS" if self.client_ca_file is not None else "TLS"


class ClientTls(StrictModel):
    """How a client (ops dialling the engine) checks the server and, for mutual TLS, proves who it is."""

    ca_file: Path
    """PEM CA bundle the server's certificate must chain to."""
    cert_file: Path | None = None
    """PEM certificate of this client (mutual TLS); needs ``key_file``."""
    key_file: Path | None = pydantic.Field(None, repr=False)
    """PEM private key of ``cert_file``."""
    server_name: str = ""
    """Name to check the server's certificate against, when it differs from the dialled host."""

    @pydantic.model_validator(mode="after")
    def _pair(self) -> ClientTls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self

    def credentials(self) -> grpc.ChannelCredentials:
        key = None if self.key_file is None else _read(self.key_file, "TLS key")
        chain = None if self.cert_file is None else _read(self.cert_file, "TLS certificate")
        return grpc.ssl_channel_credentials(_read(self.ca_file, "TLS CA"), key, chain)

    def options(self) -> list[tuple[str, str]]:
        """Channel options: the server name override, when set."""
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def open_channel(
    address: str, tls: ClientTls | None, options: list[tuple[str, int]] | list[tuple[str, str | int]]
) -> grpc.aio.Channel:
    """A grpc.aio channel to ``address``: TLS when ``tls`` is given, else plaintext."""
    if tls is None:
        return grpc.aio.insecure_channel(address, options=options)
    return grpc.aio.secure_channel(address, tls.credentials(), options=[*options, *tls.options()])
