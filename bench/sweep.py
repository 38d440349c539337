"""Sweeps scale with what is due, not with the inventory (issue #3, item 7).

    .venv/bin/python -m bench.sweep [--sizes 100000,1000000] [--due 1000] [--repeat 5]

In a temporary PostgreSQL database (127.0.0.1:5432) it writes the same 1,000 certificates due for renewal
(real certificates, server-held keys) and the same 1,000 inside an expiration alert's 30-day threshold,
then fills the table with COPY (not the issuance path) to each size: certificates of several applications,
most active and far from expiry, some auto-renewed with a future due date, some renewed, revoked or expired.
At each size it times the renewal sweep's due-row query and the full `renew_due` over the 1,000, and the
expiration scan's due-row query and the full `scan_expiring` (first run firing 1,000 notices, then a
repeat run with nothing new); it prints the sizes side by side with the ratio of the largest to the
smallest (goal: under 1.5) and the query plans of both due-row queries at the largest size.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

POSTGRES_ADMIN_URL = os.environ.get("KEYWARD_BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432/postgres")
THRESHOLD_DAYS = 30
OTHER_APPLICATIONS = 9


class Scene:
    """The organization, its PKI, the application with the alert, and the special rows' ids."""

    organization_id: uuid.UUID
    ca_id: uuid.UUID
    profile_id: uuid.UUID
    application_id: uuid.UUID
    other_application_ids: list[uuid.UUID]
    due_ids: list[uuid.UUID]
    expiring_ids: list[uuid.UUID]


async def _make_scene(due: int) -> Scene:
    from core.authz import Actor
    from core.bootstrap import init_organization
    from core.ca import create_intermediate_ca, create_root_ca
    from models import (
        Alert,
        AlertChannel,
        Application,
        ApplicationProfile,
        CertificatePolicy,
        CertificateProfile,
    )
    from models.enums import ChannelType

    scene = Scene()
    org, _, _ = await init_organization(org_name="bench", admin_email="admin@bench.test")
    system = Actor.system(org.id, "bench")
    root = await create_root_ca(
        actor=system,
        name="sweep-root",
        subject="CN=Sweep Root,O=Keyward Bench",
        key_algorithm="EC_P256",
        validity="10y",
        path_length=None,
    )
    issuing = await create_intermediate_ca(
        actor=system,
        name="sweep-issuing",
        parent_ca_id=root.id,
        subject="CN=Sweep Issuing,O=Keyward Bench",
        key_algorithm="EC_P256",
        validity="5y",
        path_length=0,
    )
    policy = await CertificatePolicy.create(
        organization_id=org.id,
        name="sweep",
        rules={
            "subject": [{"type": "CN", "allowed": ["**.example.com"]}],
            "sans": [{"type": "DNS", "allowed": ["**.example.com"]}],
            "maxValidity": "397d",
        },
    )
    profile = await CertificateProfile.create(
        organization_id=org.id, name="sweep", ca_id=issuing.id, policy_id=policy.id, default_validity="90d"
    )
    application = await Application.create(organization_id=org.id, name="sweep-main")
    await ApplicationProfile.create(
        application_id=application.id,
        profile_id=profile.id,
        api_enabled=True,
        api_auto_renew=True,
        api_renew_before_days=30,
    )
    others = [
        await Application.create(organization_id=org.id, name=f"sweep-other-{n}")
        for n in range(OTHER_APPLICATIONS)
    ]
    alert = await Alert.create(
        application_id=application.id,
        name="expiring",
        event_types=["expiration"],
        thresholds_days=[THRESHOLD_DAYS],
    )
    await AlertChannel.create(
        alert_id=alert.id, type=ChannelType.WEBHOOK, config={"url": "https://hooks.example.com/keyward"}
    )
    scene.organization_id = org.id
    scene.ca_id = issuing.id
    scene.profile_id = profile.id
    scene.application_id = application.id
    scene.other_application_ids = [other.id for other in others]
    scene.due_ids = await _due_certificates(scene, system, due)
    scene.expiring_ids = await _expiring_certificates(scene, due)
    return scene


