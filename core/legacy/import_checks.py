"""The checks of a legacy export that need no database (core/legacy/importer.py runs them after the JSON
Schema and the CA lookups): references, duplicates, PEMs, keys, issuers, and the validators of the services
that will write each item. Every problem is recorded with its path; nothing stops at the first.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import extract_parameters
from argon2.exceptions import InvalidHashError
from cryptography import x509

from core import alert as alert_service
from core import application as application_service
from core import approval as approval_service
from core import est as est_service
from core import profile as profile_service
from core import scep as scep_service
from core import sync as sync_service
from core.certificate import normalize_reason
from core.issuance import check_metadata
from core.legacy.import_document import (
    FIELD_TOKEN,
    MAX_PRODUCT_NAME,
    METHODS,
    MIN_EAB_KEY_BYTES,
    CaItem,
    CertificateItem,
    MemberItem,
    ParsedExport,
    PolicyItem,
    Problems,
    ProfileItem,
    json_path,
)
from core.legacy.roles import BUILTIN_ROLES
from core.policy import parse_rules
from models import CertificateAuthority, CertificatePolicy
from models.enums import CertificateStatus, EnrollmentMethod
from pki import errors as pki_errors
from pki.certificate import (
    describe_certificate,
    load_certificate,
    load_certificates,
    public_keys_match,
    verify_issued_by,
)
from pki.duration import parse_duration
from pki.key import KeyAlgorithm, PrivateKey, key_algorithm_of, load_private_key


def _items(
    document: dict[str, Any], section: str, bad: set[str]
) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """(index, path, item) of a section's items that are objects without schema problems of their own."""
    values = document.get(section)
    if not isinstance(values, list):
        return
    for index, item in enumerate(values):
        path = json_path(section, index)
        if not isinstance(item, dict) or any(p == path or p.startswith(path + ".") for p in bad):
            continue
        yield index, path, item


def _unique(problems: Problems, seen: dict[str, str], key: str, path: str, what: str) -> bool:
    if key in seen:
        problems.add(path, f"duplicate {what} {key!r} (first at {seen[key]})")
        return False
    seen[key] = path
    return True


def _pem_certificate(problems: Problems, path: str, text: Any) -> x509.Certificate | None:
    try:
        certificates = load_certificates(text)
    except pki_errors.PkiError:
        certificates = []
    if len(certificates) != 1:
        problems.add(
            path,
            "is not one readable PEM certificate (corrupt PEM)"
            if not certificates
            else "must hold exactly one certificate; put its issuers in chainPem",
        )
        return None
    return certificates[0]


def _pem_key(problems: Problems, path: str, text: Any) -> PrivateKey | None:
    try:
        return load_private_key(str(text).encode("ascii", errors="replace"))
    except pki_errors.PkiError as exc:
        problems.add(path, f"is not a readable private key (corrupt PEM): {exc.message.split(':')[0]}")
        return None


def _parse_time(problems: Problems, path: str, text: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(text))
    except ValueError:
        problems.add(path, "must be an ISO 8601 date and time, e.g. 2025-06-01T00:00:00Z")
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class _ProfileDraft:
    """What profile and application validators read of a profile that is not written yet."""

    def __init__(self, name: str, default_validity: str, renew_before_days: int) -> None:
        self.name = name
        self.default_validity = default_validity
        self.renew_before_days = renew_before_days


def parse_export(
    document: dict[str, Any],
    problems: Problems,
    bad: set[str],
    existing_cas: Mapping[str, CertificateAuthority],
) -> ParsedExport | None:
    """Everything but the database checks; `existing_cas` are the CAs the file names by existingCaName, by
    slug (looked up before). Items with schema problems are skipped (already reported)."""
    project = document.get("project")
    if not isinstance(project, dict) or any(p.startswith("$.project") for p in bad):
        return None
    slug = str(project["slug"])
    parsed = ParsedExport(
        document=document,
        project_slug=slug,
        project_name=str(project["name"]).strip(),
        project_description=str(project.get("description") or "").strip(),
    )
    if not parsed.project_name:
        problems.add(json_path("project", "name"), "must not be empty")
    _parse_roles(parsed, problems, bad)
    _parse_members(parsed, problems, bad)
    _parse_cas(parsed, problems, bad, existing_cas)
    _parse_policies(parsed, problems, bad)
    _parse_profiles(parsed, problems, bad)
    _parse_certificates(parsed, problems, bad)
    profile_slugs = _all_slugs(document, "profiles")
    _parse_role_conditions(parsed, problems, bad, profile_slugs)
    _parse_alerts(parsed, problems, bad, profile_slugs)
    _parse_syncs(parsed, problems, bad, profile_slugs)
    _parse_approvals(parsed, problems, bad, profile_slugs)
    return parsed


