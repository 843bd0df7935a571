"""``photodrop serve | worker | keys create|list|revoke | project show|logo | migrate``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from photodrop.config import Settings
from photodrop.context import Services, open_services
from photodrop.db import Database
from photodrop.delivery.worker import DeliveryWorker
from photodrop.errors import PhotodropError
from photodrop.models import KeyEnv
from photodrop.resolvers import projects

T = TypeVar("T")


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
    import uvicorn  # the key and migrate commands start faster without the web stack

    from photodrop.app import create_app

    if settings.public_url is None:
        settings = settings.model_copy(update={"public_url": f"http://{args.host}:{args.port}"})
    _run(settings, _first_start)
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        proxy_headers=True,
        timeout_graceful_shutdown=30,
    )
    return 0


def worker(settings: Settings, args: argparse.Namespace) -> int:
    """Deliver until SIGTERM or SIGINT, then hand back whatever is unfinished."""

    async def main() -> None:
        async with open_services(settings) as services:
            runner = asyncio.create_task(DeliveryWorker(services, concurrency=args.concurrency).run())
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, runner.cancel)
            print(f"photodrop worker delivering with concurrency {args.concurrency or settings.delivery_concurrency}")
            sys.stdout.flush()
            with contextlib.suppress(asyncio.CancelledError):
                await runner

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
    project = _run(settings, lambda services: projects.get_project(services, project_name=args.project))
    print(f"id:             {project.id}")
    print(f"name:           {project.name}")
    print(f"webhook secret: {project.webhook_secret}")
    print(f"logo:           {'set' if project.logo_png else 'default mark'}")
    return 0


def project_logo(settings: Settings, args: argparse.Namespace) -> int:
    image = Path(args.path).read_bytes()
    project = _run(settings, lambda services: projects.set_logo(services, project_name=args.project, image=image))
    print(f"QR codes of {project.name} now carry this logo when asked for one (logo=1)")
    return 0


def migrate(settings: Settings, args: argparse.Namespace) -> int:
    database = Database(settings.resolved_database_url)

    async def main() -> None:
        await database.migrate()
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
    run.set_defaults(handler=serve)

    deliver = commands.add_parser("worker", help="run delivery alone, without the API")
    deliver.add_argument("--concurrency", type=int, default=None, help="deliveries in flight at once")
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
