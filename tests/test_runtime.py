"""One Runtime per app, made by create_app from its Settings: two apps in one process keep their own database,
limits, keys, clocks and sandbox token, and no module keeps state of its own after import."""

import ast
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from playhouse.shortcuts import model_to_dict
from starlette.testclient import TestClient

from models.accounts import Account, ApiKey, User
from models.base import transaction
from onboards.app import create_app
from onboards.config import Settings
from onboards.runtime import Serving
from tests.helpers import Party, basic_auth, fresh_window, migrated, outbox, party, wait_until
from tests.servers import Mailbox, free_port

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "sandbox-token-0123456789"
SANDBOX = {"X-Sandbox-Token": TOKEN}


def test_two_apps_in_one_process_keep_their_own_limits_keys_and_clocks(settings: Settings):
    sandboxed = migrated(create_app(replace(settings, sandbox=True, sandbox_token=TOKEN, failed_auth_per_minute=1,
                                            auth_cache_seconds=60), send_outbox=False))
    plain = create_app(replace(settings, failed_auth_per_minute=100, auth_cache_seconds=0), send_outbox=False)
    fresh_window()
    with TestClient(sandboxed) as a, TestClient(plain) as b:
        made = [a.post("/sandbox/accounts", json={"name": name, "email": f"{name}@example.com"}, headers=SANDBOX)
                for name in ("seller", "buyer")]
        seller, buyer = (response.json() for response in made)
        # Clocks: the seller's runs 8 days ahead in the sandbox app only.
        assert a.post(f"/sandbox/accounts/{seller['account_id']}/clock", json={"seconds": 8 * 86400},
                      headers=SANDBOX).status_code == 200
        entity = b.post("/invitations/recipient", json={"email": buyer["email"]},
                        headers=basic_auth(seller["api_key"])).json()["entity"]
        assert a.get(f"/entities/{entity['id']}", headers=basic_auth(seller["api_key"])).json()["expired"] is True
        assert b.get(f"/entities/{entity['id']}", headers=basic_auth(seller["api_key"])).json()["expired"] is False
        # Limits: one failed authentication a minute in the sandbox app, a hundred in the other (the
        # failures are counted in the database they share).
        wrong = basic_auth("0" * 40)
        assert a.get("/entities", headers=wrong).status_code == 401
        assert a.get("/entities", headers=wrong).status_code == 429
        assert b.get("/entities", headers=wrong).status_code == 401
        # Keys: the sandbox app remembers a verified key for a minute; the other looks every key up.
        with transaction():
            ApiKey.revoke(seller["api_key"][:8])
        assert a.get("/entities", headers=basic_auth(seller["api_key"])).status_code == 200
        assert b.get("/entities", headers=basic_auth(seller["api_key"])).status_code == 401
        # The sandbox token: only the sandbox app has one. A wrong one is refused; this client is over the
        # sandbox app's one failure a minute already (wrong keys and tokens count alike), so with a 429.
        assert a.get("/sandbox/mailbox", headers=SANDBOX).status_code == 200
        assert a.get("/sandbox/mailbox", headers={"X-Sandbox-Token": "another-token-0123456789"}).status_code == 429
        assert b.get("/sandbox/mailbox", headers=SANDBOX).status_code == 404


def party_in(app: Serving, name: str, email: str) -> Party:
    with app.runtime.entered():
        return party(name, email)


def copied(made: Party, source: Serving, target: Serving) -> None:
    """`made`'s account, user and key rows, the same ids and key, written to `target`'s database as well."""
    with source.runtime.entered(), transaction(write=False):
        rows = [Account.get_by_id(made.account_id), User.get_by_id(made.user_id),
                *ApiKey.select().where(ApiKey.user == made.user_id)]
    with target.runtime.entered(), transaction():
        for row in rows:
            type(row).insert(model_to_dict(row, recurse=False)).execute()


