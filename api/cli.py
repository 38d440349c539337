"""The `keyward` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from core import runtime
from core.config import load_settings
from core.errors import KeywardError


async def _with_db(work: Callable[[], Awaitable[Any]]) -> Any:
    from core.db import close_db, init_db

    await init_db(runtime.settings().database_url)
    try:
        return await work()
    finally:
        await close_db()


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    from core.db import upgrade_db

    asyncio.run(upgrade_db(runtime.settings().database_url))
    print("keyward: database schema is up to date", file=sys.stderr)
    return 0


def _cmd_init(args: argparse.Namespace) -> int:
    from core.bootstrap import init_organization

    async def work() -> str:
        _, _, token = await init_organization(
            org_name=args.org, admin_email=args.admin_email, admin_password=args.admin_password
        )
        return token

    token = asyncio.run(_with_db(work))
    print(f"Organization {args.org!r} created; Product Admin {args.admin_email}.", file=sys.stderr)
    print("Bearer token (shown once, store it now):", file=sys.stderr)
    print(token)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from core.demo import setup_demo

    result = asyncio.run(_with_db(setup_demo))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        "\nKeyward demo is ready.\n"
        f"  GraphiQL:        {result['graphql_url']}  (open it in a browser)\n"
        f"  Header:          Authorization: Bearer {result['admin_token']}\n"
        f"  Application id:  {result['application_id']}  (payments-api)\n"
        f"  Profile id:      {result['profile_id']}  (tls-server: names under example.com, 90 days)\n"
        "  The README's walkthrough issues a certificate with these two ids.\n"
    )
    return 0


def _cmd_audit_verify(args: argparse.Namespace) -> int:
    from core.audit import verify_chain

    report = asyncio.run(_with_db(verify_chain))
    if report.ok:
        print(f"audit log intact: {report.checked} entries verified")
        return 0
    print(f"audit log TAMPERED at entry {report.first_bad_id}: {report.reason}", file=sys.stderr)
    return 1


def _configure_logging() -> None:
    """KEYWARD_LOG_FORMAT (text or json) and KEYWARD_LOG_LEVEL, for serve and worker alike."""
    from core.logs import configure_logging

    settings = runtime.settings()
    configure_logging(level=settings.log_level, log_format=settings.log_format)


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from api.tls import serve_options

    if args.workers != 1:
        from api.serve_multi import serve_processes

        _configure_logging()
        serve_processes(
            host=args.host,
            port=args.port,
            workers=args.workers,
            with_worker=args.with_worker,
            options=serve_options(args),
        )
        return 0
    if args.with_worker:
        _run_on_uvloop(_serve_with_worker(args.host, args.port, serve_options(args)))
        return 0
    _configure_logging()
    app = create_app()
    # log_config=None keeps our logging (core/logs.py); the middleware logs each request, not uvicorn.
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=runtime.settings().log_level,
        log_config=None,
        access_log=False,
        **serve_options(args),
    )
    return 0


def _run_on_uvloop(main: Coroutine[Any, Any, None]) -> None:
    """asyncio.run on uvloop, the loop uvicorn picks for `serve` on its own (less CPU per request)."""
    try:
        import uvloop
    except ImportError:  # not built for Windows: asyncio's own loop
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


async def _serve_with_worker(host: str, port: int, options: dict[str, Any] | None = None) -> None:
    """The embedded default: the API and the worker's scheduler in one process, on one loop."""
    import uvicorn

    from api.app import create_app
    from core.db import close_db, init_db
    from worker.main import running_scheduler

    _configure_logging()
    await init_db(runtime.settings().database_url)
    try:
        async with running_scheduler():
            config = uvicorn.Config(
                create_app(manage_db=False),
                host=host,
                port=port,
                log_level=runtime.settings().log_level,
                log_config=None,
                access_log=False,
                **(options or {}),
            )
            await uvicorn.Server(config).serve()
    finally:
        await close_db()


def _cmd_worker(args: argparse.Namespace) -> int:
    from worker.main import run_worker

    _configure_logging()
    asyncio.run(run_worker())
    return 0


def _cmd_agent(args: argparse.Namespace) -> int:
    from pathlib import Path

    from agent.runner import run

    return run(Path(args.config), once=args.once)


def _cmd_schema(args: argparse.Namespace) -> int:
    from api.graphql.schema import schema

    print(schema.as_str())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keyward", description="Keyward certificate lifecycle manager")
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="apply pending migrations").set_defaults(func=_cmd_db_upgrade)

    init = sub.add_parser("init", help="create the organization and its first Product Admin")
    init.add_argument("--org", required=True)
    init.add_argument("--admin-email", required=True)
    init.add_argument("--admin-password", help="optional; the admin can log in with it (12+ characters)")
    init.set_defaults(func=_cmd_init)

    serve = sub.add_parser("serve", help="serve the API (GraphQL, ACME, EST, SCEP, CRL, OCSP)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--with-worker", action="store_true", help="also run the worker's scheduled jobs in this process"
    )
    serve.add_argument(
        "--workers", type=int, default=1, help="API processes, one per core (api/serve_multi.py)"
    )
    serve.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this PEM certificate (chain)")
    serve.add_argument("--tls-key", metavar="FILE", help="the PEM private key of --tls-cert")
    serve.add_argument(
        "--tls-client-ca", metavar="FILE", help="ask for TLS client certificates from these PEM CAs (EST)"
    )
    serve.set_defaults(func=_cmd_serve)

    demo = sub.add_parser("demo", help="create the demo organization, PKI and application (idempotent)")
    demo.add_argument("--json", action="store_true", help="print one JSON object")
    demo.set_defaults(func=_cmd_demo)

    audit = sub.add_parser("audit", help="audit log").add_subparsers(dest="audit_command", required=True)
    audit.add_parser("verify", help="check the hash chain").set_defaults(func=_cmd_audit_verify)

    sub.add_parser(
        "worker", help="run the scheduled jobs: outbox, alert deliveries, expiration alerts, renewals, CRLs"
    ).set_defaults(func=_cmd_worker)

    agent = sub.add_parser("agent", help="keep this host's certificates issued and renewed through the API")
    agent.add_argument("--config", required=True, help="the agent's YAML configuration (agent.yaml)")
    agent.add_argument("--once", action="store_true", help="run one pass and exit (cron, tests)")
    agent.set_defaults(func=_cmd_agent)

    sub.add_parser("schema", help="print the GraphQL SDL").set_defaults(func=_cmd_schema)

    from api.cli_migrate import add_parser as add_migrate_parser

    add_migrate_parser(sub, _with_db)  # keyward migrate plan|apply PROJECT (SPEC §13)

    from api.cli_legacy import add_parser as add_legacy_parser

    add_legacy_parser(sub, _with_db)  # keyward legacy import FILE.json (SPEC §12)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        runtime.configure(load_settings())
        return int(args.func(args))
    except KeywardError as error:
        print(f"keyward: {error.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
