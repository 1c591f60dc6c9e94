"""`make clients`: what a client developer does with the spec, done by the project. A sandbox server runs;
from its live /openapi.json five generators make clients, the spec validation of openapi-generator on:
openapi-python-client, openapi-generator's python and typescript-fetch, openapi-typescript and
@hey-api/openapi-ts. The TypeScript ones compile under `tsc --strict` with tools/clients_check.ts (what a
GET gives is a PUT body, in each one's types); the Python ones import and run a workflow against the
server: invite, accept, onboard, flow, complete, GET-then-PUT of each resource, a 412 and two 409s told
apart by their `type`. Each step prints its time; the clients are written to build/clients/."""

import importlib
import importlib.util
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import basic_auth
from tests.servers import Server

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "clients"
BIN = Path(sys.executable).parent
NPX = ["npx", "--no-install"]


@contextmanager
def step(name: str) -> Iterator[None]:
    started = time.monotonic()
    yield
    print(f"clients: {name}: {time.monotonic() - started:.1f}s", flush=True)


def run(command: Sequence[str | Path], **kwargs: Any) -> None:
    done = subprocess.run([str(part) for part in command], capture_output=True, text=True, check=False, **kwargs)
    if done.returncode != 0:
        sys.exit(f"clients: {command[0]} failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")


def generate(spec_url: str) -> None:
    path = {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}  # openapi-python-client runs ruff on its output
    generators: dict[str, list[str | Path]] = {
        "openapi-python-client": [BIN / "openapi-python-client", "generate", "--url", spec_url, "--meta", "none",
                                  "--output-path", OUT / "python" / "onboards_opc"],
        "openapi-generator python": [BIN / "openapi-generator-cli", "generate", "-g", "python", "-i", spec_url,
                                     "-o", OUT / "og_python", "--package-name", "onboards_og"],
        "openapi-generator typescript-fetch": [BIN / "openapi-generator-cli", "generate", "-g", "typescript-fetch",
                                               "-i", spec_url, "-o", OUT / "ts" / "fetch"],
        "openapi-typescript": [*NPX, "openapi-typescript", spec_url, "-o", OUT / "ts" / "openapi-typescript.d.ts"],
        "@hey-api/openapi-ts": [*NPX, "openapi-ts", "-i", spec_url, "-o", OUT / "ts" / "hey-api"],
    }
    for name, command in generators.items():
        with step(f"generate ({name})"):
            run(command, cwd=ROOT, env={**os.environ, **path})


def compile_typescript() -> None:
    shutil.copy(ROOT / "tools" / "clients_check.ts", OUT / "ts" / "check.ts")
    (OUT / "ts" / "tsconfig.json").write_text(json.dumps({"compilerOptions": {
        "strict": True, "noEmit": True, "target": "es2022", "lib": ["es2022", "dom"], "module": "esnext",
        "moduleResolution": "bundler", "skipLibCheck": False}, "include": ["**/*.ts"]}))
    with step("tsc --noEmit --strict (typescript-fetch, openapi-typescript, hey-api)"):
        run([*NPX, "tsc", "-p", OUT / "ts" / "tsconfig.json"], cwd=ROOT)


def sandbox_account(server_url: str, token: str, name: str) -> dict:
    response = httpx.post(f"{server_url}/sandbox/accounts", headers={"X-Sandbox-Token": token}, timeout=30,
                          json={"name": name, "email": f"{name.lower().replace(' ', '-')}@example.com"})
    response.raise_for_status()
    return response.json()


def expect_error(status: int, call: Callable[[], Any]) -> dict:
    """The problem body of `call`, which must fail with `status` (openapi-generator raises ApiException)."""
    from onboards_og.exceptions import ApiException

    try:
        call()
    except ApiException as failed:
        assert failed.status == status, (failed.status, failed.body)
        return json.loads(failed.body)
    raise AssertionError(f"expected {status}")


