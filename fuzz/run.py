"""`make fuzz` and `make contract`: schemathesis's own CLI (`schemathesis run`) over the whole of
openapi.yaml, with every check and every phase (examples, coverage, fuzzing, stateful) and two
accounts listed as peers, so that `object_level_authorization` runs too. Prints a one-line verdict
and exits non-zero on any failure.

    python -m fuzz.run local [--databases sqlite,postgres]             # `make fuzz`
    python -m fuzz.run contract --base-url URL --api-key KEY [...]     # `make contract`

`local` makes a throw-away database of each kind, migrates it, creates the accounts with the
operator CLI (`onboards account create --json`), starts `onboards serve` on a free port (responses
validated against the spec) and fuzzes it. `contract` fuzzes a deployment that is already running:
this project's, or another implementation of the spec. Both seed what the workflow needs through
the API itself (`seed`), write the Web Fuzzing Commons auth document naming the two users, and run
schemathesis with the repository's `schemathesis.toml`. Reports (JUnit, the output, the server
log) go to reports/fuzz/<target>/.

The run is bounded by a fixed seed, an example budget per operation and pass (`--max-examples`)
and a time budget per target (`--max-time`): within it the fuzzing and stateful phases repeat,
which the stateful phase needs (one pass of it ends after a few dozen scenarios, see README).
"""

import argparse
import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, fields
from pathlib import Path

import httpx

from onboards.config import Settings
from tests.postgres import throwaway_database, unreachable
from tests.servers import RELAXED_LIMITS

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SPEC = ROOT / "openapi.yaml"
SANDBOX_SPEC = ROOT / "sandbox.yaml"
CONFIG = ROOT / "schemathesis.toml"
PHASES = "examples,coverage,fuzzing,stateful"
SANDBOX_TOKEN = f"fuzz-{uuid.uuid4().hex}"
# The environment variable schemathesis.toml takes the WFC auth document's path from.
AUTH_ENV = "ONBOARDS_FUZZ_AUTH"
# The WFC users: schemathesis acts as OWNER; PEER is the second account object_level_authorization needs.
OWNER, PEER = "buyer", "seller"
ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
# Settings `onboards serve` reads: the child gets only the ones set here.
SETTING_NAMES = {setting.name.upper() for setting in fields(Settings)}
PHASE_NAMES = ("Examples", "Coverage", "Fuzzing", "Stateful")


class FuzzError(Exception):
    """Set-up that could not be done; the message says what."""


@dataclass(frozen=True)
class Identity:
    """A user of the API under test: its name in the WFC document, its API key, its e-mail (when known)."""

    name: str
    key: str
    email: str | None = None

    @property
    def authorization(self) -> str:
        return "Basic " + base64.b64encode(f"API:{self.key}".encode()).decode()


@dataclass
class Outcome:
    """What one schemathesis run found: from its exit code, its JUnit report and its closing summary."""

    label: str
    exit_code: int
    junit: Path
    seconds: float
    failures: int = 0
    errors: int = 0
    cases: str = "?"
    phases: dict[str, str] = field(default_factory=dict)
    scenarios: str = "?"
    links: str = "?"

    @property
    def passed(self) -> bool:
        return self.exit_code == 0 and self.failures == 0 and self.errors == 0

    def summary(self) -> str:
        phases = ", ".join(f"{name.lower()} {result}" for name, result in self.phases.items())
        found = f"{self.failures} failures" + (f", {self.errors} errors" if self.errors else "")
        return (f"{self.label} {'PASS' if self.passed else 'FAIL'}: {found}; test cases {self.cases}; "
                f"{phases}; stateful {self.scenarios} scenarios, links {self.links}; {self.seconds:.0f}s")


# ---------------------------------------------------------------------------------------------
# What the workflow needs, made through the API as its users would.


