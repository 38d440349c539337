"""Prometheus metrics: process counters fed by core and the worker, inventory gauges read from the database.

Two kinds, on purpose:
- Counters and histograms of what THIS process did (issuances and their latency, worker job runs, failed
  deliveries). Prometheus scrapes every process and sums; each API replica and each worker counts its own.
- Inventory gauges (certificates by status, expiring soon, outbox lag, failing deliveries) are read from the
  database at scrape time, so two API replicas give the same answer. Each is an indexed query (see
  models/certificate.py, models/outbox.py, models/alert.py), cached for a few seconds so a burst of
  scrapes costs one round of queries. Only the API serves them; the worker serves its counters alone.

The worker is a separate process with its own counters: `KEYWARD_WORKER_METRICS_PORT` makes it serve its
own /metrics (worker/metrics_server.py) rather than writing a row per job run (every few seconds, per job,
per replica) into the database. That is the usual Prometheus shape and costs the database nothing.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from tortoise.functions import Count

from models import Certificate, Delivery, OutboxEvent
from models.enums import CertificateStatus, ChannelType, DeliveryStatus

# What this process did ------------------------------------------------------------------------------------

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)

ISSUANCES = Counter(
    "keyward_certificates_issued",
    "Certificates issued by this process, by enrollment method, profile, application and kind "
    "(issue or renew).",
    ["method", "profile", "application", "kind"],
    registry=REGISTRY,
)
ISSUANCE_SECONDS = Histogram(
    "keyward_issuance_duration_seconds",
    "Time from loading the issuance context (after authentication) to the committed certificate row.",
    ["method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
DELIVERY_FAILURES = Counter(
    "keyward_delivery_failures",
    "Failed alert delivery attempts made by this process, by channel type.",
    ["channel"],
    registry=REGISTRY,
)
# Syncs arrive with issue #6: the family is declared now (no samples until a sync fails), so dashboards
# and alert rules can be written against its final name.
SYNC_FAILURES = Counter(
    "keyward_sync_failures",
    "Failed certificate sync pushes made by this process, by destination type.",
    ["destination"],
    registry=REGISTRY,
)
JOB_RUNS = Counter(
    "keyward_worker_job_runs",
    "Worker job runs in this process, by job id and outcome (ok or error).",
    ["job", "outcome"],
    registry=REGISTRY,
)
JOB_SECONDS = Histogram(
    "keyward_worker_job_duration_seconds",
    "Duration of worker job runs in this process, by job id.",
    ["job"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
    registry=REGISTRY,
)


def record_issuance(*, method: str, profile: str, application: str, kind: str, seconds: float) -> None:
    """Called once per stored certificate, from core/issuance.py's store_certificate (the one path)."""
    ISSUANCES.labels(method=method, profile=profile, application=application, kind=kind).inc()
    ISSUANCE_SECONDS.labels(method=method).observe(seconds)


def record_delivery_failure(channel: str) -> None:
    DELIVERY_FAILURES.labels(channel=channel).inc()


def record_sync_failure(destination: str) -> None:
    SYNC_FAILURES.labels(destination=destination).inc()


def record_job_run(*, job: str, outcome: str, seconds: float) -> None:
    JOB_RUNS.labels(job=job, outcome=outcome).inc()
    JOB_SECONDS.labels(job=job).observe(seconds)


# What the database holds ----------------------------------------------------------------------------------

EXPIRING_WINDOWS_DAYS = (7, 30)
INVENTORY_MAX_AGE_SECONDS = 5.0


@dataclass(frozen=True)
class Inventory:
    by_status: dict[str, int]
    expiring: dict[int, int]  # window in days -> active certificates whose notAfter falls inside it
    outbox_pending: int
    outbox_lag_seconds: float  # age of the oldest undelivered event; 0 when none waits
    deliveries: dict[tuple[str, str], int] = field(default_factory=dict)  # (channel, state) -> count