async def _due_certificates(scene: Scene, actor: Any, count: int) -> list[uuid.UUID]:
    """Real certificates for one reused P-256 key (sealed per row), auto-renewed and due an hour ago."""
    from core.issuance import (
        KeyMaterial,
        chain_pem_of,
        fact_columns,
        load_issuance_context,
        prepare_request,
        seal_private_key,
        sign,
    )
    from models import Certificate
    from models.enums import CertificateSource, CertificateStatus, EnrollmentMethod
    from pki.certificate import certificate_pem, describe_certificate
    from pki.key import KeyAlgorithm, generate_private_key
    from pki.san import parse_san

    context = await load_issuance_context(
        actor=actor,
        application_id=scene.application_id,
        profile_id=scene.profile_id,
        method=EnrollmentMethod.API,
    )
    key = generate_private_key(KeyAlgorithm.EC_P256)
    material = KeyMaterial(key.public_key(), key, KeyAlgorithm.EC_P256)
    past = datetime.now(UTC) - timedelta(hours=1)
    rows = []
    for index in range(count):
        name = f"due-{index}.sweep.example.com"
        prepared = prepare_request(
            context,
            subject=[("CN", name)],
            sans=[parse_san(name)],
            key_algorithm=KeyAlgorithm.EC_P256,
            key_usages=None,
            extended_key_usages=None,
            validity=timedelta(days=40),  # beyond the alert's 30 days: due for renewal, not expiring
        )
        cert = sign(context, prepared, material)
        facts = describe_certificate(cert)
        certificate_id = uuid.uuid4()
        rows.append(
            Certificate(
                id=certificate_id,
                organization_id=scene.organization_id,
                application_id=scene.application_id,
                profile_id=scene.profile_id,
                ca_id=scene.ca_id,
                **fact_columns(facts),
                status=CertificateStatus.ACTIVE,
                source=CertificateSource.ISSUED,
                enrollment_method=EnrollmentMethod.API,
                auto_renew=True,
                renew_before_days=30,
                renewal_due_at=past,
                certificate_pem=certificate_pem(cert),
                chain_pem=chain_pem_of(context.material),
                encrypted_private_key=seal_private_key(certificate_id, key),
                fingerprint_sha256=facts.fingerprint_sha256,
            )
        )
    await Certificate.bulk_create(rows, batch_size=500)
    return [row.id for row in rows]


async def _expiring_certificates(scene: Scene, count: int) -> list[uuid.UUID]:
    """Rows of the alert's application expiring within its threshold (5 to 25 days from now)."""
    import asyncpg

    now = datetime.now(UTC)
    rng = random.Random(1)
    records = [
        _filler(scene, rng, now, application_id=scene.application_id, status="active", auto_renew=False)
        for _ in range(count)
    ]
    for index, record in enumerate(records):
        record["not_after"] = now + timedelta(days=5 + 20 * index / count)
        record["common_name"] = f"expiring-{index}.sweep.example.com"
    conn = await asyncpg.connect(_database_url)
    try:
        await _copy(conn, records)
    finally:
        await conn.close()
    return [record["id"] for record in records]


_database_url = ""
_COLUMNS: list[str] = []


def _filler(
    scene: Scene,
    rng: random.Random,
    now: datetime,
    *,
    application_id: uuid.UUID,
    status: str,
    auto_renew: bool,
) -> dict[str, Any]:
    """One inventory row that no sweep should touch unless the caller makes it due; not a real certificate."""
    row_id = uuid.uuid4()
    name = f"h{row_id.hex[:12]}.sweep.example.com"
    not_after = now + timedelta(days=rng.uniform(60, 400))
    if status == "expired":
        not_after = now - timedelta(days=rng.uniform(1, 300))
    not_before = not_after - timedelta(days=90)
    return {
        "id": row_id,
        "organization_id": scene.organization_id,
        "application_id": application_id,
        "legacy_project_id": None,
        "profile_id": scene.profile_id,
        "ca_id": scene.ca_id,
        "serial_hex": row_id.hex.upper(),
        "common_name": name,
        "subject_dn": f"CN={name}",
        "sans": f'[{{"type": "DNS", "value": "{name}"}}]',
        "name_search": name,
        "key_algorithm": "EC_P256",
        "signature_algorithm": "ecdsa-with-SHA256",
        "key_usages": '["digitalSignature"]',
        "extended_key_usages": '["serverAuth"]',
        "not_before": not_before,
        "not_after": not_after,
        "status": status,
        "source": "issued",
        "enrollment_method": "api",
        "auto_renew": auto_renew,
        "renew_before_days": 30,
        "renewed_from_id": None,
        "revoked_at": now if status == "revoked" else None,
        "revocation_reason": "superseded" if status == "revoked" else None,
        "certificate_pem": "-",
        "chain_pem": "",
        "root_pem": None,
        "encrypted_private_key": None,
        "fingerprint_sha256": uuid.uuid4().hex + row_id.hex,
        "metadata": "{}",
        "renewal_due_at": not_after - timedelta(days=30) if auto_renew and status == "active" else None,
        "renewal_error": None,
        "renewal_attempts": 0,
        "next_renewal_attempt_at": None,
        "created_by_id": None,
        "created_at": not_before,
        "updated_at": not_before,
    }