def seed(base_url: str, owner: Identity, counterparties: list[Identity]) -> list[str]:
    """Makes what lets the workflow's operations answer 2xx, not only 404; one line per record.

    For each counterparty (an account other than `owner`, the one schemathesis acts as):

    * a recipient invitation from it to the owner's address, pending, and a flow of it with a buyer
      step for that invitation's entity: the owner creates an onboard from it (201), moves it on and
      completes it, or runs `POST /onboard/buyer` for its connection (a real buyer setup);
    * a source invitation from the owner to its address, accepted by it: the owner onboards from it
      as the buyer that sent it.

    Each is used up once (a second create from an invitation returns the same onboard, a connection
    is set up once), hence several counterparties in `local`. Then a source invitation from the
    first counterparty to the owner, pending (the owner accepts it), a flow of the owner and a
    recipient invitation from the owner to an outside address. What needs an e-mail address is left
    out when it is not known (`contract` without `--email` / `--peer-email`)."""
    made: list[str] = []
    with httpx.Client(base_url=base_url, timeout=30) as http:

        def call(who: Identity, method: str, path: str, body: dict | None = None) -> dict:
            try:
                response = http.request(method, path, json=body, headers={"Authorization": who.authorization})
            except httpx.HTTPError as problem:
                raise FuzzError(f"seeding: {method} {path}: {problem}") from None
            if response.status_code >= 300:
                raise FuzzError(f"seeding: {method} {path} as {who.name} answered {response.status_code}: "
                                f"{response.text[:300]}")
            return response.json()

        # Ids sort by creation time and lists answer oldest first: what is addressed to the owner is made
        # first, so that the links from `GET /invitations` and `GET /connections` (`#/0/...`) lead to it.
        for number, other in enumerate(counterparties, start=1):
            if owner.email:
                invited = call(other, "POST", "/invitations/recipient", {"email": owner.email})["entity"]
                call(other, "POST", "/flows", {"name": f"Fuzz outbound {number}", "fields": ["email"], "steps": [
                    {"type": "recipient", "entity": {"id": invited["id"]}, "enabled": False}]})
                made.append(f"recipient invitation {invited['invitation_id']} {other.name} -> {owner.name} "
                            f"(pending) and a flow of {other.name} with its buyer step")
            if other.email:
                sent = call(owner, "POST", "/invitations/source", {"email": other.email})["entity"]
                call(other, "POST", f"/invitations/{sent['invitation_id']}/accept")
                made.append(f"source invitation {sent['invitation_id']} {owner.name} -> {other.name} (accepted)")
        if counterparties and owner.email:
            first = counterparties[0]
            source = call(first, "POST", "/invitations/source", {"email": owner.email})["entity"]
            made.append(f"source invitation {source['invitation_id']} {first.name} -> {owner.name} (pending)")
        flow = call(owner, "POST", "/flows", {"name": "Fuzz inbound", "fields": ["first_name", "email"]})
        made.append(f"flow {flow['id']} of {owner.name}")
        outside = call(owner, "POST", "/invitations/recipient",
                       {"email": f"outside-{uuid.uuid4().hex[:8]}@example.net", "description": "fuzz"})
        made.append(f"recipient invitation {outside['entity']['invitation_id']} {owner.name} -> an outsider")
    return made


def write_auth_document(path: Path, identities: list[Identity]) -> None:
    """The Web Fuzzing Commons auth document: one entry per user, HTTP Basic as a fixed header."""
    document = {"schemaVersion": "0.2.0", "auth": [
        {"name": who.name, "fixedHeaders": [{"name": "Authorization", "value": who.authorization}]}
        for who in identities]}
    path.write_text(json.dumps(document, indent=2) + "\n")
    path.chmod(0o600)


# ---------------------------------------------------------------------------------------------
# schemathesis itself.


def run_schemathesis(label: str, base_url: str, identities: list[Identity], report_dir: Path,
                     options: argparse.Namespace) -> Outcome:
    report_dir.mkdir(parents=True, exist_ok=True)
    auth_path = report_dir / "auth.json"
    write_auth_document(auth_path, identities)
    config = CONFIG
    if len(identities) < 2:
        # One user cannot be compared with another: the same configuration without `peers`.
        config = report_dir / "schemathesis.toml"
        config.write_text(re.sub(r"(?m)^peers\s*=.*$", "# peers: only one user (no --peer-api-key)",
                                 CONFIG.read_text()))
    junit = report_dir / "junit.xml"
    command = [str(BIN / "schemathesis"), "--config-file", str(config), "run", str(SPEC), "--url", base_url,
               "--phases", PHASES, "--seed", str(options.seed),
               "--max-examples", str(options.max_examples), "--workers", str(options.workers),
               "--report", "junit", "--report-junit-path", str(junit), "--no-color"]
    if options.max_time:
        command += ["--max-time", str(options.max_time)]
    command += options.extra
    shown = [os.path.relpath(part, ROOT) if part.startswith(str(ROOT)) else part for part in command]
    print(f"\n== {label}: {AUTH_ENV}={os.path.relpath(auth_path, ROOT)} {' '.join(shown)}", flush=True)
    started = time.monotonic()
    output = []
    with (report_dir / "schemathesis.log").open("w") as log:
        process = subprocess.Popen(command, env={**os.environ, AUTH_ENV: str(auth_path)}, cwd=ROOT, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1)
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            log.write(line)
            output.append(line.rstrip("\n"))
        exit_code = process.wait()
    outcome = Outcome(label, exit_code, junit, time.monotonic() - started)
    _read_junit(outcome)
    _read_summary(outcome, output)
    return outcome


