"""Our tables beside procrastinate's, and how its statuses map to ours."""

from __future__ import annotations

from controlroom.queue.base import JobStatus

__all__ = ["FROM_STATUS", "SCHEMA", "SELECT_JOBS", "TO_STATUS"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS cr_queue_inbox (
    id text PRIMARY KEY,
    dedupe_key text NOT NULL UNIQUE,
    body text NOT NULL,
    received_at double precision NOT NULL
);
CREATE TABLE IF NOT EXISTS cr_queue_jobs (
    job_id bigint PRIMARY KEY REFERENCES procrastinate_jobs (id) ON DELETE CASCADE,
    attempts integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL,
    idempotency_key text,
    idem_lock text UNIQUE,
    envelope_id text,
    last_error text,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL
);
"""

SELECT_JOBS = """
SELECT j.id, j.task_name, j.args, j.status::text AS status, j.lock, j.worker_id,
       j.attempts AS engine_attempts,
       extract(epoch FROM j.scheduled_at)::float8 AS scheduled,
       m.attempts, m.max_attempts, m.idempotency_key, m.envelope_id, m.last_error,
       m.created_at, m.updated_at
FROM procrastinate_jobs AS j LEFT JOIN cr_queue_jobs AS m ON m.job_id = j.id
"""

TO_STATUS: dict[str, JobStatus] = {
    "todo": "queued",
    "doing": "running",
    "aborting": "running",
    "succeeded": "succeeded",
    "failed": "dead",
    "cancelled": "cancelled",
    "aborted": "cancelled",
}
FROM_STATUS: dict[str, list[str]] = {
    "queued": ["todo"],
    "running": ["doing", "aborting"],
    "succeeded": ["succeeded"],
    "failed": [],
    "dead": ["failed"],
    "cancelled": ["cancelled", "aborted"],
}
