"""The operator CLI `onboards`: in-process through `main(argv)`, and through the installed console script."""

import json
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import peewee
import pytest

from models.accounts import Account, ApiKey, Principal, User
from models.base import bind, db, transaction, utcnow
from models.invitations import Invitation, JoinToken
from models.migrations import MIGRATIONS as SCHEMA_MIGRATIONS
from models.outbox import OutboxMessage
from onboards.cli import main
from onboards.config import ConfigError, Settings
from onboards.demo import BUYER_EMAIL, SELLER_EMAIL, demo_key
from tests.servers import ONBOARDS, SETTING_NAMES, Server, clean_env

API_KEY = re.compile(r"\b[0-9a-f]{40}\b")
MIGRATIONS = [f"{version}: {name}" for version, name, _ in SCHEMA_MIGRATIONS]  # as `migrate` reports them
UNREACHABLE_POSTGRES = "postgresql://postgres@127.0.0.1:1/nope"


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def close_database() -> None:
    """Closes what the models are bound to, pooled PostgreSQL connections included."""
    closer = getattr(db.obj, "close_all", None)
    if closer:
        closer()
    elif db.obj is not None:
        db.close()


@contextmanager
def session(url: str) -> Iterator[None]:
    """The models bound to `url`, inside one transaction; every connection closed afterwards."""
    bind(url)
    try:
        with transaction():
            yield
    finally:
        close_database()


def rows(url: str, model: type[peewee.Model]) -> int:
    with session(url):
        return model.select().count()


def authenticate(url: str, key: str) -> Principal | None:
    with session(url):
        return ApiKey.authenticate(key)


def console(*argv: str, cwd: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    """Runs the installed console script with these settings in its environment."""
    return subprocess.run([str(ONBOARDS), *argv], env=clean_env(**settings), cwd=cwd, capture_output=True,
                          text=True, timeout=120, check=False)


def assert_one_line_error(stderr: str, *fragments: str) -> None:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("onboards: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], stderr


@pytest.fixture
def cli(database_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Run]:
    """Runs `onboards ARGS --database-url URL` in this process, with no setting taken from the environment."""
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)

    def run(*argv: str) -> Run:
        capsys.readouterr()
        try:
            code = main([*argv, "--database-url", database_url])
        finally:
            close_database()
        out, err = capsys.readouterr()
        return Run(code, out, err)

    return run


@pytest.fixture
def migrated(cli: Callable[..., Run]) -> Callable[..., Run]:
    assert cli("migrate").code == 0
    return cli


@pytest.fixture
def account(migrated: Callable[..., Run]) -> dict:
    """An account created through the CLI: its --json output."""
    result = migrated("account", "create", "--name", "Acme Leads", "--email", "owner@example.com", "--json")
    assert result.code == 0, result.err
    return result.json()


# migrate


def test_migrate_is_idempotent(cli, database_url):
    first = cli("migrate")
    assert (first.code, first.out, first.err) == (0, "".join(f"applied {m}\n" for m in MIGRATIONS), "")
    second = cli("migrate")
    assert (second.code, second.out, second.err) == (0, "database is up to date\n", "")
    again = cli("migrate", "--json")
    assert again.code == 0
    assert again.json() == {"applied": []}
    assert rows(database_url, Account) == 0


def test_migrate_json_lists_what_it_applied(cli):
    assert cli("migrate", "--json").json() == {"applied": MIGRATIONS}
    assert cli("migrate", "--json").json() == {"applied": []}


def test_console_script_migrates_and_creates_an_account(database_url, tmp_path):
    first = console("migrate", "--json", cwd=tmp_path, DATABASE_URL=database_url)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {"applied": MIGRATIONS}
    second = console("migrate", "--json", cwd=tmp_path, DATABASE_URL=database_url)
    assert json.loads(second.stdout) == {"applied": []}

    created = console("account", "create", "--name", "Acme Leads", "--email", "owner@example.com", "--json",
                      cwd=tmp_path, DATABASE_URL=database_url)
    assert created.returncode == 0, created.stderr
    result = json.loads(created.stdout)
    assert result["email"] == "owner@example.com"
    assert API_KEY.fullmatch(result["api_key"])
    assert authenticate(database_url, result["api_key"]) == Principal(result["user_id"], result["account_id"])


def test_global_options_before_the_command_are_honoured(cli, database_url, tmp_path, monkeypatch, capsys):
    """`onboards [--json] [--database-url URL] COMMAND`, as the usage line has it."""
    decoy = tmp_path / "decoy" / "other.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{decoy}")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    try:
        code = main(["--json", "--database-url", database_url, "migrate"])
    finally:
        close_database()
    out, _ = capsys.readouterr()
    assert code == 0
    assert not decoy.exists(), "migrated DATABASE_URL instead of --database-url"
    assert json.loads(out) == {"applied": MIGRATIONS}


