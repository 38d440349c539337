"""Certificate policies (SPEC §4): unset allows anything, empty forbids, rules are an allowlist."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from pki.duration import format_duration, parse_duration
from pki.errors import InvalidDuration, InvalidPolicy, PkiError
from pki.key import SIGNATURE_ALGORITHMS, KeyAlgorithm
from pki.name import normalize_type
from pki.pattern import match_ip, match_pattern, match_uri_pattern, validate_ip_pattern, validate_pattern
from pki.san import SAN_TYPES, SubjectAltName
from pki.usage import normalize_extended_key_usage, normalize_key_usage

_TOP_KEYS = (
    "subject",
    "sans",
    "keyUsages",
    "extendedKeyUsages",
    "keyAlgorithms",
    "signatureAlgorithms",
    "maxValidity",
    "allowCa",
    "maxPathLength",
)
_RULE_KEYS = ("type", "allowed", "required", "denied")
_USAGE_KEYS = ("allowed", "required", "denied")
_T = TypeVar("_T")
_SAN_NOUNS = {"DNS": "DNS name", "IP": "IP address", "EMAIL": "email address", "URI": "URI"}


@dataclass(frozen=True)
class ValueRule:
    """Patterns for one subject attribute type or one SAN type."""

    type: str
    allowed: tuple[str, ...] | None
    required: tuple[str, ...] = ()
    denied: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "allowed": None if self.allowed is None else list(self.allowed),
            "required": list(self.required),
            "denied": list(self.denied),
        }


@dataclass(frozen=True)
class UsageRule:
    allowed: tuple[str, ...] | None
    required: tuple[str, ...] = ()
    denied: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "allowed": None if self.allowed is None else list(self.allowed),
            "required": list(self.required),
            "denied": list(self.denied),
        }


@dataclass(frozen=True)
class PolicyRules:
    subject: tuple[ValueRule, ...] | None = None
    sans: tuple[ValueRule, ...] | None = None
    key_usages: UsageRule | None = None
    extended_key_usages: UsageRule | None = None
    key_algorithms: tuple[KeyAlgorithm, ...] | None = None
    signature_algorithms: tuple[str, ...] | None = None
    max_validity: timedelta | None = None
    allow_ca: bool = False
    max_path_length: int | None = None
    max_validity_text: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "PolicyRules":
        """Validate rules JSON; every error names its path, e.g. `sans[0].type`."""
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise InvalidPolicy(f"policy rules must be a JSON object, got {_json_type(d)}")
        _reject_unknown_keys(d, _TOP_KEYS, "")
        max_validity_text = _optional_str(d.get("maxValidity"), "maxValidity")
        max_validity = None
        if max_validity_text is not None:
            try:
                max_validity = parse_duration(max_validity_text)
            except InvalidDuration as exc:
                raise InvalidPolicy(f"maxValidity: {exc.message}") from exc
            max_validity_text = max_validity_text.strip().lower()
        allow_ca = d.get("allowCa", False)
        if allow_ca is None:
            allow_ca = False
        if not isinstance(allow_ca, bool):
            raise InvalidPolicy(f"allowCa: must be true or false, got {_json_type(allow_ca)}")
        max_path_length = d.get("maxPathLength")
        if max_path_length is not None and (
            not isinstance(max_path_length, int) or isinstance(max_path_length, bool) or max_path_length < 0
        ):
            raise InvalidPolicy(
                f"maxPathLength: must be null or a non-negative integer, got {max_path_length!r}"
            )
        return cls(
            subject=_parse_value_rules(
                d.get("subject"), "subject", _normalize_subject_type, validate_pattern
            ),
            sans=_parse_value_rules(d.get("sans"), "sans", _normalize_san_type, None),
            key_usages=_parse_usage_rule(d.get("keyUsages"), "keyUsages", normalize_key_usage),
            extended_key_usages=_parse_usage_rule(
                d.get("extendedKeyUsages"), "extendedKeyUsages", normalize_extended_key_usage
            ),
            key_algorithms=_parse_names(d.get("keyAlgorithms"), "keyAlgorithms", _normalize_key_algorithm),
            signature_algorithms=_parse_names(
                d.get("signatureAlgorithms"), "signatureAlgorithms", _normalize_signature_algorithm
            ),
            max_validity=max_validity,
            allow_ca=allow_ca,
            max_path_length=max_path_length,
            max_validity_text=max_validity_text,
        )

    def to_dict(self) -> dict[str, Any]:
        max_validity = self.max_validity_text
        if max_validity is None and self.max_validity is not None:
            max_validity = format_duration(self.max_validity)
        return {
            "subject": None if self.subject is None else [rule.to_dict() for rule in self.subject],
            "sans": None if self.sans is None else [rule.to_dict() for rule in self.sans],
            "keyUsages": None if self.key_usages is None else self.key_usages.to_dict(),
            "extendedKeyUsages": None
            if self.extended_key_usages is None
            else self.extended_key_usages.to_dict(),
            "keyAlgorithms": None if self.key_algorithms is None else [a.value for a in self.key_algorithms],
            "signatureAlgorithms": None
            if self.signature_algorithms is None
            else list(self.signature_algorithms),
            "maxValidity": max_validity,
            "allowCa": self.allow_ca,
            "maxPathLength": self.max_path_length,
        }


@dataclass(frozen=True)
class CertificateRequest:
    """What is about to be issued, whatever the enrollment path."""

    subject: list[tuple[str, str]]
    sans: list[SubjectAltName]
    key_usages: frozenset[str]
    extended_key_usages: frozenset[str]
    key_algorithm: KeyAlgorithm
    signature_algorithm: str
    validity: timedelta
    is_ca: bool = False
    path_length: int | None = None


@dataclass(frozen=True)
class Violation:
    field: str
    value: str | None
    message: str


def evaluate_policy(rules: PolicyRules, request: CertificateRequest) -> list[Violation]:
    """Every violation of the request, in a stable order (never just the first)."""
    violations: list[Violation] = []
    subject_values = [(_subject_type_or_raw(t), v) for t, v in request.subject]
    violations += _evaluate_values(
        rules=rules.subject,
        values=subject_values,
        section="subject",
        noun=lambda t: f"subject {t}",
        matcher=lambda _t: match_pattern,
    )
    violations += _evaluate_values(
        rules=rules.sans,
        values=[(san.type, san.value) for san in request.sans],
        section="sans",
        noun=lambda t: _SAN_NOUNS.get(t, f"{t} SAN"),
        matcher=_san_matcher,
    )
    violations += _evaluate_usages(
        rule=rules.key_usages,
        values=_normalized(request.key_usages, normalize_key_usage),
        field="keyUsages",
        noun="key usage",
    )
    violations += _evaluate_usages(
        rule=rules.extended_key_usages,
        values=_normalized(request.extended_key_usages, normalize_extended_key_usage),
        field="extendedKeyUsages",
        noun="extended key usage",
    )
    key_algorithm = KeyAlgorithm(request.key_algorithm)
    if rules.key_algorithms is not None and key_algorithm not in rules.key_algorithms:
        violations.append(
            Violation(
                field="keyAlgorithm",
                value=key_algorithm.value,
                message=f"key algorithm {key_algorithm.value} is not allowed "
                f"({_allowed_text([a.value for a in rules.key_algorithms])})",
            )
        )
    if (
        rules.signature_algorithms is not None
        and request.signature_algorithm not in rules.signature_algorithms
    ):
        violations.append(
            Violation(
                field="signatureAlgorithm",
                value=request.signature_algorithm,
                message=f"signature algorithm {request.signature_algorithm} is not allowed "
                f"({_allowed_text(list(rules.signature_algorithms))})",
            )
        )
    if rules.max_validity is not None and request.validity > rules.max_validity:
        maximum = rules.max_validity_text or format_duration(rules.max_validity)
        violations.append(
            Violation(
                field="validity",
                value=_describe_validity(request.validity),
                message=f"validity of {_describe_validity(request.validity)} exceeds the maximum "
                f"of {maximum}",
            )
        )
    if request.is_ca:
        violations += _evaluate_ca(rules, request)
    return violations


def _evaluate_ca(rules: PolicyRules, request: CertificateRequest) -> list[Violation]:
    if not rules.allow_ca:
        return [Violation(field="isCa", value="true", message="this policy does not allow CA certificates")]
    if rules.max_path_length is None:
        return []
    if request.path_length is None:
        return [
            Violation(
                field="pathLength",
                value=None,
                message=f"an unlimited path length is not allowed (maximum {rules.max_path_length})",
            )
        ]
    if request.path_length > rules.max_path_length:
        return [
            Violation(
                field="pathLength",
                value=str(request.path_length),
                message=f"path length {request.path_length} exceeds the maximum of {rules.max_path_length}",
            )
        ]
    return []


def _evaluate_values(
    *,
    rules: tuple[ValueRule, ...] | None,
    values: list[tuple[str, str]],
    section: str,
    noun: Callable[[str], str],
    matcher: Callable[[str], Callable[[str, str], bool]],
) -> list[Violation]:
    if rules is None:
        return []
    violations: list[Violation] = []
    by_type = {rule.type: rule for rule in rules}
    seen_types: list[str] = []
    for value_type, value in values:
        if value_type not in seen_types:
            seen_types.append(value_type)
        if value_type not in by_type:
            allowed_types = ", ".join(by_type) or "none"
            violations.append(
                Violation(
                    field=f"{section}.{value_type}",
                    value=value,
                    message=f"{noun(value_type)} '{value}' is not allowed: this policy permits no "
                    f"{noun(value_type)} (allowed types: {allowed_types})",
                )
            )
    for rule in rules:
        matches = matcher(rule.type)
        own = [value for value_type, value in values if value_type == rule.type]
        for value in own:
            if rule.allowed is not None and not any(matches(p, value) for p in rule.allowed):
                violations.append(
                    Violation(
                        field=f"{section}.{rule.type}",
                        value=value,
                        message=f"{noun(rule.type)} '{value}' is not allowed "
                        f"({_allowed_text(list(rule.allowed))})",
                    )
                )
            for pattern in rule.denied:
                if matches(pattern, value):
                    violations.append(
                        Violation(
                            field=f"{section}.{rule.type}",
                            value=value,
                            message=f"{noun(rule.type)} '{value}' is denied (matches '{pattern}')",
                        )
                    )
                    break
        for pattern in rule.required:
            if not any(matches(pattern, value) for value in own):
                violations.append(
                    Violation(
                        field=f"{section}.{rule.type}",
                        value=None,
                        message=f"a {noun(rule.type)} matching '{pattern}' is required",
                    )
                )
    return violations


def _evaluate_usages(*, rule: UsageRule | None, values: list[str], field: str, noun: str) -> list[Violation]:
    if rule is None:
        return []
    violations: list[Violation] = []
    for value in values:
        if rule.allowed is not None and value not in rule.allowed:
            violations.append(
                Violation(
                    field=field,
                    value=value,
                    message=f"{noun} {value} is not allowed ({_allowed_text(list(rule.allowed))})",
                )
            )
        if value in rule.denied:
            violations.append(Violation(field=field, value=value, message=f"{noun} {value} is denied"))
    for required in rule.required:
        if required not in values:
            violations.append(Violation(field=field, value=None, message=f"{noun} {required} is required"))
    return violations


def _san_matcher(san_type: str) -> Callable[[str, str], bool]:
    if san_type == "IP":
        return match_ip
    if san_type == "URI":
        return match_uri_pattern
    return match_pattern


def _allowed_text(allowed: list[str]) -> str:
    return f"allowed: {', '.join(allowed)}" if allowed else "this policy allows none"


def _describe_validity(validity: timedelta) -> str:
    return format_duration(validity) if validity > timedelta(0) else str(validity)


def _normalized(values: frozenset[str], normalize: Callable[[str], str]) -> list[str]:
    out: set[str] = set()
    for value in values:
        try:
            out.add(normalize(value))
        except PkiError:
            out.add(value)
    return sorted(out)


def _subject_type_or_raw(attribute_type: str) -> str:
    try:
        return normalize_type(attribute_type)
    except PkiError:
        return attribute_type


def _normalize_subject_type(value: str) -> str:
    return normalize_type(value)


def _normalize_san_type(value: str) -> str:
    upper = value.strip().upper()
    if upper not in SAN_TYPES:
        raise PkiError(f"unknown SAN type '{value}' (use {', '.join(SAN_TYPES)})")
    return upper


def _normalize_key_algorithm(value: str) -> KeyAlgorithm:
    try:
        return KeyAlgorithm(value.strip().upper())
    except ValueError:
        raise PkiError(
            f"unknown key algorithm '{value}' (use {', '.join(a.value for a in KeyAlgorithm)})"
        ) from None


def _normalize_signature_algorithm(value: str) -> str:
    upper = value.strip().upper()
    if upper not in SIGNATURE_ALGORITHMS:
        raise PkiError(f"unknown signature algorithm '{value}' (use {', '.join(SIGNATURE_ALGORITHMS)})")
    return upper


def _parse_value_rules(
    raw: Any,
    path: str,
    normalize_type_name: Callable[[str], str],
    pattern_check: Callable[[str], None] | None,
) -> tuple[ValueRule, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InvalidPolicy(f"{path}: must be null or a list of rules, got {_json_type(raw)}")
    rules: list[ValueRule] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        item_path = f"{path}[{index}]"
        if not isinstance(item, dict):
            raise InvalidPolicy(f"{item_path}: must be an object, got {_json_type(item)}")
        _reject_unknown_keys(item, _RULE_KEYS, item_path)
        raw_type = item.get("type")
        if not isinstance(raw_type, str):
            raise InvalidPolicy(f"{item_path}.type: required string, got {_json_type(raw_type)}")
        try:
            rule_type = normalize_type_name(raw_type)
        except PkiError as exc:
            raise InvalidPolicy(f"{item_path}.type: {exc.message}") from exc
        if rule_type in seen:
            raise InvalidPolicy(f"{item_path}.type: a second rule for {rule_type}; merge them into one")
        seen.add(rule_type)
        check = pattern_check or (validate_ip_pattern if rule_type == "IP" else validate_pattern)
        allowed = item.get("allowed")
        rules.append(
            ValueRule(
                type=rule_type,
                allowed=None if allowed is None else _parse_patterns(allowed, f"{item_path}.allowed", check),
                required=_parse_patterns(item.get("required") or [], f"{item_path}.required", check),
                denied=_parse_patterns(item.get("denied") or [], f"{item_path}.denied", check),
            )
        )
    return tuple(rules)


def _parse_patterns(raw: Any, path: str, check: Callable[[str], None]) -> tuple[str, ...]:
    if not isinstance(raw, list):
        raise InvalidPolicy(f"{path}: must be a list of patterns, got {_json_type(raw)}")
    patterns: list[str] = []
    for index, pattern in enumerate(raw):
        if not isinstance(pattern, str) or not pattern.strip():
            raise InvalidPolicy(f"{path}[{index}]: must be a non-empty string, got {pattern!r}")
        try:
            check(pattern.strip())
        except PkiError as exc:
            raise InvalidPolicy(f"{path}[{index}]: {exc.message}") from exc
        patterns.append(pattern.strip())
    return tuple(patterns)


def _parse_usage_rule(raw: Any, path: str, normalize: Callable[[str], str]) -> UsageRule | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidPolicy(
            f"{path}: must be null or an object with allowed/required/denied, got {_json_type(raw)}"
        )
    _reject_unknown_keys(raw, _USAGE_KEYS, path)
    allowed = raw.get("allowed")
    return UsageRule(
        allowed=None if allowed is None else _parse_names(allowed, f"{path}.allowed", normalize),
        required=_parse_names(raw.get("required") or [], f"{path}.required", normalize) or (),
        denied=_parse_names(raw.get("denied") or [], f"{path}.denied", normalize) or (),
    )


def _parse_names(raw: Any, path: str, normalize: Callable[[str], _T]) -> tuple[_T, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InvalidPolicy(f"{path}: must be null or a list of names, got {_json_type(raw)}")
    names: list[_T] = []
    for index, item in enumerate(raw):
        if not isinstance(item, str):
            raise InvalidPolicy(f"{path}[{index}]: must be a string, got {_json_type(item)}")
        try:
            normalized = normalize(item)
        except PkiError as exc:
            raise InvalidPolicy(f"{path}[{index}]: {exc.message}") from exc
        if normalized not in names:
            names.append(normalized)
    return tuple(names)


def _optional_str(raw: Any, path: str) -> str | None:
    if raw is None or isinstance(raw, str):
        return raw
    raise InvalidPolicy(f"{path}: must be null or a string, got {_json_type(raw)}")


def _reject_unknown_keys(d: dict[str, Any], known: tuple[str, ...], path: str) -> None:
    for key in d:
        if key not in known:
            where = f"{path}: " if path else ""
            raise InvalidPolicy(f"{where}unknown key '{key}' (known: {', '.join(known)})")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
