"""RFC 8555 §6.7 problem documents, raised as exceptions and rendered as application/problem+json."""

from __future__ import annotations

from typing import Any

ERROR_NAMESPACE = "urn:ietf:params:acme:error:"

KINDS = frozenset(
    {
        "accountDoesNotExist",
        "alreadyReplaced",  # RFC 9773 §7.4
        "alreadyRevoked",
        "badCSR",
        "badNonce",
        "badPublicKey",
        "badRevocationReason",
        "badSignatureAlgorithm",
        "caa",
        "compound",
        "connection",
        "dns",
        "externalAccountRequired",
        "incorrectResponse",
        "invalidContact",
        "malformed",
        "orderNotReady",
        "rateLimited",
        "rejectedIdentifier",
        "serverInternal",
        "tls",
        "unauthorized",
        "unsupportedContact",
        "unsupportedIdentifier",
        "userActionRequired",
    }
)


class AcmeProblem(Exception):
    """An ACME error: `kind` is the RFC 8555 §6.7 type suffix (e.g. "badNonce")."""

    def __init__(
        self,
        kind: str,
        detail: str,
        *,
        status: int = 400,
        subproblems: list[dict[str, Any]] | None = None,
        retry_after: int | None = None,
        identifier: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown ACME error type {kind!r}")
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.status = status
        self.subproblems = subproblems
        self.retry_after = retry_after
        self.identifier = identifier
        # Extra response headers (e.g. Location of the existing account on a keyChange conflict).
        self.headers = dict(headers or {})
        # Extra members of the document (e.g. "algorithms" on badSignatureAlgorithm, RFC 8555 §6.2).
        self.extra = dict(extra or {})

    @property
    def type(self) -> str:
        return ERROR_NAMESPACE + self.kind

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            **self.extra,
            "type": self.type,
            "detail": self.detail,
            "status": self.status,
        }
        if self.identifier is not None:
            document["identifier"] = self.identifier
        if self.subproblems:
            document["subproblems"] = self.subproblems
        return document


def problem_dict(
    kind: str, detail: str, *, status: int = 400, identifier: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A problem document as stored on an order, authorization or challenge (`error` field)."""
    return AcmeProblem(kind, detail, status=status, identifier=identifier).to_dict()
