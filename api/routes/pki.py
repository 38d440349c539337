"""CA certificate, CRL and OCSP over HTTP (SPEC §7)."""

from __future__ import annotations

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
