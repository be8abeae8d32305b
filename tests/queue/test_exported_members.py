"""The public surface of ``controlroom.queue`` changes only on purpose."""

from __future__ import annotations

import controlroom.queue


def test_queue_package_exports_exactly_its_public_api() -> None:
    assert sorted(controlroom.queue.__all__) == [
        "AcceptResult",
        "Backoff",
        "JobInfo",
        "JobQueue",
        "JobStatus",
        "PeriodicSpec",
        "SqliteQueue",
        "TaskFn",
        "open_queue",
        "sqlite_path",
    ]
    for name in controlroom.queue.__all__:
        assert hasattr(controlroom.queue, name)