def workflow(server_url: str, token: str) -> None:
    """Through openapi-generator's client: the onboarding from invitation to completion, a stale If-Match and
    two conflicts; then GET-then-PUT of every resource through both Python clients."""
    og = importlib.import_module("onboards_og")
    seller, buyer = (sandbox_account(server_url, token, name) for name in ("Acme Leads", "Bright Buyers"))

    def api(party: dict, name: str) -> Any:
        configuration = og.Configuration(host=server_url, username="API", password=party["api_key"])
        return getattr(og, name)(og.ApiClient(configuration))

    invited = api(seller, "InvitationsApi").create_invitation_recipient(og.InvitationRequest(email=buyer["email"]))
    entity = invited.entity
    api(seller, "FlowsApi").create_flow(og.FlowWrite(name="Leads", steps=[
        og.StepWrite(type="recipient", entity=og.EntityRef(id=entity.id), enabled=False)]))
    api(buyer, "InvitationsApi").accept_invitation(entity.invitation_id)
    onboards = api(buyer, "OnboardsApi")
    onboard = onboards.create_onboard(og.OnboardCreate(invitation_id=entity.invitation_id))
    flow = api(buyer, "FlowsApi").create_flow(og.FlowWrite(name="Bought leads"))
    moved = onboards.update_onboard_with_http_info(onboard.id, og.OnboardUpdate(
        invitation_id=onboard.invitation_id, flow_id=flow.id, status="in_progress"))
    stale = {name.lower(): value for name, value in (moved.headers or {}).items()}["etag"]
    onboards.update_onboard(onboard.id, og.OnboardUpdate(invitation_id=onboard.invitation_id, status="completed"),
                            if_match=stale)
    assert onboards.get_onboard(onboard.id).status == "completed"
    assert "title" in expect_error(412, lambda: onboards.update_onboard(
        onboard.id, og.OnboardUpdate(invitation_id=onboard.invitation_id), if_match=stale))
    set_up = expect_error(409, lambda: onboards.complete_buyer_setup(og.BuyerSetupRequest(
        og.BuyerSetupByConnection(connection_id=onboard.connection_id))))
    illegal = expect_error(409, lambda: onboards.update_onboard(onboard.id, og.OnboardUpdate(
        invitation_id=onboard.invitation_id, status="in_progress")))
    # Two causes of 409, told apart by `type` alone.
    causes = (set_up["type"], illegal["type"])
    assert causes == ("/docs/problems#already-set-up", "/docs/problems#illegal-transition"), (set_up, illegal)

    user_id = api(buyer, "UsersApi").get_user().id
    round_trips = {
        "onboard": (onboards.get_onboard, onboards.update_onboard, og.OnboardUpdate, onboard.id),
        "flow": (api(buyer, "FlowsApi").get_flow, api(buyer, "FlowsApi").update_flow, og.FlowWrite, flow.id),
        "entity": (api(seller, "EntitiesApi").get_entity, api(seller, "EntitiesApi").update_entity, og.EntityWrite,
                   entity.id),
        "user settings": (api(buyer, "UsersApi").get_user_settings, api(buyer, "UsersApi").update_user_settings,
                          og.UserSettingsWrite, user_id),
    }
    for name, (get, put, write, id) in round_trips.items():
        assert put(id, write.from_dict(get(id).to_dict())) is not None, name
    account = api(buyer, "AccountApi")
    account.update_account(og.AccountWrite.from_dict(account.get_account().to_dict()))
    python_client_round_trips(server_url, buyer, seller, {"onboard": onboard.id, "flow": flow.id,
                                                          "entity": entity.id, "user_settings": user_id})


def python_client_round_trips(server_url: str, buyer: dict, seller: dict, ids: dict[str, str]) -> None:
    """GET then PUT of what it gave, for every resource, through openapi-python-client's client."""
    opc = importlib.import_module("onboards_opc")
    models = importlib.import_module("onboards_opc.models")

    def operation(name: str) -> Any:
        return next(importlib.import_module(f"onboards_opc.api.{tag}.{name}") for tag in
                    ("onboards", "flows", "entities", "users", "account")
                    if importlib.util.find_spec(f"onboards_opc.api.{tag}.{name}") is not None)

    def client(party: dict) -> Any:
        return opc.Client(base_url=server_url, headers=basic_auth(party["api_key"]), raise_on_unexpected_status=True)

    resources = [("onboard", buyer, models.OnboardUpdate), ("flow", buyer, models.FlowWrite),
                 ("entity", seller, models.EntityWrite), ("user_settings", buyer, models.UserSettingsWrite),
                 ("account", buyer, models.AccountWrite)]
    for name, party, write in resources:
        arguments = {"id": ids[name]} if name in ids else {}
        got = operation(f"get_{name}").sync_detailed(client=client(party), **arguments)
        body = write.from_dict(got.parsed.to_dict())
        put = operation(f"update_{name}").sync_detailed(client=client(party), body=body, **arguments)
        assert (got.status_code, put.status_code) == (200, 200), (name, put.content)


def main() -> int:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    token = secrets.token_hex(16)
    server = Server(f"sqlite:///{OUT}/clients.db", OUT / "server.log", args=["--sandbox"], SANDBOX_TOKEN=token)
    try:
        server.wait_ready()
        generate(f"{server.url}/openapi.json")
        compile_typescript()
        sys.path[:0] = [str(OUT / "python"), str(OUT / "og_python")]
        with step("import the Python clients"):
            importlib.import_module("onboards_opc")
            importlib.import_module("onboards_og")
        with step("workflow through the Python clients"):
            workflow(server.url, token)
    finally:
        server.stop()
    print("clients: all five generated, compiled or imported; the workflow passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
