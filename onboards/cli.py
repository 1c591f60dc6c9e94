"""`onboards`: the operator's command line. Every command but walkthrough takes --json for machine-readable output."""

import argparse
import os
import secrets
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import peewee

from models.accounts import Account, ApiKey, User
from models.base import DomainError, opened, release, rfc3339, to_json, transaction
from models.migrations import migrate
from models.outbox import OutboxMessage
from onboards import walkthrough
from onboards.config import ConfigError, Settings
from onboards.serving import uvicorn_options


def _print(result: dict, as_json: bool, lines: Sequence[str]) -> None:
    if as_json:
        print(to_json(result, indent=True).decode())
    else:
        print("\n".join(lines))


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> None:
    applied = migrate()
    _print({"applied": applied}, args.json, [f"applied {name}" for name in applied] or ["database is up to date"])


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    import uvicorn

    from onboards.app import create_app

    migrate()
    if settings.sandbox:
        from onboards.sandbox import refuse_other_databases

        refuse_other_databases()
        print(f"sandbox mode: send X-Sandbox-Token: {settings.sandbox_token} to /sandbox/ (sandbox.yaml)", flush=True)
    if args.demo:
        from onboards.demo import join_lines, load_demo

        try:
            demo = load_demo(settings)
            print("\n".join([*demo["lines"], "", *join_lines(settings, demo["invitation_id"])]) + "\n", flush=True)
        except DomainError as not_loaded:
            print(f"demo data not loaded: {not_loaded}", flush=True)
    release()  # the served app opens a database of its own
    options = uvicorn_options(settings)
    if args.workers == 1:
        uvicorn.run(create_app(settings), **options)
        return
    # Worker processes build the app from the environment: hand them the settings this command chose.
    os.environ.update({"DATABASE_URL": settings.database_url, "HOST": settings.host, "PORT": str(settings.port),
                       "ACCESS_LOG": "1" if settings.access_log else "0", "SANDBOX": "1" if settings.sandbox else "0",
                       "SANDBOX_TOKEN": settings.sandbox_token})
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="onboards-metrics-"))
    uvicorn.run("onboards.app:app_from_env", factory=True, workers=args.workers, **options)


def cmd_account_create(args: argparse.Namespace, settings: Settings) -> None:
    with transaction():
        account, user, key = Account.create_with_user(args.name, args.email, sandbox=settings.sandbox)
    _print({"account_id": account.id, "user_id": user.id, "email": user.email, "api_key": key}, args.json, [
        f"account {account.id} ({account.name})", f"user    {user.id} ({user.email})",
        f"api key {key}   (shown once: store it now)"])


def cmd_key_create(args: argparse.Namespace, settings: Settings) -> None:
    with transaction():
        user = User.by_email(args.email)
        key = ApiKey.issue(user)
    _print({"user_id": user.id, "account_id": user.account_id, "api_key": key}, args.json,
           [f"api key {key} for {user.email}   (shown once: store it now)"])


def cmd_key_revoke(args: argparse.Namespace, settings: Settings) -> None:
    with transaction():
        revoked = ApiKey.revoke(args.prefix)
    _print({"revoked": revoked}, args.json, [f"revoked {revoked} key(s)"])


def cmd_demo(args: argparse.Namespace, settings: Settings) -> None:
    from onboards.demo import load_demo

    migrate()
    demo = load_demo(settings)
    _print(demo, args.json, demo["lines"])


def cmd_outbox(args: argparse.Namespace, settings: Settings) -> None:
    if args.retry_failed:
        with transaction():
            retried = OutboxMessage.retry_failed()
        _print({"retried": retried}, args.json, [f"{retried} failed message(s) queued again"])
        return
    with transaction(write=False):
        query = (OutboxMessage.waiting() if args.pending else OutboxMessage.select())
        query = query.order_by(OutboxMessage.id.desc()).limit(args.limit)
        messages = [m.as_json() for m in query]
    _print({"messages": messages}, args.json, [
        f"{rfc3339(m['created_at'])}  {m['state']:8}  tries={m['attempts']}  {m['to']:30}  {m['subject']}"
        for m in messages] or ["outbox is empty"])