def _fillers(scene: Scene, count: int, seed: int) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    applications = [scene.application_id, *scene.other_application_ids]
    for _ in range(count):
        roll = rng.random()
        status = (
            "active" if roll < 0.85 else "renewed" if roll < 0.93 else "revoked" if roll < 0.97 else "expired"
        )
        # Half of the inventory sits in the alert's application: its scan must still read only what is due.
        application_id = scene.application_id if rng.random() < 0.5 else rng.choice(applications)
        yield _filler(
            scene, rng, now, application_id=application_id, status=status, auto_renew=rng.random() < 0.4
        )


async def _copy(conn: Any, records: Any, chunk: int = 50_000) -> None:
    global _COLUMNS
    if not _COLUMNS:
        rows = await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'certificate'"
        )
        _COLUMNS = [row["column_name"] for row in rows]
    batch: list[tuple[Any, ...]] = []
    for record in records:
        batch.append(tuple(record[column] for column in _COLUMNS))
        if len(batch) >= chunk:
            await conn.copy_records_to_table("certificate", records=batch, columns=_COLUMNS)
            batch = []
    if batch:
        await conn.copy_records_to_table("certificate", records=batch, columns=_COLUMNS)


async def _fill_to(scene: Scene, size: int, seed: int) -> float:
    """COPY filler rows until the table holds `size` rows; returns the seconds it took, ANALYZE included."""
    import asyncpg

    conn = await asyncpg.connect(_database_url)
    try:
        present = await conn.fetchval("SELECT count(*) FROM certificate")
        start = time.perf_counter()
        await _copy(conn, _fillers(scene, size - present, seed))
        await conn.execute("ANALYZE certificate")
        return time.perf_counter() - start
    finally:
        await conn.close()


# ---------------------------------------------------------------- the measured sweeps


def _expiration_due_query(scene: Scene, now: datetime) -> Any:
    """The expiration scan's due-row read (core/expiration.py, one alert of THRESHOLD_DAYS)."""
    from models import Certificate
    from models.enums import CertificateStatus

    return Certificate.filter(
        application_id=scene.application_id,
        status=CertificateStatus.ACTIVE,
        not_after__gt=now,
        not_after__lte=now + timedelta(days=THRESHOLD_DAYS),
    ).order_by("not_after", "id")


async def _median(run: Callable[[], Awaitable[Any]], repeat: int) -> tuple[float, Any]:
    result = await run()  # warm the cache and the plan, as a sweep that runs every minute has them
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = await run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


async def _reset(scene: Scene) -> None:
    """Undo the sweeps: the 1,000 due again, no successors, notices, deliveries or events."""
    from models import Certificate, Delivery, ExpirationNotice, OutboxEvent
    from models.enums import CertificateStatus

    await Certificate.filter(renewed_from_id__in=scene.due_ids).delete()
    await Certificate.filter(id__in=scene.due_ids).update(
        status=CertificateStatus.ACTIVE,
        renewal_due_at=datetime.now(UTC) - timedelta(hours=1),
        next_renewal_attempt_at=None,
        renewal_attempts=0,
        renewal_error=None,
    )
    await ExpirationNotice.all().delete()
    await Delivery.all().delete()
    await OutboxEvent.all().delete()


