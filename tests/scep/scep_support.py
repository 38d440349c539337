"""Shared setup for the SCEP tests: an RSA PKI whose policy accepts what `scepclient` sends, an application
with SCEP enabled on it through GraphQL, and runners for the real clients (Debian's `scepclient`,
certmonger's `scep-submit`)."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import GraphQL, OrgAdmin, tool_or_skip
from cryptography import x509
from factories import Pki, make_application, make_pki

from models import Application, Organization
from pki.key import KeyAlgorithm

# scepclient's subject: CN plus O=scep-client, OU=MDM, C=US by default.
SCEP_RULES: dict[str, Any] = {
    "subject": [
        {"type": "CN", "allowed": ["**.example.com", "*.example.com", "example.com"]},
        {"type": "O"},
        {"type": "OU"},
        {"type": "C"},
    ],
    "sans": [{"type": "DNS", "allowed": ["**.example.com", "*.example.com", "example.com"]}],
    "maxValidity": "397d",
}
STATIC_CHALLENGE = "static-challenge-0123"
SCEPCLIENT_TIMEOUT = 120

ENABLE_SCEP = """
mutation($input: EnableScepInput!) {
  enableScep(input: $input) {
    id
    scep { enabled url challengeMode challengeSet raCertificatePem includeCa allowRenewal }
  }
}
"""
GENERATE_CHALLENGE = """
mutation($a: ID!, $p: ID!) {
  generateScepChallenge(applicationId: $a, profileId: $p) { id challenge expiresAt }
}
"""
INVENTORY = """
query($id: ID!) {
  application(id: $id) {
    certificates(first: 50) {
      edges { node { id serialNumber status enrollmentMethod commonName sans { type value } } }
    }
  }
}
"""


@dataclass
class ScepScene:
    organization: Organization
    pki: Pki
    application: Application
    url: str
    ra_certificate_pem: str
    token: str

    @property
    def variables(self) -> dict[str, str]:
        return {"a": str(self.application.id), "p": str(self.pki.profile.id)}


async def scep_scene(
    gql: GraphQL,
    org_admin: OrgAdmin,
    *,
    mode: str = "STATIC",
    key_algorithm: KeyAlgorithm = KeyAlgorithm.RSA_2048,
    **settings: Any,
) -> ScepScene:
    org = await Organization.get(id=org_admin.organization_id)
    pki = await make_pki(org, key_algorithm=key_algorithm, rules=SCEP_RULES, default_key_algorithm="RSA_2048")
    application = await make_application(org, profiles=[pki.profile])
    scep_input: dict[str, Any] = {
        "applicationId": str(application.id),
        "profileId": str(pki.profile.id),
        "challengeMode": mode,
        **settings,
    }
    if mode == "STATIC":
        scep_input.setdefault("staticChallenge", STATIC_CHALLENGE)
    data = await gql(ENABLE_SCEP, {"input": scep_input}, token=org_admin.token)
    scep = data["enableScep"]["scep"]
    assert scep["enabled"] and scep["raCertificatePem"]
    return ScepScene(org, pki, application, scep["url"], scep["raCertificatePem"], org_admin.token)


async def new_challenge(gql: GraphQL, scene: ScepScene, token: str | None = None) -> str:
    data = await gql(GENERATE_CHALLENGE, scene.variables, token=token or scene.token)
    return str(data["generateScepChallenge"]["challenge"])


async def inventory(gql: GraphQL, scene: ScepScene) -> dict[str, dict[str, Any]]:
    data = await gql(INVENTORY, {"id": str(scene.application.id)}, token=scene.token)
    return {
        edge["node"]["serialNumber"]: edge["node"] for edge in data["application"]["certificates"]["edges"]
    }


@dataclass
class Run:
    returncode: int
    output: str


async def run(*argv: str, env: dict[str, str] | None = None, limit: float = SCEPCLIENT_TIMEOUT) -> Run:
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    try:
        async with asyncio.timeout(limit):
            output, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return Run(process.returncode or 0, output.decode(errors="replace"))


async def scepclient(
    workdir: Path, url: str, *, challenge: str | None, cn: str, extra: tuple[str, ...] = ()
) -> Run:
    """One `scepclient` run in `workdir`: enroll without a client.pem, renew (RenewalReq) with one."""
    binary = tool_or_skip("scepclient")
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    argv = [
        binary,
        "-server-url",
        url,
        "-private-key",
        str(workdir / "key.pem"),
        "-certificate",
        str(workdir / "client.pem"),
        "-cn",
        cn,
        "-keySize",
        "2048",
        *extra,
    ]
    if challenge is not None:
        argv += ["-challenge", challenge]
    return await run(*argv)


async def refusals() -> list[str]:
    """Why SCEP requests were refused (the audit log's reasons), for assertion messages."""
    from models import AuditEvent

    rows = await AuditEvent.filter(action="scep.enroll")
    return [str((row.details or {}).get("reason")) for row in rows]


def load_pem_certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


SCEP_SUBMIT = "/usr/lib/certmonger/scep-submit"


def scep_submit_or_skip() -> str:
    """certmonger's SCEP helper (not on PATH); skips locally when missing, fails under CI."""
    if Path(SCEP_SUBMIT).exists():
        return SCEP_SUBMIT
    return tool_or_skip("scep-submit")


class CaptureProxy:
    """An HTTP server on loopback that passes GetCACaps/GetCACert through to Keyward and keeps the first
    PKIOperation message instead of forwarding it (answering 503), so a real client's PKCSReq can be handed
    to another client (certmonger's scep-submit, which sends but does not build requests standalone)."""

    def __init__(self, target_url: str) -> None:
        import http.server
        import threading
        import urllib.parse

        import httpx

        self.target_url = target_url
        self.messages: list[bytes] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                query = urllib.parse.urlparse(self.path).query
                params = urllib.parse.parse_qs(query)
                if params.get("operation") == ["PKIOperation"]:
                    import base64

                    proxy.messages.append(base64.b64decode(params["message"][0]))
                    self._answer(503, b"captured", "text/plain")
                    return
                response = httpx.get(f"{proxy.target_url}?{query}", timeout=30)
                self._answer(response.status_code, response.content, response.headers["content-type"])

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", "0"))
                proxy.messages.append(self.rfile.read(length))
                self._answer(503, b"captured", "text/plain")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/pkiclient.exe"

    def __enter__(self) -> CaptureProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
