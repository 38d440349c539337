"""The sync sweep: claim due (sync, certificate) targets, push or remove them, record the outcome.

Claiming leases a target (status running until leased_until) inside one transaction with FOR UPDATE SKIP
LOCKED on PostgreSQL, and the conditional update makes the lease atomic on any database, so two workers
never push the same target at once. At most N pushes per destination are in flight (the sync's
max_concurrency or KEYWARD_SYNC_MAX_CONCURRENCY): running leases count against it across workers, and a
semaphore per sync bounds this worker. Failures are retried with exponential backoff and jitter.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from tortoise.expressions import Q
from tortoise.functions import Count
from tortoise.transactions import in_transaction

from core import metrics, runtime
from core.ca import signing_material
from core.issuance import private_key_context
from core.sync import render_name, unseal_credentials
from core.sync_destinations import Material, SyncFailure, Target, destination_for
from models import Application, Certificate, CertificateAuthority, CertificateProfile
from models.enums import CertificateStatus
from models.sync import Sync, SyncAction, SyncDestination, SyncFormat, SyncTarget, SyncTargetStatus
from pki import sealing
from pki.bundle import pkcs12_bundle
from pki.certificate import certificate_pem, load_certificate, load_certificates
from pki.errors import PkiError
from pki.jks import jks_keystore
from pki.key import load_private_key, serialize_private_key

log = logging.getLogger("keyward.sync")

MAX_ATTEMPTS = 10
BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(hours=1)
DEFAULT_LEASE = timedelta(minutes=5)


def backoff_delay(attempts: int, *, rng: random.Random | None = None) -> timedelta:
    """Exponential with jitter: in [ceiling/2, ceiling], ceiling = min(cap, base * 2^(attempts-1))."""
    ceiling = min(BACKOFF_CAP.total_seconds(), BACKOFF_BASE.total_seconds() * 2 ** max(attempts - 1, 0))
    return timedelta(seconds=(rng or random).uniform(ceiling / 2, ceiling))


def concurrency_of(sync: Sync) -> int:
    return int(sync.max_concurrency or runtime.settings().sync_max_concurrency)


# ---------------------------------------------------------------- expiry


async def queue_expired_removals(now: datetime) -> int:
    """Certificates past notAfter leave the destinations of syncs that remove on expiry."""
    ids = await SyncTarget.filter(
        action=SyncAction.PUSH,
        status=SyncTargetStatus.SUCCEEDED,
        sync__remove_on_expiry=True,
        certificate__not_after__lte=now,
    ).values_list("id", flat=True)
    if not ids:
        return 0
    return await SyncTarget.filter(id__in=list(ids), status=SyncTargetStatus.SUCCEEDED).update(
        action=SyncAction.REMOVE,
        status=SyncTargetStatus.PENDING,
        attempts=0,
        next_attempt_at=now,
        message="expired: queued for removal",
        updated_at=now,
    )


# ---------------------------------------------------------------- claiming


def _due(now: datetime) -> Q:
    waiting = Q(status__in=[SyncTargetStatus.PENDING, SyncTargetStatus.FAILED]) & Q(next_attempt_at__lte=now)
    abandoned = Q(status=SyncTargetStatus.RUNNING) & Q(leased_until__lt=now)
    return waiting | abandoned


async def _claim(now: datetime, batch_size: int, lease: timedelta) -> list[SyncTarget]:
    async with in_transaction() as conn:
        rows = await (
            SyncTarget.select_for_update(skip_locked=True)
            .using_db(conn)
            .filter(_due(now))
            .order_by("next_attempt_at", "id")
            .limit(batch_size)
        )
        if not rows:
            return []
        sync_ids = list({row.sync_id for row in rows})
        syncs = {s.id: s for s in await Sync.filter(id__in=sync_ids).using_db(conn)}
        running = dict(
            await SyncTarget.filter(
                sync_id__in=sync_ids, status=SyncTargetStatus.RUNNING, leased_until__gte=now
            )
            .using_db(conn)
            .annotate(n=Count("id"))
            .group_by("sync_id")
            .values_list("sync_id", "n")
        )
        room = {sid: concurrency_of(s) - int(running.get(sid, 0)) for sid, s in syncs.items()}
        claimed: list[SyncTarget] = []
        for row in rows:
            if room.get(row.sync_id, 0) <= 0:
                continue  # the destination is busy: the row stays due for the next sweep
            taken = (
                await SyncTarget.filter(id=row.id)
                .filter(_due(now))
                .using_db(conn)
                .update(status=SyncTargetStatus.RUNNING, leased_until=now + lease, last_started_at=now)
            )
            if taken:
                room[row.sync_id] -= 1
                row.status = SyncTargetStatus.RUNNING
                claimed.append(row)
    return claimed


# ---------------------------------------------------------------- material


async def _root_pem(certificate: Certificate) -> str | None:
    if certificate.ca_id is not None:
        ca = await CertificateAuthority.get_or_none(id=certificate.ca_id)
        if ca is not None:
            material = await signing_material(ca)
            if material.root is not None:
                return certificate_pem(material.root)
    return certificate.root_pem


def _wants_key(sync: Sync) -> bool:
    return bool(sync.include_private_key)


async def build_material(sync: Sync, certificate: Certificate, application: Application) -> Material:
    """The certificate as the sync's format wants it. The private key is unsealed only when the sync
    includes keys and the server holds one; never otherwise."""
    profile_name = None
    if certificate.profile_id is not None:
        profile = await CertificateProfile.get_or_none(id=certificate.profile_id)
        profile_name = profile.name if profile is not None else None
    name = render_name(
        sync.name_template,
        {
            "certificateId": str(certificate.id),
            "commonName": certificate.common_name,
            "applicationName": application.name,
            "profileName": profile_name,
        },
    )
    chain = (
        [certificate_pem(c) for c in load_certificates(certificate.chain_pem)]
        if certificate.chain_pem.strip()
        else []
    )
    if sync.include_root:
        root = await _root_pem(certificate)
        if root is None:
            raise SyncFailure(
                "the root CA certificate of this certificate is not known: turn includeRoot off",
                retryable=False,
            )
        if root not in chain:
            chain.append(root)
    key_pem: str | None = None
    private_key = None
    if _wants_key(sync) and certificate.encrypted_private_key is not None:
        try:
            pem = sealing.unseal(
                kek=runtime.kek(),
                sealed=bytes(certificate.encrypted_private_key),
                context=private_key_context(certificate.id),
            )
        except PkiError:
            raise SyncFailure("the certificate's private key cannot be decrypted", retryable=False) from None
        private_key = load_private_key(pem)
        key_pem = serialize_private_key(private_key).decode("ascii")
    bundle: bytes | None = None
    fmt = SyncFormat(sync.format)
    if fmt != SyncFormat.PEM:
        password = unseal_credentials(sync).get("keystorePassword")
        if not password:
            raise SyncFailure(
                f"format {fmt.value.upper()} needs credentials.keystorePassword", retryable=False
            )
        leaf: x509.Certificate = load_certificate(certificate.certificate_pem)
        chain_certs = [load_certificate(pem) for pem in chain]
        if fmt == SyncFormat.PKCS12:
            bundle = pkcs12_bundle(
                certificate=leaf,
                chain=chain_certs,
                private_key=private_key,
                password=password,
                friendly_name=name,
            )
        else:
            bundle = jks_keystore(
                certificate=leaf, chain=chain_certs, private_key=private_key, password=password, alias=name
            )
    return Material(
        certificate_id=certificate.id,
        name=name,
        common_name=certificate.common_name,
        serial=certificate.serial_hex,
        not_after=certificate.not_after,
        format=fmt,
        certificate_pem=certificate_pem(load_certificate(certificate.certificate_pem)),
        chain_pems=chain,
        private_key_pem=key_pem,
        bundle=bundle,
    )


# ---------------------------------------------------------------- one target


@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str | None = None
    retryable: bool = True
    reference: str | None = None


async def _target_view(sync: Sync, application: Application) -> Target:
    try:
        credentials = unseal_credentials(sync)
    except PkiError:
        raise SyncFailure(
            "the sync's credentials cannot be decrypted (was the key-encryption key replaced?): "
            "set them again",
            retryable=False,
        ) from None
    return Target(
        sync_id=sync.id,
        sync_name=sync.name,
        application_name=application.name,
        connection=dict(sync.connection or {}),
        credentials=credentials,
    )


async def _run_one(target: SyncTarget, sync: Sync, now: datetime) -> Outcome:
    certificate = await Certificate.get_or_none(id=target.certificate_id)
    application = await Application.get_or_none(id=sync.application_id)
    if certificate is None or application is None:
        return Outcome(ok=False, message="the certificate no longer exists", retryable=False)
    destination = destination_for(SyncDestination(sync.destination))
    view = await _target_view(sync, application)
    if target.action == SyncAction.REMOVE:
        if target.remote_reference:
            await destination.remove(view, target.remote_reference, certificate.id)
        return Outcome(ok=True)
    if certificate.status == CertificateStatus.REVOKED:
        return Outcome(ok=False, message="the certificate is revoked: it is not pushed", retryable=False)
    if certificate.not_after <= now:
        return Outcome(ok=False, message="the certificate has expired: it is not pushed", retryable=False)
    material = await build_material(sync, certificate, application)
    reference = target.remote_reference
    if reference is None and destination.reuses_reference and target.replaces_target_id is not None:
        predecessor = await SyncTarget.get_or_none(id=target.replaces_target_id)
        if predecessor is not None:
            reference = predecessor.remote_reference
    new_reference = await destination.push(view, material, reference)
    return Outcome(ok=True, reference=new_reference)


async def _attempt(target: SyncTarget, sync: Sync, now: datetime) -> Outcome:
    try:
        return await _run_one(target, sync, now)
    except SyncFailure as failure:
        return Outcome(ok=False, message=failure.message, retryable=failure.retryable)
    except Exception as error:  # noqa: BLE001 - a bug must not stop the sweep; its text may hold a secret
        log.exception("sync %s: target %s raised", sync.id, target.id)
        return Outcome(ok=False, message=f"internal error: {type(error).__name__}", retryable=True)


async def _record(target: SyncTarget, sync: Sync, outcome: Outcome) -> str:
    now = datetime.now(UTC)
    attempts = target.attempts + 1
    values: dict[str, Any] = {
        "attempts": attempts,
        "leased_until": None,
        "last_finished_at": now,
        "updated_at": now,
    }
    if outcome.ok and target.action == SyncAction.REMOVE:
        values |= {
            "status": SyncTargetStatus.REMOVED,
            # Why it was removed (replaced, expired) stays; a removal by hand or on revocation has none.
            "message": (target.message or "").replace(": queued for removal", "") or None,
            "remote_reference": None,
            "next_attempt_at": None,
            "last_succeeded_at": now,
        }
    elif outcome.ok:
        values |= {
            "status": SyncTargetStatus.SUCCEEDED,
            "message": None,
            "remote_reference": outcome.reference,
            "next_attempt_at": None,
            "last_succeeded_at": now,
            "replaces_target_id": None,
        }
    else:
        retry = outcome.retryable and attempts < MAX_ATTEMPTS
        values |= {
            "status": SyncTargetStatus.FAILED,
            "message": outcome.message,
            "next_attempt_at": now + backoff_delay(attempts) if retry else None,
        }
    async with in_transaction() as conn:
        # Only a target still leased by this run moves: one re-queued meanwhile (runSync, a revocation) is
        # pending again and keeps its new request.
        moved = (
            await SyncTarget.filter(id=target.id, status=SyncTargetStatus.RUNNING)
            .using_db(conn)
            .update(**values)
        )
        if (
            moved
            and outcome.ok
            and target.action == SyncAction.PUSH
            and target.replaces_target_id is not None
        ):
            await _retire_predecessor(target, outcome.reference, conn, now)
    status = values["status"]
    if not outcome.ok:
        metrics.record_sync_failure(SyncDestination(sync.destination).value)
        log.warning(
            "sync %s (%s) %s of certificate %s failed (attempt %d): %s",
            sync.id,
            SyncDestination(sync.destination).value,
            target.action.value,
            target.certificate_id,
            attempts,
            outcome.message,
        )
    return str(status.value)


async def _retire_predecessor(target: SyncTarget, reference: str | None, conn: Any, now: datetime) -> None:
    """After a renewal's push: the predecessor was overwritten (same reference) or is queued for removal."""
    predecessor = await SyncTarget.filter(id=target.replaces_target_id).using_db(conn).first()
    if predecessor is None or predecessor.status == SyncTargetStatus.REMOVED:
        return
    if predecessor.remote_reference is None or predecessor.remote_reference == reference:
        await (
            SyncTarget.filter(id=predecessor.id)
            .using_db(conn)
            .update(
                status=SyncTargetStatus.REMOVED,
                remote_reference=None,
                next_attempt_at=None,
                message=f"replaced by certificate {target.certificate_id}",
                updated_at=now,
            )
        )
        return
    await (
        SyncTarget.filter(id=predecessor.id)
        .using_db(conn)
        .update(
            action=SyncAction.REMOVE,
            status=SyncTargetStatus.PENDING,
            attempts=0,
            next_attempt_at=now,
            message=f"replaced by certificate {target.certificate_id}: queued for removal",
            updated_at=now,
        )
    )


