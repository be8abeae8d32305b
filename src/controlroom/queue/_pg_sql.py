"""Our tables beside procrastinate's, how its statuses map to ours, and the purges."""

from __future__ import annotations

from controlroom.queue.base import FINISHED_STATUSES, JobStatus

__all__ = [
    "FINISHED",
    "FROM_STATUS",
    "PURGE_INBOX",
    "PURGE_JOBS",
    "SCHEMA",
    "SELECT_JOBS",
    "TO_STATUS",
]

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
CREATE INDEX IF NOT EXISTS cr_queue_inbox_received ON cr_queue_inbox (received_at);
CREATE INDEX IF NOT EXISTS cr_queue_jobs_envelope ON cr_queue_jobs (envelope_id)
    WHERE envelope_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS cr_queue_jobs_updated ON cr_queue_jobs (updated_at);
"""

# One batch of the inbox purge: the oldest envelopes before the cut-off that no live job
# names. SKIP LOCKED lets several purging processes share the work.
PURGE_INBOX = """
WITH doomed AS (
    SELECT i.id FROM cr_queue_inbox AS i
    WHERE i.received_at < %(cutoff)s
      AND NOT EXISTS (
        SELECT 1 FROM cr_queue_jobs AS m JOIN procrastinate_jobs AS j ON j.id = m.job_id
        WHERE m.envelope_id = i.id AND NOT (j.status::text = ANY(%(finished)s)))
    ORDER BY i.received_at
    LIMIT %(batch)s
    FOR UPDATE OF i SKIP LOCKED
)
DELETE FROM cr_queue_inbox AS i USING doomed WHERE i.id = doomed.id
"""

# One batch of the job purge (our metadata row goes with it: ON DELETE CASCADE).
PURGE_JOBS = """
WITH doomed AS (
    SELECT j.id FROM cr_queue_jobs AS m JOIN procrastinate_jobs AS j ON j.id = m.job_id
    WHERE m.updated_at < %(cutoff)s AND j.status::text = ANY(%(finished)s)
    ORDER BY m.updated_at
    LIMIT %(batch)s
    FOR UPDATE OF j SKIP LOCKED
)
DELETE FROM procrastinate_jobs AS j USING doomed WHERE j.id = doomed.id
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

# procrastinate's statuses of jobs that never run again ("failed" is our dead letter,
# which can be retried, so it is not one of them).
FINISHED = sorted(k for k, v in TO_STATUS.items() if v in FINISHED_STATUSES)
