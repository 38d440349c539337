"""The agent's view of Keyward: a few GraphQL operations over HTTP with a machine identity's token."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import httpx

from agent.config import AgentConfig

_CERTIFICATE_FIELDS = "id serialNumber status notBefore notAfter certificatePem chainPem"

RESOLVE = """
query AgentResolve($name: String!) {
  applications(first: 50, nameContains: $name) {
    edges { node { id name profiles {
      api { enabled }
      profile { id name renewBeforeDays defaultKeyAlgorithm deletedAt }
    } } }
  }
}
"""

FIND = """
query AgentFind($id: ID!, $name: String!, $after: String) {
  application(id: $id) {
    certificates(first: 50, after: $after, filter: {nameContains: $name}) {
      edges { node { id serialNumber status } }
      pageInfo { hasNextPage endCursor }
    }
  }
}
"""

ISSUE = (
    "mutation AgentIssue($input: IssueCertificateInput!) { issueCertificate(input: $input) { "
    f"certificate {{ {_CERTIFICATE_FIELDS} }} }} }}"
)

RENEW = (
    "mutation AgentRenew($input: RenewCertificateInput!) { renewCertificate(input: $input) { "
    f"certificate {{ {_CERTIFICATE_FIELDS} }} }} }}"
)


class AgentError(Exception):
    """A pass failed; the agent logs the message and retries with backoff."""


class ServerError(AgentError):
    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Target:
    application_id: str
    profile_id: str
    renew_before_days: int
    default_key_algorithm: str


@dataclass(frozen=True)
class Issued:
    id: str
    serial_number: str
    not_after: str
    certificate_pem: str
    chain_pem: str


class KeywardClient:
    def __init__(self, config: AgentConfig) -> None:
        self._config = config
        verify: ssl.SSLContext | bool = True
        if config.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(config.ca_file))
        self._http = httpx.Client(
            base_url=config.server,
            timeout=config.request_timeout.total_seconds(),
            verify=verify,
            headers={"User-Agent": "keyward-agent"},
            follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

    def _call(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        token = self._config.read_token()
        try:
            response = self._http.post(
                "/graphql",
                json={"query": query, "variables": variables},
                headers={"Authorization": f"Bearer {token}"},
            )
        except httpx.HTTPError as exc:
            raise AgentError(f"cannot reach {self._config.server}: {type(exc).__name__}: {exc}") from None
        if response.status_code in {401, 403}:
            raise ServerError(
                f"the server refused the token (HTTP {response.status_code}); "
                "check the machine identity's token",
                "UNAUTHENTICATED",
            )
        try:
            body = response.json()
        except ValueError:
            raise AgentError(
                f"{self._config.server}/graphql answered HTTP {response.status_code} without JSON"
            ) from None
        errors = body.get("errors") if isinstance(body, dict) else None
        if errors:
            first = errors[0]
            code = str((first.get("extensions") or {}).get("code", ""))
            message = str(first.get("message", "unknown error"))
            if code == "UNAUTHENTICATED":
                message = f"the server refused the token ({code}): {message}"
            elif code:
                message = f"{message} ({code})"
            raise ServerError(message, code)
        if response.status_code != 200 or not isinstance(body, dict) or body.get("data") is None:
            raise AgentError(f"{self._config.server}/graphql answered HTTP {response.status_code}")
        data: dict[str, Any] = body["data"]
        return data

    def resolve(self) -> Target:
        """application-name and profile-name to ids: the agent's config names them, the API takes ids."""
        app_name, profile_name = self._config.application_name, self._config.profile_name
        data = self._call(RESOLVE, {"name": app_name})
        nodes = [edge["node"] for edge in data["applications"]["edges"] if edge["node"]["name"] == app_name]
        if not nodes:
            raise AgentError(f"application {app_name!r} does not exist or this token may not see it")
        application = nodes[0]
        attached = [item for item in application["profiles"] if item["profile"]["name"] == profile_name]
        if not attached:
            names = ", ".join(sorted(item["profile"]["name"] for item in application["profiles"])) or "none"
            raise AgentError(
                f"profile {profile_name!r} is not attached to application {app_name!r} (attached: {names})"
            )
        item = attached[0]
        if item["profile"]["deletedAt"]:
            raise AgentError(f"profile {profile_name!r} is deleted: it issues no new certificates")
        if not item["api"]["enabled"]:
            raise AgentError(
                f"API enrollment is off for profile {profile_name!r} in application {app_name!r}"
            )
        profile = item["profile"]
        return Target(
            application_id=str(application["id"]),
            profile_id=str(profile["id"]),
            renew_before_days=int(profile["renewBeforeDays"]),
            default_key_algorithm=str(profile["defaultKeyAlgorithm"]),
        )

    def find_by_serial(self, target: Target, name: str, serial: int) -> tuple[str, str] | None:
        """The inventory id and status of the certificate on disk, looked up by a name and its serial.

        Serials compare as numbers: the server pads its hex to whole octets, Python's hex does not."""
        after: str | None = None
        for _ in range(20):  # at most 1,000 certificates carrying this name
            data = self._call(FIND, {"id": target.application_id, "name": name, "after": after})
            page = data["application"]["certificates"]
            for edge in page["edges"]:
                if int(edge["node"]["serialNumber"], 16) == serial:
                    return str(edge["node"]["id"]), str(edge["node"]["status"])
            if not page["pageInfo"]["hasNextPage"]:
                return None
            after = page["pageInfo"]["endCursor"]
        return None

    def issue(self, target: Target, csr_pem: str, extended_key_usages: tuple[str, ...] | None) -> Issued:
        request: dict[str, Any] = {
            "applicationId": target.application_id,
            "profileId": target.profile_id,
            "csr": csr_pem,
        }
        if extended_key_usages is not None:
            request["extendedKeyUsages"] = list(extended_key_usages)
        data = self._call(ISSUE, {"input": request})
        return _issued(data["issueCertificate"]["certificate"])

    def renew(self, certificate_id: str, csr_pem: str) -> Issued:
        data = self._call(RENEW, {"input": {"certificateId": certificate_id, "mode": "CSR", "csr": csr_pem}})
        return _issued(data["renewCertificate"]["certificate"])


def _issued(node: dict[str, Any]) -> Issued:
    return Issued(
        id=str(node["id"]),
        serial_number=str(node["serialNumber"]),
        not_after=str(node["notAfter"]),
        certificate_pem=str(node["certificatePem"]),
        chain_pem=str(node["chainPem"]),
    )