# ---------------------------------------------------------------- the sweep


@dataclass
class SyncReport:
    attempted: int = 0
    succeeded: int = 0
    failed: int = 0
    expired_queued: int = 0


async def push_due(
    *, now: datetime | None = None, batch_size: int = 100, lease: timedelta = DEFAULT_LEASE
) -> SyncReport:
    """Push or remove every due target once (a batch at a time, destinations bounded); returns counts."""
    report = SyncReport()
    started = datetime.now(UTC)
    clock = now or started
    report.expired_queued = await queue_expired_removals(clock)
    semaphores: dict[uuid.UUID, asyncio.Semaphore] = {}
    while True:
        # Each batch's lease runs from its own claim: a long sweep must not hand out leases already past.
        claimed = await _claim(clock + (datetime.now(UTC) - started), batch_size, lease)
        if not claimed:
            return report
        syncs = {s.id: s for s in await Sync.filter(id__in=list({t.sync_id for t in claimed}))}
        for sync_id, sync in syncs.items():
            semaphores.setdefault(sync_id, asyncio.Semaphore(concurrency_of(sync)))

        async def one(target: SyncTarget, syncs: dict[uuid.UUID, Sync] = syncs) -> str:
            sync = syncs.get(target.sync_id)
            if sync is None:
                return "gone"  # deleted meanwhile: its targets went with it
            async with semaphores[sync.id]:
                outcome = await _attempt(target, sync, clock)
                try:
                    return await _record(target, sync, outcome)
                except Exception:  # noqa: BLE001 - e.g. the sync was deleted meanwhile; the others go on
                    log.exception("sync target %s: outcome not recorded; its lease will run out", target.id)
                    return "unrecorded"

        results = await asyncio.gather(*(one(t) for t in claimed))
        report.attempted += len(claimed)
        counts: dict[str, int] = defaultdict(int)
        for result in results:
            counts[result] += 1
        report.succeeded += counts["succeeded"] + counts["removed"]
        report.failed += counts["failed"]
        # Loop until nothing is due: a busy destination yields a few rows a round, then has room again.
