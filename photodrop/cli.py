"""``photodrop serve | worker | keys create|list|revoke | project show|logo | migrate``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from prometheus_client import start_http_server

from photodrop import logs
from photodrop.config import Settings
from photodrop.context import Services, open_services
from photodrop.db import Database
from photodrop.delivery.worker import DeliveryWorker
from photodrop.errors import PhotodropError
from photodrop.metrics import Metrics, empty_directory
from photodrop.models import KeyEnv, Project
from photodrop.resolvers import projects

T = TypeVar("T")
log = logging.getLogger("photodrop.cli")


def _run(settings: Settings, action: Callable[[Services], Awaitable[T]]) -> T:
    async def main() -> T:
        async with open_services(settings) as services:
            return await action(services)

    return asyncio.run(main())


async def _first_start(services: Services) -> None:
    if await projects.any_project_exists(services):
        return
    issued = await projects.create_key(services, project_name=projects.DEFAULT_PROJECT, env=KeyEnv.LIVE)
    base = services.settings.base_url
    print("photodrop created project 'default'. Its API key (shown only this once):")
    print(f"  {issued.plain_text}")
    print(f"  REST API:  {base}/v1   (docs: {base}/docs)")
    print(f"  GraphQL:   {base}/graphql")
    print(f"  Dashboard: {base}/dashboard")
    sys.stdout.flush()


def serve(settings: Settings, args: argparse.Namespace) -> int:
    """Run the API in ``--workers`` processes; they deliver too only when there is one of them.

    Several API processes leave delivery to ``photodrop worker``, which scales on its own; so does
    ``--no-worker`` or ``PHOTODROP_RUN_WORKER=false``. On SIGTERM the API stops accepting, lets the
    requests in flight finish for up to PHOTODROP_SHUTDOWN_TIMEOUT seconds, then stops.
    """
    import uvicorn  # the key and migrate commands start faster without the web stack

    logs.configure(settings.log_level)
    delivering = settings.run_worker and not args.no_worker and args.workers == 1
    settings = settings.model_copy(
        update={"public_url": settings.public_url or f"http://{args.host}:{args.port}", "run_worker": delivering}
    )
    _ = settings.resolved_secret_key  # generated here once, rather than raced by the server processes
    if settings.metrics_dir is not None:
        empty_directory(settings.metrics_dir)
    _run(settings, _first_start)
    # Every server process builds its app from the environment (``app_from_env``), like any other
    # photodrop process: hand them what the command line decided.
    os.environ["PHOTODROP_PUBLIC_URL"] = str(settings.public_url)
    os.environ["PHOTODROP_RUN_WORKER"] = str(delivering).lower()
    uvicorn.run(
        "photodrop.app:app_from_env",
        factory=True,
        workers=args.workers,
        host=args.host,
        port=args.port,
        proxy_headers=True,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout),
        log_config=None,  # logs.configure and app_from_env make every line JSON
        access_log=False,  # the app writes its own access lines, with the request id
    )
    return 0


def worker(settings: Settings, args: argparse.Namespace) -> int:
    """Deliver until SIGTERM or SIGINT; the deliveries in flight then get PHOTODROP_SHUTDOWN_TIMEOUT
    seconds to finish, and whatever is still unfinished is handed back. A second signal stops at once."""
    logs.configure(settings.log_level)

    async def main() -> None:
        async with open_services(settings) as opened:
            services = dataclasses.replace(opened, metrics=Metrics(settings.metrics_dir))
            deliverer = DeliveryWorker(services, concurrency=args.concurrency)
            await deliverer.prepare()  # before the metrics port opens: a worker that answers is ready
            runner = asyncio.create_task(deliverer.run())

            def stop() -> None:
                if deliverer.stopping:
                    runner.cancel()
                    return
                log.info("stopping: no new deliveries; the ones in flight may finish")
                deliverer.stop()

            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop)
            if args.metrics_port is not None:
                start_http_server(args.metrics_port, addr=args.metrics_host, registry=services.metrics.registry)
            log.info("photodrop worker %s delivering with concurrency %d", deliverer.name, deliverer.concurrency)
            try:
                with contextlib.suppress(asyncio.CancelledError):
                    await runner
            finally:
                services.metrics.close()

    asyncio.run(main())
    return 0


def keys_create(settings: Settings, args: argparse.Namespace) -> int:
    issued = _run(
        settings,
        lambda services: projects.create_key(
            services, project_name=args.project, env=KeyEnv(args.env), label=args.label
        ),
    )
    print(f"created {issued.key.id} ({issued.key.env.value}) for project {args.project}; it is shown only once:")
    print(issued.plain_text)
    return 0


def keys_list(settings: Settings, args: argparse.Namespace) -> int:
    rows = _run(settings, lambda services: projects.list_keys(services, project_name=args.project))
    print(f"{'ID':<31} {'PROJECT':<16} {'ENV':<5} {'KEY':<24} {'CREATED':<20} {'LAST USED':<20} STATE")
    for key, project in rows:
        state = "revoked" if key.revoked_at else "active"
        used = key.last_used_at.strftime("%Y-%m-%d %H:%M:%S") if key.last_used_at else "never"
        print(
            f"{key.id:<31} {project:<16} {key.env.value:<5} {key.prefix + '…' + key.last_four:<24} "
            f"{key.created_at:%Y-%m-%d %H:%M:%S}  {used:<20} {state}"
        )
    return 0


def keys_revoke(settings: Settings, args: argparse.Namespace) -> int:
    key = _run(settings, lambda services: projects.revoke_key(services, key_id=args.id))
    print(f"revoked {key.id}")
    return 0


def project_show(settings: Settings, args: argparse.Namespace) -> int:
    async def show(services: Services) -> tuple[Project, str]:
        project = await projects.get_project(services, project_name=args.project)
        return project, projects.webhook_secret_of(services, project)

    project, secret = _run(settings, show)
    print(f"id:             {project.id}")
    print(f"name:           {project.name}")
    print(f"webhook secret: {secret}")
    print(f"logo:           {'set' if project.logo_png else 'default mark'}")
    return 0


def project_logo(settings: Settings, args: argparse.Namespace) -> int:
    image = Path(args.path).read_bytes()
    project = _run(settings, lambda services: projects.set_logo(services, project_name=args.project, image=image))
    print(f"QR codes of {project.name} now carry this logo when asked for one (logo=1)")
    return 0


def migrate(settings: Settings, args: argparse.Namespace) -> int:
    database = Database.from_settings(settings)

    async def main() -> None:
        await database.migrate(settings)
        await database.dispose()

    asyncio.run(main())
    print("database is at the newest schema")
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="photodrop", description="Collect photos from phones.")
    commands = root.add_subparsers(dest="command", required=True)

    run = commands.add_parser("serve", help="run the API, pages and delivery")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8000)
    run.add_argument(
        "--workers", type=_positive, default=1, help="API processes; with more than one, run `photodrop worker` too"
    )
    run.add_argument("--no-worker", action="store_true", help="deliver nothing here; leave it to `photodrop worker`")
    run.set_defaults(handler=serve)

    deliver = commands.add_parser("worker", help="run delivery alone, without the API")
    deliver.add_argument("--concurrency", type=_positive, default=None, help="deliveries in flight at once")
    deliver.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus metrics on this port")
    deliver.add_argument("--metrics-host", default="127.0.0.1", help="the address --metrics-port listens on")
    deliver.set_defaults(handler=worker)

    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(dest="keys_command", required=True)
    create = keys.add_parser("create", help="issue a key (printed alone on the last line)")
    create.add_argument("--project", default=projects.DEFAULT_PROJECT)
    create.add_argument("--env", choices=[env.value for env in KeyEnv], default=KeyEnv.LIVE.value)
    create.add_argument("--label", default="")
    create.set_defaults(handler=keys_create)
    listing = keys.add_parser("list", help="list keys (never their secret part)")
    listing.add_argument("--project", default=None)
    listing.set_defaults(handler=keys_list)
    revoke = keys.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id")
    revoke.set_defaults(handler=keys_revoke)

    project = commands.add_parser("project", help="look at or change a project").add_subparsers(
        dest="project_command", required=True
    )
    show = project.add_parser("show", help="the project's id, name and webhook secret")
    show.add_argument("--project", default=projects.DEFAULT_PROJECT)
    show.set_defaults(handler=project_show)
    logo = project.add_parser("logo", help="set the logo centred in QR codes asked for with logo=1")
    logo.add_argument("path", help="an image file (PNG, JPEG, WebP ...)")
    logo.add_argument("--project", default=projects.DEFAULT_PROJECT)
    logo.set_defaults(handler=project_logo)

    commands.add_parser("migrate", help="bring the database schema up to date").set_defaults(handler=migrate)
    return root


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = Settings()
    try:
        code: int = args.handler(settings, args)
    except PhotodropError as exc:
        print(f"photodrop: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"photodrop: {exc}", file=sys.stderr)
        return 1
    return code
