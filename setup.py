"""The build step besides pyproject.toml: protocol code generated from proto/ before the
package is built (a wheel, `pip install .`, or an editable install alike)."""

from __future__ import annotations

import runpy
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithProtocol(build_py):
    def run(self) -> None:
        script = Path(__file__).resolve().parent / "proto" / "generate.py"
        runpy.run_path(str(script))["generate"]()
        super().run()


setup(cmdclass={"build_py": BuildWithProtocol})
