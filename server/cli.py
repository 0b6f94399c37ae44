"""The ``xietong`` command.

    xietong up            the whole system on this machine (embedded database unless XT_MONGO_URL)
    xietong serve         one messaging-server process (needs XT_MONGO_URL; for multi-process deployments)
    xietong seed-demo     seed the demo organisation into an empty database
    xietong create-admin  create the first unit and system administrator of an empty database
    xietong keys rotate   add a new token-signing key (the newest signs; all are published)
    xietong openapi       print the OpenAPI document
    xietong config        check the XT_* settings, or print their table (--markdown)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import sys
from typing import Any, Awaitable, Callable, Iterator

from .config import ConfigError, Settings, variables_markdown


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        print(f"xietong: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


@contextlib.contextmanager
def _database(settings: Settings) -> Iterator[Settings]:
    """Settings whose mongo_url points at a database: XT_MONGO_URL, or the embedded one for the call."""
    if settings.mongo_url is not None:
        yield settings
        return
    from .store.embedded import EmbeddedMongo

    data = settings.data_dir.resolve()
    with EmbeddedMongo(data / "db", log_path=data / "db.log") as db:
        yield settings.replace(mongo_url=db.url)


def _with_services(settings: Settings, action: Callable[[Any], Awaitable[int]]) -> int:
    from .runtime import run_async
    from .services import build_services
    from .store import Store

    async def main() -> int:
        store = Store.connect(settings.mongo_url, settings.mongo_db)  # type: ignore[arg-type]
        try:
            await store.ensure_indexes()
            return await action(build_services(settings, store))
        finally:
            await store.close()

    return run_async(main())


def cmd_up(args: argparse.Namespace) -> int:
    from .runtime import up

    return up(_settings())


def cmd_serve(args: argparse.Namespace) -> int:
    from .runtime import serve

    return serve(_settings())


def cmd_signaling(args: argparse.Namespace) -> int:
    from .runtime import signaling

    return signaling(_settings())


def cmd_seed_demo(args: argparse.Namespace) -> int:
    from .seed import DEMO_PASSWORD, seed_demo

    async def action(services: Any) -> int:
        if await seed_demo(services):
            print(f"seeded the demo organisation; every demo account's password is {DEMO_PASSWORD}")
            return 0
        print("the database already has users; nothing seeded", file=sys.stderr)
        return 1

    with _database(_settings()) as settings:
        return _with_services(settings, action)


def cmd_create_admin(args: argparse.Namespace) -> int:
    from .bootstrap import create_root_and_admin
    from .errors import XtError

    password = getpass.getpass("password for the new system administrator: ")

    async def action(services: Any) -> int:
        try:
            unit, user = await create_root_and_admin(
                services.store, services.audit, unit_name=args.unit_name, unit_level=args.unit_level,
                unit_code=args.unit_code, username=args.username, display_name=args.display_name, password=password)
        except XtError as exc:
            print(f"xietong: {exc.message}", file=sys.stderr)
            return 1
        print(f"created unit {unit.id} ({unit.name}) and system administrator {user.username} ({user.id})")
        return 0

    with _database(_settings()) as settings:
        return _with_services(settings, action)


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from .auth.keys import KeyRing, write_new_key

    settings = _settings()
    folder = settings.effective_keys_dir
    KeyRing.load_or_create(folder)
    key = write_new_key(folder)
    print(f"new signing key {key.kid} in {folder}; restart the servers to sign with it")
    return 0


def cmd_openapi(args: argparse.Namespace) -> int:
    from .http import openapi_document

    json.dump(openapi_document(), sys.stdout, ensure_ascii=False, indent=2, sort_keys=False)
    sys.stdout.write("\n")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    if args.markdown:
        print(variables_markdown())
        return 0
    settings = _settings()
    print("configuration is valid:")
    for name, value in sorted(vars(settings).items()):
        print(f"  {name} = {value!r}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xietong", description="Xietong (协同) collaboration server")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="run the whole system on this machine").set_defaults(func=cmd_up)
    sub.add_parser("serve", help="run one messaging-server process").set_defaults(func=cmd_serve)
    sub.add_parser("signaling", help="run one signaling-service process (calls and meetings)").set_defaults(
        func=cmd_signaling)
    sub.add_parser("seed-demo", help="seed the demo organisation").set_defaults(func=cmd_seed_demo)
    admin = sub.add_parser("create-admin", help="create the first unit and system administrator")
    admin.add_argument("--username", required=True)
    admin.add_argument("--display-name", required=True)
    admin.add_argument("--unit-name", required=True)
    admin.add_argument("--unit-level", default="province",
                       choices=["national", "province", "city", "county", "department"])
    admin.add_argument("--unit-code")
    admin.set_defaults(func=cmd_create_admin)
    keys = sub.add_parser("keys", help="manage token-signing keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    keys_sub.add_parser("rotate", help="add a new signing key").set_defaults(func=cmd_keys_rotate)
    sub.add_parser("openapi", help="print the OpenAPI document").set_defaults(func=cmd_openapi)
    config = sub.add_parser("config", help="check the configuration")
    config.add_argument("--markdown", action="store_true", help="print the settings table for the README")
    config.set_defaults(func=cmd_config)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
