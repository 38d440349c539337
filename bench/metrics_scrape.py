"""What a /metrics scrape costs the database as the inventory grows (issue #8, item 4).

    .venv/bin/python -m bench.metrics_scrape [--sizes 20000,200000] [--repeat 7]

In a temporary PostgreSQL database (127.0.0.1:5432) it fills the certificate table with INSERT ... SELECT
generate_series to each size (85% active spread over 400 days of notAfter, some renewed, revoked, expired;
1% inside 7 days), then times core.metrics.read_inventory() (the scrape's database work, uncached) against
the reference a naive collector would do in the same run: read every certificate's status and notAfter and
count in Python. It prints both, their ratio at each size, how the scrape grows from the smallest to the
largest size, and the plans of the status and expiring queries at the largest size.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

POSTGRES_ADMIN_URL = os.environ.get("KEYWARD_BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432/postgres")

_FILL = """
INSERT INTO certificate (
    id, organization_id, application_id, serial_hex, common_name, subject_dn, sans, name_search,
    key_algorithm, signature_algorithm, key_usages, extended_key_usages, not_before, not_after, status,
    source, enrollment_method, auto_renew, renew_before_days, certificate_pem, chain_pem,
    fingerprint_sha256, metadata, renewal_attempts, created_at, updated_at
)
SELECT
    gen_random_uuid(), $1::uuid, NULL, md5(i::text), 'h' || i || '.bench.example.com', 'CN=h' || i,
    '[]', '', 'EC_P256', 'ecdsa-with-SHA256', '[]', '[]',
    now() - interval '30 days',
    CASE WHEN i % 100 = 0 THEN now() + (i % 7) * interval '1 day' + interval '1 hour'
         ELSE now() + (i % 400) * interval '1 day' + interval '1 hour' END,
    CASE WHEN i % 100 < 85 THEN 'active' WHEN i % 100 < 93 THEN 'renewed'
         WHEN i % 100 < 97 THEN 'revoked' ELSE 'expired' END,
    'issued', 'api', false, 30, '-', '', md5(i::text || 'f'), '{}', 0, now(), now()
FROM generate_series($2::bigint, $3::bigint) AS i
"""


async def _median(work: Callable[[], Awaitable[Any]], repeat: int) -> float:
    await work()  # warm the cache and the plan
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        await work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


async def _naive_inventory() -> dict[str, int]:
    """The reference: every certificate's status and notAfter read, counted in Python."""
    from tortoise import Tortoise

    now = datetime.now(UTC)
    rows = await Tortoise.get_connection("default").execute_query_dict(
        'SELECT "status", "not_after" FROM "certificate"'
    )
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
        if row["status"] == "active" and now <= row["not_after"] < now + timedelta(days=30):
            counts["expiring"] = counts.get("expiring", 0) + 1
    return counts


async def main(sizes: list[int], repeat: int) -> None:
    from tortoise import Tortoise

    from core.bootstrap import init_organization
    from core.db import create_scratch_database, drop_scratch_database, generate_schema, tortoise_config
    from core.metrics import read_inventory

    url = await create_scratch_database(POSTGRES_ADMIN_URL, prefix="keyward_metrics")
    try:
        await Tortoise.init(config=tortoise_config(url))
        await generate_schema()
        org, _, _ = await init_organization(org_name="bench", admin_email="admin@bench.test")
        connection = Tortoise.get_connection("default")
        print(f"{'certificates':>12} {'scrape ms':>10} {'naive ms':>9} {'scrape/naive':>13}")
        scrape_times = []
        present = 0
        for size in sizes:
            await connection.execute_query(_FILL, [str(org.id), present + 1, size])
            present = size
            await connection.execute_script("VACUUM ANALYZE certificate")  # what autovacuum does in time
            scrape = await _median(read_inventory, repeat)
            naive = await _median(_naive_inventory, max(1, repeat // 2))
            inventory = await read_inventory()
            assert sum(inventory.by_status.values()) == size
            scrape_times.append(scrape)
            print(f"{size:>12} {scrape * 1000:>10.1f} {naive * 1000:>9.1f} {scrape / naive:>13.3f}")
        print(
            f"scrape growth {sizes[-1] // sizes[0]}x rows: {scrape_times[-1] / scrape_times[0]:.2f}x time "
            "(the status count reads the whole (status, not_after) index; the other queries read ranges)"
        )
        now = datetime.now(UTC)
        window = f"'{now.isoformat()}' AND '{(now + timedelta(days=30)).isoformat()}'"
        for title, sql in [
            ("status", 'SELECT "status", COUNT("status") FROM "certificate" GROUP BY "status"'),
            (
                "expiring 30d",
                "SELECT COUNT(*) FROM certificate WHERE status = 'active' AND not_after BETWEEN " + window,
            ),
        ]:
            _, plan = await connection.execute_query("EXPLAIN " + sql)
            print(f"\nplan ({title}):")
            for row in plan:
                print("  " + row["QUERY PLAN"])
    finally:
        await Tortoise.close_connections()
        await drop_scratch_database(POSTGRES_ADMIN_URL, url)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="20000,200000")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    from core import runtime
    from core.config import Settings

    runtime.configure(Settings(database_url="postgres://unused/db"))
    asyncio.run(main([int(s) for s in args.sizes.split(",")], args.repeat))