def _all_slugs(document: dict[str, Any], section: str, key: str = "slug") -> set[str]:
    """Every slug a section names (items with problems included: a reference to them is not dangling)."""
    values = document.get(section)
    if not isinstance(values, list):
        return set()
    return {str(item[key]) for item in values if isinstance(item, dict) and isinstance(item.get(key), str)}


def _product_name(parsed: ParsedExport, problems: Problems, path: str, slug: str) -> str:
    # `-`, not `/`: the name must fit an EST single label `{app}.{profile}` once migrated.
    name = f"{parsed.project_slug}-{slug}"
    if len(name) > MAX_PRODUCT_NAME:
        problems.add(
            json_path(*_split(path), "slug"),
            f"'{name}' (project slug-slug) is longer than {MAX_PRODUCT_NAME} characters",
        )
    return name


def _split(path: str) -> list[str | int]:
    parts: list[str | int] = []
    for name, index in FIELD_TOKEN.findall(path[1:]):
        parts.append(int(index) if index else name)
    return parts


# ---------------------------------------------------------------- roles and members


def _parse_roles(parsed: ParsedExport, problems: Problems, bad: set[str]) -> None:
    seen: dict[str, str] = {}
    for index, _path, item in _items(parsed.document, "roles", bad):
        if not _unique(problems, seen, item["slug"], json_path("roles", index, "slug"), "role slug"):
            continue
        if item["slug"] in BUILTIN_ROLES or item["slug"] == "custom":
            problems.add(
                json_path("roles", index, "slug"),
                f"'{item['slug']}' is a built-in role; name the custom role otherwise",
            )
        parsed.roles.append((index, item))


def _role_permissions(parsed: ParsedExport) -> dict[str, frozenset[str]]:
    return {item["slug"]: frozenset(item["permissions"]) for _, item in parsed.roles}


def _parse_members(parsed: ParsedExport, problems: Problems, bad: set[str]) -> None:
    roles = _role_permissions(parsed)
    declared_roles = _all_slugs(parsed.document, "roles")
    seen: dict[str, str] = {}
    for index, path, item in _items(parsed.document, "members", bad):
        kind = item["kind"]
        email: str | None = None
        if kind == "user":
            ok, email = problems.check(json_path("members", index), _normalize_email, item["email"])
            if not ok:
                continue
            key = str(email)
        else:
            key = str(item["name"]).strip()
        if not _unique(problems, seen, key, path, "member"):
            continue
        role = item["role"]
        custom = item.get("customRole")
        permissions: frozenset[str] = BUILTIN_ROLES.get(role, frozenset())
        if role == "custom":
            if custom not in declared_roles:
                problems.add(json_path("members", index, "customRole"), f"unknown custom role {custom!r}")
                continue
            permissions = roles.get(str(custom), frozenset())
        parsed.members.append(
            MemberItem(
                index=index,
                key=key,
                path=path,
                data=item,
                kind=kind,
                email=email,
                name=str(item["name"]).strip(),
                role=role,
                custom_role=custom,
                permissions=permissions,
            )
        )


def _normalize_email(email: str) -> str:
    from core.identity import normalize_email

    return normalize_email(email)


def _parse_role_conditions(
    parsed: ParsedExport, problems: Problems, bad: set[str], profile_slugs: set[str]
) -> None:
    sync_names = _all_slugs(parsed.document, "syncs", "name")
    for index, item in parsed.roles:
        conditions = item.get("conditions") or {}
        for position, slug in enumerate(conditions.get("profileSlugs") or []):
            if slug not in profile_slugs:
                problems.add(
                    json_path("roles", index, "conditions", "profileSlugs", position),
                    f"unknown profile {slug!r}",
                )
        for position, name in enumerate(conditions.get("syncNames") or []):
            if name not in sync_names:
                problems.add(
                    json_path("roles", index, "conditions", "syncNames", position), f"unknown sync {name!r}"
                )


# ---------------------------------------------------------------- certificate authorities