# account create


def test_account_create_prints_ids_and_a_working_key(migrated, database_url):
    result = migrated("account", "create", "--name", " Acme Leads ", "--email", " Owner@Example.COM ")
    assert result.code == 0 and result.err == ""
    account_id = re.search(r"^account ([0-9a-f]{24}) \(Acme Leads\)$", result.out, re.MULTILINE)
    user_id = re.search(r"^user +([0-9a-f]{24}) \(owner@example\.com\)$", result.out, re.MULTILINE)
    key = re.search(r"^api key ([0-9a-f]{40}) ", result.out, re.MULTILINE)
    assert account_id and user_id and key, result.out
    assert authenticate(database_url, key[1]) == Principal(user_id[1], account_id[1])


def test_account_create_json(account, database_url):
    assert set(account) == {"account_id", "user_id", "email", "api_key"}
    assert account["email"] == "owner@example.com"
    assert API_KEY.fullmatch(account["api_key"])
    assert authenticate(database_url, account["api_key"]) == Principal(account["user_id"], account["account_id"])
    assert authenticate(database_url, "0" * 40) is None


@pytest.mark.parametrize("email", ["owner@example.com", " OWNER@example.com "])
def test_account_create_same_email_again_fails(account, migrated, database_url, email):
    again = migrated("account", "create", "--name", "Acme Again", "--email", email)
    assert again.code == 1 and again.out == ""
    assert_one_line_error(again.err, "owner@example.com", "already exists")
    assert rows(database_url, Account) == 1
    assert rows(database_url, User) == 1


@pytest.mark.parametrize(("name", "email", "message"), [
    ("Acme Leads", "not-an-email", "not an e-mail address"),
    ("Acme Leads", "two@at@example.com", "not an e-mail address"),
    ("Acme Leads", "", "not an e-mail address"),
    ("", "owner@example.com", "1 to 200 characters"),
    ("   ", "owner@example.com", "1 to 200 characters"),
    ("x" * 201, "owner@example.com", "1 to 200 characters"),
    ("a\u2028Bcc: x", "owner@example.com", "without control characters"),
    ("a\u2029b", "owner@example.com", "without control characters"),
    ("a\x85b", "owner@example.com", "without control characters"),
])
def test_account_create_rejects_bad_input(migrated, database_url, name, email, message):
    result = migrated("account", "create", "--name", name, "--email", email)
    assert result.code == 1 and result.out == ""
    assert_one_line_error(result.err, message)
    for model in (Account, User, ApiKey):
        assert rows(database_url, model) == 0


# key create / revoke


def test_key_create_issues_a_second_working_key(account, migrated, database_url):
    result = migrated("key", "create", "--email", "OWNER@example.com", "--json")
    assert result.code == 0, result.err
    issued = result.json()
    assert set(issued) == {"user_id", "account_id", "api_key"}
    assert API_KEY.fullmatch(issued["api_key"]) and issued["api_key"] != account["api_key"]
    owner = Principal(account["user_id"], account["account_id"])
    assert (issued["user_id"], issued["account_id"]) == (owner.user_id, owner.account_id)
    assert authenticate(database_url, issued["api_key"]) == owner
    assert authenticate(database_url, account["api_key"]) == owner

    text = migrated("key", "create", "--email", "owner@example.com")
    assert text.code == 0
    key = API_KEY.search(text.out)
    assert key and "owner@example.com" in text.out
    assert authenticate(database_url, key[0]) == owner
    assert rows(database_url, ApiKey) == 3