def test_two_apps_in_one_process_each_serve_their_own_database(settings: Settings, tmp_path: Path):
    """Side by side, requests interleaved in worker threads: a key of one app's database is a 401 in the other,
    an object made in one a 404 in the other (to a key valid in both), and each app's outbox sender sends its
    own app's e-mail only. The first app is on SQLite or PostgreSQL (`settings`), the second on SQLite."""
    mailboxes = [Mailbox(free_port()), Mailbox(free_port())]
    apps = [migrated(create_app(replace(settings, database_url=url, smtp_url=mailbox.url), send_outbox=True))
            for url, mailbox in zip((settings.database_url, f"sqlite:///{tmp_path}/other.db"), mailboxes, strict=True)]
    only = [party_in(app, "Only Here", "only@example.com") for app in apps]
    both = party_in(apps[0], "Both Co", "both@example.com")
    copied(both, apps[0], apps[1])
    for mailbox in mailboxes:
        mailbox.start()
    try:
        with TestClient(apps[0]) as first, TestClient(apps[1]) as second, ThreadPoolExecutor(4) as pool:
            clients = (first, second)
            invited = [pool.submit(clients[n % 2].post, "/invitations/recipient", headers=both.auth,
                                   json={"email": f"app{n % 2}-buyer{n}@example.com"}) for n in range(6)]
            entities: list[list[str]] = [[], []]
            for n, answer in enumerate(future.result() for future in invited):
                assert answer.status_code == 201, answer.text
                entities[n % 2].append(answer.json()["entity"]["id"])
            for mine, other, made, stranger in ((first, second, entities[0], only[1]),
                                                (second, first, entities[1], only[0])):
                assert [mine.get(f"/entities/{id}", headers=both.auth).status_code for id in made] == [200] * 3
                assert [other.get(f"/entities/{id}", headers=both.auth).status_code for id in made] == [404] * 3
                assert mine.get("/entities", headers=stranger.auth).status_code == 401
                assert other.get("/entities", headers=stranger.auth).status_code == 200
            for n, (app, mailbox) in enumerate(zip(apps, mailboxes, strict=True)):
                with app.runtime.entered():
                    assert wait_until(lambda: all(m.sent_at for m in outbox()), 10)
                assert sorted(to for rcpt, _ in mailbox.messages for to in rcpt) == [
                    f"app{n}-buyer{k}@example.com" for k in range(n, 6, 2)]
    finally:
        for mailbox in mailboxes:
            mailbox.stop()


def module_state_written(source: str) -> list[str]:
    """`global` statements, and what a function changes of the module's own names: an attribute of one (a
    class's, say), or a container bound at module level (item assignment, a mutating method)."""
    tree = ast.parse(source)
    found = [f"{node.lineno}: global {', '.join(node.names)}"
             for node in ast.walk(tree) if isinstance(node, ast.Global)]
    top = {target.id for node in tree.body if isinstance(node, ast.Assign | ast.AnnAssign)
           for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
           if isinstance(target, ast.Name)}
    top |= {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    for function in (node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)):
        local = {arg.arg for arg in function.args.args + function.args.kwonlyargs}
        for node in ast.walk(function):
            changed: ast.AST | None = None
            if isinstance(node, ast.Subscript | ast.Attribute) and isinstance(node.ctx, ast.Store | ast.Del):
                changed = node.value
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in MUTATORS:
                changed = node.func.value
            if isinstance(changed, ast.Name) and changed.id in top - local:
                found.append(f"{getattr(node, 'lineno', 0)}: changes the module's {changed.id}")
    return found


# `initialize`: peewee's Proxy pointed at one database for every app in the process.
MUTATORS = {"append", "add", "update", "setdefault", "pop", "clear", "extend", "insert", "remove", "discard",
            "popitem", "initialize"}
# Patches of the frameworks are module state by nature: they live in this module alone (test_layers.py).
PATCH_MODULE = ROOT / "onboards" / "connexion_patches.py"
# Memos of pure functions, the same for every app: the spec's schemas' compiled validators; the hot
# statements' SQL, per kind of database (models.base.compiled).
MEMOS = {"onboards/validation.py": ["changes the module's _CHECKS"],
         "models/base.py": ["changes the module's STATEMENTS"]}


def test_no_module_keeps_state_of_its_own_after_import():
    product = [path for package in ("onboards", "handlers", "models")
               for path in sorted((ROOT / package).rglob("*.py"))]
    found = {str(path.relative_to(ROOT)): [f.partition(": ")[2] for f in module_state_written(path.read_text())]
             for path in product if path != PATCH_MODULE}
    assert {path: state for path, state in found.items() if state and state != MEMOS.get(path)} == {}


def test_the_state_finder_finds_what_it_looks_for():
    sample = "class Config:\n    x = None\n\n\n_seen = {}\ndb = Proxy()\n\n\ndef note(k, arg):\n    global _limit\n" \
             "    _seen[k] = 1\n    _seen.pop(k)\n    Config.x = k\n    db.initialize(k)\n    arg.y = 1\n" \
             "    mine = {}\n    mine[k] = 1\n"
    assert [f.partition(": ")[2] for f in module_state_written(sample)] == [
        "global _limit", "changes the module's _seen", "changes the module's _seen", "changes the module's Config",
        "changes the module's db"]
