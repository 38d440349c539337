"""Worker job runs: one log line each (job id, duration, outcome) with a run id on every record made
meanwhile, job metrics, and the worker's own /metrics server (KEYWARD_WORKER_METRICS_PORT)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.logs import JsonFormatter, RequestIdFilter
from worker.instrument import instrumented
from worker.jobs import Job
from worker.metrics_server import serving_metrics


@pytest.fixture
def job_log() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("keyward")
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield buffer
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def entries(buffer: io.StringIO) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    return [entry for entry in lines if entry["logger"] != "keyward.worker.metrics"]


@dataclass
class Report:
    renewed: int
    failed: int
    note: str = "not logged: only numbers are"


def counter(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_job_runs_are_logged_and_counted(job_log: io.StringIO) -> None:
    core_log = logging.getLogger("keyward.core.sample")

    async def works() -> Report:
        core_log.info("renewing")
        return Report(renewed=2, failed=0)

    async def breaks() -> None:
        raise RuntimeError("database went away")

    port = free_port()
    async with serving_metrics("127.0.0.1", port, None), httpx.AsyncClient() as http:
        url = f"http://127.0.0.1:{port}/metrics"
        before = (await http.get(url)).text
        await instrumented(Job(id="sample.works", run=works, every_seconds=60))()
        with pytest.raises(RuntimeError):
            await instrumented(Job(id="sample.breaks", run=breaks, every_seconds=60))()
        response = await http.get(url)
        assert response.status_code == 200
        after = response.text
        assert (await http.get(f"http://127.0.0.1:{port}/other")).status_code == 404

    inside, ok, failed_trace, failed = entries(job_log)
    assert inside["message"] == "renewing"
    assert str(inside["request_id"]).startswith("sample.works-")
    assert ok["request_id"] == inside["request_id"]  # the run id ties the job's records together
    assert {k: ok[k] for k in ("logger", "job", "outcome", "result")} == {
        "logger": "keyward.worker.job",
        "job": "sample.works",
        "outcome": "ok",
        "result": {"renewed": 2, "failed": 0},
    }
    assert isinstance(ok["duration_ms"], float)
    assert failed_trace["level"] == "error" and "database went away" in str(failed_trace["exception"])
    assert (failed["job"], failed["outcome"], failed["level"]) == ("sample.breaks", "error", "warning")

    for job, outcome in [("sample.works", "ok"), ("sample.breaks", "error")]:
        runs = "keyward_worker_job_runs_total"
        assert (
            counter(after, runs, job=job, outcome=outcome) - counter(before, runs, job=job, outcome=outcome)
            == 1
        )
    durations = "keyward_worker_job_duration_seconds_count"
    assert counter(after, durations, job="sample.works") - counter(before, durations, job="sample.works") == 1
    # The worker's scrape is its own counters: the database inventory is the API's.
    assert "keyward_certificates_issued_total" in after or "keyward_certificates_issued" in after
    assert "keyward_certificates_expiring" not in after


async def test_worker_metrics_token() -> None:
    port = free_port()
    token = "worker-scrape-token-0123456789"
    async with serving_metrics("127.0.0.1", port, token), httpx.AsyncClient() as http:
        url = f"http://127.0.0.1:{port}/metrics"
        assert (await http.get(url)).status_code == 401
        assert (
            await http.get(url, headers={"Authorization": "Bearer nope-nope-nope-nope"})
        ).status_code == 401
        good = await http.get(url, headers={"Authorization": f"Bearer {token}"})
        assert good.status_code == 200 and "keyward_worker_job_runs" in good.text


async def test_no_metrics_server_without_a_port() -> None:
    async with serving_metrics("127.0.0.1", None, None):
        await asyncio.sleep(0)  # nothing listens; nothing to close