def _read_junit(outcome: Outcome) -> None:
    if not outcome.junit.exists():
        outcome.errors += 1
        return
    for case in ET.parse(outcome.junit).getroot().iter("testcase"):
        outcome.failures += len(case.findall("failure"))
        outcome.errors += len(case.findall("error"))


def _read_summary(outcome: Outcome, lines: list[str]) -> None:
    """The totals schemathesis prints: per phase, the stateful scenarios and links, the test cases."""
    for number, line in enumerate(lines):
        text = line.strip()
        heading = re.match(r"\S+\s+(" + "|".join(PHASE_NAMES) + r") \(in ", text)
        if heading:
            results = [later.strip() for later in lines[number + 1:number + 8] if later.strip()]
            tally = [result for result in results if re.search(r"\d+ (passed|failed|skipped|errored)", result)]
            outcome.phases[heading.group(1)] = _plain(tally[0]) if tally else "?"
        elif text.startswith("Scenarios:"):
            outcome.scenarios = text.split(":", 1)[1].strip()
        elif text.startswith("API Links:"):
            outcome.links = text.split(":", 1)[1].strip()
        elif text == "Test cases:" and number + 1 < len(lines):
            outcome.cases = lines[number + 1].strip()


def _plain(tally: str) -> str:
    """`✅ 19 passed  ⏭   2 skipped` -> `19 passed, 2 skipped`."""
    return ", ".join(re.findall(r"\d+ [a-z]+", tally))


# ---------------------------------------------------------------------------------------------
# `local`: throw-away databases, accounts from the operator CLI, `onboards serve` as a child process.


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _server_env(database_url: str) -> dict[str, str]:
    # Sandbox mode: sandbox.yaml is fuzzed too, and the accounts the CLI makes are sandbox accounts.
    return {**{k: v for k, v in os.environ.items() if k not in SETTING_NAMES}, "DATABASE_URL": database_url,
            "SANDBOX": "1", "SANDBOX_TOKEN": SANDBOX_TOKEN}


