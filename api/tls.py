"""HTTPS for `keyward serve`: uvicorn's HTTP protocol, passing the TLS client certificate to the app.

uvicorn does not put the client certificate in the ASGI scope. This protocol reads it from the TLS
connection once (`ssl_object.getpeercert(True)`, after the handshake) and adds it to every request's scope
as the ASGI TLS extension (`scope["extensions"]["tls"]["client_cert_chain"]`, PEM strings). It also
records the connection's own peer address (`scope["extensions"]["keyward.peer"]`) before uvicorn's proxy
headers middleware may rewrite `client`, so trusted-proxy checks see who actually connected.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from uvicorn.protocols.http.h11_impl import H11Protocol

try:  # httptools (C) parses HTTP at a fraction of h11's (pure Python) cost; h11 where it is missing
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools is a declared dependency
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

TLS_EXTENSION = "tls"
PEER_EXTENSION = "keyward.peer"


def _client_certificate_pem(ssl_object: ssl.SSLObject | None) -> str | None:
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    try:
        return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM).decode("ascii")
    except ValueError:
        return None


def _tls_extension(ssl_object: ssl.SSLObject) -> dict[str, Any]:
    pem = _client_certificate_pem(ssl_object)
    cipher = ssl_object.cipher()
    return {
        "server_cert": None,
        "client_cert_chain": [pem] if pem else [],
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": ssl_object.version(),
        "cipher_suite": cipher[0] if cipher else None,
    }


def _with_connection_extensions(protocol: Any, transport: asyncio.Transport) -> None:
    """After connection_made: wrap the protocol's app so each request's scope gets this connection's
    peer address and TLS client certificate."""
    ssl_object = transport.get_extra_info("ssl_object")
    extensions: dict[str, Any] = {PEER_EXTENSION: list(protocol.client) if protocol.client else None}
    if ssl_object is not None:
        extensions[TLS_EXTENSION] = _tls_extension(ssl_object)
    inner = protocol.app

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") in {"http", "websocket"}:
            scope["extensions"] = {**(scope.get("extensions") or {}), **extensions}
        await inner(scope, receive, send)

    protocol.app = app


class KeywardH11Protocol(H11Protocol):
    """H11Protocol whose requests carry the connection's TLS client certificate and real peer address."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        _with_connection_extensions(self, transport)


KeywardHttpToolsProtocol: type | None = None
if HttpToolsProtocol is not None:

    class _KeywardHttpToolsProtocol(HttpToolsProtocol):
        """The same as KeywardH11Protocol, on httptools."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            _with_connection_extensions(self, transport)

    KeywardHttpToolsProtocol = _KeywardHttpToolsProtocol


def client_ssl_mode(client_ca: str | None) -> int:
    """With a client CA, ask for a certificate but let clients without one in (Basic auth, GraphQL)."""
    return ssl.CERT_OPTIONAL if client_ca else ssl.CERT_NONE


def serve_options(args: Any) -> dict[str, Any]:
    """uvicorn options for `keyward serve`: this protocol always (on httptools, else h11), HTTPS with
    --tls-cert/--tls-key, client certificates with --tls-client-ca, and X-Forwarded-* believed only from
    KEYWARD_TRUSTED_PROXIES."""
    from pathlib import Path

    from core import runtime
    from core.errors import ConfigurationError

    cert, key, client_ca = (getattr(args, name, None) for name in ("tls_cert", "tls_key", "tls_client_ca"))
    if (key or client_ca) and not cert:
        raise ConfigurationError("--tls-key and --tls-client-ca need --tls-cert")
    for flag, path in (("--tls-cert", cert), ("--tls-key", key), ("--tls-client-ca", client_ca)):
        if path and not Path(path).is_file():
            raise ConfigurationError(f"{flag} {path}: no such file")
    options: dict[str, Any] = {"http": KeywardHttpToolsProtocol or KeywardH11Protocol}
    if cert:
        options.update(
            ssl_certfile=cert,
            ssl_keyfile=key,
            ssl_cert_reqs=client_ssl_mode(client_ca),
            ssl_ca_certs=client_ca,
        )
    proxies = runtime.settings().trusted_proxies
    if proxies:
        options["forwarded_allow_ips"] = ",".join(str(network) for network in proxies)
    else:
        # uvicorn believes X-Forwarded-* from loopback by default: with no proxy configured, from nobody.
        options["proxy_headers"] = False
    return options