def test_key_create_for_an_unknown_email_fails(account, migrated, database_url):
    result = migrated("key", "create", "--email", "nobody@example.com")
    assert result.code == 1 and result.out == ""
    assert_one_line_error(result.err, "nobody@example.com")
    assert rows(database_url, ApiKey) == 1


@pytest.mark.parametrize("prefix_of", [
    pytest.param(lambda key: key[:8], id="8-chars"),
    pytest.param(lambda key: key[:8].upper(), id="upper-case"),
    pytest.param(lambda key: key, id="whole-key"),
])
def test_key_revoke(account, migrated, database_url, prefix_of):
    other = migrated("key", "create", "--email", "owner@example.com", "--json").json()["api_key"]
    result = migrated("key", "revoke", prefix_of(account["api_key"]), "--json")
    assert result.code == 0, result.err
    assert result.json() == {"revoked": 1}
    assert authenticate(database_url, account["api_key"]) is None
    assert authenticate(database_url, other) is not None

    again = migrated("key", "revoke", account["api_key"][:8])
    assert again.code == 1
    assert_one_line_error(again.err, account["api_key"][:8])


@pytest.mark.parametrize(("prefix", "message"), [
    ("", "at least the first 8 characters"),
    ("abc1234", "at least the first 8 characters"),
    (None, "no live key starts with {prefix}"),
])
def test_key_revoke_rejects(account, migrated, database_url, prefix, message):
    if prefix is None:  # eight hex digits that the account's key, the only live key, does not start with
        prefix = ("0" if account["api_key"][0] != "0" else "1") * 8
        message = message.format(prefix=prefix)
    result = migrated("key", "revoke", prefix)
    assert result.code == 1 and result.out == ""
    assert_one_line_error(result.err, message)
    assert authenticate(database_url, account["api_key"]) is not None


def test_key_revoke_of_a_short_prefix_of_a_real_key_fails(account, migrated, database_url):
    result = migrated("key", "revoke", account["api_key"][:7])
    assert result.code == 1
    assert_one_line_error(result.err, "at least the first 8 characters")
    assert authenticate(database_url, account["api_key"]) is not None


# demo


def test_demo_loads_then_finds_the_demo_data(cli, database_url):
    seller_key, buyer_key = demo_key(SELLER_EMAIL), demo_key(BUYER_EMAIL)
    first = cli("demo")
    assert first.code == 0, first.err
    assert API_KEY.findall(first.out).count(seller_key) == 1
    assert buyer_key in first.out
    curl = [line for line in first.out.splitlines() if line.startswith("curl ")]
    assert len(curl) == 1 and f"-u API:{buyer_key}" in curl[0]
    assert "http://127.0.0.1:8080/onboards" in curl[0]
    invitation_id = re.search(r"^invitation ([0-9a-f]{24}) \(pending\)", first.out, re.MULTILINE)
    assert invitation_id and invitation_id[1] in curl[0]

    second = cli("demo")
    assert second.code == 0, second.err
    assert second.out == first.out
    assert rows(database_url, Account) == 2

    buyer = authenticate(database_url, buyer_key)
    seller = authenticate(database_url, seller_key)
    assert buyer and seller and buyer.account_id != seller.account_id
    with session(database_url):
        invitation = Invitation.get_by_id(invitation_id[1])
        assert invitation.email == BUYER_EMAIL and invitation.status == "pending"
        assert invitation.account_id == seller.account_id


def test_demo_json(cli, database_url):
    result = cli("demo", "--json")
    assert result.code == 0, result.err
    demo = result.json()
    assert demo["seller"]["email"] == SELLER_EMAIL and demo["seller"]["api_key"] == demo_key(SELLER_EMAIL)
    assert demo["buyer"]["email"] == BUYER_EMAIL and demo["buyer"]["api_key"] == demo_key(BUYER_EMAIL)
    assert demo["invitation_id"] in demo["curl"]
    buyer = authenticate(database_url, demo["buyer"]["api_key"])
    assert buyer and buyer.account_id == demo["buyer"]["account_id"]
    with session(database_url):
        assert Invitation.get_by_id(demo["invitation_id"]).account_id == demo["seller"]["account_id"]


