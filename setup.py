"""The wheel carries the files the service serves (onboards/specs.py reads them): the top-level
openapi.yaml and sandbox.yaml stay the source of truth in the repository, and the build copies them
and docs/ into the package as `onboards/data/` (MANIFEST.in puts them in the sdist the wheel may be
built from)."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SERVED = ["openapi.yaml", "sandbox.yaml", "docs"]


class BuildWithServedFiles(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib, "onboards", "data")
        for name in SERVED:
            source = Path(name)
            files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
            for file in files:
                self.mkpath(str(target / file.parent))
                self.copy_file(str(file), str(target / file))


setup(cmdclass={"build_py": BuildWithServedFiles})
