"""agent.yaml: read, validate, and fail with a message that names the offending key."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from pki.errors import PkiError
from pki.key import KeyAlgorithm
from pki.san import SubjectAltName, classify_name, parse_san

DEFAULT_TOKEN_ENV = "KEYWARD_AGENT_TOKEN"

_DURATION = re.compile(r"^\s*(\d+)\s*(s|sec|min|h|d)\s*$")
_DURATION_UNITS = {
    "s": timedelta(seconds=1),
    "sec": timedelta(seconds=1),
    "min": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
}
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")
_KEY_TYPES = {
    "ECP256": KeyAlgorithm.EC_P256,
    "ECDSAP256": KeyAlgorithm.EC_P256,
    "P256": KeyAlgorithm.EC_P256,
    "PRIME256V1": KeyAlgorithm.EC_P256,
    "SECP256R1": KeyAlgorithm.EC_P256,
    "ECP384": KeyAlgorithm.EC_P384,
    "ECDSAP384": KeyAlgorithm.EC_P384,
    "P384": KeyAlgorithm.EC_P384,
    "SECP384R1": KeyAlgorithm.EC_P384,
    "RSA2048": KeyAlgorithm.RSA_2048,
    "RSA3072": KeyAlgorithm.RSA_3072,
    "RSA4096": KeyAlgorithm.RSA_4096,
    "ED25519": KeyAlgorithm.ED25519,
}
_TOP_KEYS = {
    "server",
    "token",
    "token-file",
    "token-env",
    "ca-file",
    "application-name",
    "profile-name",
    "renew-before",
    "poll-interval",
    "retry-initial",
    "retry-max",
    "request-timeout",
    "certificates",
}
_CERT_KEYS = {
    "name",
    "common-name",
    "sans",
    "key-type",
    "extended-key-usages",
    "certificate",
    "chain",
    "fullchain",
    "key",
    "certificate-mode",
    "chain-mode",
    "key-mode",
    "post-command",
    "post-command-timeout",
}


class AgentConfigError(Exception):
    """A bad agent.yaml; the message names the key (and never holds a token)."""


@dataclass(frozen=True)
class RenewBefore:
    """A fixed window before notAfter, or a fraction of the certificate's lifetime."""

    window: timedelta | None = None
    fraction: float | None = None

    def of(self, lifetime: timedelta) -> timedelta:
        if self.window is not None:
            return self.window
        return lifetime * (self.fraction or 0.0)

    def __str__(self) -> str:
        if self.window is not None:
            return describe_duration(self.window)
        return f"{(self.fraction or 0) * 100:g}% of the lifetime"


@dataclass(frozen=True)
class CertificateSpec:
    name: str
    common_name: str | None
    sans: tuple[SubjectAltName, ...]
    key_type: KeyAlgorithm | None  # None: the profile's default key algorithm
    extended_key_usages: tuple[str, ...] | None
    certificate_path: Path
    chain_path: Path | None
    fullchain_path: Path | None
    key_path: Path
    certificate_mode: int
    chain_mode: int
    key_mode: int
    post_command: list[str] | None
    post_command_timeout: timedelta


@dataclass(frozen=True)
class AgentConfig:
    server: str
    application_name: str
    profile_name: str
    certificates: tuple[CertificateSpec, ...]
    token_value: str | None = field(default=None, repr=False)
    token_file: Path | None = None
    token_env: str = DEFAULT_TOKEN_ENV
    ca_file: Path | None = None
    renew_before: RenewBefore | None = None  # None: the profile's renew-before days
    poll_interval: timedelta = timedelta(hours=1)
    retry_initial: timedelta = timedelta(seconds=30)
    retry_max: timedelta = timedelta(hours=1)
    request_timeout: timedelta = timedelta(seconds=30)

    def read_token(self) -> str:
        """Read on every pass, so a rotated token file is picked up without a restart."""
        if self.token_value is not None:
            return self.token_value
        if self.token_file is not None:
            try:
                token = self.token_file.read_text().strip()
            except OSError as exc:
                raise AgentConfigError(
                    f"token-file {str(self.token_file)!r} cannot be read: {exc.strerror}"
                ) from None
            if not token:
                raise AgentConfigError(f"token-file {str(self.token_file)!r} is empty")
            return token
        token = os.environ.get(self.token_env, "").strip()
        if not token:
            raise AgentConfigError(
                f"no token: set the environment variable {self.token_env} or give token-file in the config"
            )
        return token


