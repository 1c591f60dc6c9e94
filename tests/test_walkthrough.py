"""`onboards walkthrough` against a real `onboards serve --demo` process, in-process and as a program."""

import io
import subprocess
import sys

import pytest

from onboards.demo import BUYER_EMAIL, SELLER_EMAIL
from onboards.walkthrough import default_base_url, run, use_color
from tests.servers import ROOT, clean_env, free_port, get_as_demo, serve_onboards

ANSI = "\033["


def play(url: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(url, out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.slow
def test_walkthrough_onboards_the_demo_then_shows_the_result(tmp_path):
    with serve_onboards(tmp_path) as server:
        code, out, err = play(server.url)
        assert (code, err) == (0, ""), out + err
        for shown in ("GET /health", "GET /invitations", "POST /onboards", "201 Created", "PUT /onboards/",
                      '"status":"in_progress"', '"status":"completed"', "200 OK", "onboards outbox",
                      "Walkthrough complete."):
            assert shown in out
        assert ANSI not in out  # not a terminal

        onboards = get_as_demo(server.url, "/onboards", BUYER_EMAIL)
        assert isinstance(onboards, list) and [o["status"] for o in onboards] == ["completed"]
        onboard = onboards[0]
        connection = get_as_demo(server.url, f"/connections/{onboard['connection_id']}", BUYER_EMAIL)
        assert isinstance(connection, dict) and connection["ui_state"]["has_setup_buyer_delivery"] is True
        seller_flows = get_as_demo(server.url, "/flows", SELLER_EMAIL)
        assert isinstance(seller_flows, list)
        steps = [step for flow in seller_flows for step in flow["steps"]]
        assert [(s["enabled"], [(m["property"], m["value"]) for m in s["integration"]["mappings"]]) for s in steps] \
            == [(True, [("flow_id", onboard["flow_id"])])]

        second = subprocess.run([sys.executable, "-m", "onboards.walkthrough", "--base-url", server.url],
                                env=clean_env(), cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
        assert (second.returncode, second.stderr) == (0, ""), second.stdout + second.stderr
        assert "onboarded already" in second.stdout and "200 OK" in second.stdout
        assert "201 Created" not in second.stdout and ANSI not in second.stdout
        assert get_as_demo(server.url, "/onboards", BUYER_EMAIL) == onboards  # nothing changed
    assert "Traceback" not in server.log()


@pytest.mark.slow
def test_walkthrough_without_the_demo_data_fails_in_one_line(tmp_path):
    with serve_onboards(tmp_path, demo=False) as server:
        code, out, err = play(server.url)
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("onboards walkthrough: ") and "demo" in err
    assert "GET /health" in out


def test_unreachable_server_is_one_line():
    url = f"http://127.0.0.1:{free_port()}"
    code, out, err = play(url)
    assert code == 1
    assert err.count("\n") == 1 and f"cannot reach {url}" in err
    assert "GET /health" in out and ANSI not in out


def test_colour_when_asked():
    out, err = io.StringIO(), io.StringIO()
    assert run(f"http://127.0.0.1:{free_port()}", out, err, color=True) == 1
    assert f"{ANSI}1m1. The server answers{ANSI}0m" in out.getvalue() and ANSI not in err.getvalue()


def test_unreachable_server_as_a_program():
    url = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run([sys.executable, "-m", "onboards.walkthrough", "--base-url", url], env=clean_env(),
                            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and f"cannot reach {url}" in result.stderr


@pytest.mark.parametrize("url", ["127.0.0.1:8080", "ftp://127.0.0.1/"])
def test_a_base_url_that_is_not_http_is_one_line(url):
    code, out, err = play(url)
    assert (code, out) == (1, "")
    assert err.count("\n") == 1 and "http://" in err


@pytest.mark.parametrize(("env", "url"), [
    ({}, "http://127.0.0.1:8080"),
    ({"HOST": "0.0.0.0", "PORT": "9000"}, "http://127.0.0.1:9000"),
    ({"HOST": "::", "PORT": "9000"}, "http://[::1]:9000"),
    ({"HOST": "api.internal"}, "http://api.internal:8080"),
])
def test_default_base_url_follows_host_and_port(env, url):
    assert default_base_url(env) == url


def test_a_bad_port_is_one_line():
    result = subprocess.run([sys.executable, "-m", "onboards.walkthrough"], env=clean_env(PORT="eighty"),
                            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "onboards walkthrough: PORT='eighty' is not a port number\n"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("stream", "env", "color"), [
    (Terminal(), {}, True),
    (Terminal(), {"NO_COLOR": "1"}, False),
    (Terminal(), {"NO_COLOR": ""}, True),  # https://no-color.org: set and not empty
    (io.StringIO(), {}, False),
])
def test_colour_only_on_a_terminal_without_no_color(stream, env, color):
    with stream:
        assert use_color(stream, env) is color
