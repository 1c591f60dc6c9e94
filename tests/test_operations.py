"""The per-request work connexion repeats is done once (onboards/operations.py, onboards/problems.py):
these fail when a connexion upgrade changes the internals that relies on, instead of the saving
silently going away."""

from collections.abc import Callable

import connexion.security
from connexion.decorators.main import BaseDecorator

from onboards import problems


def test_each_operation_is_decorated_once(client, buyer, monkeypatch):
    calls = []
    decorate = BaseDecorator.decorate

    def counted(self: BaseDecorator, fn: Callable) -> Callable:
        calls.append(fn)
        return decorate(self, fn)

    monkeypatch.setattr(BaseDecorator, "decorate", counted)
    for _ in range(3):
        assert client.get("/onboards", headers=buyer.auth).status_code == 200
        assert client.get("/entities", headers=buyer.auth).status_code == 200
    assert len(calls) == 2  # once per operation of this app


def test_the_basic_auth_function_is_inspected_once(client, buyer, monkeypatch):
    calls = []
    inspect = connexion.security.inspect_function_arguments

    def counted(fn: Callable) -> tuple:
        calls.append(fn)
        return inspect(fn)

    monkeypatch.setattr(connexion.security, "inspect_function_arguments", counted)
    for _ in range(3):
        assert client.get("/onboards", headers=buyer.auth).status_code == 200
    assert len(calls) <= 2  # once per keyword connexion asks about


def test_parameter_and_body_validators_are_compiled_once_per_schema(client, buyer):
    assert client.get("/onboards?limit=5&sort=desc", headers=buyer.auth).status_code == 200
    assert client.post("/flows", json={"name": "one"}, headers=buyer.auth).status_code == 201
    compiled = len(problems._VALIDATORS)
    assert compiled >= 3  # limit, sort, the flow body
    for _ in range(3):
        assert client.get("/onboards?limit=5&sort=desc", headers=buyer.auth).status_code == 200
        assert client.post("/flows", json={"name": "two"}, headers=buyer.auth).status_code == 201
    assert len(problems._VALIDATORS) == compiled


def test_a_bad_parameter_is_still_reported_in_connexions_words(client, buyer):
    answer = client.get("/onboards?limit=0", headers=buyer.auth)
    assert answer.status_code == 400
    assert answer.json()["errors"] == [{"pointer": "query/limit", "message": "0 is less than the minimum of 1"}]