def _onboards(database_url: str, *args: str) -> dict:
    done = subprocess.run([str(BIN / "onboards"), "--json", *args], env=_server_env(database_url), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise FuzzError(f"onboards {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return json.loads(done.stdout)


@contextmanager
def serve(database_url: str, log_path: Path) -> Iterator[str]:
    """`onboards serve` on a free port of 127.0.0.1, validating its responses; yields its base URL."""
    port = _free_port()
    # The abuse limits raised: the fuzzer sends thousands of invitations and wrong keys on purpose, and
    # tests/test_hostile.py tests the limits themselves.
    env = {**_server_env(database_url), "HOST": "127.0.0.1", "PORT": str(port), "VALIDATE_RESPONSES": "1",
           "SMTP_URL": "", "LOG_LEVEL": "WARNING", **RELAXED_LIMITS}
    base_url = f"http://127.0.0.1:{port}"
    with log_path.open("ab") as log:  # the child keeps its own descriptor
        process = subprocess.Popen([str(BIN / "onboards"), "serve", "--no-access-log"], env=env, cwd=ROOT,
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(process, base_url, log_path)
        yield base_url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def _wait_healthy(process: subprocess.Popen, base_url: str, log_path: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=base_url, timeout=5) as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise FuzzError(f"onboards serve exited with {process.returncode}:\n{log_path.read_text()[-2000:]}")
            with suppress(httpx.TransportError):
                if http.get("/health").status_code == 200:
                    return
            time.sleep(0.1)
    raise FuzzError(f"onboards serve was not healthy within {seconds:.0f}s:\n{log_path.read_text()[-2000:]}")


@contextmanager
def database(kind: str, directory: Path) -> Iterator[str]:
    """An empty database of `kind` (sqlite | postgres), dropped afterwards; yields its DATABASE_URL."""
    if kind == "sqlite":
        yield f"sqlite:///{directory / 'fuzz.db'}"
        return
    with throwaway_database(ADMIN_URL, "onboards_fuzz") as url:
        yield url


def run_local(kind: str, options: argparse.Namespace) -> list[Outcome]:
    report_dir = options.report_dir / kind
    shutil.rmtree(report_dir, ignore_errors=True)
    report_dir.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="onboards-fuzz-") as tmp, database(kind, Path(tmp)) as url:
        _onboards(url, "migrate")
        # OWNER and PEER are the WFC document's two users; the other sellers only invite OWNER (see `seed`).
        names = [OWNER, PEER, *(f"{PEER}{number}" for number in range(2, options.sellers + 1))]
        accounts = []
        for name in names:
            email = f"fuzz-{name}@example.com"
            account = _onboards(url, "account", "create", "--name", f"Fuzz {name.title()}", "--email", email)
            accounts.append(Identity(name, account["api_key"], email))
        with serve(url, report_dir / "server.log") as base_url:
            print(f"\n== {kind}: seeding {base_url}")
            for line in seed(base_url, accounts[0], accounts[1:]):
                print(f"seeded: {line}")
            return [run_schemathesis(kind, base_url, accounts[:2], report_dir, options),
                    run_sandbox(f"{kind} sandbox", base_url, report_dir / "sandbox", options)]


def run_sandbox(label: str, base_url: str, report_dir: Path, options: argparse.Namespace) -> Outcome:
    """schemathesis over sandbox.yaml against the same server (in sandbox mode), with the token; a shorter
    budget: three operations, no workflow to walk."""
    report_dir.mkdir(parents=True, exist_ok=True)
    config = report_dir / "schemathesis.toml"
    config.write_text("[checks]\nenabled = true\nmax_response_time = 5.0\n")
    junit = report_dir / "junit.xml"
    command = [str(BIN / "schemathesis"), "--config-file", str(config), "run", str(SANDBOX_SPEC), "--url",
               f"{base_url}/sandbox", "--header", f"X-Sandbox-Token: {SANDBOX_TOKEN}", "--phases", PHASES,
               "--seed", str(options.seed), "--max-examples", str(options.max_examples), "--workers", "1",
               "--report", "junit", "--report-junit-path", str(junit), "--no-color",
               "--max-time", str(max(30, (options.max_time or 120) // 4))]
    print(f"\n== {label}: {' '.join(os.path.relpath(p, ROOT) if p.startswith(str(ROOT)) else p for p in command)}",
          flush=True)
    started = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, text=True, capture_output=True, check=False)
    (report_dir / "schemathesis.log").write_text(done.stdout + done.stderr)
    sys.stdout.write(done.stdout + done.stderr)
    outcome = Outcome(label, done.returncode, junit, time.monotonic() - started)
    _read_junit(outcome)
    _read_summary(outcome, done.stdout.splitlines())
    return outcome


def run_contract(options: argparse.Namespace) -> tuple[Outcome, list[str]]:
    notes = []
    owner = Identity(OWNER, options.api_key, options.email or None)
    identities = [owner]
    if options.peer_api_key:
        identities.append(Identity(PEER, options.peer_api_key, options.peer_email or None))
    else:
        notes.append("object_level_authorization had no second user to compare with: give PEER_API_KEY")
    base_url = options.base_url.rstrip("/")
    report_dir = options.report_dir / "contract"
    shutil.rmtree(report_dir, ignore_errors=True)
    print(f"== contract: seeding {base_url}")
    for line in seed(base_url, owner, identities[1:]):
        print(f"seeded: {line}")
    return run_schemathesis(f"contract {base_url}", base_url, identities, report_dir, options), notes


# ---------------------------------------------------------------------------------------------


def _environ_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise SystemExit(f"fuzz: {name}={raw!r} is not a whole number")
    return int(raw)


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--seed", type=int, default=_environ_int("FUZZ_SEED", 20240601),
                        help="schemathesis --seed (FUZZ_SEED, default %(default)s)")
    common.add_argument("--max-examples", type=int, default=_environ_int("FUZZ_MAX_EXAMPLES", 25),
                        help="schemathesis --max-examples: cases per operation in each pass (FUZZ_MAX_EXAMPLES, "
                             "default %(default)s)")
    common.add_argument("--max-time", type=int, default=_environ_int("FUZZ_MAX_TIME", 120),
                        help="schemathesis --max-time: seconds per target, over which the fuzzing and stateful "
                             "phases repeat (FUZZ_MAX_TIME, default %(default)s; 0: one pass of each phase)")
    common.add_argument("--workers", default=os.environ.get("FUZZ_WORKERS", "1"),
                        help="schemathesis --workers (FUZZ_WORKERS, default %(default)s)")
    common.add_argument("--report-dir", type=Path, default=ROOT / "reports" / "fuzz",
                        help="where reports, WFC documents and logs go (default reports/fuzz)")
    common.add_argument("extra", nargs="*", help="after `--`: more `schemathesis run` options")
    top = argparse.ArgumentParser(prog="python -m fuzz.run", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", required=True)
    local = commands.add_parser("local", parents=[common], help="fuzz this project on SQLite and PostgreSQL")
    local.add_argument("--databases", default=os.environ.get("FUZZ_DATABASES", "sqlite,postgres"),
                       help="comma-separated, of sqlite and postgres (FUZZ_DATABASES, default %(default)s)")
    local.add_argument("--sellers", type=int, default=_environ_int("FUZZ_SELLERS", 8),
                       help="seller accounts that invite the fuzzed buyer (FUZZ_SELLERS, default %(default)s)")
    contract = commands.add_parser("contract", parents=[common], help="fuzz a running deployment of the spec")
    # Defaults from the environment: `make contract BASE_URL=… API_KEY=…` passes them so, never in a command line.
    contract.add_argument("--base-url", default=os.environ.get("BASE_URL", ""),
                          help="where the API answers, e.g. http://127.0.0.1:8080 (BASE_URL)")
    contract.add_argument("--api-key", default=os.environ.get("API_KEY", ""),
                          help="API key of the account schemathesis acts as (API_KEY)")
    contract.add_argument("--email", default=os.environ.get("API_EMAIL", ""),
                          help="an e-mail address of that account's user, for seeding (API_EMAIL)")
    contract.add_argument("--peer-api-key", default=os.environ.get("PEER_API_KEY", ""),
                          help="API key of a second account, which object_level_authorization needs (PEER_API_KEY)")
    contract.add_argument("--peer-email", default=os.environ.get("PEER_EMAIL", ""),
                          help="an e-mail address of the second account's user (PEER_EMAIL)")
    return top


def main(argv: list[str] | None = None) -> int:
    options = parser().parse_args(argv)
    outcomes: list[Outcome] = []
    notes: list[str] = []
    try:
        if options.command == "local":
            kinds = [kind.strip() for kind in options.databases.split(",") if kind.strip()]
            if not kinds or set(kinds) - {"sqlite", "postgres"}:
                raise FuzzError(f"--databases: sqlite and/or postgres, not {options.databases!r}")
            if options.sellers < 1:
                raise FuzzError("--sellers: at least 1")
            if "postgres" in kinds and (problem := unreachable(ADMIN_URL)):
                if os.environ.get("REQUIRE_POSTGRES") == "1":
                    raise FuzzError(f"REQUIRE_POSTGRES=1 but PostgreSQL at {ADMIN_URL} is unreachable: {problem}")
                notes.append(f"!!!!! PostgreSQL UNREACHABLE ({problem}): fuzzed SQLite ONLY !!!!!")
                print(notes[-1], flush=True)
                kinds.remove("postgres")
            outcomes = [outcome for kind in kinds for outcome in run_local(kind, options)]
        else:
            if not options.base_url or not options.api_key:
                raise FuzzError("contract needs --base-url and --api-key (BASE_URL, API_KEY)")
            outcome, notes = run_contract(options)
            outcomes = [outcome]
    except (FuzzError, OSError) as problem:
        print(f"\nfuzz: FAIL: {problem}", file=sys.stderr)
        return 2
    passed = all(outcome.passed for outcome in outcomes)
    print()
    for note in notes:
        print(f"note: {note}")
    reports = ", ".join(os.path.relpath(outcome.junit, ROOT) for outcome in outcomes)
    print(f"fuzz: {'PASS' if passed else 'FAIL'} (seed {options.seed}, max-examples {options.max_examples}, "
          f"max-time {options.max_time}s) | " + " | ".join(outcome.summary() for outcome in outcomes) +
          f" | JUnit: {reports}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
