"""Publishing: one version, a changelog, a wheel that carries what the service serves and works installed
(not editable) in a virtualenv of its own, and a missing file named as such."""

import os
import re
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import httpx
import pytest

import onboards
from onboards import app, cli, specs
from tests import servers
from tests.helpers import readme_example
from tests.servers import ROOT, Server, clean_env

SERVED = ["openapi.yaml", "sandbox.yaml", "docs/index.html", "docs/sandbox.html"]


def test_the_version_is_written_once_and_the_spec_and_changelog_follow_it():
    assert app.load_spec()["info"]["version"] == onboards.__version__
    releases = re.findall(r"^## \[([^\]]+)\]", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    assert releases[:2] == ["Unreleased", onboards.__version__] or releases[0] == onboards.__version__


def test_a_missing_spec_is_named_as_such_not_as_a_database_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(app, "SPEC", tmp_path / "openapi.yaml")
    assert cli.main(["serve", "--database-url", f"sqlite:///{tmp_path}/x.db"]) == 1
    error = capsys.readouterr().err
    assert "openapi.yaml is missing" in error and "database error" not in error, error


def test_the_served_files_are_found_in_a_checkout():
    assert [specs.path(name) for name in SERVED] == [ROOT / name for name in SERVED]


def build_wheel(directory: Path) -> Path:
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(directory), str(ROOT)],
                   check=True, capture_output=True, cwd=directory)
    [wheel] = directory.glob("onboards-*.whl")
    return wheel


@pytest.mark.slow
def test_the_wheel_installed_in_a_fresh_virtualenv_serves_and_gives_pytest_the_sandbox(tmp_path: Path, monkeypatch):
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = Parser().parsestr(archive.read(f"onboards-{onboards.__version__}.dist-info/METADATA").decode())
    assert {f"onboards/data/{name}" for name in SERVED} <= names
    assert metadata["License-Expression"] == "MIT" and metadata["Version"] == onboards.__version__
    assert {"Homepage", "Source", "Issues", "Changelog"} <= {url.split(",")[0]
                                                             for url in metadata.get_all("Project-URL") or []}
    assert "Programming Language :: Python :: 3.11" in (metadata.get_all("Classifier") or [])

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = clean_env(PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("PYTHONPATH", None)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "-c", str(ROOT / "constraints.txt"), str(wheel),
                    "pytest"], check=True, env=env, cwd=tmp_path)
    where = "import onboards.specs as s; print(s.path('openapi.yaml'))"
    located = subprocess.run([str(venv / "bin" / "python"), "-c", where], check=True, capture_output=True, text=True,
                             env=env, cwd=tmp_path).stdout.strip()
    assert Path(located).is_relative_to(venv) and not Path(located).is_relative_to(ROOT), located

    monkeypatch.setattr(servers, "ONBOARDS", venv / "bin" / "onboards")
    server = Server(f"sqlite:///{tmp_path}/installed.db", tmp_path / "serve.log", args=["--sandbox"], PYTHONPATH="")
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=10) as http:
            assert http.get("/health").status_code == 200
            assert http.get("/openapi.json").json()["info"]["version"] == onboards.__version__
            assert http.get("/docs/").content == (ROOT / "docs" / "index.html").read_bytes()
    finally:
        server.stop()

    project = tmp_path / "client-project"
    project.mkdir()
    (project / "test_client.py").write_text(readme_example())
    result = subprocess.run([str(venv / "bin" / "python"), "-m", "pytest", "-p", "no:cacheprovider", "-q"],
                            capture_output=True, text=True, env={**env, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"},
                            cwd=project)
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout[-3000:] + result.stderr[-2000:]
