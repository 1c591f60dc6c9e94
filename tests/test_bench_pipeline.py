"""bench/pipeline.py is the service's pipeline with the four benchmarked operations answered by fixed handlers:
security, validation and every other operation stay the service's. Served as the benchmark serves it, in a
process of its own (tests import no bench code)."""

import subprocess
import sys
from pathlib import Path

import httpx

from tests.helpers import invite, wait_until
from tests.servers import RELAXED_LIMITS, answers_health, clean_env, free_port

ROOT = Path(__file__).resolve().parent.parent
MISSING, OTHER = "0" * 24, "1" * 24


def test_fixed_onboards_through_the_services_pipeline(database_url, client, seller, buyer, tmp_path):
    invitation = invite(client, seller, buyer.email)["invitation_id"]
    failed, done = ({"invitation_id": invitation, "status": status} for status in ("failed", "done"))
    port = free_port()
    env = clean_env(DATABASE_URL=database_url, HOST="127.0.0.1", PORT=str(port), PYTHONPATH=str(ROOT),
                    **RELAXED_LIMITS)
    with (tmp_path / "pipeline.log").open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "bench.pipeline"], cwd=tmp_path, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as fixed:
            assert wait_until(lambda: process.poll() is not None or answers_health(fixed), 60)
            one = fixed.get(f"/onboards/{MISSING}", headers=buyer.auth)
            assert one.status_code == 200 and one.headers["ETag"] == '"v1"'
            assert fixed.get(f"/onboards/{OTHER}", headers=buyer.auth).json() == one.json()  # any id: the same one
            assert fixed.get("/onboards", params={"limit": 7}, headers=buyer.auth).json() == [one.json()] * 7
            assert fixed.post("/onboards", json={"invitation_id": invitation}, headers=buyer.auth).status_code == 201
            assert fixed.put(f"/onboards/{MISSING}", json=failed, headers=buyer.auth).status_code == 200
            # What every request pays before its handler is the service's: security, the spec's validation.
            assert fixed.get(f"/onboards/{MISSING}").status_code == 401
            assert fixed.get("/onboards/nothex", headers=buyer.auth).status_code == 400
            assert fixed.get("/onboards", params={"bogus": 1}, headers=buyer.auth).status_code == 400
            assert fixed.put(f"/onboards/{MISSING}", json=done, headers=buyer.auth).status_code == 400
            assert fixed.get("/invitations", headers=seller.auth).json()[0]["id"] == invitation  # the service's
    finally:
        process.terminate()
        process.wait(30)
    assert client.get(f"/onboards/{MISSING}", headers=buyer.auth).status_code == 404  # nothing was written
    assert client.post("/onboards", json={"invitation_id": invitation}, headers=buyer.auth).status_code == 201