async def read_inventory(now: datetime | None = None) -> Inventory:
    """Six small indexed queries; none reads certificate rows beyond the (status, not_after) index."""
    now = now or datetime.now(UTC)
    by_status = {status.value: 0 for status in CertificateStatus}
    # GROUP BY over the (status, not_after) index: COUNT(status), not COUNT(id), so PostgreSQL can answer
    # from the index alone (an index-only scan) instead of reading the table.
    rows = await Certificate.annotate(n=Count("status")).group_by("status").values("status", "n")
    for row in rows:
        by_status[str(getattr(row["status"], "value", row["status"]))] = int(row["n"])
    expiring = {}
    for days in EXPIRING_WINDOWS_DAYS:
        # A range over the same index: status = active AND now <= not_after < now + days.
        expiring[days] = await Certificate.filter(
            status=CertificateStatus.ACTIVE, not_after__gte=now, not_after__lt=now + timedelta(days=days)
        ).count()
    # The (processed_at, created_at) index answers both: pending rows, oldest first.
    pending = OutboxEvent.filter(processed_at__isnull=True)
    outbox_pending = await pending.count()
    oldest = await pending.order_by("created_at").first().values_list("created_at", flat=True)
    lag = max(0.0, (now - oldest).total_seconds()) if isinstance(oldest, datetime) else 0.0
    # Deliveries that are failing: still retrying after a failed attempt, or dead (out of attempts). The
    # (status, next_attempt_at) index keeps succeeded deliveries, the bulk, out of the read.
    deliveries = {(kind.value, state): 0 for kind in ChannelType for state in ("retrying", "dead")}
    failing = (
        await Delivery.filter(status__in=[DeliveryStatus.PENDING, DeliveryStatus.DEAD])
        .filter(attempts__gt=0)
        .annotate(n=Count("id"))
        .group_by("channel__type", "status")
        .values("channel__type", "status", "n")
    )
    for row in failing:
        channel = str(getattr(row["channel__type"], "value", row["channel__type"]))
        status = str(getattr(row["status"], "value", row["status"]))
        state = "dead" if status == DeliveryStatus.DEAD.value else "retrying"
        deliveries[(channel, state)] = deliveries.get((channel, state), 0) + int(row["n"])
    return Inventory(
        by_status=by_status,
        expiring=expiring,
        outbox_pending=outbox_pending,
        outbox_lag_seconds=lag,
        deliveries=deliveries,
    )


class _InventoryCache:
    def __init__(self) -> None:
        self.value: Inventory | None = None
        self.read_at = 0.0
        self.lock = asyncio.Lock()

    async def get(self, max_age: float) -> Inventory:
        async with self.lock:  # concurrent scrapes wait for one round of queries
            if self.value is None or time.monotonic() - self.read_at > max_age:
                self.value = await read_inventory()
                self.read_at = time.monotonic()
            return self.value

    def clear(self) -> None:
        self.value = None


_inventory_cache = _InventoryCache()


def clear_inventory_cache() -> None:
    _inventory_cache.clear()


def inventory_metrics(inventory: Inventory) -> Iterator[Metric]:
    status = GaugeMetricFamily(
        "keyward_certificates", "Certificates in the database, by status.", labels=["status"]
    )
    for name, count in sorted(inventory.by_status.items()):
        status.add_metric([name], count)
    yield status
    expiring = GaugeMetricFamily(
        "keyward_certificates_expiring",
        "Active certificates whose notAfter falls within the window from now (7d, 30d).",
        labels=["within"],
    )
    for days, count in sorted(inventory.expiring.items()):
        expiring.add_metric([f"{days}d"], count)
    yield expiring
    yield GaugeMetricFamily(
        "keyward_outbox_lag_seconds",
        "Age of the oldest domain event the worker has not processed yet; 0 when none waits.",
        value=inventory.outbox_lag_seconds,
    )
    yield GaugeMetricFamily(
        "keyward_outbox_pending_events", "Domain events not processed yet.", value=inventory.outbox_pending
    )
    deliveries = GaugeMetricFamily(
        "keyward_deliveries_failing",
        "Alert deliveries whose last attempt failed, by channel type and state (retrying or dead).",
        labels=["channel", "state"],
    )
    for (channel, state), count in sorted(inventory.deliveries.items()):
        deliveries.add_metric([channel, state], count)
    yield deliveries


class _Snapshot(Collector):
    """Yields metrics computed before the (synchronous) exposition runs."""

    def __init__(self, metrics: Iterable[Metric]) -> None:
        self.metrics = list(metrics)

    def collect(self) -> Iterable[Metric]:
        return self.metrics


class _Chain(Collector):
    def __init__(self, *collectors: Collector) -> None:
        self.collectors = collectors

    def collect(self) -> Iterable[Metric]:
        for collector in self.collectors:
            yield from collector.collect()


async def exposition(accept: str, *, inventory: bool) -> tuple[bytes, str]:
    """The scrape body and its content type (negotiated from Accept, as prometheus_client does)."""
    encoder: Callable[[Collector], bytes]
    encoder, content_type = choose_encoder(accept)
    if not inventory:
        return encoder(REGISTRY), content_type
    snapshot = _Snapshot(inventory_metrics(await _inventory_cache.get(INVENTORY_MAX_AGE_SECONDS)))
    return encoder(_Chain(REGISTRY, snapshot)), content_type


def authorized(expected_token: str | None, authorization_header: str | None) -> bool:
    """/metrics is public unless KEYWARD_METRICS_TOKEN is set; then it takes `Authorization: Bearer <it>`."""
    if not expected_token:
        return True
    scheme, _, token = (authorization_header or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode(), expected_token.encode())
