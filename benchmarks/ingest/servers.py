"""The three servers the ingest benchmark compares, each run as its own process.

    python benchmarks/ingest/servers.py bare|bolt|controlroom|controlroom-handler PORT DATA_DIR

- bare: a Starlette route that only returns 200 (the limit of the stack);
- bolt: Bolt for Python's AsyncApp with a no-op listener, through its Starlette adapter
  (it verifies the signature and parses, and commits nothing);
- controlroom: the embedded hub (SQLite, workers running), committing every event. No
  workflow subscribes to ``message``, so each envelope is committed to the inbox
  (de-duplicated, replayable) without a dispatch job;
- controlroom-handler: the same with a no-op durable ``message`` handler, so each event
  also gets a dispatch job in the same transaction, and the workers (same process, same
  core) claim and run it while the intake goes on.

All three run on uvicorn with uvloop and httptools, access log off.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import uvicorn

SIGNING_SECRET = "bench-signing-secret-0123456789abcdef"


def bare_app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def events(request: Request) -> Response:
        await request.body()
        return Response(b"", status_code=200)

    return Starlette(routes=[Route("/slack/events", events, methods=["POST"])])


def bolt_app() -> Any:
    from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
    from slack_bolt.async_app import AsyncApp
    from slack_bolt.authorization import AuthorizeResult
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def authorize(enterprise_id: Any, team_id: Any, **_: Any) -> AuthorizeResult:
        # Answer locally: the benchmark must not depend on auth.test round trips.
        return AuthorizeResult(
            enterprise_id=enterprise_id,
            team_id=team_id,
            bot_token="xoxb-bench",
            bot_user_id="U0BENCHBOT",
            bot_id="B0BENCHBOT",
        )

    bolt = AsyncApp(
        signing_secret=SIGNING_SECRET, authorize=authorize, request_verification_enabled=True
    )

    @bolt.event("message")
    async def noop(ack: Any) -> None:
        return None

    handler = AsyncSlackRequestHandler(bolt)

    async def events(request: Request) -> Response:
        return await handler.handle(request)

    return Starlette(routes=[Route("/slack/events", events, methods=["POST"])])


def noop_message_workflow() -> Any:
    from controlroom import Context, Workflow

    workflow = Workflow("bench")

    @workflow.event("message")
    async def noop(ctx: Context) -> None:
        return None

    return workflow


async def run_controlroom(port: int, data_dir: Path, *, with_handler: bool = False) -> None:
    from controlroom.app import create_app
    from controlroom.config import load_settings
    from controlroom.hub import Hub

    settings = load_settings(
        environ={"BENCH_SECRET": SIGNING_SECRET},
        overrides={
            "data_dir": str(data_dir),
            "slack.signing_secret": "env:BENCH_SECRET",
            "sandbox.enabled": "off",
        },
    )
    from controlroom.logs import configure_logging

    configure_logging(settings)
    hub = Hub(settings, workflows=[noop_message_workflow()] if with_handler else [])
    await hub.start()
    app = create_app(settings, hub=hub, manage_hub=False)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on"
    )
    worker = asyncio.create_task(hub.queue.run_worker(concurrency=8))
    try:
        await uvicorn.Server(config).serve()
    finally:
        worker.cancel()
        await hub.close()


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind in ("controlroom", "controlroom-handler"):
        import uvloop

        uvloop.run(
            run_controlroom(port, Path(sys.argv[3]), with_handler=kind == "controlroom-handler")
        )
        return
    app = bare_app() if kind == "bare" else bolt_app()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


if __name__ == "__main__":
    main()
