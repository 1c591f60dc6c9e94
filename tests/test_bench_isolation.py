"""The benchmark's yardsticks share no code with what they measure: bench/floor.py and bench/fastapi_ref.py import
nothing of the service (onboards/, handlers/, models/, nor tests/ helpers that import them), directly or through
another module of this repository. Read from the source (ast), so a lazy or conditional import counts too."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVICE = ("onboards", "handlers", "models", "tests")
YARDSTICKS = ("bench/floor.py", "bench/fastapi_ref.py")


def imported(path: Path, root: Path) -> set[str]:
    """Every module `path` names in an import statement, or in a call of importlib.import_module or __import__."""
    found: set[str] = set()
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[:len(package.split(".")) - node.level + 1], *filter(None, [base])])
            # `from package import module` imports the module; `from module import name`, the module.
            found |= {f"{base}.{a.name}" if local_file(f"{base}.{a.name}", root) else base for a in node.names}
        elif (isinstance(node, ast.Call) and node.args and isinstance(first := node.args[0], ast.Constant)
              and ast.unparse(node.func) in ("importlib.import_module", "import_module", "__import__")):
            found.add(str(first.value))
    return found


def local_file(module: str, root: Path) -> Path | None:
    """The repository's file of `module`, None for a module from elsewhere."""
    parts = module.split(".")
    for candidate in (root.joinpath(*parts).with_suffix(".py"), root.joinpath(*parts, "__init__.py")):
        if candidate.is_file():
            return candidate
    return None


def service_imports(path: Path, root: Path = ROOT) -> list[str]:
    """The service modules `path` reaches, each as the chain of imports that reaches it."""
    reached, pending, seen = [], [(path, str(path.relative_to(root)))], {path}
    while pending:
        current, chain = pending.pop()
        for module in sorted(imported(current, root)):
            if module.split(".")[0] in SERVICE:
                reached.append(f"{chain} -> {module}")
                continue
            found = local_file(module, root)
            if found is not None and found not in seen:
                seen.add(found)
                pending.append((found, f"{chain} -> {module}"))
    return reached


@pytest.mark.parametrize("yardstick", YARDSTICKS)
def test_the_yardsticks_import_none_of_the_service(yardstick):
    assert service_imports(ROOT / yardstick) == []


@pytest.mark.parametrize("source, reaches", [
    ("from handlers import unit_of_work", "handlers"),
    ("import models.onboards", "models.onboards"),
    ("def later():\n    from onboards import auth", "onboards"),
    ("import importlib\nimportlib.import_module('models.base')", "models.base"),
    ("from tests import dataset", "tests"),
    ("from ..handlers import respond", "handlers"),
])
def test_an_import_of_the_service_is_found(tmp_path, source, reaches):
    (tmp_path / "bench").mkdir()
    probe = tmp_path / "bench" / "probe.py"
    probe.write_text(source + "\n")
    assert service_imports(probe, tmp_path) == [f"bench/probe.py -> {reaches}"]


def test_an_import_through_a_bench_module_is_followed(tmp_path):
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "helper.py").write_text("from handlers import respond\n")
    (tmp_path / "bench" / "probe.py").write_text("from bench import helper\n")
    assert service_imports(tmp_path / "bench" / "probe.py", tmp_path) == [
        "bench/probe.py -> bench.helper -> handlers"]
