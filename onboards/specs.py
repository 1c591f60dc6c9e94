"""The files the service serves from outside its code: the OpenAPI documents (openapi.yaml, sandbox.yaml)
and the pages built from them (docs/). A checkout has them at its top; a wheel carries copies in
`onboards/data/` (setup.py copies them there when the wheel is built)."""

from importlib import resources
from pathlib import Path

import yaml

from onboards.config import ConfigError

# libyaml's safe loader where PyYAML has it: the pure-Python loader makes every app's start-up slow.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
CHECKOUT = Path(__file__).resolve().parent.parent
PACKAGED = Path(str(resources.files("onboards"))) / "data"


class MissingFile(ConfigError):
    """A file the service needs is in neither place it may be: the installation is incomplete."""


def path(name: str) -> Path:
    """The installed copy of `name` (a path relative to the checkout's top) when there is one, else the
    checkout's own; whether it exists is for `require` to say."""
    packaged = PACKAGED / name
    return packaged if packaged.exists() else CHECKOUT / name


def require(file: Path) -> Path:
    if not file.is_file():
        raise MissingFile(f"{file.name} is missing: it is neither in {PACKAGED} (an installed onboards) nor in "
                          f"{CHECKOUT} (a checkout); reinstall onboards")
    return file


def load(file: Path) -> dict:
    with require(file).open() as f:
        return yaml.load(f, Loader=SAFE_LOADER)
