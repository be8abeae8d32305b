"""``controlroom``: run the hub, its parts, and the operator's chores."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from controlroom.cli_ops import register as register_ops
from controlroom.config import Secret, Settings, load_settings
from controlroom.errors import ConfigError, ControlRoomError
from controlroom.ops._common import ConfigOpt, peek_data_dir
from controlroom.serving import bound_port, free_port, serve_asgi

__all__ = ["app", "main"]

app = typer.Typer(
    name="controlroom",
    help="Control Room: run operations from Slack.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
jobs_app = typer.Typer(help="Inspect and replay jobs.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
register_ops(app)
console = Console()
err = Console(stderr=True)


def _config_path(path: Path | None) -> Path | None:
    if path is not None:
        return path
    env = os.environ.get("CONTROLROOM_CONFIG")
    if env:
        return Path(env)
    default = Path("controlroom.toml")
    return default if default.exists() else None


def _peek_data_dir(path: Path | None, overrides: dict[str, Any]) -> Path:
    """The data directory, read before the full load: the keystore lives there and
    ``keystore:`` references are resolved during the load."""
    if overrides.get("data_dir"):
        return Path(str(overrides["data_dir"]))
    return peek_data_dir(path, os.environ)


def _settings(path: Path | None, **overrides: Any) -> Settings:
    from controlroom.security.secrets import install_secret_schemes

    install_secret_schemes(_peek_data_dir(_config_path(path), overrides))
    try:
        return load_settings(
            _config_path(path), overrides={k: v for k, v in overrides.items() if v is not None}
        )
    except ConfigError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def _install_extensions(settings: Settings) -> None:
    """Logging with redaction of every configured secret."""
    from controlroom.logs import configure_logging

    configure_logging(settings)


def _run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    try:
        asyncio.run(_with_signals(coro_fn))
    except KeyboardInterrupt:
        pass
    except ControlRoomError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None


async def _with_signals(coro_fn: Callable[[], Awaitable[None]]) -> None:
    task = asyncio.ensure_future(coro_fn())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


@app.command()
def up(
    config: ConfigOpt = None,
    port: Annotated[int | None, typer.Option(help="hub port")] = None,
    sandbox_port: Annotated[int | None, typer.Option(help="sandbox port")] = None,
    no_sandbox: Annotated[
        bool, typer.Option("--no-sandbox", help="never start the sandbox")
    ] = False,
) -> None:
    """Run everything in one process: web edge, workers, scheduler (SQLite by default).
    With no Slack credentials, the sandbox workspace starts beside it, already wired."""
    overrides: dict[str, Any] = {"server.port": port, "sandbox.port": sandbox_port}
    if no_sandbox:
        overrides["sandbox.enabled"] = "off"
    settings = _settings(config, **overrides)
    if not settings.enabled_workflows and not settings.workflows:
        settings = settings.model_copy(update={"enabled_workflows": _default_workflows()})
    _install_extensions(settings)
    _run(lambda: _up(settings))


def _default_workflows() -> tuple[str, ...]:
    from controlroom.dispatch import BUILTIN_WORKFLOWS

    names = []
    for name, mod in BUILTIN_WORKFLOWS.items():
        try:
            __import__(mod)
        except ImportError:
            continue
        names.append(name)
    return tuple(names)


async def _up(settings: Settings) -> None:
    from controlroom.app import create_app, socket_mode_intake
    from controlroom.hub import Hub

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    want_sandbox = settings.sandbox.enabled == "on" or (
        settings.sandbox.enabled == "auto" and not settings.slack.configured
    )
    async with contextlib.AsyncExitStack() as stack:
        sandbox = None
        if want_sandbox:
            from controlroom.sandbox import Sandbox, SandboxConfig, serve_sandbox

            sandbox = Sandbox(
                SandboxConfig(
                    seed_path=Path(settings.sandbox.seed) if settings.sandbox.seed else None,
                    time_scale=settings.sandbox.time_scale,
                    socket_mode=settings.sandbox.delivery == "socket",
                )
            )
            running = await stack.enter_async_context(
                serve_sandbox(sandbox, host=settings.sandbox.host, port=settings.sandbox.port)
            )
            settings = settings.model_copy(
                update={
                    "slack": settings.slack.model_copy(
                        update={
                            "signing_secret": Secret(sandbox.signing_secret, "sandbox"),
                            "bot_token": Secret(sandbox.bot_token, "sandbox"),
                            "app_token": Secret(sandbox.app_token, "sandbox"),
                            "api_url": running.api_url,
                            "team_id": sandbox.team_id,
                            "socket_mode": settings.sandbox.delivery == "socket",
                        }
                    )
                }
            )
        port = settings.server.port or free_port(settings.server.host)
        hub_url = f"http://{settings.server.host}:{port}"
        extra: list[Any] = []
        if sandbox is not None:
            from controlroom.demo import demo_routes, with_demo_defaults

            settings = with_demo_defaults(settings, hub_url)
            extra = demo_routes(settings, hub_url)
        hub = Hub(settings)
        await hub.start()
        stack.push_async_callback(hub.close)
        await _report_scopes(settings, hub)
        web = create_app(settings, hub=hub, manage_hub=False, extra_routes=extra)
        await stack.enter_async_context(serve_asgi(web, settings.server.host, port))
        await stack.enter_async_context(socket_mode_intake(settings, web))
        if sandbox is not None:
            _show_shortcuts(sandbox, settings, hub)
            if not settings.slack.socket_mode:
                await sandbox.set_request_url(f"{hub_url}/slack/events")
        worker = asyncio.create_task(hub.queue.run_worker(concurrency=settings.queue.workers))
        stack.callback(worker.cancel)
        _banner(settings, hub_url, sandbox, running.url if sandbox is not None else None)
        await asyncio.Event().wait()


async def _report_scopes(settings: Settings, hub: Any) -> None:
    """At start: the scopes Slack granted the bot token against what the enabled
    workflows need. Missing ones are errors naming the workflows; extra ones a warning
    (over-scoping widens what a leaked token can do). Start goes on either way."""
    if settings.slack.bot_token is None or not hub.registry.workflows:
        return
    import structlog

    from controlroom.ops.scopes_check import check_scopes_against_slack

    log = structlog.get_logger("controlroom.scopes")
    try:
        check = await check_scopes_against_slack(settings, hub.registry.workflows.values())
    except ControlRoomError as exc:
        log.warning("scope_check_failed", error=str(exc))
        return
    for line in check.errors():
        log.error("missing_scope", detail=line)
    if check.extra:
        log.warning("extra_scopes", scopes=sorted(check.extra))


def _show_shortcuts(sandbox: Any, settings: Settings, hub: Any) -> None:
    """The sandbox's message menus offer the enabled workflows' shortcuts."""
    from controlroom.manifest import ManifestOptions, build_manifest
    from controlroom.sandbox.web import web_client

    manifest = build_manifest(
        settings,
        list(hub.registry.workflows.values()),
        ManifestOptions(socket_mode=True),
    )
    web_client(sandbox).set_shortcuts(manifest.get("features", {}).get("shortcuts", []))


def _banner(settings: Settings, hub_url: str, sandbox: Any, sandbox_url: str | None) -> None:
    console.print(f"[bold]Control Room[/bold] is up at {hub_url}")
    console.print(f"  database   {settings.effective_database_url}")
    console.print(f"  health     {hub_url}/readyz   metrics {hub_url}/metrics")
    if sandbox is not None and sandbox_url is not None:
        console.print(f"[bold]Sandbox workspace[/bold] at [link]{sandbox_url}[/link]")
        console.print("  act as any seeded user from the switcher, for example:")
        team = sandbox.team_id
        people = [u for u in sandbox.state.users.values() if u.team_id == team and not u.is_bot]
        for user in people[:4]:
            console.print(f"    @{user.name:8s} {user.real_name}, {user.title}")
        console.print("  try it:")
        console.print("    as @priya, react :rotating_light: to a customer message in #support")
        console.print("    run `uv run controlroom demo deploy`; as @grace, Rollback in #deploys")
        console.print("    as @tomas, talk in #proj-aurora, then type /digest now")
    console.print("Press Ctrl+C to stop.")


@app.command()
def serve(
    config: ConfigOpt = None,
    port: Annotated[int | None, typer.Option(help="port")] = None,
) -> None:
    """Run a web replica only (the edge). Pair with ``controlroom worker`` on PostgreSQL."""
    settings = _settings(config, **{"server.port": port})
    _install_extensions(settings)

    async def main_() -> None:
        from controlroom.app import create_app, socket_mode_intake

        web = create_app(settings)
        async with (
            serve_asgi(web, settings.server.host, settings.server.port) as server,
            socket_mode_intake(settings, web),
        ):
            console.print(f"serving on http://{settings.server.host}:{bound_port(server)}")
            await asyncio.Event().wait()

    _run(main_)


@app.command()
def worker(
    config: ConfigOpt = None,
    concurrency: Annotated[int | None, typer.Option(help="jobs at once")] = None,
) -> None:
    """Run jobs only. Several workers may share one PostgreSQL database."""
    settings = _settings(config)
    _install_extensions(settings)

    async def main_() -> None:
        from controlroom.hub import Hub

        hub = Hub(settings)
        await hub.start()
        await _report_scopes(settings, hub)
        try:
            await hub.queue.run_worker(concurrency=concurrency or settings.queue.workers)
        finally:
            await hub.close()

    _run(main_)


@app.command()
def check(config: ConfigOpt = None) -> None:
    """Validate the configuration; print each problem with its key and source."""
    from controlroom.security.secrets import install_secret_schemes

    path = _config_path(config)
    install_secret_schemes(_peek_data_dir(path, {}))
    try:
        settings = load_settings(path)
        from controlroom.dispatch import load_workflows

        wfs = load_workflows(settings.enabled_workflows)
    except ConfigError as exc:
        for key, source, reason in exc.problems:
            err.print(f"[red]✗[/red] {key} [dim](from {source})[/dim]: {reason}")
        raise typer.Exit(2) from None
    if settings.slack.bot_token is not None:
        from controlroom.cli_ops import run_scope_check

        code = run_scope_check(settings, wfs)
        if code:
            raise typer.Exit(code)
    console.print(f"[green]✓[/green] configuration is valid ({path or 'defaults'})")
    console.print(f"  database: {settings.effective_database_url}")
    console.print(f"  workflows: {', '.join(w.name for w in wfs) or 'none'}")
    console.print(f"  webhook sources: {', '.join(settings.hooks) or 'none'}")


def _with_queue(config: Path | None, fn: Callable[[Any], Awaitable[None]]) -> None:
    settings = _settings(config)

    async def main_() -> None:
        from controlroom.queue import open_queue

        queue = open_queue(settings.effective_database_url)
        await queue.open()
        try:
            await fn(queue)
        finally:
            await queue.close()

    _run(main_)


def _ago(ts: float) -> str:
    d = max(0.0, time.time() - ts)
    return (
        f"{d:.0f}s ago" if d < 120 else f"{d / 60:.0f}m ago" if d < 7200 else f"{d / 3600:.0f}h ago"
    )


@jobs_app.command("list")
def jobs_list(
    config: ConfigOpt = None,
    status: Annotated[str | None, typer.Option(help="queued|running|succeeded|dead|...")] = None,
    task: Annotated[str | None, typer.Option(help="task name")] = None,
    limit: int = 50,
) -> None:
    """List jobs, newest first."""

    async def go(queue: Any) -> None:
        jobs = await queue.list_jobs(status=status, task=task, limit=limit)
        table = Table("id", "task", "status", "attempts", "updated", "error")
        for j in jobs:
            table.add_row(
                j.id,
                j.task,
                j.status,
                f"{j.attempts}/{j.max_attempts}",
                _ago(j.updated_at),
                (j.last_error or "")[:60],
            )
        console.print(table)
        console.print(await queue.counts())

    _with_queue(config, go)


@jobs_app.command("show")
def jobs_show(job_id: str, config: ConfigOpt = None) -> None:
    """Show one job in full."""

    async def go(queue: Any) -> None:
        from dataclasses import asdict

        console.print_json(json.dumps(asdict(await queue.get_job(job_id)), default=str))

    _with_queue(config, go)


@jobs_app.command("retry")
def jobs_retry(job_id: str, config: ConfigOpt = None) -> None:
    """Put a dead-lettered job back in the queue."""

    async def go(queue: Any) -> None:
        await queue.retry_job(job_id)
        console.print(f"job {job_id} queued again")

    _with_queue(config, go)


@jobs_app.command("retry-all")
def jobs_retry_all(config: ConfigOpt = None) -> None:
    """Put every dead-lettered job back in the queue."""

    async def go(queue: Any) -> None:
        n = await queue.retry_all_dead()
        console.print(f"{n} dead job(s) queued again")

    _with_queue(config, go)


@jobs_app.command("purge")
def jobs_purge(
    config: ConfigOpt = None,
    older_than: Annotated[
        str | None,
        typer.Option(help="age, e.g. 7d or 36h (default: queue.inbox_retention; at least 1d)"),
    ] = None,
) -> None:
    """Delete envelopes and finished jobs older than the retention, as the hub does hourly.
    Envelopes of queued, running and dead-lettered jobs stay; a purged envelope's
    dedupe_key is accepted again if its source redelivers it."""
    from controlroom.config import parse_duration

    settings = _settings(config)
    q = settings.queue
    try:
        age = q.inbox_retention if older_than is None else parse_duration(older_than)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--older-than") from None
    if age < 86400:
        raise typer.BadParameter(
            "must be at least 1d: Slack retries an event for up to about an hour and delayed "
            "delivery over hours; a purged envelope would let such a retry run again",
            param_hint="--older-than",
        )

    async def go(queue: Any) -> None:
        envelopes = await queue.purge_inbox(age, batch=q.inbox_purge_batch)
        jobs = await queue.purge_jobs(age, batch=q.inbox_purge_batch)
        console.print(
            f"purged {envelopes} envelope(s) and {jobs} finished job(s) older than {_age(age)}"
        )

    _with_queue(config, go)


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:g}s"


slack_app = typer.Typer(help="Slack outbound: the rate gate's state.", no_args_is_help=True)
app.add_typer(slack_app, name="slack")


@slack_app.command("limits")
def slack_limits(
    config: ConfigOpt = None,
    workspace: Annotated[str | None, typer.Option(help="only this workspace (T…)")] = None,
    hub: Annotated[str | None, typer.Option(help="hub URL (embedded mode)")] = None,
) -> None:
    """Current budgets and cooldowns per workspace, method and channel. On PostgreSQL
    they are read from the shared gate; in the embedded mode from the running hub."""
    settings = _settings(config)

    async def main_() -> None:
        import httpx

        from controlroom.slack import LimitState, format_limits
        from controlroom.slack.gate_pg import gate_for_database

        if settings.is_distributed:
            gate = gate_for_database(settings.effective_database_url)
            try:
                states = await gate.limits_snapshot(workspace)
            finally:
                await gate.aclose()
        else:
            url = hub or f"http://{settings.server.host}:{settings.server.port}"
            try:
                async with httpx.AsyncClient(timeout=5) as http:
                    resp = await http.get(
                        f"{url}/admin/slack-limits", params={"workspace": workspace or ""}
                    )
            except httpx.TransportError as exc:
                raise ControlRoomError(
                    f"cannot reach the hub at {url} (embedded budgets live in its process)"
                ) from exc
            if resp.status_code != 200:
                raise ControlRoomError(f"the hub answered {resp.status_code}: {resp.text.strip()}")
            states = [LimitState(**row) for row in resp.json()]
        console.print(format_limits(states))

    _run(main_)


demo_app = typer.Typer(
    help="Drive the demo of `controlroom up` (sandbox mode).", no_args_is_help=True
)
app.add_typer(demo_app, name="demo")


@demo_app.command("deploy")
def demo_deploy(
    config: ConfigOpt = None,
    service: str = "checkout",
    env: Annotated[str, typer.Option("--env", help="environment")] = "production",
    good: Annotated[str, typer.Option(help="version that deploys fine")] = "v2.4.0",
    bad: Annotated[str, typer.Option(help="version whose deploy fails")] = "v2.5.0",
    hub: Annotated[str | None, typer.Option(help="hub URL (default: the configured port)")] = None,
) -> None:
    """Send a good deploy then a failing one to the running hub, signed as the demo CI
    source: #deploys shows the failure with "Rollback to <good>"."""
    settings = _settings(config)
    url = hub or f"http://{settings.server.host}:{settings.server.port}"

    async def main_() -> None:
        import httpx

        from controlroom.demo import send_demo_deploys

        try:
            codes = await send_demo_deploys(
                url, settings.data_dir, service=service, environment=env, good=good, bad=bad
            )
        except httpx.TransportError as exc:
            raise ControlRoomError(
                f"cannot reach the hub at {url}: is `controlroom up` running?"
            ) from exc
        if any(code != 202 for code in codes):
            raise ControlRoomError(f"the hub refused the demo webhooks (HTTP {codes})")
        console.print(
            f"sent {service} {good} (succeeded) and {bad} (failed) to {env}: see #deploys"
        )

    _run(main_)


