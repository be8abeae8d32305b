"""ledger.py on SQLite and PostgreSQL: idempotent upserts, ordering, last good, locks and
the one-rollback-per-deployment guard."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest

from controlroom.workflows.deploys.ledger import DeployLedger, Deployment
from controlroom.workflows.deploys.sources import DeployEvent, ResolvedRoute, normalise

from .conftest import Clock, load

ROUTE = ResolvedRoute("checkout", "production", "C-DEPLOYS", "github-checkout")


def generic(
    version: str,
    status: str,
    *,
    run_id: str | None = None,
    delivery: str = "",
    **extra: Any,
) -> DeployEvent:
    payload = {
        "service": "checkout",
        "environment": "production",
        "version": version,
        "status": status,
        "run_id": run_id or f"run-{version}",
        **extra,
    }
    result = normalise("generic", payload, delivery_id=delivery)
    assert result.event is not None
    return result.event


async def deploy(ledger: DeployLedger, version: str, status: str = "succeeded") -> Deployment:
    result = await ledger.upsert_from_event(generic(version, status), ROUTE)
    assert result.deployment is not None
    return result.deployment


async def test_first_event_creates_the_deployment_with_route_and_event_fields(
    ledger: DeployLedger, clock: Clock
) -> None:
    event = generic(
        "v1.0.0",
        "running",
        commit="abc123",
        author="Jane <jane@example.com>",
        url="https://ci/run/1",
        started_at="2026-11-30T08:59:00Z",
    )
    result = await ledger.upsert_from_event(event, ROUTE)
    dep = result.deployment
    assert (result.created, result.changed, result.duplicate) == (True, True, False)
    assert dep is not None
    assert (dep.service, dep.environment, dep.channel, dep.rollback_executor) == (
        "checkout",
        "production",
        "C-DEPLOYS",
        "github-checkout",
    )
    assert (dep.version, dep.commit_sha, dep.author_email, dep.run_url, dep.status) == (
        "v1.0.0",
        "abc123",
        "jane@example.com",
        "https://ci/run/1",
        "in_progress",
    )
    assert dep.started_at == datetime(2026, 11, 30, 8, 59, tzinfo=UTC)
    assert dep.created_at == clock.now
    assert dep.rollback_state is None
    assert await ledger.get(dep.id) == dep
    assert await ledger.by_run_key(event.run_key) == dep


async def test_the_same_delivery_twice_is_a_duplicate_and_changes_nothing(
    ledger: DeployLedger,
) -> None:
    event = generic("v1", "running", delivery="delivery-1")
    first = await ledger.upsert_from_event(event, ROUTE)
    again = await ledger.upsert_from_event(event, ROUTE)
    assert again.duplicate
    assert not again.created and not again.changed
    assert again.deployment == first.deployment


async def test_later_events_update_the_same_deployment(ledger: DeployLedger, clock: Clock) -> None:
    created = await ledger.upsert_from_event(generic("v1", "queued"), ROUTE)
    clock.advance(30)
    running = await ledger.upsert_from_event(
        generic("v1", "running", url="https://ci/run/7"), ROUTE
    )
    clock.advance(60)
    done = await ledger.upsert_from_event(
        generic("v1", "failed", finished_at="2026-11-30T09:01:30Z"), ROUTE
    )
    assert created.deployment is not None and done.deployment is not None
    assert running.deployment is not None
    assert created.deployment.id == running.deployment.id == done.deployment.id
    assert running.changed and running.previous_status == "queued"
    assert done.changed and done.previous_status == "in_progress"
    assert done.deployment.status == "failed"
    assert done.deployment.run_url == "https://ci/run/7"
    assert done.deployment.finished_at == datetime(2026, 11, 30, 9, 1, 30, tzinfo=UTC)
    assert done.deployment.updated_at == clock.now
    assert len(await ledger.recent("checkout")) == 1


async def test_out_of_order_events_never_move_a_finished_deployment_back(
    ledger: DeployLedger,
) -> None:
    await ledger.upsert_from_event(generic("v1", "succeeded"), ROUTE)
    late_running = await ledger.upsert_from_event(generic("v1", "running"), ROUTE)
    late_queued = await ledger.upsert_from_event(generic("v1", "queued"), ROUTE)
    assert late_running.deployment is not None and late_queued.deployment is not None
    assert late_running.deployment.status == "succeeded"
    assert late_queued.deployment.status == "succeeded"
    assert not late_running.changed and not late_queued.changed


async def test_a_second_outcome_wins_only_if_it_finished_later(ledger: DeployLedger) -> None:
    await ledger.upsert_from_event(
        generic("v1", "succeeded", finished_at="2026-11-30T09:05:00Z"), ROUTE
    )
    earlier = await ledger.upsert_from_event(
        generic("v1", "failed", finished_at="2026-11-30T09:04:00Z"), ROUTE
    )
    assert earlier.deployment is not None
    assert earlier.deployment.status == "succeeded"
    later = await ledger.upsert_from_event(
        generic("v1", "failed", finished_at="2026-11-30T09:06:00Z"), ROUTE
    )
    assert later.deployment is not None
    assert later.deployment.status == "failed"


async def test_concurrent_first_events_of_one_run_create_one_deployment(
    ledger: DeployLedger,
) -> None:
    events = [generic("v1", "running", delivery=f"d-{i}") for i in range(6)]
    results = await asyncio.gather(*(ledger.upsert_from_event(e, ROUTE) for e in events))
    assert sum(r.created for r in results) == 1
    assert {r.deployment.id for r in results if r.deployment} == {results[0].deployment.id}  # type: ignore[union-attr]
    assert len(await ledger.recent("checkout")) == 1


async def test_last_good_is_the_previous_success_with_a_different_version(
    ledger: DeployLedger,
) -> None:
    v1 = await deploy(ledger, "v1")
    await deploy(ledger, "v2", "failed")
    v3 = await deploy(ledger, "v3")
    v3_again = await ledger.upsert_from_event(generic("v3", "succeeded", run_id="rerun"), ROUTE)
    v4 = await deploy(ledger, "v4", "failed")
    assert v3_again.deployment is not None
    assert await ledger.last_good("checkout", "production", before=v4) == await ledger.get(
        v3_again.deployment.id
    )
    # For the redeploy of v3, the target is v1, not another v3.
    assert await ledger.last_good("checkout", "production", before=v3_again.deployment) == v1
    assert await ledger.last_good("checkout", "production", before=v1) is None
    assert (await ledger.last_good("checkout", "production")) == await ledger.get(
        v3_again.deployment.id
    )
    assert await ledger.last_good("checkout", "staging") is None
    assert v3.version == "v3"


async def test_suspect_deployments_are_not_rollback_targets(ledger: DeployLedger) -> None:
    v1 = await deploy(ledger, "v1")
    v2 = await deploy(ledger, "v2")
    v3 = await deploy(ledger, "v3", "failed")
    marked = await ledger.mark_suspect(v2.id)
    assert marked is not None and marked.suspect and marked.needs_attention
    assert await ledger.last_good("checkout", "production", before=v3) == v1


async def test_recent_lists_newest_first_and_filters_environment(ledger: DeployLedger) -> None:
    for version in ("v1", "v2", "v3"):
        await deploy(ledger, version)
    staging = ResolvedRoute("checkout", "staging", "C-DEPLOYS")
    await ledger.upsert_from_event(generic("v9", "running", run_id="stg"), staging)
    assert [d.version for d in await ledger.recent("checkout", 3)] == ["v9", "v3", "v2"]
    assert [d.version for d in await ledger.recent("checkout", environment="staging")] == ["v9"]
    assert await ledger.recent("billing") == []


async def test_set_message_records_channel_and_thread(ledger: DeployLedger) -> None:
    dep = await deploy(ledger, "v1")
    await ledger.set_message(dep.id, channel="C-DEPLOYS", message_ts="1764493200.000100")
    stored = await ledger.get(dep.id)
    assert stored is not None
    assert (stored.message_ts, stored.thread_ts) == ("1764493200.000100", "1764493200.000100")


async def test_only_one_rollback_starts_however_many_callers(
    ledger: DeployLedger, clock: Clock
) -> None:
    v1 = await deploy(ledger, "v1")
    v2 = await deploy(ledger, "v2", "failed")
    wins = await asyncio.gather(
        *(ledger.begin_rollback(v2.id, by=f"U{i}", target_id=v1.id) for i in range(8))
    )
    assert wins.count(True) == 1
    stored = await ledger.get(v2.id)
    assert stored is not None
    assert stored.rollback_state == "rolling_back"
    assert stored.rollback_by == f"U{wins.index(True)}"
    assert stored.rollback_target_id == v1.id
    assert stored.rollback_started_at == clock.now
    assert not await ledger.begin_rollback(v2.id, by="U-late", target_id=v1.id)


async def test_rollback_outcome_is_recorded_once(ledger: DeployLedger) -> None:
    v1 = await deploy(ledger, "v1")
    v2 = await deploy(ledger, "v2", "failed")
    assert not await ledger.finish_rollback(v2.id, ok=True)  # never started
    assert await ledger.begin_rollback(v2.id, by="U1", target_id=v1.id)
    assert await ledger.finish_rollback(v2.id, ok=False, url="https://ci/9", detail="401")
    assert not await ledger.finish_rollback(v2.id, ok=True)
    stored = await ledger.get(v2.id)
    assert stored is not None
    assert (stored.rollback_state, stored.rollback_url, stored.rollback_detail) == (
        "rollback_failed",
        "https://ci/9",
        "401",
    )
    # A failed rollback does not open the door to a second one.
    assert not await ledger.begin_rollback(v2.id, by="U2", target_id=v1.id)


async def test_locks(ledger: DeployLedger, clock: Clock) -> None:
    assert await ledger.current_lock("checkout", "production") is None
    first = await ledger.lock("checkout", "production", by="U1", reason="incident 42")
    assert first.acquired
    assert (first.lock.locked_by, first.lock.reason, first.lock.locked_at) == (
        "U1",
        "incident 42",
        clock.now,
    )
    second = await ledger.lock("checkout", "production", by="U2", reason="mine")
    assert not second.acquired
    assert second.lock == first.lock
    other_env = await ledger.lock("checkout", "staging", by="U2")
    assert other_env.acquired
    assert await ledger.current_lock("checkout", "production") == first.lock
    removed = await ledger.unlock("checkout", "production")
    assert removed == first.lock
    assert await ledger.unlock("checkout", "production") is None
    assert await ledger.current_lock("checkout", "production") is None


async def test_concurrent_locks_have_one_winner(ledger: DeployLedger) -> None:
    results = await asyncio.gather(
        *(ledger.lock("checkout", "production", by=f"U{i}") for i in range(6))
    )
    assert sum(r.acquired for r in results) == 1
    assert len({r.lock for r in results}) == 1


async def test_every_real_fixture_goes_through_the_ledger(ledger: DeployLedger) -> None:
    cases = [
        ("github", "workflow_run", "github/examples/workflow_run/requested.payload.json"),
        ("github", "workflow_run", "github/examples/workflow_run/completed.payload.json"),
        ("github", "workflow_job", "github/examples/workflow_job/queued.payload.json"),
        ("github", "workflow_job", "github/examples/workflow_job/in_progress.payload.json"),
        (
            "github",
            "workflow_job",
            "github/examples/workflow_job/completed.failure.with-organization.payload.json",
        ),
        ("github", "deployment", "github/examples/deployment/payload.json"),
        ("github", "deployment_status", "github/examples/deployment_status/payload.json"),
        ("gitlab", "Pipeline Hook", "gitlab/pipeline_hook.json"),
        ("gitlab", "Job Hook", "gitlab/job_hook.json"),
        ("gitlab", "Deployment Hook", "gitlab/deployment_hook.json"),
        ("jenkins", "", "jenkins/notification-plugin.completed.json"),
    ]
    statuses: dict[str, str] = {}
    for index, (provider, name, path) in enumerate(cases):
        result = normalise(provider, load(path), event_name=name, delivery_id=f"d{index}")
        assert result.event is not None, path
        event = dataclasses.replace(result.event, environment=result.event.environment or "prod")
        up = await ledger.upsert_from_event(event, ROUTE)
        assert up.deployment is not None
        statuses[event.run_key] = up.deployment.status
    assert statuses == {
        "github:octo-org/octo-repo:run:289782451:1": "succeeded",
        "github:Codertocat/Hello-World:job:289782451:1": "failed",
        "github:Codertocat/Hello-World:deployment:145988746": "succeeded",
        "gitlab:gitlab-org/gitlab-test:pipeline:31": "succeeded",
        "gitlab:gitlab-org/gitlab-test:job:1977": "queued",
        "gitlab:root/test-deployment-webhooks:deployment:15": "succeeded",
        "jenkins:asgard#18": "succeeded",
    }
    assert len(await ledger.recent("checkout", 100)) == 7


@pytest.mark.parametrize("status", ["failed", "succeeded"])
async def test_needs_attention_only_for_failed_or_suspect(
    ledger: DeployLedger, status: str
) -> None:
    dep = await deploy(ledger, "v1", status)
    assert dep.needs_attention is (status == "failed")


async def test_the_rollback_job_can_resume_after_its_worker_died_but_sends_once(
    ledger: DeployLedger,
) -> None:
    v1 = await deploy(ledger, "v1")
    v2 = await deploy(ledger, "v2", "failed")
    assert await ledger.begin_rollback(v2.id, by="U1", target_id=v1.id, job_key="job-1")
    # Another click's job loses; the same job, run again after a crash, may continue.
    assert not await ledger.begin_rollback(v2.id, by="U2", target_id=v1.id, job_key="job-2")
    assert await ledger.begin_rollback(v2.id, by="U1", target_id=v1.id, job_key="job-1")
    assert not await ledger.claim_send(v2.id, job_key="job-2")
    assert await ledger.claim_send(v2.id, job_key="job-1")
    # Crashed after claiming: the rerun must not send a second request.
    assert not await ledger.claim_send(v2.id, job_key="job-1")
    stored = await ledger.get(v2.id)
    assert stored is not None
    assert (stored.rollback_job, stored.rollback_sent_at is not None) == ("job-1", True)


async def test_concurrent_send_claims_have_one_winner(ledger: DeployLedger) -> None:
    v1 = await deploy(ledger, "v1")
    v2 = await deploy(ledger, "v2", "failed")
    assert await ledger.begin_rollback(v2.id, by="U1", target_id=v1.id, job_key="job-1")
    claims = await asyncio.gather(*(ledger.claim_send(v2.id, job_key="job-1") for _ in range(6)))
    assert claims.count(True) == 1


async def test_without_a_job_key_there_is_no_resume(ledger: DeployLedger) -> None:
    v1 = await deploy(ledger, "v1")
    v2 = await deploy(ledger, "v2", "failed")
    assert await ledger.begin_rollback(v2.id, by="U1", target_id=v1.id)
    assert not await ledger.begin_rollback(v2.id, by="U1", target_id=v1.id)
    assert await ledger.claim_send(v2.id)
    assert not await ledger.claim_send(v2.id)


async def test_oversized_values_fit_the_columns_on_every_database(ledger: DeployLedger) -> None:
    long_run = "r" * 1000
    event = generic("v" * 500, "running", run_id=long_run, delivery="x" * 600, commit="c" * 100)
    route = ResolvedRoute("s" * 250, "e" * 250, "C1")
    first = await ledger.upsert_from_event(event, route)
    assert first.created and first.deployment is not None
    assert first.deployment.version == "v" * 200
    assert len(first.deployment.run_key) == 400
    again = await ledger.upsert_from_event(event, route)
    assert again.duplicate
    other = generic("v2", "failed", run_id=long_run + "-other", delivery="y" * 600)
    second = await ledger.upsert_from_event(other, route)
    assert second.created  # a long key keeps a hash: different runs stay different
    assert await ledger.by_run_key(event.run_key) == first.deployment
    lock = await ledger.lock("s" * 300, "e" * 300, by="U" * 150, reason="r" * 900)
    assert lock.acquired
    assert await ledger.current_lock("s" * 300, "e" * 300) == lock.lock
    assert await ledger.unlock("s" * 300, "e" * 300) == lock.lock