def test_demo_refuses_a_database_holding_other_accounts(account, migrated, database_url):
    result = migrated("demo")
    assert result.code == 1 and result.out == ""
    assert_one_line_error(result.err, "other data")
    assert rows(database_url, Account) == 1
    assert rows(database_url, Invitation) == 0
    assert rows(database_url, OutboxMessage) == 0
    assert authenticate(database_url, demo_key(BUYER_EMAIL)) is None


# outbox


def test_outbox_when_empty(migrated):
    result = migrated("outbox")
    assert (result.code, result.out) == (0, "outbox is empty\n")
    assert migrated("outbox", "--json").json() == {"messages": []}


def test_outbox_lists_the_demo_invitation(cli, database_url):
    assert cli("demo").code == 0
    listed = cli("outbox")
    assert listed.code == 0, listed.err
    lines = listed.out.splitlines()
    assert len(lines) == 1
    assert "pending" in lines[0] and BUYER_EMAIL in lines[0] and "tries=0" in lines[0]
    assert cli("outbox", "--pending").out == listed.out

    messages = cli("outbox", "--json").json()["messages"]
    assert len(messages) == 1
    assert messages[0]["kind"] == "invitation_sent" and messages[0]["to"] == BUYER_EMAIL
    assert messages[0]["state"] == "pending" and messages[0]["sent_at"] is None
    assert cli("outbox", "--pending", "--json").json()["messages"] == messages


def test_outbox_pending_leaves_out_sent_messages(cli, database_url):
    assert cli("demo").code == 0
    with session(database_url):
        OutboxMessage.update(sent_at=utcnow(), attempts=1).execute()
    assert cli("outbox", "--pending").out == "outbox is empty\n"
    assert cli("outbox", "--pending", "--json").json() == {"messages": []}
    [message] = cli("outbox", "--json").json()["messages"]
    assert message["state"] == "sent" and message["sent_at"] is not None
    assert "sent" in cli("outbox").out


def test_parked_messages_are_shown_and_queued_again_on_request(cli, database_url):
    assert cli("demo").code == 0
    with session(database_url):
        OutboxMessage.update(failed_at=utcnow(), attempts=10, last_error="550 no such user").execute()
    [parked] = cli("outbox", "--json").json()["messages"]
    assert (parked["state"], parked["attempts"], parked["last_error"]) == ("failed", 10, "550 no such user")
    assert "failed" in cli("outbox").out and cli("outbox", "--pending").out == "outbox is empty\n"
    assert cli("outbox", "--retry-failed").out == "1 failed message(s) queued again\n"
    [queued] = cli("outbox", "--pending", "--json").json()["messages"]
    assert (queued["state"], queued["attempts"], queued["failed_at"]) == ("pending", 0, None)
    assert cli("outbox", "--retry-failed", "--json").json() == {"retried": 0}


def test_outbox_limit(cli, database_url):
    assert cli("demo").code == 0
    with session(database_url):
        OutboxMessage.enqueue("test", ["a@example.com", "b@example.com"], "subject", "body")
    assert len(cli("outbox", "--json").json()["messages"]) == 3
    assert len(cli("outbox", "--limit", "2", "--json").json()["messages"]) == 2


# errors


@pytest.mark.parametrize(("name", "value"), [
    ("DATABASE_URL", "mysql://x"),
    ("DATABASE_URL", ""),
    ("PORT", "abc"),
    ("PORT", "0"),
    ("PORT", "65536"),
    ("MAX_BODY_BYTES", "-1"),
    ("DB_MAX_CONNECTIONS", "1.5"),
    ("OUTBOX_POLL_SECONDS", "soon"),
    ("VALIDATE_RESPONSES", "maybe"),
    ("SMTP_URL", "http://mail.example.com"),
])
def test_configuration_error_is_one_line(tmp_path, name, value):
    database = tmp_path / "onboards.db"
    settings = {"DATABASE_URL": f"sqlite:///{database}", name: value}
    result = console("migrate", cwd=tmp_path, **settings)
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    assert_one_line_error(result.stderr, name)
    assert not database.exists()
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("database", [
    pytest.param(UNREACHABLE_POSTGRES, id="postgres-port-1"),
    pytest.param("sqlite:///{tmp_path}/a-file/onboards.db", id="sqlite-under-a-file"),
])
@pytest.mark.parametrize("command", [["migrate"], ["outbox"], ["demo"]], ids=" ".join)
def test_unreachable_database_is_one_line(tmp_path, database, command):
    (tmp_path / "a-file").write_text("not a directory")
    result = console(*command, cwd=tmp_path, DATABASE_URL=database.format(tmp_path=tmp_path))
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    assert_one_line_error(result.stderr, "database error")