@app.command()
def sandbox(
    port: Annotated[int, typer.Option(help="port")] = 8090,
    host: str = "127.0.0.1",
    seed: Annotated[Path | None, typer.Option(help="seed YAML")] = None,
    request_url: Annotated[
        str | None, typer.Option(help="Events API Request URL of your app")
    ] = None,
    socket_mode: Annotated[bool, typer.Option(help="deliver over Socket Mode")] = False,
    time_scale: float = 1.0,
) -> None:
    """Run the sandbox workspace alone, for any Slack app (Bolt apps included)."""

    async def main_() -> None:
        from controlroom.sandbox import Sandbox, SandboxConfig, serve_sandbox

        sb = Sandbox(SandboxConfig(seed_path=seed, time_scale=time_scale, socket_mode=socket_mode))
        async with serve_sandbox(sb, host=host, port=port) as running:
            if request_url:
                await sb.set_request_url(request_url)
            console.print(f"[bold]Sandbox workspace[/bold] at {running.url}")
            console.print(f"  Web API base URL  {running.api_url}")
            console.print(f"  bot token         {sb.bot_token}")
            console.print(f"  app-level token   {sb.app_token}")
            console.print(f"  signing secret    {sb.signing_secret}")
            await asyncio.Event().wait()

    _run(main_)


def main() -> None:
    try:
        app()
    except ControlRoomError as exc:
        err.print(f"[red]{exc}[/red]")
        sys.exit(1)