async def _measure(scene: Scene, repeat: int) -> dict[str, float]:
    from core.expiration import scan_expiring
    from core.renewal import due_query, renew_due
    from models import Certificate

    await _reset(scene)
    due_count = len(scene.due_ids)
    results: dict[str, float] = {}

    now = datetime.now(UTC)
    seconds, ids = await _median(lambda: due_query(now).values_list("id", flat=True), repeat)
    assert sorted(ids) == sorted(scene.due_ids), f"renewal due query found {len(ids)}, expected {due_count}"
    results["renewal: due-row query"] = seconds

    start = time.perf_counter()
    report = await renew_due()
    results[f"renewal: renew_due ({due_count:,} renewals)"] = time.perf_counter() - start
    assert len(report.renewed) == due_count and not report.failed, f"renew_due: {report}"
    assert await Certificate.filter(renewed_from_id__in=scene.due_ids).count() == due_count

    seconds, rows = await _median(
        lambda: _expiration_due_query(scene, now).values_list("id", flat=True), repeat
    )
    assert sorted(rows) == sorted(scene.expiring_ids), f"expiration due query found {len(rows)}"
    results["expiration: due-row query"] = seconds

    start = time.perf_counter()
    fired = await scan_expiring()
    results[f"expiration: scan_expiring (fires {len(scene.expiring_ids):,})"] = time.perf_counter() - start
    assert fired == len(scene.expiring_ids), f"scan_expiring fired {fired}"
    start = time.perf_counter()
    again = await scan_expiring()
    results["expiration: scan_expiring (repeat, none new)"] = time.perf_counter() - start
    assert again == 0, f"a repeated scan fired {again}"
    return results


async def _plans(scene: Scene) -> list[str]:
    from core.renewal import due_query
    from models import Certificate

    conn = Certificate._meta.db
    now = datetime.now(UTC)
    out = []
    for label, query in (
        ("renewal claim", due_query(now).select_for_update(skip_locked=True).limit(50).only("id")),
        ("expiration scan", _expiration_due_query(scene, now)),
    ):
        rows = await conn.execute_query_dict("EXPLAIN " + query.sql(params_inline=True))
        out.append(f"{label}:\n  " + "\n  ".join(row["QUERY PLAN"] for row in rows))
    return out


def _print(sizes: list[int], table: dict[int, dict[str, float]]) -> None:
    first, last = sizes[0], sizes[-1]
    labels = list(table[first])
    head = f"{'':46}" + "".join(f"{size:>14,}" for size in sizes) + f"{f'ratio {last // first}x':>12}"
    print(head)
    for label in labels:
        cells = "".join(f"{table[size][label] * 1000:>11.1f} ms" for size in sizes)
        ratio = table[last][label] / table[first][label]
        print(f"{label:46}{cells}{ratio:>12.2f}")


async def main(sizes: list[int], due: int, repeat: int, keep: bool) -> None:
    global _database_url
    from tortoise import Tortoise

    from core import runtime
    from core.config import Settings
    from core.db import create_scratch_database, drop_scratch_database, generate_schema, tortoise_config
    from pki.sealing import generate_kek

    _database_url = await create_scratch_database(POSTGRES_ADMIN_URL, prefix="keyward_sweep")
    print(f"database {_database_url.rsplit('/', 1)[1]}; {due:,} due for renewal, {due:,} expiring")
    runtime.configure(
        Settings(database_url=_database_url, public_url="http://127.0.0.1:8000", kek_file="unused"),
        kek=generate_kek(),
    )
    await Tortoise.init(config=tortoise_config(_database_url))
    try:
        await generate_schema()
        scene = await _make_scene(due)
        table: dict[int, dict[str, float]] = {}
        for index, size in enumerate(sizes):
            await _reset(scene)  # successors of the previous size's sweep are not part of the inventory
            seconds = await _fill_to(scene, size, seed=index)
            print(f"filled to {size:,} rows in {seconds:.1f}s (COPY + ANALYZE)")
            table[size] = await _measure(scene, repeat)
        print()
        _print(sizes, table)
        print()
        print("\n".join(await _plans(scene)))
    finally:
        await Tortoise.close_connections()
        if not keep:
            await drop_scratch_database(POSTGRES_ADMIN_URL, _database_url)


def _cli() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated row counts, ascending")
    parser.add_argument("--due", type=int, default=1000, help="certificates due for renewal (and expiring)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of each query (median)")
    parser.add_argument("--keep", action="store_true", help="keep the database for inspection")
    args = parser.parse_args()
    sizes = [int(text) for text in args.sizes.split(",")]
    asyncio.run(main(sizes, args.due, args.repeat, args.keep))


if __name__ == "__main__":
    _cli()