def describe_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_agent_duration(value: Any, key: str) -> timedelta:
    """`30s`, `15min`, `12h`, `30d`, or a whole number of seconds."""
    if isinstance(value, bool):
        raise AgentConfigError(f"{key}: {value!r} is not a duration")
    if isinstance(value, int):
        seconds = value
    else:
        match = _DURATION.match(str(value).lower())
        if match is None:
            raise AgentConfigError(
                f"{key}: {value!r} is not a duration; use a number followed by s, min, h or d "
                "(e.g. 30s, 15min, 12h, 30d)"
            )
        seconds = int((int(match.group(1)) * _DURATION_UNITS[match.group(2)]).total_seconds())
    if seconds <= 0:
        raise AgentConfigError(f"{key}: {value!r} must be positive")
    return timedelta(seconds=seconds)


def parse_key_type(value: Any, key: str) -> KeyAlgorithm:
    normalized = re.sub(r"[\s_\-]", "", str(value)).upper()
    if normalized not in _KEY_TYPES:
        raise AgentConfigError(
            f"{key}: {value!r} is not a key type; "
            "use EC_P256, EC_P384, RSA_2048, RSA_3072, RSA_4096 or ED25519"
        )
    return _KEY_TYPES[normalized]


def _mode(value: Any, key: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool):
        raise AgentConfigError(f"{key}: {value!r} is not a file mode")
    if isinstance(value, int):
        mode = value  # YAML reads 0600 as octal already
    else:
        text = str(value).strip().lower().removeprefix("0o")
        if not re.fullmatch(r"[0-7]{3,4}", text):
            raise AgentConfigError(f"{key}: {value!r} is not an octal file mode such as '0600'")
        mode = int(text, 8)
    if not 0 <= mode <= 0o777:
        raise AgentConfigError(
            f"{key}: {value!r} is not a file mode; quote it in octal with a leading zero, e.g. '0600'"
        )
    return mode