def _parse_cas(
    parsed: ParsedExport, problems: Problems, bad: set[str], existing_cas: Mapping[str, CertificateAuthority]
) -> None:
    seen: dict[str, str] = {}
    now = datetime.now(UTC)
    for index, path, item in _items(parsed.document, "certificateAuthorities", bad):
        slug = item["slug"]
        if not _unique(problems, seen, slug, json_path("certificateAuthorities", index, "slug"), "CA slug"):
            continue
        ca = CaItem(
            index=index, slug=slug, path=path, data=item, name=_product_name(parsed, problems, path, slug)
        )
        parsed.cas[slug] = ca
        if "existingCaName" in item:
            ca.existing_name = str(item["existingCaName"]).strip()
            ca.existing = existing_cas.get(slug)
            if ca.existing is not None and ca.existing.certificate_pem is not None:
                ca.certificate = load_certificate(ca.existing.certificate_pem)
                ca.key_algorithm = KeyAlgorithm(ca.existing.key_algorithm)
            continue
        cert = _pem_certificate(problems, f"{path}.certificatePem", item["certificatePem"])
        key = _pem_key(problems, f"{path}.privateKeyPem", item["privateKeyPem"])
        chain: list[x509.Certificate] = []
        if item.get("chainPem", "").strip():
            try:
                chain = load_certificates(item["chainPem"])
            except pki_errors.PkiError:
                problems.add(f"{path}.chainPem", "holds no readable PEM certificate (corrupt PEM)")
        if cert is None:
            continue
        facts = describe_certificate(cert)
        ca.certificate, ca.facts, ca.key, ca.chain = cert, facts, key, chain
        if not facts.is_ca:
            problems.add(f"{path}.certificatePem", "is not a CA certificate (basicConstraints CA:TRUE)")
        if facts.key_usages and "keyCertSign" not in facts.key_usages:
            problems.add(f"{path}.certificatePem", "has a key usage without keyCertSign")
        if facts.not_after <= now:
            problems.add(f"{path}.certificatePem", f"expired on {facts.not_after.isoformat()}")
        try:
            ca.key_algorithm = key_algorithm_of(cert.public_key())
        except pki_errors.PkiError as exc:
            problems.add(f"{path}.certificatePem", exc.message)
        if key is not None and not public_keys_match(key, cert.public_key()):
            problems.add(f"{path}.privateKeyPem", "does not match the certificate's public key")
    # Parents: self-signed is a root; else signed by another CA of the file, or an external chain.
    for ca in parsed.cas.values():
        if ca.certificate is None or ca.facts is None or ca.existing is not None:
            continue
        cert = ca.certificate
        if cert.subject == cert.issuer and verify_issued_by(cert, cert):
            continue
        parents = [
            other.slug
            for other in parsed.cas.values()
            if other is not ca
            and other.existing_name is None
            and other.certificate is not None
            and verify_issued_by(cert, other.certificate)
        ]
        if parents:
            ca.parent_slug = parents[0]
            continue
        if not ca.chain:
            problems.add(
                f"{ca.path}.chainPem",
                "this CA is not self-signed and no CA of the file signed it: give its issuers (parent first)",
            )
        elif not verify_issued_by(cert, ca.chain[0]):
            problems.add(f"{ca.path}.chainPem", "the first certificate of chainPem did not sign this CA")
        else:
            for child, issuer in zip(ca.chain, ca.chain[1:], strict=False):
                if not verify_issued_by(child, issuer):
                    problems.add(
                        f"{ca.path}.chainPem", "is out of order: each certificate must sign the one before"
                    )
                    break
    _check_ca_cycles(parsed, problems)


def _check_ca_cycles(parsed: ParsedExport, problems: Problems) -> None:
    for ca in parsed.cas.values():
        seen = {ca.slug}
        current = ca
        while current.parent_slug is not None:
            if current.parent_slug in seen:
                problems.add(f"{ca.path}.certificatePem", "CAs of the file sign each other in a cycle")
                break
            seen.add(current.parent_slug)
            current = parsed.cas[current.parent_slug]


def ca_creation_order(parsed: ParsedExport) -> list[CaItem]:
    """CAs to create (not the existing ones the file refers to), parents before children."""
    ordered: list[CaItem] = []
    placed: set[str] = set()

    def place(ca: CaItem) -> None:
        if ca.slug in placed:
            return
        if ca.parent_slug is not None:
            place(parsed.cas[ca.parent_slug])
        placed.add(ca.slug)
        ordered.append(ca)

    for ca in parsed.cas.values():
        if ca.existing_name is None:
            place(ca)
    return ordered


