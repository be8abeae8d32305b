"""sources.py: real provider payloads become DeployEvents; routes come from configuration."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from controlroom.errors import ConfigError, PermanentError
from controlroom.workflows.deploys.sources import (
    DeployEvent,
    DeployRoute,
    MalformedPayload,
    ResolvedRoute,
    load_routes,
    normalise,
    normalise_request,
    parse_time,
    resolve_route,
)

from .conftest import load, raw


def event_of(provider: str, payload: dict[str, Any], event_name: str = "", delivery: str = "d-1"):
    result = normalise(provider, payload, event_name=event_name, delivery_id=delivery)
    assert result.event is not None, result.reason
    return result.event


# -- GitHub --------------------------------------------------------------------------------


def test_github_workflow_run_requested_then_completed_are_one_run() -> None:
    requested = event_of(
        "github", load("github/examples/workflow_run/requested.payload.json"), "workflow_run"
    )
    completed = event_of(
        "github", load("github/examples/workflow_run/completed.payload.json"), "workflow_run"
    )
    assert requested.status == "queued"
    assert completed.status == "succeeded"
    assert requested.run_key == completed.run_key == "github:octo-org/octo-repo:run:289782451:1"
    assert completed.repository == "octo-org/octo-repo"
    assert completed.workflow == "test"
    assert completed.branch == "master"
    assert completed.version == "3484a3f"
    assert completed.commit_sha == "3484a3fb816e0859fd6e1cea078d76385ff50625"
    assert completed.commit_url == (
        "https://github.com/octo-org/octo-repo/commit/3484a3fb816e0859fd6e1cea078d76385ff50625"
    )
    assert (completed.author_name, completed.author_email, completed.author_login) == (
        "Matthias Fax",
        "matfax@users.noreply.github.com",
        "Codertocat",
    )
    assert completed.run_url == "https://github.com/octo-org/octo-repo/actions/runs/289782451"
    assert completed.started_at == datetime(2020, 10, 5, 16, 33, 49, tzinfo=UTC)
    assert completed.finished_at == datetime(2020, 10, 5, 16, 33, 49, tzinfo=UTC)
    assert requested.finished_at is None
    assert completed.event_name == "workflow_run.completed"
    assert completed.details["conclusion"] == "success"


def test_github_workflow_run_rerun_attempt_is_a_new_run() -> None:
    payload = load("github/examples/workflow_run/completed.payload.json")
    payload["workflow_run"]["run_attempt"] = 2
    event = event_of("github", payload, "workflow_run")
    assert event.run_key.endswith(":run:289782451:2")
    assert event.run_attempt == 2


@pytest.mark.parametrize(
    ("conclusion", "status"),
    [
        ("success", "succeeded"),
        ("failure", "failed"),
        ("timed_out", "failed"),
        ("startup_failure", "failed"),
        ("cancelled", "cancelled"),
        ("action_required", "cancelled"),
        ("skipped", "cancelled"),
        ("stale", "cancelled"),
        ("neutral", "unstable"),
    ],
)
def test_github_conclusions_map_to_deploy_statuses(conclusion: str, status: str) -> None:
    payload = load("github/examples/workflow_run/completed.payload.json")
    payload["workflow_run"]["conclusion"] = conclusion
    assert event_of("github", payload, "workflow_run").status == status
    job = load("github/examples/workflow_job/completed.failure.with-organization.payload.json")
    job["workflow_job"]["conclusion"] = conclusion
    assert event_of("github", job, "workflow_job").status == status


def test_github_unknown_conclusion_is_malformed_and_names_the_field() -> None:
    payload = load("github/examples/workflow_run/completed.payload.json")
    payload["workflow_run"]["conclusion"] = "exploded"
    with pytest.raises(MalformedPayload) as info:
        normalise("github", payload, event_name="workflow_run")
    assert info.value.field == "workflow_run.conclusion"
    assert isinstance(info.value, PermanentError)


def test_github_workflow_job_events_follow_one_job() -> None:
    queued = event_of(
        "github", load("github/examples/workflow_job/queued.payload.json"), "workflow_job"
    )
    running = event_of(
        "github", load("github/examples/workflow_job/in_progress.payload.json"), "workflow_job"
    )
    failed = event_of(
        "github",
        load("github/examples/workflow_job/completed.failure.with-organization.payload.json"),
        "workflow_job",
    )
    assert [queued.status, running.status, failed.status] == ["queued", "in_progress", "failed"]
    assert queued.run_key == running.run_key == failed.run_key
    assert failed.workflow == "CodeQL"
    assert failed.job == "linters"
    assert failed.details["failed_steps"] == "Run yarn run format-check"
    assert failed.run_url == "https://github.com/octo-org/octo-repo/runs/1291536064"
    assert failed.finished_at == datetime(2021, 8, 5, 10, 38, 16, tzinfo=UTC)
    assert running.finished_at is None


def test_github_deployment_and_status_share_the_deployment() -> None:
    created = event_of("github", load("github/examples/deployment/payload.json"), "deployment")
    status = event_of(
        "github", load("github/examples/deployment_status/payload.json"), "deployment_status"
    )
    assert created.status == "queued"
    assert status.status == "succeeded"
    assert created.run_key == status.run_key == "github:Codertocat/Hello-World:deployment:145988746"
    assert status.environment == "production"
    assert status.version == "f95f852"
    assert status.author_login == "Codertocat"
    assert status.finished_at == datetime(2019, 5, 15, 15, 20, 55, tzinfo=UTC)


def test_github_deployment_payload_version_and_status_log_url_are_used() -> None:
    payload = load("github/examples/deployment_status/payload.json")
    payload["deployment"]["payload"] = {"version": "v2.3.1"}
    payload["deployment_status"]["state"] = "failure"
    payload["deployment_status"]["log_url"] = "https://ci.example/logs/9"
    event = event_of("github", payload, "deployment_status")
    assert (event.version, event.status, event.run_url) == (
        "v2.3.1",
        "failed",
        "https://ci.example/logs/9",
    )


def test_github_inactive_deployment_status_is_ignored() -> None:
    payload = load("github/examples/deployment_status/payload.json")
    payload["deployment_status"]["state"] = "inactive"
    result = normalise("github", payload, event_name="deployment_status")
    assert result.event is None
    assert "inactive" in result.reason


@pytest.mark.parametrize(
    ("event_name", "path"),
    [
        ("ping", "github/examples/ping/payload.json"),
        ("push", "github/examples/push/payload.json"),
        ("check_suite", "github/examples/check_suite/completed.payload.json"),
    ],
)
def test_github_irrelevant_events_are_ignored_with_a_reason(event_name: str, path: str) -> None:
    result = normalise("github", load(path), event_name=event_name)
    assert result.event is None
    assert event_name in result.reason


def test_github_without_repository_is_malformed() -> None:
    payload = load("github/examples/workflow_run/completed.payload.json")
    del payload["repository"]
    with pytest.raises(MalformedPayload) as info:
        normalise("github", payload, event_name="workflow_run")
    assert info.value.field == "repository"
    assert str(info.value) == "github payload: repository: missing"


def test_github_without_event_header_is_malformed() -> None:
    with pytest.raises(MalformedPayload) as info:
        normalise("github", load("github/examples/ping/payload.json"))
    assert info.value.field == "X-GitHub-Event"


def test_normalise_request_reads_provider_headers_case_insensitively() -> None:
    body = raw("github/examples/workflow_run/completed.payload.json")
    result = normalise_request(
        "github",
        {"x-github-event": "workflow_run", "X-GitHub-Delivery": "72d3162e-cc78-11e3"},
        body,
    )
    assert result.event is not None
    assert result.event.delivery_id == "72d3162e-cc78-11e3"


def test_normalise_request_rejects_a_body_that_is_not_json() -> None:
    with pytest.raises(MalformedPayload) as info:
        normalise_request("github", {"X-GitHub-Event": "workflow_run"}, b"{not json")
    assert info.value.field == "(body)"


def test_a_body_that_is_a_json_list_is_malformed() -> None:
    with pytest.raises(MalformedPayload):
        normalise_request("gitlab", {"X-Gitlab-Event": "Pipeline Hook"}, b"[1, 2]")


# -- GitLab --------------------------------------------------------------------------------


def test_gitlab_pipeline_hook() -> None:
    event = event_of("gitlab", load("gitlab/pipeline_hook.json"), "Pipeline Hook")
    assert event.status == "succeeded"
    assert event.run_key == "gitlab:gitlab-org/gitlab-test:pipeline:31"
    assert event.repository == "gitlab-org/gitlab-test"
    assert event.version == "bcbb5ec3"
    assert event.commit_url.endswith("/commit/bcbb5ec396a2c0f828686f14fac9b80b780504f2")
    assert (event.author_name, event.author_email, event.author_login) == (
        "User",
        "user@gitlab.com",
        "root",
    )
    assert event.run_url == "http://example.com/gitlab-org/gitlab-test/-/pipelines/31"
    assert event.started_at == datetime(2016, 8, 12, 15, 23, 28, tzinfo=UTC)
    assert event.finished_at == datetime(2016, 8, 12, 15, 26, 29, tzinfo=UTC)
    # Two deploy environments in one pipeline: the route must say which one.
    assert event.environment == ""
    assert event.details["environments"] == "production, staging"
    assert event.details["failed_jobs"] == "test-build"


def test_gitlab_pipeline_with_one_environment_carries_it() -> None:
    payload = load("gitlab/pipeline_hook.json")
    payload["builds"] = [b for b in payload["builds"] if b["name"] != "production"]
    payload["object_attributes"]["status"] = "running"
    event = event_of("gitlab", payload, "Pipeline Hook")
    assert (event.environment, event.status, event.finished_at) == ("staging", "in_progress", None)


@pytest.mark.parametrize("header", ["Job Hook", "Build Hook", ""])
def test_gitlab_job_hook_new_and_old_header_and_object_kind(header: str) -> None:
    event = event_of("gitlab", load("gitlab/job_hook.json"), header)
    assert event.run_key == "gitlab:gitlab-org/gitlab-test:job:1977"
    assert event.status == "queued"  # build_status "created"
    assert event.job == "test"
    assert event.run_url == "http://192.168.64.1:3005/gitlab-org/gitlab-test/-/jobs/1977"
    assert event.author_email == "user@gitlab.com"


@pytest.mark.parametrize(
    ("build_status", "status"),
    [
        ("pending", "queued"),
        ("running", "in_progress"),
        ("success", "succeeded"),
        ("failed", "failed"),
        ("canceled", "cancelled"),
        ("skipped", "cancelled"),
        ("manual", "queued"),
    ],
)
def test_gitlab_job_statuses(build_status: str, status: str) -> None:
    payload = load("gitlab/job_hook.json")
    payload["build_status"] = build_status
    payload["build_finished_at_iso"] = "2021-02-23T02:45:00Z"
    event = event_of("gitlab", payload, "Job Hook")
    assert event.status == status
    if status in ("succeeded", "failed", "cancelled"):
        assert event.finished_at == datetime(2021, 2, 23, 2, 45, tzinfo=UTC)
    else:
        assert event.finished_at is None


def test_gitlab_deploy_job_carries_environment_and_stop_jobs_are_ignored() -> None:
    payload = load("gitlab/job_hook.json")
    payload["environment"] = {"name": "production", "action": "start"}
    assert event_of("gitlab", payload, "Job Hook").environment == "production"
    payload["environment"] = {"name": "production", "action": "stop"}
    result = normalise("gitlab", payload, event_name="Job Hook")
    assert result.event is None
    assert "stop" in result.reason


def test_gitlab_deployment_hook() -> None:
    event = event_of("gitlab", load("gitlab/deployment_hook.json"), "Deployment Hook")
    assert event.status == "succeeded"
    assert event.environment == "staging"
    assert event.run_key == "gitlab:root/test-deployment-webhooks:deployment:15"
    assert event.version == "279484c0"
    assert event.commit_sha == "279484c09fbe69ededfced8c1bb6e6d24616b468"
    assert event.run_url == "http://10.126.0.2:3000/root/test-deployment-webhooks/-/jobs/796"
    assert event.run_id == "796"
    # "2021-04-28 21:50:00 +0200"
    assert event.finished_at == datetime(2021, 4, 28, 19, 50, tzinfo=UTC)


def test_gitlab_other_hooks_are_ignored_and_missing_status_is_malformed() -> None:
    result = normalise("gitlab", {"object_kind": "push"}, event_name="Push Hook")
    assert result.event is None
    assert "Push Hook" in result.reason
    payload = load("gitlab/deployment_hook.json")
    del payload["status"]
    with pytest.raises(MalformedPayload) as info:
        normalise("gitlab", payload, event_name="Deployment Hook")
    assert info.value.field == "status"


def test_gitlab_without_project_is_malformed() -> None:
    payload = load("gitlab/pipeline_hook.json")
    del payload["project"]
    with pytest.raises(MalformedPayload) as info:
        normalise("gitlab", payload, event_name="Pipeline Hook")
    assert info.value.field == "project.path_with_namespace"


def test_gitlab_delivery_id_prefers_idempotency_key() -> None:
    body = raw("gitlab/deployment_hook.json")
    headers = {
        "X-Gitlab-Event": "Deployment Hook",
        "X-Gitlab-Event-UUID": "13792a34-cac6-4fda-95a8-c58e00a3954e",
        "Idempotency-Key": "f5e5f430-f57b-4e6e-9fac-d9128cd7232f",
    }
    result = normalise_request("gitlab", headers, body)
    assert result.event is not None
    assert result.event.delivery_id == "f5e5f430-f57b-4e6e-9fac-d9128cd7232f"
    del headers["Idempotency-Key"]
    again = normalise_request("gitlab", headers, body)
    assert again.event is not None
    assert again.event.delivery_id == "13792a34-cac6-4fda-95a8-c58e00a3954e"


# -- Jenkins -------------------------------------------------------------------------------


def test_jenkins_notification_plugin_completed() -> None:
    event = event_of("jenkins", load("jenkins/notification-plugin.completed.json"), delivery="")
    assert event.status == "succeeded"
    assert event.run_key == "jenkins:asgard#18"
    assert event.job == "asgard"
    assert event.branch == "master"
    assert event.version == "c6d86dc"
    assert event.commit_url == (
        "https://github.com/evgeny-goldin/asgard/commit/c6d86dc654b12425e706bcf951adfe5a8627a517"
    )
    assert event.run_url == "http://localhost:8080/job/asgard/18/"
    assert event.delivery_id.startswith("jenkins-")


@pytest.mark.parametrize(
    ("phase", "result", "status"),
    [
        ("QUEUED", None, "queued"),
        ("STARTED", "FAILURE", "in_progress"),  # the previous build's result: ignored
        ("COMPLETED", "SUCCESS", "succeeded"),
        ("COMPLETED", "UNSTABLE", "unstable"),
        ("COMPLETED", "FAILURE", "failed"),
        ("COMPLETED", "ABORTED", "cancelled"),
        ("FINALIZED", "NOT_BUILT", "cancelled"),
    ],
)
def test_jenkins_phases_and_results(phase: str, result: str | None, status: str) -> None:
    payload = load("jenkins/notification-plugin.completed.json")
    payload["build"]["phase"] = phase
    payload["build"]["status"] = result
    assert event_of("jenkins", payload, delivery="").status == status


def test_jenkins_tolerates_a_minimal_payload() -> None:
    event = event_of("jenkins", {"name": "deploy-api", "build": {"number": 7, "phase": "STARTED"}})
    assert (event.status, event.version, event.run_url, event.commit_sha) == (
        "in_progress",
        "#7",
        "",
        "",
    )


def test_jenkins_parameters_give_version_and_environment_and_times() -> None:
    payload = {
        "name": "deploy-api",
        "build": {
            "number": 42,
            "phase": "FINALIZED",
            "status": "FAILURE",
            "timestamp": 1764493200000,
            "duration": 95000,
            "parameters": {"VERSION": "v9.1.0", "ENVIRONMENT": "production"},
            "scm": {"culprits": ["jane"]},
        },
    }
    event = event_of("jenkins", payload, delivery="")
    assert (event.version, event.environment, event.author_name) == (
        "v9.1.0",
        "production",
        "jane",
    )
    assert event.started_at == datetime(2025, 11, 30, 9, 0, tzinfo=UTC)
    assert event.finished_at == datetime(2025, 11, 30, 9, 1, 35, tzinfo=UTC)


def test_jenkins_completed_and_finalized_are_distinct_deliveries_of_one_run() -> None:
    payload = load("jenkins/notification-plugin.completed.json")
    completed = event_of("jenkins", payload, delivery="")
    finalized_payload = copy.deepcopy(payload)
    finalized_payload["build"]["phase"] = "FINALIZED"
    finalized = event_of("jenkins", finalized_payload, delivery="")
    assert completed.run_key == finalized.run_key
    assert completed.delivery_id != finalized.delivery_id
    assert event_of("jenkins", payload, delivery="").delivery_id == completed.delivery_id


def test_jenkins_missing_identity_is_malformed_and_uninformative_phases_are_ignored() -> None:
    with pytest.raises(MalformedPayload) as info:
        normalise("jenkins", {"build": {"number": 1, "phase": "STARTED"}})
    assert info.value.field == "name"
    with pytest.raises(MalformedPayload) as info:
        normalise("jenkins", {"name": "x", "build": {"phase": "STARTED"}})
    assert info.value.field == "build.number"
    no_result = normalise("jenkins", {"name": "x", "build": {"number": 1, "phase": "COMPLETED"}})
    assert no_result.event is None
    odd_phase = normalise("jenkins", {"name": "x", "build": {"number": 1, "phase": "DELETED"}})
    assert odd_phase.event is None
    assert "DELETED" in odd_phase.reason


# -- generic -------------------------------------------------------------------------------

GENERIC = {
    "service": "checkout",
    "environment": "production",
    "version": "v1.4.2",
    "status": "Failed",
    "commit": "9f1c2e7aa0",
    "author": "Jane Doe <jane@example.com>",
    "url": "https://argocd.example.com/applications/checkout",
    "run_id": "checkout/2026-11-30T09:00:00Z",
    "started_at": "2026-11-30T09:00:00Z",
    "finished_at": "2026-11-30T09:02:30Z",
    "details": {"cluster": "eu-1"},
}


def test_generic_format_as_argo_cd_sends_it() -> None:
    event = event_of("generic", dict(GENERIC), delivery="")
    assert (event.service, event.environment, event.version, event.status) == (
        "checkout",
        "production",
        "v1.4.2",
        "failed",
    )
    assert (event.author_name, event.author_email) == ("Jane Doe", "jane@example.com")
    assert event.run_key == "generic:checkout/2026-11-30T09:00:00Z"
    assert event.finished_at == datetime(2026, 11, 30, 9, 2, 30, tzinfo=UTC)
    assert event.details == {"cluster": "eu-1"}
    assert event.delivery_id == event_of("generic", dict(GENERIC), delivery="").delivery_id


@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("Running", "in_progress"),
        ("Succeeded", "succeeded"),
        ("Error", "failed"),
        ("Terminating", "cancelled"),
        ("pending", "queued"),
        ("success", "succeeded"),
        ("unstable", "unstable"),
    ],
)
def test_generic_status_words(word: str, status: str) -> None:
    payload = {**GENERIC, "status": word, "finished_at": ""}
    assert event_of("generic", payload).status == status


def test_generic_author_object_and_commit_object_and_default_run_id() -> None:
    payload = {
        "service": "api",
        "environment": "staging",
        "version": "v2",
        "status": "running",
        "commit": {"sha": "abc", "url": "https://git.example/abc"},
        "author": {"name": "Bo", "email": "bo@example.com", "login": "bo"},
    }
    event = event_of("generic", payload)
    assert event.run_key == "generic:api/staging/v2"
    assert (event.commit_sha, event.commit_url) == ("abc", "https://git.example/abc")
    assert (event.author_name, event.author_email, event.author_login) == (
        "Bo",
        "bo@example.com",
        "bo",
    )


@pytest.mark.parametrize("missing", ["service", "environment", "version", "status"])
def test_generic_required_fields_are_named_when_missing(missing: str) -> None:
    payload = {k: v for k, v in GENERIC.items() if k != missing}
    with pytest.raises(MalformedPayload) as info:
        normalise("generic", payload)
    assert info.value.field == missing


def test_generic_unknown_status_is_malformed() -> None:
    with pytest.raises(MalformedPayload) as info:
        normalise("generic", {**GENERIC, "status": "exploded"})
    assert (info.value.field, info.value.reason) == ("status", "unknown 'exploded'")


def test_generic_delivery_header_is_used() -> None:
    result = normalise_request(
        "generic", {"X-ControlRoom-Delivery": "abc-1"}, json.dumps(GENERIC).encode()
    )
    assert result.event is not None
    assert result.event.delivery_id == "abc-1"


def test_unknown_provider_is_malformed() -> None:
    with pytest.raises(MalformedPayload):
        normalise("circleci", {})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2020-10-05T16:33:49Z", datetime(2020, 10, 5, 16, 33, 49, tzinfo=UTC)),
        ("2016-08-12 15:23:28 UTC", datetime(2016, 8, 12, 15, 23, 28, tzinfo=UTC)),
        ("2021-04-28 21:50:00 +0200", datetime(2021, 4, 28, 19, 50, tzinfo=UTC)),
        ("2021-02-23T02:41:37.886Z", datetime(2021, 2, 23, 2, 41, 37, 886000, tzinfo=UTC)),
        (1764493200, datetime(2025, 11, 30, 9, 0, tzinfo=UTC)),
        (1764493200000, datetime(2025, 11, 30, 9, 0, tzinfo=UTC)),
        ("", None),
        (None, None),
        ("yesterday", None),
    ],
)
def test_parse_time(value: object, expected: datetime | None) -> None:
    assert parse_time(value) == expected


# -- routes --------------------------------------------------------------------------------

ROUTES = [
    DeployRoute.model_validate(
        {
            "match": {"provider": "github", "repository": "octo-org/*", "workflow": "deploy*"},
            "service": "octo",
            "environment": "production",
            "channel": "C-OCTO",
            "rollback": "github-octo",
        }
    ),
    DeployRoute.model_validate(
        {"match": {"provider": "github", "repository": "octo-org/*"}, "channel": "C-ANY"}
    ),
    DeployRoute.model_validate({"match": {"provider": "generic"}, "channel": "C-GENERIC"}),
]


def _event(**changes: Any) -> DeployEvent:
    base = event_of(
        "github", load("github/examples/workflow_run/completed.payload.json"), "workflow_run"
    )
    return DeployEvent(**{**{f: getattr(base, f) for f in base.__slots__}, **changes})


def test_first_matching_route_wins_and_fills_service_and_environment() -> None:
    event = _event(workflow="deploy-prod")
    assert resolve_route(ROUTES, event) == ResolvedRoute(
        "octo", "production", "C-OCTO", "github-octo"
    )


def test_route_without_environment_needs_one_from_the_event() -> None:
    # workflow "test" does not match the first route; the second gives no environment
    # and the event has none, so nothing routes.
    assert resolve_route(ROUTES, _event()) is None
    assert resolve_route(ROUTES, _event(environment="staging")) == ResolvedRoute(
        "octo-repo", "staging", "C-ANY", ""
    )


def test_generic_events_route_with_their_own_service_and_environment() -> None:
    event = event_of("generic", dict(GENERIC))
    assert resolve_route(ROUTES, event) == ResolvedRoute("checkout", "production", "C-GENERIC")


def test_route_globs_match_branch_and_job() -> None:
    route = DeployRoute.model_validate(
        {
            "match": {"provider": "gitlab", "job": "deploy-*", "branch": "main"},
            "service": "api",
            "environment": "prod",
            "channel": "C1",
        }
    )
    job = event_of("gitlab", load("gitlab/job_hook.json"), "Job Hook")
    assert resolve_route([route], job) is None
    matching = event_of(
        "gitlab",
        {**load("gitlab/job_hook.json"), "build_name": "deploy-prod", "ref": "main"},
        "Job Hook",
    )
    assert resolve_route([route], matching) == ResolvedRoute("api", "prod", "C1")


def test_route_configuration_is_validated() -> None:
    with pytest.raises(ValidationError):
        DeployRoute.model_validate({"match": {"repo": "x"}, "channel": "C1"})
    with pytest.raises(ValidationError):
        DeployRoute.model_validate({"channel": ""})
    with pytest.raises(ValidationError):
        DeployRoute.model_validate({"match": {"provider": "circleci"}, "channel": "C1"})


def test_load_routes_validates_and_names_the_bad_key() -> None:
    routes = load_routes(
        [
            {
                "match": {"provider": "jenkins", "job": "deploy-*"},
                "service": "api",
                "environment": "prod",
                "channel": "C1",
            },
            {"channel": "C2"},
        ]
    )
    assert [r.channel for r in routes] == ["C1", "C2"]
    with pytest.raises(ConfigError) as info:
        load_routes([{"channel": "C1"}, {"match": {"provider": "svn"}, "channel": "C1"}])
    assert [p[0] for p in info.value.problems] == ["workflows.deploys.routes.1.match.provider"]
    with pytest.raises(ConfigError):
        load_routes({"not": "a list"})


def test_the_documented_argo_cd_template_sends_the_generic_format() -> None:
    """The Argo CD example in the module docstring is valid YAML whose webhook body,
    rendered with sample values, normalises."""
    import re

    import yaml

    from controlroom.workflows.deploys import sources

    doc = sources.__doc__ or ""
    block = doc.split("argocd-notifications-cm``; the\nservice and trigger syntax")[1]
    yaml_text = "\n".join(
        line[4:] for line in block.split("::", 1)[1].split("\n\nand on the")[0].splitlines()
    )
    config = yaml.safe_load(yaml_text)
    assert config["service.webhook.controlroom"].startswith("url: https://")
    template = yaml.safe_load(config["template.controlroom-deploy"])
    triggers = yaml.safe_load(config["trigger.on-deploy-controlroom"])
    assert [t["send"] for t in triggers] == [["controlroom-deploy"], ["controlroom-deploy"]]
    body = template["webhook"]["controlroom"]["body"]
    samples = {
        "phase": "Succeeded",
        "startedAt": "2026-11-30T09:00:00Z",
        "finishedAt": "2026-11-30T09:02:00Z",
        "GetCommitMetadata": "Jane Doe <jane@example.com>",
        "$rev": "9f1c2e7",
        "metadata.name": "checkout",
        "namespace": "production",
        "argocdUrl": "https://argocd.example.com",
    }

    def render(match: re.Match[str]) -> str:
        expression = match.group(1)
        if ":=" in expression:
            return ""
        return next(value for key, value in samples.items() if key in expression)

    rendered = re.sub(r"\{\{-?\s*(.*?)\s*-?\}\}", render, body)
    event = event_of("generic", json.loads(rendered), delivery="")
    assert (event.service, event.environment, event.version, event.status) == (
        "checkout",
        "production",
        "9f1c2e7",
        "succeeded",
    )
    assert event.author_email == "jane@example.com"
    assert event.run_url == "https://argocd.example.com/applications/checkout"


def test_route_can_pick_run_events_over_job_events() -> None:
    route = DeployRoute.model_validate(
        {"match": {"event": "workflow_run.*"}, "environment": "prod", "channel": "C1"}
    )
    run = event_of(
        "github", load("github/examples/workflow_run/completed.payload.json"), "workflow_run"
    )
    job = event_of(
        "github", load("github/examples/workflow_job/queued.payload.json"), "workflow_job"
    )
    assert resolve_route([route], run) == ResolvedRoute("octo-repo", "prod", "C1")
    assert resolve_route([route], job) is None


def test_older_build_hook_without_project_object_uses_project_name_and_homepage() -> None:
    payload = load("gitlab/job_hook.json")
    del payload["project"]
    payload["build_status"] = "failed"
    event = event_of("gitlab", payload, "Build Hook")
    assert event.repository == "gitlab-org/gitlab-test"
    assert event.run_url == "http://192.168.64.1:3005/gitlab-org/gitlab-test/-/jobs/1977"
    assert event.details["failure_reason"] == "script_failure"
