"""`onboards walkthrough`: plays the buyer-onboarding workflow against a running server, over HTTP only.

With no arguments it talks to the demo data of `make run` (http://HOST:PORT, default http://127.0.0.1:8080):
the seller's invitation to buyer@example.com, the seller's flow with its disabled buyer step, the buyer
creating the onboard, moving it to in_progress with its first flow and completing it, then the effects.
When the demo invitation was onboarded already it shows the result instead. Every request and its
response are printed compactly; ANSI colour only on a terminal and when NO_COLOR is not set.
"""

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import httpx

from onboards.config import Settings
from onboards.demo import BUYER_EMAIL, SELLER_EMAIL, demo_key

HELP = "play the onboarding workflow against a running server (the demo data of `make run`)"
TIMEOUT_SECONDS = 10.0
BODY_WIDTH = 160
FINAL = ("completed", "completed_flows_sync")


class StepFailed(Exception):
    """A step did not get what the workflow promises; the message says what and what to do."""


class Walk:
    """The HTTP client, the two demo parties and the printer."""

    def __init__(self, client: httpx.Client, out: TextIO, color: bool) -> None:
        self.client, self.out, self.color = client, out, color
        self.keys = {"seller": demo_key(SELLER_EMAIL), "buyer": demo_key(BUYER_EMAIL)}
        self.step_number = 0

    def paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def say(self, line: str = "") -> None:
        print(line, file=self.out, flush=True)

    def step(self, title: str) -> None:
        self.step_number += 1
        self.say()
        self.say(self.paint(f"{self.step_number}. {title}", "1"))

    def check(self, line: str) -> None:
        self.say(f"   {self.paint('ok', '32')} {line}")

    def call(self, who: str | None, method: str, path: str, expect: Sequence[int] = (200,),
             body: Mapping[str, Any] | None = None, params: Mapping[str, str] | None = None) -> Any:
        """Sends one request as `who` (None: no auth), prints it and its answer; the JSON body.
        A status outside `expect` is a StepFailed."""
        shown = path + ("?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else "")
        request = f"{self.paint(method, '36')} {shown}" + (f"  {trim(body)}" if body is not None else "")
        self.say(f"   {who or 'anyone':6} -> {request}")
        auth = ("API", self.keys[who]) if who else None
        response = self.client.request(method, path, json=body, params=params, auth=auth)
        try:
            answer = response.json() if response.content else None
        except ValueError:
            answer = response.text
        good = response.status_code in expect
        status = self.paint(f"{response.status_code} {response.reason_phrase}", "32" if good else "31")
        self.say(f"          <- {status}" + (f"  {trim(answer)}" if answer is not None else ""))
        if not good:
            if response.status_code == 401 and who:
                raise StepFailed(f"the {who}'s demo API key was refused: is this server serving the demo data "
                                 "(`make run`, or `onboards serve --demo`)?")
            detail = answer.get("detail") if isinstance(answer, dict) else None
            raise StepFailed(f"{method} {path} answered {response.status_code}"
                             + (f" ({detail})" if detail else "") + f", expected {' or '.join(map(str, expect))}")
        return answer


def trim(value: Any, width: int = BODY_WIDTH) -> str:
    """`value` as compact JSON, cut to `width` characters."""
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def buyer_steps(flows: list[dict], entity_id: str) -> list[tuple[dict, dict]]:
    """(flow, step) for each step of `flows` whose entity is `entity_id`."""
    return [(flow, step) for flow in flows for step in flow["steps"] if step["entity"]["id"] == entity_id]


def walk_through(walk: Walk) -> None:
    walk.step("The server answers")
    walk.call(None, "GET", "/health")

    walk.step(f"The seller's invitation to {BUYER_EMAIL} (the demo made it)")
    invitations = walk.call("seller", "GET", "/invitations", params={"sort": "desc", "limit": "1000"})
    mine = [i for i in invitations if i["email"] == BUYER_EMAIL and i["type"] == "recipient"]
    if not mine:
        raise StepFailed(f"the seller has no invitation to {BUYER_EMAIL}: is this server serving the demo data?")
    pending = [i for i in mine if i["status"] == "pending"]
    invitation = (pending or mine)[0]
    walk.check(f"invitation {invitation['id']} is {invitation['status']}, expires {invitation['expires_at']}")
    if invitation["status"] == "expired":
        raise StepFailed(f"the demo invitation {invitation['id']} has expired: the seller can renew it with "
                         "PUT /invitations/{entityId}/resend (entityId: the pending entity), then run this again")

    walk.step("The seller's side: its entity for the buyer, and a flow with a buyer step")
    seller_connection = walk.call("seller", "GET", f"/connections/{invitation['id']}")
    buyer_entity = seller_connection["account_entity"]
    pending_now = json.dumps(buyer_entity["pending"])
    walk.check(f"the seller's entity {buyer_entity['id']} stands for the buyer (pending: {pending_now})")
    found = buyer_steps(walk.call("seller", "GET", "/flows"), buyer_entity["id"])
    if not found:
        raise StepFailed("the seller has no flow with a buyer step for this entity (the demo's 'Solar leads' flow)")
    seller_flow, seller_step = found[0]
    walk.check(f"flow '{seller_flow['name']}' has buyer step {seller_step['id']}: "
               f"enabled={json.dumps(seller_step['enabled'])}, mappings={trim(seller_step['integration']['mappings'])}")

    walk.step("The buyer accepts by creating the onboard (201; 200 when it exists already)")
    onboard = walk.call("buyer", "POST", "/onboards", expect=(201, 200), body={"invitation_id": invitation["id"]})
    walk.check(f"onboard {onboard['id']} is {onboard['status']}, for connection {onboard['connection_id']}")
    if onboard["status"] in FINAL:
        walk.say(f"   The demo invitation was onboarded already (onboard {onboard['id']} is {onboard['status']}):"
                 " here is the result.")
        buyer_flow_id = onboard["flow_id"]
    else:
        walk.step("The buyer picks its flow and moves the onboard to in_progress")
        buyer_flows = walk.call("buyer", "GET", "/flows")
        if not buyer_flows:
            raise StepFailed("the buyer has no flow (the demo's 'Inbound solar' flow)")
        buyer_flow_id = onboard["flow_id"] or buyer_flows[0]["id"]
        onboard = walk.call("buyer", "PUT", f"/onboards/{onboard['id']}", body={
            "invitation_id": invitation["id"], "flow_id": buyer_flow_id, "status": "in_progress"})
        walk.check(f"onboard {onboard['id']} is {onboard['status']} with flow {onboard['flow_id']}")

        walk.step("The buyer completes the onboard: the buyer setup runs in one transaction")
        onboard = walk.call("buyer", "PUT", f"/onboards/{onboard['id']}",
                            body={"invitation_id": invitation["id"], "status": "completed"})
        if onboard["status"] not in FINAL:
            raise StepFailed(f"the onboard is {onboard['status']} after completing it: {onboard.get('reason')}")
        buyer_flow_id = onboard["flow_id"]
    walk.check(f"onboard {onboard['id']} is {onboard['status']}, buyer flow {buyer_flow_id}")

    walk.step("The effects")
    connection = walk.call("buyer", "GET", f"/connections/{onboard['connection_id']}")
    if not connection["ui_state"]["has_setup_buyer_delivery"]:
        raise StepFailed(f"connection {connection['id']} is not flagged has_setup_buyer_delivery")
    walk.check(f"connection {connection['id']}: ui_state.has_setup_buyer_delivery = true")
    flow = walk.call("seller", "GET", f"/flows/{seller_flow['id']}")
    steps = [step for step in flow["steps"] if step["id"] == seller_step["id"]]
    mapping = {"property": "flow_id", "value": buyer_flow_id}
    if not steps or not steps[0]["enabled"] or not any(
            {k: m.get(k) for k in mapping} == mapping for m in steps[0]["integration"]["mappings"]):
        raise StepFailed(f"the seller's buyer step {seller_step['id']} is not enabled and mapped to {buyer_flow_id}")
    walk.check(f"the seller's buyer step {seller_step['id']} is enabled and maps flow_id -> {buyer_flow_id}")
    buyer_flow = walk.call("buyer", "GET", f"/flows/{buyer_flow_id}")
    seller_entity = connection["account_entity"]
    if not any(source["entity"]["id"] == seller_entity["id"] for source in buyer_flow["sources"]):
        raise StepFailed(f"the buyer flow {buyer_flow_id} has no source for the seller")
    walk.check(f"the buyer flow '{buyer_flow['name']}' has the seller '{seller_entity['name']}' as a source")

    walk.say()
    walk.say("The seller's users were e-mailed through the transactional outbox: on the server's machine, run")
    walk.say("`onboards outbox` (with the server's DATABASE_URL) to see the messages and their delivery state.")
    walk.say(walk.paint("Walkthrough complete.", "1;32"))


def use_color(out: TextIO, env: Mapping[str, str] | None = None) -> bool:
    """ANSI colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    env = os.environ if env is None else env
    isatty = getattr(out, "isatty", None)
    return bool(isatty and isatty()) and not env.get("NO_COLOR")


def default_base_url(env: Mapping[str, str] | None = None) -> str:
    """http://HOST:PORT as `onboards serve` would listen (a wildcard HOST means this machine)."""
    env = os.environ if env is None else env
    host = env.get("HOST", "").strip() or Settings.host
    port = env.get("PORT", "").strip() or str(Settings.port)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise StepFailed(f"PORT={port!r} is not a port number")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run(base_url: str, out: TextIO, err: TextIO | None = None, color: bool | None = None) -> int:
    """Plays the walkthrough against `base_url`, printing to `out`; 0, or 1 after one line on `err`."""
    err = sys.stderr if err is None else err
    if not base_url.startswith(("http://", "https://")):
        return fail(err, f"the base URL {base_url!r} must start with http:// or https://")
    walk_color = use_color(out) if color is None else color
    try:
        with httpx.Client(base_url=base_url.rstrip("/"), timeout=TIMEOUT_SECONDS) as client:
            walk_through(Walk(client, out, walk_color))
    except StepFailed as failure:
        return fail(err, str(failure))
    except httpx.TransportError as problem:
        return fail(err, f"cannot reach {base_url} ({type(problem).__name__}: {problem or 'no answer'}); "
                         "is the server running (`make run`)?")
    except httpx.InvalidURL as problem:
        return fail(err, f"bad base URL {base_url!r}: {problem}")
    except (KeyError, TypeError, IndexError) as problem:
        return fail(err, f"unexpected answer from {base_url} ({type(problem).__name__}: {problem}): "
                         "is it an onboards server?")
    return 0


def fail(err: TextIO, message: str) -> int:
    print(f"onboards walkthrough: {' '.join(message.split())}", file=err, flush=True)
    return 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-url", help="the server to talk to (default: http://HOST:PORT from the environment, "
                                           "else http://127.0.0.1:8080)")


def from_args(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Runs the walkthrough for parsed arguments (`--base-url`), as `onboards walkthrough` does."""
    err = sys.stderr if err is None else err
    try:
        base_url = args.base_url or default_base_url()
    except StepFailed as problem:
        return fail(err, str(problem))
    return run(base_url, sys.stdout if out is None else out, err)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="onboards walkthrough", description=HELP)
    add_arguments(parser)
    return from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