# ---------------------------------------------------------------- policies and profiles


def _parse_policies(parsed: ParsedExport, problems: Problems, bad: set[str]) -> None:
    seen: dict[str, str] = {}
    for index, path, item in _items(parsed.document, "policies", bad):
        slug = item["slug"]
        if not _unique(problems, seen, slug, json_path("policies", index, "slug"), "policy slug"):
            continue
        policy = PolicyItem(index, slug, path, item, _product_name(parsed, problems, path, slug))
        ok, rules = problems.check(path, parse_rules, item["rules"])
        if ok:
            policy.rules = rules.to_dict()
        parsed.policies[slug] = policy


def _key_algorithm_of_ca(parsed: ParsedExport, slug: str) -> KeyAlgorithm | None:
    ca = parsed.cas.get(slug)
    return ca.key_algorithm if ca is not None else None


def _parse_profiles(parsed: ParsedExport, problems: Problems, bad: set[str]) -> None:
    seen: dict[str, str] = {}
    ca_slugs = _all_slugs(parsed.document, "certificateAuthorities")
    policy_slugs = _all_slugs(parsed.document, "policies")
    for index, path, item in _items(parsed.document, "profiles", bad):
        slug = item["slug"]
        if not _unique(problems, seen, slug, json_path("profiles", index, "slug"), "profile slug"):
            continue
        if item["ca"] not in ca_slugs:
            problems.add(f"{path}.ca", f"unknown certificate authority {item['ca']!r}")
        if item["policy"] not in policy_slugs:
            problems.add(f"{path}.policy", f"unknown policy {item['policy']!r}")
        enrollment = item["enrollment"]
        method = EnrollmentMethod(enrollment["method"])
        profile = ProfileItem(index, slug, path, item, _product_name(parsed, problems, path, slug), method)
        parsed.profiles[slug] = profile
        for other in METHODS:
            if other != method.value and other in enrollment:
                problems.add(
                    f"{path}.enrollment.{other}",
                    f"a legacy profile has one enrollment method ({method.value}): "
                    f"remove the {other} settings",
                )
        defaults = profile_service.ProfileDefaults(
            validity=item.get("defaultValidity", "90d"),
            key_algorithm=item.get("defaultKeyAlgorithm", KeyAlgorithm.EC_P256.value),
            key_usages=tuple(item.get("defaultKeyUsages") or ()),
            extended_key_usages=tuple(item.get("defaultExtendedKeyUsages") or ()),
            subject=tuple((s["type"], s["value"]) for s in item.get("defaultSubject") or ()),
            renew_before_days=item.get("renewBeforeDays", 30),
        )
        ok, fields = problems.check(path, profile_service._normalize_defaults, defaults)
        if ok:
            profile.defaults = fields
            policy = parsed.policies.get(item["policy"])
            algorithm = _key_algorithm_of_ca(parsed, item["ca"])
            if policy is not None and policy.rules is not None and algorithm is not None:
                draft_policy = CertificatePolicy(name=policy.name, rules=policy.rules)
                draft_ca = CertificateAuthority(key_algorithm=algorithm.value)
                problems.check(
                    path,
                    profile_service._check_against_policy,
                    fields,
                    draft_policy,
                    draft_ca,
                    renames={"caId": "ca"},
                )
        _parse_enrollment(profile, problems)