@pytest.mark.parametrize("command", [
    ["outbox"],
    ["key", "create", "--email", "owner@example.com"],
    ["account", "create", "--name", "Acme Leads", "--email", "owner@example.com"],
], ids=" ".join)
def test_commands_before_migrate_fail_cleanly(cli, command):
    result = cli(*command)
    assert result.code == 1 and result.out == ""
    assert_one_line_error(result.err, "database error")


@pytest.mark.parametrize("argv", [
    [],
    ["frobnicate"],
    ["account"],
    ["account", "create", "--name", "Acme Leads"],
    ["account", "create", "--email", "owner@example.com"],
    ["key", "create"],
    ["key", "revoke"],
    ["outbox", "--limit", "many"],
    ["serve", "--port", "eighty"],
    ["migrate", "--no-such-option"],
], ids=lambda argv: " ".join(argv) or "nothing")
def test_bad_arguments_print_usage(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "usage: onboards" in err


def test_console_script_bad_arguments(tmp_path):
    result = console("key", "create", cwd=tmp_path, DATABASE_URL=f"sqlite:///{tmp_path}/onboards.db")
    assert result.returncode == 2
    assert "usage: onboards key create" in result.stderr and "--email" in result.stderr
    assert not (tmp_path / "onboards.db").exists()


# Settings


def test_settings_defaults():
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.database_url == "sqlite:///data/onboards.db"
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.smtp_url == "" and settings.mail_from == "onboards@localhost"
    assert settings.max_body_bytes == 1024 * 1024 and settings.db_max_connections == 64
    assert settings.validate_responses is False
    assert Settings.from_env({"UNRELATED": "x", "port": "1"}) == Settings()


@pytest.mark.parametrize(("env", "threads"), [
    ({}, 1),
    ({"DATABASE_URL": "postgresql://u@db:5432/onboards"}, 4),
    ({"WORKER_THREADS": "3"}, 3),
    ({"WORKER_THREADS": "2", "DATABASE_URL": "postgres://u@db/onboards"}, 2),
])
def test_handler_threads_follow_the_database_unless_set(env, threads):
    assert Settings.from_env(env).handler_threads == threads


@pytest.mark.parametrize(("env", "field", "expected"), [
    ({"PORT": " 9000 "}, "port", 9000),
    ({"HOST": "0.0.0.0"}, "host", "0.0.0.0"),
    ({"DATABASE_URL": "postgresql://u@db:5432/onboards"}, "database_url", "postgresql://u@db:5432/onboards"),
    ({"DATABASE_URL": "postgres://u@db/onboards"}, "database_url", "postgres://u@db/onboards"),
    ({"SMTP_URL": "smtps://u:p@mail:465"}, "smtp_url", "smtps://u:p@mail:465"),
    ({"SMTP_URL": ""}, "smtp_url", ""),
    ({"SMTP_CA_FILE": __file__}, "smtp_ca_file", __file__),
    ({"SMTP_REQUIRE_TLS": "1"}, "smtp_require_tls", True),
    ({"MAIL_FROM": "ops@example.com"}, "mail_from", "ops@example.com"),
    ({"MAX_BODY_BYTES": "2048"}, "max_body_bytes", 2048),
    ({"MAX_CONNECTIONS_PER_CLIENT": "20"}, "max_connections_per_client", 20),
    ({"WRITE_TIMEOUT_SECONDS": "2.5"}, "write_timeout_seconds", 2.5),
    ({"BODY_MEMORY_BYTES": "1048576"}, "body_memory_bytes", 1048576),
    ({"DB_MAX_CONNECTIONS": "8"}, "db_max_connections", 8),
    ({"OUTBOX_POLL_SECONDS": "0.25"}, "outbox_poll_seconds", 0.25),
    ({"OUTBOX_RETRY_BASE_SECONDS": "3"}, "outbox_retry_base_seconds", 3.0),
    ({"OUTBOX_RETRY_MAX_SECONDS": "1e3"}, "outbox_retry_max_seconds", 1000.0),
    ({"VALIDATE_RESPONSES": "1"}, "validate_responses", True),
    ({"VALIDATE_RESPONSES": "Yes"}, "validate_responses", True),
    ({"VALIDATE_RESPONSES": "on"}, "validate_responses", True),
    ({"VALIDATE_RESPONSES": "TRUE"}, "validate_responses", True),
    ({"VALIDATE_RESPONSES": "0"}, "validate_responses", False),
    ({"VALIDATE_RESPONSES": "off"}, "validate_responses", False),
    ({"VALIDATE_RESPONSES": ""}, "validate_responses", False),
])
def test_settings_parsing(env, field, expected):
    value = getattr(Settings.from_env(env), field)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(("env", "message"), [
    ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL='mysql://x' must start with one of"),
    ({"SMTP_URL": "http://mail"}, "SMTP_URL='http://mail' must start with one of smtp://, smtps://"),
    ({"SMTP_CA_FILE": "/nowhere/ca.pem"}, "SMTP_CA_FILE='/nowhere/ca.pem' is not a file"),
    ({"PORT": "abc"}, "PORT='abc' is not a whole number"),
    ({"PORT": "0"}, "PORT='0' must be greater than 0"),
    ({"PORT": "65536"}, "PORT=65536 is not a TCP port"),
    ({"MAX_BODY_BYTES": "-1"}, "MAX_BODY_BYTES='-1' must be greater than 0"),
    ({"DB_MAX_CONNECTIONS": "1.5"}, "DB_MAX_CONNECTIONS='1.5' is not a whole number"),
    ({"BODY_MEMORY_BYTES": "1000"}, "BODY_MEMORY_BYTES=1000 is less than MAX_BODY_BYTES=1048576"),
    ({"WRITE_TIMEOUT_SECONDS": "0"}, "WRITE_TIMEOUT_SECONDS='0' must be greater than 0"),
    ({"OUTBOX_POLL_SECONDS": "soon"}, "OUTBOX_POLL_SECONDS='soon' is not a number"),
    ({"OUTBOX_RETRY_MAX_SECONDS": "0"}, "OUTBOX_RETRY_MAX_SECONDS='0' must be greater than 0"),
    ({"VALIDATE_RESPONSES": "maybe"}, "VALIDATE_RESPONSES='maybe' is not a boolean"),
])
def test_settings_errors_name_the_variable(env, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings.from_env(env)


def test_settings_overrides():
    assert Settings.from_env({"PORT": "9000"}, port=7000).port == 7000
    assert Settings.from_env({"PORT": "9000"}, port=None).port == 9000
    assert Settings.from_env({}, database_url="sqlite:///x.db").database_url == "sqlite:///x.db"
    with pytest.raises(ConfigError, match="PORT=0 is not a TCP port"):
        Settings.from_env({}, port=0)
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        Settings.from_env({"DATABASE_URL": "sqlite:///ok.db"}, database_url="mysql://x")


def test_settings_read_the_process_environment(monkeypatch):
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PORT", "9100")
    monkeypatch.setenv("VALIDATE_RESPONSES", "1")
    settings = Settings.from_env()
    assert (settings.port, settings.validate_responses, settings.host) == (9100, True, "127.0.0.1")


# serve


@pytest.mark.slow
def test_serve_answers_health_then_stops(tmp_path):
    url = f"sqlite:///{tmp_path}/onboards.db"
    server = Server(url, tmp_path / "serve.log", args=["--demo"])
    try:
        server.wait_ready()
    finally:
        server.stop()
    output = server.log()
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it so the parent sees why it ended.
    assert server.process.returncode == -signal.SIGTERM, output
    assert "Application shutdown complete" in output
    assert demo_key(BUYER_EMAIL) in output and demo_key(SELLER_EMAIL) in output
    assert "Traceback" not in output
    assert authenticate(url, demo_key(BUYER_EMAIL)) is not None
    link = re.search(r"^http://127\.0\.0\.1:\d+/join/([A-Za-z0-9_-]{43})$", output, re.MULTILINE)
    assert link, output
    with session(url):
        assert JoinToken.find(link[1])[1].email == BUYER_EMAIL  # the printed link opens the demo invitation
