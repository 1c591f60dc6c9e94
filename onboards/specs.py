"""Reading the OpenAPI documents (openapi.yaml, sandbox.yaml)."""

from pathlib import Path

import yaml

# libyaml's safe loader where PyYAML has it: the pure-Python loader makes every app's start-up slow.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load(path: Path) -> dict:
    with path.open() as f:
        return yaml.load(f, Loader=SAFE_LOADER)