def _parse_enrollment(profile: ProfileItem, problems: Problems) -> None:
    enrollment = profile.data["enrollment"]
    base = f"{profile.path}.enrollment"
    method = profile.method
    draft = _ProfileDraft(
        profile.name,
        (profile.defaults or {}).get("default_validity", profile.data.get("defaultValidity", "90d")),
        profile.data.get("renewBeforeDays", 30),
    )
    if method == EnrollmentMethod.API:
        api = enrollment.get("api") or {}
        settings = application_service.ApiEnrollmentSettings(
            enabled=True,
            auto_renew=bool(api.get("autoRenew", False)),
            renew_before_days=api.get("renewBeforeDays"),
        )
        problems.check(
            base,
            application_service._check_settings,
            settings,
            draft,  # type: ignore[arg-type]
        )
        profile.settings = {"api": settings}
    elif method == EnrollmentMethod.ACME:
        acme = enrollment["acme"]
        text = acme["eabHmacKey"].rstrip("=")
        try:
            key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            key = b""
        if len(key) < MIN_EAB_KEY_BYTES:
            problems.add(
                f"{base}.acme.eabHmacKey", f"must decode (base64url) to at least {MIN_EAB_KEY_BYTES} bytes"
            )
        profile.eab_key = key
        profile.settings = {"kid": acme["eabKid"].strip(), "required": acme.get("eabRequired", True)}
        if not profile.settings["kid"] or not profile.settings["kid"].isprintable():
            problems.add(f"{base}.acme.eabKid", "must be printable text")
    elif method == EnrollmentMethod.EST:
        est = enrollment["est"]
        where = f"{base}.est"
        if "username" in est:
            problems.check(where, est_service._check_username, est["username"])
        if "passphrase" in est:
            problems.check(where, est_service._check_passphrase, est["passphrase"])
        if "passphraseHash" in est:
            try:
                extract_parameters(est["passphraseHash"])
            except InvalidHashError:
                problems.add(f"{where}.passphraseHash", "is not a readable argon2 hash")
        if est.get("clientCaPem"):
            problems.check(where, est_service._check_client_ca, est["clientCaPem"])
        if not (est.get("passphrase") or est.get("passphraseHash") or est.get("clientCaPem")):
            problems.add(where, "EST needs a passphrase (or passphraseHash), a clientCaPem, or both")
        profile.settings = dict(est)
    else:
        scep = enrollment["scep"]
        where = f"{base}.scep"
        renames = {"staticChallenge": "challenge"}
        mode = scep.get("challengeMode", "static")
        scep_settings = scep_service.ScepSettings(
            challenge_mode=mode,
            challenge_ttl_seconds=scep.get("challengeTtlSeconds", 3600),
            max_pending_challenges=scep.get("maxPendingChallenges", 100),
            include_ca=scep.get("includeCa", True),
            allow_renewal=scep.get("allowRenewal", True),
        )
        problems.check(where, scep_service._check_settings, scep_settings, renames=renames)
        if "challenge" in scep:
            problems.check(where, scep_service.hash_static_challenge, scep["challenge"], renames=renames)
        if "challengeHash" in scep:
            try:
                extract_parameters(scep["challengeHash"])
            except InvalidHashError:
                problems.add(f"{where}.challengeHash", "is not a readable argon2 hash")
        if mode == "static" and not (scep.get("challenge") or scep.get("challengeHash")):
            problems.add(where, "the static challenge mode needs a challenge (or challengeHash)")
        if mode == "dynamic" and ("challenge" in scep or "challengeHash" in scep):
            problems.add(where, "a dynamic-challenge profile takes no static challenge")
        profile.settings = {
            "scep": scep_settings,
            "challenge": scep.get("challenge"),
            "hash": scep.get("challengeHash"),
        }


# ---------------------------------------------------------------- certificates


