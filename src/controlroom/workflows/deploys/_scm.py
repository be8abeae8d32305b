"""GitHub Actions and GitLab CI webhooks -> ``DeployEvent`` (see ``sources``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controlroom.workflows.deploys.events import (
    TERMINAL,
    DeployEvent,
    DeployStatus,
    MalformedPayload,
    Normalised,
    _branch,
    _commit_url,
    _ignored,
    _int,
    _items,
    _obj,
    _req_obj,
    _req_str,
    _s,
    parse_time,
)

__all__ = ["normalise_github", "normalise_gitlab"]

# ---------------------------------------------------------------------------------------
# GitHub

_GITHUB_CONCLUSIONS: dict[str, DeployStatus] = {
    "success": "succeeded",
    "failure": "failed",
    "timed_out": "failed",
    "startup_failure": "failed",
    "cancelled": "cancelled",
    # Nothing was deployed: the run waits for approval, was skipped, or went stale.
    "action_required": "cancelled",
    "skipped": "cancelled",
    "stale": "cancelled",
    # Completed, neither success nor failure: not clean enough to call it good.
    "neutral": "unstable",
}
_GITHUB_RUN_STATUS: dict[str, DeployStatus] = {
    "requested": "queued",
    "queued": "queued",
    "waiting": "queued",
    "pending": "queued",
    "in_progress": "in_progress",
}
_GITHUB_DEPLOYMENT_STATES: dict[str, DeployStatus] = {
    "pending": "queued",
    "queued": "queued",
    "waiting": "queued",
    "in_progress": "in_progress",
    "success": "succeeded",
    "failure": "failed",
    "error": "failed",
}


def _github_status(obj: Mapping[str, Any], kind: str) -> DeployStatus:
    status = _s(obj.get("status"))
    if status == "completed":
        conclusion = _s(obj.get("conclusion"))
        if conclusion not in _GITHUB_CONCLUSIONS:
            raise MalformedPayload("github", f"{kind}.conclusion", f"unknown {conclusion!r}")
        return _GITHUB_CONCLUSIONS[conclusion]
    if status not in _GITHUB_RUN_STATUS:
        raise MalformedPayload("github", f"{kind}.status", f"unknown {status!r}")
    return _GITHUB_RUN_STATUS[status]


def _github_repo(payload: Mapping[str, Any]) -> tuple[str, str]:
    repo = _req_obj("github", payload, "repository")
    name = _req_str("github", payload, "repository.full_name")
    return str(name), _s(repo.get("html_url")) or f"https://github.com/{name}"


def _github_workflow_run(payload: Mapping[str, Any], delivery: str) -> Normalised:
    run = _req_obj("github", payload, "workflow_run")
    repo, repo_url = _github_repo(payload)
    run_id = _req_str("github", payload, "workflow_run.id")
    attempt = _int(run.get("run_attempt"), 1) or 1
    sha = _s(run.get("head_sha"))
    status = _github_status(run, "workflow_run")
    commit = _obj(run, "head_commit")
    author = _obj(commit, "author")
    actor = _obj(run, "triggering_actor") or _obj(run, "actor") or _obj(payload, "sender")
    workflow = _s(_obj(payload, "workflow").get("name")) or _s(run.get("name"))
    details = {
        "workflow": workflow,
        "trigger": _s(run.get("event")),
        "title": _s(run.get("display_title")),
        "run_number": _s(run.get("run_number")),
    }
    if run.get("conclusion"):
        details["conclusion"] = _s(run.get("conclusion"))
    return Normalised(
        DeployEvent(
            provider="github",
            delivery_id=delivery,
            event_name=f"workflow_run.{_s(payload.get('action'))}",
            run_key=f"github:{repo}:run:{run_id}:{attempt}",
            status=status,
            repository=repo,
            workflow=workflow or _s(run.get("path")),
            branch=_s(run.get("head_branch")),
            version=sha[:7],
            commit_sha=sha,
            commit_url=_commit_url(repo_url, sha),
            author_name=_s(author.get("name")),
            author_email=_s(author.get("email")),
            author_login=_s(actor.get("login")),
            run_url=_s(run.get("html_url")),
            run_id=run_id,
            run_attempt=attempt,
            started_at=parse_time(run.get("run_started_at") or run.get("created_at")),
            finished_at=parse_time(run.get("updated_at")) if status in TERMINAL else None,
            details={k: v for k, v in details.items() if v},
        )
    )


def _github_workflow_job(payload: Mapping[str, Any], delivery: str) -> Normalised:
    job = _req_obj("github", payload, "workflow_job")
    repo, repo_url = _github_repo(payload)
    job_id = _req_str("github", payload, "workflow_job.id")
    attempt = _int(job.get("run_attempt"), 1) or 1
    sha = _s(job.get("head_sha"))
    status = _github_status(job, "workflow_job")
    failed_steps = [
        _s(step.get("name"))
        for step in _items(job.get("steps"))
        if isinstance(step, Mapping) and step.get("conclusion") == "failure"
    ]
    details = {
        "job": _s(job.get("name")),
        "runner": _s(job.get("runner_name")),
        "run_id": _s(job.get("run_id")),
        "failed_steps": ", ".join(failed_steps),
    }
    if job.get("conclusion"):
        details["conclusion"] = _s(job.get("conclusion"))
    return Normalised(
        DeployEvent(
            provider="github",
            delivery_id=delivery,
            event_name=f"workflow_job.{_s(payload.get('action'))}",
            run_key=f"github:{repo}:job:{job_id}:{attempt}",
            status=status,
            repository=repo,
            workflow=_s(job.get("workflow_name")),
            job=_s(job.get("name")),
            branch=_s(job.get("head_branch")),
            version=sha[:7],
            commit_sha=sha,
            commit_url=_commit_url(repo_url, sha),
            author_login=_s(_obj(payload, "sender").get("login")),
            run_url=_s(job.get("html_url")),
            run_id=job_id,
            run_attempt=attempt,
            started_at=parse_time(job.get("started_at")),
            finished_at=parse_time(job.get("completed_at")) if status in TERMINAL else None,
            details={k: v for k, v in details.items() if v},
        )
    )


def _github_deployment(payload: Mapping[str, Any], delivery: str, event: str) -> Normalised:
    dep = _req_obj("github", payload, "deployment")
    repo, repo_url = _github_repo(payload)
    dep_id = _req_str("github", payload, "deployment.id")
    sha = _s(dep.get("sha"))
    environment = _req_str("github", payload, "deployment.environment")
    dep_payload = _obj(dep, "payload")
    version = _s(dep_payload.get("version")) or sha[:7]
    creator = _obj(dep, "creator") or _obj(payload, "sender")
    workflow_run = _obj(payload, "workflow_run")
    run_url = _s(workflow_run.get("html_url"))
    details = {"task": _s(dep.get("task")), "description": _s(dep.get("description"))}
    if event == "deployment":
        if payload.get("action") not in (None, "created"):
            return _ignored(f"deployment.{payload.get('action')} is not a deploy event")
        status: DeployStatus = "queued"
        started = parse_time(dep.get("created_at"))
        finished = None
    else:
        ds = _req_obj("github", payload, "deployment_status")
        state = _req_str("github", payload, "deployment_status.state")
        if state == "inactive":
            return _ignored("deployment_status inactive (superseded deployment)")
        if state not in _GITHUB_DEPLOYMENT_STATES:
            raise MalformedPayload("github", "deployment_status.state", f"unknown {state!r}")
        status = _GITHUB_DEPLOYMENT_STATES[state]
        run_url = _s(ds.get("log_url")) or _s(ds.get("target_url")) or run_url
        started = parse_time(dep.get("created_at"))
        finished = parse_time(ds.get("created_at")) if status in TERMINAL else None
        details["state"] = state
        details["status_description"] = _s(ds.get("description"))
        if ds.get("environment_url"):
            details["environment_url"] = _s(ds.get("environment_url"))
    return Normalised(
        DeployEvent(
            provider="github",
            delivery_id=delivery,
            event_name=f"{event}.{_s(payload.get('action'))}",
            run_key=f"github:{repo}:deployment:{dep_id}",
            status=status,
            repository=repo,
            workflow=_s(_obj(payload, "workflow").get("name")),
            branch=_branch(_s(dep.get("ref"))),
            environment=environment,
            version=version,
            commit_sha=sha,
            commit_url=_commit_url(repo_url, sha),
            author_name=_s(creator.get("name")),
            author_login=_s(creator.get("login")),
            run_url=run_url,
            run_id=dep_id,
            started_at=started,
            finished_at=finished,
            details={k: v for k, v in details.items() if v},
        )
    )


def normalise_github(payload: Mapping[str, Any], event: str, delivery: str) -> Normalised:
    if event == "workflow_run":
        return _github_workflow_run(payload, delivery)
    if event == "workflow_job":
        return _github_workflow_job(payload, delivery)
    if event in ("deployment", "deployment_status"):
        return _github_deployment(payload, delivery, event)
    if not event:
        raise MalformedPayload("github", "X-GitHub-Event", "missing header")
    return _ignored(f"github event {event!r} is not a deploy event")


# ---------------------------------------------------------------------------------------
# GitLab

_GITLAB_STATUS: dict[str, DeployStatus] = {
    "created": "queued",
    "waiting_for_resource": "queued",
    "waiting_for_callback": "queued",
    "preparing": "queued",
    "pending": "queued",
    "scheduled": "queued",
    "manual": "queued",
    "blocked": "queued",
    "running": "in_progress",
    "canceling": "in_progress",
    "success": "succeeded",
    "failed": "failed",
    "canceled": "cancelled",
    "skipped": "cancelled",
}


def _gitlab_status(value: object, field_name: str) -> DeployStatus:
    status = _s(value)
    if not status:
        raise MalformedPayload("gitlab", field_name)
    if status not in _GITLAB_STATUS:
        raise MalformedPayload("gitlab", field_name, f"unknown {status!r}")
    return _GITLAB_STATUS[status]


def _gitlab_project(payload: Mapping[str, Any]) -> tuple[str, str]:
    project = _obj(payload, "project")
    path = _s(project.get("path_with_namespace")) or _s(payload.get("project_name"))
    if not path:
        raise MalformedPayload("gitlab", "project.path_with_namespace")
    # Older "Build Hook" payloads have no project object: fall back to the repository.
    web = _s(project.get("web_url")) or _s(_obj(payload, "repository").get("homepage"))
    return path, web


def _gitlab_pipeline(payload: Mapping[str, Any], delivery: str) -> Normalised:
    attrs = _req_obj("gitlab", payload, "object_attributes")
    pid = _req_str("gitlab", payload, "object_attributes.id")
    path, web = _gitlab_project(payload)
    status = _gitlab_status(attrs.get("status"), "object_attributes.status")
    sha = _s(attrs.get("sha"))
    commit = _obj(payload, "commit")
    author = _obj(commit, "author")
    user = _obj(payload, "user")
    envs = sorted(
        {
            _s(_obj(b, "environment").get("name"))
            for b in _items(payload.get("builds"))
            if isinstance(b, Mapping) and _obj(b, "environment").get("action", "start") == "start"
        }
        - {""}
    )
    failed = [
        _s(b.get("name"))
        for b in _items(payload.get("builds"))
        if isinstance(b, Mapping) and b.get("status") == "failed"
    ]
    details = {
        "pipeline": _s(attrs.get("name")),
        "source": _s(attrs.get("source")),
        "environments": ", ".join(envs),
        "failed_jobs": ", ".join(sorted(failed)),
        "gitlab_status": _s(attrs.get("status")),
    }
    return Normalised(
        DeployEvent(
            provider="gitlab",
            delivery_id=delivery,
            event_name="Pipeline Hook",
            run_key=f"gitlab:{path}:pipeline:{pid}",
            status=status,
            repository=path,
            workflow=_s(attrs.get("name")),
            branch=_s(attrs.get("ref")),
            environment=envs[0] if len(envs) == 1 else "",
            version=sha[:8],
            commit_sha=sha,
            commit_url=_s(commit.get("url")) or _commit_url(web, sha),
            author_name=_s(author.get("name")) or _s(user.get("name")),
            author_email=_s(author.get("email")) or _s(user.get("email")),
            author_login=_s(user.get("username")),
            run_url=_s(attrs.get("url")) or (f"{web}/-/pipelines/{pid}" if web else ""),
            run_id=pid,
            started_at=parse_time(attrs.get("created_at")),
            finished_at=parse_time(attrs.get("finished_at")) if status in TERMINAL else None,
            details={k: v for k, v in details.items() if v},
        )
    )


def _gitlab_job(payload: Mapping[str, Any], delivery: str, event: str) -> Normalised:
    job_id = _req_str("gitlab", payload, "build_id")
    path, web = _gitlab_project(payload)
    status = _gitlab_status(payload.get("build_status"), "build_status")
    env = _obj(payload, "environment")
    if env and _s(env.get("action")) not in ("", "start"):
        return _ignored(f"gitlab job for environment action {env.get('action')!r}")
    sha = _s(payload.get("sha"))
    commit = _obj(payload, "commit")
    user = _obj(payload, "user")
    details = {
        "job": _s(payload.get("build_name")),
        "stage": _s(payload.get("build_stage")),
        "pipeline_id": _s(payload.get("pipeline_id")),
        "gitlab_status": _s(payload.get("build_status")),
    }
    if status == "failed":
        details["failure_reason"] = _s(payload.get("build_failure_reason"))
    return Normalised(
        DeployEvent(
            provider="gitlab",
            delivery_id=delivery,
            event_name=event or "Job Hook",
            run_key=f"gitlab:{path}:job:{job_id}",
            status=status,
            repository=path,
            job=_s(payload.get("build_name")),
            branch=_s(payload.get("ref")),
            environment=_s(env.get("name")),
            version=sha[:8],
            commit_sha=sha,
            commit_url=_commit_url(web, sha),
            author_name=_s(commit.get("author_name")) or _s(user.get("name")),
            author_email=_s(commit.get("author_email")) or _s(user.get("email")),
            author_login=_s(user.get("username")),
            run_url=f"{web}/-/jobs/{job_id}" if web else "",
            run_id=job_id,
            started_at=parse_time(
                payload.get("build_started_at_iso") or payload.get("build_started_at")
            ),
            finished_at=parse_time(
                payload.get("build_finished_at_iso") or payload.get("build_finished_at")
            )
            if status in TERMINAL
            else None,
            details={k: v for k, v in details.items() if v},
        )
    )


def _gitlab_deployment(payload: Mapping[str, Any], delivery: str) -> Normalised:
    dep_id = _req_str("gitlab", payload, "deployment_id")
    path, _web = _gitlab_project(payload)
    status = _gitlab_status(payload.get("status"), "status")
    environment = _req_str("gitlab", payload, "environment")
    commit_url = _s(payload.get("commit_url"))
    sha = commit_url.rsplit("/", 1)[-1] if "/commit/" in commit_url else ""
    user = _obj(payload, "user")
    changed = parse_time(payload.get("status_changed_at"))
    details = {
        "commit_title": _s(payload.get("commit_title")),
        "environment_url": _s(payload.get("environment_external_url")),
        "environment_tier": _s(payload.get("environment_tier")),
        "gitlab_status": _s(payload.get("status")),
    }
    return Normalised(
        DeployEvent(
            provider="gitlab",
            delivery_id=delivery,
            event_name="Deployment Hook",
            run_key=f"gitlab:{path}:deployment:{dep_id}",
            status=status,
            repository=path,
            environment=environment,
            version=_s(payload.get("short_sha")) or sha[:8],
            commit_sha=sha,
            commit_url=commit_url,
            author_name=_s(user.get("name")),
            author_email=_s(user.get("email")),
            author_login=_s(user.get("username")),
            run_url=_s(payload.get("deployable_url")),
            run_id=_s(payload.get("deployable_id")) or dep_id,
            started_at=changed if status == "in_progress" else None,
            finished_at=changed if status in TERMINAL else None,
            details={k: v for k, v in details.items() if v},
        )
    )


def normalise_gitlab(payload: Mapping[str, Any], event: str, delivery: str) -> Normalised:
    kind = _s(payload.get("object_kind"))
    if event == "Pipeline Hook" or (not event and kind == "pipeline"):
        return _gitlab_pipeline(payload, delivery)
    if event in ("Job Hook", "Build Hook") or (not event and kind == "build"):
        return _gitlab_job(payload, delivery, event)
    if event == "Deployment Hook" or (not event and kind == "deployment"):
        return _gitlab_deployment(payload, delivery)
    if not event and not kind:
        raise MalformedPayload("gitlab", "X-Gitlab-Event", "missing header and object_kind")
    return _ignored(f"gitlab event {event or kind!r} is not a deploy event")