def _positive(raw: str) -> int:
    if not raw.isdigit() or int(raw) < 1:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number of at least 1")
    return int(raw)


def parser() -> argparse.ArgumentParser:
    # SUPPRESS: a subcommand's default must not overwrite the same option given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print machine-readable JSON")
    common.add_argument("--database-url", default=argparse.SUPPRESS, help="overrides DATABASE_URL")
    top = argparse.ArgumentParser(prog="onboards", description=__doc__, parents=[common])
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, run: Callable, help: str, parent: Any = commands) -> argparse.ArgumentParser:
        command = parent.add_parser(name, help=help, parents=[common], description=help)
        command.set_defaults(run=run)
        return command

    add("migrate", cmd_migrate, "apply the missing database migrations (safe to repeat)")
    serve = add("serve", cmd_serve, "migrate, then serve the API (HOST, PORT and the rest from the environment)")
    serve.add_argument("--host", help="overrides HOST")
    serve.add_argument("--port", type=int, help="overrides PORT")
    serve.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=None,
                       help="overrides ACCESS_LOG")
    serve.add_argument("--workers", type=_positive, default=1, help="worker processes (default 1)")
    serve.add_argument("--demo", action="store_true", help="load demo data first if the database is empty")
    serve.add_argument("--sandbox", action="store_true", default=None,
                       help="sandbox mode (sandbox.yaml): SANDBOX_TOKEN, or a new token printed at start")
    account = commands.add_parser("account", help="accounts").add_subparsers(dest="what", required=True)
    create = add("create", cmd_account_create, "create an account with its first user and API key", account)
    create.add_argument("--name", required=True)
    create.add_argument("--email", required=True)
    key = commands.add_parser("key", help="API keys").add_subparsers(dest="what", required=True)
    add("create", cmd_key_create, "issue another API key to a user", key).add_argument("--email", required=True)
    add("revoke", cmd_key_revoke, "revoke keys by their first 8 characters", key).add_argument("prefix")
    add("demo", cmd_demo, "load demo data into an empty database and print its API keys")
    outbox = add("outbox", cmd_outbox, "list notification e-mails and their delivery state")
    outbox.add_argument("--pending", action="store_true", help="only messages waiting to be sent")
    outbox.add_argument("--retry-failed", action="store_true", help="queue every parked (failed) message again")
    outbox.add_argument("--limit", type=int, default=50)
    walk = commands.add_parser("walkthrough", help=walkthrough.HELP, description=walkthrough.HELP)
    walkthrough.add_arguments(walk)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "walkthrough":  # HTTP only: no settings to check, no database to open
        return walkthrough.from_args(args)
    args.json = getattr(args, "json", False)
    try:
        settings = Settings.from_env(database_url=getattr(args, "database_url", None),
                                     host=getattr(args, "host", None), port=getattr(args, "port", None),
                                     access_log=getattr(args, "access_log", None),
                                     **_sandbox_overrides(getattr(args, "sandbox", None)))
        with opened(settings.database_url, max_connections=settings.db_max_connections,
                    statement_timeout=settings.db_statement_timeout_seconds):
            args.run(args, settings)
    except (ConfigError, DomainError) as problem:
        return _fail(str(problem))
    except peewee.ProgrammingError as problem:
        return _fail(f"database error: {_first_line(problem)} (has `onboards migrate` run?)")
    except (peewee.DatabaseError, peewee.InterfaceError, OSError) as problem:
        return _fail(f"database error: {_first_line(problem)}")
    return 0


def _sandbox_overrides(sandbox: bool | None) -> dict[str, Any]:
    """`serve --sandbox`: sandbox mode, with SANDBOX_TOKEN or, when it is not set, a new one."""
    if not sandbox:
        return {}
    return {"sandbox": True, "sandbox_token": os.environ.get("SANDBOX_TOKEN") or secrets.token_hex(16)}


def _fail(message: str) -> int:
    print(f"onboards: {message}", file=sys.stderr)
    return 1


def _first_line(problem: Exception) -> str:
    lines = str(problem).strip().splitlines()
    return lines[0] if lines else type(problem).__name__


if __name__ == "__main__":
    sys.exit(main())