def _parse_certificates(parsed: ParsedExport, problems: Problems, bad: set[str]) -> None:
    seen: dict[str, str] = {}
    fingerprints: dict[str, str] = {}
    serials: dict[tuple[str, str], str] = {}
    profile_slugs = _all_slugs(parsed.document, "profiles")
    for index, path, item in _items(parsed.document, "certificates", bad):
        if not _unique(problems, seen, item["slug"], f"{path}.slug", "certificate slug"):
            continue
        profile_slug = item["profile"]
        if profile_slug not in profile_slugs:
            problems.add(f"{path}.profile", f"unknown profile {profile_slug!r}")
        cert = _pem_certificate(problems, f"{path}.certificatePem", item["certificatePem"])
        key = (
            _pem_key(problems, f"{path}.privateKeyPem", item["privateKeyPem"])
            if item.get("privateKeyPem")
            else None
        )
        if item.get("chainPem") and item["chainPem"].strip():
            try:
                load_certificates(item["chainPem"])
            except pki_errors.PkiError:
                problems.add(f"{path}.chainPem", "holds no readable PEM certificate (corrupt PEM)")
        ok, metadata = problems.check(path, check_metadata, item.get("metadata"))
        status = CertificateStatus(item.get("status", "active"))
        revoked_at: datetime | None = None
        reason: str | None = None
        if status == CertificateStatus.REVOKED:
            revoked_at = _parse_time(problems, f"{path}.revokedAt", item["revokedAt"])
            _, reason = problems.check(
                path,
                normalize_reason,
                item.get("revocationReason") or "unspecified",
                renames={"reason": "revocationReason"},
            )
        elif item.get("revokedAt") or item.get("revocationReason"):
            problems.add(
                f"{path}.status", "revokedAt and revocationReason are given only with status revoked"
            )
        if cert is None:
            continue
        facts = describe_certificate(cert)
        if facts.is_ca:
            problems.add(
                f"{path}.certificatePem",
                "is a CA certificate; list CAs under certificateAuthorities "
                "(the inventory holds end-entity certificates)",
            )
        if key is not None and not public_keys_match(key, cert.public_key()):
            problems.add(f"{path}.privateKeyPem", "does not match the certificate's public key")
        duplicate = facts.fingerprint_sha256 in fingerprints
        if duplicate:
            problems.add(
                f"{path}.certificatePem", f"the same certificate as {fingerprints[facts.fingerprint_sha256]}"
            )
        else:
            fingerprints[facts.fingerprint_sha256] = f"{path}.certificatePem"
        profile = parsed.profiles.get(profile_slug)
        ca = parsed.cas.get(profile.data["ca"]) if profile is not None else None
        if ca is not None and ca.certificate is not None:
            if not verify_issued_by(cert, ca.certificate):
                problems.add(
                    f"{path}.certificatePem",
                    f"was not issued by certificate authority {ca.slug!r} of profile {profile_slug!r}",
                )
            first = serials.setdefault((ca.slug, facts.serial_hex), f"{path}.certificatePem")
            if first != f"{path}.certificatePem" and not duplicate:
                problems.add(
                    f"{path}.certificatePem",
                    f"serial number {facts.serial_hex} of CA {ca.slug!r} is used by {first} too",
                )
        if not ok:
            continue
        parsed.certificates.append(
            CertificateItem(
                index=index,
                slug=item["slug"],
                path=path,
                data=item,
                profile_slug=profile_slug,
                certificate=cert,
                facts=facts,
                key=key,
                status=status,
                revoked_at=revoked_at,
                revocation_reason=reason,
                auto_renew=bool(item.get("autoRenew", False)),
                metadata=metadata,
            )
        )


# ---------------------------------------------------------------- alerts, syncs, approval policies

ALERT_RENAMES = {"profileIds": "profiles"}
SYNC_RENAMES = {"profileIds": "profiles", "certificateIds": "certificates"}
APPROVAL_RENAMES = {"profileIds": "profiles", "bypassMachineIdentities": "bypassForMachines"}


def channel_specs(item: dict[str, Any]) -> list[alert_service.ChannelSpec]:
    return [
        alert_service.ChannelSpec(type=c["type"], config=dict(c.get("config") or {}), secret=c.get("secret"))
        for c in item["channels"]
    ]


def _check_references(
    problems: Problems, path: str, key: str, values: list[Any], known: set[str], what: str
) -> None:
    for position, value in enumerate(values):
        if value not in known:
            problems.add(f"{path}.{key}[{position}]", f"unknown {what} {value!r}")


def _parse_alerts(parsed: ParsedExport, problems: Problems, bad: set[str], profile_slugs: set[str]) -> None:
    seen: dict[str, str] = {}
    for index, path, item in _items(parsed.document, "alerts", bad):
        if not _unique(problems, seen, item["name"].strip(), f"{path}.name", "alert name"):
            continue
        problems.check(path, alert_service.validate_name, item["name"])
        ok, chosen = problems.check(path, alert_service.validate_event_types, item["eventTypes"])
        ok_days, days = problems.check(path, alert_service.parse_thresholds, item.get("thresholds") or [])
        if ok and ok_days:
            problems.check(path, alert_service._check_thresholds, chosen, days)
        problems.check(path, alert_service.validate_name_pattern, item.get("namePattern"))
        problems.check(path, alert_service._check_channels, channel_specs(item))
        _check_references(problems, path, "profiles", item.get("profiles") or [], profile_slugs, "profile")
        parsed.alerts.append((index, item))


