"""Every Python package folder is declared in pyproject.toml (components/ and pipelines/ are remapped)."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAPPING = {"kubetune": "kubetune", "components": "kubetune.components", "pipelines": "kubetune.pipelines"}


def test_all_packages_are_declared():
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for top, name in MAPPING.items():
        for init in (ROOT / top).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / top).parts
            found.add(".".join((name, *parts)))
    assert found == declared
