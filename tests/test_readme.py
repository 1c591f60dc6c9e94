"""README.md does what it says: its curl walkthrough runs against a demo server, and its CLI commands exist."""

import itertools
import json
import re
import subprocess

import pytest

from onboards.demo import BUYER_EMAIL, SELLER_EMAIL
from tests.servers import ONBOARDS, ROOT, clean_env, get_as_demo, serve_onboards

README = (ROOT / "README.md").read_text()
README_API = "http://127.0.0.1:8080"


def section(heading: str) -> str:
    """The text under a Markdown heading of the README, up to the next heading (fenced code is not a heading)."""
    lines: list[str] | None = None
    fenced = False
    for line in README.splitlines(keepends=True):
        is_heading = not fenced and re.match(r"#{1,6} ", line) is not None
        if line.startswith("```"):
            fenced = not fenced
        if is_heading and lines is not None:
            break
        if lines is not None:
            lines.append(line)
        elif is_heading and line.lstrip("#").strip() == heading:
            lines = []
    assert lines is not None, f"README.md has no heading {heading!r}"
    return "".join(lines)


def curl_walkthrough() -> str:
    blocks = re.findall(r"^```sh\n(.*?)^```", section("The workflow, with curl"), re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, "expected one ```sh block under '## The workflow, with curl'"
    return blocks[0]


def cli_commands() -> list[tuple[list[str], list[str]]]:
    """(command words, options) of each `onboards …` row of the README's CLI table."""
    commands = []
    for usage in re.findall(r"^\| `onboards ([^`]+)` \|", section("The operator CLI"), re.MULTILINE):
        command = list(itertools.takewhile(lambda word: re.fullmatch("[a-z]+", word), usage.split()))
        commands.append((command, re.findall(r"--[a-z][a-z-]*", usage)))
    return commands


def test_the_readme_has_the_blocks_these_tests_run():
    block = curl_walkthrough()
    assert README_API in block and "/onboard/buyer" in block
    assert [c for c, _ in cli_commands()][:2] == [["migrate"], ["serve"]]


@pytest.mark.slow
def test_the_curl_walkthrough_runs_against_the_demo(tmp_path):
    with serve_onboards(tmp_path) as server:
        script = "set -euo pipefail\n" + curl_walkthrough().replace(README_API, server.url)
        # `.venv/bin/onboards outbox` in the block reads the server's database: same DATABASE_URL, from ROOT.
        result = subprocess.run(["bash", "-c", script], env=clean_env(DATABASE_URL=server.database_url), cwd=ROOT,
                                capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"

        onboards = get_as_demo(server.url, "/onboards", BUYER_EMAIL)
        assert isinstance(onboards, list) and [o["status"] for o in onboards] == ["completed"]
        buyer_flows = get_as_demo(server.url, "/flows", BUYER_EMAIL)
        assert isinstance(buyer_flows, list) and onboards[0]["flow_id"] == buyer_flows[0]["id"]
        seller_flows = get_as_demo(server.url, "/flows", SELLER_EMAIL)
        assert isinstance(seller_flows, list)
        steps = [step for flow in seller_flows for step in flow["steps"]]
        assert [(s["enabled"], [(m["property"], m["value"]) for m in s["integration"]["mappings"]]) for s in steps] \
            == [(True, [("flow_id", buyer_flows[0]["id"])])]
        connections = get_as_demo(server.url, "/connections", BUYER_EMAIL)
        assert isinstance(connections, list)
        assert [c["ui_state"]["has_setup_buyer_delivery"] for c in connections] == [True]

    lines = result.stdout.strip().splitlines()
    assert any(SELLER_EMAIL in line for line in lines), "`onboards outbox` lists the seller's notification"
    last = json.loads(lines[-1])  # POST /onboard/buyer on a connection already set up
    assert (last["status"], last["title"]) == (409, "Conflict")


@pytest.mark.parametrize(("command", "options"), cli_commands(), ids=[" ".join(c) for c, _ in cli_commands()])
def test_every_cli_command_in_the_readme_exists(command, options):
    result = subprocess.run([str(ONBOARDS), *command, "--help"], env=clean_env(), cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert [o for o in options if o not in result.stdout] == []