def _parse_syncs(parsed: ParsedExport, problems: Problems, bad: set[str], profile_slugs: set[str]) -> None:
    seen: dict[str, str] = {}
    certificate_slugs = _all_slugs(parsed.document, "certificates")
    for index, path, item in _items(parsed.document, "syncs", bad):
        if not _unique(problems, seen, item["name"].strip(), f"{path}.name", "sync name"):
            continue
        problems.check(path, sync_service.validate_name, item["name"])
        ok_kind, kind = problems.check(path, sync_service.parse_destination, item["destination"])
        ok_fmt, fmt = problems.check(path, sync_service.parse_format, item.get("format", "pem"))
        problems.check(path, sync_service.validate_template, item.get("nameTemplate", "{{certificateId}}"))
        problems.check(path, sync_service.validate_concurrency, item.get("maxConcurrency"))
        problems.check(path, sync_service.validate_metadata_filter, item.get("metadata"))
        ok_cred, cleaned = problems.check(path, sync_service._clean_credentials, item.get("credentials"))
        if ok_kind and ok_fmt and ok_cred:
            given = {k: v for k, v in cleaned.items() if v is not None}
            problems.check(path, sync_service._check_destination, kind, fmt, item["connection"], given)
        _check_references(problems, path, "profiles", item.get("profiles") or [], profile_slugs, "profile")
        _check_references(
            problems, path, "certificates", item.get("certificates") or [], certificate_slugs, "certificate"
        )
        parsed.syncs.append((index, item))


def approver_members(parsed: ParsedExport) -> dict[str, MemberItem]:
    """Approver text -> member: a user's email (any case) or a machine identity's name."""
    found: dict[str, MemberItem] = {}
    for member in parsed.members:
        found[member.key if member.kind == "machine" else member.key.lower()] = member
    return found


def find_approver(members: dict[str, MemberItem], text: str) -> MemberItem | None:
    return members.get(text.strip().lower()) or members.get(text.strip())


def _parse_approvals(
    parsed: ParsedExport, problems: Problems, bad: set[str], profile_slugs: set[str]
) -> None:
    seen: dict[str, str] = {}
    members = approver_members(parsed)
    declared_members = {
        (
            str(m.get("email", "")).strip().lower()
            if m.get("kind") == "user"
            else str(m.get("name", "")).strip()
        )
        for m in parsed.items("members")
        if isinstance(m, dict)
    }
    covered: dict[str, str] = {}
    for index, path, item in _items(parsed.document, "approvalPolicies", bad):
        if not _unique(problems, seen, item["name"].strip(), f"{path}.name", "approval policy name"):
            continue
        problems.check(path, approval_service._name, item["name"])
        try:
            ttl = parse_duration(item.get("maxRequestTtl", "7d"))
        except pki_errors.PkiError as exc:
            problems.add(f"{path}.maxRequestTtl", exc.message)
            ttl = timedelta(days=7)
        problems.check(path, approval_service._ttl, ttl)
        _check_references(problems, path, "profiles", item["profiles"], profile_slugs, "profile")
        if item.get("active", True):
            for position, slug in enumerate(item["profiles"]):
                if slug in covered:
                    problems.add(
                        f"{path}.profiles[{position}]",
                        f"profile {slug!r} is already covered by the active policy at {covered[slug]}",
                    )
                covered.setdefault(slug, path)
        if len(item["steps"]) > approval_service.MAX_STEPS:
            problems.add(f"{path}.steps", f"at most {approval_service.MAX_STEPS} steps")
        for step_index, step in enumerate(item["steps"]):
            where = f"{path}.steps[{step_index}]"
            approvers = list(dict.fromkeys(a.strip() for a in step["approvers"]))
            required = step.get("requiredApprovals", 1)
            if len(approvers) > approval_service.MAX_APPROVERS:
                problems.add(f"{where}.approvers", f"at most {approval_service.MAX_APPROVERS} approvers")
            if not 1 <= required <= len(approvers):
                problems.add(
                    f"{where}.requiredApprovals",
                    f"requires {required} approvals but names {len(approvers)} approver(s)",
                )
            for position, text in enumerate(step["approvers"]):
                member = find_approver(members, text)
                if member is None:
                    if text.strip().lower() not in declared_members and text.strip() not in declared_members:
                        problems.add(
                            f"{where}.approvers[{position}]",
                            f"{text!r} is not a member of the project (members by email or machine name)",
                        )
                    continue
                if "approvals:decide" not in member.permissions:
                    problems.add(
                        f"{where}.approvers[{position}]",
                        f"{text!r} holds role {member.custom_role or member.role}, "
                        "which cannot decide approvals",
                    )
        parsed.approval_policies.append((index, item))
