"""Every scheduled job run: a run id on its log records, one log line, and the job metrics."""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from core import metrics
from core.logs import bound_request_id
from worker.jobs import Job

log = logging.getLogger("keyward.worker.job")


def _summary(result: object) -> object:
    """What a job returned (a count, usually), when it is small enough for a log field."""
    if result is None or isinstance(result, bool | int | float):
        return result
    if isinstance(result, str):
        return result[:200]
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return {
            f.name: getattr(result, f.name)
            for f in dataclasses.fields(result)
            if isinstance(getattr(result, f.name), bool | int | float)
        }
    return type(result).__name__


def instrumented(job: Job) -> Callable[[], Awaitable[object]]:
    async def run() -> object:
        # The run id takes the request id's place, so core's log lines during the run carry it.
        run_id = f"{job.id}-{uuid.uuid4().hex[:12]}"
        with bound_request_id(run_id):
            started = time.perf_counter()
            outcome, result = "error", None
            try:
                result = await job.run()
                outcome = "ok"
                return result
            except Exception:
                log.exception("job %s raised", job.id)
                raise
            finally:
                seconds = time.perf_counter() - started
                metrics.record_job_run(job=job.id, outcome=outcome, seconds=seconds)
                duration_ms = round(seconds * 1000, 1)
                log.log(
                    logging.INFO if outcome == "ok" else logging.WARNING,
                    "job %s %s %.1fms",
                    job.id,
                    outcome,
                    duration_ms,
                    extra={
                        "job": job.id,
                        "outcome": outcome,
                        "duration_ms": duration_ms,
                        "result": _summary(result),
                    },
                )

    run.__name__ = run.__qualname__ = f"run_{job.id.replace('.', '_')}"
    return run
