"""Tripwires for onboards/connexion_patches.py: each patch works, connexion still has the defect it
corrects, and connexion still has the shape it relies on. A failure here after an upgrade says which
patch to revisit (or drop, when the defect is fixed upstream)."""

import functools
from collections.abc import Callable

import connexion.security
import pytest
from connexion.apps.asynchronous import AsyncOperation
from connexion.operations import OpenAPIOperation
from connexion.resolver import Resolver
from connexion.security import AbstractSecurityHandler

from onboards import cli, connexion_patches


def test_each_operation_is_decorated_once(client, buyer, monkeypatch):
    calls = []
    decorate = connexion_patches.DecoratedOnce.decorate

    def counted(self: connexion_patches.DecoratedOnce, fn: Callable) -> Callable:
        calls.append(fn)
        return decorate(self, fn)

    monkeypatch.setattr(connexion_patches.DecoratedOnce, "decorate", counted)
    for _ in range(3):
        assert client.get("/onboards", headers=buyer.auth).status_code == 200
        assert client.get("/entities", headers=buyer.auth).status_code == 200
    assert len(calls) == 2  # once per operation of this app


def test_connexion_still_decorates_per_request_through_the_shape_the_patch_replaces():
    stock = connexion_patches.CONNEXION_FN
    assert isinstance(stock, property)  # a property: re-decorated on every request (UPSTREAM.md item 1)
    operation = AsyncOperation(lambda: None, jsonifier=None, operation_id="x", pythonic_params=False)
    assert {"_fn", "pythonic_params", "jsonifier"} <= vars(operation).keys()
    assert isinstance(vars(AsyncOperation)["fn"], functools.cached_property)


def make_operation(spec_operation: dict, path_parameters: list[dict]) -> OpenAPIOperation:
    return OpenAPIOperation("get", "/things/{id}", spec_operation, Resolver(lambda _name: lambda: None),
                            path_parameters=path_parameters)


PATH_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
OWN = {"name": "q", "in": "query", "schema": {"type": "string"}}


def test_path_parameters_are_merged_into_a_copy_the_operations_own_winning():
    own_id = {**PATH_ID, "schema": {"type": "string", "pattern": "^[0-9]+$"}}
    spec_operation = {"operationId": "x", "parameters": [OWN, own_id], "responses": {}}
    for _ in range(3):  # once per middleware reading the spec
        operation = make_operation(spec_operation, [PATH_ID])
    assert spec_operation["parameters"] == [OWN, own_id]
    assert operation.parameters == [OWN, own_id]
    assert make_operation({"operationId": "x", "responses": {}}, [PATH_ID]).parameters == [PATH_ID]


def test_connexion_still_appends_path_parameters_to_the_spec():
    spec_operation = {"operationId": "x", "parameters": [OWN], "responses": {}}
    stock = OpenAPIOperation.__new__(OpenAPIOperation)
    connexion_patches.CONNEXION_OPERATION_INIT(stock, "get", "/things/{id}", spec_operation,
                                               Resolver(lambda _name: lambda: None), path_parameters=[PATH_ID])
    assert spec_operation["parameters"] == [OWN, PATH_ID]  # the spec itself changed (UPSTREAM.md item 2)


def test_the_basic_auth_function_is_inspected_once(client, buyer, monkeypatch):
    assert client.get("/onboards", headers=buyer.auth).status_code == 200
    calls = []
    inspect = connexion.security.inspect_function_arguments

    def counted(fn: Callable) -> tuple:
        calls.append(fn)
        return inspect(fn)

    monkeypatch.setattr(connexion.security, "inspect_function_arguments", counted)
    for _ in range(3):
        assert client.get("/onboards", headers=buyer.auth).status_code == 200
    assert calls == []


def test_connexion_still_inspects_through_the_method_the_patch_replaces():
    stock = connexion_patches.CONNEXION_ACCEPTS_KWARG
    assert stock(lambda request: None, "request") and not stock(lambda: None, "request")
    assert AbstractSecurityHandler._accepts_kwarg is connexion_patches._accepts_kwarg


def test_another_connexion_version_is_refused_with_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(connexion_patches.importlib.metadata, "version", lambda _name: "3.4.0")
    with pytest.raises(connexion_patches.ConnexionVersionError, match=r"connexion 3\.4\.0 is installed"):
        connexion_patches.apply()
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/onboards.db")
    assert cli.main(["serve"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "verified against 3.3.0" in err