def _string(raw: dict[str, Any], key: str, where: str, *, required: bool = True) -> str | None:
    value = raw.get(key)
    if value is None:
        if required:
            raise AgentConfigError(f"{where}{key} is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise AgentConfigError(f"{where}{key} must be a non-empty string")
    return value.strip()


def _path(raw: dict[str, Any], key: str, where: str, base: Path, *, required: bool) -> Path | None:
    text = _string(raw, key, where, required=required)
    if text is None:
        return None
    path = Path(text).expanduser()
    return path if path.is_absolute() else (base / path)


def _renew_before(value: Any) -> RenewBefore | None:
    if value is None:
        return None
    match = _PERCENT.match(str(value)) if isinstance(value, str) else None
    if match is not None:
        fraction = float(match.group(1)) / 100
        if not 0 < fraction < 1:
            raise AgentConfigError(f"renew-before: {value!r} must be a percentage between 0% and 100%")
        return RenewBefore(fraction=fraction)
    try:
        return RenewBefore(window=parse_agent_duration(value, "renew-before"))
    except AgentConfigError:
        raise AgentConfigError(
            f"renew-before: {value!r} must be a duration (e.g. 30d, 12h) or a percentage of the lifetime "
            "(e.g. 33%)"
        ) from None


def _post_command(value: Any, where: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip():
        return ["/bin/sh", "-c", value]
    if isinstance(value, list) and value and all(isinstance(item, str) and item for item in value):
        return list(value)
    raise AgentConfigError(f"{where}post-command must be a shell command string or a list of arguments")


def _certificate(raw: Any, index: int, base: Path, names: set[str]) -> CertificateSpec:
    where = f"certificates[{index}]."
    if not isinstance(raw, dict):
        raise AgentConfigError(f"certificates[{index}] must be a mapping")
    unknown = sorted(set(raw) - _CERT_KEYS)
    if unknown:
        raise AgentConfigError(
            f"{where}{unknown[0]} is not a known key; known: {', '.join(sorted(_CERT_KEYS))}"
        )
    name = _string(raw, "name", where)
    assert name is not None
    if name in names:
        raise AgentConfigError(f"{where}name {name!r} is used twice")
    names.add(name)
    where = f"certificates[{index}] ({name}): "
    common_name = _string(raw, "common-name", where, required=False)
    raw_sans = raw.get("sans", [])
    if not isinstance(raw_sans, list) or not all(isinstance(item, str) for item in raw_sans):
        raise AgentConfigError(
            f"{where}sans must be a list of names such as 'www.example.com' or 'IP:10.0.0.1'"
        )
    sans: list[SubjectAltName] = []
    try:
        if common_name is not None:
            sans.append(classify_name(common_name))  # TLS clients look at SANs only: the CN is one too
        for item in raw_sans:
            san = parse_san(item)
            if san not in sans:
                sans.append(san)
    except PkiError as exc:
        raise AgentConfigError(f"{where}sans: {exc}") from None
    if not sans:
        raise AgentConfigError(f"{where}give common-name or sans")
    key_type = raw.get("key-type")
    eku = raw.get("extended-key-usages")
    if eku is not None and (not isinstance(eku, list) or not all(isinstance(item, str) for item in eku)):
        raise AgentConfigError(f"{where}extended-key-usages must be a list such as [serverAuth]")
    certificate_path = _path(raw, "certificate", where, base, required=True)
    key_path = _path(raw, "key", where, base, required=True)
    assert certificate_path is not None and key_path is not None
    chain_path = _path(raw, "chain", where, base, required=False)
    fullchain_path = _path(raw, "fullchain", where, base, required=False)
    paths = [p for p in (certificate_path, key_path, chain_path, fullchain_path) if p is not None]
    if len(set(paths)) != len(paths):
        raise AgentConfigError(f"{where}certificate, chain, fullchain and key must be different files")
    return CertificateSpec(
        name=name,
        common_name=common_name,
        sans=tuple(sans),
        key_type=None if key_type is None else parse_key_type(key_type, f"{where}key-type"),
        extended_key_usages=None if eku is None else tuple(eku),
        certificate_path=certificate_path,
        chain_path=chain_path,
        fullchain_path=fullchain_path,
        key_path=key_path,
        certificate_mode=_mode(raw.get("certificate-mode"), f"{where}certificate-mode", 0o644),
        chain_mode=_mode(raw.get("chain-mode"), f"{where}chain-mode", 0o644),
        key_mode=_mode(raw.get("key-mode"), f"{where}key-mode", 0o600),
        post_command=_post_command(raw.get("post-command"), where),
        post_command_timeout=parse_agent_duration(
            raw.get("post-command-timeout", "60s"), f"{where}post-command-timeout"
        ),
    )


def parse_config(raw: Any, *, base: Path) -> AgentConfig:
    if not isinstance(raw, dict):
        raise AgentConfigError("the config must be a YAML mapping (server:, application-name:, ...)")
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise AgentConfigError(f"{unknown[0]} is not a known key; known: {', '.join(sorted(_TOP_KEYS))}")
    server = _string(raw, "server", "")
    assert server is not None
    parsed = urlparse(server)
    if parsed.scheme not in {"http", "https"} or not parsed.netloc:
        raise AgentConfigError(
            f"server: {server!r} must be an absolute http(s) URL such as https://keyward:8000"
        )
    sources = [key for key in ("token", "token-file", "token-env") if raw.get(key) is not None]
    if len(sources) > 1:
        raise AgentConfigError(f"give one of token, token-file or token-env, not {' and '.join(sources)}")
    token_env = _string(raw, "token-env", "", required=False) or DEFAULT_TOKEN_ENV
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", token_env):
        raise AgentConfigError(f"token-env: {token_env!r} is not an environment variable name")
    token_value = raw.get("token")
    if token_value is not None and (not isinstance(token_value, str) or not token_value.strip()):
        raise AgentConfigError("token must be a non-empty string")  # never echo it
    ca_file = _path(raw, "ca-file", "", base, required=False)
    if ca_file is not None and not ca_file.is_file():
        raise AgentConfigError(f"ca-file: {str(ca_file)!r} does not exist")
    certificates = raw.get("certificates")
    if not isinstance(certificates, list) or not certificates:
        raise AgentConfigError("certificates is required: a list of certificates to keep on disk")
    names: set[str] = set()
    specs = tuple(_certificate(item, index, base, names) for index, item in enumerate(certificates))
    config = AgentConfig(
        server=server.rstrip("/"),
        application_name=_string(raw, "application-name", "") or "",
        profile_name=_string(raw, "profile-name", "") or "",
        certificates=specs,
        token_value=token_value.strip() if isinstance(token_value, str) else None,
        token_file=_path(raw, "token-file", "", base, required=False),
        token_env=token_env,
        ca_file=ca_file,
        renew_before=_renew_before(raw.get("renew-before")),
        poll_interval=parse_agent_duration(raw.get("poll-interval", "1h"), "poll-interval"),
        retry_initial=parse_agent_duration(raw.get("retry-initial", "30s"), "retry-initial"),
        retry_max=parse_agent_duration(raw.get("retry-max", "1h"), "retry-max"),
        request_timeout=parse_agent_duration(raw.get("request-timeout", "30s"), "request-timeout"),
    )
    if config.retry_max < config.retry_initial:
        raise AgentConfigError("retry-max must not be shorter than retry-initial")
    return config


def load_config(path: Path) -> AgentConfig:
    try:
        text = path.read_text()
    except OSError as exc:
        raise AgentConfigError(f"cannot read {str(path)!r}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise AgentConfigError(f"{path} is not valid YAML{where}") from None
    return parse_config(raw, base=path.resolve().parent)
