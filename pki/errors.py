"""Errors raised by the pure-crypto layer; callers map them to API or protocol errors."""


class PkiError(Exception):
    """Base class; `message` is safe to show to the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidCsr(PkiError):
    """A PKCS#10 request that cannot be used."""


class InvalidBundle(PkiError):
    """Import or export data (PEM bundle, PKCS#12) that cannot be used."""


class InvalidPolicy(PkiError):
    """Malformed policy rules JSON or pattern."""


class InvalidDuration(PkiError):
    """A duration string outside the accepted forms."""


class InvalidOcspRequest(PkiError):
    """An OCSP request that cannot be parsed or answered."""
