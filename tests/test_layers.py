"""The dependency rules of ARCHITECTURE.md: imports flow down only, tests import neither bench nor fuzz nor
each other, and the private names of the frameworks (connexion, starlette, uvicorn, anyio, peewee) appear in
one module."""

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PATCHES = ROOT / "onboards" / "connexion_patches.py"
# What each top-level package may import of the others.
ALLOWED = {"models": set(), "handlers": {"models"}, "onboards": {"handlers", "models"},
           "tests": {"onboards", "handlers", "models", "tests"},
           "bench": {"onboards", "handlers", "models", "bench", "tests"},
           "fuzz": {"onboards", "handlers", "models", "fuzz", "tests"},
           "tools": {"onboards", "handlers", "models", "tools", "tests"}}


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imported(path: Path) -> Iterator[tuple[str, list[str]]]:
    """(module, names) of each import in `path`."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from ((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, [alias.name for alias in node.names]


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_flow_one_way(package):
    wrong = [f"{path.relative_to(ROOT)} imports {module}" for path in modules(package)
             for module, _names in imported(path)
             if module.split(".")[0] in ALLOWED and module.split(".")[0] not in ALLOWED[package] | {package}]
    assert wrong == []


def test_no_test_module_imports_another():
    wrong = [f"{path.name} imports {module}" for path in modules("tests") if path.name.startswith("test_")
             for module, names in imported(path)
             if module.startswith("tests.test_") or (module == "tests" and any(n.startswith("test_") for n in names))]
    assert wrong == []


FRAMEWORKS = ("connexion", "starlette", "uvicorn", "anyio", "peewee", "playhouse")  # playhouse: peewee's


def private(module: str, names: list[str]) -> bool:
    if module.split(".")[0] not in FRAMEWORKS:
        return False
    return any(part.startswith("_") for part in module.split(".")) or any(n.startswith("_") for n in names)


def product() -> list[Path]:
    return [path for package in ("onboards", "handlers", "models") for path in modules(package) if path != PATCHES]


def test_private_names_of_the_frameworks_appear_in_the_patch_module_only():
    wrong = [f"{path.relative_to(ROOT)} imports {module} {names}" for path in product()
             for module, names in imported(path) if private(module, names)]
    assert wrong == []


# peewee documents a model's `_meta` (its table's name, fields and indexes) for use by applications.
DOCUMENTED_ATTRIBUTES = {"_meta"}


def private_attributes(source: str) -> Iterator[str]:
    """Private attributes read or written on anything but `self` and `cls` (`obj._x`), but those documented."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__") \
                and node.attr not in DOCUMENTED_ATTRIBUTES \
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            yield f"{node.lineno} {ast.unparse(node)}"


def test_no_private_attribute_is_reached_outside_the_patch_module():
    assert [f"{path.relative_to(ROOT)}:{found}" for path in product()
            for found in private_attributes(path.read_text())] == []
    assert list(private_attributes("import peewee\npeewee.Model._meta\nconn._adapter.x\nself._own\n")) == [
        "3 conn._adapter"]


# The hooks connexion's docs (validation.rst, "Custom validators") tell a validator subclass to override.
DOCUMENTED_HOOKS = {"_parse", "_validate"}


def subclassed_private_names(path: Path) -> Iterator[str]:
    """Private names a class of `path` that extends a framework's class defines or reads on self, other than
    the documented hooks."""
    tree = ast.parse(path.read_text())
    outside = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
               and (node.module or "").split(".")[0] in FRAMEWORKS for alias in node.names}
    outside |= {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names if alias.name.split(".")[0] in FRAMEWORKS}
    for cls in (node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)):
        if not {ast.unparse(base).split(".")[0] for base in cls.bases} & outside:
            continue
        for node in ast.walk(cls):
            name = (node.name if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                    else node.attr if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id == "self" else "")
            if name.startswith("_") and not name.startswith("__") and name not in DOCUMENTED_HOOKS:
                yield f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)} {cls.name}.{name}"


def test_subclasses_of_the_frameworks_classes_use_only_their_documented_hooks():
    assert [found for path in product() for found in subclassed_private_names(path)] == []
